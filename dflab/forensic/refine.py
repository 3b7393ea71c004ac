"""Forensic feature-set refinement: the accuracy-efficiency trade-off of the feature families.

Cost: each family's milliseconds per crop, timed on the calls extraction makes
(:func:`dflab.forensic.features.family_costs`); a subset costs the families it needs, since a family
computes all its features in one pass. Accuracy: the cross-validated *video-level* ROC-AUC of a
standardised logistic regression on the train and validation crops (grouped by video, so no video
is on both sides of a fold; the test split is never read). A greedy forward (or backward)
selection over single features gives a path of subsets; with every combination of whole families
they are the candidate points, and the Pareto front is the points no other point beats on both
AUC and milliseconds. The chosen point is the cheapest on the front within ``tolerance`` of the
best AUC; it is saved as a named subset (``<data_root>/feature_sets/<name>.json``) that
``features.subset`` selects for ``dflab features``, ``train-forensic`` and prediction.

The selection loop and the front are written here: scikit-learn's ``SequentialFeatureSelector``
scores frames, not videos, and keeps no path.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dflab.core.events import Callback, CancelToken, Emitter
from dflab.core.files import write_json
from dflab.forensic.features import (FEATURE_FAMILIES, best_ms, extract_features, families_for,
                                     family_costs, family_of, feature_names)

log = logging.getLogger(__name__)

__all__ = ["cv_video_auc", "selection_path", "pareto_front", "refine_features", "save_subset",
           "load_subset", "format_refine", "plot_front", "SUBSET_DIR"]

SUBSET_DIR = "feature_sets"  # under the data root


def cv_video_auc(X: np.ndarray, y: np.ndarray, videos: np.ndarray, folds: int = 5,
                 seed: int = 0) -> float:
    """ROC-AUC of the out-of-fold video scores (mean frame probability) of a standardised
    logistic regression, folds grouped by video and stratified by label."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    cv = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    p = cross_val_predict(model, X, y, groups=videos, cv=cv, method="predict_proba")[:, 1]
    v = pd.DataFrame({"v": videos, "y": y, "p": p}).groupby("v").mean()
    return float(roc_auc_score(v["y"].astype(int), v["p"]))


def _cost(features: list[str], owner: dict[str, str], costs: dict[str, float]) -> float:
    return round(costs.get("_base", 0.0) + sum(costs[f] for f in {owner[n] for n in features}), 3)


