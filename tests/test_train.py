"""Visual training, evaluation, export and prediction on small real runs (CPU)."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from dflab.core.config import load_config
from dflab.core.events import CancelToken, Cancelled, EpochMetrics, LogCallback, StepLoss
from dflab.data.preprocess import preprocess_videos
from dflab.data.sources import list_videos
from dflab.visual.train import FocalLoss, load_checkpoint, train
from conftest import ROOT

TINY = {"model.backbone": "test_efficientnet", "model.pretrained": False,
        "model.input_size": 64, "model.head_hidden": 32, "train.batch_size": 16,
        "train.accumulation": 1, "env.workers": 0, "env.deterministic": True,
        "train.epochs": 2, "train.lr": 1e-3}


def tiny(**kw):
    return load_config(None, {**TINY, **kw})


@pytest.fixture(scope="module")
def crops(demo_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("crops")
    c = tiny().preprocess
    c.detector, c.every_nth, c.audio, c.save_frames = "haar", 5, False, True
    preprocess_videos(list_videos("demo", demo_set), out, c)
    return out


@pytest.fixture(scope="module")
def run(crops, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    log = LogCallback()
    path = train(tiny(**{"train.save_every": 1}), crops, runs, "base", callbacks=[log])
    return path, log


def test_run_folder_has_everything(run):
    path, log = run
    for name in ("config.yaml", "environment.json", "versions.json", "history.jsonl",
                 "train_setup.json", "train_summary.json", "checkpoints/best.pt",
                 "checkpoints/last.pt", "checkpoints/epoch_001.pt", "checkpoints/epoch_002.pt"):
        assert (path / name).exists(), name
    hist = [json.loads(line) for line in (path / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2]
    for key in ("train_loss", "val_loss", "val_accuracy", "val_precision", "val_recall",
                "val_f1", "val_auc", "val_ap", "val_eer", "lr"):
        assert key in hist[0]
    setup = json.loads((path / "train_setup.json").read_text())
    assert setup["data_config"]["input_size"] == 64 and setup["amp"] == "off"
    # TensorBoard: the same epoch metrics at the step that ended each epoch, a loss per step
    tb = _scalars(path)
    assert [(e.step, round(e.value, 5)) for e in tb["loss/val"]] == \
        [(h["step"], round(h["val_loss"], 5)) for h in hist]
    assert [e.step for e in tb["loss/train_step"]] == list(range(1, hist[-1]["step"] + 1))
    assert {"val/auc", "loss/train", "lr"} <= set(tb)
    epochs = [e for e in log.events if isinstance(e, EpochMetrics)]
    steps = [e for e in log.events if isinstance(e, StepLoss)]
    assert len(epochs) == 2 and epochs[0].roc["fpr"] and len(steps) >= 2
    # cosine schedule: learning rate falls towards min_lr
    assert steps[-1].lr < steps[0].lr
    ck = load_checkpoint(path / "checkpoints/last.pt")  # weights_only=True
    assert ck["epoch"] == 2 and {"model", "optimizer", "scheduler", "scaler", "rng",
                                 "early"} <= set(ck)
    # the run carries the settings that made its crops (haar, every 5th), not the defaults
    # (auto), so prediction detects and crops the same way
    assert tiny().preprocess.detector == "auto"
    assert ck["config"]["preprocess"]["detector"] == "haar"
    assert ck["config"]["preprocess"]["every_nth"] == 5


def test_refuses_to_overwrite_and_resumes_only_existing(run, crops):
    path, _ = run
    with pytest.raises(FileExistsError, match="resume"):
        train(tiny(), crops, path.parent, "base")
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(tiny(), crops, path.parent, "nope", resume=True)


def test_killed_run_resumes_as_if_never_stopped(crops, tmp_path):
    cfg = tiny(**{"train.epochs": 3, "train.batch_size": 8})  # several batches per epoch
    straight = train(cfg, crops, tmp_path, "straight")
    tok = CancelToken()
    batches = []

    def kill_in_epoch_2(event):
        if isinstance(event, StepLoss):
            batches.append(event)
            if event.epoch == 2:
                tok.cancel()

    with pytest.raises(Cancelled):
        train(cfg, crops, tmp_path, "killed", callbacks=[kill_in_epoch_2], cancel=tok)
    assert load_checkpoint(tmp_path / "train-killed/checkpoints/last.pt")["epoch"] == 1
    resumed = train(cfg, crops, tmp_path, "killed", resume=True)
    a = load_checkpoint(straight / "checkpoints/last.pt")["model"]
    b = load_checkpoint(resumed / "checkpoints/last.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ha = (straight / "history.jsonl").read_text().splitlines()
    hb = (resumed / "history.jsonl").read_text().splitlines()
    assert [json.loads(x)["val_loss"] for x in ha] == [json.loads(x)["val_loss"] for x in hb]
    # the killed run's events after its last checkpoint are dropped on resume: no doubled steps
    ta, tb = _scalars(straight), _scalars(resumed)
    for tag in ("loss/train_step", "loss/val"):
        assert [(e.step, e.value) for e in ta[tag]] == [(e.step, e.value) for e in tb[tag]], tag


def _scalars(run) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


def test_early_stopping_and_options(crops, tmp_path):
    cfg = tiny(**{"train.epochs": 6, "train.patience": 1, "train.lr": 0.05, "train.loss": "focal",
                  "train.balance": True, "train.max_frames_per_video": 2})
    path = train(cfg, crops, tmp_path, "es")
    summary = json.loads((path / "train_summary.json").read_text())
    losses = [json.loads(x)["val_loss"] for x in (path / "history.jsonl").read_text().splitlines()]
    # with patience 1, training ends at the first epoch that does not improve on the best so far
    first_bad = next((i + 1 for i in range(1, len(losses)) if losses[i] >= min(losses[:i]) - 1e-6),
                     None)
    assert summary["stopped_early"] == (first_bad is not None)
    assert summary["last_epoch"] == (first_bad or 6) == len(losses)
    assert summary["best_epoch"] == int(np.argmin(losses)) + 1
    best = load_checkpoint(path / "checkpoints/best.pt")
    assert best["epoch"] == summary["best_epoch"]  # model selection on validation loss


def test_focal_loss_downweights_easy_examples():
    logits = torch.tensor([[4.0, -4.0], [0.1, -0.1]])
    target = torch.tensor([0, 0])
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    fl = torch.stack([FocalLoss(2.0)(logits[i:i + 1], target[i:i + 1]) for i in range(2)])
    assert (fl < ce).all() and fl[0] / ce[0] < fl[1] / ce[1]


@pytest.mark.slow
def test_evaluate_export_predict(run, crops, demo_set):
    from dflab.visual.evaluate import evaluate_run
    from dflab.serve.export import export_onnx, onnx_metadata
    from dflab.serve.bundle import load_visual
    from dflab.serve.predict import predict_file

    path, _ = run
    rep = evaluate_run(path, crops, "test")
    assert rep["threshold_source"] == "tuned on val"
    assert rep["video"]["n"] == 10 and rep["frame"]["n"] == 30
    assert set(rep["video_per_method"]) == {"FaceSwap", "Deepfakes", "Face2Face", "NeuralTextures"}
    preds = pd.read_csv(path / "predictions_test.csv")
    assert len(preds) == 30 and {"prob", "pred", "wrongness", "crop_path"} <= set(preds.columns)
    assert set(preds["split"]) == {"test"}

    ex = export_onnx(path)
    assert ex["parity_ok"] and ex["max_abs_diff"] < 1e-4
    meta = onnx_metadata(path / "model.onnx")
    assert meta["input_size"] == 64 and meta["class_names"] == ["real", "fake"]
    assert meta["threshold"] == pytest.approx(rep["threshold"])
    assert not (path / "model.onnx.data").exists()  # one self-contained file

    video = next(demo_set.glob("manipulated_sequences/FaceSwap/c23/videos/*.mp4"))
    a = predict_file(video, path / "checkpoints/best.pt")
    b = predict_file(video, path / "model.onnx")
    assert a["verdict"] in ("real", "fake") and len(a["frames"]) == 3
    assert [f["frame_index"] for f in a["frames"]] == [f["frame_index"] for f in b["frames"]]
    assert np.allclose([f["prob"] for f in a["frames"]], [f["prob"] for f in b["frames"]],
                       atol=1e-4)
    crop = next(crops.rglob("crops/*.jpg"))
    img = predict_file(crop.parent.parent / "frames" / crop.name, path / "model.onnx")
    assert img["frames_sampled"] == 1
    from dflab.serve.export import export_int8

    q = export_int8(path, crops, calibration=32)  # static int8, calibrated on training crops
    assert q["bytes"] < q["float_bytes"] and q["test_frames"] == 30
    assert q["mean_abs_prob_diff"] < 0.1, q  # by value (the learned model's closer check:
    c = predict_file(video, path / "model.int8.onnx")  # test_learning)
    assert [f["frame_index"] for f in c["frames"]] == [f["frame_index"] for f in b["frames"]]
    assert np.abs(np.array([f["prob"] for f in c["frames"]]) -
                  np.array([f["prob"] for f in b["frames"]])).max() < 0.2
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_visual(path / "missing.pt")


@pytest.mark.slow
def test_cli_train_evaluate_export_predict(crops, tmp_path, demo_set, capsys):
    """The commands as a user types them: the first through `python -m dflab` (the real entry
    point), the rest through the same `main()` in this process (no 10 s import per call)."""
    from dflab.cli import main

    sets = [f"{k}={v}" for k, v in TINY.items()] + [f"env.data_root={tmp_path}",
                                                    "train.epochs=1"]

    def dflab(*args):
        capsys.readouterr()
        code = main([*args, "--set", *sets])
        out, err = capsys.readouterr()
        assert code == 0, err[-3000:]
        return out

    out = subprocess.run([sys.executable, "-m", "dflab", "train", "--processed", str(crops),
                          "--name", "cli", "--set", *sets], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0 and "best epoch 1 of 1" in out.stdout, out.stderr[-3000:]
    run = tmp_path / "runs" / "train-cli"
    assert "video" in dflab("evaluate", "--run", str(run), "--processed", str(crops))
    assert "max abs diff" in dflab("export", "--run", str(run))
    video = next(demo_set.glob("original_sequences/youtube/c23/videos/*.mp4"))
    out = dflab("predict", str(video), "--model", str(run / "model.onnx"))
    assert "p(fake)=" in out and ("REAL" in out or "FAKE" in out)
    # the fused verdict: forensic MLP beside the visual model, stacked on val, scored on test
    dflab("features", "--processed", str(crops))
    dflab("train-forensic", "--processed", str(crops), "--name", "cli")
    out = dflab("fuse", "--run", str(run), "--forensic", str(tmp_path / "runs" / "forensic-cli"),
                "--processed", str(crops), "--name", "cli")
    for model in ("visual", "forensic", "fused"):
        assert f"{model} (test, threshold" in out
    assert "auc=" in out and "videos" in out
    fuse = tmp_path / "runs" / "fuse-cli"
    report = json.loads((fuse / "eval_test.json").read_text())
    assert set(report) == {"visual", "forensic", "fused"}
    assert report["visual"]["frame"].keys() == report["fused"]["frame"].keys()  # one schema
    out = dflab("predict", str(video), "--model", str(fuse))
    assert "p(fake) per model: visual" in out and "fused" in out and "forensic=" in out


@pytest.mark.slow
def test_ddp_two_processes_gloo(crops, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(
        "import sys\n"
        "from dflab.core.config import load_config\n"
        "from dflab.visual.train import train\n"
        f"cfg = load_config(None, {TINY!r})\n"
        "cfg.train.epochs = 1\n"
        "cfg.train.batch_size = 4\n"
        f"train(cfg, {str(crops)!r}, {str(tmp_path)!r}, 'ddp')\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          "--standalone", str(script)], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    setup = json.loads((tmp_path / "train-ddp" / "train_setup.json").read_text())
    assert setup["world_size"] == 2 and setup["effective_batch"] == 8
    hist = json.loads((tmp_path / "train-ddp" / "history.jsonl").read_text().splitlines()[0])
    # each rank stepped through its half of the crops (a rank on all of them: twice the steps)
    assert setup["steps_per_epoch"] == (setup["train_crops"] // 2) // 4 == hist["step"]
    assert np.isfinite(hist["train_loss"]) and hist["train_loss"] > 0
    assert (tmp_path / "train-ddp" / "checkpoints" / "best.pt").exists()
