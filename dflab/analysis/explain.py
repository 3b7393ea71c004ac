"""What the visual model looks at: Grad-CAM and Grad-CAM++ heatmaps through the ``grad-cam``
package (pytorch-grad-cam), for any timm backbone of a run.

The target layer is the backbone's last feature stage as timm records it
(``backbone.feature_info[-1]["module"]``: ``layer4`` of a ResNet, ``blocks.6`` of an
EfficientNet); a transformer's tokens are reshaped back to their grid. The heatmap explains the
*fake* logit (class 1), so warm regions are the ones that pushed the model towards "fake".
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dflab.core.events import Callback, CancelToken, Emitter
from dflab.data.faces import create_detector
from dflab.serve.bundle import crops_to_batch, load_bundle
from dflab.serve.predict import expand_inputs, face_crops, read_crop

log = logging.getLogger(__name__)

__all__ = ["METHODS", "target_layer", "explain_crops", "overlay", "explain_files",
           "crop_overlay"]

METHODS = ("gradcam", "gradcam++")


def target_layer(model) -> Any:
    """The module Grad-CAM reads: the last feature stage timm lists for the backbone."""
    backbone = model.backbone
    info = getattr(backbone, "feature_info", None)
    name = info[-1]["module"] if info else ""
    if not name:
        raise ValueError(f"backbone {type(backbone).__name__} lists no feature stages "
                         f"(timm feature_info); Grad-CAM needs a convolutional or ViT backbone")
    return backbone.get_submodule(name)


def _reshape_tokens(backbone):
    """(B, tokens, C) -> (B, C, h, w) for transformer backbones; None for CNNs."""
    prefix = int(getattr(backbone, "num_prefix_tokens", 0))

    def reshape(t):
        if t.ndim != 3:
            return t
        t = t[:, prefix:]
        side = int(round(t.shape[1] ** 0.5))
        return t.reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)

    return reshape


def explain_crops(model, data_config: dict[str, Any], crops_rgb: Sequence[np.ndarray],
                  method: str = "gradcam", batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(p(fake) per crop, heatmaps ``float32 (N, S, S)`` in [0, 1]) for ``uint8 (H, W, 3) RGB``
    crops, resized to the model's input size S as evaluation does (:func:`dflab.serve.bundle.
    crops_to_batch`). ``model``: a :class:`dflab.visual.models.DeepfakeDetector` (eval mode)."""
    import torch
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if method not in METHODS:
        raise ValueError(f"explanation method '{method}' is not one of {', '.join(METHODS)}")
    cls = GradCAM if method == "gradcam" else GradCAMPlusPlus
    size = int(data_config["input_size"])
    device = next(model.parameters()).device
    probs, maps = [], []
    with cls(model=model, target_layers=[target_layer(model)],
             reshape_transform=_reshape_tokens(model.backbone)) as cam:
        for i in range(0, len(crops_rgb), batch):
            x = torch.from_numpy(crops_to_batch(list(crops_rgb[i:i + batch]), size,
                                                data_config["mean"], data_config["std"]))
            x = x.to(device)
            m = cam(input_tensor=x, targets=[ClassifierOutputTarget(1)] * len(x))
            maps.append(np.asarray(m, np.float32))
            logits = cam.outputs.detach().float()
            probs.append(torch.softmax(logits, 1)[:, 1].cpu().numpy())
    if not maps:
        return np.array([]), np.zeros((0, size, size), np.float32)
    return np.concatenate(probs), np.concatenate(maps)


def overlay(crop_rgb: np.ndarray, heatmap: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """``uint8 (S, S, 3) RGB``: the crop resized to the heatmap's size with the jet-coloured
    heatmap blended over it (pytorch-grad-cam's ``show_cam_on_image``)."""
    import cv2
    from pytorch_grad_cam.utils.image import show_cam_on_image

    s = heatmap.shape[0]
    img = cv2.resize(crop_rgb, (s, s), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return show_cam_on_image(img, heatmap, use_rgb=True, image_weight=weight)


def explain_files(inputs: Sequence[str | Path], checkpoint: str | Path, out: str | Path,
                  method: str = "gradcam", faces: bool = False, max_frames: int = 8,
                  overrides: dict[str, Any] | None = None,
                  callbacks: list[Callback] | None = None,
                  cancel: CancelToken | None = None) -> list[dict[str, Any]]:
    """Grad-CAM overlays for images, videos (the first ``max_frames`` sampled frames with a
    face) or face crops (``faces``), cropped with the run's recorded preprocessing as prediction
    does. Writes ``<out>/<stem>_f<frame>.jpg`` (crop | overlay side by side) and returns one row
    per overlay: file, frame_index, prob (p(fake)), overlay path."""
    import cv2
    import torch

    from dflab.visual.train import load_model

    files = expand_inputs(inputs, faces)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    detector, pp = None, None
    if faces:
        trained = load_model(checkpoint, device)
        model, dc = trained.net, trained.data_config
    else:  # the checkpoint loaded once: its model, and the settings to crop with

        bundle = load_bundle(checkpoint, overrides, device=device)
        v, pp = bundle.visual, bundle.preprocess
        model, dc = v.module, {"input_size": v.input_size, "mean": v.mean, "std": v.std}
        detector = create_detector(pp.detector, bundle.detector_weights, pp.det_size,
                                   pp.min_confidence)
    em = Emitter("explain", callbacks, cancel)
    rows: list[dict[str, Any]] = []
    em.progress(0, len(files), "file")
    for k, path in enumerate(files):
        em.check()
        if faces:
            crops, idx = [read_crop(path)], [0]
        else:
            frames, crops, _, _, _ = face_crops(path, pp, detector)
            crops, idx = crops[:max_frames], [r["frame_index"] for r in frames[:max_frames]]
            if not crops:
                log.warning("explain %s: no face found in any sampled frame", path)
        rgb = [cv2.cvtColor(c, cv2.COLOR_BGR2RGB) for c in crops]
        probs, maps = explain_crops(model, dc, rgb, method)
        for i, crop, p, m in zip(idx, rgb, probs, maps):
            ov = overlay(crop, m)
            side = cv2.resize(crop, ov.shape[1::-1], interpolation=cv2.INTER_AREA)
            target = out / f"{path.stem}_f{i:05d}.jpg"
            cv2.imwrite(str(target), cv2.cvtColor(np.hstack([side, ov]), cv2.COLOR_RGB2BGR))
            rows.append({"file": str(path), "frame_index": int(i), "prob": round(float(p), 5),
                         "overlay": str(target), "method": method})
        em.progress(k + 1, len(files), "file", path.name)
    return rows


@lru_cache(maxsize=2)
def _model(checkpoint: str, mtime_ns: int):
    import torch

    from dflab.visual.train import load_model

    trained = load_model(checkpoint, "cuda" if torch.cuda.is_available() else "cpu")

    model, dc = trained.net, trained.data_config
    return model, dc


def crop_overlay(checkpoint: str | Path, crop_path: str | Path, method: str = "gradcam"
                 ) -> tuple[float, bytes]:
    """(p(fake), JPEG bytes of the heatmap overlay) for one saved face crop; the model is loaded
    once per checkpoint file (the dashboard calls this per clicked frame)."""
    import cv2

    img = cv2.imread(str(crop_path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"'{crop_path}' is not a readable image")
    model, dc = _model(str(checkpoint), Path(checkpoint).stat().st_mtime_ns)
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    probs, maps = explain_crops(model, dc, [rgb], method)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(overlay(rgb, maps[0]), cv2.COLOR_RGB2BGR))
    return float(probs[0]), buf.tobytes()