def selection_path(X: np.ndarray, y: np.ndarray, videos: np.ndarray, names: list[str],
                   direction: str = "forward", max_steps: int = 12, folds: int = 5,
                   seed: int = 0, check: Callable[[], None] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> list[list[str]]:
    """The subsets a greedy selection visits: forward adds, at each step, the feature that
    raises the cross-validated video AUC most (from none, ``max_steps`` steps); backward drops
    the feature whose loss costs least (from all, ``max_steps`` steps)."""
    if direction not in ("forward", "backward"):
        raise ValueError(f"selection direction '{direction}' must be forward or backward")
    current = [] if direction == "forward" else list(names)
    path = [] if direction == "forward" else [list(current)]
    steps = min(max_steps, len(names) - (0 if direction == "forward" else 1))
    for step in range(steps):
        pool = [n for n in names if n not in current] if direction == "forward" else current
        best, best_auc = None, -1.0
        for cand in pool:
            if check:
                check()
            trial = current + [cand] if direction == "forward" else [n for n in current
                                                                      if n != cand]
            auc = cv_video_auc(X[:, [names.index(n) for n in trial]], y, videos, folds, seed)
            if auc > best_auc + 1e-12:
                best, best_auc = cand, auc
        current = current + [best] if direction == "forward" else [n for n in current
                                                                    if n != best]
        path.append(list(current))
        if progress:
            progress(step + 1, steps)
    return path


def pareto_front(points: list[dict[str, Any]]) -> list[int]:
    """Indices of the points that no other point beats: at most as many ms with a higher AUC,
    or fewer ms with at least the AUC (of equal points, the one with fewest features stays);
    cheapest first."""
    front = []
    for i, p in enumerate(points):
        n = p.get("n", 0)
        if not any((q["ms"] <= p["ms"] and q["cv_auc"] > p["cv_auc"]) or
                   (q["ms"] < p["ms"] and q["cv_auc"] >= p["cv_auc"]) or
                   (q["ms"] == p["ms"] and q["cv_auc"] == p["cv_auc"] and
                    (q.get("n", 0), j) < (n, i)) for j, q in enumerate(points)):
            front.append(i)
    return sorted(front, key=lambda i: (points[i]["ms"], -points[i]["cv_auc"]))


def _measured_ms(images: list[np.ndarray], names: list[str] | None, crop_size: int,
                 repeats: int = 3) -> float:
    """Median ms per crop of :func:`dflab.forensic.features.extract_features` with ``names``."""
    return round(float(np.median([best_ms(extract_features, img, crop_size, names,
                                          repeats=repeats) for img in images])), 3)


def refine_features(processed: str | Path, importance: dict[str, dict[str, float]] | None = None,
                    crop_size: int = 0,
                    direction: str = "forward", max_steps: int = 12, folds: int = 5,
                    tolerance: float = 0.005, timing_crops: int = 30, seed: int = 0,
                    callbacks: list[Callback] | None = None,
                    cancel: CancelToken | None = None) -> dict[str, Any]:
    """The refinement report of a processed folder's features.csv: family costs and importance,
    every candidate subset (features, families, cv_auc, ms), the Pareto front, the chosen point,
    and the measured ms per crop of the full set and of the chosen subset. ``importance``:
    ``{kind: {feature: value}}`` (e.g. permutation and mean |SHAP|), summed per family."""
    # Long on purpose: the measurement, the forward selection and the front share the folds and the
    # costs; the report is built as they run.
    import cv2

    from dflab.forensic.model import load_features

    em = Emitter("refine", callbacks, cancel)
    df, names = load_features(processed)
    fit = df[df["split"].isin(["train", "val"])].reset_index(drop=True)
    if fit["target"].nunique() < 2 or fit["uid"].nunique() < 2 * folds:
        raise ValueError(f"'{processed}' has too few train/val videos ({fit['uid'].nunique()}) "
                         f"for {folds}-fold cross-validation of the feature subsets")
    X, y, videos = fit[names].to_numpy(), fit["target"].to_numpy(int), fit["uid"].to_numpy()
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(df), min(timing_crops, len(df)), replace=False)
    images = [cv2.imread(str(Path(processed) / df["crop_path"].iloc[i]), cv2.IMREAD_COLOR)
              for i in sorted(pick)]
    em.progress(0, 1, "step", "timing the families")
    costs = family_costs(images, crop_size)
    owner = family_of()
    fams = FEATURE_FAMILIES.list()

    candidates: list[list[str]] = []
    for r in range(1, len(fams) + 1):  # every combination of whole families
        for combo in itertools.combinations(fams, r):
            candidates.append([n for n in names if owner[n] in combo])
    candidates += selection_path(X, y, videos, names, direction, max_steps, folds, seed,
                                 em.check, lambda d, n: em.progress(d, n, "step", direction))
    n_combos = 2 ** len(fams) - 1  # the family combinations come first
    points, seen = [], set()
    for k, feats in enumerate(candidates):
        key = tuple(sorted(feats))
        if key in seen:
            continue
        seen.add(key)
        em.check()
        points.append({"features": feats, "n": len(feats),
                       "families": sorted({owner[n] for n in feats}, key=fams.index),
                       "cv_auc": round(cv_video_auc(X[:, [names.index(n) for n in feats]], y,
                                                    videos, folds, seed), 4),
                       "ms": _cost(feats, owner, costs),
                       "kind": "families" if k < n_combos else direction})
    front = pareto_front(points)
    best = max(points[i]["cv_auc"] for i in front)
    chosen = next(i for i in front if points[i]["cv_auc"] >= best - tolerance)
    full = next(i for i, p in enumerate(points) if p["n"] == len(names))
    fam_imp: dict[str, dict[str, float]] = {}
    for kind, values in (importance or {}).items():
        per = fam_imp.setdefault(kind, {})
        for feat, v in values.items():
            if feat in owner:
                per[owner[feat]] = round(per.get(owner[feat], 0.0) + float(v), 4)
    em.progress(1, 1, "step", "done")
    return {
        "processed": str(processed), "rows": {"crops": int(len(fit)),
                                              "videos": int(fit["uid"].nunique())},
        "scored_by": f"{folds}-fold video-grouped CV of a logistic regression on train+val, "
                     f"video AUC (mean frame probability); test never read",
        "family_ms": costs, "family_importance": fam_imp, "direction": direction,
        "tolerance": tolerance, "points": points, "front": front, "chosen": chosen,
        "full": full,
        "measured_ms": {"full": _measured_ms(images, None, crop_size),
                        "chosen": _measured_ms(images, points[chosen]["features"], crop_size)},
        "timing_crops": len(images), "all_features": feature_names(),
    }


