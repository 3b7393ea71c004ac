"""Visual detector training: timm backbone, AdamW + cosine, AMP, accumulation, early stopping,
atomic checkpoints and full-state resume, optional DDP under ``torchrun``.

A run folder holds ``config.yaml``, ``environment.json``, ``versions.json``, ``history.jsonl`` (one
line per epoch), ``val_roc.json`` (the newest epoch's validation ROC),
``checkpoints/{last,best,epoch_K}.pt`` and ``train_summary.json``. Model selection
uses the validation split only; the test split is never read here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dflab.core.config import LabConfig, config_from_dict, config_to_dict
from dflab.core.environment import advise, environment_report, setup_runtime
from dflab.core.events import (Callback, CancelToken, Emitter, EpochMetrics, StepLoss,
                               TensorBoardCallback)
from dflab.core.files import disk_full, free_mib, load_torch_file, reading, write_json
from dflab.core.metrics import binary_metrics, roc_points, tune_threshold
from dflab.core.runs import create_run_dir
from dflab.data.preprocess import adopt_preprocess_settings
from dflab.visual.pseudo_fakes import SelfBlendedPairs, crop_landmarks

log = logging.getLogger(__name__)

__all__ = ["train", "FocalLoss", "load_checkpoint", "save_checkpoint", "load_model", "ddp_info"]


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017) on two logits, with optional label smoothing."""

    def __init__(self, gamma: float = 2.0, label_smoothing: float = 0.0):
        super().__init__()
        self.gamma, self.smoothing = gamma, label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, target, reduction="none", label_smoothing=self.smoothing)
        pt = torch.softmax(logits, 1).gather(1, target[:, None]).squeeze(1)
        return ((1 - pt) ** self.gamma * ce).mean()


