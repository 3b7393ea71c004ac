"""Sync windows: what the lip-sync detectors (:mod:`dflab.av.sync`) read, cut from a preprocessed
video.

Windows (``sync.npz`` in a video's folder, written by preprocessing when
``preprocess.sync_frames`` > 0, or by ``dflab sync extract``): around each sampled frame with a
face, ``sync_frames`` consecutive frames at the video's own rate, cut to the mouth region in
grey (``mouths: uint8 (windows, frames, H, W)``), with each frame's presentation time in seconds
(``times``), and the clip's MFCC (13 coefficients) and RMS energy at a 10 ms hop. The mouth region
comes from the detector's two mouth-corner landmarks (YuNet, YOLO-face with keypoints); a detector
without landmarks gives a fixed lower-face region, and ``mouth_source`` says which. Audio and
video are lined up by timestamps, never by frame counts: the audio is decoded with the silence
of a late start filled in (FFmpeg ``aresample=async=1:first_pts=0``), and a window's audio is the
MFCC sampled at its own frames' times (``N_AUDIO`` columns spanning the window), so variable frame
rates and audio that starts late line up.
"""

from __future__ import annotations

import logging
import os
import tempfile
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dflab.core.events import Callback, CancelToken, Emitter
from dflab.core.files import DamagedFile, read_json, reading
from dflab.data.audio import extract_wav, has_audio

if TYPE_CHECKING:  # pragma: no cover
    from dflab.core.config import PreprocessConfig

log = logging.getLogger(__name__)

__all__ = ["SYNC_FILE", "N_MFCC", "N_AUDIO", "HOP_S", "mouth_box", "video_windows", "write_windows",
           "extract_sync", "load_windows"]

SYNC_FILE = "sync.npz"
SYNC_SR = 16000
HOP_S = 0.01  # MFCC and RMS hop: 10 ms
N_MFCC = 13
N_AUDIO = 20  # MFCC columns per window, spread over the window's frames
MOUTH_ASPECT = 2 / 3  # mouth crop height / width


def mouth_box(face: dict, shape: tuple) -> tuple[tuple[int, int, int, int], str]:
    """(x1, y1, x2, y2) of the mouth region of one face record (``Face.to_dict``) in a frame of
    ``shape``, and where it came from: ``landmarks`` (the two mouth corners, YuNet's and
    YOLO-face's points 4 and 5) or ``lower_face`` (a fixed region of the box)."""
    x1, y1, x2, y2 = face["box"]
    fw = x2 - x1
    lm = face.get("landmarks")
    if lm is not None and len(lm) >= 5:
        (ax, ay), (bx, by) = lm[3], lm[4]
        cx, cy = (ax + bx) / 2, (ay + by) / 2
        w = max(1.9 * float(np.hypot(bx - ax, by - ay)), 0.45 * fw)
        source = "landmarks"
    else:  # no landmarks (Haar, plain YOLO): the lower middle of the face box
        cx, cy = (x1 + x2) / 2, y1 + 0.8 * (y2 - y1)
        w = 0.55 * fw
        source = "lower_face"
    h = w * MOUTH_ASPECT
    H, W = shape[:2]
    box = (int(round(max(0, cx - w / 2))), int(round(max(0, cy - h / 2))),
           int(round(min(W, cx + w / 2))), int(round(min(H, cy + h / 2))))
    return box, source


