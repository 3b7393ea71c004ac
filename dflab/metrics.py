"""Metrics shared by the visual and the forensic models (scikit-learn underneath).

``y``: int array of targets (1 = fake); ``p``: float array of fake probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["binary_metrics", "roc_points", "tune_threshold", "aggregate_videos",
           "expected_calibration_error", "grouped_metrics", "evaluate_predictions"]


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """ECE over equal-width confidence bins of the fake probability. scikit-learn has the
    reliability curve (calibration_curve) but not the weighted gap, so the sum is written here."""
    y, p = np.asarray(y), np.asarray(p, float)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(y[sel].mean() - p[sel].mean())
    return float(ece)


def _eer(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    fnr = 1 - tpr
    k = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[k] + fnr[k]) / 2)


def binary_metrics(y, p, threshold: float = 0.5, ece_bins: int = 15) -> dict[str, Any]:
    """Accuracy, precision, recall, F1 at ``threshold``; ROC-AUC, AP, EER, log loss, ECE.
    Metrics that need both classes are NaN when one is missing."""
    from sklearn import metrics as M

    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, float), 1e-7, 1 - 1e-7)
    pred = (p >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    out = {
        "n": int(len(y)), "n_fake": int(y.sum()), "n_real": int((1 - y).sum()),
        "threshold": float(threshold),
        "accuracy": float(M.accuracy_score(y, pred)) if len(y) else float("nan"),
        "balanced_accuracy": float(M.balanced_accuracy_score(y, pred)) if both else float("nan"),
        "precision": float(M.precision_score(y, pred, zero_division=0)),
        "recall": float(M.recall_score(y, pred, zero_division=0)),
        "f1": float(M.f1_score(y, pred, zero_division=0)),
        "auc": float(M.roc_auc_score(y, p)) if both else float("nan"),
        "ap": float(M.average_precision_score(y, p)) if both else float("nan"),
        "eer": _eer(y, p) if both else float("nan"),
        "log_loss": float(M.log_loss(y, p, labels=[0, 1])) if len(y) else float("nan"),
        "ece": expected_calibration_error(y, p, ece_bins) if len(y) else float("nan"),
    }
    return out


def roc_points(y, p, max_points: int = 200) -> dict[str, list[float]]:
    from sklearn.metrics import roc_curve

    if len(np.unique(y)) < 2:
        return {"fpr": [], "tpr": []}
    fpr, tpr, _ = roc_curve(np.asarray(y).astype(int), np.asarray(p, float))
    if len(fpr) > max_points:
        k = np.linspace(0, len(fpr) - 1, max_points).astype(int)
        fpr, tpr = fpr[k], tpr[k]
    return {"fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr]}


def tune_threshold(y, p) -> float:
    """The threshold that maximises balanced accuracy (Youden's J) — tune on validation only."""
    from sklearn.metrics import roc_curve

    y = np.asarray(y).astype(int)
    if len(np.unique(y)) < 2:
        return 0.5
    fpr, tpr, thr = roc_curve(y, np.asarray(p, float))
    k = int(np.argmax(tpr - fpr))
    return float(np.clip(thr[k], 1e-6, 1 - 1e-6))


def aggregate_videos(frames: pd.DataFrame, how: str = "mean", margin: float = 0.3) -> pd.DataFrame:
    """Frame probabilities -> one row per video, grouped by (dataset, method, video_id) so equal
    ids under different methods never merge.

    ``how``: ``mean``, ``median``, or ``confident`` (mean over frames with |p - 0.5| > margin,
    falling back to the mean when no frame is that confident; the DFDC winners' style).
    """
    keys = ["dataset", "method", "compression", "video_id"]

    def agg(g: pd.DataFrame) -> float:
        p = g["prob"].to_numpy()
        if how == "median":
            return float(np.median(p))
        if how == "confident":
            sure = p[np.abs(p - 0.5) > margin]
            return float(sure.mean()) if len(sure) else float(p.mean())
        if how != "mean":
            raise ValueError(f"eval.aggregate '{how}' must be mean, median or confident")
        return float(p.mean())

    rows = []
    for key, g in frames.groupby(keys, sort=True, dropna=False):
        rows.append({**dict(zip(keys, key)), "uid": g["uid"].iloc[0],
                     "target": int(g["target"].iloc[0]), "label": g["label"].iloc[0],
                     "split": g["split"].iloc[0], "frames": len(g), "prob": agg(g)})
    return pd.DataFrame(rows)


def grouped_metrics(df: pd.DataFrame, by: str, threshold: float) -> dict[str, dict]:
    """Metrics per manipulation method (each method's fakes against all real videos) or per any
    other column (all rows of that group)."""
    out = {}
    if by == "method":
        real = df[df["target"] == 0]
        for m in sorted(df.loc[df["target"] == 1, by].unique()):
            part = pd.concat([real, df[df[by] == m]])
            out[m] = binary_metrics(part["target"], part["prob"], threshold)
    else:
        for g, part in df.groupby(by):
            out[str(g) or "unknown"] = binary_metrics(part["target"], part["prob"], threshold)
    return out


def evaluate_predictions(frames: pd.DataFrame, threshold: float, aggregate: str = "mean",
                         margin: float = 0.3, ece_bins: int = 15) -> dict[str, Any]:
    """Frame- and video-level metrics, per method and per compression, with ROC points."""
    videos = aggregate_videos(frames, aggregate, margin)
    return {
        "threshold": threshold,
        "aggregate": aggregate,
        "frame": binary_metrics(frames["target"], frames["prob"], threshold, ece_bins),
        "video": binary_metrics(videos["target"], videos["prob"], threshold, ece_bins),
        "frame_per_method": grouped_metrics(frames, "method", threshold),
        "video_per_method": grouped_metrics(videos, "method", threshold),
        "frame_per_compression": grouped_metrics(frames, "compression", threshold),
        "video_per_compression": grouped_metrics(videos, "compression", threshold),
        "roc_frame": roc_points(frames["target"], frames["prob"]),
        "roc_video": roc_points(videos["target"], videos["prob"]),
    }
