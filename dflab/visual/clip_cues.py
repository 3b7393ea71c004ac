"""Training-free clip-level cues from faces over time, scored alone (a registry).

- ``identity_drift``: how much the face's identity wanders over a clip: the mean distance of
  dlib's 128-d face descriptors (``dlib_face_recognition_resnet_model_v1.dat``, shipped by the
  landmarks extra; the same person is within 0.6 by dlib's convention) from their mean, over
  evenly spaced frames. A face swap may let the source identity show through in some frames.
- ``landmark_jitter``: how much the 68 points move between consecutive sampled frames once head
  motion is removed (a similarity fitted to the pair), over the distance between the eyes: a
  generator that works frame by frame may jitter where a real face moves smoothly.

Neither is trained: higher is taken as more fake, fixed here before any result was seen. They
are inputs to measure (a probe of both on real clips found no signal that transfers), reported
beside the trained detectors by ``dflab demo --real``. No library computes them; the descriptor
and the landmarks are dlib's.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from dflab.core.files import read_json
from dflab.core.registry import Registry, require
from dflab.data.landmarks import EXTRA, LEFT_EYE, RIGHT_EYE, fit_similarity, model_file
from dflab.visual.pseudo_fakes import crop_landmarks

log = logging.getLogger(__name__)

__all__ = ["CLIP_CUES", "clip_scores", "identity_drift", "landmark_jitter"]

CLIP_CUES: Registry = Registry("clip cue")


@functools.lru_cache(maxsize=1)
def _descriptor_model():
    dlib = require("dlib", EXTRA)
    return dlib, dlib.face_recognition_model_v1(
        str(model_file("dlib_face_recognition_resnet_model_v1.dat")))


def _descriptor(rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
    """dlib's 128-d descriptor of the face in ``rgb`` (uint8 (H, W, 3)) with its 68 points."""
    dlib, model = _descriptor_model()
    x0, y0 = np.floor(points.min(0)).astype(int)
    x1, y1 = np.ceil(points.max(0)).astype(int)
    shape = dlib.full_object_detection(dlib.rectangle(int(x0), int(y0), int(x1), int(y1)),
                                       [dlib.point(int(round(x)), int(round(y))) for x, y in points])
    return np.asarray(model.compute_face_descriptor(np.ascontiguousarray(rgb), shape))


@CLIP_CUES.register("identity_drift", help="mean distance of dlib face descriptors from their "
                    "mean over the clip (extra: landmarks)")
def identity_drift(crops: list[str], points: list[np.ndarray], frames: int = 8) -> float:
    """Mean distance of the descriptors of ``frames`` evenly spaced crops from their mean."""
    from dflab.data.datasets import read_crop_rgb

    if len(crops) < 2:
        return float("nan")
    pick = np.unique(np.round(np.linspace(0, len(crops) - 1, min(frames, len(crops)))).astype(int))
    d = np.stack([_descriptor(read_crop_rgb(crops[k]), points[k]) for k in pick])
    return float(np.linalg.norm(d - d.mean(0), axis=1).mean())


@CLIP_CUES.register("landmark_jitter", help="median landmark motion between consecutive frames "
                    "left after head motion, over the eye distance")
def landmark_jitter(crops: list[str], points: list[np.ndarray], frames: int = 0) -> float:
    """Median over consecutive pairs of the mean residual point motion after a similarity fit,
    over the distance between the eyes (points in frame pixels, in frame order)."""
    if len(points) < 2:
        return float("nan")
    out = []
    for a, b in zip(points[:-1], points[1:]):
        m = fit_similarity(b, a)
        moved = b @ m[:, :2].T + m[:, 2]
        iod = float(np.linalg.norm(a[RIGHT_EYE].mean(0) - a[LEFT_EYE].mean(0)))
        out.append(float(np.linalg.norm(moved - a, axis=1).mean()) / max(iod, 1.0))
    return float(np.median(out))


def clip_scores(processed: str | Path, split: str = "test", cues: list[str] | None = None,
                progress: Callable[[int, int], None] | None = None):
    """One row per video of ``split`` with a face and landmarks: uid, dataset, method,
    video_id, label, target and one column per cue (NaN where a video has too few frames)."""
    import pandas as pd

    from dflab.data.datasets import load_index

    processed = Path(processed)
    df = load_index(processed)
    df = df[df["split"] == split] if split != "all" else df
    if "landmarks" in df:
        df = df[df["landmarks"].fillna("").astype(str) != ""]
    cues = cues or CLIP_CUES.list()
    rows = []
    groups = list(df.groupby("uid", sort=True))
    for k, (_, g) in enumerate(groups):
        g = g.sort_values("frame_index")
        crop_pts = crop_landmarks(processed, g)
        keep = [i for i, p in enumerate(crop_pts) if p is not None]
        g = g.iloc[keep]
        crop_pts = [crop_pts[i] for i in keep]
        meta = read_json(processed / Path(g["crop_path"].iloc[0]).parent.parent / "meta.json")
        by_crop = {f["crop_path"]: f["primary"] for f in meta["frames"] if f["primary"]}
        frame_pts = [np.asarray(by_crop[f"{Path(c).parent.name}/{Path(c).name}"]["landmarks68"],
                                float) for c in g["crop_path"]]
        row = {c: g[c].iloc[0] for c in ("uid", "dataset", "method", "compression", "video_id",
                                         "label", "target", "split")}
        for cue in cues:
            pts = crop_pts if cue == "identity_drift" else frame_pts
            row[cue] = CLIP_CUES.get(cue)(g["crop_abspath"].tolist(), pts)
        rows.append(row)
        if progress is not None:
            progress(k + 1, len(groups))
    return pd.DataFrame(rows)
