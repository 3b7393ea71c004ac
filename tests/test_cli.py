import json
import subprocess
import sys

import pytest

from conftest import ROOT


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "dflab", *args], capture_output=True, text=True,
                          cwd=ROOT, **kw)


@pytest.mark.slow
def test_env_json(tmp_path):
    out = run("env", "--json", "--set", f"env.data_root={tmp_path}", "model.backbone=resnet18")
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["data_root"] == str(tmp_path)
    assert rep["advice_for"]["backbone"] == "resnet18"
    assert "devices" in rep["torch"]


@pytest.mark.slow
def test_env_table(tmp_path):
    out = run("env", "--set", f"env.data_root={tmp_path}", "model.backbone=resnet18")
    assert out.returncode == 0
    assert "Batch size" in out.stdout and "CPU cores" in out.stdout


def test_bad_override_exits_2_with_hint():
    out = run("config", "--set", "train.lrr=1")
    assert out.returncode == 2
    assert "did you mean 'train.lr'" in out.stderr


def test_config_list_shows_every_stage():
    out = run("config", "--list")
    assert out.returncode == 0
    for stage in ("env.", "data.", "preprocess.", "features.", "model.", "train.", "eval.",
                  "export."):
        assert stage in out.stdout


def test_runs_lists_every_run_with_its_aucs_and_what_differs(tmp_path):
    """Runs written by the real writers (run folder, summary, history, evaluation report):
    `dflab runs` lists them newest first, with the settings in which they differ."""
    import time

    import numpy as np
    import pandas as pd

    from dflab.core.config import load_config
    from dflab.core.metrics import evaluate_predictions
    from dflab.core.files import write_json
    from dflab.core.runs import create_run_dir, runs_table, write_report

    rng = np.random.default_rng(0)
    frames = pd.DataFrame({"uid": np.repeat([f"v{k}" for k in range(20)], 5),
                           "video_id": np.repeat([f"{k:03d}" for k in range(20)], 5),
                           "target": np.repeat([0] * 10 + [1] * 10, 5),
                           "method": np.repeat(["original"] * 10 + ["Deepfakes"] * 10, 5),
                           "dataset": "demo", "compression": "c23", "split": "test"})
    frames["label"] = np.where(frames["target"] == 1, "fake", "real")
    frames["prob"] = np.clip(0.3 + 0.4 * frames["target"] + rng.normal(0, 0.2, 100), 0, 1)
    runs = tmp_path / "runs"
    for name, lr, loss in (("a", 1e-3, 0.41), ("b", 3e-4, 0.37)):
        cfg = load_config(None, {"model.backbone": "resnet18", "train.lr": lr,
                                 "env.data_root": str(tmp_path / name)})
        run = create_run_dir(runs, "train", cfg, name, env_report={})
        write_json(run / "train_summary.json", {"best_val_loss": loss})
        write_report(run, "test", {"visual": evaluate_predictions(frames, 0.5, n_boot=50)})
        time.sleep(0.02)
    cfg = load_config(None, {"env.data_root": str(tmp_path)})
    run = create_run_dir(runs, "forensic", cfg, "f", env_report={})
    (run / "history.jsonl").write_text('{"epoch": 1, "val_loss": 0.6}\n{"epoch": 2, "val_loss": 0.5}\n')

    rows = runs_table(runs)
    assert [r["run"] for r in rows] == ["forensic-f", "train-b", "train-a"]
    assert [r["best_val_loss"] for r in rows] == [0.5, 0.37, 0.41]
    assert rows[1]["test_auc"]["visual"]["video"] > 0.9 and rows[0]["test_auc"] == {}
    # the three differ in lr and backbone (the forensic run has the default); data roots are left out
    assert set(rows[1]["differs"]) == {"train.lr", "model.backbone"}
    assert rows[2]["differs"]["train.lr"] == 1e-3
    assert [r["run"] for r in runs_table(runs, "train")] == ["train-b", "train-a"]

    out = run_cli("runs", "--set", f"env.data_root={tmp_path}")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["run", "kind", "state", "created"]
    assert lines[2].startswith("train-b") and "visual" in lines[2] and "0.3700" in lines[2]
    assert "train.lr=0.001" in out.stdout
    js = json.loads(run_cli("runs", "--kind", "train", "--json", "--set",
                            f"env.data_root={tmp_path}").stdout)
    assert [r["run"] for r in js] == ["train-b", "train-a"]


run_cli = run
