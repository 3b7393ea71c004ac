"""The whole pipeline headless on the demo set (``dflab demo`` / ``make demo``)."""

from __future__ import annotations

import time
from typing import Any

from .config import LabConfig
from .events import TqdmCallback

__all__ = ["run_demo"]


def run_demo(cfg: LabConfig) -> dict[str, Any]:
    """Environment report, demo set, preprocessing; each later stage adds its step here."""
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
        "seconds": round(time.monotonic() - t0, 1),
    }
