"""The whole pipeline headless on the demo set (``dflab demo`` / ``make demo``)."""

from __future__ import annotations

import json
import time
from typing import Any

from .config import LabConfig
from .events import TqdmCallback

__all__ = ["run_demo"]


def run_demo(cfg: LabConfig) -> dict[str, Any]:
    """Environment report, demo set, preprocessing, training, evaluation, forensic features
    and MLP, export, predict."""
    from .demo import build_demo_dataset
    from .environment import environment_report, resolve_paths, setup_runtime

    t0 = time.monotonic()
    paths = resolve_paths(cfg.env.data_root, cfg.env.runs_dir, cfg.env.mount_drive)
    runtime = setup_runtime(cfg.env.seed, cfg.env.deterministic, cfg.train.amp,
                            cfg.env.num_workers)
    env = environment_report(paths["data_root"], cfg.model.backbone,
                             cfg.model.input_size or 380, cfg.train.target_batch)
    demo_dir = paths["data_root"] / "demo"
    labels = build_demo_dataset(demo_dir, cfg.data.demo_videos, cfg.env.seed,
                                callbacks=[TqdmCallback()])
    import pandas as pd

    from .preprocess import preprocess_videos
    from .sources import list_videos
    from .stats import dataset_stats

    df = pd.read_csv(labels)
    processed = paths["processed"] / "demo"
    pre = preprocess_videos(list_videos("demo", demo_dir), processed, cfg.preprocess,
                            cache_dir=str(paths["cache"]), callbacks=[TqdmCallback()])
    stats = dataset_stats(processed)

    from .evaluate import evaluate_run
    from .export import export_onnx
    from .predict import predict_file
    from .train import train

    run = train(cfg, processed, paths["runs"], name=f"demo-{int(time.time())}",
                callbacks=[TqdmCallback()])
    ev = evaluate_run(run, processed, "test", cfg.eval)
    ex = export_onnx(run, cfg=cfg.export)
    from .forensic import compute_features, train_forensic

    compute_features(processed, cfg, callbacks=[TqdmCallback()])
    frun = train_forensic(cfg, processed, paths["runs"], name=run.name.replace("train-", ""))
    freport = json.loads((frun / "eval_test.json").read_text())
    held_out = df[df["split"] == "test"]["path"].iloc[-1]
    pred = predict_file(demo_dir / held_out, run / "model.onnx")
    return {
        "runtime": runtime,
        "gpu": env["gpu"],
        "advice": env["advice"],
        "demo_set": {"path": str(demo_dir), "clips": len(df),
                     "per_method": df["method"].value_counts().to_dict(),
                     "per_split": df["split"].value_counts().to_dict()},
        "preprocess": {k: pre[k] for k in ("processed", "skipped_finished", "failed", "frames",
                                           "coverage", "index")},
        "stats": {k: stats[k] for k in ("videos", "frames", "face_coverage", "label_frames",
                                        "method_videos", "videos_with_audio")},
        "train": {"run": str(run), "history": (run / "history.jsonl").read_text().splitlines()},
        "evaluate_test": {"threshold": ev["threshold"],
                          "frame": {k: ev["frame"][k] for k in ("n", "accuracy", "auc", "f1")},
                          "video": {k: ev["video"][k] for k in ("n", "accuracy", "auc", "f1")},
                          "video_auc_per_method": {m: v["auc"] for m, v in
                                                   ev["video_per_method"].items()}},
        "forensic_test_video_auc": {m: r["video"]["auc"] for m, r in freport.items()},
        "export": {"onnx": ex["onnx"], "max_abs_diff": ex["max_abs_diff"]},
        "predict": {"file": held_out, "verdict": pred["verdict"],
                    "probability": pred["probability"]},
        "note": "the demo set is a demo, not a benchmark: make no accuracy claims from it",
        "seconds": round(time.monotonic() - t0, 1),
    }
