"""A trained detector as a portable bundle, loaded once for a batch of predictions.

A bundle is what ``dflab predict`` loads: the visual model (an exported ONNX file run with
onnxruntime, or a checkpoint run with torch), the forensic model in its numpy form
(``forensic_model.npz``: the MLP and the logistic baseline), the fused stacker (``fuser.json``),
and the preprocessing that made the training crops, by value, with the face detector named by
registry name and the SHA-256 of its weights file (found by hash on any machine, see
:func:`dflab.data.faces.locate_weights`), never by an absolute path.

The ONNX and forensic paths import neither torch nor pandas, so ``dflab predict`` with an
exported model starts in about a second.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dflab.av.sync import load_sync
from dflab.core.config import PreprocessConfig
from dflab.core.environment import torch_device
from dflab.core.files import DamagedFile, read_json, reading
from dflab.core.metrics import softmax_fake
from dflab.data.faces import locate_weights, resolve_auto
from dflab.forensic.scorer import FORENSIC_FILE, ForensicScorer
from dflab.serve.fuse import Fuser, fuse_record

log = logging.getLogger(__name__)

__all__ = ["Bundle", "load_bundle", "VisualModel", "load_visual", "crops_to_batch", "DETECTOR_DIR"]

DETECTOR_DIR = "detector"  # a run's copy of a detector file that dflab does not ship


def crops_to_batch(crops_rgb: list[np.ndarray], size: int, mean: list[float],
                   std: list[float]) -> np.ndarray:
    """``uint8 (H, W, 3) RGB`` crops -> ``float32 (N, 3, size, size)``, resized with Pillow's
    antialiased bilinear filter (what torchvision's ``Resize(antialias=True)`` at evaluation
    follows: within 1-2 levels of 255, checked in tests/test_bundle.py), scaled to [0, 1],
    then ``(x - mean) / std``."""
    from PIL import Image

    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    out = np.empty((len(crops_rgb), 3, size, size), np.float32)
    for k, rgb in enumerate(crops_rgb):
        img = Image.fromarray(np.ascontiguousarray(rgb)).resize((size, size), Image.BILINEAR)
        out[k] = ((np.asarray(img, np.float32) / 255.0 - m) / s).transpose(2, 0, 1)
    return out


@dataclass
class VisualModel:
    """A visual detector ready to score crops: ``probs(batch)`` -> p(fake) per crop."""

    path: Path
    backend: str  # onnxruntime or torch
    input_size: int
    mean: list[float]
    std: list[float]
    threshold: float
    preprocess: dict[str, Any]  # the training crops' settings, as recorded
    _run: Any = field(repr=False, default=None)
    module: Any = field(repr=False, default=None)  # the torch model (torch backend only)

    def probs(self, crops_rgb: list[np.ndarray], batch: int = 64) -> np.ndarray:
        """p(fake) for ``uint8 (H, W, 3) RGB`` crops of any size."""
        if not crops_rgb:
            return np.array([])
        return np.concatenate([
            self.probs_batch(crops_to_batch(crops_rgb[i:i + batch], self.input_size, self.mean,
                                            self.std))
            for i in range(0, len(crops_rgb), batch)])

    def probs_batch(self, x: np.ndarray) -> np.ndarray:
        """p(fake) for a prepared ``float32 (N, 3, S, S)`` batch (see :func:`crops_to_batch`)."""
        return softmax_fake(self._run(x))


def parse_onnx_metadata(props: dict[str, str], path: str | Path) -> dict[str, Any]:
    """Input size, mean, std, class names, threshold and face-crop settings from an exported
    model's ``dflab_*`` metadata; anything missing or malformed is one line naming ``path``."""
    if "dflab_input_size" not in props:
        raise DamagedFile(f"'{path}' was not exported by dflab (no dflab_* metadata); export "
                          f"with `dflab export`")
    with reading(path, "ONNX model's metadata", "export it again with `dflab export --run RUN`"):
        meta = {"input_size": int(props["dflab_input_size"]),
                "mean": [float(v) for v in json.loads(props["dflab_mean"])],
                "std": [float(v) for v in json.loads(props["dflab_std"])],
                "class_names": [str(v) for v in json.loads(props["dflab_class_names"])],
                "threshold": float(props["dflab_threshold"]),
                "preprocess": json.loads(props.get("dflab_preprocess", "{}"))}
        if meta["input_size"] < 1 or len(meta["mean"]) != 3 or len(meta["std"]) != 3 or \
                not isinstance(meta["preprocess"], dict):
            raise ValueError(f"input size {meta['input_size']}, mean {meta['mean']}, std "
                             f"{meta['std']}, preprocess {meta['preprocess']!r}")
    return meta


