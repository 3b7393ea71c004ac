"""Forensic feature cost, measured side by side in one run: the time of all features of one
256x256 crop against the time of one FFT plus one 8x8 block DCT of the same crop (the floor any
frequency-domain feature set pays)."""

from __future__ import annotations

import time

import numpy as np

from dflab.demo import _source_photo
from dflab.features import _gray, block_dct, extract_features, feature_names


def best_of(fn, reps: int = 20) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    crop = _source_photo()[40:296, 100:356]  # uint8 (256, 256, 3) BGR
    gray = _gray(crop)
    extract_features(crop)  # warm-up (imports, FFT plans)
    t_all = best_of(lambda: extract_features(crop))
    t_floor = best_of(lambda: (np.fft.fft2(gray), block_dct(gray)), 50)
    print(f"{len(feature_names())} features of a 256x256 crop: {t_all * 1000:.1f} ms "
          f"({1 / t_all:.1f} crops/s per core)")
    print(f"one FFT + one 8x8 block DCT of the same crop: {t_floor * 1000:.2f} ms")
    print(f"ratio all features / (FFT + DCT) = {t_all / t_floor:.1f}")


if __name__ == "__main__":
    main()
