"""Inference for real workloads: any mix of videos, images, folders and globs, or face crops
that are already cut (``faces=True``: no detection), scored with a model bundle loaded once
(:mod:`dflab.serve.bundle`): visual, forensic and fused probabilities per frame and per input, a
verdict per input, a CSV or JSON report for the batch.

Frames are sampled and faces cropped with the training crops' settings (the bundle's, with any
overrides); each crop is JPEG-coded at the preprocessing quality, as the training crops were.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dflab.core.config import PreprocessConfig
from dflab.core.events import Callback, Cancelled, CancelToken, Emitter
from dflab.core.files import write_json
from dflab.core.metrics import aggregate_probs
from dflab.data.audio import extract_wav, frame_audio_features, has_audio
from dflab.data.faces import create_detector, cut_primary, primary_face
from dflab.data.landmarks import shared_landmarker
from dflab.data.preprocess import sample_frames, truncation_note
from dflab.data.sources import IMAGE_EXTS, VIDEO_EXTS
from dflab.forensic.features import extract_features
from dflab.serve.bundle import Bundle, load_bundle

log = logging.getLogger(__name__)

__all__ = ["expand_inputs", "predict_many", "predict_file", "write_batch_report", "score_crops",
           "BATCH_COLUMNS"]

#: one row per input in the batch report (a model the bundle lacks leaves its column empty)
BATCH_COLUMNS = ["file", "kind", "verdict", "probability", "prob_visual", "prob_forensic",
                 "prob_logreg", "prob_fused", "sync_offset_frames", "sync_score", "threshold",
                 "frames_sampled", "frames_scored", "truncated", "error"]


def expand_inputs(items: Sequence[str | Path], faces: bool = False) -> list[Path]:
    """Files, folders (searched recursively) and globs -> the media files, in order, once each.
    ``faces``: images only (face crops). Raises naming the item that gives nothing."""
    exts = IMAGE_EXTS if faces else IMAGE_EXTS | VIDEO_EXTS
    what = "images" if faces else "videos or images"
    out: list[Path] = []
    for item in items:
        text = str(item)
        path = Path(text).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in exts)
            if not found:
                raise ValueError(f"folder '{path}' has no {what} ({' '.join(sorted(exts))})")
        elif path.is_file():
            if path.suffix.lower() not in exts:
                raise ValueError(f"'{path}' is not one of the {what} dflab reads "
                                 f"({' '.join(sorted(exts))})")
            found = [path]
        elif glob.has_magic(text):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True)
                           if Path(p).is_file() and Path(p).suffix.lower() in exts)
            if not found:
                raise ValueError(f"'{text}' matches no {what}")
        else:
            raise FileNotFoundError(f"'{text}' does not exist")
        out += found
    seen: set[Path] = set()
    return [p for p in out if not (p.resolve() in seen or seen.add(p.resolve()))]


def _jpeg(crop_bgr: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    ok, buf = cv2.imencode(".jpg", crop_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def face_crops(path: Path, pp: PreprocessConfig, detector: Any
                ) -> tuple[list[dict], list[np.ndarray], int, list[int], str]:
    """Sample frames of an image or video and crop the primary face as preprocessing does:
    (rows with frame_index/timestamp/box/face_score, crops ``uint8 (H, W, 3) BGR`` after the
    JPEG round trip, frames sampled, indices of frames without a face, "" or what says the file
    is cut off)."""
    info, fps, sampled = sample_frames(path, pp.every_nth, pp.num_frames, pp.decode)
    frames = [(i, f) for i, f in sampled if f is not None]
    if not frames:
        raise ValueError(f"'{path}' gave no decodable frames (not a video or image, or damaged)")
    truncated = truncation_note(info, [{"frame_index": i} for i, _ in frames], pp)
    if truncated:
        log.warning("%s: %s", path, truncated)
    # landmarks only where the crop depends on them (aligned crops, as preprocessing made them)
    landmarker = shared_landmarker(pp.landmarks, detector.name) if pp.align else None
    rows, crops, missing = [], [], []
    for start in range(0, len(frames), 16):
        chunk = frames[start:start + 16]
        for (idx, frame), faces in zip(chunk, detector.detect_batch([f for _, f in chunk])):
            face = primary_face(faces, frame.shape)
            if face is None:
                missing.append(idx)
                continue
            crop, _ = cut_primary(frame, face, pp, landmarker)
            crops.append(_jpeg(crop, pp.jpeg_quality))
            rows.append({"frame_index": idx, "timestamp": round(idx / fps, 3),
                         "box": [round(v, 1) for v in face.box],
                         "face_score": round(face.score, 4),
                         "landmarks": face.to_dict().get("landmarks")})
    return rows, crops, len(frames), missing, truncated


def read_crop(path: Path) -> np.ndarray:
    """A face crop given as an image file (``--faces``): ``uint8 (H, W, 3) BGR``; a clear error
    when it is not a readable image."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"'{path}' is not a readable image")
    return img


