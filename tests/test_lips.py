"""The mouth from lip landmarks (the lip contour, the aligned crop, the lip-opening signal) and
the training-free clip-level detector on it: offsets recovered on a clip whose sound follows its
lips by a known shift, and silence padded at the start that changes nothing."""

import numpy as np
import pytest

from dflab.av.sync import clip_summary, lip_curve, speech_span
from dflab.data.landmarks import dlib_available, template68
from dflab.data.sync_windows import dense_track, lip_opening, mouth_affine

FPS = 25.0
HOP = 0.01


def _open_mouth(points: np.ndarray, gap: float) -> np.ndarray:
    """The template face with its lower inner lip moved down by ``gap`` pixels."""
    p = points.copy()
    p[[65, 66, 67], 1] += gap
    p[[61, 62, 63], 1] = p[[61, 62, 63], 1]  # the upper inner lip stays
    return p


def test_lip_opening_is_inner_height_over_mouth_width():
    t = template68() * 100
    width = float(np.linalg.norm(t[48] - t[54]))
    base = lip_opening(t)
    opened = lip_opening(_open_mouth(t, 0.2 * width))
    assert opened == pytest.approx(base + 0.2, abs=1e-4)
    # a rotated, scaled, moved face opens its mouth by the same share
    a = np.radians(25)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved = _open_mouth(t, 0.2 * width) @ rot.T * 1.7 + [40, -12]
    assert lip_opening(moved) == pytest.approx(opened, abs=1e-4)


def test_mouth_crop_levels_the_eyes_and_scales_by_the_face():
    t = template68() * 100 + [300, 200]
    a = np.radians(-20)
    centre = t.mean(0)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    tilted = (t - centre) @ rot.T + centre
    for face, scale in ((t, 1.0), (tilted, 1.0), ((t - centre) * 2 + centre, 2.0)):
        m = mouth_affine(np.stack([face] * 5), 48)
        crop = face @ m[:, :2].T + m[:, 2]
        # the eyes land level and the mouth corners centred in the 48 x 32 crop, at the same
        # size whatever the tilt or the face's size in the frame
        assert crop[36:42, 1].mean() == pytest.approx(crop[42:48, 1].mean(), abs=1e-4)
        assert (crop[48] + crop[54]) / 2 == pytest.approx([24, 16], abs=1e-4)
        width = float(np.linalg.norm(crop[48] - crop[54]))
        assert 15 < width < 35, width
        if scale == 1.0:
            ref = width
        assert width == pytest.approx(ref, rel=1e-6)


def _talking_clip(shift: int, seconds: float = 8.0, pad_s: float = 0.0, seed: int = 0) -> dict:
    """Windows of a clip whose lips open and close at a syllable rate and whose loudness
    follows the opening, the sound ``shift`` frames early; ``pad_s`` seconds of silence (and a
    closed, still mouth) before it."""
    rng = np.random.default_rng(seed)
    n = int(seconds * FPS)
    raw = np.convolve(rng.normal(size=n + 10), np.ones(4) / 4, mode="same")[5:5 + n]
    opening = np.clip(raw, 0, None) * 0.3 + 0.02  # closed when below zero
    pad = int(round(pad_s * FPS))
    op_all = np.concatenate([np.full(pad, 0.02), opening])
    times = np.arange(len(op_all)) / FPS
    # the sound at time tau is the lips' shape at tau + shift / fps (sound early when > 0)
    tau = np.arange(int((len(op_all) / FPS) / HOP)) * HOP
    env = np.interp(tau + shift / FPS, times, op_all)
    loud = -45 + 120 * (env - 0.02)
    loud[tau < pad_s + max(shift, 0) / FPS] = -100  # silence before the speech
    rms = 10 ** (loud / 20)
    onset = np.clip(np.diff(loud, prepend=loud[0]), 0, None)
    f = 5
    centres = np.arange(2, len(op_all) - 2, f)
    idx = centres[:, None] + np.arange(f)[None] - 2
    return {"times": times[idx], "centre_index": centres, "opening": op_all[idx].astype(np.float32),
            "mouths": rng.integers(0, 255, (len(centres), f, 4, 6), dtype=np.uint8),
            "rms": rms.astype(np.float32), "onset": onset.astype(np.float32),
            "hop_s": np.float64(HOP), "fps": np.float64(FPS)}


def test_dense_track_lists_each_frame_once_in_time_order():
    win = _talking_clip(0, seconds=2)
    tr = dense_track(win)
    assert np.all(np.diff(tr["frame_index"]) == 1)
    assert np.allclose(tr["times"], tr["frame_index"] / FPS)
    assert np.isnan(tr["motion"][0]) and np.isfinite(tr["opening"]).all()


@pytest.mark.parametrize("shift", [-10, -3, 0, 2, 5])
def test_training_free_detector_recovers_the_shift(shift):
    curve = lip_curve(_talking_clip(shift), 15)
    est = clip_summary(curve, 15, FPS, lower_is_better=False)
    assert abs(est["offset_frames"] - shift) <= 1, est
    assert est["confidence"] > 0


def test_silence_padded_at_the_start_changes_no_verdict():
    """FakeAVCeleb's fakes open with a short silence that alone almost separates them: the
    detector trims it, so the padded clip reads as the clip does."""
    for shift in (0, 4):
        plain = clip_summary(lip_curve(_talking_clip(shift), 15), 15, FPS, False)
        padded_win = _talking_clip(shift, pad_s=1.5)
        start, _ = speech_span(padded_win)
        assert start >= 1.5
        padded = clip_summary(lip_curve(padded_win, 15), 15, FPS, False)
        assert padded["offset_frames"] == plain["offset_frames"]
        assert padded["sync_score"] == pytest.approx(plain["sync_score"], abs=0.05)


