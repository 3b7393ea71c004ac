"""Forensic features over many crop files: the NumPy backend in worker processes or the torch
backend in batches (:mod:`dflab.forensic.features_torch`), each vector cached on disk under a key of the
file, the crop size, the feature subset and ``FEATURES_VERSION``. The measurements themselves
are in :mod:`dflab.forensic.features`."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from dflab.data.cluster import run_tasks
from dflab.forensic.features import (FEATURES_VERSION, centre_crop, extract_features,
                                     families_for, feature_names)
from dflab.forensic.features_torch import extract_batch

log = logging.getLogger(__name__)

__all__ = ["extract_many"]


def _read(path: str) -> np.ndarray:
    """An image file as OpenCV reads it (any depth and channels); unreadable: OSError."""
    import cv2

    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise OSError(f"cannot read '{path}'")
    return img


def _one_blas_thread() -> None:
    """A pool worker's BLAS on one thread: each of N workers running BLAS on every core made the
    dot products spin against each other (256 crops on 2 workers: 19.8 crops/s, against 135 with
    one BLAS thread each and 111 on one process)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _one(args: tuple[str, int, list[str] | None]) -> np.ndarray:
    path, crop_size, names = args
    return extract_features(_read(path), crop_size, names)


def _many(items: list[tuple[str, int, list[str] | None]]) -> list[np.ndarray]:
    return [_one(item) for item in items]


def _key(path: str, crop_size: int, names: list[str] | None = None,
         backend: str = "numpy") -> str:
    st = os.stat(path)
    subset = "" if names is None else "|" + ",".join(names)
    engine = "" if backend == "numpy" else "|" + backend  # the backends agree to 1e-4, not bits
    return hashlib.sha1(f"{FEATURES_VERSION}|{path}|{st.st_size}|{st.st_mtime_ns}|{crop_size}"
                        f"{subset}{engine}".encode()).hexdigest()


def _cached(cache: Path, key: str) -> Path:
    return cache / key[:2] / (key + ".vec")


# A cached vector's file: magic, length and CRC-32 of the float64 values, then the values. Written
# by hand: .npy carries a shape but no checksum, so a file cut or damaged in place (a crash, a
# bad copy) would be read back as features.
_VEC_MAGIC = b"DFLV1\0\0\0"


def _save_vector(path: Path, v: np.ndarray) -> None:
    data = np.ascontiguousarray(v, dtype="<f8").tobytes()
    head = _VEC_MAGIC + len(v).to_bytes(4, "little") + zlib.crc32(data).to_bytes(4, "little")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(head + data)
    os.replace(tmp, path)


