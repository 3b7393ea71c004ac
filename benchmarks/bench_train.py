"""Training speed, measured side by side in one run: trainer images/s, dflab's ``train`` (data
loading, augmentation, AMP policy, accumulation, checkpoints) for one epoch, against a bare
forward/backward/AdamW loop over in-memory tensors with the same model and batch size.
(Inference, onnxruntime against eager torch: ``bench_onnx.py``.)

Runs on the demo set's crops (built in a temporary folder). CPU here; on a GPU the same script
measures the CUDA path. The trainer's figure is the median of its epochs after the first; the
bare loop runs before and after it (the mean): single short passes moved the ratio by 0.2
between runs on this shared machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dflab.core.config import load_config
from dflab.data.synthetic import build_demo_dataset
from dflab.visual.models import create_model
from dflab.data.preprocess import preprocess_videos
from dflab.data.sources import list_videos
from dflab.visual.train import train
from scale import DATASETS, NO_GPU  # benchmarks/scale.py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=4, help="the trainer's rate: the median of "
                    "the epochs after the first")
    ap.add_argument("--bare-steps", type=int, default=40, help="steps of each bare-loop block")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        cfg = load_config(None, {"model.backbone": args.backbone, "model.pretrained": False,
                                 "model.input_size": args.size, "train.batch_size": args.batch,
                                 "train.accumulation": 1, "train.epochs": args.epochs,
                                 "preprocess.detector": "haar", "preprocess.every_nth": 3,
                                 "preprocess.audio": False})
        build_demo_dataset(tmp / "demo", 40, 0)
        preprocess_videos(list_videos("demo", tmp / "demo"), tmp / "crops", cfg.preprocess)
        model = create_model(cfg.model).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randn(args.batch, 3, args.size, args.size)
        y = torch.randint(0, 2, (args.batch,))
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

        def bare(steps: int) -> float:
            t = time.perf_counter()
            for _ in range(steps):
                loss_fn(model(x), y).backward()
                opt.step()
                opt.zero_grad()
            return steps * args.batch / (time.perf_counter() - t)

        bare(2)  # warm-up
        # the bare loop before and after the trainer (their mean), so a slow spell of this
        # shared machine during one of them moves the ratio less
        bare_before = bare(args.bare_steps)
        run = train(cfg, tmp / "crops", tmp / "runs", "bench")
        bare_after = bare(args.bare_steps)
        bare_ips = (bare_before + bare_after) / 2
        setup = json.loads((run / "train_setup.json").read_text())
        hist = [json.loads(h) for h in (run / "history.jsonl").read_text().splitlines()]
        n_train = setup["steps_per_epoch"] * args.batch
        # the training pass of each epoch (history's train_seconds: validation and checkpoints
        # excluded); the ratio uses the median of the epochs after the first (warm-up), as the
        # bare loop skips its own
        rates = [n_train / h["train_seconds"] for h in hist]
        first_ips = rates[0]
        trainer_ips = float(np.median(rates[1:]))

    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.backbone} @ {args.size}px, batch {args.batch}, {setup['device']}, "
          f"amp {setup['amp']}, {n_train} training crops")
    print(f"  trainer      {trainer_ips:8.1f} images/s (median of the training passes of epochs 2-{len(rates)}:"
          f" {', '.join(f'{r:.1f}' for r in rates[1:])}; the first, warm-up included: "
          f"{first_ips:.1f})")
    print(f"  bare loop    {bare_ips:8.1f} images/s (in-memory tensors, fwd/bwd/AdamW; before "
          f"the trainer {bare_before:.1f}, after {bare_after:.1f})")
    print(f"ratio trainer / bare loop = {trainer_ips / bare_ips:.2f}")
    ffpp_train = 360_000  # FF++ c23 train split (720 of 1,000 ids) at every 5th frame
    dfdc_train = DATASETS["the full DFDC"] * 8 // 10  # 80% of it to train
    for what, n in (("FF++ c23's training crops", ffpp_train), ("the full DFDC's", dfdc_train)):
        print(f"projection: one epoch over {what} at every 5th frame ({n:,}) with this model and "
              f"size: {n / trainer_ips / 3600:.1f} h on this machine; {NO_GPU}")


if __name__ == "__main__":
    main()