def _load_onnx(path: Path) -> VisualModel:
    import onnxruntime as ort

    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                 if p in ort.get_available_providers()]
    try:
        sess = ort.InferenceSession(str(path), providers=providers)
        meta = parse_onnx_metadata(dict(sess.get_modelmeta().custom_metadata_map), path)
    except DamagedFile:  # a valid model that dflab did not export: its message says so
        raise
    except Exception as exc:  # onnxruntime's InvalidProtobuf, Fail, ...
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise ValueError(f"'{path}' is not a usable ONNX model ({type(exc).__name__}: {first}); "
                         f"export one with `dflab export --run RUN`") from None
    return VisualModel(path, "onnxruntime", meta["input_size"], meta["mean"], meta["std"],
                       meta["threshold"], meta["preprocess"],
                       lambda x: sess.run(None, {"input": x})[0])


def run_threshold(ckpt_path: Path, ckpt: dict) -> float:
    """The threshold tuned on val when the run was evaluated, else the checkpoint's."""
    ev = ckpt_path.parent.parent / "eval_test.json"
    redo = f"evaluate the run again (dflab evaluate --run {ckpt_path.parent.parent})"
    if ev.exists():
        with reading(ev, "evaluation report", redo):
            return float(read_json(ev, "evaluation report", redo)["visual"]["threshold"])
    with reading(ckpt_path, "checkpoint", "use a checkpoint written by `dflab train`"):
        return float((ckpt.get("metrics") or {}).get("val_threshold", 0.5))


def _load_torch(path: Path, device: str) -> VisualModel:
    import torch

    from dflab.visual.train import load_model

    device = torch_device(device)
    trained = load_model(path, device)
    model, dc, ckpt = trained.net, trained.data_config, trained.checkpoint

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x).to(device)).float().cpu().numpy()

    return VisualModel(path, "torch", dc["input_size"], dc["mean"], dc["std"],
                       run_threshold(path, ckpt), ckpt["config"]["preprocess"], run, model)


