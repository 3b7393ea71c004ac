"""Preprocessing throughput, measured side by side in one run.

Three ways over the same clips, sampling every Nth frame, with the default detector (the YuNet
shipped in dflab):
  pipeline      dflab's preprocess_videos: grab() skipped frames, detect, crop, write JPEGs + JSON
  decode-only   grab() every frame, retrieve() only the sampled ones, nothing else (timed before
                and after the pipeline; the mean)
  read-every    a naive pipeline: cap.read() (decode + convert) every frame, keep every Nth, then
                the same detection, crop and JPEG writes

Prints sampled frames per second for each and the ratios, for each clip set: the FF++ c23 clips
of ../shared/data (640x480 to 1080p) and its DFDC clips (1080p, landscape and portrait) when
present, otherwise the demo set. Ends with a projection for FF++ c23 at every 5th frame.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import cv2

from dflab.core.config import PreprocessConfig
from dflab.data.faces import create_detector, crop_face
from dflab.data.preprocess import preprocess_videos
from dflab.data.sources import VideoRecord, list_videos

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


FFPP_C23_FRAMES = 500_000  # 5,000 videos (1,000 real, 4 methods) x ~500 frames, every 5th


def clip_sets(tmp: Path) -> dict[str, list[VideoRecord]]:
    sets = {}
    if (SHARED / "ffpp").is_dir():
        sets["FF++ c23 (../shared/data)"] = list_videos("ffpp", SHARED / "ffpp")
    if (SHARED / "dfdc").is_dir():
        dfdc = [r for r in list_videos("dfdc", SHARED / "dfdc") if r.exists]
        if dfdc:
            sets["DFDC 1080p (../shared/data)"] = dfdc
    if not sets:
        from dflab.data.synthetic import build_demo_dataset

        build_demo_dataset(tmp / "demo", 30, 0)
        sets["demo set"] = list_videos("demo", tmp / "demo")[:10]
    return sets


def decode_only(recs, n):
    frames = 0
    for r in recs:
        cap = cv2.VideoCapture(r.path)
        i = 0
        while cap.grab():
            if i % n == 0:
                ok, _ = cap.retrieve()
                frames += ok
            i += 1
        cap.release()
    return frames


def read_every(recs, n, cfg: PreprocessConfig, out: Path):
    det = create_detector(cfg.detector, cfg.detector_weights, cfg.det_size, cfg.min_confidence)
    frames = 0
    for r in recs:
        cap = cv2.VideoCapture(r.path)
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i % n == 0:
                faces = det.detect(frame)
                cv2.imwrite(str(out / f"f{frames}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
                if faces:
                    crop, _ = crop_face(frame, faces[0].box, cfg.padding, cfg.square)
                    cv2.imwrite(str(out / f"c{frames}.jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
                frames += 1
            i += 1
        cap.release()
    return frames


def cpu_seconds() -> float:
    """CPU time of this process so far, every thread (FFmpeg's and OpenCV's included)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(recs: list[VideoRecord], every: int, cfg: PreprocessConfig, tmp: Path) -> dict:
    # decode-only before and after the pipeline (their mean), so a slow spell of this shared
    # machine during one of them moves the ratio less
    c, t = cpu_seconds(), time.perf_counter()
    n_dec = decode_only(recs, every)
    t_dec = time.perf_counter() - t
    c_dec = cpu_seconds() - c
    c, t = cpu_seconds(), time.perf_counter()
    rep = preprocess_videos(recs, tmp / "pipeline", cfg)
    t_pipe = time.perf_counter() - t
    c_pipe = cpu_seconds() - c
    t = time.perf_counter()
    decode_only(recs, every)
    t_dec = (t_dec + time.perf_counter() - t) / 2
    (tmp / "naive").mkdir()
    t = time.perf_counter()
    n_naive = read_every(recs, every, cfg, tmp / "naive")
    t_naive = time.perf_counter() - t
    shutil.rmtree(tmp / "pipeline")
    shutil.rmtree(tmp / "naive")
    assert rep["frames"] == n_dec == n_naive, (rep["frames"], n_dec, n_naive)
    return {"frames": n_dec, "pipeline": n_dec / t_pipe, "decode-only": n_dec / t_dec,
            "read-every": n_naive / t_naive, "cpu-pipeline": c_pipe, "cpu-decode-only": c_dec,
            "pipeline-cores": c_pipe / t_pipe}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--every", type=int, default=5, help="sample every Nth frame")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    cfg = PreprocessConfig(every_nth=args.every, audio=False, detector="yunet")
    create_detector(cfg.detector, cfg.detector_weights)  # load once before timing
    try:
        results = {name: measure(recs, args.every, cfg, tmp)
                   for name, recs in clip_sets(tmp).items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for name, fps in results.items():
        print(f"{name}: every {args.every}th frame, detector yunet (packaged): "
              f"{fps['frames']} sampled frames")
        for k in ("pipeline", "decode-only", "read-every"):
            print(f"  {k:<12} {fps[k]:8.1f} sampled frames/s")
        print(f"ratio pipeline / decode-only  = {fps['pipeline'] / fps['decode-only']:.2f}")
        print(f"ratio pipeline / read-every   = {fps['pipeline'] / fps['read-every']:.2f}")
        print(f"  CPU time: pipeline {fps['cpu-pipeline']:.1f} s on {fps['pipeline-cores']:.2f} "
              f"cores of {os.cpu_count()}, decode-only {fps['cpu-decode-only']:.1f} s "
              f"({fps['cpu-pipeline'] / fps['cpu-decode-only']:.2f}x)")
        print(f"  bound: the pipeline decodes what decode-only decodes, so its ratio to "
              f"read-every is at most decode-only / read-every = "
              f"{fps['decode-only'] / fps['read-every']:.2f}")
    first = next(iter(results.values()))
    frames = FFPP_C23_FRAMES * 5 // args.every
    print(f"projection: FF++ c23 at every {args.every}th frame ({frames:,} sampled frames) at the "
          f"first set's pipeline rate: {frames / first['pipeline'] / 3600:.1f} h on this machine")


if __name__ == "__main__":
    main()
