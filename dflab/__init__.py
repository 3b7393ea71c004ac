"""dflab: the deepfake detection lab (backend). Never imports ipywidgets, IPython or ``app``."""

from .config import ConfigError, LabConfig, load_config, save_config
from .events import (CancelToken, Cancelled, EpochMetrics, JobError, JobResult, Progress,
                     StepLoss)
from .registry import Registry, RegistryError

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "LabConfig", "load_config", "save_config",
    "CancelToken", "Cancelled", "EpochMetrics", "JobError", "JobResult", "Progress", "StepLoss",
    "Registry", "RegistryError", "__version__",
]
