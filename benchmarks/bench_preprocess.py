"""Preprocessing throughput, measured side by side in one run.

Ways over the same clips, sampling every Nth frame, with the default detector (the YuNet shipped
in dflab) and the default landmarks:
  pipeline        dflab's preprocess_videos as configured by default (decode auto: skip, PyAV
                  skipping the non-reference frames no sample needs), detect, landmarks, crop,
                  JPEGs + JSON
  pipeline-all    the same with decode all (OpenCV decodes every frame: the pipeline before
                  the skip decoder); its crops are compared with the pipeline's, file for file
  keyframes       the pipeline with decode keyframes (a quick pass: other frames, fewer)
  decode-only     OpenCV grab() every frame, retrieve() only the sampled ones, nothing else
                  (timed before and after the pipelines; the mean): the goal's reference
  decode-skip     the skip decoder alone (PyAV; the same frames)
  read-every      a naive pipeline: cap.read() every frame, keep every Nth, then the same
                  detection, crop and JPEG writes

Prints sampled frames per second for each and the ratios, for each clip set: the FF++ c23 clips
of ../shared/data (640x480 to 1080p) and its DFDC clips (1080p, landscape and portrait) when
present, otherwise the demo set. The bound: the CPU time of the work no pipeline can leave out
(the skip decoder on one thread, the detector and the landmarks, each timed alone) spread over
every core, against decode-only's time. Ends with projections for FF++ c23 and the full DFDC.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import cv2

from dflab.core.config import PreprocessConfig
from dflab.data.faces import create_detector, crop_face, primary_face
from dflab.data.landmarks import shared_landmarker
from dflab.data.preprocess import preprocess_videos
from dflab.data.sources import VideoRecord, list_videos
from dflab.data.video import iter_frames_skipping, resolve_decode
from scale import DATASETS, NO_GPU  # benchmarks/scale.py

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"




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


def timed(fn, *args) -> tuple[float, float, object]:
    """(wall s, CPU s of every thread, result) of ``fn(*args)``."""
    c, t = cpu_seconds(), time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, cpu_seconds() - c, out


def decode_skip(recs, n, threads=0):
    return sum(1 for r in recs for _ in iter_frames_skipping(r.path, every_nth=n,
                                                             threads=threads))


def floor_work(recs, n, cfg: PreprocessConfig) -> dict[str, float]:
    """CPU seconds of the detector and of the landmarks alone over the sampled frames (each
    call timed on this thread's clock)."""
    det = create_detector(cfg.detector, cfg.detector_weights, cfg.det_size, cfg.min_confidence)
    marks = shared_landmarker(cfg.landmarks, det.name)
    cpu = {"detect": 0.0, "landmarks": 0.0}
    for r in recs:
        for _, frame in iter_frames_skipping(r.path, every_nth=n, threads=1):
            t = time.thread_time()
            face = primary_face(det.detect(frame), frame.shape)
            cpu["detect"] += time.thread_time() - t
            if face is not None and marks is not None:
                t = time.thread_time()
                marks.predict(frame, face.box, face.landmarks)
                cpu["landmarks"] += time.thread_time() - t
    return cpu


def same_crops(a: Path, b: Path) -> tuple[int, int]:
    """(crops whose JPEG files are byte for byte the same, crops of frames both folders took)."""
    crops_a = {p.relative_to(a): p for p in a.rglob("crops/*.jpg")}
    crops_b = {p.relative_to(b): p for p in b.rglob("crops/*.jpg")}
    both = crops_a.keys() & crops_b.keys()
    return sum(crops_a[k].read_bytes() == crops_b[k].read_bytes() for k in both), len(both)


def measure(recs: list[VideoRecord], every: int, cfg: PreprocessConfig, tmp: Path) -> dict:
    # decode-only before and after the pipelines (their mean), so a slow spell of this shared
    # machine during one of them moves the ratio less
    t_dec, c_dec, n_dec = timed(decode_only, recs, every)
    t_pipe, c_pipe, rep = timed(preprocess_videos, recs, tmp / "pipeline", cfg)
    t_all, _, rep_all = timed(preprocess_videos, recs, tmp / "pipeline-all",
                              dataclasses.replace(cfg, decode="all"))
    t_key, _, rep_key = timed(preprocess_videos, recs, tmp / "keyframes",
                              dataclasses.replace(cfg, decode="keyframes"))
    t_dec2, c_dec2, _ = timed(decode_only, recs, every)
    t_dec, c_dec = (t_dec + t_dec2) / 2, (c_dec + c_dec2) / 2
    t_skip, _, n_skip = timed(decode_skip, recs, every)
    _, c_skip1, _ = timed(decode_skip, recs, every, 1)
    same, both = same_crops(tmp / "pipeline", tmp / "pipeline-all")
    (tmp / "naive").mkdir()
    t_naive, _, n_naive = timed(read_every, recs, every, cfg, tmp / "naive")
    work = floor_work(recs, every, cfg)
    for d in ("pipeline", "pipeline-all", "keyframes", "naive"):
        shutil.rmtree(tmp / d)
    assert rep["frames"] == rep_all["frames"] == n_dec == n_skip == n_naive, \
        (rep["frames"], rep_all["frames"], n_dec, n_skip, n_naive)
    floor_cpu = c_skip1 + work["detect"] + work["landmarks"]
    return {"frames": n_dec, "pipeline": n_dec / t_pipe, "pipeline-all": n_dec / t_all,
            "keyframes": rep_key["frames"] / t_key, "keyframes-frames": rep_key["frames"],
            "decode-only": n_dec / t_dec, "decode-skip": n_dec / t_skip,
            "read-every": n_naive / t_naive, "cpu-pipeline": c_pipe, "cpu-decode-only": c_dec,
            "pipeline-cores": c_pipe / t_pipe, "same-crops": same, "both-crops": both,
            "floor-cpu": floor_cpu, "cpu-skip-1": c_skip1, **work,
            "bound": t_dec / (floor_cpu / os.cpu_count())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--every", type=int, default=5, help="sample every Nth frame")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    cfg = PreprocessConfig(every_nth=args.every, audio=False, detector="yunet")
    create_detector(cfg.detector, cfg.detector_weights)  # load once before timing
    shared_landmarker(cfg.landmarks, "yunet")
    try:
        results = {name: measure(recs, args.every, cfg, tmp)
                   for name, recs in clip_sets(tmp).items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = args.every
    for name, r in results.items():
        print(f"{name}: every {n}th frame, decode {cfg.decode} ({resolve_decode(cfg.decode)}), "
              f"detector yunet (packaged), landmarks {cfg.landmarks}: {r['frames']} sampled "
              f"frames")
        for k in ("pipeline", "pipeline-all", "decode-only", "decode-skip", "read-every"):
            print(f"  {k:<13} {r[k]:8.1f} sampled frames/s")
        print(f"  {'keyframes':<13} {r['keyframes']:8.1f} frames/s ({r['keyframes-frames']} "
              f"keyframes: a quick pass, other frames)")
        print(f"ratio pipeline / decode-only     = {r['pipeline'] / r['decode-only']:.2f}")
        print(f"ratio pipeline / pipeline-all    = {r['pipeline'] / r['pipeline-all']:.2f}")
        print(f"ratio decode-skip / decode-only  = {r['decode-skip'] / r['decode-only']:.2f}")
        print(f"ratio pipeline / read-every      = {r['pipeline'] / r['read-every']:.2f}")
        print(f"  crops of frames both pipelines took, byte for byte the same: "
              f"{r['same-crops']} of {r['both-crops']}")
        print(f"  CPU time: pipeline {r['cpu-pipeline']:.1f} s on {r['pipeline-cores']:.2f} "
              f"cores of {os.cpu_count()}, decode-only {r['cpu-decode-only']:.1f} s "
              f"({r['cpu-pipeline'] / r['cpu-decode-only']:.2f}x)")
        print(f"  bound: skip decoder on one thread {r['cpu-skip-1']:.1f} s + detector "
              f"{r['detect']:.1f} s + landmarks {r['landmarks']:.1f} s = {r['floor-cpu']:.1f} s "
              f"of CPU; on all {os.cpu_count()} cores at once the pipeline / decode-only ratio "
              f"is at most {r['bound']:.2f}")
    projection(results, n)


def projection(results: dict[str, dict], every: int) -> None:
    """Hours for FF++ c23 and the full DFDC at the pipeline's rate on the matching clip set."""
    for (what, sampled), key in zip(DATASETS.items(), ("FF++", "DFDC")):
        rate = next((r for name, r in results.items() if name.startswith(key)), None)
        if rate is None:
            print(f"projection: {what}: no {key} clips here to measure")
            continue
        sampled = sampled * 5 // every
        print(f"projection: {what} at every {every}th frame ({sampled:,} sampled frames): "
              f"{sampled / rate['pipeline'] / 3600:.1f} h at this run's pipeline rate on this "
              f"machine ({os.cpu_count()} cores, as Colab's CPU side; decode-only: "
              f"{sampled / rate['decode-only'] / 3600:.1f} h); {NO_GPU}")


if __name__ == "__main__":
    main()