def save_checkpoint(state: dict, path: Path) -> None:
    """torch.save through a temporary file and a rename: never a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        torch.save(state, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write (a full disk) leaves nothing behind
        raise
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A dflab checkpoint, loaded with ``weights_only=True``: a file whose unpickling would run
    code is refused, never run. Every failure is a ValueError that says which file and why."""
    ckpt = load_torch_file(path, "checkpoint", "dflab loads only plain tensors and settings: use "
                           "a checkpoint written by `dflab train` (copy it again, or take "
                           "another of that run: runs/train-*/checkpoints/best.pt, last.pt, "
                           "epoch_*.pt) or an exported .onnx", map_location)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"'{path}' is a torch file but not a dflab checkpoint (no model and "
                         f"config); give one written by `dflab train`")
    return ckpt


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": np_state[2],
                      "has_gauss": np_state[3], "cached": np_state[4]},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    n = s["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def warmup_cosine(total_steps: int, warmup_steps: int, floor: float):
    """LR multiplier per optimiser step: linear from 1/warmup to 1 over ``warmup_steps``, then a
    cosine from 1 down to ``floor`` (min_lr / lr) at ``total_steps``. A plain function of the step,
    so a resumed run rebuilds the same schedule from its config."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def ddp_info() -> dict:
    """World size, rank and local rank when launched by torchrun, else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return {"world": world, "rank": int(os.environ.get("RANK", "0")),
            "local_rank": int(os.environ.get("LOCAL_RANK", "0")), "ddp": world > 1}


@dataclass
class TrainedModel:
    """A visual model read from a checkpoint by :func:`load_model`: the network in eval mode on
    its device, its input (``data_config``: input_size, mean, std, as timm resolved them for
    training) and the checkpoint's records (``checkpoint``: config, epoch, select_on, ...)."""

    net: nn.Module
    data_config: dict[str, Any]
    checkpoint: dict[str, Any]

    @property
    def config(self) -> LabConfig:
        """The lab config the model was trained with."""
        return config_from_dict(self.checkpoint["config"])

    def predict(self, x: torch.Tensor) -> np.ndarray:
        """p(fake) of each image of ``x``: float (N, 3, H, W), normalised as ``data_config``."""
        device = next(self.net.parameters()).device
        with torch.no_grad():
            return torch.softmax(self.net(x.to(device)).float(), 1)[:, 1].cpu().numpy()


def load_model(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """The :class:`TrainedModel` in a checkpoint file."""
    from dflab.visual.models import create_model

    ckpt = load_checkpoint(path, device)
    with reading(path, "checkpoint", "use a checkpoint written by `dflab train` (another of that "
                 "run: last.pt, best.pt, epoch_*.pt)", also=(RuntimeError,)):
        cfg = config_from_dict(ckpt["config"])
        cfg.model.pretrained = False  # the weights come from the checkpoint
        cfg.model.weights_path = ""
        model = create_model(cfg.model)
        model.load_state_dict(ckpt["model"])
        dc = ckpt["data_config"]
        size, mean, std = int(dc["input_size"]), [float(v) for v in dc["mean"]], \
            [float(v) for v in dc["std"]]
        if len(mean) != 3 or len(std) != 3 or size < 1:
            raise ValueError(f"data_config {dc!r} is not an input size and 3 means and stds")
        ckpt["config"]["preprocess"] = dict(ckpt["config"].get("preprocess") or {})
    return TrainedModel(model.to(device).eval(), dc, ckpt)


def _items_per_batch(ds, batch: int) -> int:
    """Dataset items per batch of ``batch`` images: a pseudo-fake dataset's item is a pair."""
    return max(1, batch // getattr(ds, "images_per_item", 1))


def _loaders(cfg: LabConfig, train_ds, val_ds, batch: int, workers: int, pin: bool, ddp: dict,
             epoch: int):
    from torch.utils.data import DataLoader, DistributedSampler, WeightedRandomSampler

    if hasattr(train_ds, "set_epoch"):  # new pseudo-fakes every epoch, the same after a resume
        train_ds.set_epoch(epoch)
    gen = torch.Generator().manual_seed(cfg.env.seed * 1000 + epoch)  # same order after resume
    if ddp["ddp"]:
        sampler = DistributedSampler(train_ds, ddp["world"], ddp["rank"], shuffle=True,
                                     seed=cfg.env.seed, drop_last=True)
        sampler.set_epoch(epoch)
        shuffle = None
    elif cfg.train.balance and hasattr(train_ds, "class_weights"):  # pairs are balanced
        sampler = WeightedRandomSampler(train_ds.class_weights(), len(train_ds), True, gen)
        shuffle = None
    else:
        sampler, shuffle = None, True
    per_rank = len(train_ds) // ddp["world"]
    items = _items_per_batch(train_ds, batch)
    # drop a ragged last batch (BatchNorm needs 2+ samples) unless it is the only one
    train_dl = DataLoader(train_ds, batch_size=items, shuffle=shuffle, sampler=sampler,
                          num_workers=workers, pin_memory=pin, drop_last=per_rank > items,
                          generator=gen, persistent_workers=False,
                          collate_fn=getattr(train_ds, "collate", None))
    val_dl = DataLoader(val_ds, batch_size=_items_per_batch(val_ds, batch), shuffle=False,
                        num_workers=workers, pin_memory=pin,
                        collate_fn=getattr(val_ds, "collate", None))
    return train_dl, val_dl


@torch.no_grad()
def predict_probs(model: nn.Module, loader, device, amp_dtype=None, criterion=None
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """(rows, fake probabilities, mean loss) over a loader of (x, y, row)."""
    model.eval()
    rows, probs, loss_sum, n = [], [], 0.0, 0
    for x, y, r in loader:
        x, y = x.to(device, non_blocking=True), y.to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        logits = logits.float()
        if criterion is not None:
            loss_sum += float(criterion(logits, y)) * len(y)
        n += len(y)
        probs.append(torch.softmax(logits, 1)[:, 1].cpu().numpy())
        rows.append(r.numpy())
    return (np.concatenate(rows) if rows else np.array([], int),
            np.concatenate(probs) if probs else np.array([]), loss_sum / max(n, 1))


def _crop_caches(cfg: LabConfig, processed: str | Path, train_df, val_df, size: int,
                 is_main: bool, ddp: dict) -> tuple[Path | None, Path | None, int]:
    """(train, val, the train cache's size in px) crop caches
    (:func:`dflab.data.datasets.cache_crops`) when train.cache_crops and they fit in a quarter of the
    free disk, else (None, None, 0). Validation is cached at the
    input size (exactly what its transform makes); training, when random resized crops are on,
    at the size whose smallest crop still has the input size's pixels (the crops are cut from
    the cached image instead of from the JPEG: a deliberate, small change of the augmentation)."""
    from dflab.data.datasets import cache_crops

    if not cfg.train.cache_crops:
        return None, None, 0
    a = cfg.train
    random_crop = a.augment and a.aug_scale_min < 1
    train_size = math.ceil(size / math.sqrt(a.aug_scale_min)) if random_crop else size
    folder = Path(processed) / "crop_cache"
    need = 3 * (len(train_df) * train_size ** 2 + len(val_df) * size ** 2)
    free = shutil.disk_usage(Path(processed)).free
    if need > free / 4:
        log.warning("train.cache_crops: the cache would take %.1f GB of %.1f GB free; reading "
                    "the JPEG crops instead", need / 1e9, free / 1e9)
        return None, None, 0
    if ddp["ddp"] and not is_main:  # rank 0 builds, the others wait and then find the files
        import torch.distributed as dist

        dist.barrier()
    paths = (cache_crops(train_df["crop_abspath"].tolist(), train_size, folder),
             cache_crops(val_df["crop_abspath"].tolist(), size, folder))
    if ddp["ddp"] and is_main:
        import torch.distributed as dist

        dist.barrier()
    return paths[0], paths[1], train_size


def real_faces(cfg: LabConfig, processed: str | Path, split: str):
    """(index rows, their crops' 68 landmarks in crop pixels) of the real crops with landmarks
    in ``split`` of ``processed`` and of every ``train.extra_reals`` folder; the fakes of those
    folders are left out (pseudo-fake training never sees a real fake)."""
    import pandas as pd

    from dflab.data.datasets import load_index, select_split

    frames, points = [], []
    for folder in [processed, *cfg.train.extra_reals]:
        df = load_index(folder)
        df = df[(df["target"] == 0) & (df["split"] == split)]
        if df.empty:
            continue
        if split == "train" and cfg.train.max_frames_per_video:
            df = select_split(df, "train", cfg.train.max_frames_per_video, cfg.env.seed)
        pts = crop_landmarks(folder, df)
        keep = [k for k, p in enumerate(pts) if p is not None]
        if len(keep) < len(df):
            log.info("%s (%s): %d of %d real crops have no landmarks; left out of pseudo-fake "
                     "training", folder, split, len(df) - len(keep), len(df))
        frames.append(df.iloc[keep])
        points += [pts[k] for k in keep]
    if not frames:
        raise ValueError(f"no real {split} crops with landmarks in '{processed}' or "
                         f"train.extra_reals {cfg.train.extra_reals}: pseudo-fakes are made from "
                         f"real faces with their 68 landmarks (preprocess.landmarks)")
    return pd.concat(frames).reset_index(drop=True), points


def _pseudo_fake_sets(cfg: LabConfig, processed: str | Path, size: int, train_tf, val_tf,
                      is_main: bool, ddp: dict):
    """The (train, val) datasets of ``train.pseudo_fakes``: real crops and self-blended fakes
    of them, new ones every epoch in training, fixed ones in validation."""
    train_df, train_pts = real_faces(cfg, processed, "train")
    val_df, val_pts = real_faces(cfg, processed, "val")
    train_cache, val_cache, train_size = _crop_caches(cfg, processed, train_df, val_df, size,
                                                      is_main, ddp)
    log.info("pseudo-fakes (%s): %d real training crops, %d real validation crops",
             cfg.train.pseudo_fakes, len(train_df), len(val_df))
    return (SelfBlendedPairs(train_df, train_pts, train_tf, cfg.env.seed, train_cache,
                             train_size),
            SelfBlendedPairs(val_df, val_pts, val_tf, cfg.env.seed + 1, val_cache, size,
                             fixed=True))


def _device(cfg: LabConfig, ddp: dict, runtime: dict) -> tuple[torch.device, str]:
    """(device, amp) for this process: its GPU under torchrun, else the first GPU, else the CPU
    (AMP only on a GPU)."""
    if ddp["ddp"]:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available() and cfg.env.device != "cpu":
        device = torch.device("cuda", ddp["local_rank"])
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return device, runtime["amp"] if device.type == "cuda" else "off"


def _start_or_resume(cfg: LabConfig, processed: str | Path, run: Path | None, resume: bool
                     ) -> tuple[LabConfig, dict | None]:
    """(the config to train with, the checkpoint to resume from or None). A resume takes the
    saved config (only ``train.epochs`` may change); a new run takes the preprocessing settings
    that made the crops."""
    last_path = run / "checkpoints" / "last.pt" if run else None
    if resume:
        if last_path is None or not last_path.exists():
            raise FileNotFoundError(f"nothing to resume: '{last_path}' does not exist; start a new "
                                    f"run or give the name of an existing one")
        ckpt = load_checkpoint(last_path, "cpu")
        saved = config_from_dict(ckpt["config"])
        saved.train.epochs = cfg.train.epochs  # the one setting a resume may change
        return saved, ckpt
    if last_path is not None and last_path.exists():
        raise FileExistsError(f"run '{run}' already has checkpoints; resume it (resume=True, "
                              f"`dflab train --resume`) or choose another name")

    return adopt_preprocess_settings(cfg, processed), None


def _optimisation(cfg: LabConfig, model: nn.Module, steps_per_epoch: int, amp: str,
                  device: torch.device):
    """AdamW, the warm-up + cosine schedule over the whole run, the AMP grad scaler and the
    training loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr,
                            weight_decay=cfg.train.weight_decay)
    total_steps = steps_per_epoch * cfg.train.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(
        total_steps, round(cfg.train.warmup_epochs * steps_per_epoch),
        cfg.train.min_lr / cfg.train.lr))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    criterion: nn.Module = (FocalLoss(cfg.train.focal_gamma, cfg.train.label_smoothing)
                            if cfg.train.loss == "focal" else
                            nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing))
    return opt, sched, scaler, criterion, total_steps


def _restore(ckpt: dict, run: Path, model, opt, sched, scaler, is_main: bool) -> dict:
    """Load a checkpoint's full state; returns the loop state (start epoch, step, early
    stopping) and drops history lines written after it (a run killed mid-epoch)."""
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])  # the schedule itself is rebuilt from cfg
    scaler.load_state_dict(ckpt["scaler"])
    _set_rng_state(ckpt["rng"])
    state = {"start_epoch": ckpt["epoch"] + 1, "step": ckpt["step"], **ckpt["early"]}
    hist = run / "history.jsonl"
    if is_main and hist.exists():
        keep = [ln for ln in hist.read_text().splitlines()
                if ln and json.loads(ln)["epoch"] < state["start_epoch"]]
        hist.write_text("".join(k + "\n" for k in keep))
    return state


def _validate(model, loader, targets: np.ndarray, device, amp_dtype
              ) -> tuple[float, dict, np.ndarray, np.ndarray]:
    """(val loss, val metrics at 0.5 with the tuned threshold, targets, probabilities); the loss
    is plain cross-entropy, comparable across loss settings."""
    rows, probs, val_loss = predict_probs(model, loader, device, amp_dtype, nn.CrossEntropyLoss())
    y_val = targets[rows]
    vm = binary_metrics(y_val, probs, 0.5)
    metrics = {f"val_{k}": vm[k] for k in ("accuracy", "precision", "recall", "f1", "auc", "ap",
                                           "eer")}
    metrics["val_threshold"] = tune_threshold(y_val, probs)
    return val_loss, metrics, y_val, probs


def _save(run: Path, state: dict, metrics: dict, improved: bool, save_every: int) -> None:
    """history.jsonl gets the epoch; last.pt always, best.pt when val improved, epoch_K.pt every
    ``save_every`` epochs (all written atomically). A full disk stops the run with one line; the
    checkpoints written before stay whole (a resume drops the history lines after them)."""
    ckdir = run / "checkpoints"
    try:
        with (run / "history.jsonl").open("a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        save_checkpoint(state, ckdir / "last.pt")
        if improved:
            save_checkpoint(state, ckdir / "best.pt")
        if metrics["epoch"] % save_every == 0:
            save_checkpoint(state, ckdir / f"epoch_{metrics['epoch']:03d}.pt")
    except (OSError, RuntimeError) as exc:
        if not disk_full(exc, run):
            raise
        name = run.name.removeprefix("train-")
        raise OSError(f"could not save epoch {metrics['epoch']} of '{run}': the disk is full "
                      f"({free_mib(run):.0f} MiB free); the checkpoints written before are "
                      f"kept: free space, then `dflab train --resume --name {name}`") from None


def _datasets(cfg: LabConfig, processed: str | Path, dc: dict[str, Any], is_main: bool,
              ddp: dict) -> tuple[Any, Any]:
    """The train and val datasets at the model's input (``dc``): self-blended pairs when
    ``train.pseudo_fakes`` is on, else the folder's crops (cached when ``train.cache_crops``)."""
    from dflab.data.datasets import (CropDataset, build_transforms, load_index, only_methods,
                                     select_split)

    train_tf = build_transforms(dc["input_size"], dc["mean"], dc["std"], True, cfg.train.augment,
                                cfg.train)
    val_tf = build_transforms(dc["input_size"], dc["mean"], dc["std"], False)
    if cfg.train.pseudo_fakes != "off":
        return _pseudo_fake_sets(cfg, processed, dc["input_size"], train_tf, val_tf, is_main, ddp)
    if cfg.train.extra_reals:
        raise ValueError("train.extra_reals adds real faces only: it needs "
                         "train.pseudo_fakes=sbi (real crops from elsewhere against this "
                         "folder's fakes would teach where an image came from)")
    df = only_methods(load_index(processed), cfg.train.methods)
    train_df = select_split(df, "train", cfg.train.max_frames_per_video, cfg.env.seed)
    val_df = select_split(df, "val")
    train_cache, val_cache, _ = _crop_caches(cfg, processed, train_df, val_df, dc["input_size"],
                                             is_main, ddp)
    return CropDataset(train_df, train_tf, train_cache), CropDataset(val_df, val_tf, val_cache)


def _runtime(cfg: LabConfig, ddp: dict) -> tuple[dict[str, Any], torch.device, str]:
    """(threads, workers and pinning as :func:`setup_runtime` set them, the device, the AMP
    mode) of this process."""
    runtime = setup_runtime(cfg.env.seed, cfg.env.deterministic, cfg.train.amp, cfg.env.workers)
    device, amp = _device(cfg, ddp, runtime)
    if device.type == "cpu" and cfg.env.workers < 0:
        # measured (2 cores, resnet18 at 128 px, cached crops): a loader process only takes
        # cores from the model's own threads; an epoch with validation took 19.9 s with one
        # and 15.0 s without
        runtime["workers"] = 0
    return runtime, device, amp


def _run_folder(cfg: LabConfig, runs_root: str | Path, name: str, processed: str | Path,
                dc: dict[str, Any], runtime: dict[str, Any], ddp: dict,
                resumed: Path | None) -> Path:
    """The run folder: made (or taken over on a resume) by the main process with the
    environment report, its path sent to the other ranks."""
    run = resumed
    if ddp["rank"] == 0:
        env = environment_report(cfg.env.data_root, cfg.model.backbone, dc["input_size"],
                                 cfg.train.target_batch)
        env["runtime"] = runtime
        run = create_run_dir(runs_root, "train", cfg, name or time.strftime("%Y%m%d-%H%M%S"),
                             env, processed)
    if ddp["ddp"]:
        import torch.distributed as dist

        obj = [str(run) if run else ""]
        dist.broadcast_object_list(obj, 0)
        run = Path(obj[0])
    assert run is not None
    return run


def train(cfg: LabConfig, processed: str | Path, runs_root: str | Path, name: str = "",
          resume: bool = False, callbacks: list[Callback] | None = None,
          cancel: CancelToken | None = None) -> Path:
    """Train on the crops in ``processed`` (its index.csv); returns the run folder.

    ``resume``: continue ``<runs_root>/train-<name>`` from its ``last.pt`` exactly where it stopped
    (model, optimiser, scheduler, scaler, epoch, RNG states, early-stopping state).
    """
    # Long on purpose: the set-up before the first epoch, in the order it must happen (runtime,
    # data, run folder, optimiser, resume); the loop is _Trainer.
    from dflab.visual.models import create_model, data_config

    ddp = ddp_info()
    is_main = ddp["rank"] == 0
    em = Emitter("train", callbacks if is_main else [], cancel)
    runtime, device, amp = _runtime(cfg, ddp)
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)
    run = Path(runs_root) / f"train-{name}" if name else None
    cfg, ckpt = _start_or_resume(cfg, processed, run, resume)

    model = create_model(cfg.model)
    dc = data_config(model, cfg.model)
    train_ds, val_ds = _datasets(cfg, processed, dc, is_main, ddp)
    gpu_mem = torch.cuda.mem_get_info(device)[0] // 2**20 if device.type == "cuda" else 0
    advice = advise(gpu_mem, cfg.model.backbone, dc["input_size"], cfg.train.target_batch,
                    amp == "bf16")
    batch = cfg.train.batch_size or advice["batch_size"]
    accum = cfg.train.accumulation or max(1, math.ceil(cfg.train.target_batch / batch))
    run = _run_folder(cfg, runs_root, name, processed, dc, runtime, ddp, run)

    channels_last = device.type == "cuda" and cfg.train.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.to(device)
    per_rank = len(train_ds) // ddp["world"]
    items = _items_per_batch(train_ds, batch)
    batches_per_epoch = per_rank // items if per_rank > items else 1  # drop_last when it can
    steps_per_epoch = math.ceil(batches_per_epoch / accum)
    opt, sched, scaler, criterion, total_steps = _optimisation(cfg, model, steps_per_epoch, amp,
                                                               device)
    state = {"start_epoch": 1, "step": 0, "best_loss": math.inf, "bad_epochs": 0,
             "best_epoch": 0, "best_score": math.inf}
    if ckpt is not None:
        state = _restore(ckpt, run, model, opt, sched, scaler, is_main)
    net: nn.Module = model
    if ddp["ddp"]:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if is_main:
        write_json(run / "train_setup.json", {
            "train_crops": len(train_ds), "val_crops": len(val_ds), "batch_size": batch,
            "pseudo_fakes": cfg.train.pseudo_fakes,
            "accumulation": accum, "effective_batch": batch * accum * ddp["world"],
            "world_size": ddp["world"], "device": str(device), "amp": amp,
            "data_config": dc, "advice": advice, "steps_per_epoch": steps_per_epoch})

    tb = None
    if is_main:  # TensorBoard event files in the run folder, beside history.jsonl

        # on a resume, drop what the killed run wrote after its checkpoint: steps > state["step"]
        tb = TensorBoardCallback(str(run),
                                 purge_step=state["step"] + 1 if ckpt is not None else None)
        em.callbacks.append(tb)
    try:
        return _Trainer(cfg, run, model, net, dc, train_ds, val_ds, batch, accum, opt, sched,
                        scaler, criterion, total_steps, device, amp_dtype, channels_last, runtime,
                        ddp, state, em).fit()
    finally:
        if tb is not None:
            tb.close()


@dataclass
class _Trainer:
    """The epoch loop of :func:`train` and what it works with: everything is built before the
    first epoch (or restored from a checkpoint), then each epoch trains, validates, checkpoints
    and checks for early stopping."""

    cfg: LabConfig
    run: Path
    model: nn.Module  # the model itself (what is saved)
    net: nn.Module  # what is trained: the model, or its DistributedDataParallel wrapper
    data_config: dict[str, Any]
    train_ds: Any
    val_ds: Any
    batch: int  # per rank, per step
    accum: int  # batches per optimiser step
    opt: torch.optim.Optimizer
    sched: Any
    scaler: Any
    criterion: nn.Module
    total_steps: int
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    runtime: dict[str, Any]  # workers, pin_memory
    ddp: dict[str, Any]  # ddp, rank, world
    state: dict[str, Any]  # start_epoch, step and the early-stopping state (checkpointed)
    em: Emitter

    @property
    def is_main(self) -> bool:
        return self.ddp["rank"] == 0

    def train_epoch(self, loader, epoch: int) -> float:
        """One pass over ``loader`` with gradient accumulation; returns the mean training loss
        and advances ``state['step']``."""
        net, opt, device, em, state = self.net, self.opt, self.device, self.em, self.state
        epochs = self.cfg.train.epochs
        net.train()
        loss_sum, n_seen = torch.zeros((), device=device), 0
        opt.zero_grad(set_to_none=True)
        n_batches = len(loader)
        # reading the loss waits for the GPU: on a GPU only every 16th batch (and the last), so
        # the host queues work ahead; on the CPU it costs nothing
        sync_every = 16 if device.type == "cuda" else 1
        for b, (x, y, _) in enumerate(loader):
            em.check()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=self.amp_dtype,
                                enabled=self.amp_dtype is not None):
                loss = self.criterion(net(x).float(), y)
            self.scaler.scale(loss / self.accum).backward()
            loss_sum += loss.detach() * len(y)
            n_seen += len(y)
            synced = (b + 1) % sync_every == 0 or b + 1 == n_batches
            if (b + 1) % self.accum == 0 or b + 1 == n_batches:
                self.scaler.step(opt)
                self.scaler.update()
                opt.zero_grad(set_to_none=True)
                if state["step"] < self.total_steps:
                    self.sched.step()
                state["step"] += 1
                if synced:
                    em.emit(StepLoss("train", epoch, state["step"], loss.item(),
                                     opt.param_groups[0]["lr"]))
            if synced:
                em.progress((epoch - 1) * n_batches + b + 1, epochs * n_batches, "batch",
                            f"epoch {epoch} loss {loss.item():.4f}")
        return float(loss_sum) / max(n_seen, 1)

    def checkpoint(self, epoch: int, metrics: dict[str, Any], improved: bool) -> None:
        """The epoch's checkpoint files and history line (:func:`_save`)."""
        state = self.state
        _save(self.run, {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                         "scheduler": self.sched.state_dict(), "scaler": self.scaler.state_dict(),
                         "epoch": epoch, "step": state["step"], "rng": _rng_state(),
                         "early": {k: state[k] for k in ("best_loss", "bad_epochs",
                                                         "best_epoch", "best_score")},
                         "config": config_to_dict(self.cfg), "data_config": self.data_config,
                         "metrics": metrics},
              metrics, improved, self.cfg.train.save_every)

    def fit(self) -> Path:
        """Train, validate, checkpoint and stop early, from ``state['start_epoch']`` on."""
        cfg, state, em, run = self.cfg, self.state, self.em, self.run
        t0 = time.monotonic()
        epoch = state["start_epoch"] - 1
        stopped_early = False
        for epoch in range(state["start_epoch"], cfg.train.epochs + 1):
            train_dl, val_dl = _loaders(cfg, self.train_ds, self.val_ds, self.batch,
                                        self.runtime["workers"], self.runtime["pin_memory"],
                                        self.ddp, epoch)
            t_train = time.monotonic()
            train_loss = self.train_epoch(train_dl, epoch)
            t_train = time.monotonic() - t_train
            val_loss, val_metrics, y_val, probs = _validate(self.model, val_dl,
                                                            self.val_ds.targets, self.device,
                                                            self.amp_dtype)
            metrics = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                       "lr": self.opt.param_groups[0]["lr"],
                       "seconds": round(time.monotonic() - t0, 1),
                       "train_seconds": round(t_train, 2), "step": state["step"], **val_metrics}
            # lower is better: the val loss, or minus the val AUC (a NaN AUC never improves)
            score = val_loss if cfg.train.select_on == "val_loss" else -val_metrics["val_auc"]
            improved = bool(score < state["best_score"] - 1e-6)
            if improved:
                state.update(best_loss=val_loss, best_score=score, bad_epochs=0, best_epoch=epoch)
            else:
                state["bad_epochs"] += 1
            if self.is_main:
                self.checkpoint(epoch, metrics, improved)
                roc = roc_points(y_val, probs)
                # the newest epoch's validation ROC, so a finished run shows it after a reload
                write_json(run / "val_roc.json", {"epoch": epoch, **roc})
                em.emit(EpochMetrics("train", epoch, metrics, roc))
            if state["bad_epochs"] >= cfg.train.patience:
                stopped_early = True
                log.info("early stopping at epoch %d (best %d)", epoch, state["best_epoch"])
                break
        if self.is_main:
            summary = {"run": str(run), "best_epoch": state["best_epoch"],
                       "best_val_loss": state["best_loss"], "selected_on": cfg.train.select_on,
                       "last_epoch": epoch, "stopped_early": stopped_early,
                       "seconds": round(time.monotonic() - t0, 1)}
            write_json(run / "train_summary.json", summary)
            em.result(**summary)
        if self.ddp["ddp"]:
            import torch.distributed as dist

            dist.barrier()
        return run
