"""dflab: the deepfake detection lab (backend). Never imports ipywidgets, IPython or ``app``.

Start from :class:`dflab.Lab`; it runs the stages below, in pipeline order. Each stage is a
module you can also call directly:

====================  =========================================================================
stage                 module
====================  =========================================================================
environment           ``environment`` (GPU report, batch/AMP advice, seeds, Colab + Drive)
acquisition           ``sources`` (labelled video lists), ``acquire`` (FF++, DFDC), ``demo``
preprocessing         ``video``, ``faces``, ``audio``, ``preprocess``, ``stats``
visual model          ``models``, ``datasets``, ``train``, ``evaluate``
forensic model        ``features``, ``forensic``
audio-visual sync     ``sync`` (lip-sync windows, a SyncNet-style model, a baseline)
fused verdict         ``fuse``
export and inference  ``export``, ``bundle`` (a trained model as a portable artefact), ``predict``
====================  =========================================================================

Infrastructure, shared by every stage: ``config`` (the one lab config), ``events`` (progress,
cancel), ``registry``, ``runs`` (run folders and reports), ``metrics``, ``results`` (what each
``Lab`` stage returns). Heavy modules load on first use: ``import dflab`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import ConfigError, LabConfig, load_config, save_config
from .events import (CancelToken, Cancelled, EpochMetrics, JobError, JobResult, Progress,
                     StepLoss)
from .registry import Registry, RegistryError

__version__ = "0.1.0"

#: the stage modules in pipeline order (loaded on first attribute access: ``dflab.train``)
STAGES = ["environment", "sources", "acquire", "demo", "video", "faces", "audio", "preprocess",
          "stats", "models", "datasets", "train", "evaluate", "features", "forensic", "sync", "fuse",
          "export", "bundle", "predict"]

__all__ = [
    "Lab", "ConfigError", "LabConfig", "load_config", "save_config",
    "CancelToken", "Cancelled", "EpochMetrics", "JobError", "JobResult", "Progress", "StepLoss",
    "Registry", "RegistryError", "STAGES", "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "Lab":
        from .lab import Lab

        return Lab
    if name in STAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'dflab' has no attribute '{name}'")
