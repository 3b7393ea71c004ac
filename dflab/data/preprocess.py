"""Preprocessing: labelled videos -> face crops, frames, per-frame JSON, aligned audio features.

Per video, under ``<out>/videos/<dataset>/<method>/<compression>/<video_id>/``:

- ``crops/<frame>.jpg`` (the primary face, padded) and ``frames/<frame>.jpg`` (unless crops-only);
- ``meta.json``: the record, the video's properties, the detector and settings, and one entry per
  sampled frame (index, timestamp, primary box and score, every face, crop and frame paths, or the
  reason there is no face: nothing is dropped silently) plus the video's face coverage;
- ``audio.npz``: MFCC, spectral centroid, bandwidth, ZCR and RMS, row k = the k-th sampled frame.

A video is written into ``<video_id>.part/`` and renamed when finished, so a re-run skips finished
videos and redoes partial ones. ``<out>/index.csv`` (one row per sampled frame) is rebuilt from the
``meta.json`` files at the end of every run, so shards processed on several machines merge by
copying their ``videos/`` folders together and running ``dflab preprocess --index-only``.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import dataclasses
import hashlib
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from dflab.core.config import LabConfig, PreprocessConfig, config_from_dict
from dflab.core.events import Callback, Cancelled, CancelToken, Emitter
from dflab.core.files import read_json, reading, sha256_file, write_json
from dflab.data.audio import extract_wav, frame_audio_features, has_audio
from dflab.data.cluster import run_tasks
from dflab.data.faces import Face, create_detector, cut_primary, primary_face
from dflab.data.landmarks import shared_landmarker
from dflab.data.sources import IMAGE_EXTS, VideoRecord, video_uid
from dflab.data.sync_windows import extract_sync, write_windows
from dflab.data.video import (count_frames, iter_frames, iter_frames_nvdec,
                              iter_frames_skipping, prefetch, probe_video, read_image,
                              resolve_decode, sample_indices)

log = logging.getLogger(__name__)

__all__ = ["preprocess_videos", "process_video", "build_index", "frame_record", "video_dir",
           "select_shard",
           "parse_shard", "INDEX_COLUMNS"]

PREPROCESS_SETTINGS = "preprocess_config.json"
INDEX_COLUMNS = ["uid", "video_id", "dataset", "method", "compression", "label", "split",
                 "source_id", "frame_index", "timestamp", "has_face", "reason", "confidence",
                 "n_faces", "x1", "y1", "x2", "y2", "crop_path", "frame_path", "landmarks"]
BATCH = 8  # frames per detector call (YOLO batches them on the GPU)


def video_dir(out: Path, rec: VideoRecord) -> Path:
    return Path(out) / "videos" / rec.uid


def parse_shard(text: str) -> tuple[int, int]:
    """'i/N' -> (i, N) with 0 <= i < N."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"shard '{text}' must look like i/N, e.g. 0/4") from None
    if not 0 <= i < n:
        raise ValueError(f"shard '{text}': need 0 <= i < N")
    return i, n


def select_shard(records: list[VideoRecord], shard: tuple[int, int] = (0, 1)) -> list[VideoRecord]:
    """The records of shard i of N, by a hash of the uid (stable across machines and runs)."""
    i, n = shard
    if n == 1:
        return list(records)
    return [r for r in records if int(hashlib.sha1(r.uid.encode()).hexdigest(), 16) % n == i]


_DETECTOR_CACHE: dict[tuple, Any] = {}


def _detector(spec: dict):
    key = tuple(sorted(spec.items()))
    if key not in _DETECTOR_CACHE:
        _DETECTOR_CACHE[key] = create_detector(**spec)
    return _DETECTOR_CACHE[key]


def _detector_file(detector) -> dict[str, str]:
    """{"name", "sha256"} of the weights file a detector loaded ({} for haar)."""
    weights = getattr(detector, "weights", None)
    if not weights or not Path(str(weights)).is_file():
        return {}
    return {"name": Path(str(weights)).name, "sha256": sha256_file(weights)}


