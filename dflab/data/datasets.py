"""Torch datasets over the preprocessing index: face crops with their labels and metadata.

Splits are by video (the index carries each video's split), never by frame. Augmentations keep
manipulation artefacts: horizontal flips, and at the strengths set by the ``train.aug_*`` keys a
mild random resized crop, small rotations, colour jitter and JPEG re-compression; nothing that
blurs or warps heavily. Colour jitter and JPEG q70 make a detector robust on real data but slow
down learning: the CPU preset turns them off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from dflab.core.config import TrainConfig
from dflab.core.files import reading

log = logging.getLogger(__name__)

__all__ = ["load_index", "faceless_frames", "CropDataset", "build_transforms", "select_split", "cache_crops",
           "only_methods", "read_crop_rgb"]


def faceless_frames(processed: str | Path, split: str = "") -> pd.DataFrame:
    """The sampled frames of ``processed`` (of ``split``: all when "") where no face was found,
    as index rows with ``target``: what the SBI protocol counts at 0.5."""
    df = load_index(processed, faces_only=False)
    df = df[df["has_face"].astype(str).str.lower() != "true"]
    return df[df["split"] == split].reset_index(drop=True) if split else df.reset_index(drop=True)


#: the columns of index.csv every reader relies on (written by dflab.data.preprocess.build_index)
INDEX_COLUMNS = ("uid", "video_id", "dataset", "method", "label", "split", "source_id",
                 "frame_index", "has_face", "reason", "confidence", "n_faces", "crop_path")


def load_index(processed: str | Path, faces_only: bool = True) -> pd.DataFrame:
    """The face crops of a preprocessed folder (frames without a face are not trainable;
    ``faces_only=False``: every sampled frame)."""
    processed = Path(processed)
    path = processed / "index.csv"
    if not path.exists():
        raise FileNotFoundError(f"no index at '{path}'; run `dflab preprocess` first")

    with reading(path, "index", "rebuild it: run `dflab preprocess` on the folder again (finished "
                 "videos are kept; the index is written from their meta.json)"):
        df = pd.read_csv(path, dtype={"video_id": str, "source_id": str, "compression": str,
                                      "split": str, "label": str, "crop_path": str},
                         keep_default_na=False, encoding="utf-8",
                         na_values={"confidence": [""], "x1": [""], "y1": [""], "x2": [""],
                                    "y2": [""]})
        missing = set(INDEX_COLUMNS) - set(df.columns)
        if missing:
            raise KeyError(f"no column(s) {sorted(missing)}")
        df["has_face"] = df["has_face"].astype(str).str.lower() == "true"
        if faces_only:
            df = df[df["has_face"]].copy()
        df["target"] = (df["label"] == "fake").astype(int)
        df["crop_abspath"] = [str(processed / p) for p in df["crop_path"]]
    return df.reset_index(drop=True)


def select_split(df: pd.DataFrame, split: str, max_frames_per_video: int = 0,
                 seed: int = 0) -> pd.DataFrame:
    part = df[df["split"] == split]
    if part.empty:
        raise ValueError(f"no crops in split '{split}'; the index has splits "
                         f"{sorted(df['split'].unique())}")
    if max_frames_per_video:
        # a random max_frames_per_video of each video's crops, in index order (a groupby.apply
        # here dropped the uid column under pandas 2.2)
        part = part.sample(frac=1, random_state=seed).groupby("uid").head(
            max_frames_per_video).sort_index()
    return part.reset_index(drop=True)


def only_methods(df: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """The index with the fakes of other manipulation methods left out of train and val (real
    crops and the whole test split stay). ``methods`` empty: ``df`` unchanged."""
    if not methods:
        return df
    fakes = df["target"] == 1
    known = sorted(df.loc[fakes & (df["split"] != "test"), "method"].unique())
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"train.methods {unknown} have no fake crops in train/val; this "
                         f"folder's methods are {known}")
    return df[~fakes | df["method"].isin(methods) | (df["split"] == "test")].reset_index(drop=True)


def build_transforms(size: int, mean: list[float], std: list[float], train: bool,
                     augment: bool = True, aug: Any = None):
    """torchvision v2 pipeline: uint8 CHW tensor in, normalised float tensor out.

    ``aug``: the strengths (a :class:`~dflab.core.config.TrainConfig`, or anything with its ``aug_*``
    fields; default: the config's defaults). Each one at 0 (or scale 1, JPEG p 0) is left out.
    """
    from torchvision.transforms import v2 as T

    a = aug or TrainConfig()
    ops: list[Any] = []
    if train and augment:
        if a.aug_scale_min < 1:
            ops.append(T.RandomResizedCrop(size, scale=(a.aug_scale_min, 1.0), ratio=(0.9, 1.1),
                                           antialias=True))
        ops.append(T.RandomHorizontalFlip(0.5))
        if a.aug_degrees > 0:
            ops.append(T.RandomRotation(a.aug_degrees))
        if a.aug_color > 0:
            ops.append(T.ColorJitter(brightness=a.aug_color, contrast=a.aug_color,
                                     saturation=a.aug_color / 2, hue=a.aug_color / 10))
        if a.aug_jpeg_p > 0:
            ops.append(T.RandomApply([T.JPEG(quality=(a.aug_jpeg_min, 95))], p=a.aug_jpeg_p))
    if not (train and augment and a.aug_scale_min < 1):
        ops.append(T.Resize((size, size), antialias=True))
    ops += [T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]
    return T.Compose(ops)


def cache_crops(paths: list[str], size: int, folder: str | Path, threads: int = 4) -> Path:
    """Every crop decoded and resized once: ``uint8 (N, size, size, 3) RGB`` in a ``.npy`` file
    under ``folder`` (memory-mapped when read), in ``paths`` order, resized exactly as the
    evaluation transform resizes (torchvision ``Resize(antialias=True)`` on uint8), so an epoch
    reads arrays instead of decoding JPEGs. Keyed by the paths, their sizes and times and
    ``size``: a changed crop makes a new file. Built through a ``.part`` file by ``threads``
    threads (Pillow and torchvision release the GIL)."""
    h = hashlib.sha1(str(size).encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    out = Path(folder) / f"crops_{size}px_{len(paths)}_{h.hexdigest()[:16]}.npy"
    shape = (len(paths), size, size, 3)
    if out.is_file() and _cache_intact(out, shape):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    _fill(np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape), paths, size,
          threads)
    digest = _digest(tmp)
    os.replace(tmp, out)
    # the check file last: a cache without it (a crash between the two) is built again
    Path(f"{out}.json").write_text(json.dumps({"shape": list(shape), "bytes": out.stat().st_size,
                                               "blake2b": digest}))
    return out


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _cache_intact(path: Path, shape: tuple[int, ...]) -> bool:
    """Whether the crop cache ``path`` is whole: its check file (``<path>.json``: shape, size
    and BLAKE2b of the file) matches. A cache cut short, damaged in place or left without its
    check file is logged and built again, never read as images."""
    try:
        want = json.loads(Path(f"{path}.json").read_text())
        ok = (tuple(want["shape"]) == shape and want["bytes"] == path.stat().st_size
              and want["blake2b"] == _digest(path))
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        log.warning("crop cache '%s' is cut short, damaged or unchecked; building it again", path)
    return ok


def _fill(arr: np.ndarray, paths: list[str], size: int, threads: int) -> None:
    from torchvision.transforms.v2.functional import resize

    def one(i: int) -> None:
        arr[i] = resize(_read_crop(paths[i]), [size, size], antialias=True).permute(1, 2, 0)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(len(paths))))
    arr.flush()


def read_crop_rgb(path: str | Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB, decoded by Pillow as training decodes every crop."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # writable: torch.from_numpy takes it as is
    except Exception as exc:
        raise OSError(f"cannot read crop '{path}' ({exc}); re-run `dflab preprocess` for its "
                      f"video") from exc


def _read_crop(path: str) -> torch.Tensor:
    """uint8 (3, H, W) RGB."""
    return torch.from_numpy(read_crop_rgb(path)).permute(2, 0, 1)


class CropDataset(Dataset):
    """Items: ``(image float (3, S, S), target int, row int)``; ``row`` indexes ``self.df``.

    ``cache``: a :func:`cache_crops` file of these rows: images come from it (memory-mapped,
    opened in each worker) instead of from the JPEG files."""

    def __init__(self, df: pd.DataFrame, transform, cache: str | Path | None = None):
        self.df = df.reset_index(drop=True)
        self.paths = self.df["crop_abspath"].tolist()
        self.targets = self.df["target"].to_numpy()
        self.transform = transform
        self.cache = str(cache) if cache else None
        self._arr = None  # opened on first use, so workers never receive a copy

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arr": None}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        if self.cache is not None:
            if self._arr is None:
                self._arr = np.load(self.cache, mmap_mode="r")
            img = torch.from_numpy(np.array(self._arr[i])).permute(2, 0, 1)
            return self.transform(img), int(self.targets[i]), i
        return self.transform(_read_crop(self.paths[i])), int(self.targets[i]), i

    def class_weights(self) -> np.ndarray:
        """Per-item sampling weights that balance real and fake."""
        counts = np.bincount(self.targets, minlength=2).astype(float)
        return (1.0 / np.maximum(counts, 1))[self.targets]
