"""One lab config: a dataclass per stage, nested in :class:`LabConfig`.

Every field carries metadata (``help``, and ``min``/``max`` or ``choices`` where they apply) so the
dashboard can build its forms and the CLI its flags from the same source. ``load_config`` merges a
YAML preset and ``key=value`` overrides on top of the defaults and validates the result; an unknown
key or an out-of-range value raises :class:`ConfigError` naming the key, the value, what is allowed
and the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

__all__ = [
    "ConfigError",
    "EnvConfig",
    "DataConfig",
    "PreprocessConfig",
    "FeaturesConfig",
    "ModelConfig",
    "TrainConfig",
    "EvalConfig",
    "ExportConfig",
    "SyncConfig",
    "LabConfig",
    "load_config",
    "save_config",
    "config_to_dict",
    "config_from_dict",
    "iter_fields",
    "list_presets",
    "preset_path",
    "default_preset",
]


class ConfigError(ValueError):
    """A config key or value that is not allowed; the message says what is and how to fix it."""


def _f(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field with help text and bounds in its metadata."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class EnvConfig:
    """The machine: where data and runs live, device, threads, seeds, determinism."""

    data_root: str = _f("", "Folder for datasets, crops and runs; empty: ./data locally, Drive on Colab.")
    runs_dir: str = _f("", "Folder for run outputs; empty: <data_root>/runs.")
    seed: int = _f(42, "Seed for Python, NumPy and torch.", min=0, max=2**32 - 1)
    deterministic: bool = _f(False, "cuDNN deterministic algorithms (slower, repeatable).")
    workers: int = _f(-1, "DataLoader workers; -1 picks from the CPU cores.", min=-1, max=64)
    device: str = _f("auto", "Torch device.", choices=["auto", "cpu", "cuda"])
    mount_drive: bool = _f(True, "On Colab, mount Google Drive and keep data_root there.")
    cluster: str = _f("", "Dask scheduler for preprocessing and feature extraction: "
                      "tcp://HOST:8786, or local:N worker processes here; empty: this machine "
                      "(preprocess.workers). Needs the cluster extra and shared storage.")


@dataclass
class DataConfig:
    """Which labelled videos, and how they are split into train, val and test."""

    source: str = _f("demo", "Labelled video source (see `dflab sources`).",
                     choices=["demo", "ffpp", "dfdc", "celebdf", "folder", "photos"])
    root: str = _f("", "Folder holding the source's videos (empty: <data_root>/<source>).")
    ffpp_server: str = _f("", "FF++ server address from the access e-mail (never logged).")
    ffpp_accept_tos: bool = _f(False, "I accept the FaceForensics++ terms of use.")
    methods: list = _f(["Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"],
                       "FF++ manipulation methods to use.",
                       item_choices=["Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures",
                                     "FaceShifter", "DeepFakeDetection"])
    compressions: list = _f(["c23"], "FF++ compression levels.", item_choices=["raw", "c23", "c40"])
    videos_per_split: int = _f(0, "FF++ subset: id pairs per split (0 = all).", min=0, max=1000)
    dfdc_parts: list = _f([0], "DFDC part numbers to fetch (0..49).", item_range=(0, 49))
    max_disk_gb: float = _f(50.0, "Disk budget for raw downloads in GiB.", min=0.1, max=100000.0)
    splits_dir: str = _f("", "Folder with FF++ train/val/test.json (empty: download official).")
    val_fraction: float = _f(0.15, "Own data without a split column: share of source ids "
                             "(else videos) put in val.", min=0.0, max=0.5)
    test_fraction: float = _f(0.15, "Own data without a split column: share put in test.",
                              min=0.0, max=0.5)
    split_seed: int = _f(0, "Seed of those splits (same seed, same splits).", min=0,
                         max=2**31 - 1)
    demo_videos: int = _f(100, "Clips in the demo set (a fifth real; 100 = 20 identities).",
                          min=4, max=1000)


@dataclass
class PreprocessConfig:
    """Videos to face crops: frame sampling, face detector, landmarks, crops, audio."""

    detector: str = _f("auto", "Face detector (see `dflab detectors`).",
                       choices=["auto", "haar", "yunet", "yolo"])
    detector_weights: str = _f("", "Weights file or URL for yunet/yolo (empty: default).")
    detector_sha256: str = _f("", "SHA-256 of the detector weights (checked when given; a URL "
                              "is downloaded once into the cache and checked).")
    every_nth: int = _f(5, "Sample every Nth frame (0: use num_frames instead).", min=0, max=1000)
    num_frames: int = _f(0, "Sample N evenly spaced frames (used when every_nth is 0).",
                         min=0, max=10000)
    decode: str = _f("auto", "Video decoding: skip (PyAV; skips the non-reference frames no "
                     "sample needs: the same frames as all, fewer decoded), all (OpenCV decodes "
                     "every frame), keyframes (keyframes only, for a quick pass; each frame "
                     "index taken is recorded), nvdec (NVIDIA's decoder via torchcodec); auto: "
                     "nvdec where CUDA and torchcodec are present, else skip.",
                     choices=["auto", "skip", "all", "keyframes", "nvdec"])
    det_size: int = _f(320, "Longest side of the working resolution for detection (px); "
                       "raise it for faces under ~40 px in the frame.", min=64, max=4096)
    min_confidence: float = _f(0.6, "Drop detections scored below this.", min=0.0, max=1.0)
    landmarks: str = _f("auto", "Facial landmarks of each primary face, stored in the per-frame "
                        "JSON: dlib68 (68 points; pip install 'dflab[landmarks]'), template5 (a "
                        "mean face fitted to the detector's five points), off; auto: dlib68 when "
                        "installed, else template5.",
                        choices=["auto", "dlib68", "template5", "off"])
    align: bool = _f(False, "Rotate and scale each crop so the eyes, nose and mouth land on a "
                     "template (needs landmarks or a detector with five points).")
    padding: float = _f(0.3, "Crop padding as a fraction of the box size.", min=0.0, max=3.0)
    square: bool = _f(True, "Make crops square before clipping to the frame.")
    jpeg_quality: int = _f(95, "JPEG quality of saved crops and frames.", min=50, max=100)
    save_frames: bool = _f(True, "Save full frames as well as crops (off: crops only).")
    reuse_original_boxes: bool = _f(False, "Use the original video's boxes for its fakes.")
    audio: bool = _f(True, "Extract audio features for clips with an audio track.")
    audio_window_s: float = _f(0.5, "Audio window centred on each frame (s).", min=0.05, max=10.0)
    n_mfcc: int = _f(20, "MFCC coefficients.", min=1, max=128)
    workers: int = _f(1, "Worker processes (one video each).", min=1, max=64)
    sync_frames: int = _f(0, "Audio-visual sync windows: keep this many consecutive frames "
                          "around each sampled frame as mouth crops, with the MFCC at a 10 ms "
                          "hop (sync.npz; 0: off). Costs a second decoding pass of every clip "
                          "with audio.", min=0, max=15)
    sync_mouth_px: int = _f(48, "Width of the mouth crops of the sync windows (px; height 2/3 "
                            "of it).", min=16, max=256)


@dataclass
class FeaturesConfig:
    """The forensic features of each crop and the MLP trained on them."""

    crop_size: int = _f(0, "Centre-crop crops to this size before features (0: native).",
                        min=0, max=4096)
    hidden: list = _f([128, 64], "MLP hidden layer sizes.")
    dropout: float = _f(0.3, "MLP dropout.", min=0.0, max=0.9)
    epochs: int = _f(200, "MLP epochs (early stopping ends sooner).", min=1, max=10000)
    lr: float = _f(1e-3, "MLP learning rate.", min=1e-7, max=1.0)
    patience: int = _f(20, "MLP early-stopping patience (epochs).", min=1, max=1000)
    workers: int = _f(1, "Processes for feature extraction.", min=1, max=64)
    backend: str = _f("numpy", "Feature extraction on NumPy per crop (CPU), or on torch in "
                      "batches of equal-sized crops (on the GPU when env.device allows one; "
                      "equal to NumPy within 1e-4 relative).", choices=["numpy", "torch"])
    batch_size: int = _f(64, "Crops per batch for the torch backend.", min=1, max=4096)
    subset: str = _f("", "A feature subset saved by `dflab forensic refine` (its name under "
                     "<data_root>/feature_sets, or a .json file); empty: every feature. "
                     "Extraction then computes only the families the subset needs.")


@dataclass
class ModelConfig:
    """The visual model: a timm backbone with a classification head."""

    backbone: str = _f("efficientnet_b4", "timm model name (any of `timm.list_models()`).")
    pretrained: bool = _f(True, "Start from ImageNet weights (downloads unless weights_path).")
    weights_path: str = _f("", "Local backbone weights file instead of the hub download.")
    input_size: int = _f(0, "Input size in px (0: the backbone's own default).", min=0, max=1024)
    head_hidden: int = _f(256, "Width of the head's hidden layer.", min=8, max=8192)
    dropout: float = _f(0.4, "Head dropout.", min=0.0, max=0.9)


@dataclass
class TrainConfig:
    """Training the visual model: optimiser, schedule, batches, augmentation, selection."""

    epochs: int = _f(20, "Maximum epochs.", min=1, max=1000)
    batch_size: int = _f(0, "Batch size (0: advised from GPU memory).", min=0, max=4096)
    accumulation: int = _f(0, "Gradient accumulation steps (0: advised).", min=0, max=1024)
    target_batch: int = _f(64, "Effective batch the advice aims for.", min=1, max=8192)
    lr: float = _f(1e-4, "AdamW learning rate.", min=1e-8, max=1.0)
    weight_decay: float = _f(1e-2, "AdamW weight decay.", min=0.0, max=1.0)
    min_lr: float = _f(1e-7, "Cosine schedule floor.", min=0.0, max=1.0)
    warmup_epochs: float = _f(1.0, "Linear learning-rate warm-up before the cosine (epochs; 0: "
                              "none). Lets a model trained from scratch start at a high lr.",
                              min=0.0, max=100.0)
    loss: str = _f("ce", "Loss function.", choices=["ce", "focal"])
    label_smoothing: float = _f(0.1, "Cross-entropy label smoothing.", min=0.0, max=0.5)
    focal_gamma: float = _f(2.0, "Focal loss gamma.", min=0.0, max=10.0)
    amp: str = _f("auto", "Mixed precision.", choices=["auto", "off", "fp16", "bf16"])
    channels_last: bool = _f(True, "channels_last memory format on GPU.")
    augment: bool = _f(True, "Artefact-preserving augmentations (flip + the aug_* below).")
    aug_scale_min: float = _f(0.85, "Random resized crop: smallest area kept (1: no crop).",
                              min=0.1, max=1.0)
    aug_degrees: float = _f(10.0, "Random rotation up to this many degrees (0: none).",
                            min=0.0, max=180.0)
    aug_color: float = _f(0.2, "Colour jitter strength (brightness/contrast; 0: none).",
                          min=0.0, max=1.0)
    aug_jpeg_p: float = _f(0.5, "Probability of JPEG re-compression (0: none). Robust on real "
                           "data; slows learning from scratch.", min=0.0, max=1.0)
    aug_jpeg_min: int = _f(70, "Lowest JPEG quality of that re-compression.", min=10, max=95)
    cache_crops: bool = _f(True, "Decode and resize every crop once into a uint8 array "
                           "(memory-mapped, <processed>/crop_cache/) so epochs skip JPEG "
                           "decoding; skipped when it would not fit in a quarter of free disk.")
    balance: bool = _f(False, "Oversample the minority class.")
    select_on: str = _f("val_loss", "Validation metric that picks best.pt and drives early "
                        "stopping: val_loss (cross-entropy), or val_auc (ranking only: steadier "
                        "when the logits' scale and bias swing, as in short runs from scratch).",
                        choices=["val_loss", "val_auc"])
    patience: int = _f(5, "Early stopping: epochs without a better select_on value.",
                       min=1, max=1000)
    save_every: int = _f(1, "Checkpoint every K epochs.", min=1, max=1000)
    max_frames_per_video: int = _f(0, "Cap frames per video per epoch (0: all).",
                                   min=0, max=100000)
    pseudo_fakes: str = _f("off", "Train on real faces only: each real crop and a self-blended "
                           "pseudo-fake of it (sbi: Shiohara & Yamasaki 2022), made anew every "
                           "epoch, in balanced batches; the folder's own fakes are left out of "
                           "training and validation (validation uses fixed pseudo-fakes of the "
                           "val reals). Needs landmarks (preprocess.landmarks).",
                           choices=["off", "sbi"])
    extra_reals: list = _f([], "Other processed folders whose real crops join training (their "
                           "train split) and validation (their val split), e.g. face photos "
                           "(`dflab preprocess --source photos`); only with pseudo_fakes, so "
                           "that no real/fake contrast can come from where the images came "
                           "from.")
    methods: list = _f([], "Manipulation methods whose fakes are trained and validated on "
                       "(empty: all); real videos are always used and the test split is never "
                       "filtered. The generalisation protocols (`dflab protocol`) set it.")


@dataclass
class EvalConfig:
    """Evaluation: threshold, frame-to-video aggregation, the field's protocols, intervals."""

    aggregate: str = _f("mean", "Frame-to-video aggregation.",
                        choices=["mean", "median", "confident"])
    confident_margin: float = _f(0.3, "'confident' rule: frames with |p-0.5| above this.",
                                 min=0.0, max=0.5)
    threshold: float = _f(-1.0, "Decision threshold (-1: tuned on validation).",
                          min=-1.0, max=1.0)
    ece_bins: int = _f(15, "Bins for expected calibration error.", min=2, max=100)
    protocol: str = _f("lab", "Evaluation protocol, named in every report: lab (the frames "
                       "with a face, video score by eval.aggregate), deepfakebench (video AUC "
                       "of the mean frame probability), sbi (per frame the maximum over faces, "
                       "video = mean over frames, a frame without a face counts 0.5).",
                       choices=["lab", "deepfakebench", "sbi"])
    frames_per_video: int = _f(0, "Frames per video at evaluation: this many evenly spaced "
                               "sampled frames (0: every sampled frame); DeepfakeBench and SBI "
                               "report 32.", min=0, max=10000)
    bootstrap: int = _f(1000, "Resamples of whole videos for each AUC's 95% interval (0: none).",
                        min=0, max=100000)


