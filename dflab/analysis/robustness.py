"""Robustness curves: how the visual, forensic and fused detectors hold up when the test crops
are degraded the way shared videos are (re-compression, blur, down-scaling, sensor noise).

Each perturbation is applied to the saved face crop (``uint8 BGR``, OpenCV) before the model sees
it; the forensic features are recomputed from the perturbed crop; the fused model gets the two
perturbed scores with the clip's (unchanged) audio statistics. Frame and video AUC per
(perturbation, strength), the frame AUC with its video-level bootstrap interval.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dflab.core.events import Callback, CancelToken, Emitter
from dflab.core.metrics import aggregate_probs, bootstrap_auc_ci
from dflab.serve.bundle import load_bundle
from dflab.serve.fuse import with_audio
from dflab.serve.predict import score_crops

log = logging.getLogger(__name__)

__all__ = ["PERTURBATIONS", "perturb", "robustness_curves", "plot_robustness",
           "format_robustness"]


def _jpeg(img: np.ndarray, quality: float, rng) -> np.ndarray:
    import cv2

    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def _blur(img: np.ndarray, sigma: float, rng) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(img, (0, 0), sigmaX=float(sigma))


def _downscale(img: np.ndarray, factor: float, rng) -> np.ndarray:
    """Down by ``factor`` (area), back up to the crop's size (bilinear): the detail is lost."""
    import cv2

    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, round(w * factor)), max(1, round(h * factor))),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _noise(img: np.ndarray, std: float, rng) -> np.ndarray:
    return np.clip(img + rng.normal(0, std, img.shape), 0, 255).astype(np.uint8)


#: name -> (strengths from mild to harsh, what a strength means, function(img, strength, rng))
PERTURBATIONS: dict[str, tuple[tuple[float, ...], str, Callable]] = {
    "jpeg": ((90, 70, 50, 30), "JPEG quality", _jpeg),
    "blur": ((1.0, 2.0, 3.0), "Gaussian sigma (px)", _blur),
    "downscale": ((0.5, 0.25), "scale factor (down, then back up)", _downscale),
    "noise": ((5.0, 10.0, 20.0), "Gaussian noise std (grey levels)", _noise),
}


def perturb(img_bgr: np.ndarray, name: str, strength: float, seed: int = 0) -> np.ndarray:
    """``uint8 (H, W, 3) BGR`` -> the same, degraded by perturbation ``name`` at ``strength``."""
    if name not in PERTURBATIONS:
        raise ValueError(f"perturbation '{name}' is not one of {', '.join(PERTURBATIONS)}")
    return PERTURBATIONS[name][2](img_bgr, strength, np.random.default_rng(seed))


def _conditions(names: list[str] | None) -> list[tuple[str, float]]:
    names = names or list(PERTURBATIONS)
    bad = [n for n in names if n not in PERTURBATIONS]
    if bad:
        raise ValueError(f"perturbation {bad[0]!r} is not one of {', '.join(PERTURBATIONS)}")
    return [("none", 0.0)] + [(n, s) for n in names for s in PERTURBATIONS[n][0]]


