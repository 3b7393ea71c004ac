"""The fused verdict: a calibrated stacker over the visual model, the forensic MLP and, where a
clip has audio, its audio statistics.

A logistic regression (scikit-learn) is fitted on the *validation* split's per-frame predictions
of the two trained models: the logit of each model's fake probability, and the frame's audio RMS,
spectral centroid, bandwidth and zero-crossing rate with a has-audio flag (zeros for clips without
audio). A logistic regression on logits is Platt scaling generalised to several scores, so its
output is a calibrated probability. Its threshold is tuned on validation too; the test split is
only scored. With a sync run (``dflab.av.sync``), clips that have lip-sync windows get a second
stacker that also reads their sync scores (see :func:`fuse_runs`). The fuse run folder holds
``fuser.json`` (the coefficients: no pickle), and
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

from dflab.av.sync import sync_table
from dflab.core.config import LabConfig
from dflab.core.environment import scoring_workers
from dflab.core.events import Callback, CancelToken, Emitter
from dflab.core.files import read_json, write_json
from dflab.core.metrics import evaluate_predictions, protocol_args, tune_threshold
from dflab.core.runs import create_run_dir, write_report

log = logging.getLogger(__name__)

__all__ = ["Fuser", "fuse_record", "fuse_runs", "frame_scores", "with_audio", "sync_columns", "predict_fused",
           "FUSE_INPUTS", "SYNC_INPUTS", "MODELS"]

AUDIO_INPUTS = ["audio_rms", "audio_centroid", "audio_bandwidth", "audio_zcr"]
FUSE_INPUTS = ["visual_logit", "forensic_logit", "has_audio", *AUDIO_INPUTS]
#: the sync detectors' clip-level scores (dflab.av.sync; higher: more out of sync): the learned
#: model's and the training-free detector's; a second stacker over FUSE_INPUTS + these serves
#: the clips that have sync windows
SYNC_INPUTS = ["sync_clip", "sync_free"]
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
    sync: bool = False  # also over SYNC_INPUTS

    def inputs(self, frames: pd.DataFrame | dict[str, np.ndarray]) -> np.ndarray:
        return self.columns(frames, self.sync)

    @staticmethod
    def columns(frames: pd.DataFrame | dict[str, np.ndarray], sync: bool = False) -> np.ndarray:
        """(n, len(FUSE_INPUTS) [+ len(SYNC_INPUTS)]) float array from ``prob_visual``,
        ``prob_forensic``, the audio columns (missing audio: zeros and has_audio 0) and, with
        ``sync``, the sync scores, of a frame table or a dict of columns."""
        cols = {"visual_logit": _logit(frames["prob_visual"]),
                "forensic_logit": _logit(frames["prob_forensic"])}
        n = len(cols["visual_logit"])
        has = np.asarray(frames["has_audio"], bool) if "has_audio" in frames else np.zeros(
            n, bool)
        cols["has_audio"] = has.astype(float)
        for c in AUDIO_INPUTS:
            v = np.asarray(frames[c], float) if c in frames else np.zeros(n)
            cols[c] = np.where(has, np.nan_to_num(v), 0.0)
        names = FUSE_INPUTS + (SYNC_INPUTS if sync else [])
        for c in SYNC_INPUTS if sync else []:
            cols[c] = np.nan_to_num(np.asarray(frames[c], float))
        return np.column_stack([cols[c] for c in names])

    @classmethod
    def fit(cls, frames: pd.DataFrame, seed: int = 0, sync: bool = False) -> "Fuser":
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        X, y = cls.columns(frames, sync), frames["target"].to_numpy(int)
        if len(np.unique(y)) < 2:
            raise ValueError("the validation split has one class only; the fused model needs "
                             "real and fake validation videos"
                             + (" with sync windows" if sync else ""))
        scaler = StandardScaler().fit(X)
        lr = LogisticRegression(C=1.0, max_iter=1000, random_state=seed).fit(
            scaler.transform(X), y)
        scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
        fitted = cls(tuple(scaler.mean_.tolist()), tuple(scale.tolist()),
                     tuple(lr.coef_[0].tolist()), float(lr.intercept_[0]), sync=sync)
        return cls(**{**fitted.to_dict(), "threshold": tune_threshold(y, fitted.predict(frames))})

    def predict(self, frames: pd.DataFrame) -> np.ndarray:
        z = (self.inputs(frames) - np.array(self.mean)) / np.array(self.scale)
        return 1 / (1 + np.exp(-(z @ np.array(self.coef) + self.intercept)))

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "scale": list(self.scale), "coef": list(self.coef),
                "intercept": self.intercept, "threshold": self.threshold, "sync": self.sync}

    @classmethod
    def load(cls, run: str | Path) -> "Fuser":
        """The stacker of a fuse run folder (:func:`fuse_record` holds the rest of it)."""
        return cls.from_dict(fuse_record(run)["fuser"])

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Fuser":
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


def fuse_record(run: str | Path) -> dict[str, Any]:
    """A fuse run's ``fuser.json``: the stacker (``fuser``), the runs it stacks
    (``visual_run``, ``forensic_run``, ``sync_run``), and with a sync run the second stacker
    (``fuser_sync``, read with :meth:`Fuser.from_dict`)."""
    path = Path(run) / "fuser.json"
    if not path.is_file():
        raise FileNotFoundError(f"'{run}' is not a fuse run (no fuser.json); make one with "
                                f"`dflab fuse --run VISUAL_RUN --forensic FORENSIC_RUN`")
    d = read_json(path)
    if d.get("inputs") != FUSE_INPUTS:
        raise ValueError(f"'{path}' was fitted on inputs {d.get('inputs')}, this dflab uses "
                         f"{FUSE_INPUTS}; re-run `dflab fuse`")
    if d.get("fuser_sync") and d.get("inputs_sync") != FUSE_INPUTS + SYNC_INPUTS:
        raise ValueError(f"'{path}' was fitted on sync inputs {d.get('inputs_sync')}, this "
                         f"dflab uses {FUSE_INPUTS + SYNC_INPUTS}; re-run `dflab fuse`")
    return d


def sync_columns(frames: pd.DataFrame, processed: str | Path, sync_run: str | Path
                 ) -> pd.DataFrame:
    """``frames`` (``uid``, ``frame_index``) with the sync detectors' clip-level columns:
    ``has_sync`` (the clip has sync windows), ``sync_clip`` (the learned model's sync score)
    and ``sync_free`` (the training-free detector's)."""
    uids = sorted(frames["uid"].unique())
    clips, _ = sync_table(processed, sync_run, "all", uids)
    out = frames.drop(columns=[c for c in ("has_sync", *SYNC_INPUTS) if c in frames])
    if clips.empty:
        return out.assign(has_sync=False, sync_clip=0.0, sync_free=0.0)
    out = out.merge(clips[["uid", "learned_sync_score", "baseline_sync_score"]].rename(
        columns={"learned_sync_score": "sync_clip", "baseline_sync_score": "sync_free"}),
        on="uid", how="left")
    out["has_sync"] = out["sync_clip"].notna()
    return out.fillna({"sync_clip": 0.0, "sync_free": 0.0})


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

    from dflab.data.datasets import load_index, select_split
    from dflab.visual.evaluate import predict_split
    from dflab.forensic.model import load_features, load_forensic
    from dflab.visual.train import load_model

    processed = Path(processed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    trained = load_model(Path(visual_run) / "checkpoints" / checkpoint, device)
    model, dc = trained.net, trained.data_config
    vis = predict_split(model, dc, select_split(load_index(processed), split), 64,
                        scoring_workers(device), device)
    vis = vis.rename(columns={"prob": "prob_visual"})
    mlp = load_forensic(forensic_run)
    names = list(mlp.feature_names_in_)
    feats, _ = load_features(processed, names)
    feats = feats[feats["split"] == split]
    fr = feats[KEYS].assign(prob_forensic=mlp.fake_prob(feats[names].to_numpy()))
    out = vis.merge(fr, on=KEYS, how="left", validate="one_to_one")
    if out["prob_forensic"].isna().any():
        missing = out.loc[out["prob_forensic"].isna(), "uid"].unique()[:3]
        raise ValueError(f"{int(out['prob_forensic'].isna().sum())} crops of '{processed}' have "
                         f"no forensic features (e.g. {list(missing)}); re-run `dflab features`")
    return with_audio(out, processed)


def predict_fused(fuser: Fuser, fuser_sync: Fuser | None, frames: pd.DataFrame) -> np.ndarray:
    """p(fake) per frame: the sync stacker where the clip has sync windows, else the visual +
    forensic one."""
    p = fuser.predict(frames)
    if fuser_sync is not None and "has_sync" in frames and frames["has_sync"].any():
        has = frames["has_sync"].to_numpy(bool)
        p = np.where(has, fuser_sync.predict(frames), p)
    return p


def _sync_platt(val: pd.DataFrame, seed: int):
    """The sync model alone as a probability: a logistic fit of its clip score on the
    validation frames that have one."""
    from sklearn.linear_model import LogisticRegression

    v = val[val["has_sync"]]
    if v["target"].nunique() < 2:
        return None
    return LogisticRegression(max_iter=1000, random_state=seed).fit(v[["sync_clip"]],
                                                                     v["target"])


def fuse_runs(cfg: LabConfig, visual_run: str | Path, forensic_run: str | Path,
              processed: str | Path, runs_root: str | Path, name: str = "",
              checkpoint: str = "best.pt", callbacks: list[Callback] | None = None,
              cancel: CancelToken | None = None, sync_run: str | Path = "") -> Path:
    """Fit the stacker on the validation split, evaluate visual, forensic and fused on the test
    split (frame and video level, per method, with bootstrap intervals); returns the run folder
    with ``fuser.json``, ``eval_test.json`` and ``predictions_test.csv``.

    With ``sync_run`` (a ``dflab sync train`` run), clips that have sync windows get a second
    stacker with the sync scores as inputs (fitted on the validation clips that have them), the
    others keep the visual + forensic one; the report adds the sync detector alone (model
    ``sync``, on the clips that have windows) and says how many videos each stacker scored."""
    # Long on purpose: fit on val, score test, write the run: one pass over the same frame table,
    # with and without the sync stacker.
    from dflab.data.datasets import faceless_frames

    em = Emitter("fuse", callbacks, cancel)
    em.progress(0, 3, "step", "validation scores")
    val = frame_scores(visual_run, forensic_run, processed, "val", checkpoint)
    em.check()
    em.progress(1, 3, "step", "test scores")
    test = frame_scores(visual_run, forensic_run, processed, "test", checkpoint)
    em.check()
    fuser_sync = platt = None
    if sync_run:
        val, test = (sync_columns(d, processed, sync_run) for d in (val, test))
        if val["has_sync"].any():
            fuser_sync = Fuser.fit(val[val["has_sync"]], cfg.env.seed, sync=True)
            platt = _sync_platt(val, cfg.env.seed)
    fuser = Fuser.fit(val, cfg.env.seed)
    val["prob_fused"] = predict_fused(fuser, fuser_sync, val)
    test["prob_fused"] = predict_fused(fuser, fuser_sync, test)
    fused_threshold = tune_threshold(val["target"], val["prob_fused"]) if fuser_sync else \
        fuser.threshold
    models = list(MODELS)
    if platt is not None:
        for d in (val, test):
            d["prob_sync"] = np.where(d["has_sync"], platt.predict_proba(d[["sync_clip"]])[:, 1],
                                      np.nan)
        models.append("sync")
    reports = {}
    faceless = faceless_frames(processed, "test")
    for m in models:
        v, t = (val, test) if m != "sync" else (val[val["has_sync"]], test[test["has_sync"]])
        if t.empty:
            continue
        thr = fused_threshold if m == "fused" else tune_threshold(v["target"], v[f"prob_{m}"])
        reports[m] = evaluate_predictions(t.assign(prob=t[f"prob_{m}"]), thr, seed=cfg.env.seed,
                                          **protocol_args(cfg.eval, faceless))
        reports[m].update(split="test", model=m, threshold_source="tuned on val")
    if sync_run:
        n_sync = int(test.loc[test["has_sync"], "uid"].nunique()) if fuser_sync else 0
        reports["fused"]["stackers"] = {
            "visual + forensic + sync": n_sync,
            "visual + forensic": int(test["uid"].nunique()) - n_sync}
    run = create_run_dir(runs_root, "fuse", cfg, name or time.strftime("%Y%m%d-%H%M%S"),
                         processed=processed)
    extra: dict[str, Any] = {}
    if sync_run:
        extra = {"sync_run": str(Path(sync_run)), "inputs_sync": FUSE_INPUTS + SYNC_INPUTS,
                 "fuser_sync": fuser_sync.to_dict() if fuser_sync else None,
                 "fused_threshold": fused_threshold}
    write_json(run / "fuser.json", {
        "inputs": FUSE_INPUTS, "fuser": fuser.to_dict(), "visual_run": str(Path(visual_run)),
        "forensic_run": str(Path(forensic_run)), "processed": str(Path(processed)),
        "checkpoint": checkpoint, "fitted_on": {"split": "val", "frames": int(len(val)),
                                                "videos": int(val["uid"].nunique())}, **extra})
    write_report(run, "test", reports)
    cols = ["uid", "dataset", "method", "video_id", "frame_index", "label", "target",
            "prob_visual", "prob_forensic", "prob_fused", "has_audio", "crop_path"]
    if sync_run:
        cols += ["has_sync", *SYNC_INPUTS] + (["prob_sync"] if "prob_sync" in test else [])
    test[cols].to_csv(run / "predictions_test.csv", index=False)
    em.progress(3, 3, "step", "done")
    em.result(run=str(run), **{f"{m}_video_auc": reports[m]["video"]["auc"] for m in reports})
    return run
