"""Evaluation of a trained run: the threshold is tuned on validation, then frame- and video-level
metrics on the chosen split, per manipulation method and compression, with calibration, and a
per-frame prediction table for the misclassified-frames gallery."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from dflab.core.config import EvalConfig
from dflab.core.environment import scoring_workers
from dflab.core.events import Callback, CancelToken, Emitter
from dflab.core.metrics import evaluate_predictions, protocol_args, tune_threshold
from dflab.core.runs import write_report

log = logging.getLogger(__name__)

__all__ = ["evaluate_run", "predict_split"]


def predict_split(model, data_cfg: dict, df: pd.DataFrame, batch: int = 64, workers: int = 0,
                  device: str | torch.device = "cpu") -> pd.DataFrame:
    """``df`` (index rows) with a ``prob`` column: the model's fake probability per crop."""
    from torch.utils.data import DataLoader

    from dflab.data.datasets import CropDataset, build_transforms
    from dflab.visual.train import predict_probs

    ds = CropDataset(df, build_transforms(data_cfg["input_size"], data_cfg["mean"],
                                          data_cfg["std"], train=False))
    dl = DataLoader(ds, batch_size=batch, shuffle=False, num_workers=workers)
    rows, probs, _ = predict_probs(model, dl, torch.device(device))
    out = ds.df.iloc[rows].copy()
    out["prob"] = probs
    return out.reset_index(drop=True)


def evaluate_run(run: str | Path, processed: str | Path, split: str = "test",
                 cfg: EvalConfig | None = None, checkpoint: str = "best.pt", batch: int = 64,
                 callbacks: list[Callback] | None = None,
                 cancel: CancelToken | None = None, tag: str = "") -> dict[str, Any]:
    """Evaluate ``run``'s checkpoint on ``split`` of ``processed``; writes
    ``eval_<tag>.json`` and ``predictions_<tag>.csv`` into the run folder (``tag`` default:
    the split; another folder than the run's own gets its own tag, e.g. ``test_dfdc``)."""
    from dflab.data.datasets import faceless_frames, load_index, select_split
    from dflab.visual.train import load_model

    run = Path(run)
    cfg = cfg or EvalConfig()
    em = Emitter("evaluate", callbacks, cancel)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    trained = load_model(run / "checkpoints" / checkpoint, device)
    model, dc, ckpt = trained.net, trained.data_config, trained.checkpoint
    df = load_index(processed)
    workers = scoring_workers(device)
    em.progress(0, 2, "split", "validation")
    val = predict_split(model, dc, select_split(df, "val"), batch, workers, device)
    threshold = cfg.threshold if cfg.threshold >= 0 else tune_threshold(val["target"], val["prob"])
    em.check()
    em.progress(1, 2, "split", split)
    part = val if split == "val" else predict_split(model, dc, select_split(df, split), batch,
                                                   workers, device)
    report = evaluate_predictions(part, threshold, **protocol_args(
        cfg, faceless_frames(processed, split)))
    report.update({"split": split, "checkpoint": checkpoint, "epoch": ckpt["epoch"],
                   "threshold_source": "given" if cfg.threshold >= 0 else "tuned on val",
                   "processed": str(processed)})
    cols = ["uid", "dataset", "method", "compression", "video_id", "split", "frame_index",
            "label", "target", "prob", "crop_path", "frame_path", "x1", "y1", "x2", "y2"]
    preds = part[cols].copy()
    preds["pred"] = (preds["prob"] >= threshold).astype(int)
    preds["wrongness"] = (preds["prob"] - preds["target"]).abs()
    preds.to_csv(run / f"predictions_{tag or split}.csv", index=False)
    write_report(run, tag or split, {"visual": report})
    em.progress(2, 2, "split", "done")
    em.result(split=split, frame_auc=report["frame"]["auc"], video_auc=report["video"]["auc"],
              threshold=threshold)
    return report
