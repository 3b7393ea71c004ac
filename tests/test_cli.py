import json
import subprocess
import sys

from conftest import ROOT


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "dflab", *args], capture_output=True, text=True,
                          cwd=ROOT, **kw)


def test_env_json(tmp_path):
    out = run("env", "--json", "--set", f"env.data_root={tmp_path}", "model.backbone=resnet18")
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["data_root"] == str(tmp_path)
    assert rep["advice_for"]["backbone"] == "resnet18"
    assert "devices" in rep["torch"]


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
