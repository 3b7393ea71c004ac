"""Training speed, measured side by side in one run: trainer images/s, dflab's ``train`` (data
loading, augmentation, AMP policy, accumulation, checkpoints) for one epoch, against a bare
forward/backward/AdamW loop over in-memory tensors with the same model and batch size.
(Inference, onnxruntime against eager torch: ``bench_onnx.py``.)

Runs on the demo set's crops (built in a temporary folder). CPU here; on a GPU the same script
measures the CUDA path.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from dflab.core.config import load_config
from dflab.data.synthetic import build_demo_dataset
from dflab.visual.models import create_model
from dflab.data.preprocess import preprocess_videos
from dflab.data.sources import list_videos
from dflab.visual.train import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        cfg = load_config(None, {"model.backbone": args.backbone, "model.pretrained": False,
                                 "model.input_size": args.size, "train.batch_size": args.batch,
                                 "train.accumulation": 1, "train.epochs": 2,
                                 "preprocess.detector": "haar", "preprocess.every_nth": 3,
                                 "preprocess.audio": False})
        build_demo_dataset(tmp / "demo", 40, 0)
        preprocess_videos(list_videos("demo", tmp / "demo"), tmp / "crops", cfg.preprocess)
        run = train(cfg, tmp / "crops", tmp / "runs", "bench")
        setup = json.loads((run / "train_setup.json").read_text())
        hist = [json.loads(h) for h in (run / "history.jsonl").read_text().splitlines()]
        n_train = setup["steps_per_epoch"] * args.batch
        # the training pass of each epoch (history's train_seconds: validation and checkpoints
        # excluded); the ratio uses the second, after warm-up, as the bare loop skips its own
        first_ips = n_train / hist[0]["train_seconds"]
        trainer_ips = n_train / hist[1]["train_seconds"]

        model = create_model(cfg.model).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randn(args.batch, 3, args.size, args.size)
        y = torch.randint(0, 2, (args.batch,))
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
        for _ in range(2):  # warm-up
            loss_fn(model(x), y).backward()
            opt.step()
            opt.zero_grad()
        steps = max(3, setup["steps_per_epoch"])
        t = time.perf_counter()
        for _ in range(steps):
            loss_fn(model(x), y).backward()
            opt.step()
            opt.zero_grad()
        bare_ips = steps * args.batch / (time.perf_counter() - t)

    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.backbone} @ {args.size}px, batch {args.batch}, {setup['device']}, "
          f"amp {setup['amp']}, {n_train} training crops")
    print(f"  trainer      {trainer_ips:8.1f} images/s (second epoch's training pass; the "
          f"first, warm-up included: {first_ips:.1f})")
    print(f"  bare loop    {bare_ips:8.1f} images/s (in-memory tensors, fwd/bwd/AdamW)")
    print(f"ratio trainer / bare loop = {trainer_ips / bare_ips:.2f}")
    train_crops = 360_000  # FF++ c23 train split (720 of 1,000 ids) at every 5th frame
    print(f"projection: one epoch over FF++ c23's training crops at every 5th frame "
          f"({train_crops:,}) with this model and size: {train_crops / trainer_ips / 3600:.1f} h "
          f"on this machine")


if __name__ == "__main__":
    main()
