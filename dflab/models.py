"""Detector models: any timm backbone by name with a small classification head.

``BACKBONES`` is a thin pass-through to timm's own registry: the config value is the timm name
(``efficientnet_b4`` by default, ``efficientnet_b7``, ``resnet18``, ...). Input size, mean and std
come from the backbone's timm data config, never re-typed here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ModelConfig

log = logging.getLogger(__name__)

__all__ = ["DeepfakeDetector", "create_model", "list_backbones", "data_config", "CLASS_NAMES"]

CLASS_NAMES = ["real", "fake"]


def list_backbones(pattern: str = "*") -> list[str]:
    """timm backbone names matching a wildcard (``list_backbones('efficientnet*')``)."""
    import timm

    return timm.list_models(pattern)


class DeepfakeDetector(nn.Module):
    """timm backbone (pooled features) -> Linear -> BatchNorm -> ReLU -> Dropout -> Linear(2).

    Input: float (B, 3, H, W), normalised with the backbone's mean and std. Output: logits (B, 2),
    class 1 = fake.
    """

    def __init__(self, backbone: nn.Module, hidden: int = 256, dropout: float = 0.4):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.Linear(backbone.num_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, len(CLASS_NAMES)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def _backbone(cfg: ModelConfig) -> nn.Module:
    import timm

    if not timm.is_model(cfg.backbone):
        import difflib

        close = difflib.get_close_matches(cfg.backbone, timm.list_models(), n=3)
        raise ValueError(f"model.backbone '{cfg.backbone}' is not a timm model"
                         + (f"; did you mean {', '.join(close)}?" if close else
                            "; see `timm.list_models()`"))
    kwargs: dict[str, Any] = {"num_classes": 0}
    if cfg.input_size:
        kwargs["img_size"] = cfg.input_size if "vit" in cfg.backbone else None
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if cfg.weights_path:
        path = Path(cfg.weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"model.weights_path '{path}' does not exist")
        # timm loads a local file through the pretrained config: the same code path as the hub
        return timm.create_model(cfg.backbone, pretrained=True,
                                 pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    try:
        return timm.create_model(cfg.backbone, pretrained=cfg.pretrained, **kwargs)
    except Exception as exc:  # network errors from the hub download
        if cfg.pretrained:
            raise RuntimeError(
                f"could not download ImageNet weights for '{cfg.backbone}' ({exc}); set "
                f"model.weights_path to a local file or model.pretrained=false") from exc
        raise


def create_model(cfg: ModelConfig) -> DeepfakeDetector:
    return DeepfakeDetector(_backbone(cfg), cfg.head_hidden, cfg.dropout)


def data_config(model: DeepfakeDetector, cfg: ModelConfig) -> dict[str, Any]:
    """input_size (int), mean, std and interpolation from timm, with model.input_size if set."""
    import timm

    dc = timm.data.resolve_model_data_config(model.backbone)
    size = cfg.input_size or int(dc["input_size"][-1])
    return {"input_size": size, "mean": [float(v) for v in dc["mean"]],
            "std": [float(v) for v in dc["std"]], "interpolation": dc.get("interpolation",
                                                                           "bilinear")}