def _file_audio(path: Path, timestamps: list[float], pp: PreprocessConfig) -> dict | None:
    """The preprocessing audio statistics around each timestamp, or None without an audio track."""
    if path.suffix.lower() in IMAGE_EXTS or not pp.audio or not has_audio(path):
        return None
    with tempfile.TemporaryDirectory() as td:
        wav = extract_wav(path, Path(td) / "audio.wav")
        return frame_audio_features(wav, np.array(timestamps), pp.audio_window_s, pp.n_mfcc)


def score_crops(bundle: Bundle, crops: list[np.ndarray],
                audio: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """p(fake) per ``uint8 (H, W, 3) BGR`` crop for every model in the bundle (the forensic
    features of its own subset only); the fuser also gets ``audio`` (``audio_rms``,
    ``audio_centroid``, ``audio_bandwidth``, ``audio_zcr``, ``has_audio`` per crop), or no
    audio. With a fuser, the logistic baseline is left out: it is not a fused input."""
    import cv2

    probs: dict[str, np.ndarray] = {}
    if bundle.visual is not None:
        probs["visual"] = bundle.visual.probs([cv2.cvtColor(c, cv2.COLOR_BGR2RGB) for c in crops])
    if bundle.forensic is not None:
        feats = np.array([extract_features(c, bundle.forensic.crop_size, bundle.forensic.names)
                          for c in crops])
        probs.update(bundle.forensic.scores(feats))
    if bundle.fuser is not None:
        cols = {"prob_visual": probs["visual"], "prob_forensic": probs["forensic"],
                **(audio or {})}
        probs["fused"] = bundle.fuser.predict(cols)
        if bundle.fuser_sync is not None and "sync_clip" in cols:
            probs["fused"] = bundle.fuser_sync.predict(cols)
        probs.pop("logreg", None)
    return probs


def _sync(bundle: Bundle, path: Path, rows: list[dict]) -> dict[str, Any] | None:
    """The sync model's verdict on a video (offset, confidence, sync score; the baseline's
    offset) and its per-crop inputs for the fuser, or None (no sync model, audio or window)."""
    if bundle.sync is None or path.suffix.lower() in IMAGE_EXTS:
        return None
    centres = [(r["frame_index"], {"box": r["box"], "landmarks": r.get("landmarks")})
               for r in rows]
    sc = bundle.sync.score_video(path, centres)
    if sc is None:
        return None
    clip = float(np.nan_to_num(sc["learned"]["sync_score"]))
    free = float(np.nan_to_num(sc["baseline"]["sync_score"]))
    return {"summary": {**{k: round(v, 4) for k, v in sc["learned"].items()
                           if k in ("offset_frames", "offset_ms", "confidence", "sync_score")},
                        "baseline_offset_frames": sc["baseline"]["offset_frames"],
                        "baseline_sync_score": round(free, 4),
                        "windows": sc["windows"], "fps": round(sc["fps"], 3)},
            "columns": {"sync_clip": np.full(len(rows), clip),
                        "sync_free": np.full(len(rows), free)}}


def _score(bundle: Bundle, path: Path, crops: list[np.ndarray], rows: list[dict]
           ) -> tuple[dict[str, np.ndarray], bool]:
    """(p(fake) per crop for every model in the bundle, whether the fuser had audio)."""
    audio = None
    if bundle.fuser is not None:
        audio = _file_audio(path, [r["timestamp"] for r in rows], bundle.preprocess)
    columns = None if audio is None else {
        **{f"audio_{k}": audio[k] for k in ("rms", "centroid", "bandwidth", "zcr")},
        "has_audio": np.asarray(audio["valid"], bool)}
    sync = _sync(bundle, path, rows) if audio is not None else None
    if sync is not None:
        columns = {**columns, **sync["columns"]}
        rows[0]["_sync"] = sync["summary"]
    return score_crops(bundle, crops, columns), audio is not None


def _predict_one(bundle: Bundle, path: Path, detector: Any, faces: bool, aggregate: str,
                 margin: float, threshold: float) -> dict[str, Any]:
    if faces:
        rows = [{"frame_index": 0, "timestamp": 0.0, "box": None, "face_score": None}]
        crops, n_sampled, missing, truncated = [read_crop(path)], 1, [], ""
    else:
        rows, crops, n_sampled, missing, truncated = face_crops(path, bundle.preprocess,
                                                                 detector)
    kind = "face" if faces else "image" if path.suffix.lower() in IMAGE_EXTS else "video"
    result: dict[str, Any] = {
        "file": str(path), "kind": kind, "model": str(bundle.source),
        "backend": bundle.visual.backend if bundle.visual else "numpy",
        "detector": "none (face crops)" if faces else bundle.preprocess.detector,
        "threshold": round(threshold, 5), "frames_sampled": n_sampled,
        "frames_without_face": missing, "truncated": truncated}
    if not crops:
        result.update(verdict="no face found", probability=None, probabilities={}, frames=[])
        return result
    probs, has_audio = _score(bundle, path, crops, rows)
    main = bundle.verdict_from
    for k, row in enumerate(rows):
        row["prob"] = round(float(probs[main][k]), 5)
        if len(probs) > 1:
            row.update({f"prob_{m}": round(float(p[k]), 5) for m, p in probs.items()})
    video = {m: round(aggregate_probs(p, aggregate, margin), 5) for m, p in probs.items()}
    result.update(verdict="fake" if video[main] >= threshold else "real",
                  probability=video[main], probabilities=video, aggregate=aggregate,
                  frames=rows)
    if "fused" in probs:
        result["has_audio"] = has_audio
    sync = rows[0].pop("_sync", None)
    if bundle.sync is not None:
        result["sync"] = sync  # None: no audio or no mouth window (the fuser went without)
    return result


def predict_many(inputs: Sequence[str | Path], model: str | Path | Bundle, faces: bool = False,
                 overrides: dict[str, Any] | None = None, aggregate: str = "mean",
                 margin: float = 0.3, threshold: float | None = None,
                 callbacks: list[Callback] | None = None, cancel: CancelToken | None = None,
                 ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score every input with one model load: (one result per input, the bundle's description).

    ``inputs``: files, folders and globs (:func:`expand_inputs`); ``faces``: they are face crops
    already (no detection). ``overrides``: preprocess settings to use instead of the model's
    (``{"every_nth": 10}``). A file that fails is reported in its result (``error``) and the
    batch goes on; with a single input the error is raised.
    """
    files = expand_inputs(inputs, faces)
    bundle = model if isinstance(model, Bundle) else load_bundle(model, overrides)
    thr = bundle.threshold if threshold is None else threshold
    detector = None
    if not faces:
        pp = bundle.preprocess
        detector = create_detector(pp.detector, bundle.detector_weights, pp.det_size,
                                   pp.min_confidence)
    em = Emitter("predict", callbacks, cancel)
    results = []
    em.progress(0, len(files), "file")
    for k, path in enumerate(files):
        em.check()
        try:
            results.append(_predict_one(bundle, path, detector, faces, aggregate, margin, thr))
        except Cancelled:
            raise
        except Exception as exc:  # one bad file never stops the batch
            if len(files) == 1:
                raise
            log.warning("predict %s: %s", path, exc)
            results.append({"file": str(path), "verdict": "error", "probability": None,
                            "error": f"{type(exc).__name__}: {exc}", "frames": []})
        em.progress(k + 1, len(files), "file", path.name)
    return results, bundle.describe()


def predict_file(path: str | Path, model_path: str | Path, detector: str = "",
                 detector_weights: str = "", every_nth: int = 0, num_frames: int = 0,
                 aggregate: str = "mean", margin: float = 0.3,
                 threshold: float | None = None) -> dict[str, Any]:
    """The result for one image or video (see :func:`predict_many`); ``detector``,
    ``detector_weights``, ``every_nth``, ``num_frames`` override the model's settings."""
    overrides: dict[str, Any] = {k: v for k, v in (("detector", detector),
                                                   ("detector_weights", detector_weights),
                                                   ("every_nth", every_nth)) if v}
    if num_frames:
        overrides.update(num_frames=num_frames, every_nth=0)
    results, _ = predict_many([path], model_path, overrides=overrides, aggregate=aggregate,
                              margin=margin, threshold=threshold)
    return results[0]


def batch_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per input, with :data:`BATCH_COLUMNS`."""
    rows = []
    for r in results:
        p = r.get("probabilities") or {}
        rows.append({
            "file": r["file"], "kind": r.get("kind", ""), "verdict": r["verdict"],
            "probability": r.get("probability"), "prob_visual": p.get("visual"),
            "prob_forensic": p.get("forensic"), "prob_logreg": p.get("logreg"),
            "prob_fused": p.get("fused"),
            "sync_offset_frames": (r.get("sync") or {}).get("offset_frames"),
            "sync_score": (r.get("sync") or {}).get("sync_score"),
            "threshold": r.get("threshold"), "frames_sampled": r.get("frames_sampled", 0),
            "frames_scored": len(r.get("frames", [])), "truncated": r.get("truncated", ""),
            "error": r.get("error", "")})
    return rows


def write_batch_report(results: list[dict[str, Any]], bundle: dict[str, Any],
                       path: str | Path) -> list[Path]:
    """``.json``: the bundle and every result with its frames; ``.csv``: one row per input
    (:data:`BATCH_COLUMNS`) and ``<stem>_frames.csv``, one row per scored frame. Returns the
    files written."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return [write_json(path, {"model": bundle, "results": results})]
    if path.suffix.lower() != ".csv":
        raise ValueError(f"report '{path}' must end in .csv or .json")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, BATCH_COLUMNS)
        w.writeheader()
        w.writerows(batch_rows(results))
    frames_path = path.with_name(path.stem + "_frames.csv")
    cols = ["file", "frame_index", "timestamp", "prob", "prob_visual", "prob_forensic",
            "prob_logreg", "prob_fused", "face_score", "box"]
    with frames_path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, cols, extrasaction="ignore")
        w.writeheader()
        for r in results:
            for f in r.get("frames", []):
                w.writerow({"file": r["file"], **f, "box": json.dumps(f.get("box"))})
    return [path, frames_path]
