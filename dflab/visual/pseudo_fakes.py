"""Self-blended pseudo-fakes (Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended
Images", CVPR 2022): a fake made from one real face alone, so that real faces are all the
training data a detector needs.

From a real face and its 68 landmarks, :func:`self_blend` makes a source and a target from the
same image, the source altered (colour: an RGB shift, hue/saturation/value and brightness/contrast;
frequency: a downscale-and-upscale or a sharpening; a small shift and rescale), then pastes the
source into the target through a mask: the landmarks' convex hull, deformed (elastic warp,
erosion or dilation), blurred twice with random kernels and scaled by a blend ratio. What is left
is what every face swap leaves: a blending boundary, a colour and sharpness mismatch, resampling
inside the face, with nothing of any particular generator. JPEG re-compression is applied to real
and fake alike afterwards (the training augmentation), as the paper does.

The values of the transforms are the paper's (its Section 3 and supplementary); the code is
written from the description, with OpenCV and torchvision primitives. No library ships the
recipe, so it is written here.

Two ways to use it:

- :class:`SelfBlendedPairs`: a torch dataset of (real, pseudo-fake) pairs made anew every epoch
  (``train.pseudo_fakes=sbi``): balanced batches, a different fake of each face each epoch;
  deterministic under the seed (the generator of item i in epoch e is seeded by (seed, e, i)).
- :func:`write_pseudo_fake_folder`: a processed folder whose fakes are self-blended copies of
  the real crops of other folders (fixed, one or more per real), in the usual layout, so the
  forensic features and their MLP train on them unchanged.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dflab.core.events import Emitter
from dflab.core.files import read_json, write_json
from dflab.data.landmarks import crop_points, hull_mask
from dflab.data.preprocess import build_index

log = logging.getLogger(__name__)

__all__ = ["BlendParams", "self_blend", "blend", "blend_mask", "SelfBlendedPairs",
           "crop_landmarks", "write_pseudo_fake_folder", "sample_triples", "METHOD"]

METHOD = "sbi"  # the manipulation method of pseudo-fakes in indexes and reports


@dataclass(frozen=True)
class BlendParams:
    """The recipe's ranges (the paper's values unless said)."""

    rgb_shift: float = 20.0  # per-channel shift, +- this (0-255 scale)
    # hue, saturation, value: the paper's limits (+-0.3 on uint8 images) shift almost nothing;
    # a mild shift here (+-2 of OpenCV's 180 hue units, +-5% saturation and value)
    hue_shift: float = 2.0
    sat_shift: float = 0.05
    val_shift: float = 0.05
    brightness: float = 0.1  # +- brightness and contrast
    contrast: float = 0.1
    downscale: tuple[float, float] = (0.25, 0.5)  # the frequency transform: down, then back up
    p_sharpen: float = 0.5  # else downscale
    shift: float = 0.03  # the source moved by up to 3% of the size
    scale: tuple[float, float] = (0.95, 1 / 0.95)  # and rescaled
    elastic_alpha: float = 0.05  # mask displacement, fraction of the face size
    elastic_sigma: float = 0.04  # its smoothness, fraction of the face size
    kernel: tuple[float, float] = (0.02, 0.12)  # mask blur kernels, fraction of the face size
    ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # blend ratio, drawn uniformly
    erode: float = 0.06  # the hull eroded or dilated by up to this fraction of the face size


def _odd(n: float) -> int:
    return max(1, int(n) // 2 * 2 + 1)


def blend_mask(points: np.ndarray, shape: tuple[int, int], rng: np.random.Generator,
               p: BlendParams = BlendParams()) -> np.ndarray:
    """``float32 (H, W)`` in [0, 1]: the landmarks' hull, deformed and blurred twice (before the
    blend ratio). Its support stays within the hull grown by the erosion, deformation and blur
    bounds of ``p`` (:func:`mask_reach`)."""
    import cv2

    h, w = shape[:2]
    mask = hull_mask(points, (h, w))
    size = _face_size(points)
    # elastic deformation: a smooth random displacement field (OpenCV's remap, the displacement
    # drawn and smoothed here)
    sigma = max(1.0, p.elastic_sigma * size)
    dx, dy = (cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma)
              for _ in range(2))
    norm = max(float(np.abs(dx).max()), float(np.abs(dy).max()), 1e-6)
    amp = p.elastic_alpha * size / norm
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mask = cv2.remap(mask, gx + dx * amp, gy + dy * amp, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT)
    # a smaller or larger blending region
    k = int(round(rng.uniform(0, p.erode) * size))
    if k > 0:
        op = cv2.erode if rng.random() < 0.5 else cv2.dilate
        mask = op(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    for _ in range(2):  # blurred twice: the first softens the shape, the second the edge
        kk = _odd(rng.uniform(*p.kernel) * size)
        mask = cv2.GaussianBlur(mask, (kk, kk), 0)
    return np.clip(mask, 0.0, 1.0)


def mask_reach(points: np.ndarray, p: BlendParams = BlendParams()) -> float:
    """How far (px) beyond the hull a mask of :func:`blend_mask` can reach: dilation,
    displacement and two blur radii at their bounds."""
    size = _face_size(points)
    blur = 2 * (_odd(p.kernel[1] * size) // 2)
    return p.erode * size + p.elastic_alpha * size + blur + 2


def _face_size(points: np.ndarray) -> float:
    pts = np.asarray(points, float)
    return float(max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1]), 8.0))


def _colour(img: np.ndarray, rng: np.random.Generator, p: BlendParams) -> np.ndarray:
    """RGB shift, hue/saturation/value shift, brightness and contrast (uint8 in and out)."""
    import cv2

    out = img.astype(np.float32) + rng.uniform(-p.rgb_shift, p.rgb_shift, 3).astype(np.float32)
    shifts = [rng.uniform(-v, v) for v in (p.hue_shift, p.sat_shift, p.val_shift)]
    if any(shifts):  # (the uint8 HSV round trip alone moves values by up to 2)
        hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8),
                           cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + shifts[0]) % 180
        hsv[..., 1] *= 1 + shifts[1]
        hsv[..., 2] *= 1 + shifts[2]
        out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8),
                           cv2.COLOR_HSV2RGB).astype(np.float32)
    alpha = 1 + rng.uniform(-p.contrast, p.contrast)
    beta = rng.uniform(-p.brightness, p.brightness) * 255
    out = (out - out.mean()) * alpha + out.mean() + beta
    return np.clip(out, 0, 255).astype(np.uint8)


def _frequency(img: np.ndarray, rng: np.random.Generator, p: BlendParams) -> np.ndarray:
    """A sharpening, or a downscale and upscale back (resampling blur)."""
    import cv2

    h, w = img.shape[:2]
    if rng.random() < p.p_sharpen:
        amount = rng.uniform(0.2, 0.5)
        soft = cv2.GaussianBlur(img, (0, 0), 1.0)
        return cv2.addWeighted(img, 1 + amount, soft, -amount, 0)
    s = rng.uniform(*p.downscale)
    small = cv2.resize(img, (max(2, round(w * s)), max(2, round(h * s))),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _affine(img: np.ndarray, rng: np.random.Generator, p: BlendParams) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = rng.uniform(*p.scale)
    tx, ty = rng.uniform(-p.shift, p.shift, 2) * np.array([w, h])
    m = np.float32([[s, 0, (1 - s) * w / 2 + tx], [0, s, (1 - s) * h / 2 + ty]])
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray, ratio: float) -> np.ndarray:
    """``source * mask * ratio + target * (1 - mask * ratio)``, uint8 (ratio 0: ``target``)."""
    m = (mask * ratio)[..., None].astype(np.float32)
    out = source.astype(np.float32) * m + target.astype(np.float32) * (1 - m)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def self_blend(img: np.ndarray, points: np.ndarray, rng: np.random.Generator,
               p: BlendParams = BlendParams()) -> tuple[np.ndarray, np.ndarray]:
    """``(pseudo-fake uint8 (H, W, 3), mask float32 (H, W) with the ratio applied)`` from a real
    face ``img`` (uint8 (H, W, 3) RGB) and its landmarks ``points`` (68, 2) in its pixels."""
    source, target = img.copy(), img.copy()
    if rng.random() < 0.5:  # the paper alters the source or the target, at random
        source = _frequency(_colour(source, rng, p), rng, p)
    else:
        target = _frequency(_colour(target, rng, p), rng, p)
    source = _affine(source, rng, p)
    mask = blend_mask(points, img.shape, rng, p)
    ratio = float(rng.choice(p.ratios))
    return blend(source, target, mask, ratio), mask * ratio


def crop_landmarks(processed: str | Path, df) -> list[np.ndarray | None]:
    """Per index row of ``df`` (rows of ``processed``), its crop's 68 landmarks in the crop's own
    pixels (``float32 (68, 2)``), or None when the frame has none (each meta.json read once)."""
    processed = Path(processed)
    by_video: dict[str, dict[str, Any]] = {}
    out: list[np.ndarray | None] = []
    for crop_path in df["crop_path"]:
        folder = str(Path(crop_path).parent.parent)
        if folder not in by_video:
            meta = processed / folder / "meta.json"
            frames = read_json(meta)["frames"] if meta.is_file() else []
            by_video[folder] = {f["crop_path"]: f["primary"] for f in frames if f["primary"]}
        primary = by_video[folder].get(f"{Path(crop_path).parent.name}/{Path(crop_path).name}")
        pts = primary.get("landmarks68") if primary else None
        out.append(crop_points(pts, primary) if pts else None)
    return out


class SelfBlendedPairs:
    """A torch dataset over real crops: item i is ``(x (2, 3, S, S), y [0, 1], rows [2i, 2i+1])``,
    the real crop and a self-blended fake of it, both through ``transform`` (uint8 CHW tensor
    in). ``collate`` stacks a batch of pairs into one batch of 2B images (pass it to the
    DataLoader): every batch is half real, half pseudo-fake, each fake beside its own real.

    ``fixed``: the same fake of each crop every epoch (validation); else a new one each epoch
    (call :meth:`set_epoch`). ``cache``: a :func:`~dflab.data.datasets.cache_crops` file of the
    rows at ``cache_size`` px (landmarks are scaled to it)."""

    def __init__(self, df, points: Sequence[np.ndarray], transform, seed: int = 0,
                 cache: str | Path | None = None, cache_size: int = 0, fixed: bool = False,
                 params: BlendParams = BlendParams()):
        self.df = df.reset_index(drop=True)
        self.paths = self.df["crop_abspath"].tolist()
        self.points = list(points)
        if len(self.points) != len(self.paths) or any(p is None for p in self.points):
            raise ValueError("SelfBlendedPairs needs 68 landmarks for every crop")
        self.transform, self.seed, self.fixed, self.params = transform, seed, fixed, params
        self.cache, self.cache_size = (str(cache) if cache else None), cache_size
        self.epoch = 0
        self.images_per_item = 2
        self._arr = None
        if self.cache is not None:  # landmarks in the cached images' pixels
            from PIL import Image

            for i, path in enumerate(self.paths):
                with Image.open(path) as im:  # reads the header only
                    w, h = im.size
                self.points[i] = self.points[i] * np.float32([cache_size / w, cache_size / h])
        # the rows as 2i (real), 2i + 1 (pseudo-fake): what validation reads targets from
        self.targets = np.tile([0, 1], len(self.paths))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arr": None}

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def image(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 (H, W, 3) RGB, its landmarks) of crop ``i``, from the cache when there is one."""
        pts = self.points[i]
        if self.cache is not None:
            if self._arr is None:
                self._arr = np.load(self.cache, mmap_mode="r")
            return np.array(self._arr[i]), pts
        from dflab.data.datasets import read_crop_rgb

        return read_crop_rgb(self.paths[i]), pts

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(real, pseudo-fake, mask) of crop ``i`` for this epoch, uint8 RGB / float32."""
        img, pts = self.image(i)
        rng = np.random.default_rng([self.seed, 0 if self.fixed else self.epoch, i])
        fake, mask = self_blend(img, pts, rng, self.params)
        return img, fake, mask

    def __getitem__(self, i: int):
        import torch

        real, fake, _ = self.pair(i)
        x = torch.stack([self.transform(torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1))
                         for a in (real, fake)])
        return x, torch.tensor([0, 1]), torch.tensor([2 * i, 2 * i + 1])

    @staticmethod
    def collate(batch):
        import torch

        xs, ys, rs = zip(*batch)
        return torch.cat(xs), torch.cat(ys), torch.cat(rs)


def sample_triples(processed: str | Path, n: int = 4, seed: int = 0, split: str = "train",
                   params: BlendParams = BlendParams()) -> list[tuple[np.ndarray, ...]]:
    """``n`` (real, pseudo-fake, mask as uint8 gray) triples from real crops with landmarks of
    ``processed``: what training sees (the Train tab shows them)."""
    from dflab.data.datasets import load_index

    df = load_index(processed)
    df = df[(df["target"] == 0) & (df["split"] == split)]
    if "landmarks" in df:
        df = df[df["landmarks"].fillna("").astype(str) != ""]
    if df.empty:
        raise ValueError(f"'{processed}' has no real {split} crops with landmarks: preprocess "
                         f"it with preprocess.landmarks on (the default)")
    df = df.sample(min(n, len(df)), random_state=seed)
    ds = SelfBlendedPairs(df, crop_landmarks(processed, df), None, seed, fixed=True,
                          params=params)
    out = []
    for i in range(len(ds)):
        real, fake, mask = ds.pair(i)
        out.append((real, fake, np.round(mask * 255).astype(np.uint8)))
    return out


def write_pseudo_fake_folder(sources: Sequence[str | Path | tuple[str | Path, Sequence[str]]],
                             out: str | Path, per_real: int = 1, seed: int = 0,
                             jpeg_quality: int = 95, max_crops: int = 0, callbacks=None,
                             cancel=None) -> dict:
    """A processed folder (``out``) holding, for every real crop with landmarks of the
    ``sources`` folders, the real crop and ``per_real`` self-blended fakes of it (method
    ``sbi``), in the usual layout (videos/<dataset>/{original,sbi}/<compression>/<id>/, a
    meta.json each, index.csv): the forensic features and the MLP train on it unchanged.

    Real and fake are both decoded and written once more at ``jpeg_quality``, so neither has a
    JPEG generation the other lacks. Splits are the sources' own; a source given as
    ``(folder, splits)`` gives only those splits (e.g. a test split kept for real fakes).
    ``max_crops``: at most this many real crops per source (0: all; drawn with ``seed``).
    A finished video folder is kept on a re-run (resumable). Returns counts.
    """
    # Long on purpose: it writes one folder in the preprocessing layout step by step (resume, per-
    # real fakes, meta, index) under one writer lock.
    import cv2

    from dflab.data.datasets import load_index, read_crop_rgb

    out = Path(out)
    em = Emitter("pseudo-fakes", callbacks, cancel)
    plan = []
    for item in sources:
        src, splits = item if isinstance(item, tuple) else (item, ())
        df = load_index(src)
        df = df[df["target"] == 0]
        if splits:
            df = df[df["split"].isin(list(splits))]
        if max_crops and len(df) > max_crops:
            df = df.sample(max_crops, random_state=seed).sort_index()
        pts = crop_landmarks(src, df)
        keep = [k for k, p in enumerate(pts) if p is not None]
        if len(keep) < len(df):
            log.info("%s: %d of %d real crops have no landmarks and make no pseudo-fake", src,
                     len(df) - len(keep), len(df))
        df = df.iloc[keep]
        plan += [(Path(src), uid, g.reset_index(drop=True))
                 for uid, g in df.groupby("uid", sort=True)]
    counts = {"videos": 0, "reals": 0, "fakes": 0, "skipped_finished": 0}
    em.progress(0, len(plan), "video")
    for k, (src, uid, rows) in enumerate(plan):
        em.check()
        points = crop_landmarks(src, rows)
        first = rows.iloc[0]
        for method, label in (("original", "real"), (METHOD, "fake")):
            folder = out / "videos" / first["dataset"] / method / (first["compression"] or "na") \
                / first["video_id"]
            if (folder / "meta.json").is_file():
                counts["skipped_finished"] += 1
                continue
            part = folder.with_name(folder.name + ".part")
            if part.exists():
                shutil.rmtree(part)
            (part / "crops").mkdir(parents=True)
            frames = []
            for r, pts in zip(rows.itertuples(), points):
                img = read_crop_rgb(r.crop_abspath)
                copies = [(img, pts, "")] if label == "real" else [
                    (self_blend(img, pts, np.random.default_rng([seed, j, k, int(r.frame_index)]))[0],
                     pts, f"_{j}") for j in range(per_real)]
                for arr, p, suffix in copies:
                    name = f"{int(r.frame_index):06d}{suffix}.jpg"
                    ok = cv2.imwrite(str(part / "crops" / name), cv2.cvtColor(arr, cv2.COLOR_RGB2BGR),
                                     [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
                    if not ok:
                        raise OSError(f"could not write '{part / 'crops' / name}' (disk full?)")
                    h, w = arr.shape[:2]
                    frames.append({"frame_index": int(r.frame_index), "timestamp": r.timestamp,
                                   "faces": [], "crop_path": f"crops/{name}", "frame_path": "",
                                   "reason": "", "primary": {
                                       "box": [0.0, 0.0, float(w), float(h)], "score": 1.0,
                                       "crop_box": [0, 0, w, h],
                                       "landmarks68": np.round(p, 1).tolist(),
                                       "landmarks68_model": "from " + str(r.landmarks or "source"),
                                   }})
                    counts["reals" if label == "real" else "fakes"] += 1
            record = {"path": str(src / uid), "video_id": first["video_id"], "label": label,
                      "method": method, "dataset": first["dataset"],
                      "compression": first["compression"], "source_id": first["source_id"],
                      "split": first["split"], "exists": True,
                      "extra": {"pseudo_fake_of": uid, "source_folder": str(src)}}
            write_json(part / "meta.json", {
                "record": record, "video": {"width": 0, "height": 0, "fps": 0.0,
                                            "duration_s": 0.0, "frame_count": len(rows)},
                "settings": {"pseudo_fakes": METHOD, "per_real": per_real, "seed": seed,
                             "jpeg_quality": jpeg_quality},
                "detector": {"name": "crops of " + str(src)}, "landmarks": {"name": "copied"},
                "audio": {"has_audio": False},
                "summary": {"frames": len(frames), "frames_with_face": len(frames),
                            "frames_with_landmarks": len(frames), "coverage": 1.0,
                            "truncated": ""},
                "frames": frames})
            os.replace(part, folder)
        counts["videos"] += 1
        em.progress(k + 1, len(plan), "video", uid)
    index = build_index(out)
    counts["index_rows"] = int(len(index))
    em.result(**counts)
    return counts
