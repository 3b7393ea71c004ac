"""Metrics shared by the visual and the forensic models (scikit-learn underneath).

``y``: int array of targets (1 = fake); ``p``: float array of fake probabilities.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # imported where used: prediction aggregates frames without pandas
    import pandas as pd

__all__ = ["binary_metrics", "roc_points", "tune_threshold", "aggregate_videos", "PROTOCOLS",
           "apply_protocol", "select_frames", "protocol_args",
           "expected_calibration_error", "grouped_metrics", "evaluate_predictions",
           "bootstrap_auc_ci", "bootstrap_auc_difference", "weighted_auc", "format_auc"]


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


OPERATING_FPRS = (0.01, 0.1)


def operating_points(y: np.ndarray, p: np.ndarray, fprs=OPERATING_FPRS) -> dict[str, dict]:
    """For each target false-positive rate: the highest TPR whose FPR does not exceed it, the
    FPR reached and the threshold (``p >= threshold`` is "fake") that gives it, read off this
    set's ROC curve. Keys ``fpr_0.01`` etc. With few reals an FPR target below 1 / n_real can
    only be met at FPR 0."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y, p)
    out = {}
    for target in fprs:
        k = int(np.flatnonzero(fpr <= target + 1e-12)[-1])  # fpr[0] == 0: always one
        out[f"fpr_{target:g}"] = {"tpr": float(tpr[k]), "fpr": float(fpr[k]),
                                  "threshold": float(min(thr[k], 1.0))}
    return out