@dataclass
class ExportConfig:
    """ONNX export and its check against torch."""

    opset: int = _f(18, "ONNX opset (the torch.export-based exporter needs 18 or later).", min=18,
                    max=23)
    dynamic_batch: bool = _f(True, "Dynamic batch axis in the ONNX graph.")
    parity_tol: float = _f(1e-4, "Max abs difference allowed between torch and onnxruntime.",
                           min=0.0, max=1.0)


@dataclass
class SyncConfig:
    """The lip-sync model: offsets, windows, training."""

    max_offset: int = _f(30, "Offsets searched and trained against, +- this many frames (30: "
                         "+-1.2 s at 25 fps).", min=2, max=100)
    epochs: int = _f(40, "Sync model epochs (early stopping ends sooner).", min=1, max=1000)
    batch_size: int = _f(32, "Windows per batch.", min=2, max=1024)
    lr: float = _f(2e-3, "AdamW learning rate of the sync model.", min=1e-6, max=1.0)
    temperature: float = _f(0.1, "Softmax temperature of the matching loss.", min=0.01,
                            max=1.0)
    embed_dim: int = _f(64, "Size of the shared audio-visual embedding.", min=8, max=1024)
    patience: int = _f(8, "Early stopping: epochs without a lower val loss.", min=1, max=1000)
    visual: str = _f("auto", "What the sync model sees of the mouth: pixels (the mouth crops), "
                     "lips (the lip contours and openings of dlib's 68 points); auto: lips when "
                     "the windows have lip landmarks.", choices=["auto", "pixels", "lips"])


