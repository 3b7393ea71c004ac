"""Generalisation protocols on the demo set's four methods: every cell an ordinary run, an
interrupted protocol resumes at the cell it stopped in, and the matrix reads back from the
cells' own evaluation reports."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, TINY
from dflab.core.events import CancelToken, Cancelled, Progress, StepLoss
from dflab.analysis.protocol import PROTOCOLS, format_protocol, plot_protocol, protocol_cells

METHODS = ["Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"]


def test_cells_of_each_protocol():
    assert [c["train_methods"] for c in protocol_cells("cross-method", METHODS)] == [
        [m] for m in METHODS]
    loo = protocol_cells("leave-one-out", METHODS)
    assert [c["held_out"] for c in loo] == METHODS
    assert all(c["held_out"] not in c["train_methods"] and len(c["train_methods"]) == 3
               for c in loo)
    assert protocol_cells("cross-dataset", METHODS, ["/d/dfdc"])[0]["tests"] == ["/d/dfdc"]
    with pytest.raises(ValueError, match="--test-on"):
        protocol_cells("cross-dataset", METHODS)
    with pytest.raises(ValueError, match=", ".join(PROTOCOLS)):
        protocol_cells("cross-methods", METHODS)


@pytest.fixture
def lab(tiny_lab):
    return tiny_lab


@pytest.mark.slow
def test_cross_method_resumes_at_the_interrupted_cell(lab):
    lab.cfg.train.epochs = 3
    tok, seen = CancelToken(), {"cell": 0}

    def stop_in_second_cell(event):  # in the second cell's second epoch: epoch 1 is saved
        if isinstance(event, Progress) and event.job == "protocol":
            seen["cell"] = event.done
        if isinstance(event, StepLoss) and seen["cell"] == 1 and event.epoch == 2:
            tok.cancel()

    with pytest.raises(Cancelled):
        lab.protocol("cross-method", "cm", callbacks=[stop_in_second_cell], cancel=tok)
    runs = lab.paths["runs"]
    first, second = runs / "train-cm-Deepfakes", runs / "train-cm-Face2Face"
    assert (first / "eval_test.json").is_file() and (second / "checkpoints/last.pt").is_file()
    assert not (second / "train_summary.json").exists()
    first_report = (first / "eval_test.json").read_text()

    res = lab.protocol("cross-method", "cm")
    assert (first / "eval_test.json").read_text() == first_report  # the finished cell was kept
    hist = [json.loads(x) for x in (second / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2, 3]  # resumed, not restarted
    m = res.report["matrix"]
    assert m["rows"] == METHODS and sorted(m["cols"]) == METHODS
    for i, method in enumerate(m["rows"]):  # every cell is its run's own test report
        cell = json.loads((runs / f"train-cm-{method}" / "eval_test.json").read_text())["visual"]
        for j, col in enumerate(m["cols"]):
            assert m["video"][i][j] == pytest.approx(cell["video_per_method"][col]["auc"])
    # each cell's model saw only its own method's fakes
    for method in METHODS:
        cfg = (runs / f"train-cm-{method}" / "config.yaml").read_text()
        assert f"methods:\n  - {method}\n" in cfg
    saved = json.loads(res.path.read_text())
    assert saved["matrix"] == m and "trained on (rows)" in str(res)
    assert plot_protocol(saved).data[0].z[0][0] == round(m["video"][0][0], 3)
    lab.cfg.train.epochs = TINY["train.epochs"]


@pytest.mark.slow
def test_leave_one_out_and_cross_dataset_from_the_cli(lab, tmp_path):
    other = tmp_path / "copy"  # the same crops under another folder name
    shutil.copytree(lab.processed_dir(), other)
    root = lab.paths["data_root"]

    def dflab(*args):
        out = subprocess.run([sys.executable, "-m", "dflab", "protocol", *args, "--set",
                              f"env.data_root={root}", *[f"{k}={v}" for k, v in TINY.items()]],
                             capture_output=True, text=True, cwd=ROOT, timeout=900)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    text = dflab("leave-one-out", "--name", "loo", "--methods", "FaceSwap", "Deepfakes")
    loo = json.loads((root / "runs/protocol-loo/protocol.json").read_text())
    assert [c["held_out"] for c in loo["cells"]] == ["FaceSwap", "Deepfakes"]
    assert [c["train_methods"] for c in loo["cells"]] == [["Deepfakes"], ["FaceSwap"]]
    assert "leave-one-out: video AUC" in text

    dflab("cross-dataset", "--name", "xd", "--test-on", str(other))
    xd = json.loads((root / "runs/protocol-xd/protocol.json").read_text())
    assert xd["matrix"]["cols"] == ["demo", "copy"]
    own, copy = xd["matrix"]["frame"][0]
    assert own == pytest.approx(copy)  # the same crops score the same in either folder
    run = root / "runs/train-xd-all"
    assert (run / "eval_test.json").is_file() and (run / "eval_test_copy.json").is_file()
    print(format_protocol(xd))
