"""Forensic feature cost, measured side by side in one run: the time of all features of one
256x256 crop against the time of one FFT plus one 8x8 block DCT of the same crop (the floor any
frequency-domain feature set pays: ``numpy.fft.fft2`` and ``scipy.fft.dctn`` over the blocks, the
libraries' own calls), interleaved, each the median of many rounds; then the throughput of
``extract_many`` over a batch of 256 different crops (JPEG files, decoding included) on one
process and on every core, the torch backend against NumPy on the same 256 crops in memory (on
the GPU when there is one), and a projection for FF++ c23 at every 5th frame.

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

from dflab.data.synthetic import _source_photo
from dflab.forensic.extract import extract_many
from dflab.forensic.features import to_gray, block_dct, extract_features, feature_names
from scale import projections  # benchmarks/scale.py


def interleaved(fns: dict, rounds: int) -> dict[str, float]:
    """The median seconds of each function over ``rounds`` rounds that call each one in turn
    (after one warm-up call each), so a slow spell of the machine hits them all alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def main() -> None:
    import argparse

    import cv2

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subset", default="", help="a saved feature subset: name or .json file")
    args = ap.parse_args()
    from scipy.fft import dctn

    photo = _source_photo()
    crop = photo[40:296, 100:356]  # uint8 (256, 256, 3) BGR
    gray = to_gray(crop)
    blocks = (gray - 128.0).reshape(32, 8, 32, 8).transpose(0, 2, 1, 3)
    runs = {"features": lambda: extract_features(crop),
            "floor": lambda: (np.fft.fft2(gray), dctn(blocks, axes=(2, 3), norm="ortho")),
            "own block DCT": lambda: block_dct(gray)}
    times = interleaved(runs, 60)
    t_all, t_floor = times["features"], times["floor"]
    print(f"{len(feature_names())} features of a 256x256 crop: {t_all * 1000:.2f} ms "
          f"({1 / t_all:.1f} crops/s per core)")
    print(f"one FFT + one 8x8 block DCT of the same crop (numpy.fft.fft2 + scipy.fft.dctn): "
          f"{t_floor * 1000:.2f} ms (dflab's own block DCT alone: "
          f"{times['own block DCT'] * 1000:.2f} ms)")
    print(f"ratio all features / (FFT + DCT) = {t_all / t_floor:.1f}")
    if args.subset:
        from dflab.forensic.refine import load_subset

        names = load_subset(args.subset, os.environ.get("DFLAB_DATA", "data"))
        sub = interleaved({"subset": lambda: extract_features(crop, names=names),
                           "all": lambda: extract_features(crop)}, 40)
        t_sub, t_full = sub["subset"], sub["all"]
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
    # the torch backend over the same 256 crops in memory (no decoding), against NumPy's loop
    import torch

    from dflab.core.environment import torch_device
    from dflab.forensic.features_torch import extract_batch

    mem = [photo[y:y + 256, x:x + 256] for y, x in
           zip(rng.integers(0, h - 256, 256), rng.integers(0, w - 256, 256))]
    device = torch_device("auto")
    extract_batch(mem[:4], str(device))  # warm-up (geometry, kernels)
    t = time.perf_counter()
    for k in range(0, 256, 64):
        extract_batch(mem[k:k + 64], str(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    t_torch = time.perf_counter() - t
    t = time.perf_counter()
    for img in mem:
        extract_features(img)
    t_numpy = time.perf_counter() - t
    print(f"256 crops in memory: torch backend on {device} (batches of 64) "
          f"{256 / t_torch:.1f} crops/s, NumPy {256 / t_numpy:.1f} crops/s: ratio torch / NumPy "
          f"= {t_numpy / t_torch:.2f}")
    for workers, rate in rates.items():
        print(f"batch of 256 crops (256x256 JPEG, decoding included), {workers} process(es): "
              f"{rate:.1f} crops/s")
    best = max(rates.values())
    print("\n".join(projections(f"features on {max(rates)} process(es) of", best)))


if __name__ == "__main__":
    main()