@dataclass
class LabConfig:
    """The whole lab: one section per stage."""

    env: EnvConfig = field(default_factory=EnvConfig)
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)


STAGES = [f.name for f in dataclasses.fields(LabConfig)]


def iter_fields(cfg: Any) -> typing.Iterator[tuple[str, dataclasses.Field, Any]]:
    """Yield ``(dotted_key, field, value)`` for every leaf of a (nested) config dataclass."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            for key, sub, v in iter_fields(value):
                yield f"{f.name}.{key}", sub, v
        else:
            yield f.name, f, value


#: where a bare key ("lr", "epochs") that several stages have most likely belongs
_PRIMARY_STAGE = "train"


def _closest(key: str, options: list[str]) -> str:
    if "." not in key:  # a bare leaf: the stage that has it, the training stage first
        same = [o for o in options if o.split(".")[-1] == key]
        if same:
            return next((o for o in same if o.startswith(_PRIMARY_STAGE + ".")), same[0])
    match = difflib.get_close_matches(key, options, n=1, cutoff=0.4)
    if not match:  # try the leaf name alone: "lr" -> "train.lr"
        leaf = key.split(".")[-1]
        match = [o for o in options if o.split(".")[-1] == leaf][:1] or difflib.get_close_matches(
            leaf, options, n=1, cutoff=0.0)
    return match[0] if match else ""


def field_type(f: dataclasses.Field) -> type:
    """The Python type of a config field (bool, int, float, str or list)."""
    if f.default is not dataclasses.MISSING:
        return type(f.default)
    return list


def _convert(kind: type, value: Any) -> Any:
    """``value`` as a ``kind`` (bool, int, float, str or list); ValueError when it is not one.
    Text is read as a user types it: "on"/"off" for a bool, "1,2" for a list."""
    if kind is bool:
        if isinstance(value, str):
            low = value.strip().lower()
            if low not in {"true", "false", "1", "0", "yes", "no", "on", "off"}:
                raise ValueError
            return low in {"true", "1", "yes", "on"}
        if not isinstance(value, (bool, int)) or value not in (0, 1):
            raise ValueError
        return bool(value)
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    if kind is float:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    if kind is str:
        return "" if value is None else str(value)
    if isinstance(value, str):  # a list
        items = [v.strip() for v in value.split(",") if v.strip()] if value else []
        return [int(v) if v.lstrip("-").isdigit() else v for v in items]
    if not isinstance(value, (list, tuple)):
        raise ValueError
    return list(value)


def _check(key: str, meta: Any, value: Any) -> None:
    """Raise a :class:`ConfigError` naming the key, the value and what is allowed when
    ``value`` breaks the field's choices, item rules or bounds."""
    if "choices" in meta and value not in meta["choices"]:
        close = difflib.get_close_matches(str(value), [str(c) for c in meta["choices"]], n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"config key '{key}': value {value!r} is not allowed; choose one of "
            f"{meta['choices']}{hint}")
    if "item_range" in meta:
        lo_i, hi_i = meta["item_range"]
        bad = [v for v in value if isinstance(v, bool) or not isinstance(v, int)
               or not lo_i <= v <= hi_i]
        if bad:
            raise ConfigError(f"config key '{key}': {bad} not allowed; items must be whole "
                              f"numbers from {lo_i} to {hi_i}")
    if "item_choices" in meta:
        bad = [v for v in value if v not in meta["item_choices"]]
        if bad:
            raise ConfigError(f"config key '{key}': {bad} not allowed; items must be from "
                              f"{meta['item_choices']}")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise ConfigError(
            f"config key '{key}': value {value!r} is out of range; allowed {lo} to {hi} "
            f"({meta.get('help', '')})")


