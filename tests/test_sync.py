"""The audio-visual sync detector: mouth windows lined up by timestamps, the training-free
baseline recovering known shifts, the matching loss, the CLI and its errors. The learned model's
AUC on the talking demo set is checked in test_learning (it trains inside `dflab demo`)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from dflab.data.audio import shift_audio
from dflab.data.landmarks import dlib_available
from dflab.data.synthetic import AV_FPS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def talking(tmp_path_factory):
    """A 6-identity talking set (18 clips of 4 s at 25 fps), preprocessed with sync windows."""
    from dflab import Lab
    from dflab.data.synthetic import build_talking_dataset

    root = tmp_path_factory.mktemp("talking")
    labels = build_talking_dataset(root / "demo_av", n_identities=6, workers=2)
    lab = Lab("cpu", {"preprocess.sync_frames": 5, "preprocess.save_frames": False},
              data_root=root)
    res = lab.preprocess("demo", labels.parent, out=root / "processed" / "demo_av")
    assert res.failed == 0
    return lab, labels.parent, res.out


def _centres(processed: Path, uid: str) -> list:
    meta = json.loads((processed / "videos" / uid / "meta.json").read_text())
    return [(f["frame_index"], f["primary"]) for f in meta["frames"] if f["primary"]]


def test_mouth_box_from_landmarks_and_lower_face():
    from dflab.data.sync_windows import mouth_box

    face = {"box": [100, 100, 200, 230], "landmarks": [[130, 150], [170, 150], [150, 175],
                                                        [135, 200], [165, 200]]}
    (x1, y1, x2, y2), src = mouth_box(face, (480, 640, 3))
    assert src == "landmarks"
    assert x1 < 135 and x2 > 165 and y1 < 200 < y2  # both corners inside
    assert (x2 - x1) == pytest.approx(57, abs=2)  # 1.9 x the corner distance
    (x1, y1, x2, y2), src = mouth_box({"box": [100, 100, 200, 230]}, (480, 640, 3))
    assert src == "lower_face" and y1 > 165 and y2 <= 230 + 20


def test_windows_are_mouth_crops_with_frame_times(talking):
    from dflab.data.sync_windows import N_MFCC, load_windows

    _, _, processed = talking
    uid = "demo_av/original/c23/100"
    w = load_windows(processed, uid)
    assert w["mouths"].dtype == np.uint8 and w["mouths"].shape[1:] == (5, 32, 48)
    # dlib's lip contour where the landmarks extra is installed, else YuNet's mouth corners
    assert set(w["mouth_source"]) == {"lip_landmarks" if dlib_available() else "landmarks"}
    # five consecutive frames at the clip's own rate, centred on the sampled frame
    assert np.allclose(np.diff(w["times"], axis=1), 1 / AV_FPS, atol=1e-3)
    assert np.allclose(w["times"][:, 2], w["centre_index"] / AV_FPS, atol=1e-3)
    assert w["mfcc"].shape[0] == N_MFCC and float(w["hop_s"]) == 0.01
    assert w["mfcc"].shape[1] == pytest.approx(w["audio_seconds"] / 0.01, abs=2)
    # the drawn mouth opens and closes: its crops change from frame to frame
    assert np.abs(np.diff(w["mouths"].astype(float), axis=1)).mean() > 2


def test_baseline_recovers_known_shifts_within_one_frame(talking, tmp_path):
    """Real talking clips re-muxed with the sound 3 and 5 frames early and late (FFmpeg -ss /
    -itsoffset: the late ones are audio streams that start after time 0), and the set's own
    AudioShift fakes: the training-free baseline finds every offset to within one frame."""
    from dflab.data.sync_windows import video_windows
    from dflab.av.sync import baseline_curves, clip_summary

    _, av_root, processed = talking
    errors = {}
    for vid in ("100", "103"):
        src = av_root / f"original_sequences/youtube/c23/videos/{vid}.mp4"
        centres = _centres(processed, f"demo_av/original/c23/{vid}")
        for frames in (-5, -3, 3, 5):
            clip = shift_audio(src, tmp_path / f"{vid}_{frames}.mp4", frames / AV_FPS)
            w = video_windows(clip, centres)
            _, _, pooled = baseline_curves(w, 15)
            est = clip_summary(pooled, 15, AV_FPS, lower_is_better=False)["offset_frames"]
            errors[(vid, frames)] = est - frames
    shifts = json.loads((av_root / "shifts.json").read_text())
    from dflab.data.sync_windows import load_windows

    for rel, seconds in shifts.items():
        if "AudioShift" not in rel or seconds * AV_FPS > 15:
            continue
        uid = "demo_av/AudioShift/c23/" + Path(rel).stem
        _, _, pooled = baseline_curves(load_windows(processed, uid), 15)
        est = clip_summary(pooled, 15, AV_FPS, lower_is_better=False)["offset_frames"]
        errors[(uid, seconds * AV_FPS)] = est - seconds * AV_FPS
    print(errors)
    assert len(errors) >= 9
    assert all(abs(e) <= 1 for e in errors.values()), errors


def test_matching_loss_prefers_the_aligned_audio():
    """On an embedding built so that each window's picture matches its aligned sound (and
    nothing else), the loss is low for the aligned target and high for a shifted one, every
    best offset is the aligned one, and a masked candidate counts for nothing, whatever it
    holds."""
    import torch

    from dflab.data.sync_windows import N_AUDIO, N_MFCC
    from dflab.av.sync import _loss

    class Carried:  # each window embeds as the unit vector it carries in its first values
        def embed_visual(self, x):
            return torch.nn.functional.normalize(x[:, 0, 0, :8], dim=1)

        def embed_audio(self, a):
            return torch.nn.functional.normalize(a[:, 0, :8], dim=1)

    torch.manual_seed(0)
    B, K, centre = 4, 7, 3
    code = torch.linalg.qr(torch.randn(8, 8))[0]  # orthonormal: rows are unlike each other
    x = torch.zeros(B, 5, 32, 48)
    a = torch.zeros(B, K, N_MFCC, N_AUDIO)
    for b in range(B):
        x[b, 0, 0, :8] = code[b]
        for k in range(K):  # the aligned sound carries the picture's vector, shifts others
            a[b, k, 0, :8] = code[b] if k == centre else code[4 + (k % 4)]
    valid = torch.ones(B, K, dtype=torch.bool)
    clip = torch.arange(B)
    aligned, hit = _loss(Carried(), x, a, valid, clip, centre, 0.1)
    shifted, _ = _loss(Carried(), x, a, valid, clip, 1, 0.1)
    assert hit == 1.0 and aligned.item() < 0.01 < shifted.item()
    # a masked candidate is ignored: the same loss whether it holds the aligned sound or not
    valid[:, 5] = False
    a2 = a.clone()
    a2[:, 5, 0, :8] = x[:, 0, 0, :8]  # the masked slot now matches perfectly
    masked, _ = _loss(Carried(), x, a, valid, clip, centre, 0.1)
    masked_match, _ = _loss(Carried(), x, a2, valid, clip, centre, 0.1)
    assert masked.item() == pytest.approx(masked_match.item(), abs=1e-6)
    a2_valid = torch.ones(B, K, dtype=torch.bool)
    unmasked_match, _ = _loss(Carried(), x, a2, a2_valid, clip, centre, 0.1)
    assert unmasked_match.item() > masked_match.item() + 0.1  # unmasked, it would compete


def test_sync_cli_extract_is_resumable_and_train_says_what_is_missing(talking, tmp_path):
    lab, _, processed = talking
    env = {"DFLAB_DATA": str(lab.paths["data_root"])}
    import os

    run = [sys.executable, "-m", "dflab", "sync"]
    out = subprocess.run([*run, "extract", "--processed", str(processed), "--set",
                          "preprocess.sync_frames=5"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    assert "0 videos written, 18 already current" in out.stdout
    # a folder without windows: training names the folder and the command that makes them
    empty = tmp_path / "nowin"
    (empty / "videos").mkdir(parents=True)
    (empty / "index.csv").write_text((processed / "index.csv").read_text())
    out = subprocess.run([*run, "train", "--processed", str(empty)], capture_output=True,
                         text=True, cwd=ROOT, env={**os.environ, **env})
    assert out.returncode == 2
    assert "no sync windows" in out.stderr and "dflab sync extract" in out.stderr
    out = subprocess.run([*run, "extract", "--processed", str(processed), "--set",
                          "preprocess.sync_frames=2"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, **env})
    assert out.returncode == 2 and "preprocess.sync_frames" in out.stderr


def test_audio_visual_tab_shows_a_clip_with_json_clean_figures(talking):
    """The dashboard's Audio-visual tab lists the clips with windows and shows one: the mouth
    strip, the summary of the training-free detector (no sync model trained here), and its
    figures, whose JSON holds no numpy arrays (older kernels' serialisers reject them)."""
    pytest.importorskip("ipywidgets")
    from app.dashboard import Dashboard
    from app.tabs.audio_visual import opening_figure, sync_figures
    from dflab.data.sync_windows import load_windows
    from dflab.av.sync import score_clip

    lab, _, processed = talking
    dash = Dashboard(data_root=str(lab.paths["data_root"]))
    tab = dash.audio_visual_tab
    assert processed.parent == dash.lab.paths["processed"]
    dash.context.source.value = processed.name  # the context bar's dataset: the tab follows it
    assert "demo_av/AudioShift/c23/101_101" in tab.clip.options
    assert processed.name in tab.folder_note.value
    tab.clip.value = "demo_av/AudioShift/c23/101_101"
    assert dash.session.clip == "demo_av/AudioShift/c23/101_101"
    lips = dlib_available()  # the lip contour and opening need dlib's 68 points
    kind = "lip opening" if lips else "mouth motion"
    assert f"training-free ({kind}): offset" in tab.summary.value
    assert "no sync model yet" in tab.summary.value
    # the offset curves, the lip opening over the loudness (with lips), the MFCC image
    assert tab.strip.value[:4] == b"\x89PNG" and len(tab.plots.outputs) == 2 + lips
    win = load_windows(processed, "demo_av/original/c23/100")
    figs = [*sync_figures(win, score_clip(win, None, 15)), opening_figure(win)]
    for fig in figs[:2 + lips]:
        json.dumps(fig.to_plotly_json())  # raises on a numpy array