def save_subset(path: str | Path, name: str, report: dict[str, Any], point: int) -> Path:
    """Write the named subset (a point of the report) as JSON."""
    p = report["points"][point]
    return write_json(Path(path), {"name": name, "features": p["features"],
                                   "families": p["families"], "cv_auc": p["cv_auc"],
                                   "ms": p["ms"], "processed": report["processed"],
                                   "created": time.time()})


def load_subset(value: str, data_root: str | Path) -> list[str] | None:
    """The features of ``features.subset``: a name under ``<data_root>/feature_sets`` or a JSON
    file; "" -> None (every feature)."""
    if not value:
        return None
    path = Path(value)
    if path.suffix != ".json":
        path = Path(data_root) / SUBSET_DIR / f"{value}.json"
    if not path.is_file():
        known = sorted(p.stem for p in (Path(data_root) / SUBSET_DIR).glob("*.json"))
        raise FileNotFoundError(f"features.subset '{value}': no file '{path}'; make one with "
                                f"`dflab forensic refine --run RUN --name {value}`"
                                + (f" (saved subsets: {', '.join(known)})" if known else ""))
    names = json.loads(path.read_text())["features"]

    families_for(names)  # every name is known
    return list(names)


def format_refine(report: dict[str, Any]) -> str:
    """The family costs and the Pareto front as text, the chosen point marked."""
    fams = [k for k in report["family_ms"] if k != "_base"]
    kinds = list(report["family_importance"])
    lines = ["family       ms/crop" + "".join(f"  {k:>14}" for k in kinds)]
    for f in fams:
        lines.append(f"{f:<12} {report['family_ms'][f]:>7.2f}" + "".join(
            f"  {report['family_importance'][k].get(f, 0.0):>14.4f}" for k in kinds))
    if kinds:
        lines.append("(importance summed over each family's features, on the validation "
                     "split: permutation = drop in ROC-AUC; shap = mean |SHAP| of p(fake))")
    lines += ["", f"Pareto front ({report['scored_by']}):",
              "      n  families            cv video AUC  ms/crop (sum)"]
    for i in report["front"]:
        p = report["points"][i]
        mark = "->" if i == report["chosen"] else "  "
        lines.append(f"{mark} {i:>3} {p['n']:>2}  {','.join(p['families']):<20} "
                     f"{p['cv_auc']:.4f}        {p['ms']:.2f}")
    full, ch = report["points"][report["full"]], report["points"][report["chosen"]]
    m = report["measured_ms"]
    lines += ["", f"full set: {full['n']} features, cv AUC {full['cv_auc']:.4f}, "
              f"{m['full']:.2f} ms/crop measured",
              f"chosen:   {ch['n']} features, cv AUC {ch['cv_auc']:.4f}, {m['chosen']:.2f} "
              f"ms/crop measured ({report['timing_crops']} crops, median)"]
    return "\n".join(lines)


def plot_front(report: dict[str, Any]):
    """Plotly scatter: every candidate (AUC against ms per crop), the front as a line, the
    chosen point marked."""
    import plotly.graph_objects as go

    pts = report["points"]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[p["ms"] for p in pts], y=[p["cv_auc"] for p in pts],
                             mode="markers", name="candidates", marker={"color": "#bbbbbb"},
                             text=[f"#{i}: {p['n']} features ({','.join(p['families'])})"
                                   for i, p in enumerate(pts)]))
    front = report["front"]
    fig.add_trace(go.Scatter(x=[pts[i]["ms"] for i in front],
                             y=[pts[i]["cv_auc"] for i in front], mode="lines+markers",
                             name="Pareto front", text=[f"#{i}" for i in front]))
    ch = pts[report["chosen"]]
    fig.add_trace(go.Scatter(x=[ch["ms"]], y=[ch["cv_auc"]], mode="markers", name="chosen",
                             marker={"size": 14, "symbol": "star", "color": "#d62728"}))
    fig.update_layout(title="Forensic features: cross-validated video AUC against cost",
                      xaxis_title="ms per crop", yaxis_title="CV video AUC", height=380)
    return fig