def _coerce(key: str, f: dataclasses.Field, value: Any) -> Any:
    """Convert ``value`` to the field's type and check it against the field's metadata."""
    kind = field_type(f)
    try:
        value = _convert(kind, value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"config key '{key}': value {value!r} is not a {kind.__name__}; "
            f"give a {kind.__name__} ({f.metadata.get('help', '')})") from None
    _check(key, f.metadata, value)
    return value


def _apply(cfg: LabConfig, key: str, value: Any) -> None:
    fields = {k: (f, v) for k, f, v in iter_fields(cfg)}
    if key not in fields:
        # a stage name given a dict: {"train": {...}}
        raise ConfigError(
            f"unknown config key '{key}'; did you mean '{_closest(key, list(fields))}'? "
            f"(`dflab config --list` shows every key)")
    f, _ = fields[key]
    stage, _, leaf = key.partition(".")
    setattr(getattr(cfg, stage), leaf, _coerce(key, f, value))


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key in STAGES:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_from_dict(d: dict | None) -> LabConfig:
    """Build a validated :class:`LabConfig` from a nested (or dotted) dict."""
    cfg = LabConfig()
    for key, value in _flatten(d or {}).items():
        _apply(cfg, key, value)
    return cfg


def config_to_dict(cfg: LabConfig) -> dict[str, dict[str, Any]]:
    return dataclasses.asdict(cfg)


