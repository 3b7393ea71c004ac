"""The clip cues: identity drift is zero for one face repeated and large for two people;
landmark jitter ignores head motion and sees points that move on their own."""

import numpy as np
import pytest

from dflab.visual.clip_cues import CLIP_CUES, identity_drift, landmark_jitter
from dflab.data.landmarks import dlib_available, template68


def test_jitter_ignores_head_motion_and_sees_the_points_move():
    face = template68() * 60 + 200
    moved = []
    for k in range(6):  # the head turns, grows and slides: a similarity, no jitter
        a = np.radians(3 * k)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * (1 + 0.02 * k)
        moved.append(face @ rot.T + 5 * k)
    assert landmark_jitter([""] * 6, moved) < 1e-6
    rng = np.random.default_rng(0)
    shaky = [p + rng.normal(0, 3, p.shape) for p in moved]  # 3 px on a 60 px eye distance
    assert 0.04 < landmark_jitter([""] * 6, shaky) < 0.15
    assert np.isnan(landmark_jitter([""], moved[:1]))


@pytest.mark.skipif(not dlib_available(), reason="the landmarks extra is not installed")
def test_identity_drift_is_zero_for_one_face_and_large_for_two(tmp_path):
    import cv2
    from skimage import data

    from dflab.data.faces import create_detector
    from dflab.data.landmarks import create_landmarker

    def crop_of(rgb, name):
        f = create_detector("yunet").detect(rgb[:, :, ::-1].copy())[0]
        pts = create_landmarker("dlib68").predict(rgb[:, :, ::-1].copy(), f.box, f.landmarks)
        cv2.imwrite(str(tmp_path / name), rgb[:, :, ::-1])
        return str(tmp_path / name), pts

    one = crop_of(np.ascontiguousarray(data.astronaut()), "a.png")
    mirrored = crop_of(np.ascontiguousarray(data.astronaut()[:, ::-1]), "b.png")  # same person
    assert identity_drift([one[0]] * 4, [one[1]] * 4) < 1e-6
    # a mirror image of the same face stays within dlib's same-person distance (0.6)
    assert identity_drift([one[0], mirrored[0]], [one[1], mirrored[1]]) < 0.3
    assert set(CLIP_CUES.list()) == {"identity_drift", "landmark_jitter"}


@pytest.mark.skipif(not dlib_available(), reason="the landmarks extra is not installed")
def test_identity_drift_of_two_people_is_large(shared_data, tmp_path):
    import cv2

    from dflab.data.faces import create_detector
    from dflab.data.landmarks import create_landmarker

    crops, points = [], []
    for name in ("AJ_Cook_0001.jpg", "Aaron_Eckhart_0001.jpg"):
        path = shared_data / "faces" / "lfw" / name
        bgr = cv2.imread(str(path))
        f = create_detector("yunet").detect(bgr)[0]
        points.append(create_landmarker("dlib68").predict(bgr, f.box, f.landmarks))
        crops.append(str(path))
    # two people: their descriptors lie further apart than dlib's same-person 0.6, so each
    # is more than 0.3 from their mean
    assert identity_drift(crops, points) > 0.3
