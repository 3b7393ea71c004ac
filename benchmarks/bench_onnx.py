"""Inference speed of the exported model against eager torch, measured side by side in one run:
float ONNX and int8 ONNX (``dflab export --int8``) on onnxruntime, and the same model in eager
torch, on the same batch with the same number of threads. The three are interleaved, round after
round (``--rounds``, default 7), and each one's median over the rounds is compared, so a slow
moment of the machine hits all three alike. Also prints the test-split frame AUC of the float and
the int8 model (and n), and a projection for FF++ c23 at every 5th frame.

The model: the ``cpu`` preset (resnet10t at 112 px) trained for ``--epochs`` on the demo set in a
temporary folder, or ``--run`` (a train run with its processed folder) to measure another.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from scale import projections  # benchmarks/scale.py



def _run(tmp: Path, epochs: int) -> Path:
    from dflab import Lab

    lab = Lab("cpu", {"train.epochs": epochs, "preprocess.audio": False}, data_root=tmp)
    lab.demo_data(n_videos=40, seconds=2.0)
    lab.preprocess(source="demo")
    run = lab.train(name="bench").run
    lab.export(run)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", default="", help="a train run to measure (default: train one)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=5, help="batches per timing")
    args = ap.parse_args()
    import onnxruntime as ort
    import torch

    from dflab.serve.export import export_int8
    from dflab.visual.train import load_model

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    tmp = Path(tempfile.mkdtemp())
    try:
        run = Path(args.run) if args.run else _run(tmp, args.epochs)
        if not (run / "model.onnx").is_file():
            from dflab.serve.export import export_onnx

            export_onnx(run)
        q = export_int8(run)
        trained = load_model(run / "checkpoints" / "best.pt")
        model, dc = trained.net, trained.data_config
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sessions = {name: ort.InferenceSession(str(run / f), so,
                                               providers=["CPUExecutionProvider"])
                    for name, f in (("onnx float", "model.onnx"), ("onnx int8",
                                                                    "model.int8.onnx"))}
        size = dc["input_size"]
        x = np.random.default_rng(0).standard_normal((args.batch, 3, size, size)).astype(
            np.float32)
        xt = torch.from_numpy(x)

        def eager() -> None:
            with torch.no_grad():
                model(xt)

        runners = {"torch eager": eager,
                   **{n: (lambda s=s: s.run(None, {"input": x})) for n, s in sessions.items()}}
        for fn in runners.values():  # warm-up
            fn()
            fn()
        rates: dict[str, list[float]] = {n: [] for n in runners}
        for _ in range(args.rounds):
            for name, fn in runners.items():
                t = time.perf_counter()
                for _ in range(args.reps):
                    fn()
                rates[name].append(args.reps * args.batch / (time.perf_counter() - t))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {n: statistics.median(r) for n, r in rates.items()}
    print(f"{size} px, batch {args.batch}, {threads} threads for both, {args.rounds} interleaved "
          f"rounds of {args.reps} batches; images/s min / median / max:")
    for n, r in rates.items():
        print(f"  {n:<12} {min(r):8.1f} {med[n]:8.1f} {max(r):8.1f}")
    print(f"ratio onnx float / torch eager (medians) = {med['onnx float'] / med['torch eager']:.2f}")
    print(f"ratio onnx int8 / torch eager (medians) = {med['onnx int8'] / med['torch eager']:.2f}")
    if "frame_auc_float" in q:
        if not args.run:
            print(f"(the model here trained {args.epochs} epochs on 40 clips: an AUC comparison "
                  f"means little on it; pass --run of a trained run, e.g. `make demo`'s)")
        print(f"test frame AUC (n={q['test_frames']} frames): float {q['frame_auc_float']:.4f}, "
              f"int8 {q['frame_auc_int8']:.4f} (difference "
              f"{q['frame_auc_int8'] - q['frame_auc_float']:+.4f}); largest |p(fake) difference| "
              f"{q['max_abs_prob_diff']:.3f}; {q['bytes'] / 2**20:.1f} MiB against "
              f"{q['float_bytes'] / 2**20:.1f} MiB")
    for n in runners:
        print("\n".join(projections(f"scoring with {n}:", med[n])))


if __name__ == "__main__":
    main()