def _imwrite(path: Path, img: np.ndarray, quality: int) -> None:
    import cv2

    if not cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)]):
        raise OSError(f"could not write '{path}' (disk full or not writable?)")


def _original_faces(out: Path, rec: VideoRecord) -> dict[int, list[dict]] | None:
    """Faces per frame of this fake's original video, if that one is already processed."""
    orig = VideoRecord("", rec.source_id, "real", "original", rec.dataset, rec.compression)
    meta = video_dir(out, orig) / "meta.json"
    if not meta.exists():
        return None
    return {f["frame_index"]: f["faces"] for f in read_meta(meta)["frames"]}


#: what to do about a damaged meta.json (every reader of it says the same)
META_REDO = "delete that video's folder and preprocess again (the other videos are kept)"


def read_meta(path: Path) -> dict:
    """A finished video's ``meta.json``, its record, summary, settings and frames checked (one
    line naming the file when it is damaged)."""
    redo = META_REDO
    meta = read_json(path, "per-frame record", redo)
    with reading(path, "per-frame record", redo):
        for key, kind in (("record", dict), ("summary", dict), ("settings", dict),
                          ("frames", list)):
            if not isinstance(meta[key], kind):
                raise TypeError(f"{key} is not a {kind.__name__}")
        VideoRecord(**meta["record"])
        for f in meta["frames"]:
            if not (isinstance(f["frame_index"], int) and isinstance(f["faces"], list)
                    and "primary" in f and isinstance(f.get("crop_path") or "", str)):
                raise TypeError(f"a frame entry without a frame index, faces, primary face or "
                                f"crop path: {str(f)[:60]}")
    return meta


def sample_frames(path: str | Path, every_nth: int, num_frames: int, decode: str = "all"
                  ) -> tuple[dict[str, Any], float, Iterator[tuple[int, np.ndarray | None]]]:
    """(container info, fps, iterator of (frame index, uint8 (H, W, 3) BGR frame or None when
    it cannot be decoded)) for an image or a video: every ``every_nth`` frame, else
    ``num_frames`` evenly spaced, read by the decoder ``decode`` (see
    :func:`~dflab.data.video.resolve_decode`). Preprocessing and prediction both sample with
    it; the info's ``decoder`` says which decoder read the video."""
    if Path(path).suffix.lower() in IMAGE_EXTS:
        img = read_image(path)
        return ({"path": str(path), "frame_count": 1, "fps": 0.0, "width": img.shape[1],
                 "height": img.shape[0], "duration_s": 0.0, "codec": "image",
                 "decoder": "image"}, 1.0, iter([(0, img)]))
    vinfo = probe_video(path)
    decoder = resolve_decode(decode)
    info = {**vinfo.to_dict(), "decoder": decoder}
    if decoder == "keyframes":
        return info, vinfo.fps, iter_frames_skipping(path, keyframes=True)
    read = {"all": iter_frames, "skip": iter_frames_skipping, "nvdec": iter_frames_nvdec}[decoder]
    if every_nth > 0:
        return info, vinfo.fps, read(path, every_nth=every_nth)
    n = vinfo.frame_count if vinfo.frame_count > 0 else count_frames(path)
    return info, vinfo.fps, read(path, sample_indices(n, 0, num_frames))


