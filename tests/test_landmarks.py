"""Landmarks: every registered model honours its interface, dlib's 68 points follow a known warp of
a real face, the 5-point fallback stands in without the extra, and preprocessing stores them."""

import json
import math

import cv2
import numpy as np
import pytest

from dflab.data.faces import create_detector
from dflab.data.landmarks import (LANDMARKS, check_points, create_landmarker, crop_points, dlib_available,
                             five_of_68, fit_similarity, hull_mask, resolve_landmarks, template68)

needs_dlib = pytest.mark.skipif(not dlib_available(), reason="the landmarks extra (dlib-bin, "
                                "face-recognition-models) is not installed")

#: 300-W's convention: a fit whose mean point error exceeds 8% of the distance between the eye
#: centres is a failure (the threshold of its failure-rate tables, not one chosen here)
FAILURE_NME = 0.08


def portrait() -> np.ndarray:
    """uint8 (512, 512, 3) BGR: skimage's astronaut, a real face photo that ships with a wheel."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def nme(p: np.ndarray, ref: np.ndarray) -> float:
    iod = np.linalg.norm(ref[36:42].mean(0) - ref[42:48].mean(0))
    return float(np.mean(np.linalg.norm(p - ref, axis=1)) / iod)


def warp(img: np.ndarray, angle: float, scale: float, shift: tuple[float, float]):
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[:, 2] += shift
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT), m


def face_points(img: np.ndarray, model: str):
    face = create_detector("yunet").detect(img)[0]
    return create_landmarker(model, detector="yunet").predict(img, face.box, face.landmarks), face


@pytest.mark.parametrize("name", LANDMARKS.list())
def test_every_landmark_model_gives_68_points_on_the_face(name):
    if name == "dlib68" and not dlib_available():
        pytest.skip("the landmarks extra is not installed")
    img = portrait()
    pts, face = face_points(img, name)
    assert pts.shape == (68, 2) and pts.dtype == np.float32
    x1, y1, x2, y2 = face.box
    assert (x1 <= pts[:, 0]).mean() > 0.9 and (pts[:, 0] <= x2).mean() > 0.9
    assert check_points(pts, face.box, face.landmarks) == ""
    # the eye points sit above the nose, the nose above the mouth
    assert pts[36:48, 1].mean() < pts[30, 1] < pts[48:68, 1].mean()


@needs_dlib
@pytest.mark.parametrize("angle,scale,shift", [(15, 1.0, (0, 0)), (-20, 0.8, (30, -20)),
                                               (0, 1.3, (-40, 25)), (8, 0.6, (60, 60))])
def test_dlib_points_follow_a_known_warp_of_a_real_face(angle, scale, shift):
    """The true landmarks of a warped photo are the warped landmarks of the photo: what the
    model finds there must be them, within 300-W's failure threshold."""
    img = portrait()
    ref, _ = face_points(img, "dlib68")
    moved, m = warp(img, angle, scale, shift)
    got, _ = face_points(moved, "dlib68")
    expected = ref @ m[:, :2].T + m[:, 2]
    assert nme(got, expected) < FAILURE_NME, nme(got, expected)


def test_the_fallback_template_lands_on_the_five_points_it_was_fitted_to():
    img = portrait()
    pts, face = face_points(img, "template5")
    five = np.asarray(face.landmarks)
    iod = np.linalg.norm(five[0] - five[1])
    assert np.mean(np.linalg.norm(five_of_68(pts) - five, axis=1)) / iod < 0.1
    assert create_landmarker("template5").predict(img, face.box, None) is None  # no points, no fit


def test_a_fit_off_the_face_is_flagged():
    img = portrait()
    pts, face = face_points(img, "template5")
    assert check_points(pts + np.float32([80, 0]), face.box, face.landmarks).startswith(
        "landmarks disagree")
    assert check_points(pts + np.float32([1000, 0]), face.box) == \
        "landmarks centred outside the face box"


def test_without_the_extra_auto_falls_back_and_dlib68_names_the_extra(monkeypatch):
    import importlib.util

    import dflab.data.landmarks as lm

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("dlib", "face_recognition_models")
                        else real(name, *a))
    monkeypatch.setitem(__import__("sys").modules, "dlib", None)  # import dlib fails
    assert resolve_landmarks("auto") == "template5"
    with pytest.raises(ImportError, match=r"pip install 'dflab\[landmarks\]'"):
        lm.create_landmarker("dlib68")


def test_similarity_fit_recovers_a_known_transform():
    src = template68()[:20]
    angle, s, t = math.radians(25), 3.5, np.array([10.0, -4.0])
    rot = s * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    m = fit_similarity(src, src @ rot.T + t)
    assert np.allclose(m[:, :2], rot, atol=1e-9) and np.allclose(m[:, 2], t, atol=1e-9)


def test_hull_mask_covers_the_face_points():
    pts = template68() * 60 + 150  # eyes 60 px apart
    mask = hull_mask(pts, (300, 300))
    inside = mask[np.round(pts[:, 1]).astype(int), np.round(pts[:, 0]).astype(int)]
    assert inside.all() and 0 < mask.mean() < 0.5


def test_preprocessing_stores_points_per_frame_and_aligns_crops(tmp_path):
    """The per-frame JSON holds the 68 points; with align on, the crop's own points put the eyes
    level and at the template's place, whatever the face's tilt in the frame."""
    from dflab.core.config import PreprocessConfig
    from dflab.data.preprocess import preprocess_videos
    from dflab.data.sources import VideoRecord

    tilted, _ = warp(portrait(), 20, 1.0, (0, 0))
    src = tmp_path / "face.png"
    cv2.imwrite(str(src), tilted)
    rec = VideoRecord(str(src), "face", "real", "original", "photos", "", "face", "train")
    model = "dlib68" if dlib_available() else "template5"
    sides = []
    for align in (False, True):
        out = tmp_path / f"out-{align}"
        pp = PreprocessConfig(detector="yunet", landmarks=model, align=align, save_frames=False,
                              audio=False)
        preprocess_videos([rec], out, pp)
        meta = json.loads(next(out.rglob("meta.json")).read_text())
        assert meta["landmarks"]["name"] == model
        primary = meta["frames"][0]["primary"]
        assert len(primary["landmarks68"]) == 68 and primary["landmarks68_model"] == model
        pts = crop_points(primary["landmarks68"], primary)
        eyes = pts[36:42].mean(0), pts[42:48].mean(0)
        tilt = math.degrees(math.atan2(eyes[1][1] - eyes[0][1], eyes[1][0] - eyes[0][0]))
        crop = cv2.imread(str(out / next(out.rglob("crops/*.jpg")).relative_to(out)))
        sides.append(crop.shape[0])
        if align:
            assert abs(tilt) < 3, tilt  # levelled
            assert "crop_affine" in primary
        else:
            assert abs(tilt) > 12, tilt  # the frame's own tilt of about 20 degrees
        index = __import__("pandas").read_csv(out / "index.csv")
        assert (index["landmarks"] == model).all()
    assert abs(sides[0] - sides[1]) <= 0.1 * sides[0]  # the same scale either way
