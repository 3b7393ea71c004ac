"""Landmark coverage on every real clip of ../shared/data, and accuracy against points known by
construction.

- Coverage: every clip of ffpp/, ffpp_valtest/, dfdc/ and talking/ preprocessed at 32 evenly
  spaced frames (YuNet, dlib's 68 points): of the frames with a face, the share whose 68 points
  passed the check against the detector's five (dflab.data.landmarks.check_points), per folder.
- Known points: held-out LFW photos (``--photos``, from the end of the sorted list, which the
  calibration's first 1,200 never saw) warped by a known similarity (rotation up to 25 degrees,
  scale 0.7-1.3, a shift): the true 68 points of the warped photo are the warped points of the
  photo, so the NME (over the eye distance) of what the model finds there measures it, for
  dlib68 and for the 5-point fallback, with 300-W's failure rate (NME > 0.08).

Run: ``.venv/bin/python benchmarks/measure_landmarks.py`` (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dflab.data.faces import create_detector  # noqa: E402
from dflab.data.landmarks import create_landmarker  # noqa: E402


def coverage(shared: Path, work: Path) -> dict[str, dict]:
    from dflab import Lab
    from dflab.workflows.real import real_labels

    lab = Lab(None, {"preprocess.every_nth": 0, "preprocess.num_frames": 32,
                     "preprocess.audio": False, "preprocess.save_frames": False,
                     "preprocess.workers": 2}, data_root=work)
    labels = real_labels(shared, work / "labels.csv")
    clips = lab.preprocess("folder", work, labels=str(labels), out=work / "clips")
    talking = lab.preprocess("folder", shared / "talking", labels=str(shared / "talking" /
                                                                       "labels.csv"),
                             out=work / "talking")
    out = {}
    for name, res in (("FF++ and DFDC (61 clips)", clips), ("talking (28 clips)", talking)):
        lm = res.stats["landmark_coverage"]
        out[name] = {"clips": res.videos, "frames": res.frames, "face coverage": res.coverage,
                     "frames with a face": lm["frames_with_face"],
                     "with 68 points": lm["with_landmarks"], "landmark coverage": lm["coverage"]}
    return out


def known_points(faces: Path, n: int, seed: int = 0) -> dict[str, dict]:
    files = sorted(faces.glob("*.jpg"))[-n:]
    rng = np.random.default_rng(seed)
    det = create_detector("yunet")
    models = {m: create_landmarker(m, detector="yunet") for m in ("dlib68", "template5")}
    errs: dict[str, list[float]] = {m: [] for m in models}
    times: dict[str, list[float]] = {m: [] for m in models}
    for f in files:
        img = cv2.resize(cv2.imread(str(f)), None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
        found = det.detect(img)
        if not found:
            continue
        h, w = img.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-25, 25), rng.uniform(0.7, 1.3))
        m[:, 2] += rng.uniform(-0.1, 0.1, 2) * [w, h]
        warped = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT)
        moved = det.detect(warped)
        if not moved:
            continue
        for name, model in models.items():
            ref = model.predict(img, found[0].box, found[0].landmarks)
            t0 = time.perf_counter()
            got = model.predict(warped, moved[0].box, moved[0].landmarks)
            times[name].append(time.perf_counter() - t0)
            if ref is None or got is None:
                continue
            truth = ref @ m[:, :2].T + m[:, 2]
            iod = np.linalg.norm(truth[36:42].mean(0) - truth[42:48].mean(0))
            errs[name].append(float(np.linalg.norm(got - truth, axis=1).mean() / iod))
    return {name: {"n": len(v), "median NME": round(float(np.median(v)), 4),
                   "mean NME": round(float(np.mean(v)), 4),
                   "failure rate (NME > 0.08)": round(float(np.mean(np.array(v) > 0.08)), 4),
                   "ms per face": round(1000 * float(np.median(times[name])), 2)}
            for name, v in errs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--photos", type=int, default=400)
    args = ap.parse_args()
    shared = Path(args.shared)
    with tempfile.TemporaryDirectory() as td:
        for name, row in coverage(shared, Path(td)).items():
            print(f"coverage, {name}: {row}")
    for name, row in known_points(shared / "faces" / "lfw", args.photos).items():
        print(f"known warp of {args.photos} held-out photos, {name}: {row}")


if __name__ == "__main__":
    main()
