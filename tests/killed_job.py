"""The long jobs of the lab, each as one call on a data root, for tests/test_kill_resume.py: run
in the test's process to finish a job, or as a script that kills its own process with SIGKILL at
the K-th event the job sends (a step count, not a time):

    python tests/killed_job.py JOB DATA_ROOT K
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from conftest import TINY  # noqa: E402

#: the settings of every job: the suite's tiny ones, one preprocessing worker (the same order
#: of events in every run), and the two DFDC parts the fake Kaggle serves
SETTINGS = {**TINY, "preprocess.workers": 1, "data.dfdc_parts": [0, 1]}
METHODS = ["Deepfakes", "Face2Face"]


class FakeKaggle:
    """Kaggle's narrow interface over local zips (``<root>/kaggle/*.zip``): no network here."""

    def __init__(self, folder: Path):
        self.zips = {p.name: p for p in sorted(folder.glob("*.zip"))}

    def list_files(self):
        return [(n, p.stat().st_size) for n, p in self.zips.items()]

    def download(self, name, dest_dir):
        dest = Path(dest_dir) / name
        dest.write_bytes(self.zips[name].read_bytes())
        return dest


def _dfdc(lab, root: Path, cb):
    from dflab.data import acquire
    acquire.KaggleClient = lambda: FakeKaggle(root / "kaggle")  # the download's server only
    return lab.fetch_and_preprocess("dfdc", root=root / "dfdc", out=root / "processed" / "dfdc",
                                    callbacks=cb)


def _train(lab, root: Path, cb):
    # a user re-runs a killed training with --resume (a first run starts without)
    return lab.train(root / "processed" / "demo", name="k",
                     resume=(root / "runs" / "train-k" / "checkpoints").is_dir(), callbacks=cb)


#: job name -> (the call, the folders it writes, relative to the data root)
JOBS: dict[str, tuple[Callable[[Any, Path, list], Any], list[str]]] = {
    "preprocess": (lambda lab, root, cb: lab.preprocess(
        "demo", root / "demo", out=root / "processed" / "fresh", callbacks=cb),
        ["processed/fresh"]),
    "features": (lambda lab, root, cb: lab.features(root / "processed" / "demo", callbacks=cb),
                 ["processed/demo"]),
    "sync extract": (lambda lab, root, cb: lab.sync_extract(root / "processed" / "demo_av",
                                                            callbacks=cb),
                     ["processed/demo_av"]),
    "train": (_train, ["runs/train-k"]),
    "forensic MLP": (lambda lab, root, cb: lab.train_forensic(
        root / "processed" / "demo", name="k", callbacks=cb), ["runs/forensic-k"]),
    "fuse": (lambda lab, root, cb: lab.fuse(root / "runs" / "train-v", root / "runs" / "forensic-f",
                                            name="k", callbacks=cb), ["runs/fuse-k"]),
    "export": (lambda lab, root, cb: lab.export(root / "runs" / "train-v", root / "export"
                                                / "model.onnx", callbacks=cb), ["export", "runs/train-v"]),
    "protocol": (lambda lab, root, cb: lab.protocol("cross-method", "k", methods=METHODS,
                                                    callbacks=cb), ["runs"]),
    "DFDC part": (_dfdc, ["processed/dfdc", "dfdc"]),
}


def lab_at(root: Path):
    from dflab import Lab

    return Lab(None, SETTINGS, data_root=root)


def run_job(job: str, root: Path, callbacks: list | None = None) -> Any:
    return JOBS[job][0](lab_at(root), root, callbacks or [])


def main() -> None:
    job, root, kill_at = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    seen = [0]

    def kill(event) -> None:
        seen[0] += 1
        if seen[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally blocks, no atexit

    run_job(job, root, [kill])
    sys.exit(f"{job} ended after {seen[0]} events, before event {kill_at}")


if __name__ == "__main__":
    main()