def load_visual(path: str | Path, device: str = "auto") -> VisualModel:
    """A checkpoint (``.pt``, torch) or an exported ONNX file (``.onnx``, onnxruntime)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model '{path}' does not exist; give a checkpoint "
                                f"(runs/train-*/checkpoints/best.pt) or an exported .onnx")
    return _load_onnx(path) if path.suffix == ".onnx" else _load_torch(path, device)


# the bundle ---------------------------------------------------------------------------------
@dataclass
class Bundle:
    """Everything a prediction needs, loaded once: ``visual`` and/or ``forensic`` (and
    ``fuser`` over both), the preprocessing settings to crop with (the recorded ones with the
    caller's overrides applied, listed in ``overridden``), the verdict threshold, and the
    detector file found on this machine."""

    source: Path
    preprocess: PreprocessConfig
    threshold: float
    verdict_from: str  # visual, forensic or fused
    visual: VisualModel | None = None
    forensic: ForensicScorer | None = None
    fuser: Any = None
    overridden: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    detector_weights: str = ""  # resolved on this machine ("" = packaged or none)
    sync: Any = None  # dflab.av.sync.SyncModel of a fuse run made with a sync run
    fuser_sync: Any = None  # its stacker, for clips with sync windows

    @property
    def models(self) -> list[str]:
        return [m for m, on in (("visual", self.visual), ("forensic", self.forensic),
                                ("fused", self.fuser), ("sync", self.sync)) if on is not None]

    def describe(self) -> dict[str, Any]:
        pp = self.preprocess
        return {"model": str(self.source), "models": self.models, "verdict_from": self.verdict_from,
                "backend": self.visual.backend if self.visual else "numpy",
                "threshold": round(self.threshold, 5), "detector": pp.detector,
                "detector_weights": Path(self.detector_weights).name if self.detector_weights
                else ("packaged" if pp.detector == "yunet" else ""),
                "every_nth": pp.every_nth, "num_frames": pp.num_frames,
                "overridden": {k: list(v) for k, v in self.overridden.items()}}


def _portable_preprocess(recorded: dict[str, Any], overrides: dict[str, Any],
                         search: list[Path]) -> tuple[PreprocessConfig, dict, str]:
    """(settings to crop with, {key: (recorded, override)}, detector file on this machine)."""
    known = {f.name for f in dataclasses.fields(PreprocessConfig)}
    base = PreprocessConfig(**{k: v for k, v in recorded.items() if k in known})
    changed = {k: (getattr(base, k), v) for k, v in overrides.items()
               if k in known and getattr(base, k) != v}
    pp = dataclasses.replace(base, **{k: v for k, (_, v) in changed.items()})
    if "detector" in changed and "detector_weights" not in changed:
        pp = dataclasses.replace(pp, detector_weights="", detector_sha256="")
    if "detector_weights" in changed and "detector_sha256" not in changed:
        pp = dataclasses.replace(pp, detector_sha256="")
    if pp.detector == "auto":  # given as an override (a recorded detector is resolved)
        name, weights = resolve_auto(pp.detector, pp.detector_weights)
        pp = dataclasses.replace(pp, detector=name, detector_weights=weights)
    weights = locate_weights(pp.detector, pp.detector_weights, pp.detector_sha256, search)
    return pp, changed, weights


def sibling_run(path: str, near: Path) -> Path:
    """A run folder recorded by absolute path, or the folder of that name beside ``near`` (a
    runs folder copied to another machine)."""
    p = Path(path)
    return p if p.exists() else near.parent / p.name


def load_bundle(model: str | Path, overrides: dict[str, Any] | None = None,
                device: str = "auto") -> Bundle:
    """Load ``model`` for prediction: an ONNX file, a checkpoint, a train run (its ONNX export,
    else best.pt), a forensic run, or a fuse run (its visual model, forensic model and fuser;
    files exported into the fuse folder first, else the runs it names, found by path or beside
    it). ``overrides``: preprocess settings to use instead of the recorded ones."""

    model = Path(model)
    overrides = overrides or {}
    if not model.exists():
        raise FileNotFoundError(f"model '{model}' does not exist; give a run folder, a "
                                f"checkpoint (.pt) or an exported .onnx")
    search: list[Path] = []
    visual = forensic = fuser = sync = fuser_sync = None
    if model.is_file():
        visual = load_visual(model, device)
        search = [model.parent / DETECTOR_DIR, model.parent.parent / DETECTOR_DIR]
        recorded, verdict, thr = visual.preprocess, "visual", visual.threshold
    elif (model / "fuser.json").exists():
        meta = fuse_record(model)
        fuser = Fuser.from_dict(meta["fuser"])
        vrun = sibling_run(meta["visual_run"], model)
        frun = sibling_run(meta["forensic_run"], model)
        vfile = next((p for p in (model / "model.onnx", vrun / "model.onnx",
                                  vrun / "checkpoints" / meta.get("checkpoint", "best.pt"))
                      if p.is_file()), None)
        if vfile is None:
            raise FileNotFoundError(f"fuse run '{model}': no visual model (model.onnx in it, or "
                                    f"the visual run '{vrun}'); export it with `dflab export "
                                    f"--run {model}`")
        visual = load_visual(vfile, device)
        forensic = ForensicScorer.load(model if (model / FORENSIC_FILE).is_file() else frun)
        search = [model / DETECTOR_DIR, vrun / DETECTOR_DIR]
        recorded, verdict, thr = visual.preprocess, "fused", fuser.threshold
        if meta.get("fuser_sync"):
            sync = load_sync(model if (model / "sync.pt").is_file()
                             else sibling_run(meta["sync_run"], model))
            fuser_sync = Fuser.from_dict(meta["fuser_sync"])
            thr = float(meta.get("fused_threshold", thr))
    elif (model / FORENSIC_FILE).is_file():
        forensic = ForensicScorer.load(model)
        recorded = _run_config(model, "preprocess")
        search, verdict, thr = [model / DETECTOR_DIR], "forensic", forensic.threshold
    elif (model / "checkpoints").is_dir() or (model / "model.onnx").is_file():
        vfile = model / "model.onnx"
        return load_bundle(vfile if vfile.is_file() else model / "checkpoints" / "best.pt",
                           overrides, device)
    else:
        raise FileNotFoundError(f"'{model}' is not a dflab run folder (no model.onnx, "
                                f"checkpoints/, {FORENSIC_FILE} or fuser.json)")
    pp, changed, weights = _portable_preprocess(recorded, overrides, search)
    if changed:
        log.info("predict: preprocessing differs from training: %s",
                 ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
    return Bundle(model, pp, thr, verdict, visual, forensic, fuser, changed, weights, sync,
                  fuser_sync)


def _run_config(run: Path, section: str) -> dict[str, Any]:
    """One section of a run folder's config.yaml ({} when the file or the section is absent)."""
    import yaml

    path = run / "config.yaml"
    if not path.is_file():
        return {}
    return (yaml.safe_load(path.read_text()) or {}).get(section) or {}
