"""Run folders: every run writes its resolved config, the environment report and library versions
next to its outputs, so no result depends on a hidden setting."""

from __future__ import annotations

import json
import os
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from .config import LabConfig, save_config

__all__ = ["library_versions", "create_run_dir", "write_json", "read_json", "RUN_KINDS",
           "run_info", "list_runs", "read_report", "write_report"]

#: What a run folder can hold, recorded in its ``run.json`` (never parsed from the folder name).
RUN_KINDS = ("train", "forensic", "fuse", "demo")

TRACKED = ["dflab", "torch", "torchvision", "timm", "numpy", "opencv-python", "ultralytics",
           "scikit-learn", "librosa", "onnx", "onnxruntime", "shap", "ipywidgets", "plotly"]


def library_versions() -> dict[str, str]:
    out = {}
    for name in TRACKED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically: a crash leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
    return path


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def create_run_dir(runs_root: str | Path, kind: str, cfg: LabConfig, name: str = "",
                   env_report: dict | None = None, processed: str | Path = "") -> Path:
    """``<runs_root>/<kind>-<name or timestamp>`` with run.json (kind, name, creation time, the
    processed folder and the SHA-256 of its index.csv), config.yaml, environment.json, versions.json.

    An existing folder of that name is reused (resume); its config is rewritten.
    """
    if kind not in RUN_KINDS:
        raise ValueError(f"run kind '{kind}' is not one of {list(RUN_KINDS)}")
    stamp = name or time.strftime("%Y%m%d-%H%M%S")
    run = Path(runs_root) / f"{kind}-{stamp}"
    run.mkdir(parents=True, exist_ok=True)
    info = run / "run.json"
    created = read_json(info)["created"] if info.exists() else time.time()
    index = Path(processed) / "index.csv" if processed else None
    write_json(info, {"kind": kind, "name": stamp, "created": created,
                      "processed": str(Path(processed).resolve()) if processed else "",
                      "index_sha256": _sha256(index) if index and index.is_file() else ""})
    save_config(cfg, run / "config.yaml")
    if env_report is None:
        from .environment import environment_report

        env_report = environment_report(cfg.env.data_root)
    write_json(run / "environment.json", env_report)
    write_json(run / "versions.json", library_versions())
    return run


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# what a run folder written before run.json existed holds, by kind
_KIND_MARKERS = {"train": "checkpoints", "forensic": "forensic_mlp.pt", "fuse": "fuser.json",
                 "demo": "demo_report.json"}


def run_info(run: str | Path) -> dict[str, Any]:
    """A run folder's ``run.json``: kind, name, creation time (epoch seconds), processed folder.
    A folder from before run.json is recognised by its contents."""
    run = Path(run)
    path = run / "run.json"
    if path.exists():
        return read_json(path)
    for kind, marker in _KIND_MARKERS.items():
        if (run / marker).exists():
            return {"kind": kind, "name": run.name, "created": run.stat().st_mtime,
                    "processed": ""}
    raise FileNotFoundError(f"'{run}' is not a dflab run folder (no run.json)")


def list_runs(runs_root: str | Path, kind: str = "") -> list[Path]:
    """Run folders under ``runs_root`` (of one ``kind`` when given), newest first."""
    found = []
    for run in Path(runs_root).glob("*"):
        try:
            meta = run_info(run)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not kind or meta["kind"] == kind:
            found.append((meta["created"], run))
    return [p for _, p in sorted(found, key=lambda t: (t[0], t[1].name), reverse=True)]


def write_report(run: str | Path, split: str, reports: dict[str, dict]) -> Path:
    """``eval_<split>.json``: one schema for every evaluation, ``{model: report}`` (visual;
    mlp and logreg; visual, forensic and fused), each report from
    :func:`dflab.metrics.evaluate_predictions`."""
    return write_json(Path(run) / f"eval_{split}.json", reports)


def read_report(run: str | Path, split: str = "test") -> dict[str, dict]:
    path = Path(run) / f"eval_{split}.json"
    if not path.exists():
        raise FileNotFoundError(f"run '{run}' has no {split} evaluation ({path.name}); "
                                f"evaluate it first")
    return read_json(path)
