import csv
import hashlib
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from dflab.data.video import ffmpeg_exe
from dflab.data.synthetic import DEMO_METHODS, build_demo_dataset
from conftest import ROOT


def test_layout_labels_and_splits(demo_set):
    rows = list(csv.DictReader(open(demo_set / "labels.csv")))
    assert len(rows) == 30
    assert {r["method"] for r in rows} == {"original", *DEMO_METHODS}
    for r in rows:
        assert (demo_set / r["path"]).stat().st_size > 1000
        assert (r["label"] == "real") == (r["method"] == "original")
        if r["label"] == "fake":
            assert r["path"].startswith(f"manipulated_sequences/{r['method']}/c23/videos/")
        else:
            assert r["path"].startswith("original_sequences/youtube/c23/videos/")
    splits = {s: json.loads((demo_set / "splits" / f"{s}.json").read_text())
              for s in ("train", "val", "test")}
    ids = [set(i for p in ps for i in p) for ps in splits.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    # a fake and its original share a split
    split_of = {r["source_id"]: r["split"] for r in rows if r["label"] == "real"}
    assert all(r["split"] == split_of[r["source_id"]] for r in rows)


def test_clips_decode_with_audio_and_faces(demo_set):
    casc = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    for path in sorted(demo_set.rglob("*.mp4")):
        cap = cv2.VideoCapture(str(path))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        assert n == 15
        ok, frame = cap.read()
        assert ok and frame.shape == (320, 320, 3)
        faces = casc.detectMultiScale(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), 1.1, 5)
        assert len(faces) >= 1, path
        probe = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                               capture_output=True, text=True).stderr
        assert "Video: h264" in probe and "Audio: aac" in probe


def test_fakes_differ_from_their_original_in_the_face_only(demo_set):
    def frame(p, k=3):
        cap = cv2.VideoCapture(str(p))
        cap.set(cv2.CAP_PROP_POS_FRAMES, k)
        return cap.read()[1].astype(np.float32)

    real = frame(demo_set / "original_sequences/youtube/c23/videos/000.mp4")
    for m in DEMO_METHODS:
        fake = frame(demo_set / f"manipulated_sequences/{m}/c23/videos/000_001.mp4")
        diff = np.abs(fake - real).mean(axis=2)
        centre = diff[80:240, 80:240].mean()
        border = np.concatenate([diff[:30].ravel(), diff[-30:].ravel()]).mean()
        assert centre > 2 * border, (m, centre, border)


@pytest.mark.slow
def test_deterministic_and_resumable(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build_demo_dataset(a, n_videos=10, seed=3, seconds=0.4)
    build_demo_dataset(b, n_videos=10, seed=3, seconds=0.4)

    def digest(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in root.rglob("*.mp4")}

    da = digest(a)
    assert da == digest(b)
    victim = next(iter(sorted(a.rglob("*.mp4"))))
    victim.unlink()
    build_demo_dataset(a, n_videos=10, seed=3, seconds=0.4)
    assert digest(a) == da


@pytest.mark.slow
def test_cli_demo_data(tmp_path):
    out = subprocess.run([sys.executable, "-m", "dflab", "demo-data", "--out", str(tmp_path),
                          "--videos", "5", "--seconds", "0.4"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "labels.csv").exists()


@pytest.mark.slow
def test_the_leak_check_catches_a_planted_leak(demo_set, tmp_path):
    """A positive control: the same clips with every fake's file made larger (bytes appended
    after the video, still decodable) must be flagged, and the clean set must not."""
    import shutil

    from dflab.data.synthetic import leak_check

    clean = leak_check(demo_set / "labels.csv")
    leaky = tmp_path / "leaky"
    shutil.copytree(demo_set, leaky)
    for r in csv.DictReader(open(leaky / "labels.csv")):
        if r["label"] == "fake":
            with open(leaky / r["path"], "ab") as fh:
                fh.write(b"\0" * 20000)
    planted = leak_check(leaky / "labels.csv")
    assert max(planted.values()) > 0.9, planted  # the file size gives the label away
    assert max(clean.values()) < max(planted.values()), (clean, planted)


@pytest.mark.parametrize("idx", [0, 3])  # a face shot from either side
def test_neural_textures_filtered_on_the_face_box_only_equals_the_whole_frame(idx):
    """The NeuralTextures frame filters only the face's box (a speed-up); the frame must equal
    the whole-frame recipe it replaced, byte for byte, so the demo set stays the same set."""
    from dflab.data.synthetic import FRAME_SIZE, _affine, _face_mask, _graded, _Identity, _render, \
        _sensor_noise, _source_photo

    ident = _Identity.make(idx, 0)
    graded = _graded(_source_photo(), ident)
    for t in (0.0, 0.45, 1.3):
        got = _render(graded, ident, "NeuralTextures", None, t, np.random.default_rng(7))
        M = _affine(ident, t)
        frame = cv2.warpAffine(graded, M, (FRAME_SIZE, FRAME_SIZE), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
        frame = _sensor_noise(frame, ident.noise, np.random.default_rng(7))
        clean = cv2.bilateralFilter(cv2.bilateralFilter(frame, 9, 40, 5), 9, 30, 5)
        mask = _face_mask(M, ident.mirror, feather=8)
        want = np.clip(frame * (1 - mask) + clean * mask + 0.5, 0, 255).astype(np.uint8)
        assert np.array_equal(got, want), (idx, t, np.abs(got.astype(int) - want).max())