def _load_vector(path: Path, length: int | None = None) -> np.ndarray | None:
    """The vector in ``path``; None when it is missing, or (logged, then removed so that it is
    computed again) cut short, damaged or of another length than ``length``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    n = int.from_bytes(raw[8:12], "little") if len(raw) >= 16 else -1
    data = raw[16:]
    if raw[:8] != _VEC_MAGIC or len(data) != 8 * n or (length is not None and n != length) \
            or zlib.crc32(data) != int.from_bytes(raw[12:16], "little"):
        log.warning("features cache: '%s' is cut short or damaged (%d bytes); computing that "
                    "crop again", path, len(raw))
        path.unlink(missing_ok=True)
        return None
    return np.frombuffer(data, dtype="<f8").astype(np.float64)


def extract_many(paths: list[str], cache_dir: str | Path | None = None, crop_size: int = 0,
                 workers: int = 1, progress: Callable[[int, int], None] | None = None,
                 check: Callable[[], None] | None = None, cluster: str = "",
                 names: list[str] | None = None, backend: str = "numpy", device: str = "auto",
                 batch_size: int = 64) -> np.ndarray:
    """float64 (n, n_features) for many image files; each crop's vector is cached on disk
    (keyed by path, size, mtime, settings, backend and feature version), so re-runs are instant.
    ``names``: a subset (columns in that order; only the families it needs are computed, and a
    crop whose full vector is cached is read from it). ``cluster``: a Dask scheduler (see
    :mod:`dflab.data.cluster`) computes them, 64 crops a task. ``backend="torch"``:
    :mod:`dflab.forensic.features_torch` computes every feature for batches of ``batch_size``
    equal-sized crops on ``device`` (``auto``: the GPU when there is one)."""
    # Long on purpose: the cache lookup, the two backends and the worker pool share one progress
    # count and one store; split, each part would take all of them as arguments.
    if backend not in ("numpy", "torch"):
        raise ValueError(f"features backend '{backend}' is not one of numpy, torch")
    if backend == "torch" and cluster:
        raise ValueError("the torch features backend runs in this process; use "
                         "features.backend=numpy with env.cluster")
    n = len(paths)
    if names is not None:
        families_for(names)  # unknown names fail here, before any work
        if list(names) == feature_names():
            names = None
    cols = [feature_names().index(c) for c in names] if names is not None else None
    X = np.zeros((n, len(names) if names is not None else len(feature_names())))
    todo = []
    cache = Path(cache_dir) if cache_dir else None
    for i, p in enumerate(paths):
        if cache is not None:
            v = _load_vector(_cached(cache, _key(p, crop_size, names, backend)), X.shape[1])
            if v is not None:
                X[i] = v
                continue
            if cols is not None:  # a subset: the crop's full vector, when cached, holds it
                v = _load_vector(_cached(cache, _key(p, crop_size, None, backend)),
                                 len(feature_names()))
                if v is not None:
                    X[i] = v[cols]
                    continue
        todo.append(i)
    done = n - len(todo)
    if progress:
        progress(done, n)

    def store(i: int, v: np.ndarray) -> None:
        X[i] = v
        if cache is not None:
            _save_vector(_cached(cache, _key(paths[i], crop_size, names, backend)), v)

    if backend == "torch" and todo:
        _torch_many(paths, todo, crop_size, cols, batch_size, device, store, check,
                    (lambda k: progress(done + k, n)) if progress else None)
    elif cluster and todo:
        chunks = [todo[k:k + 64] for k in range(0, len(todo), 64)]
        finished = [done]

        def arrived(j: int, vectors: list | None, exc: BaseException | None) -> None:
            if exc is not None:
                raise RuntimeError(f"feature extraction failed on the cluster for "
                                   f"'{paths[chunks[j][0]]}' and the crops after it: {exc}")
            for i, v in zip(chunks[j], vectors):
                store(i, v)
            finished[0] += len(chunks[j])
            if progress:
                progress(finished[0], n)

        run_tasks(cluster, _many, [[(paths[i], crop_size, names) for i in c] for c in chunks],
                  arrived, check)
    elif workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                 initializer=_one_blas_thread) as pool:
            for k, (i, v) in enumerate(zip(todo, pool.map(
                    _one, [(paths[i], crop_size, names) for i in todo], chunksize=16))):
                store(i, v)
                if check:
                    check()
                if progress and (k % 16 == 0 or k == len(todo) - 1):
                    progress(done + k + 1, n)
    else:
        for k, i in enumerate(todo):
            if check:
                check()
            store(i, _one((paths[i], crop_size, names)))
            if progress and (k % 16 == 0 or k == len(todo) - 1):
                progress(done + k + 1, n)
    return X


def _torch_many(paths: list[str], todo: list[int], crop_size: int, cols: list[int] | None,
                batch_size: int, device: str, store: Callable[[int, np.ndarray], None],
                check: Callable[[], None] | None, progress: Callable[[int], None] | None
                ) -> None:
    """The torch backend over the files ``paths[todo]``: decoded (and centre-cropped) in order,
    grouped by shape, a batch computed whenever one shape has ``batch_size`` crops, or for the
    largest group when ``4 x batch_size`` crops wait (native-resolution crops rarely share a
    shape: ``features.crop_size`` makes them equal), and the rest at the end; ``store`` gets
    each crop's vector (the ``cols`` of it for a subset)."""
    pending: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
    finished = 0

    def flush(shape: tuple[int, ...]) -> None:
        nonlocal finished
        items = pending.pop(shape)
        X = extract_batch([img for _, img in items], device)
        for (i, _), v in zip(items, X):
            store(i, v if cols is None else v[cols])
        finished += len(items)
        if progress:
            progress(finished)

    for i in todo:
        if check:
            check()
        img = centre_crop(_read(paths[i]), crop_size)
        pending.setdefault(img.shape, []).append((i, img))
        if len(pending[img.shape]) >= batch_size:
            flush(img.shape)
        elif sum(len(v) for v in pending.values()) >= 4 * batch_size:
            flush(max(pending, key=lambda s: len(pending[s])))
    for shape in list(pending):
        flush(shape)
