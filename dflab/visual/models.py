"""Detector models: any timm backbone by name with a small classification head.

The backbone is a thin pass-through to timm's own registry: the config value is the timm name
(``efficientnet_b4`` by default, ``efficientnet_b7``, ``resnet18``, ...). Input size, mean and std
come from the backbone's timm data config, never re-typed here.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dflab.core.config import ModelConfig

log = logging.getLogger(__name__)

__all__ = ["DeepfakeDetector", "create_model", "data_config", "default_input_size", "CLASS_NAMES",
           "resolve_weights", "fetch_weights", "hub_id"]

CLASS_NAMES = ["real", "fake"]


def default_input_size(backbone: str) -> int:
    """The input size (px) of ``backbone``'s default pretrained config in timm, without building
    the model (224 when timm has none)."""
    import timm

    if not timm.is_model(backbone):
        raise ValueError(f"unknown backbone '{backbone}'; timm names, e.g. "
                         f"{timm.list_models('efficientnet_b*')[:4]}")
    pc = timm.models.get_pretrained_cfg(backbone)
    return int(pc.input_size[-1]) if pc is not None else 224


class DeepfakeDetector(nn.Module):
    """timm backbone (pooled features) -> Linear -> BatchNorm -> ReLU -> Dropout -> Linear(2).

    Input: float (B, 3, H, W), normalised with the backbone's mean and std. Output: logits (B, 2),
    class 1 = fake.
    """

    def __init__(self, backbone: nn.Module, hidden: int = 256, dropout: float = 0.4):
        super().__init__()
        self.backbone = backbone
        # what a num_classes=0 backbone returns: the pre-logits width where the model has a
        # head of its own before the classifier (MobileNetV3's 1x1 conv: 1024, not 576)
        width = getattr(backbone, "head_hidden_size", None) or backbone.num_features
        self.head = nn.Sequential(
            nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, len(CLASS_NAMES)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def _backbone(cfg: ModelConfig) -> nn.Module:
    import timm

    if not timm.is_model(cfg.backbone):
        close = difflib.get_close_matches(cfg.backbone, timm.list_models(), n=3)
        raise ValueError(f"model.backbone '{cfg.backbone}' is not a timm model"
                         + (f"; did you mean {', '.join(close)}?" if close else
                            "; see `timm.list_models()`"))
    kwargs: dict[str, Any] = {"num_classes": 0}
    if cfg.input_size:
        kwargs["img_size"] = cfg.input_size if "vit" in cfg.backbone else None
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if cfg.weights_path:
        # timm loads a local file through the pretrained config: the same code path as the hub
        path = resolve_weights(cfg.backbone, cfg.weights_path)
        return timm.create_model(cfg.backbone, pretrained=True,
                                 pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    try:
        return timm.create_model(cfg.backbone, pretrained=cfg.pretrained, **kwargs)
    except Exception as exc:  # network errors from the hub download
        if cfg.pretrained:
            raise RuntimeError(
                f"could not download ImageNet weights for '{cfg.backbone}' ({exc}); with no "
                f"internet, fetch them elsewhere (`dflab weights fetch {cfg.backbone} --to DIR`) "
                f"and set model.weights_path=DIR (a file works too), use a filled Hugging Face "
                f"cache with HF_HUB_OFFLINE=1, or set model.pretrained=false") from exc
        raise


WEIGHT_SUFFIXES = {".safetensors", ".pth", ".pt", ".bin"}
HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")


def hub_id(backbone: str) -> str:
    """The Hugging Face repo that holds a timm backbone's default weights
    (``resnet18`` -> ``timm/resnet18.a1_in1k``), or '' when timm knows none."""
    import timm

    cfg = timm.models.get_pretrained_cfg(backbone)
    return (cfg.hf_hub_id or "") if cfg is not None else ""


def resolve_weights(backbone: str, weights_path: str | Path) -> Path:
    """The weights file for ``model.weights_path``: a timm checkpoint file (.safetensors, .pth,
    .pt, .bin), or a folder that is a Hugging Face cache (as ``dflab weights fetch`` or
    ``HF_HUB_CACHE`` fill it; read without any network) or holds ``model.safetensors``,
    ``pytorch_model.bin`` or ``<backbone>.safetensors``."""
    path = Path(weights_path).expanduser()
    fix = (f"fill a folder with `dflab weights fetch {backbone} --to DIR` on a machine with "
           f"internet and set model.weights_path=DIR, or give a .safetensors/.pth/.bin file")
    if path.is_file():
        if path.suffix.lower() not in WEIGHT_SUFFIXES:
            raise ValueError(f"model.weights_path '{path}' is not a weights file (expected "
                             f"{sorted(WEIGHT_SUFFIXES)}); {fix}")
        return path
    if path.is_dir():
        repo = hub_id(backbone)
        if repo:
            from huggingface_hub import try_to_load_from_cache

            for name in HUB_FILENAMES:
                hit = try_to_load_from_cache(repo, name, cache_dir=path)
                if isinstance(hit, str):
                    return Path(hit)
        for name in (*HUB_FILENAMES, f"{backbone}.safetensors", f"{backbone}.pth"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(
            f"model.weights_path '{path}' holds no weights for '{backbone}'"
            + (f" (looked for the cached Hugging Face repo '{repo}' and" if repo else " (looked")
            + f" for {', '.join(HUB_FILENAMES)}, {backbone}.safetensors); {fix}")
    raise FileNotFoundError(f"model.weights_path '{path}' does not exist; {fix}")


def fetch_weights(backbone: str, to: str | Path) -> Path:
    """Download a backbone's pretrained weights into the folder ``to`` (a Hugging Face cache
    layout, or timm's file for weights outside the hub) on a machine with internet, and return
    the path to give as ``model.weights_path`` (the folder works too). A folder on Google Drive
    keeps them across Colab sessions."""
    import timm

    to = Path(to).expanduser()
    to.mkdir(parents=True, exist_ok=True)
    try:
        model = timm.create_model(backbone, pretrained=True, cache_dir=to)
    except Exception as exc:
        raise RuntimeError(f"could not download the weights of '{backbone}' ({exc}); this needs "
                           f"internet access to the Hugging Face hub") from exc
    try:
        return resolve_weights(backbone, to)
    except FileNotFoundError:  # weights outside the hub (a release URL): keep one plain file
        from safetensors.torch import save_file

        out = to / f"{backbone}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
        return out


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