def load_config(path: str | Path | None = None,
                overrides: dict[str, Any] | list[str] | None = None) -> LabConfig:
    """Defaults, then the YAML file at ``path``, then ``overrides``.

    ``overrides`` is a dict of dotted keys (``{"train.lr": 3e-4}``) or a list of ``key=value``
    strings as the CLI passes them.
    """
    raw: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file() and p.suffix == "" and len(p.parts) == 1 and p.name in list_presets():
            p = preset_path(p.name)  # `--config cpu`: a preset by name
        if not p.is_file():
            raise ConfigError(f"config file '{p}' does not exist; give the path of a YAML file "
                              f"or a preset name ({', '.join(list_presets())})")
        try:
            raw = yaml.safe_load(p.read_bytes().decode("utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file '{p}' is not UTF-8 text ({exc.reason} at byte "
                              f"{exc.start}); save it as UTF-8 YAML") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"config file '{p}' is not valid YAML: {what}{where}; fix that "
                              f"line (YAML: stage: {{key: value}})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file '{p}' must hold a mapping of stage: {{key: value}}")
        try:
            cfg = config_from_dict(raw)
        except ConfigError as exc:  # the file's value: say which file
            raise ConfigError(f"config file '{p}': {exc}") from None
        return apply_overrides(cfg, overrides)
    return apply_overrides(config_from_dict(raw), overrides)