def test_no_lip_landmarks_gives_no_curve():
    win = _talking_clip(0)
    win["opening"] = np.full_like(win["opening"], np.nan)
    assert np.isnan(lip_curve(win, 15)).all()


@pytest.mark.skipif(not dlib_available(), reason="dlib's 68 points need the landmarks extra "
                    "(pip install 'dflab[landmarks]')")
def test_windows_of_a_real_talking_face_carry_its_lips(shared_data):
    """A real talking clip (``../shared/data/talking``): every window's mouth comes from the lip
    landmarks, the contour lies inside the crop, and the lips open and close while it speaks."""
    from dflab.data.faces import create_detector, primary_face
    from dflab.data.landmarks import create_landmarker
    from dflab.data.sync_windows import video_windows

    import cv2

    path = shared_data / "talking" / "pcavs" / "Audio_Source_00015.mp4"
    det = create_detector("yunet")
    cap = cv2.VideoCapture(str(path))
    centres, idx = [], 0
    while idx < 60 and cap.grab():
        if idx % 5 == 2:
            _, frame = cap.retrieve()
            centres.append((idx, primary_face(det.detect(frame), frame.shape).to_dict()))
        idx += 1
    cap.release()
    win = video_windows(path, centres, 5, 48, create_landmarker("dlib68"))
    assert set(win["mouth_source"]) == {"lip_landmarks"}
    lips = win["lips"]
    assert lips.shape == (len(centres), 5, 20, 2)
    assert (lips[..., 0] > 0).all() and (lips[..., 0] < 48).all()
    assert (lips[..., 1] > 0).all() and (lips[..., 1] < 32).all()
    assert win["opening"].min() < 0.1 < win["opening"].max()
    assert win["onset"].shape == win["rms"].shape


def test_every_frame_windows_recut_the_tiled_frames_at_every_start():
    from dflab.data.sync_windows import every_frame_windows

    win = _talking_clip(0, seconds=2)
    win["mouth_source"] = np.array(["lip_landmarks"] * len(win["centre_index"]))
    win["lips"] = np.zeros((*win["opening"].shape, 20, 2), np.float32)
    dense = every_frame_windows(win)
    n, f = win["times"].shape
    assert len(dense["times"]) == n * f - f + 1  # one window per start with f frames after it
    assert np.allclose(np.diff(dense["times"], axis=1), 1 / FPS)
    assert np.array_equal(dense["centre_index"], np.arange(len(dense["times"])) + 2)
    # each frame keeps what it was: the opening at a time is the stored one
    stored = dict(zip(np.round(win["times"].ravel(), 4), win["opening"].ravel()))
    assert all(stored[round(t, 4)] == o for t, o in zip(dense["times"].ravel(),
                                                          dense["opening"].ravel()))


def test_a_recut_window_has_lips_only_when_all_its_frames_do():
    from dflab.data.sync_windows import every_frame_windows

    win = _talking_clip(0, seconds=2)
    n = len(win["centre_index"])
    win["mouth_source"] = np.array(["lip_landmarks"] * n)
    win["mouth_source"][3] = "landmarks"  # one stored window without lips
    win["lips"] = np.zeros((*win["opening"].shape, 20, 2), np.float32)
    win["lips"][3] = np.nan
    dense = every_frame_windows(win)
    lips = dense["mouth_source"] == "lip_landmarks"
    assert np.isfinite(dense["lips"][lips]).all()
    assert (~lips).sum() == 9  # the windows that touch any of its 5 frames
    assert set(dense["mouth_source"][~lips]) == {"landmarks"}


def test_a_sync_model_on_lip_contours_loads_and_scores_a_clip(tmp_path):
    """A sync model whose visual stream reads lip contours round-trips through sync.pt, cuts a
    new video's windows on the lips, and scores a clip; windows without lips count for
    nothing."""
    import torch

    from dflab.av.sync import SyncNet, load_sync, model_curves, score_clip, visual_input
    from dflab.data.sync_windows import N_MFCC

    net = SyncNet(5, 16, "lips")
    torch.save({"state": net.state_dict(), "frames": 5, "embed": 16, "max_offset": 15,
                "mouth_px": 48, "lip_landmarks": True, "visual": "lips"}, tmp_path / "sync.pt")
    model = load_sync(tmp_path)
    assert model.net.kind == "lips" and model.lip_landmarks
    win = _talking_clip(2)
    n = len(win["centre_index"])
    rng = np.random.default_rng(0)
    win["lips"] = rng.uniform(5, 40, (n, 5, 20, 2)).astype(np.float32)
    win["lips"][0] = win["opening"][0] = np.nan  # one window without lip landmarks
    win["mouths"] = np.zeros((n, 5, 32, 48), np.uint8)
    win["mfcc"] = rng.normal(size=(N_MFCC, len(win["rms"]))).astype(np.float32)
    x = visual_input(win, np.arange(n), "lips")
    assert x.shape == (n, 5, 41) and np.isnan(x[0]).all() and np.isfinite(x[1:]).all()
    dist, valid = model_curves(model.net, win, 15)
    assert not valid[0].any() and valid[1:].any()
    scored = score_clip(win, model.net, 15)
    assert np.isfinite(scored["learned"]["offset_frames"])
    assert scored["baseline"]["kind"] == "lip_opening"