def weighted_auc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC of ``p`` for each row of ``weights`` (R, n): the AUC of the sample in which row i
    appears ``weights[r, i]`` times (ties count one half, as in scikit-learn's roc_auc_score).
    The Mann-Whitney sum over the values sorted once, so R bootstrap resamples cost one matrix
    product instead of R sorts."""
    from scipy import sparse

    y = np.asarray(y).astype(bool)
    _, tie = np.unique(np.asarray(p, float), return_inverse=True)
    onehot = sparse.csr_matrix((np.ones(len(y)), (np.arange(len(y)), tie)))  # rows -> tie blocks
    pos = sparse.csr_matrix.dot(onehot.T, (weights * y).T).T  # (R, blocks) positive weight
    neg = sparse.csr_matrix.dot(onehot.T, (weights * ~y).T).T
    below = np.cumsum(neg, axis=1) - neg
    total = pos.sum(1) * neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(1) / total


def bootstrap_auc_ci(y, p, groups=None, n_boot: int = 1000, level: float = 0.95,
                     seed: int = 0) -> list[float]:
    """Percentile interval of the ROC-AUC from a stratified cluster bootstrap.

    Whole groups (videos) are drawn with replacement, reals and fakes separately, so every
    resample has both classes and the frames of one video move together: frames of a video are
    not independent, and resampling them one by one would make the interval too narrow.
    ``groups``: one id per row (default: every row its own group). ``[nan, nan]`` when a class
    has fewer than two groups. scikit-learn and scipy have no cluster bootstrap, so it is written
    here; each resample's AUC is :func:`weighted_auc` (tested equal to scikit-learn's).
    """
    y = np.asarray(y).astype(int)
    p = np.asarray(p, float)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    _, code = np.unique(groups, return_inverse=True)
    group_y = np.zeros(code.max() + 1 if len(code) else 0, int)
    group_y[code] = y
    by_class = [np.flatnonzero(group_y == c) for c in (0, 1)]
    if n_boot <= 0 or min(len(b) for b in by_class) < 2:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    aucs = []
    for start in range(0, n_boot, 200):  # in chunks: (chunk, rows) weights stay small
        reps = min(200, n_boot - start)
        counts = np.zeros((reps, len(group_y)))
        for b in by_class:  # how often each group is drawn, class by class
            counts[:, b] = rng.multinomial(len(b), np.full(len(b), 1 / len(b)), size=reps)
        aucs.append(weighted_auc(y, p, counts[:, code]))
    aucs = np.concatenate(aucs)
    alpha = (1 - level) / 2
    return [float(np.quantile(aucs, alpha)), float(np.quantile(aucs, 1 - alpha))]


def bootstrap_auc_difference(y, p_a, p_b, groups=None, n_boot: int = 1000,
                             level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """AUC(p_a) - AUC(p_b) on the same rows, with the percentile interval of a paired,
    stratified cluster bootstrap (whole groups drawn, reals and fakes apart, both models scored
    on each resample): ``{"difference", "ci", "auc_a", "auc_b"}``. An interval that holds 0
    says this test set cannot tell the two apart. Written here for the reason
    :func:`bootstrap_auc_ci` is."""
    y = np.asarray(y).astype(int)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    _, code = np.unique(groups, return_inverse=True)
    group_y = np.zeros(code.max() + 1 if len(code) else 0, int)
    group_y[code] = y
    by_class = [np.flatnonzero(group_y == c) for c in (0, 1)]
    ones = np.ones((1, len(y)))
    a0, b0 = (float(weighted_auc(y, p, ones)[0]) for p in (p_a, p_b))
    out = {"difference": a0 - b0, "auc_a": a0, "auc_b": b0, "ci": [float("nan")] * 2}
    if n_boot <= 0 or min(len(b) for b in by_class) < 2:
        return out
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, n_boot, 200):
        reps = min(200, n_boot - start)
        counts = np.zeros((reps, len(group_y)))
        for b in by_class:
            counts[:, b] = rng.multinomial(len(b), np.full(len(b), 1 / len(b)), size=reps)
        w = counts[:, code]
        diffs.append(weighted_auc(y, p_a, w) - weighted_auc(y, p_b, w))
    diffs = np.concatenate(diffs)
    alpha = (1 - level) / 2
    out["ci"] = [float(np.quantile(diffs, alpha)), float(np.quantile(diffs, 1 - alpha))]
    return out


def format_auc(m: dict[str, Any]) -> str:
    """'0.976 [0.951, 0.993]' from a metrics dict (the interval only when there is one)."""
    ci = m.get("auc_ci") or [float("nan")] * 2
    if np.isnan(ci[0]):
        return f"{m['auc']:.3f}"
    return f"{m['auc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def binary_metrics(y, p, threshold: float = 0.5, ece_bins: int = 15, groups=None,
                   n_boot: int = 0, seed: int = 0) -> dict[str, Any]:
    """Accuracy, precision, recall, F1 at ``threshold``; ROC-AUC, AP, EER, log loss, ECE; TPR at
    FPR 1% and 10% with their thresholds (:func:`operating_points`).
    Metrics that need both classes are NaN when one is missing. With ``n_boot`` > 0 also
    ``auc_ci``, the 95% interval of :func:`bootstrap_auc_ci` over ``groups`` (the videos), and
    ``n_groups``."""
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
        "operating_points": operating_points(y, p) if both else {},
    }
    if n_boot:
        out["auc_ci"] = bootstrap_auc_ci(y, p, groups, n_boot, seed=seed) if both else [
            float("nan"), float("nan")]
        out["n_groups"] = int(len(np.unique(groups))) if groups is not None else int(len(y))
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


def aggregate_probs(p: np.ndarray, how: str = "mean", margin: float = 0.3) -> float:
    """One video's probability from its frames' ``p``: ``mean``, ``median``, or ``confident``
    (mean over frames with |p - 0.5| > margin, falling back to the mean when no frame is that
    confident; the DFDC winners' style)."""
    p = np.asarray(p, float)
    if how == "median":
        return float(np.median(p))
    if how == "confident":
        sure = p[np.abs(p - 0.5) > margin]
        return float(sure.mean()) if len(sure) else float(p.mean())
    if how != "mean":
        raise ValueError(f"eval.aggregate '{how}' must be mean, median or confident")
    return float(p.mean())


def aggregate_videos(frames: pd.DataFrame, how: str = "mean", margin: float = 0.3) -> pd.DataFrame:
    """Frame probabilities -> one row per video (see :func:`aggregate_probs`), grouped by
    (dataset, method, video_id) so equal ids under different methods never merge."""
    import pandas as pd

    keys = ["dataset", "method", "compression", "video_id"]
    rows = []
    for key, g in frames.groupby(keys, sort=True, dropna=False):
        rows.append({**dict(zip(keys, key)), "uid": g["uid"].iloc[0],
                     "target": int(g["target"].iloc[0]), "label": g["label"].iloc[0],
                     "split": g["split"].iloc[0], "frames": len(g),
                     "prob": aggregate_probs(g["prob"].to_numpy(), how, margin)})
    return pd.DataFrame(rows)


def _concat(parts: list) -> pd.DataFrame:
    import pandas as pd

    return pd.concat(parts)


def grouped_metrics(df: pd.DataFrame, by: str, threshold: float, n_boot: int = 0,
                    seed: int = 0) -> dict[str, dict]:
    """Metrics per manipulation method (each method's fakes against all real videos) or per any
    other column (all rows of that group); intervals bootstrapped over ``df['uid']``."""
    def metrics(part: pd.DataFrame) -> dict:
        return binary_metrics(part["target"], part["prob"], threshold, groups=part["uid"],
                              n_boot=n_boot, seed=seed)

    out = {}
    if by == "method":
        real = df[df["target"] == 0]
        for m in sorted(df.loc[df["target"] == 1, by].unique()):
            out[m] = metrics(_concat([real, df[df[by] == m]]))
    else:
        for g, part in df.groupby(by):
            out[str(g) or "unknown"] = metrics(part)
    return out


#: the evaluation protocols (``eval.protocol``): how frames are taken and a video scored
PROTOCOLS = {
    "lab": "the frames with a face; video score: eval.aggregate of their probabilities",
    "deepfakebench": "the frames with a face; video score: the mean of their probabilities "
                     "(DeepfakeBench's video AUC)",
    "sbi": "per frame the maximum over its faces; video score: the mean over the frames, a "
           "frame without a face counting 0.5 (Self-Blended Images' video AUC)",
}


def select_frames(frames: pd.DataFrame, n: int) -> pd.DataFrame:
    """The rows of ``n`` evenly spaced sampled frames of each video (by frame index; every
    frame when a video has ``n`` or fewer, or ``n`` is 0): frames per video as a protocol
    fixes it, whatever preprocessing sampled."""
    if n <= 0 or frames.empty:
        return frames
    keep = []
    for _, g in frames.groupby("uid", sort=False):
        idx = np.unique(g["frame_index"].to_numpy())
        if len(idx) > n:
            idx = idx[np.round(np.linspace(0, len(idx) - 1, n)).astype(int)]
        keep.append(g[g["frame_index"].isin(idx)])
    return _concat(keep)


def apply_protocol(frames: pd.DataFrame, protocol: str = "lab", frames_per_video: int = 0,
                   faceless: pd.DataFrame | None = None, aggregate: str = "mean",
                   margin: float = 0.3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the frame rows a protocol scores, one row per video with its score) from scored face
    rows ``frames`` (``prob``) and, for ``sbi``, the sampled frames without a face
    (``faceless``: index rows, same columns less ``prob``). See :data:`PROTOCOLS`."""
    import pandas as pd

    if protocol not in PROTOCOLS:
        raise ValueError(f"eval.protocol '{protocol}' must be one of {sorted(PROTOCOLS)}")
    every = frames if faceless is None or faceless.empty or protocol != "sbi" else \
        _concat([frames, faceless.assign(prob=np.nan)])
    every = select_frames(every, frames_per_video)
    if protocol != "sbi":
        scored = every.reset_index(drop=True)
        return scored, aggregate_videos(scored, aggregate if protocol == "lab" else "mean",
                                        margin)
    # one row per frame: the most fake-looking face; a frame with none counts 0.5
    by_frame = every.sort_values("prob", ascending=False, na_position="last").groupby(
        ["uid", "frame_index"], sort=False).head(1)
    scored = by_frame[by_frame["prob"].notna()].reset_index(drop=True)
    videos = aggregate_videos(by_frame.assign(prob=by_frame["prob"].fillna(0.5)), "mean")
    return scored, videos if len(videos) else pd.DataFrame(columns=videos.columns)


def evaluate_predictions(frames: pd.DataFrame, threshold: float, aggregate: str = "mean",
                         margin: float = 0.3, ece_bins: int = 15, n_boot: int = 1000,
                         seed: int = 0, protocol: str = "lab", frames_per_video: int = 0,
                         faceless: pd.DataFrame | None = None) -> dict[str, Any]:
    """Frame- and video-level metrics, per method and per compression, with ROC points, under
    an evaluation ``protocol`` (:func:`apply_protocol`; named in the report). Every AUC has its
    95% bootstrap interval over videos (``n_boot`` resamples; 0: none), and every block says how
    many frames and videos it rests on (``n_frames``, ``n_videos``)."""
    frames, videos = apply_protocol(frames, protocol, frames_per_video, faceless, aggregate,
                                    margin)
    frame = binary_metrics(frames["target"], frames["prob"], threshold, ece_bins,
                           frames["uid"], n_boot, seed)
    video = binary_metrics(videos["target"], videos["prob"], threshold, ece_bins,
                           videos["uid"], n_boot, seed)
    frame.update(n_frames=frame["n"], n_videos=int(frames["uid"].nunique()))
    video.update(n_frames=int(len(frames)), n_videos=video["n"])
    return {
        "threshold": threshold,
        "aggregate": aggregate if protocol == "lab" else "mean",
        "protocol": {"name": protocol, "frames_per_video": frames_per_video or "all sampled",
                     "rule": PROTOCOLS[protocol]},
        "bootstrap": {"resamples": n_boot, "level": 0.95, "unit": "video", "seed": seed},
        "frame": frame,
        "video": video,
        "frame_per_method": grouped_metrics(frames, "method", threshold, n_boot, seed),
        "video_per_method": grouped_metrics(videos, "method", threshold, n_boot, seed),
        "frame_per_compression": grouped_metrics(frames, "compression", threshold),
        "video_per_compression": grouped_metrics(videos, "compression", threshold),
        "roc_frame": roc_points(frames["target"], frames["prob"]),
        "roc_video": roc_points(videos["target"], videos["prob"]),
    }


def protocol_args(cfg: Any, faceless: pd.DataFrame | None = None) -> dict[str, Any]:
    """The keyword arguments of :func:`evaluate_predictions` that an ``EvalConfig`` sets."""
    return {"aggregate": cfg.aggregate, "margin": cfg.confident_margin, "ece_bins": cfg.ece_bins,
            "n_boot": cfg.bootstrap, "protocol": cfg.protocol,
            "frames_per_video": cfg.frames_per_video, "faceless": faceless}


def softmax_fake(logits: np.ndarray) -> np.ndarray:
    """p(fake) from (N, 2) logits, stable: sigmoid(l1 - l0)."""
    d = np.clip(logits[:, 1] - logits[:, 0], -60, 60)
    return 1.0 / (1.0 + np.exp(-d))
