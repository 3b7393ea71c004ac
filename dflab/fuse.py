"""The fused verdict: a calibrated stacker over the visual model, the forensic MLP and, where a
clip has audio, its audio statistics.

A logistic regression (scikit-learn) is fitted on the *validation* split's per-frame predictions
of the two trained models: the logit of each model's fake probability, and the frame's audio RMS,
spectral centroid, bandwidth and zero-crossing rate with a has-audio flag (zeros for clips without
audio). A logistic regression on logits is Platt scaling generalised to several scores, so its
output is a calibrated probability. Its threshold is tuned on validation too; the test split is
only scored. The fuse run folder holds ``fuser.json`` (the coefficients: no pickle), and
``eval_test.json`` with the visual, forensic and fused reports in one schema, side by side.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas is imported where it is used: prediction loads the fuser without it
    import pandas as pd

from .config import LabConfig
from .events import Callback, CancelToken, Emitter
from .runs import create_run_dir, read_json, write_json, write_report

log = logging.getLogger(__name__)

__all__ = ["Fuser", "fuse_runs", "frame_scores", "with_audio", "FUSE_INPUTS", "MODELS"]

AUDIO_INPUTS = ["audio_rms", "audio_centroid", "audio_bandwidth", "audio_zcr"]
FUSE_INPUTS = ["visual_logit", "forensic_logit", "has_audio", *AUDIO_INPUTS]
MODELS = ["visual", "forensic", "fused"]
KEYS = ["uid", "frame_index"]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class Fuser:
    """The fitted stacker: ``p(fake) = sigmoid(((x - mean) / scale) . coef + intercept)`` over
    the columns :data:`FUSE_INPUTS` of a frame table."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float = 0.5

    @staticmethod
    def inputs(frames: pd.DataFrame | dict[str, np.ndarray]) -> np.ndarray:
        """(n, len(FUSE_INPUTS)) float array from ``prob_visual``, ``prob_forensic`` and the
        audio columns (missing audio: zeros and has_audio 0) of a frame table or a dict of
        columns."""
        cols = {"visual_logit": _logit(frames["prob_visual"]),
                "forensic_logit": _logit(frames["prob_forensic"])}
        n = len(cols["visual_logit"])
        has = np.asarray(frames["has_audio"], bool) if "has_audio" in frames else np.zeros(
            n, bool)
        cols["has_audio"] = has.astype(float)
        for c in AUDIO_INPUTS:
            v = np.asarray(frames[c], float) if c in frames else np.zeros(n)
            cols[c] = np.where(has, np.nan_to_num(v), 0.0)
        return np.column_stack([cols[c] for c in FUSE_INPUTS])

    @classmethod
    def fit(cls, frames: pd.DataFrame, seed: int = 0) -> "Fuser":
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        from .metrics import tune_threshold

        X, y = cls.inputs(frames), frames["target"].to_numpy(int)
        if len(np.unique(y)) < 2:
            raise ValueError("the validation split has one class only; the fused model needs "
                             "real and fake validation videos")
        scaler = StandardScaler().fit(X)
        lr = LogisticRegression(C=1.0, max_iter=1000, random_state=seed).fit(
            scaler.transform(X), y)
        scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
        fitted = cls(tuple(scaler.mean_.tolist()), tuple(scale.tolist()),
                     tuple(lr.coef_[0].tolist()), float(lr.intercept_[0]))
        return cls(**{**fitted.to_dict(), "threshold": tune_threshold(y, fitted.predict(frames))})

    def predict(self, frames: pd.DataFrame) -> np.ndarray:
        z = (self.inputs(frames) - np.array(self.mean)) / np.array(self.scale)
        return 1 / (1 + np.exp(-(z @ np.array(self.coef) + self.intercept)))

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "scale": list(self.scale), "coef": list(self.coef),
                "intercept": self.intercept, "threshold": self.threshold}

    @classmethod
    def load(cls, run: str | Path) -> tuple["Fuser", dict[str, Any]]:
        """(fuser, the whole fuser.json) of a fuse run folder."""
        path = Path(run) / "fuser.json"
        if not path.is_file():
            raise FileNotFoundError(f"'{run}' is not a fuse run (no fuser.json); make one with "
                                    f"`dflab fuse --run VISUAL_RUN --forensic FORENSIC_RUN`")
        d = read_json(path)
        if d.get("inputs") != FUSE_INPUTS:
            raise ValueError(f"'{path}' was fitted on inputs {d.get('inputs')}, this dflab uses "
                             f"{FUSE_INPUTS}; re-run `dflab fuse`")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v)
                      for k, v in d["fuser"].items()}), d


def _audio_table(processed: Path, uids: list[str]) -> pd.DataFrame:
    """Per-frame audio statistics from each video's ``audio.npz`` (row k = k-th sampled frame)."""
    import pandas as pd

    rows = []
    for uid in uids:
        path = processed / "videos" / uid / "audio.npz"  # preprocess.video_dir
        if not path.exists():
            continue
        a = np.load(path)
        valid = a["valid"] if "valid" in a else np.ones(len(a["frame_index"]), bool)
        rows.append(pd.DataFrame({
            "uid": uid, "frame_index": a["frame_index"].astype(int), "has_audio": valid,
            "audio_rms": a["rms"], "audio_centroid": a["centroid"],
            "audio_bandwidth": a["bandwidth"], "audio_zcr": a["zcr"]}))
    cols = KEYS + ["has_audio", *AUDIO_INPUTS]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=cols)