def _timed_frames(path: str | Path, wanted: set[int]) -> tuple[dict[int, tuple[np.ndarray, float]],
                                                                float]:
    """{frame index: (uint8 (H, W) grey frame, presentation time s)} for the ``wanted`` indices,
    decoding the video once in order (frames not wanted are grabbed, not converted), and the
    video's nominal fps. Times come from the container (``CAP_PROP_POS_MSEC``), so a variable
    frame rate is read as it is."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"'{path}' cannot be opened as a video")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    out: dict[int, tuple[np.ndarray, float]] = {}
    last = max(wanted) if wanted else -1
    idx = 0
    try:
        while idx <= last and cap.grab():
            if idx in wanted:
                t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                ok, frame = cap.retrieve()
                if ok:
                    out[idx] = (cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), t)
            idx += 1
    finally:
        cap.release()
    return out, fps


def _audio_track(path: str | Path) -> dict[str, np.ndarray] | None:
    """The clip's MFCC (float32 (N_MFCC, T)) and RMS (float32 (T,)) at a 10 ms hop, column k
    centred at k * HOP_S seconds of the video's clock; None without an audio stream."""
    import librosa

    if not has_audio(path):
        return None
    with tempfile.TemporaryDirectory() as td:
        wav = extract_wav(path, Path(td) / "a.wav", SYNC_SR, pad_start=True)
        y, sr = librosa.load(str(wav), sr=SYNC_SR, mono=True)
    if len(y) < 400:
        return None
    hop = int(round(HOP_S * sr))
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=N_MFCC, n_fft=512, win_length=400,
                                hop_length=hop)
    rms = librosa.feature.rms(y=y, frame_length=400, hop_length=hop)[0]
    return {"mfcc": mfcc.astype(np.float32), "rms": rms.astype(np.float32),
            "audio_seconds": np.float64(len(y) / sr)}


def video_windows(path: str | Path, centres: list[tuple[int, dict]], n_frames: int = 5,
                  mouth_px: int = 48) -> dict[str, np.ndarray] | None:
    """The sync windows of one video: ``centres`` are (frame index, face record) of the sampled
    frames with a face; each window is the ``n_frames`` frames around its centre, all cut with
    the centre frame's mouth box. None when the video has no audio or no window fits.

    Returns ``mouths uint8 (N, n_frames, H, W)`` grey, ``times float64 (N, n_frames)`` s,
    ``centre_index int (N,)``, ``mouth_source`` (N,) str, ``mfcc``, ``rms``, ``hop_s``, ``fps``
    and ``audio_seconds``."""
    import cv2

    track = _audio_track(path)
    if track is None or not centres:
        return None
    half = n_frames // 2
    wanted = {c + d for c, _ in centres for d in range(-half, n_frames - half) if c - half >= 0}
    frames, fps = _timed_frames(path, wanted)
    H = int(round(mouth_px * MOUTH_ASPECT))
    mouths, times, index, sources = [], [], [], []
    for centre, face in centres:
        idxs = list(range(centre - half, centre - half + n_frames))
        if not all(i in frames for i in idxs):
            continue  # runs past the ends of the video
        box, source = mouth_box(face, frames[centre][0].shape)
        x1, y1, x2, y2 = box
        if x2 - x1 < 4 or y2 - y1 < 3:
            continue
        mouths.append(np.stack([cv2.resize(frames[i][0][y1:y2, x1:x2], (mouth_px, H),
                                           interpolation=cv2.INTER_AREA) for i in idxs]))
        times.append([frames[i][1] for i in idxs])
        index.append(centre)
        sources.append(source)
    if not mouths:
        return None
    return {"mouths": np.stack(mouths), "times": np.asarray(times, np.float64),
            "centre_index": np.asarray(index, np.int64), "mouth_source": np.asarray(sources),
            "hop_s": np.float64(HOP_S), "fps": np.float64(fps), **track}


def _settings(pp: "PreprocessConfig") -> np.ndarray:
    return np.asarray([pp.sync_frames, pp.sync_mouth_px, N_MFCC, N_AUDIO], np.int64)


def write_windows(folder: Path, meta: dict, pp: "PreprocessConfig") -> bool:
    """Write ``folder/sync.npz`` for one processed video from its ``meta.json`` record; False
    when the video has no audio or no window (nothing written)."""
    centres = [(f["frame_index"], f["primary"]) for f in meta["frames"] if f["primary"]]
    win = video_windows(meta["record"]["path"], centres, pp.sync_frames, pp.sync_mouth_px)
    if win is None:
        return False
    tmp = folder / (SYNC_FILE + ".part.npz")
    np.savez_compressed(tmp, settings=_settings(pp), **win)
    os.replace(tmp, folder / SYNC_FILE)
    return True


