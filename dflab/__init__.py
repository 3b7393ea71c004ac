"""dflab: the deepfake detection lab (backend). Never imports ipywidgets, IPython or ``app``.

Start from :class:`dflab.Lab` (``dflab/lab.py``); it runs every stage, and the CLI
(``dflab/cli.py``) is a thin parser over it. The stages live in wings, in the order data flows
through them; each wing imports only the wings above it in this list:

==========  ===================================================================================
wing        what it holds
==========  ===================================================================================
core        config, events, registry, files, locks, environment, metrics, results, jobs, runs
data        sources, acquire (FF++, DFDC), synthetic (the demo set), video, audio, faces,
            landmarks, preprocess, sync_windows, stats, datasets, cluster
visual      models, pseudo_fakes (SBI), train, evaluate, clip_cues
forensic    features, features_torch, extract, scorer, model (the MLP), refine
av          sync (the lip-sync detectors)
serve       fuse, bundle, export (ONNX), predict
analysis    explain (Grad-CAM), robustness, protocol
workflows   demo (``dflab demo``), real (``dflab demo --real``)
==========  ===================================================================================

``docs/architecture.md`` draws it. Imports sit at the top of a module; one is deferred into
the function that needs it only when what it loads is heavy (torch, timm, ultralytics,
onnxruntime, shap, pandas, scikit-learn, OpenCV, librosa, plotly, or a dflab module that imports
one of them at its top), so ``import dflab``, ``dflab --help`` and an ONNX prediction stay
quick. ``tests/test_layout.py`` holds every import, deferred ones included, to the wings' order.
"""

from __future__ import annotations

import importlib
from typing import Any

from dflab.core.config import ConfigError, LabConfig, load_config, save_config
from dflab.core.events import (CancelToken, Cancelled, EpochMetrics, JobError, JobResult, Progress,
                               StepLoss)
from dflab.core.registry import Registry, RegistryError

__version__ = "0.1.0"

#: the wings in the order data flows through them (loaded on first attribute access)
WINGS = ["core", "data", "visual", "forensic", "av", "serve", "analysis", "workflows"]

__all__ = [
    "Lab", "ConfigError", "LabConfig", "load_config", "save_config",
    "CancelToken", "Cancelled", "EpochMetrics", "JobError", "JobResult", "Progress", "StepLoss",
    "Registry", "RegistryError", "WINGS", "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "Lab":
        from dflab.lab import Lab

        return Lab
    if name in WINGS:
        return importlib.import_module(f"dflab.{name}")
    raise AttributeError(f"module 'dflab' has no attribute '{name}'")
