"""Model bundles: the torch-free preprocessing and forensic scoring agree with the training code,
the detector file is found by its hash, implausible face boxes are never the primary face, and
predict's inputs expand from files, folders and globs."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from dflab.serve.bundle import crops_to_batch
from dflab.forensic.scorer import ForensicScorer, save_forensic
from dflab.data.datasets import build_transforms
from dflab.core.files import sha256_file
from dflab.data.faces import PACKAGED_YUNET, Face, implausible, locate_weights, primary_face
from dflab.serve.predict import expand_inputs

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _smooth_images(n: int, seed: int = 0) -> list[np.ndarray]:
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        h, w = rng.integers(60, 300, 2)
        img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (0, 0), 2 + k)
        out.append(np.ascontiguousarray(img))
    return out


@pytest.mark.parametrize("size", [64, 112, 224])
def test_pillow_resize_follows_torchvision_eval_transform(size):
    imgs = _smooth_images(6)
    tf = build_transforms(size, MEAN, STD, train=False)
    ref = np.stack([tf(torch.from_numpy(i).permute(2, 0, 1).contiguous()).numpy() for i in imgs])
    got = crops_to_batch(imgs, size, MEAN, STD)
    levels = np.abs(ref - got) * np.array(STD)[None, :, None, None] * 255
    assert got.shape == ref.shape and got.dtype == np.float32
    assert levels.max() <= 2.05 and levels.mean() < 0.2  # rounding of two bilinear filters


def test_forensic_numpy_form_equals_the_torch_model(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from dflab.forensic.model import ForensicClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 12)) * rng.uniform(0.1, 50, 12) + rng.normal(size=12) * 10
    y = (X[:, 0] / 50 + rng.normal(size=300) > 0).astype(int)
    mlp = ForensicClassifier(hidden=(16, 8), epochs=15, patience=15).fit(X[:200], y[:200],
                                                                        X[200:], y[200:])
    logreg = make_pipeline(StandardScaler(), LogisticRegression()).fit(X[:200], y[:200])
    names = [f"f{k}" for k in range(12)]
    path = save_forensic(tmp_path / "forensic_model.npz", mlp, logreg, names,
                         {"forensic": 0.4, "logreg": 0.6}, crop_size=128)
    scorer = ForensicScorer.load(path)
    got = scorer.scores(X)
    np.testing.assert_allclose(got["forensic"], mlp.fake_prob(X), atol=1e-5)
    np.testing.assert_allclose(got["logreg"], logreg.predict_proba(X)[:, 1], atol=1e-9)
    assert scorer.names == names and scorer.threshold == 0.4 and scorer.crop_size == 128
    assert scorer.logreg["threshold"] == 0.6


def test_detector_weights_are_found_by_hash(tmp_path):
    sha = sha256_file(PACKAGED_YUNET)
    assert locate_weights("yunet", "", sha) == ""  # the packaged file
    copy = tmp_path / "detector" / "renamed.onnx"
    copy.parent.mkdir()
    shutil.copy(PACKAGED_YUNET, copy)
    other = tmp_path / "other.onnx"
    other.write_bytes(b"not this one")
    # a path recorded on another machine: the file is found by its hash
    found = locate_weights("yunet", "/elsewhere/train-box/yunet_s_640_640.onnx", sha,
                           [tmp_path / "detector"])
    assert found == str(copy)  # by its hash, in the run's own folder first
    assert locate_weights("yunet", str(other), "") == str(other)  # no hash: the path as given
    with pytest.raises(FileNotFoundError) as err:
        locate_weights("yolo", "/elsewhere/face.pt", "ab" * 32, [tmp_path / "detector"])
    msg = str(err.value)
    assert "abababababababab" in msg and "--set preprocess.detector_weights=PATH" in msg
    assert msg.count("\n") == 0


def test_a_larger_implausible_box_is_never_the_primary_face():
    shape = (480, 640, 3)
    face = Face((300, 100, 380, 200), 0.9, [[320, 130], [360, 130], [340, 150], [325, 175],
                                            [355, 175]])
    torso = Face((150, 150, 450, 480), 0.99)  # square enough, but below the face
    wide = Face((0, 200, 600, 300), 0.99)  # aspect 6
    upside = Face((100, 100, 200, 220), 0.99, [[120, 200], [180, 200], [150, 160], [125, 120],
                                               [175, 120]])  # eyes below the mouth
    assert implausible(face, shape) == ""
    assert "aspect" in implausible(wide, shape)
    assert "eyes" in implausible(upside, shape)
    assert primary_face([wide, upside, face], shape) is face
    assert primary_face([wide], shape) is None
    assert primary_face([torso, face], shape) is face  # a larger box under a head: a body
    assert primary_face([torso], shape) is torso  # alone, nothing says it is not a face
    spread = Face((100, 100, 200, 220), 0.99, [[120, 130], [180, 130], [150, 160], [125, 400],
                                               [175, 400]])
    assert "outside" in implausible(spread, shape)


def test_inputs_expand_from_files_folders_and_globs(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.mp4", "a/b/2.jpg", "a/b/3.png", "a/notes.txt", "c.mov"):
        (tmp_path / name).write_bytes(b"x")
    got = expand_inputs([tmp_path / "a", str(tmp_path / "*.mov"), tmp_path / "a" / "1.mp4"])
    assert [p.name for p in got] == ["1.mp4", "2.jpg", "3.png", "c.mov"]  # once each
    assert [p.name for p in expand_inputs([tmp_path / "a"], faces=True)] == ["2.jpg", "3.png"]
    with pytest.raises(ValueError, match="notes.txt"):
        expand_inputs([tmp_path / "a" / "notes.txt"])
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        expand_inputs([tmp_path / "missing.mp4"])
    with pytest.raises(ValueError, match=r"matches no"):
        expand_inputs([str(tmp_path / "*.avi")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no videos or images"):
        expand_inputs([tmp_path / "empty"])


def test_preprocessing_records_the_detector_file_by_hash(tmp_path, demo_set):
    from dflab.core.config import load_config
    from dflab.data.preprocess import adopt_preprocess_settings, preprocess_videos
    from dflab.data.sources import list_videos

    cfg = load_config(None, {"preprocess.detector": "yunet", "preprocess.every_nth": 15,
                             "preprocess.audio": False})
    recs = list_videos("demo", demo_set)[:2]
    preprocess_videos(recs, tmp_path / "p", cfg.preprocess)
    rec = json.loads((tmp_path / "p" / "preprocess_config.json").read_text())
    assert rec["detector_file"] == {"name": PACKAGED_YUNET.name,
                                    "sha256": sha256_file(PACKAGED_YUNET)}
    assert adopt_preprocess_settings(cfg, tmp_path / "p").preprocess.detector_sha256 == \
        sha256_file(PACKAGED_YUNET)


def test_a_wrong_detector_file_is_one_error_not_one_per_video(tmp_path, demo_set):
    out = subprocess.run([sys.executable, "-m", "dflab", "preprocess", "--source", "demo",
                          "--root", str(demo_set), "--out", str(tmp_path / "p"), "--set",
                          "preprocess.detector=yunet", f"preprocess.detector_weights={tmp_path}/x.onnx",
                          f"env.data_root={tmp_path}"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and out.stderr.count("x.onnx") == 1, out.stderr
