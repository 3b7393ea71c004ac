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

__all__ = ["library_versions", "create_run_dir", "write_json", "read_json"]

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
                   env_report: dict | None = None) -> Path:
    """``<runs_root>/<kind>-<name or timestamp>`` with config.yaml, environment.json, versions.json.

    An existing folder of that name is reused (resume); its config is rewritten.
    """
    stamp = name or time.strftime("%Y%m%d-%H%M%S")
    run = Path(runs_root) / f"{kind}-{stamp}"
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / "config.yaml")
    if env_report is None:
        from .environment import environment_report

        env_report = environment_report(cfg.env.data_root)
    write_json(run / "environment.json", env_report)
    write_json(run / "versions.json", library_versions())
    return run