def truncation_note(info: dict[str, Any], records: list[dict], cfg: PreprocessConfig) -> str:
    """"" when the frames decoded reach the end the container claims; else a sentence saying
    where decoding stopped (a cut-off file whose header still claims the full length)."""
    claimed = int(info.get("frame_count", 0))
    if claimed <= 1 or not records or info.get("decoder") == "keyframes":  # no step to expect
        return ""
    last = max(r["frame_index"] for r in records)
    step = cfg.every_nth if cfg.every_nth > 0 else max(1, claimed // max(1, cfg.num_frames))
    if claimed - 1 - last <= max(step, 2, 0.02 * claimed):
        return ""
    return (f"truncated: frames decode up to {last} of the {claimed} the container claims "
            f"({(last + 1) / claimed:.0%}); the frames kept are the ones that exist")


def _finished(final: Path, rec: VideoRecord, meta: dict) -> dict:
    """The summary of a video processed before, with its split and label taken from the
    current labels: a relabelled or re-split source (e.g. a demo set rebuilt with more
    identities) must not keep stale splits, or a training identity could land in test."""
    stale = {k: getattr(rec, k) for k in ("split", "label")
             if meta["record"].get(k) != getattr(rec, k)}
    if stale:
        log.info("%s: %s changed in the labels; updated in its meta.json", rec.uid,
                 ", ".join(f"{k} {meta['record'].get(k)!r} -> {v!r}" for k, v in stale.items()))
        meta["record"].update(stale)
        write_json(final / "meta.json", meta)
    return {"uid": rec.uid, "skipped": True, **meta["summary"]}


class _FrameRecords:
    """The per-frame work of one video: faces found a batch at a time (or the original video's
    boxes reused), the primary face's crop cut, the JPEG writes queued on one writer thread (in
    order), and each frame's record kept in ``records``."""

    def __init__(self, part: Path, cfg: PreprocessConfig, fps: float, detector: Any,
                 reuse: dict[int, list[dict]] | None, landmarker: Any):
        self.part, self.cfg, self.fps = part, cfg, fps
        self.detector, self.reuse, self.landmarker = detector, reuse, landmarker
        self.records: list[dict] = []
        self.writes: list[cf.Future] = []
        self.writer = cf.ThreadPoolExecutor(1, thread_name_prefix="dflab-jpeg")

    def add(self, batch: list[tuple[int, np.ndarray | None]]) -> None:
        """Records for ``batch``: (frame index, BGR frame or None where it did not decode)."""
        frames = [f for _, f in batch if f is not None]
        found = iter(self.detector.detect_batch(frames)
                     if self.detector is not None and frames else [])
        for idx, frame in batch:
            entry: dict[str, Any] = {"frame_index": idx, "timestamp": round(idx / self.fps, 4),
                                     "faces": [], "primary": None, "crop_path": "",
                                     "frame_path": "", "reason": ""}
            if frame is None:
                entry["reason"] = "frame could not be decoded"
            else:
                self._frame(idx, frame, entry, found)
            self.records.append(entry)

    def _frame(self, idx: int, frame: np.ndarray, entry: dict[str, Any],
               found: Iterator[list[Face]]) -> None:
        cfg = self.cfg
        if self.reuse is not None:
            faces = [Face.from_dict(d) for d in self.reuse.get(idx, [])]
            if idx not in self.reuse:
                entry["reason"] = "original video has no record of this frame"
        else:
            faces = next(found)
        entry["faces"] = [f.to_dict() for f in faces]
        name = f"{idx:06d}.jpg"
        if cfg.save_frames:
            self.writes.append(self.writer.submit(_imwrite, self.part / "frames" / name, frame,
                                                  cfg.jpeg_quality))
            entry["frame_path"] = f"frames/{name}"
        face = primary_face(faces, frame.shape)
        if face is not None:
            crop, entry["primary"] = cut_primary(frame, face, cfg, self.landmarker)
            self.writes.append(self.writer.submit(_imwrite, self.part / "crops" / name, crop,
                                                  cfg.jpeg_quality))
            entry["crop_path"] = f"crops/{name}"
        elif faces:
            entry["reason"] = "no plausible face (every box failed the shape checks)"
        elif not entry["reason"]:
            entry["reason"] = f"no face scored >= {cfg.min_confidence}"

    def close(self) -> None:
        """Wait for the queued writes."""
        self.writer.shutdown(wait=True)

    def check_writes(self) -> None:
        """The first write that failed (a full disk) raises its error."""
        for fut in self.writes:
            fut.result()


def process_video(rec: VideoRecord, out: str | Path, cfg: PreprocessConfig, det_spec: dict,
                  cancel: CancelToken | None = None, redo: bool = False) -> dict:
    """Process one video (or image) into its folder; returns its summary. Raises on bad input.
    A finished video is skipped, unless ``redo`` and it was made with other settings (then it
    is replaced once the new one is complete)."""
    # Long on purpose: one video's folder from start to its atomic rename; the per-frame work is
    # _FrameRecords.
    out = Path(out)
    final = video_dir(out, rec)
    if (final / "meta.json").exists():
        meta = read_meta(final / "meta.json")
        if not redo or not _differ(meta["settings"], asdict(cfg)):
            return _finished(final, rec, meta)
    if not rec.exists or not Path(rec.path).exists():
        raise FileNotFoundError(f"'{rec.path}' is listed but missing on disk")
    t0 = time.monotonic()
    part = final.with_name(final.name + ".part")
    if part.exists():
        shutil.rmtree(part)  # a partial run: redo it from scratch
    (part / "crops").mkdir(parents=True)
    if cfg.save_frames:
        (part / "frames").mkdir()

    info, fps, frames_iter = sample_frames(rec.path, cfg.every_nth, cfg.num_frames,
                                           cfg.decode)
    frames_iter = prefetch(frames_iter)  # decode on one thread, detect and write on this one
    reuse = _original_faces(out, rec) if cfg.reuse_original_boxes and rec.label == "fake" else None
    detector = None if reuse is not None else _detector(det_spec)
    landmarker = shared_landmarker(cfg.landmarks, detector.name if detector is not None else
                                   _detector(det_spec).name)
    frames = _FrameRecords(part, cfg, fps, detector, reuse, landmarker)
    decoded = 0
    batch: list[tuple[int, np.ndarray | None]] = []
    try:
        for idx, frame in frames_iter:
            if cancel is not None:
                cancel.check()
            decoded += frame is not None
            batch.append((idx, frame))
            if len(batch) >= BATCH:
                frames.add(batch)
                batch = []
        frames.add(batch)
    finally:
        frames_iter.close()
        frames.close()
    frames.check_writes()  # a failed JPEG write (disk full) fails this video
    if decoded == 0:
        shutil.rmtree(part, ignore_errors=True)
        raise ValueError(f"'{rec.path}' decoded no frames (truncated or not a video)")
    records = frames.records

    audio: dict[str, Any] = {"has_audio": False}
    if cfg.audio and not rec.is_image:
        audio = _audio(rec.path, part, records, cfg)

    with_face = sum(1 for r in records if r["primary"])
    truncated = truncation_note(info, records, cfg)
    if truncated:
        log.warning("%s: %s", rec.path, truncated)
    with_points = sum(1 for r in records if r["primary"] and "landmarks68" in r["primary"])
    summary = {"frames": len(records), "frames_with_face": with_face, "truncated": truncated,
               "frames_with_landmarks": with_points,
               "coverage": round(with_face / len(records), 4) if records else 0.0,
               "faces_per_frame": round(sum(len(r["faces"]) for r in records) / len(records), 3),
               "has_audio": audio["has_audio"], "seconds": round(time.monotonic() - t0, 2)}
    meta = {"record": rec.to_dict(), "video": info, "settings": asdict(cfg),
            "detector": detector.describe() if detector is not None else
            {"name": "reused from original", "original": rec.source_id},
            "landmarks": landmarker.describe() if landmarker is not None else {"name": "off"},
            "audio": audio, "summary": summary, "frames": records}
    if cfg.sync_frames > 0 and audio["has_audio"]:
        summary["sync_windows"] = write_windows(part, meta, cfg)
    write_json(part / "meta.json", meta)
    if final.exists():
        shutil.rmtree(final)
    os.replace(part, final)
    return {"uid": rec.uid, "skipped": False, **summary}


def _audio(path: str, part: Path, records: list[dict], cfg: PreprocessConfig) -> dict:
    if not has_audio(path):
        return {"has_audio": False, "reason": "no audio stream"}
    with tempfile.TemporaryDirectory() as td:
        wav = extract_wav(path, Path(td) / "a.wav")
        ts = np.array([r["timestamp"] for r in records])
        feats = frame_audio_features(wav, ts, cfg.audio_window_s, cfg.n_mfcc)
    np.savez(part / "audio.npz", frame_index=np.array([r["frame_index"] for r in records]),
             timestamp=ts, **feats)
    return {"has_audio": True, "file": "audio.npz", "window_s": cfg.audio_window_s,
            "n_mfcc": cfg.n_mfcc, "valid_rows": int(feats["valid"].sum())}


def _worker(args: tuple) -> dict:
    rec, out, cfg, spec, redo = args
    return process_video(rec, out, cfg, spec, redo=redo)


#: settings that do not change the crops, so a folder may be resumed with other values
NEUTRAL_SETTINGS = {"workers", "sync_frames", "sync_mouth_px"}  # sync.npz records its own


def settings_changes(out: Path, cfg: PreprocessConfig) -> dict[str, tuple[Any, Any]]:
    """{setting: (the value that made ``out``'s finished videos, the value now)} for every
    setting that would make different crops; empty for a new folder or the same settings."""
    path = out / PREPROCESS_SETTINGS
    if path.exists():
        before = read_settings(path)
    else:  # a first pass stopped before its end (the file is written last): a finished video says
        meta = next((m for m in sorted((out / "videos").rglob("meta.json"))
                     if not m.parent.name.endswith(".part")), None)
        if meta is None:
            return {}
        before = read_meta(meta)["settings"]
    return _differ(before, asdict(cfg))


def read_settings(path: Path) -> dict[str, Any]:
    """A processed folder's ``preprocess_config.json`` (the settings that made its crops)."""
    redo = ("delete it: the folder's settings are then read from its videos' meta.json")
    settings = read_json(path, "preprocessing settings", redo)
    with reading(path, "preprocessing settings", redo):
        if not isinstance(settings, dict):
            raise TypeError("not a mapping of setting: value")
        known = {f.name for f in fields(PreprocessConfig)}
        # each value checked as a config value is (type and bounds)
        config_from_dict({"preprocess": {k: v for k, v in settings.items() if k in known}})
    return settings


def _decode_family(decode: str) -> str:
    """Decoders that give the same frames share a family: all and skip (and auto where it
    resolves to skip) take the same frames pixel for pixel."""
    try:
        decode = resolve_decode(decode) if decode == "auto" else decode
    except ValueError:
        pass
    return "exact" if decode in ("all", "skip") else decode


def _differ(before: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    before = {"decode": "all", **before}  # made before the setting existed: OpenCV decoded all
    return {k: (before[k], v) for k, v in now.items()
            if k in before and k not in NEUTRAL_SETTINGS and before[k] != v
            and not (k == "decode" and _decode_family(before[k]) == _decode_family(v))}


def preprocess_videos(records: list[VideoRecord], out: str | Path, cfg: PreprocessConfig,
                      shard: tuple[int, int] = (0, 1), cache_dir: str = "",
                      callbacks: list[Callback] | None = None,
                      cancel: CancelToken | None = None, force: bool = False,
                      cluster: str = "") -> dict:
    """Process every record of this shard; bad videos are reported and the batch goes on.

    A folder made with other settings (see :func:`settings_changes`) is refused, so crops made
    two ways never mix; ``force`` re-processes the videos made with other settings instead.
    ``cluster``: a Dask scheduler (see :mod:`dflab.data.cluster`), one task per video, instead of
    ``cfg.workers`` local processes; the output is the same.
    Returns a report: counts, per-video summaries, errors, and the path of the index.
    """
    # Long on purpose: one shard's life in order (check settings, lock, schedule on a pool or Dask,
    # collect errors, index, report); the pieces share the lock and the error list.
    out = Path(out)
    resolve_decode(cfg.decode)  # a decoder this machine lacks is one error, not one per video
    changes = settings_changes(out, cfg) if out.exists() else {}
    if changes and not force:
        raise ValueError(
            f"'{out}' was made with other preprocessing settings: "
            + ", ".join(f"{k} {a!r} (now {b!r})" for k, (a, b) in changes.items())
            + "; give another output folder, or re-process every video with the new settings "
              "(`dflab preprocess --force`)")
    redo = bool(changes)
    out.mkdir(parents=True, exist_ok=True)
    em = Emitter("preprocess", callbacks, cancel)
    todo = select_shard(records, shard)
    # originals first, so fakes can reuse their boxes
    todo.sort(key=lambda r: (r.label != "real", r.uid))
    spec = {"name": cfg.detector, "weights": cfg.detector_weights, "det_size": cfg.det_size,
            "min_confidence": cfg.min_confidence, "sha256": cfg.detector_sha256}
    if cache_dir:
        spec["cache_dir"] = cache_dir
    # load the detector once here: a wrong weights file is one error, not one per video
    detector_file = _detector_file(_detector(spec)) if todo else {}
    errors_path = out / "errors.json"
    errors: dict[str, str] = read_json(errors_path) if errors_path.exists() else {}
    done: list[dict] = []
    em.progress(0, len(todo), "video")

    def record_result(rec: VideoRecord, result: dict | None, exc: BaseException | None) -> None:
        if exc is None and result is not None:
            errors.pop(rec.uid, None)
            done.append(result)
        else:
            msg = f"{type(exc).__name__}: {exc}"
            errors[rec.uid] = msg
            em.error(msg, item=rec.path)
            log.warning("preprocess %s: %s", rec.path, msg)
        write_json(errors_path, errors)
        em.progress(len(done) + sum(1 for r in todo if r.uid in errors), len(todo), "video",
                    rec.uid)

    try:
        if cluster:
            run_tasks(cluster, _worker, [(rec, out, cfg, spec, redo) for rec in todo],
                      lambda i, result, exc: record_result(todo[i], result, exc), em.check)
        elif cfg.workers <= 1:
            for rec in todo:
                em.check()
                try:
                    record_result(rec, process_video(rec, out, cfg, spec, em.cancel, redo),
                                  None)
                except Cancelled:
                    raise
                except Exception as exc:  # one bad video never stops the batch
                    record_result(rec, None, exc)
        else:
            ctx = mp.get_context("spawn")
            with cf.ProcessPoolExecutor(cfg.workers, mp_context=ctx) as pool:
                futs = {pool.submit(_worker, (rec, out, cfg, spec, redo)): rec for rec in todo}
                for fut in cf.as_completed(futs):
                    rec = futs[fut]
                    exc = fut.exception()
                    record_result(rec, None if exc else fut.result(), exc)
                    if em.cancel.cancelled:
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise Cancelled("cancelled by the user; finished videos are kept and a "
                                        "re-run resumes")
        if cfg.sync_frames > 0:  # videos finished before sync windows were asked for

            extract_sync(out, cfg, [r.uid for r in todo if r.uid not in errors], callbacks,
                         em.cancel)
    finally:  # also after a cancel: the index lists every finished video
        index = build_index(out)
    report = {
        "videos": len(todo), "processed": sum(1 for d in done if not d["skipped"]),
        "skipped_finished": sum(1 for d in done if d["skipped"]),
        "failed": sum(1 for r in todo if r.uid in errors),
        "frames": int(sum(d["frames"] for d in done)),
        "frames_with_face": int(sum(d["frames_with_face"] for d in done)),
        "errors": {r.uid: errors[r.uid] for r in todo if r.uid in errors},
        "per_video": {d["uid"]: {k: d.get(k) for k in ("frames", "coverage", "has_audio",
                                                        "truncated")} for d in done},
        "truncated": {d["uid"]: d["truncated"] for d in done if d.get("truncated")},
        "index": str(out / "index.csv"), "index_rows": int(len(index)),
        "shard": f"{shard[0]}/{shard[1]}",
    }
    report["coverage"] = round(report["frames_with_face"] / report["frames"], 4) \
        if report["frames"] else 0.0
    write_json(out / "report.json", report)
    # how these crops were made: training copies it into its run, so prediction crops alike;
    # the detector file by name and hash (never only a path: the model must work elsewhere)
    write_json(out / PREPROCESS_SETTINGS, {**asdict(cfg), "detector_file": detector_file})
    em.result(**{k: v for k, v in report.items() if k not in ("per_video", "errors")})
    return report


def adopt_preprocess_settings(cfg: LabConfig, processed: str | Path) -> LabConfig:
    """A copy of ``cfg`` whose preprocess section is the one that made the crops in
    ``processed`` (its ``preprocess_config.json``), so the run records it and prediction detects
    and crops faces the same way. Unchanged when the folder does not say."""
    path = Path(processed) / PREPROCESS_SETTINGS
    if not path.exists():
        return cfg
    out = copy.deepcopy(cfg)
    known = {f.name for f in dataclasses.fields(out.preprocess)}
    recorded = read_settings(path)
    out.preprocess = dataclasses.replace(
        out.preprocess, **{k: v for k, v in recorded.items() if k in known})
    with reading(path, "preprocessing settings", "delete it and preprocess again"):
        sha = (recorded.get("detector_file") or {}).get("sha256")
        if sha and not out.preprocess.detector_sha256:
            # the hash finds the file on another machine (see dflab.data.faces.locate_weights)
            out.preprocess.detector_sha256 = str(sha)
    return out


def frame_record(processed: str | Path, crop_path: str) -> dict | None:
    """The per-frame JSON entry (meta.json ``frames``) of the crop at ``crop_path`` (relative
    to ``processed``, as in the index), or None when its video's meta.json says nothing of it."""
    crop = Path(crop_path)
    meta = Path(processed) / crop.parent.parent / "meta.json"
    if not meta.is_file():
        return None
    want = f"{crop.parent.name}/{crop.name}"
    return next((f for f in read_meta(meta)["frames"] if f["crop_path"] == want), None)


def build_index(out: str | Path):
    """Rebuild ``<out>/index.csv`` from every finished video's ``meta.json``; returns the table."""
    import pandas as pd

    out = Path(out)
    rows = []
    for meta_path in sorted((out / "videos").rglob("meta.json")):
        if meta_path.parent.name.endswith(".part"):
            continue
        meta = read_json(meta_path)
        rec = meta["record"]
        rel = meta_path.parent.relative_to(out).as_posix()
        uid = video_uid(rec["dataset"], rec["method"], rec["compression"], rec["video_id"])
        for fr in meta["frames"]:
            p = fr["primary"]
            box = p["box"] if p else [np.nan] * 4
            rows.append({
                "uid": uid, "video_id": rec["video_id"], "dataset": rec["dataset"],
                "method": rec["method"], "compression": rec["compression"],
                "label": rec["label"], "split": rec["split"], "source_id": rec["source_id"],
                "frame_index": fr["frame_index"], "timestamp": fr["timestamp"],
                "has_face": p is not None, "reason": fr["reason"],
                "confidence": p["score"] if p else np.nan, "n_faces": len(fr["faces"]),
                "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3],
                "crop_path": f"{rel}/{fr['crop_path']}" if fr["crop_path"] else "",
                "frame_path": f"{rel}/{fr['frame_path']}" if fr["frame_path"] else "",
                "landmarks": p.get("landmarks68_model", "") if p else "",
            })
    df = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    tmp = out / "index.csv.part"
    df.to_csv(tmp, index=False)
    os.replace(tmp, out / "index.csv")
    return df