def with_audio(frames: pd.DataFrame, processed: str | Path) -> pd.DataFrame:
    """``frames`` (``uid``, ``frame_index``) with each frame's audio columns from its video's
    ``audio.npz``: ``has_audio`` False and the statistics NaN where there is none."""
    out = frames.merge(_audio_table(Path(processed), sorted(frames["uid"].unique())), on=KEYS,
                       how="left")
    out["has_audio"] = out["has_audio"].astype("boolean").fillna(False).astype(bool)
    return out


def frame_scores(visual_run: str | Path, forensic_run: str | Path, processed: str | Path,
                 split: str, checkpoint: str = "best.pt") -> pd.DataFrame:
    """Every face crop of ``split`` with ``prob_visual``, ``prob_forensic`` and the audio
    columns (one row per crop; a crop missing from the forensic features is an error)."""
    import torch

    from .datasets import load_index, select_split
    from .environment import scoring_workers
    from .evaluate import predict_split
    from .forensic import load_features, load_forensic
    from .train import load_model

    processed = Path(processed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, dc, _ = load_model(Path(visual_run) / "checkpoints" / checkpoint, device)
    vis = predict_split(model, dc, select_split(load_index(processed), split), 64,
                        scoring_workers(device), device)
    vis = vis.rename(columns={"prob": "prob_visual"})
    mlp, names, _ = load_forensic(forensic_run)
    feats, _ = load_features(processed, names)
    feats = feats[feats["split"] == split]
    fr = feats[KEYS].assign(prob_forensic=mlp.fake_prob(feats[names].to_numpy()))
    out = vis.merge(fr, on=KEYS, how="left", validate="one_to_one")
    if out["prob_forensic"].isna().any():
        missing = out.loc[out["prob_forensic"].isna(), "uid"].unique()[:3]
        raise ValueError(f"{int(out['prob_forensic'].isna().sum())} crops of '{processed}' have "
                         f"no forensic features (e.g. {list(missing)}); re-run `dflab features`")
    return with_audio(out, processed)


def fuse_runs(cfg: LabConfig, visual_run: str | Path, forensic_run: str | Path,
              processed: str | Path, runs_root: str | Path, name: str = "",
              checkpoint: str = "best.pt", callbacks: list[Callback] | None = None,
              cancel: CancelToken | None = None) -> Path:
    """Fit the stacker on the validation split, evaluate visual, forensic and fused on the test
    split (frame and video level, per method, with bootstrap intervals); returns the run folder
    with ``fuser.json``, ``eval_test.json`` and ``predictions_test.csv``."""
    from .metrics import evaluate_predictions, tune_threshold

    em = Emitter("fuse", callbacks, cancel)
    em.progress(0, 3, "step", "validation scores")
    val = frame_scores(visual_run, forensic_run, processed, "val", checkpoint)
    em.check()
    em.progress(1, 3, "step", "test scores")
    test = frame_scores(visual_run, forensic_run, processed, "test", checkpoint)
    em.check()
    fuser = Fuser.fit(val, cfg.env.seed)
    val["prob_fused"], test["prob_fused"] = fuser.predict(val), fuser.predict(test)
    reports = {}
    for m in MODELS:
        thr = fuser.threshold if m == "fused" else tune_threshold(val["target"], val[f"prob_{m}"])
        reports[m] = evaluate_predictions(test.assign(prob=test[f"prob_{m}"]), thr,
                                          cfg.eval.aggregate, cfg.eval.confident_margin,
                                          cfg.eval.ece_bins, cfg.eval.bootstrap, cfg.env.seed)
        reports[m].update(split="test", model=m, threshold_source="tuned on val")
    run = create_run_dir(runs_root, "fuse", cfg, name or time.strftime("%Y%m%d-%H%M%S"),
                         processed=processed)
    write_json(run / "fuser.json", {
        "inputs": FUSE_INPUTS, "fuser": fuser.to_dict(), "visual_run": str(Path(visual_run)),
        "forensic_run": str(Path(forensic_run)), "processed": str(Path(processed)),
        "checkpoint": checkpoint, "fitted_on": {"split": "val", "frames": int(len(val)),
                                                "videos": int(val["uid"].nunique())}})
    write_report(run, "test", reports)
    cols = ["uid", "dataset", "method", "video_id", "frame_index", "label", "target",
            "prob_visual", "prob_forensic", "prob_fused", "has_audio", "crop_path"]
    test[cols].to_csv(run / "predictions_test.csv", index=False)
    em.progress(3, 3, "step", "done")
    em.result(run=str(run), **{f"{m}_video_auc": reports[m]["video"]["auc"] for m in MODELS})
    return run
