"""CLI start-up, measured side by side in one run: the wall time of

1. ``python -c pass`` (the interpreter alone: the floor);
2. ``dflab --help``;
3. ``dflab predict FRAME --model model.onnx`` (an exported model: onnxruntime, no torch);
4. ``dflab predict FRAME --model checkpoints/best.pt`` (the same model through torch);
5. ``dflab predict FOLDER --model model.onnx`` over N images, per input;
6. dashboard jobs from ``start_job`` to their end, one with nothing to do and the evaluation of
   the small model: spawned as a fresh ``python -m dflab job-process`` (``DFLAB_JOBS_FORK=0``) against
   forked from the warm fork server (:mod:`dflab.core.jobs`).

Each command runs ``--repeats`` times, interleaved; min / median / max are printed. The model is
a small one trained for one epoch on a few demo clips in a temporary folder (what is timed is
start-up and per-input work, not accuracy).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from scale import projections  # benchmarks/scale.py


def _model(tmp: Path) -> tuple[Path, Path]:
    """(a train run with model.onnx, a folder of frames)."""
    from dflab import Lab

    lab = Lab("cpu", {"train.epochs": 1, "preprocess.every_nth": 10, "preprocess.audio": False},
              data_root=tmp)
    lab.demo_data(n_videos=30, seconds=1.0)
    lab.preprocess(source="demo")
    run = lab.train(name="bench").run
    lab.export(run)
    frames = tmp / "frames"
    frames.mkdir()
    for k, f in enumerate(sorted((tmp / "processed" / "demo").rglob("frames/*.jpg"))[:20]):
        shutil.copy(f, frames / f"{k:02d}.jpg")
    return run, frames


def _time(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return took


def _job_times(tmp: Path, run: Path, repeats: int) -> dict[str, list[float]]:
    """Seconds from start_job to the end of two dashboard jobs, each spawned fresh and forked
    from the fork server, interleaved (the server warmed up by one untimed job first): one with
    nothing to do (``demo_data`` on the finished set: no torch) and the evaluation of the small
    model (torch, timm, the model and its test crops)."""
    import os

    from dflab import Lab
    from dflab.core.jobs import start_job

    lab = Lab("cpu", data_root=tmp)
    start_job(lab, "demo_data", name="warm", n_videos=30, seconds=1.0).wait(600)
    calls = {"no work": ("demo_data", {"n_videos": 30, "seconds": 1.0}),
             "evaluate": ("evaluate", {"run": str(run)})}
    times: dict[str, list[float]] = {f"job {c}, {how}": [] for c in calls
                                     for how in ("spawned", "forked")}
    for k in range(repeats):
        for call, (method, kwargs) in calls.items():
            for how, fork in (("spawned", "0"), ("forked", "1")):
                os.environ["DFLAB_JOBS_FORK"] = fork
                t0 = time.perf_counter()
                state = start_job(lab, method, name=f"{how}-{k}", **kwargs).wait(600, poll=0.02)
                times[f"job {call}, {how}"].append(time.perf_counter() - t0)
                if state != "done":
                    raise SystemExit(f"the {method} job ({how}) ended {state}")
    os.environ.pop("DFLAB_JOBS_FORK")
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        run, frames = _model(tmp)
        one = str(next(frames.iterdir()))
        py, dflab = sys.executable, [sys.executable, "-m", "dflab"]
        cmds = {
            "python -c pass": [py, "-c", "pass"],
            "dflab --help": [*dflab, "--help"],
            "predict 1 image, onnx": [*dflab, "predict", one, "--model", str(run / "model.onnx")],
            "predict 1 image, torch": [*dflab, "predict", one, "--model",
                                       str(run / "checkpoints" / "best.pt")],
            f"predict {len(list(frames.iterdir()))} images, onnx": [
                *dflab, "predict", str(frames), "--model", str(run / "model.onnx")],
        }
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(args.repeats):
            for name, cmd in cmds.items():
                times[name].append(_time(cmd))
        print(f"{'command':<26} {'min':>7} {'median':>7} {'max':>7}  (s, {args.repeats} runs)")
        for name, t in times.items():
            print(f"{name:<26} {min(t):7.2f} {statistics.median(t):7.2f} {max(t):7.2f}")
        med = {k: statistics.median(v) for k, v in times.items()}
        names = list(cmds)
        n = len(list(frames.iterdir()))
        print(f"ratio predict torch / onnx (start-up saved by not importing torch): "
              f"{med[names[3]] / med[names[2]]:.2f}")
        print(f"ratio dflab --help / python -c pass: {med[names[1]] / med[names[0]]:.2f}")
        print(f"batch of {n}: {med[names[4]] / n:.3f} s per image; ratio per-image batch / single "
              f"run: {med[names[4]] / n / med[names[2]]:.3f}")
        print("\n".join(projections("`dflab predict` (ONNX, batches like this one) over",
                                     n / med[names[4]], "frames")))
        jt = _job_times(tmp, run, args.repeats)
        jobs = {k: statistics.median(v) for k, v in jt.items()}
        for name, t in jt.items():
            print(f"{name:<26} {min(t):7.2f} {jobs[name]:7.2f} {max(t):7.2f}")
        for call in ("no work", "evaluate"):
            print(f"ratio job {call}, spawned / forked from the fork server: "
                  f"{jobs[f'job {call}, spawned'] / jobs[f'job {call}, forked']:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