def apply_overrides(cfg: LabConfig, overrides: dict[str, Any] | list[str] | tuple | None
                    ) -> LabConfig:
    """Set dotted keys on ``cfg``: a dict (``{"train.lr": 3e-4}``) or ``key=value`` strings (a
    text field keeps the text as typed; other values are read as YAML). Returns ``cfg``."""
    if isinstance(overrides, (list, tuple)):
        kinds = {k: field_type(f) for k, f, _ in iter_fields(cfg)}
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override '{item}' must look like key=value, e.g. train.lr=3e-4")
            k, v = (s.strip() for s in item.split("=", 1))
            # a text field keeps the text as typed: YAML would read `amp=off` as False
            pairs[k] = v if kinds.get(k) is str or not v else yaml.safe_load(v)
        overrides = pairs
    for key, value in (overrides or {}).items():
        _apply(cfg, key, value)
    return cfg


# presets: configs/ beside the package in a checkout, dflab/presets/ in an installed wheel
PRESET_DIRS = [Path(__file__).resolve().parents[2] / "configs", Path(__file__).parents[1] / "presets"]


def list_presets() -> list[str]:
    """Names of the YAML presets (``default``, ``cpu``, ``colab_t4``, ...)."""
    return sorted({p.stem for d in PRESET_DIRS if d.is_dir() for p in d.glob("*.yaml")})


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name`` (raises :class:`ConfigError` naming the presets)."""
    for d in PRESET_DIRS:
        if (d / f"{name}.yaml").is_file():
            return d / f"{name}.yaml"
    close = difflib.get_close_matches(name, list_presets(), n=1)
    raise ConfigError(f"no preset '{name}'; presets: {list_presets()}"
                      + (f"; did you mean '{close[0]}'?" if close else ""))


def default_preset(gpu: bool) -> str:
    """The preset a new user starts from: ``default`` (EfficientNet-B4, ImageNet weights) on a
    GPU, ``cpu`` (a small backbone from scratch that learns the demo set in minutes) without."""
    return "default" if gpu else "cpu"


def save_config(cfg: LabConfig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path


def set_value(cfg: LabConfig, key: str, value: Any) -> None:
    """Validate ``value`` and set the dotted ``key`` of ``cfg`` (raises :class:`ConfigError`)."""
    _apply(cfg, key, value)
