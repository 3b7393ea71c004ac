"""Every file the lab reads, given to it or written by itself, fuzzed with hypothesis: random
bytes, a good file cut short, a good file with one byte changed, and (for structured files) a
good file with one field removed or replaced by any other value. Each example must end in the
lab's own one-line error that names the file (an error the CLI prints as ``dflab ...: error:``)
or in a sensible result, never in another exception, and must leave every other file as it was
(the damaged file too, when the read failed).

The examples are drawn from a fixed seed (``derandomize``), so every run tries the same ones;
``DFLAB_FUZZ_EXAMPLES`` sets how many per reader (docs/errors.md gives the counts)."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TINY
from dflab.cli import ANTICIPATED

EXAMPLES = int(os.environ.get("DFLAB_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck), print_blob=False)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=8)


@dataclass
class Reader:
    """One file the lab reads: where it lies in a folder built by ``setup``, its good content
    (an object turned into bytes by ``encode``, or bytes), and the lab's call that reads it."""
    name: str
    file: str  # relative to the folder
    setup: Callable[[Path], Any]  # builds the folder; returns the good content
    call: Callable[[Path], Any]  # reads the file as the lab does
    encode: Callable[[Any], bytes] | None = None  # None: the content is bytes

    def good(self, folder: Path) -> tuple[Any, bytes]:
        content = self.setup(folder)
        return content, content if self.encode is None else self.encode(content)


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _jsonl(rows: Any) -> bytes:
    rows = rows if isinstance(rows, list) else [rows]
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _torch(obj: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _array(value: Any) -> np.ndarray:
    try:
        return np.asarray(value)
    except ValueError:  # ragged lists: an object array (which the lab must refuse to unpickle)
        return np.asarray(value, dtype=object)


def _npz(obj: Any) -> bytes:
    buf = io.BytesIO()
    arrays = obj if isinstance(obj, dict) else {"arr_0": obj}
    np.savez_compressed(buf, **{str(k) or "_": _array(v) for k, v in arrays.items()})
    return buf.getvalue()


def _yaml(obj: Any) -> bytes:
    import yaml

    return yaml.safe_dump(obj).encode()


def _paths(obj: Any, at: tuple = ()) -> list[tuple]:
    """Every place in a tree of dicts and lists (tensors and arrays are leaves)."""
    out = [at]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, at + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            out += _paths(v, at + (i,))
    return out


def _mutated(data, obj: Any) -> Any:
    """``obj`` with one place removed or replaced by any JSON value."""
    at = data.draw(st.sampled_from(_paths(obj)), label="place")
    value = data.draw(JSON_VALUES, label="value")
    if not at:
        return value
    new = copy.deepcopy(obj)
    parent = new
    for key in at[:-1]:
        parent = parent[key]
    if data.draw(st.booleans(), label="remove"):
        del parent[at[-1]]
    else:
        parent[at[-1]] = value
    return new


def _damaged(data, reader: Reader, content: Any, good: bytes) -> bytes:
    kinds = ["bytes", "cut", "flip"] + (["field", "field"] if reader.encode else [])
    kind = data.draw(st.sampled_from(kinds), label="kind")
    if kind == "bytes":
        return data.draw(st.binary(max_size=400), label="bytes")
    if kind == "cut":
        return good[:data.draw(st.integers(0, max(len(good) - 1, 0)), label="cut at")]
    if kind == "flip":
        at = data.draw(st.integers(0, len(good) - 1), label="at")
        byte = data.draw(st.integers(0, 255), label="byte")
        return good[:at] + bytes([byte]) + good[at + 1:]
    return reader.encode(_mutated(data, content))


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.blake2b(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ the files and their readers

@pytest.fixture(scope="module")
def processed(demo_set, tmp_path_factory) -> Path:
    """Two demo clips preprocessed (meta.json, index.csv, preprocess_config.json) and their
    forensic features (features.csv)."""
    from dflab import Lab

    root = tmp_path_factory.mktemp("fuzz-lab")
    labels = (demo_set / "labels.csv").read_text().splitlines()
    (root / "clips").mkdir()
    rows = [labels[0]]
    for line in labels[1:3]:
        rows.append(line)
        name = line.split(",")[0]
        shutil.copy(demo_set / name, root / "clips" / Path(name).name)
    (root / "clips" / "labels.csv").write_text("\n".join(
        [rows[0]] + [",".join([Path(r.split(",")[0]).name] + r.split(",")[1:]) for r in rows[1:]])
        + "\n")
    lab = Lab(None, TINY, data_root=root)
    res = lab.preprocess(source="folder", root=root / "clips", out=root / "processed")
    assert res.processed == 2 and not res.failed
    lab.features(root / "processed")
    return root / "processed"


def _copy_processed(processed: Path, folder: Path) -> None:
    shutil.copytree(processed, folder, dirs_exist_ok=True)


def _first_video(folder: Path) -> Path:
    return sorted((folder / "videos").rglob("meta.json"))[0].parent


def _labels_setup(folder: Path) -> bytes:
    (folder / "a.mp4").write_bytes(b"")
    return b"path,label,method,split\na.mp4,real,original,train\nb.mp4,fake,x,test\n"


def _yaml_setup(folder: Path) -> dict:
    from dflab.core.config import preset_path

    import yaml

    return yaml.safe_load(preset_path("cpu").read_text())


def _ffpp_setup(folder: Path) -> list:
    for split, pairs in (("val", [["100", "101"]]), ("test", [["200", "201"]])):
        (folder / f"{split}.json").write_text(json.dumps(pairs))
    return [["000", "003"], ["003", "000"]]


def _dfdc_setup(folder: Path) -> dict:
    (folder / "aaa.mp4").write_bytes(b"")
    return {"aaa.mp4": {"label": "FAKE", "split": "train", "original": "bbb.mp4"},
            "bbb.mp4": {"label": "REAL", "split": "train"}}


def _meta_setup(processed: Callable[[], Path]):
    def setup(folder: Path) -> dict:
        _copy_processed(processed(), folder)
        return json.loads((_first_video(folder) / "meta.json").read_text())
    return setup


def _meta_call(folder: Path) -> None:
    from dflab.core.config import load_config
    from dflab.data.preprocess import frame_record, process_video
    from dflab.data.sources import VideoRecord

    video = _first_video(folder)
    good = json.loads((_FUZZ_GOOD / video.relative_to(folder) / "meta.json").read_text())
    rec = VideoRecord(**good["record"])
    cfg = load_config(None, TINY).preprocess
    process_video(rec, folder, cfg, {"name": "haar"})
    frame_record(folder, f"{video.relative_to(folder)}/crops/000000.jpg")


def _processed_file_setup(processed: Callable[[], Path], name: str, encode: Callable | None):
    def setup(folder: Path) -> Any:
        _copy_processed(processed(), folder)
        raw = (folder / name).read_bytes()
        return raw if encode is None else json.loads(raw)
    return setup


def _settings_call(folder: Path) -> None:
    from dflab.core.config import load_config
    from dflab.data.preprocess import adopt_preprocess_settings, settings_changes

    cfg = load_config(None, TINY)
    settings_changes(folder, cfg.preprocess)
    adopt_preprocess_settings(cfg, folder)


def _index_call(folder: Path) -> None:
    from dflab.data.datasets import load_index
    from dflab.data.stats import dataset_stats

    load_index(folder)
    dataset_stats(folder, save=False)


def _features_call(folder: Path) -> None:
    from dflab.forensic.model import load_features

    load_features(folder)


def _run_setup(folder: Path) -> dict:
    from dflab.core.config import load_config
    from dflab.core.runs import create_run_dir

    run = create_run_dir(folder / "runs", "train", load_config(None, TINY), "a",
                         env_report={}, processed="")
    (run / "eval_test.json").write_text(json.dumps(
        {"visual": {"frame": {"auc": 0.5, "n": 4}, "video": {"auc": 0.5, "n": 2},
                    "threshold": 0.5}}))
    (run / "history.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 0.5}) + "\n")
    return json.loads((run / "run.json").read_text())


def _run_call(folder: Path) -> None:
    from dflab.lab import Lab
    from dflab.core.runs import list_runs, run_info

    lab = Lab(None, TINY, data_root=folder)
    lab.runs_table()
    list_runs(folder / "runs")
    run_info(folder / "runs" / "train-a")
    lab.processed_dir(run=folder / "runs" / "train-a")


def _sibling_setup(name: str, encode: Callable):
    def setup(folder: Path) -> Any:
        _run_setup(folder)
        raw = (folder / "runs" / "train-a" / name).read_bytes()
        return [json.loads(ln) for ln in raw.splitlines()] if encode is _jsonl else json.loads(raw)
    return setup


def _report_call(folder: Path) -> None:
    from dflab.core.runs import read_report, runs_table

    read_report(folder / "runs" / "train-a")
    runs_table(folder / "runs")


def _history_call(folder: Path) -> None:
    from dflab.core.runs import plot_histories, run_history

    run_history(folder / "runs" / "train-a")
    plot_histories([folder / "runs" / "train-a"])


def _job_setup(folder: Path) -> dict:
    from dflab.core.jobs import result_to_json

    spec = {"method": "environment", "kwargs": {}, "data_root": str(folder), "created": 1.0,
            "config": {}}
    (folder / "jobs" / "j").mkdir(parents=True)
    (folder / "jobs" / "j" / "status.json").write_text(json.dumps(
        {"state": "done", "pid": 1, "method": "environment", "started": 1.0}))
    (folder / "jobs" / "j" / "events.jsonl").write_bytes(_jsonl(
        [{"type": "JobStart", "time": 1.0},
         {"type": "Progress", "job": "x", "done": 1, "total": 2, "message": ""}]))
    result_to_json({"a": 1.0, "path": Path("/x")}, folder / "jobs" / "j" / "result.json")
    return spec


def _job_call(folder: Path) -> None:
    from dflab.core.jobs import Job, list_jobs

    jobs = list_jobs(folder)
    job = Job(folder / "jobs" / "j")
    assert job.spec["method"] == "environment"
    job.status()
    job.read_events()
    assert all(isinstance(j.method, str) for j in jobs)


def _job_file_setup(name: str):
    def setup(folder: Path) -> Any:
        spec = _job_setup(folder)
        (folder / "jobs" / "j" / "job.json").write_text(json.dumps(spec))
        raw = (folder / "jobs" / "j" / name).read_bytes()
        return [json.loads(ln) for ln in raw.splitlines()] if name.endswith("l") \
            else json.loads(raw)
    return setup


def _result_call(folder: Path) -> None:
    from dflab.core.jobs import Job

    Job(folder / "jobs" / "j").result()


def _sync_setup(folder: Path) -> dict:
    (folder / "videos" / "v").mkdir(parents=True)
    return {"settings": np.array([5, 48, 13, 4], np.int64),
            "mouths": np.zeros((2, 5, 29, 48), np.uint8),
            "times": np.tile(np.arange(5) / 25, (2, 1)), "centre_index": np.array([2, 3]),
            "mouth_source": np.array(["landmarks", "box"]), "hop_s": np.float64(0.01),
            "fps": np.float64(25.0)}


def _sync_call(folder: Path) -> None:
    from dflab.data.sync_windows import load_windows

    load_windows(folder, "v")


def _checkpoint_setup(folder: Path) -> dict:
    from dflab.core.config import config_to_dict, load_config
    from dflab.visual.models import create_model

    cfg = load_config(None, {**TINY, "model.input_size": 32})
    model = create_model(cfg.model)
    (folder / "checkpoints").mkdir()
    return {"model": model.state_dict(), "config": config_to_dict(cfg), "epoch": 1,
            "data_config": {"input_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}}


def _checkpoint_call(folder: Path) -> None:
    from dflab.serve.bundle import load_visual
    from dflab.visual.train import load_model

    load_model(folder / "checkpoints" / "best.pt")
    load_visual(folder / "checkpoints" / "best.pt", device="cpu")


def _forensic_setup(folder: Path) -> dict:
    import torch

    from dflab.forensic.model import ForensicMLP

    return {"model": ForensicMLP(3, [4], 0.1).state_dict(), "hidden": [4], "dropout": 0.1,
            "names": ["a", "b", "c"], "scaler_mean": [0.0] * 3, "scaler_scale": [1.0] * 3,
            "threshold": 0.5, "config": {}, "_": torch.zeros(1)}


def _forensic_call(folder: Path) -> None:
    from dflab.forensic.model import load_forensic

    load_forensic(folder)


def _sync_model_setup(folder: Path) -> dict:
    from dflab.av.sync import SyncNet

    return {"state": SyncNet(5, 16).state_dict(), "frames": 5, "embed": 16, "max_offset": 3,
            "mouth_px": 48}


def _sync_model_call(folder: Path) -> None:
    from dflab.av.sync import load_sync

    load_sync(folder)


def _onnx_setup(folder: Path) -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in {"dflab_input_size": "32", "dflab_mean": "[0.5, 0.5, 0.5]",
                       "dflab_std": "[0.5, 0.5, 0.5]", "dflab_class_names": '["real", "fake"]',
                       "dflab_threshold": "0.5", "dflab_preprocess": "{}"}.items():
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()


def _onnx_call(folder: Path) -> None:
    from dflab.serve.bundle import load_visual
    from dflab.serve.export import onnx_metadata

    onnx_metadata(folder / "model.onnx")
    load_visual(folder / "model.onnx", device="cpu")


def _readers(processed: Callable[[], Path]) -> dict[str, Reader]:
    """The readers by name; ``processed()`` gives the preprocessed folder (built on first use)."""
    from dflab.core.config import load_config
    from dflab.data.sources import dfdc_source, folder_source, load_ffpp_splits

    listed = [
        # given by the user
        Reader("labels CSV", "labels.csv", _labels_setup, lambda f: folder_source(f)),
        Reader("YAML preset", "preset.yaml", _yaml_setup,
               lambda f: load_config(f / "preset.yaml"), _yaml),
        Reader("FF++ split JSON", "train.json", _ffpp_setup, lambda f: load_ffpp_splits(f), _json),
        Reader("DFDC metadata.json", "part0/metadata.json",
               lambda f: (f / "part0").mkdir() or _dfdc_setup(f / "part0"),
               lambda f: dfdc_source(f), _json),
        # written by the lab
        Reader("per-frame JSON (meta.json)", "", _meta_setup(processed), _meta_call, _json),
        Reader("preprocess_config.json", "preprocess_config.json",
               _processed_file_setup(processed, "preprocess_config.json", _json), _settings_call,
               _json),
        Reader("index.csv", "index.csv", _processed_file_setup(processed, "index.csv", None),
               _index_call),
        Reader("features.csv", "features.csv",
               _processed_file_setup(processed, "features.csv", None), _features_call),
        Reader("run.json", "runs/train-a/run.json", _run_setup, _run_call, _json),
        Reader("eval_test.json", "runs/train-a/eval_test.json",
               _sibling_setup("eval_test.json", _json), _report_call, _json),
        Reader("history.jsonl", "runs/train-a/history.jsonl",
               _sibling_setup("history.jsonl", _jsonl), _history_call, _jsonl),
        Reader("job.json", "jobs/j/job.json", _job_setup, _job_call, _json),
        Reader("status.json", "jobs/j/status.json", _job_file_setup("status.json"), _job_call,
               _json),
        Reader("events.jsonl", "jobs/j/events.jsonl", _job_file_setup("events.jsonl"),
               _job_call, _jsonl),
        Reader("result.json", "jobs/j/result.json", _job_file_setup("result.json"),
               _result_call, _json),
        Reader("sync.npz", "videos/v/sync.npz", _sync_setup, _sync_call, _npz),
        Reader("visual checkpoint", "checkpoints/best.pt", _checkpoint_setup, _checkpoint_call,
               _torch),
        Reader("forensic model", "forensic_mlp.pt", _forensic_setup, _forensic_call, _torch),
        Reader("sync model", "sync.pt", _sync_model_setup, _sync_model_call, _torch),
        Reader("ONNX metadata", "model.onnx", _onnx_setup, _onnx_call),
    ]
    return {r.name: r for r in listed}


READERS = ["labels CSV", "YAML preset", "FF++ split JSON", "DFDC metadata.json",
           "per-frame JSON (meta.json)", "preprocess_config.json", "index.csv", "features.csv",
           "run.json", "eval_test.json", "history.jsonl", "job.json", "status.json",
           "events.jsonl", "result.json", "sync.npz", "visual checkpoint", "forensic model",
           "sync model", "ONNX metadata"]

_FUZZ_GOOD = Path()  # the good copy of the folder under test (meta.json's record comes from it)


@pytest.mark.slow
@pytest.mark.parametrize("name", READERS)
def test_any_bytes_give_a_one_line_error_naming_the_file(name, request):
    global _FUZZ_GOOD
    reader = _readers(lambda: request.getfixturevalue("processed"))[name]
    with tempfile.TemporaryDirectory() as tmp:
        good_dir, folder = Path(tmp) / "good", Path(tmp) / "lab"
        good_dir.mkdir()
        content, good = reader.good(good_dir)
        rel = reader.file or str((_first_video(good_dir) / "meta.json").relative_to(good_dir))
        (good_dir / rel).write_bytes(good)
        _FUZZ_GOOD = good_dir
        reader.call(good_dir)  # the good file reads
        outcomes = {"error": 0, "read": 0}

        @FUZZ
        @given(data=st.data())
        def one(data):
            if folder.exists():
                shutil.rmtree(folder)
            shutil.copytree(good_dir, folder)
            target = folder / rel
            bad = _damaged(data, reader, content, good)
            target.write_bytes(bad)
            before = _snapshot(folder)
            try:
                reader.call(folder)
            except ANTICIPATED as exc:
                msg = str(exc)
                assert "\n" not in msg.strip(), f"{name}: a message of several lines: {msg!r}"
                assert Path(rel).name in msg, f"{name}: the message does not name the file: " \
                                              f"{msg!r}"
                assert _snapshot(folder) == before, f"{name}: a failed read changed files"
                outcomes["error"] += 1
            else:
                after = _snapshot(folder)
                changed = {k for k in before.keys() | after.keys()
                           if before.get(k) != after.get(k)}
                assert changed <= {rel}, f"{name}: reading changed {sorted(changed)}"
                outcomes["read"] += 1

        one()
        print(f"{name}: {sum(outcomes.values())} examples, {outcomes['error']} one-line errors, "
              f"{outcomes['read']} read")