def _read_windows(path: Path) -> dict[str, np.ndarray]:
    """The arrays of one ``sync.npz`` (see :func:`video_windows`), checked: anything else (cut
    short, other arrays or shapes, pickled objects) is one :class:`~dflab.core.files.DamagedFile`
    line naming the file."""
    with reading(path, "sync windows file", "delete it and run `dflab sync extract` again",
                 also=(zipfile.BadZipFile, zlib.error, SyntaxError, tokenize.TokenError, OSError)):
        with np.load(path) as z:
            win = {k: z[k] for k in z.files}
        n, t = win["mouths"].shape[:2]
        shapes = {"mouths": (win["mouths"].ndim == 4 and win["mouths"].dtype == np.uint8),
                  "times": win["times"].shape == (n, t), "centre_index": win["centre_index"].shape
                  == (n,), "mouth_source": win["mouth_source"].shape == (n,),
                  "settings": win["settings"].shape == (4,), "hop_s": win["hop_s"].shape == (),
                  "fps": win["fps"].shape == ()}
        wrong = [k for k, ok in shapes.items() if not ok]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} of the wrong shape or type")
        if not (float(win["hop_s"]) > 0 and float(win["fps"]) > 0):
            raise ValueError(f"hop_s {win['hop_s']} and fps {win['fps']} must be positive")
        win["times"] = win["times"].astype(np.float64)
    return win


def _has_current_windows(folder: Path, pp: "PreprocessConfig") -> bool:
    """Whether ``folder`` has windows made with these settings; a damaged file is made again."""
    path = folder / SYNC_FILE
    if not path.exists():
        return False
    try:
        win = _read_windows(path)
    except DamagedFile as exc:
        log.warning("%s; it is made again", exc)
        return False
    return np.array_equal(win["settings"], _settings(pp))


def extract_sync(processed: str | Path, pp: "PreprocessConfig", uids: list[str] | None = None,
                 callbacks: list[Callback] | None = None,
                 cancel: CancelToken | None = None) -> dict[str, Any]:
    """Write the sync windows of every finished video of ``processed`` (or of ``uids``) that has
    audio and lacks current ones; resumable (a video with windows of the same settings is
    skipped). The source video must still be on disk. Returns counts and per-video reasons."""
    processed = Path(processed)
    if pp.sync_frames < 3:
        raise ValueError(f"preprocess.sync_frames is {pp.sync_frames}; sync windows need at least "
                         f"3 frames (e.g. --set preprocess.sync_frames=5)")
    metas = sorted(m for m in (processed / "videos").rglob("meta.json")
                   if not m.parent.name.endswith(".part"))
    if uids is not None:
        keep = set(uids)
        metas = [m for m in metas if m.parent.relative_to(processed / "videos").as_posix() in keep]
    em = Emitter("sync-extract", callbacks, cancel)
    em.progress(0, len(metas), "video", "sync windows")
    counts = {"written": 0, "kept": 0, "no_audio": 0, "missing_source": 0, "failed": 0}
    reasons: dict[str, str] = {}
    for k, meta_path in enumerate(metas):
        em.check()
        folder = meta_path.parent
        uid = folder.relative_to(processed / "videos").as_posix()
        if _has_current_windows(folder, pp):
            counts["kept"] += 1
        else:
            meta = read_json(meta_path)
            if meta.get("audio", {}).get("has_audio") is False and meta["audio"].get(
                    "reason") == "no audio stream":
                counts["no_audio"] += 1
            elif not Path(meta["record"]["path"]).exists():
                counts["missing_source"] += 1
                reasons[uid] = f"source video '{meta['record']['path']}' is no longer on disk"
            else:
                try:
                    counts["written" if write_windows(folder, meta, pp) else "no_audio"] += 1
                except Exception as exc:  # one bad video never stops the batch
                    counts["failed"] += 1
                    reasons[uid] = f"{type(exc).__name__}: {exc}"
                    em.error(reasons[uid], item=uid)
        em.progress(k + 1, len(metas), "video", uid)
    rep = {"videos": len(metas), **counts, "reasons": reasons}
    em.result(**{k: v for k, v in rep.items() if k != "reasons"})
    return rep


def load_windows(processed: str | Path, uid: str) -> dict[str, np.ndarray] | None:
    path = Path(processed) / "videos" / uid / SYNC_FILE
    if not path.exists():
        return None
    return _read_windows(path)
