"""A kill at any point of any long job: each job of tests/killed_job.py is killed with SIGKILL
at three points (by the count of events it has sent: early, half-way, near the end), re-run as
a user would, and must end with the same files and numbers as a run never interrupted, and no
temporary file left behind (kill -9 during a download is in test_acquire.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from killed_job import JOBS, lab_at, run_job

# what differs between two runs by design: clocks, durations, this machine's processes and
# library versions, and where the data root lies (every text has it replaced by <root>)
VOLATILE_KEYS = {"seconds", "elapsed_s", "time", "created", "started", "finished", "pid",
                 "duration_s", "wall_s", "since", "peak_raw_bytes", "epoch_seconds",
                 "train_seconds", "seconds_per_epoch", "peak_memory_mb", "when"}
VOLATILE_FILES = {"environment.json", "versions.json", "job.log", "stats.json"}
# TensorBoard writes one log per process, named by its clock, host and pid
VOLATILE_NAMES = ("events.out.tfevents.",)
# a run's own account of what it did (a re-run after a kill finishes fewer items itself)
RUN_ACCOUNTS = {"report.json": {"processed", "skipped_finished"},
                "stream_report.json": {"processed", "skipped_done"}}
TEMPORARY = (".part", ".tmp", ".writer-", ".lock")
FRACTIONS = (0.1, 0.5, 0.9)


def _clean(value, root: str):
    if isinstance(value, dict):
        return {k: _clean(v, root) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_clean(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(root, "<root>")
    return value


def _fingerprint_file(path: Path, root: str):
    """What a file holds, in a form equal for equal content (tensors and arrays by their bytes,
    JSON without its clocks, CSV rows in order)."""
    if path.suffix == ".json":
        data = _clean(json.loads(path.read_text()), root)
        return {k: v for k, v in data.items() if k not in RUN_ACCOUNTS.get(path.name, ())} \
            if isinstance(data, dict) else data
    if path.suffix == ".jsonl":
        return [_clean(json.loads(ln), root) for ln in path.read_text().splitlines() if ln]
    if path.suffix == ".csv":
        import pandas as pd

        df = pd.read_csv(path, keep_default_na=False)
        keys = [c for c in ("uid", "frame_index", "run", "cell") if c in df.columns]
        df = df.drop(columns=[c for c in df.columns if c in VOLATILE_KEYS])
        text = (df.sort_values(keys) if keys else df).to_csv(index=False)
        return text.replace(root, "<root>")
    if path.suffix == ".pt":
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        return _tensors(obj, root)
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k: hashlib.sha256(np.ascontiguousarray(z[k]).tobytes()).hexdigest()
                    for k in z.files}
    if path.suffix == ".yaml":
        return path.read_text().replace(root, "<root>")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tensors(obj, root: str):
    import torch

    if isinstance(obj, torch.Tensor):
        return hashlib.sha256(obj.detach().contiguous().numpy().tobytes()).hexdigest()
    if isinstance(obj, dict):
        return {k: _tensors(v, root) for k, v in obj.items() if k not in VOLATILE_KEYS}
    if isinstance(obj, (list, tuple)):
        return [_tensors(v, root) for v in obj]
    return _clean(obj, root)


def fingerprint(root: Path, folders: list[str]) -> dict[str, object]:
    """Every file the job wrote, by its path under the data root. The features cache is named by
    each crop's path and mtime (a cache of another folder is another cache), so its vectors are
    compared as one sorted list of contents."""
    out: dict[str, object] = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*")):
            if not path.is_file() or path.name in VOLATILE_FILES or "logs" in path.parts or \
                    path.name.startswith(VOLATILE_NAMES):
                continue
            if "features_cache" in path.parts:
                at = path.parts.index("features_cache")
                cache = str(Path(*path.parts[:at + 1]).relative_to(root))
                out.setdefault(cache, []).append(_fingerprint_file(path, str(root)))
                continue
            out[str(path.relative_to(root))] = _fingerprint_file(path, str(root))
    for key, value in out.items():
        if key.endswith("features_cache"):
            value.sort()
    return out


def leftovers(root: Path, folders: list[str]) -> list[str]:
    return [str(p.relative_to(root)) for f in folders for p in (root / f).rglob("*")
            if any(t in p.name for t in TEMPORARY)]


def _dfdc_zips(demo_set: Path, folder: Path) -> None:
    """Two DFDC parts in Kaggle's layout, two demo clips each (a fake and its original)."""
    clips = sorted(demo_set.rglob("*.mp4"))
    folder.mkdir(parents=True)
    for k in range(2):
        name = f"dfdc_train_part_{k}"
        meta = {f"r{k}.mp4": {"label": "REAL", "split": "train"},
                f"f{k}.mp4": {"label": "FAKE", "split": "train", "original": f"r{k}.mp4"}}
        with zipfile.ZipFile(folder / f"{name}.zip", "w") as zf:
            zf.writestr(f"{name}/metadata.json", json.dumps(meta))
            for i, v in enumerate(meta):
                zf.write(clips[2 * k + i], f"{name}/{v}")


@pytest.fixture(scope="module")
def base(tiny_lab, tmp_path_factory) -> Path:
    """A data root every job starts from: the tiny demo set preprocessed, its features, a
    visual run (train-v) and a forensic run (forensic-f); a 2-identity talking set preprocessed
    without sync windows; two DFDC parts for the fake Kaggle."""
    from dflab.data.synthetic import build_talking_dataset

    root = tmp_path_factory.mktemp("kill-base")
    src = tiny_lab.paths["data_root"]
    shutil.copytree(src / "demo", root / "demo")
    shutil.copytree(src / "processed" / "demo", root / "processed" / "demo")
    lab = lab_at(root)
    lab.features(root / "processed" / "demo")
    lab.train(root / "processed" / "demo", name="v")
    lab.train_forensic(root / "processed" / "demo", name="f")
    labels = build_talking_dataset(root / "demo_av", n_identities=2, workers=1)
    av = lab.derive({"preprocess.audio": True, "preprocess.sync_frames": 0})
    assert av.preprocess("demo", labels.parent, out=root / "processed" / "demo_av").failed == 0
    _dfdc_zips(root / "demo", root / "kaggle")
    return root


def _kill_at(job: str, root: Path, k: int) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "killed_job.py"), job, str(root),
                           str(k)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -9, f"{job} was not killed at event {k}: {proc.stderr[-1500:]}"


@pytest.mark.slow
@pytest.mark.parametrize("job", list(JOBS))
def test_a_kill_at_any_point_then_a_rerun_equals_an_uninterrupted_run(job, base, tmp_path):
    folders = JOBS[job][1]
    ref = tmp_path / "ref"
    shutil.copytree(base, ref)
    events = []
    run_job(job, ref, [events.append])
    want = fingerprint(ref, folders)
    assert want and not leftovers(ref, folders)
    points = sorted({min(len(events) - 1, max(1, round(len(events) * f))) for f in FRACTIONS})
    assert len(points) >= 2, f"{job} sends only {len(events)} events"
    for k in points:
        root = tmp_path / f"killed-{k}"
        shutil.copytree(base, root)
        _kill_at(job, root, k)
        run_job(job, root)
        got = fingerprint(root, folders)
        assert sorted(got) == sorted(want), f"{job} killed at event {k}: other files"
        for name in want:
            assert got[name] == want[name], f"{job} killed at event {k}: {name} differs"
        assert not leftovers(root, folders), f"{job} killed at event {k}: temporary files left"
        shutil.rmtree(root)
    print(f"{job}: {len(events)} events, killed at {points}, every re-run equal")
