"""Preprocessing throughput, measured side by side in one run.

Three ways over the same clips, sampling every Nth frame:
  pipeline      dflab's preprocess_videos: grab() skipped frames, detect, crop, write JPEGs + JSON
  decode-only   grab() every frame, retrieve() only the sampled ones, nothing else
  read-every    a naive pipeline: cap.read() (decode + convert) every frame, keep every Nth, then
                the same detection, crop and JPEG writes

Prints sampled frames per second for each and the ratios. Uses ../shared/data's real FF++ clips
and YuNet when present, otherwise the demo set and the Haar cascades.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import cv2

from dflab.config import PreprocessConfig
from dflab.faces import create_detector, crop_face
from dflab.preprocess import preprocess_videos
from dflab.sources import VideoRecord, list_videos

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def clips_and_detector(tmp: Path) -> tuple[list[VideoRecord], dict]:
    if (SHARED / "ffpp").is_dir():
        recs = list_videos("ffpp", SHARED / "ffpp")
        det = {"detector": "yunet",
               "detector_weights": str(SHARED / "weights/yunet/yunet_s_640_640.onnx")}
    else:
        from dflab.demo import build_demo_dataset

        build_demo_dataset(tmp / "demo", 30, 0)
        recs = list_videos("demo", tmp / "demo")[:10]
        det = {"detector": "haar"}
    return recs, det


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--every", type=int, default=10, help="sample every Nth frame")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        recs, det = clips_and_detector(tmp)
        cfg = PreprocessConfig(every_nth=args.every, audio=False, **det)
        create_detector(cfg.detector, cfg.detector_weights)  # load once before timing

        t = time.perf_counter()
        rep = preprocess_videos(recs, tmp / "pipeline", cfg)
        t_pipe = time.perf_counter() - t
        n_pipe = rep["frames"]

        t = time.perf_counter()
        n_dec = decode_only(recs, args.every)
        t_dec = time.perf_counter() - t

        (tmp / "naive").mkdir()
        t = time.perf_counter()
        n_naive = read_every(recs, args.every, cfg, tmp / "naive")
        t_naive = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert n_pipe == n_dec == n_naive, (n_pipe, n_dec, n_naive)
    fps = {"pipeline": n_pipe / t_pipe, "decode-only": n_dec / t_dec,
           "read-every": n_naive / t_naive}
    print(f"{len(recs)} clips, every {args.every}th frame, detector {cfg.detector}: "
          f"{n_pipe} sampled frames")
    for k, v in fps.items():
        print(f"  {k:<12} {v:8.1f} sampled frames/s")
    print(f"ratio pipeline / decode-only  = {fps['pipeline'] / fps['decode-only']:.2f}")
    print(f"ratio pipeline / read-every   = {fps['pipeline'] / fps['read-every']:.2f}")


if __name__ == "__main__":
    main()
