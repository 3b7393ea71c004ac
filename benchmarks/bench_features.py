"""Forensic feature cost, measured side by side in one run: the time of all features of one
256x256 crop against the time of one FFT plus one 8x8 block DCT of the same crop (the floor any
frequency-domain feature set pays), each the median of many repeats; then the throughput of
``extract_many`` over a batch of 256 different crops (JPEG files, decoding included) on one
process and on every core, and a projection for FF++ c23 at every 5th frame.

``--subset NAME_OR_JSON`` (a subset saved by ``dflab forensic refine``; a name is looked up under
``$DFLAB_DATA/feature_sets``) also times that subset against all features on the same crop,
side by side: extraction computes only the families the subset needs."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from dflab.demo import _source_photo
from dflab.features import _gray, block_dct, extract_features, extract_many, feature_names

FFPP_C23_CROPS = 500_000  # 5,000 videos (1,000 real, 4 methods) x ~100 crops at every 5th frame


def median_time(fn, reps: int = 20) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    import argparse

    import cv2

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subset", default="", help="a saved feature subset: name or .json file")
    args = ap.parse_args()
    photo = _source_photo()
    crop = photo[40:296, 100:356]  # uint8 (256, 256, 3) BGR
    gray = _gray(crop)
    extract_features(crop)  # warm-up (imports, FFT plans)
    t_all = median_time(lambda: extract_features(crop), 40)
    t_floor = median_time(lambda: (np.fft.fft2(gray), block_dct(gray)), 80)
    print(f"{len(feature_names())} features of a 256x256 crop: {t_all * 1000:.2f} ms "
          f"({1 / t_all:.1f} crops/s per core)")
    print(f"one FFT + one 8x8 block DCT of the same crop: {t_floor * 1000:.2f} ms")
    print(f"ratio all features / (FFT + DCT) = {t_all / t_floor:.1f}")
    if args.subset:
        from dflab.refine import load_subset

        names = load_subset(args.subset, os.environ.get("DFLAB_DATA", "data"))
        extract_features(crop, names=names)
        t_sub = median_time(lambda: extract_features(crop, names=names), 40)
        t_full = median_time(lambda: extract_features(crop), 40)
        print(f"subset '{args.subset}' ({len(names)} features): {t_sub * 1000:.2f} ms against all "
              f"{len(feature_names())}: {t_full * 1000:.2f} ms; ratio all / subset = "
              f"{t_full / t_sub:.2f}")

    tmp = Path(tempfile.mkdtemp())
    try:
        rng = np.random.default_rng(0)
        h, w = photo.shape[:2]
        paths = []
        for k in range(256):
            y, x = rng.integers(0, h - 256), rng.integers(0, w - 256)
            p = tmp / f"{k:03d}.jpg"
            cv2.imwrite(str(p), photo[y:y + 256, x:x + 256], [cv2.IMWRITE_JPEG_QUALITY, 95])
            paths.append(str(p))
        cores = os.cpu_count() or 1
        rates = {}
        for workers in sorted({1, cores}):
            t = time.perf_counter()
            extract_many(paths, workers=workers)
            rates[workers] = len(paths) / (time.perf_counter() - t)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for workers, rate in rates.items():
        print(f"batch of 256 crops (256x256 JPEG, decoding included), {workers} process(es): "
              f"{rate:.1f} crops/s")
    best = max(rates.values())
    print(f"projection: FF++ c23 at every 5th frame ({FFPP_C23_CROPS:,} crops): "
          f"{FFPP_C23_CROPS / best / 3600:.1f} h on this machine ({FFPP_C23_CROPS / rates[1] / 3600:.1f} "
          f"CPU-hours)")


if __name__ == "__main__":
    main()
