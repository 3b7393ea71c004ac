"""Lip-sync on real speech (``../shared/data/talking``), a subset of what
``benchmarks/sync_real_speech.py`` measures: real talking clips re-muxed with their sound shifted
by a known number of frames, the training-free detector on their lip landmarks.

The goal of the lip-sync issue (the offset within one frame for 90% of copies) is not met here
(see docs/sync.md for the measured table); what this asserts is that the detector reads the
shift far above chance: a guess over the 31 offsets of +-15 frames lands within one frame of
the truth 3 times in 31, and the share recovered must beat that at p < 0.01 (binomial)."""

import pytest

from dflab.data.landmarks import dlib_available

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not dlib_available(), reason="lip landmarks need dlib's 68 "
                                 "points (pip install 'dflab[landmarks]')")]

CLIPS = ("Audio_Source_00015", "Audio_Source_681100216", "Input_00098", "Pose_Source_00473")
SHIFTS = (-5, -3, 3, 5)


def _windows(path, every: int = 5):
    import cv2

    from dflab.data.faces import create_detector, primary_face
    from dflab.data.landmarks import create_landmarker
    from dflab.data.sync_windows import video_windows

    det = create_detector("yunet")
    cap = cv2.VideoCapture(str(path))
    centres, idx = [], 0
    while cap.grab():
        if idx % every == 2:
            _, frame = cap.retrieve()
            face = primary_face(det.detect(frame), frame.shape)
            if face is not None:
                centres.append((idx, face.to_dict()))
        idx += 1
    cap.release()
    return video_windows(path, centres, 5, 48, create_landmarker("dlib68"))


def test_training_free_detector_reads_real_shifts_far_above_chance(shared_data, tmp_path):
    from scipy.stats import binomtest

    from dflab.av.sync import clip_summary, lip_curve
    from dflab.data.audio import shift_audio
    from dflab.data.sync_windows import clip_audio_track

    hits, errors = 0, {}
    for name in CLIPS:
        src = shared_data / "talking" / "pcavs" / f"{name}.mp4"
        win = _windows(src)
        assert set(win["mouth_source"]) == {"lip_landmarks"}
        fps = float(win["fps"])
        for k in SHIFTS:
            track = clip_audio_track(shift_audio(src, tmp_path / f"{name}_{k}.mp4", k / fps))
            est = clip_summary(lip_curve({**win, **track}, 15), 15, fps, False)
            errors[(name, k)] = est["offset_frames"] - k
            hits += abs(errors[(name, k)]) <= 1
    n = len(errors)
    print(f"within one frame: {hits} of {n}", errors)
    assert binomtest(hits, n, 3 / 31, alternative="greater").pvalue < 0.01, errors