def robustness_curves(model: str | Path, processed: str | Path, split: str = "test",
                      perturbations: list[str] | None = None, frames_per_video: int = 4,
                      aggregate: str = "mean", n_boot: int = 500, seed: int = 0,
                      callbacks: list[Callback] | None = None,
                      cancel: CancelToken | None = None) -> list[dict[str, Any]]:
    """One row per (model, perturbation, strength): frame AUC with its interval, video AUC.

    ``model``: a fuse run (visual, forensic and fused), a train run or a forensic run (see
    :func:`dflab.serve.bundle.load_bundle`); ``frames_per_video``: crops drawn per test video (0: all).
    """
    import cv2
    from sklearn.metrics import roc_auc_score

    from dflab.data.datasets import load_index, select_split

    bundle = load_bundle(model)
    processed = Path(processed)
    part = select_split(load_index(processed), split, frames_per_video, seed)
    if part["target"].nunique() < 2:
        raise ValueError(f"split '{split}' of '{processed}' has one class only; robustness "
                         f"needs real and fake videos")
    audio = None  # the clip's own audio statistics: degrading the crops leaves them as they are
    if bundle.fuser is not None:
        a = with_audio(part[["uid", "frame_index"]], processed)
        audio = {c: a[c].to_numpy() for c in a.columns if c.startswith(("audio_", "has_audio"))}
    crops = [cv2.imread(p, cv2.IMREAD_COLOR) for p in part["crop_abspath"]]
    y, uid = part["target"].to_numpy(int), part["uid"].to_numpy()
    videos = part.groupby("uid")["target"].first()
    em = Emitter("robustness", callbacks, cancel)
    conds = _conditions(perturbations)
    rows: list[dict[str, Any]] = []
    for k, (name, strength) in enumerate(conds):
        em.progress(k, len(conds), "condition", f"{name} {strength:g}")
        em.check()
        bad = crops if name == "none" else [perturb(c, name, strength, seed + i)
                                            for i, c in enumerate(crops)]
        scores = score_crops(bundle, bad, audio)
        scores.pop("logreg", None)  # the forensic run's baseline: not one of the three curves
        for m, p in scores.items():
            vp = [aggregate_probs(p[uid == u], aggregate) for u in videos.index]
            rows.append({"model": m, "perturbation": name, "strength": strength,
                         "frame_auc": float(roc_auc_score(y, p)),
                         "frame_auc_ci": bootstrap_auc_ci(y, p, uid, n_boot, seed=seed),
                         "video_auc": float(roc_auc_score(videos.to_numpy(int), vp)),
                         "frames": int(len(y)), "videos": int(len(videos))})
    em.progress(len(conds), len(conds), "condition", "done")
    return rows


def format_robustness(rows: list[dict[str, Any]]) -> str:
    """A table: one line per (perturbation, strength), frame / video AUC of each model."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    by = {(r["perturbation"], r["strength"], r["model"]): r for r in rows}
    conds = list(dict.fromkeys((r["perturbation"], r["strength"]) for r in rows))
    head = f"{'perturbation':<12} {'strength':>8}  " + "  ".join(
        f"{m + ' frame [95% CI] / video':<34}" for m in models)
    lines = [head]
    for name, s in conds:
        cells = []
        for m in models:
            r = by[(name, s, m)]
            lo, hi = r["frame_auc_ci"]
            ci = "" if np.isnan(lo) else f" [{lo:.3f}, {hi:.3f}]"
            cells.append(f"{r['frame_auc']:.3f}{ci} / {r['video_auc']:.3f}".ljust(34))
        lines.append(f"{name:<12} {'' if name == 'none' else f'{s:g}':>8}  " + "  ".join(cells))
    return "\n".join(lines)


def plot_robustness(rows: list[dict[str, Any]], level: str = "video"):
    """Plotly figure: one panel per perturbation, AUC against strength (harsher to the right),
    a line per model, the clean AUC as the first point."""
    from plotly.subplots import make_subplots

    import plotly.graph_objects as go

    names = [n for n in PERTURBATIONS if any(r["perturbation"] == n for r in rows)]
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig = make_subplots(rows=1, cols=len(names), shared_yaxes=True,
                        subplot_titles=[PERTURBATIONS[n][1] for n in names])
    colours = {"visual": "#1f77b4", "forensic": "#ff7f0e", "fused": "#2ca02c"}
    for j, n in enumerate(names, 1):
        for m in models:
            clean = [r for r in rows if r["model"] == m and r["perturbation"] == "none"]
            pts = clean + [r for r in rows if r["model"] == m and r["perturbation"] == n]
            fig.add_trace(go.Scatter(
                x=["clean"] + [f"{r['strength']:g}" for r in pts[1:]],
                y=[r[f"{level}_auc"] for r in pts], mode="lines+markers", name=m,
                legendgroup=m, showlegend=j == 1, line={"color": colours.get(m)}), 1, j)
    fig.update_yaxes(title_text=f"{level} AUC", row=1, col=1)
    fig.update_layout(title=f"Robustness: {level}-level AUC under degradation", height=360)
    return fig
