"""``dflab.Lab``: defaults resolved in one place, results, and the two front ends (CLI and
dashboard) producing identical run folders from the same job."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT
from dflab import Lab
from dflab.core.runs import create_run_dir, list_runs, read_report, run_info

TINY = {"env": {"seed": 0, "deterministic": True, "workers": 0},
        "preprocess": {"detector": "haar", "every_nth": 5, "audio": False},
        "model": {"backbone": "test_efficientnet", "pretrained": False, "input_size": 64,
                  "head_hidden": 32},
        "train": {"epochs": 1, "batch_size": 8, "accumulation": 1, "lr": 1e-3}}


def test_lab_resolves_paths_and_defaults(tmp_path):
    lab = Lab("cpu", ["train.lr=3e-4"], data_root=tmp_path)
    assert lab.cfg.model.backbone == "resnet10t" and lab.cfg.train.lr == 3e-4
    assert lab.paths["runs"] == tmp_path / "runs" and lab.paths["cache"].is_dir()
    assert lab.processed_dir() == tmp_path / "processed" / "demo"
    assert lab.processed_dir("/x") == Path("/x")
    assert lab.source_root("ffpp") == tmp_path / "ffpp"
    assert lab.input_size() == 112  # the preset's; 0 means the backbone's own
    assert Lab(data_root=tmp_path).input_size() == 320  # efficientnet_b4's timm default


def test_auto_detector_is_resolved_and_recorded(tmp_path, demo_set):
    from dflab.data.faces import PACKAGED_YUNET

    lab = Lab(data_root=tmp_path)
    assert lab.cfg.preprocess.detector == "auto" and PACKAGED_YUNET.is_file()
    pp = lab.preprocess_settings()
    assert (pp.detector, pp.detector_weights) == ("yunet", "")  # the packaged file: no download
    lab.cfg.preprocess.detector_weights = str(tmp_path / "nowhere.onnx")
    with pytest.raises(FileNotFoundError, match="nowhere.onnx"):  # not a silent Haar fallback
        lab.preprocess_settings()
    lab.cfg.preprocess.detector_weights = "faces.pt"
    assert lab.preprocess_settings().detector == "yolo"
    lab.cfg.preprocess.detector_weights = ""
    lab.cfg.preprocess.every_nth = 10
    lab.cfg.preprocess.audio = False
    res = lab.preprocess("demo", demo_set)
    assert res.detector == "yunet" and res.processed == 30 and "face coverage" in str(res)
    assert res.coverage > 0.95
    recorded = yaml.safe_load((res.out / "preprocess_config.json").read_text())
    assert recorded["detector"] == "yunet"  # what made the crops, not "auto"


def test_runs_record_kind_and_data(tmp_path, caplog):
    lab = Lab(data_root=tmp_path)
    a = create_run_dir(lab.paths["runs"], "forensic", lab.cfg, "a", {}, processed="/p/a")
    time.sleep(0.01)
    b = create_run_dir(lab.paths["runs"], "train", lab.cfg, "b", {}, processed="/p/b")
    (lab.paths["runs"] / "not-a-run" / "checkpoints").mkdir(parents=True)  # no run.json
    assert run_info(a)["kind"] == "forensic" and run_info(b)["processed"] == "/p/b"
    assert list_runs(lab.paths["runs"]) == [b, a]  # newest first
    assert lab.runs("train") == [b] and lab.runs("fuse") == []
    assert lab.processed_dir(run=b) == Path("/p/b")  # evaluate defaults to the run's data
    with pytest.raises(ValueError, match="run kind"):
        create_run_dir(lab.paths["runs"], "trian", lab.cfg, "c", {})
    data = tmp_path / "data"
    data.mkdir()
    (data / "index.csv").write_text("uid\nv1\n")
    c = create_run_dir(lab.paths["runs"], "train", lab.cfg, "c", {}, processed=data)
    assert len(run_info(c)["index_sha256"]) == 64
    (data / "index.csv").write_text("uid\nv1\nv2\n")  # more videos preprocessed since
    with caplog.at_level("WARNING", logger="dflab"):
        assert lab.processed_dir(run=c) == data
    assert "changed since run 'train-c'" in caplog.text
    with pytest.raises(FileNotFoundError, match="evaluate it first"):
        read_report(b)


def _normalise(text: str, root: Path) -> str:
    return text.replace(str(root), "<data_root>")


@pytest.mark.slow
def test_cli_and_dashboard_make_identical_runs(tmp_path, demo_set):
    """The same small job (preprocess, train one epoch, evaluate) through `dflab` and through
    the dashboard's buttons gives the same config, index and predictions."""
    pytest.importorskip("ipywidgets")
    from app import Dashboard
    from dflab.core.config import load_config

    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(TINY))
    cli_root, ui_root = tmp_path / "cli", tmp_path / "ui"
    for root in (cli_root, ui_root):
        shutil.copytree(demo_set, root / "demo")

    def dflab(*args):
        out = subprocess.run([sys.executable, "-m", "dflab.cli", *args, "--config",
                              str(cfg_file), "--set", f"env.data_root={cli_root}"],
                             capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=900)
        assert out.returncode == 0, out.stderr
        return out.stdout

    dflab("preprocess")
    dflab("train", "--name", "same")
    assert "visual (test, threshold" in dflab("evaluate", "--run",
                                              str(cli_root / "runs" / "train-same"))

    dash = Dashboard(load_config(cfg_file), data_root=str(ui_root))
    data = dash.data_tab
    data.pre_job.start.click()
    data.pre_job.wait(600)
    assert not data.pre_job.error, data.pre_job.error
    tr = dash.train_tab
    tr.name.value = "same"
    tr.job.start.click()
    tr.job.wait(600)
    assert not tr.job.error, tr.job.error
    tr.eval_job.start.click()
    tr.eval_job.wait(600)
    assert not tr.eval_job.error, tr.eval_job.error

    cli_run, ui_run = cli_root / "runs" / "train-same", ui_root / "runs" / "train-same"
    for rel in ("processed/demo/index.csv", "processed/demo/preprocess_config.json"):
        assert _normalise((cli_root / rel).read_text(), cli_root) == \
            _normalise((ui_root / rel).read_text(), ui_root), rel
    assert _normalise((cli_run / "config.yaml").read_text(), cli_root) == \
        _normalise((ui_run / "config.yaml").read_text(), ui_root)
    infos = [yaml.safe_load(_normalise((run / "run.json").read_text(), root))
             for run, root in ((cli_run, cli_root), (ui_run, ui_root))]
    for info in infos:
        info.pop("created")
    assert infos[0] == infos[1] and infos[0]["processed"] == "<data_root>/processed/demo"
    a = pd.read_csv(cli_run / "predictions_test.csv")
    b = pd.read_csv(ui_run / "predictions_test.csv")
    pd.testing.assert_frame_equal(a, b)
    assert read_report(cli_run)["visual"]["frame"] == read_report(ui_run)["visual"]["frame"]


def test_derive_copies_the_config_or_starts_from_a_preset_on_the_same_data(tmp_path):
    lab = Lab("default", {"train.epochs": 7}, data_root=tmp_path)
    lab.cfg.env.runs_dir = str(tmp_path / "elsewhere")
    more = lab.derive({"train.lr": 3e-5})  # the default preset's lr is 1e-4
    assert more.cfg.train.epochs == 7 and more.cfg.train.lr == 3e-5
    assert lab.cfg.train.lr == 1e-4  # the original is left as it was
    cpu = lab.derive({"train.epochs": 2}, preset="cpu")
    assert cpu.cfg.model.backbone == Lab("cpu").cfg.model.backbone != lab.cfg.model.backbone
    assert cpu.cfg.train.epochs == 2
    assert cpu.paths["data_root"] == lab.paths["data_root"] and cpu.paths["runs"] == \
        tmp_path / "elsewhere"
