"""Sync windows: what the lip-sync detectors (:mod:`dflab.av.sync`) read, cut from a preprocessed
video.

Windows (``sync.npz`` in a video's folder, written by preprocessing when
``preprocess.sync_frames`` > 0, or by ``dflab sync extract``): around each sampled frame with a
face, ``sync_frames`` consecutive frames at the video's own rate, cut to the mouth region in
grey (``mouths: uint8 (windows, frames, H, W)``), with each frame's presentation time in seconds
(``times``), and the clip's MFCC (13 coefficients), RMS energy and onset strength at a 10 ms hop.

The mouth comes, best first (``mouth_source`` says which, per window):

- ``lip_landmarks``: with 68-point landmarks (``preprocess.landmarks`` dlib68), each frame's
  outer and inner lip contour (points 48-67); the crop is rotated so the eyes are level and
  scaled by the distance from the eyes to the mouth corners (both averaged over the window's
  frames, so the crop does not jitter inside a window), centred on the mouth corners. Stored
  with it: ``lips float32 (N, F, 20, 2)`` (the contour in the crop's pixels) and ``opening
  float32 (N, F)`` (inner-lip height over mouth width, the lip-opening signal);
- ``landmarks``: the detector's two mouth corners (YuNet, YOLO-face), an upright box;
- ``lower_face``: the fallback without landmarks, a fixed lower-face region of the box.

Audio and
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
from dflab.data.landmarks import (LEFT_EYE, MOUTH_INNER, MOUTH_OUTER, RIGHT_EYE, Landmarker,
                                  check_points, resolve_landmarks, shared_landmarker)

if TYPE_CHECKING:  # pragma: no cover
    from dflab.core.config import PreprocessConfig

log = logging.getLogger(__name__)

__all__ = ["SYNC_FILE", "N_MFCC", "N_AUDIO", "HOP_S", "mouth_box", "lip_opening", "mouth_affine",
           "audio_track", "clip_audio_track", "video_windows", "write_windows", "extract_sync",
           "load_windows", "dense_track", "every_frame_windows"]

SYNC_FILE = "sync.npz"
SYNC_SR = 16000
HOP_S = 0.01  # MFCC and RMS hop: 10 ms
N_MFCC = 13
N_AUDIO = 20  # MFCC columns per window, spread over the window's frames
MOUTH_ASPECT = 2 / 3  # mouth crop height / width
WINDOWS_VERSION = 2  # 2: lip landmarks, aligned crops and the onset strength
#: the crop's width over the distance from the eyes' midpoint to the mouth corners' (stable
#: while the mouth opens, unlike the mouth's own width): about twice the closed mouth's width
MOUTH_CROP_SCALE = 1.8
LIPS = MOUTH_OUTER + MOUTH_INNER  # the 20 lip points, outer contour first


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


def lip_opening(points: np.ndarray) -> np.ndarray:
    """Inner-lip height over mouth width of 68-point fits ``(..., 68, 2)``: the mean of the three
    vertical inner-lip distances (61-67, 62-66, 63-65) over the corner distance (48-54)."""
    p = np.asarray(points, np.float64)
    height = np.mean([np.linalg.norm(p[..., a, :] - p[..., b, :], axis=-1)
                      for a, b in ((61, 67), (62, 66), (63, 65))], axis=0)
    width = np.linalg.norm(p[..., 48, :] - p[..., 54, :], axis=-1)
    return (height / np.maximum(width, 1e-6)).astype(np.float32)


def mouth_affine(points: np.ndarray, mouth_px: int) -> np.ndarray:
    """The 2x3 frame-to-crop matrix of a mouth crop ``mouth_px`` wide from 68-point fits
    ``(F, 68, 2)`` of a window's frames: rotation (eye line level), scale (eyes-to-mouth
    distance, see :data:`MOUTH_CROP_SCALE`) and centre (the mouth corners' midpoint), each
    averaged over the frames."""
    import cv2

    p = np.asarray(points, np.float64)
    eye_r, eye_l = p[:, RIGHT_EYE].mean(1), p[:, LEFT_EYE].mean(1)
    mouth = (p[:, 48] + p[:, 54]) / 2
    d = eye_l - eye_r
    angle = float(np.degrees(np.arctan2(d[:, 1], d[:, 0])).mean())
    reach = float(np.linalg.norm(mouth - (eye_r + eye_l) / 2, axis=1).mean())
    centre = mouth.mean(0)
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle,
                                mouth_px / max(MOUTH_CROP_SCALE * reach, 1e-6))
    m[:, 2] += np.array([mouth_px / 2, round(mouth_px * MOUTH_ASPECT) / 2]) - centre
    return m


def _lip_window(grey: list[np.ndarray], face: dict, landmarker: Landmarker, mouth_px: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(crops uint8 (F, H, W), lips float32 (F, 20, 2) in crop pixels, opening float32 (F,)) of
    one window's grey frames from 68-point fits in the centre frame's face box; None when a
    fit is not trusted (:func:`~dflab.data.landmarks.check_points`)."""
    import cv2

    five = face.get("landmarks")
    pts = []
    for g in grey:
        p = landmarker.predict(g, face["box"], five)
        if p is None or check_points(p, face["box"], five):
            return None
        pts.append(p)
    pts = np.stack(pts)
    m = mouth_affine(pts, mouth_px)
    size = (mouth_px, int(round(mouth_px * MOUTH_ASPECT)))
    crops = np.stack([cv2.warpAffine(g, m, size, flags=cv2.INTER_AREA,
                                     borderMode=cv2.BORDER_REPLICATE) for g in grey])
    lips = pts[:, LIPS] @ m[:, :2].T + m[:, 2]
    return crops, lips.astype(np.float32), lip_opening(pts)


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


def clip_audio_track(path: str | Path) -> dict[str, np.ndarray] | None:
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
    return audio_track(y, sr)


def audio_track(y: np.ndarray, sr: int) -> dict[str, np.ndarray]:
    """MFCC, RMS and onset strength (librosa's spectral flux on a mel spectrogram) of a mono
    signal at a 10 ms hop, column k centred at k * HOP_S s."""
    import librosa

    hop = int(round(HOP_S * sr))
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=N_MFCC, n_fft=512, win_length=400,
                                hop_length=hop)
    rms = librosa.feature.rms(y=y, frame_length=400, hop_length=hop)[0]
    onset = librosa.onset.onset_strength(y=y, sr=sr, hop_length=hop, n_fft=512)
    n = min(mfcc.shape[1], len(rms), len(onset))
    return {"mfcc": mfcc[:, :n].astype(np.float32), "rms": rms[:n].astype(np.float32),
            "onset": onset[:n].astype(np.float32), "audio_seconds": np.float64(len(y) / sr)}


def video_windows(path: str | Path, centres: list[tuple[int, dict]], n_frames: int = 5,
                  mouth_px: int = 48, landmarker: Landmarker | None = None
                  ) -> dict[str, np.ndarray] | None:
    """The sync windows of one video: ``centres`` are (frame index, face record) of the sampled
    frames with a face; each window is the ``n_frames`` frames around its centre, cut on their
    lip landmarks when ``landmarker`` gives 68 points (else with the centre frame's mouth box).
    None when the video has no audio or no window fits.

    Returns ``mouths uint8 (N, n_frames, H, W)`` grey, ``times float64 (N, n_frames)`` s,
    ``centre_index int (N,)``, ``mouth_source`` (N,) str, ``lips float32 (N, n_frames, 20, 2)``
    and ``opening float32 (N, n_frames)`` (NaN where the window has no lip landmarks),
    ``mfcc``, ``rms``, ``onset``, ``hop_s``, ``fps`` and ``audio_seconds``."""
    import cv2

    track = clip_audio_track(path)
    if track is None or not centres:
        return None
    half = n_frames // 2
    wanted = {c + d for c, _ in centres for d in range(-half, n_frames - half) if c - half >= 0}
    frames, fps = _timed_frames(path, wanted)
    H = int(round(mouth_px * MOUTH_ASPECT))
    no_lips = np.full((n_frames, len(LIPS), 2), np.nan, np.float32)
    mouths, times, index, sources, lips, opening = [], [], [], [], [], []
    for centre, face in centres:
        idxs = list(range(centre - half, centre - half + n_frames))
        if not all(i in frames for i in idxs):
            continue  # runs past the ends of the video
        grey = [frames[i][0] for i in idxs]
        fit = _lip_window(grey, face, landmarker, mouth_px) if landmarker is not None else None
        if fit is not None:
            crops, lip, op = fit
            source = "lip_landmarks"
        else:
            box, source = mouth_box(face, grey[0].shape)
            x1, y1, x2, y2 = box
            if x2 - x1 < 4 or y2 - y1 < 3:
                continue
            crops = np.stack([cv2.resize(g[y1:y2, x1:x2], (mouth_px, H),
                                         interpolation=cv2.INTER_AREA) for g in grey])
            lip, op = no_lips, np.full(n_frames, np.nan, np.float32)
        mouths.append(crops)
        lips.append(lip)
        opening.append(op)
        times.append([frames[i][1] for i in idxs])
        index.append(centre)
        sources.append(source)
    if not mouths:
        return None
    return {"mouths": np.stack(mouths), "times": np.asarray(times, np.float64),
            "centre_index": np.asarray(index, np.int64), "mouth_source": np.asarray(sources),
            "lips": np.stack(lips), "opening": np.stack(opening),
            "hop_s": np.float64(HOP_S), "fps": np.float64(fps), **track}


def _each_frame_once(win: dict) -> tuple[np.ndarray, np.ndarray]:
    """(frame index of each of the windows' N * F frames, flattened; the position in that
    flattening of each distinct frame's first copy, in frame order): overlapping windows hold a
    frame more than once."""
    n, f = win["times"].shape
    index = (win["centre_index"][:, None] + np.arange(f)[None, :] - f // 2).ravel()
    _, first = np.unique(index, return_index=True)
    return index, first


def dense_track(win: dict) -> dict[str, np.ndarray]:
    """The windows' frames as one clip, each frame once, in time order: ``frame_index``,
    ``times`` s, ``opening`` (NaN without lip landmarks) and ``motion`` (mean absolute grey
    change of the mouth crop from the frame before, within a window; NaN for a window's first
    frame). With ``preprocess.sync_frames`` equal to ``every_nth`` the windows tile the clip."""
    n, f = win["times"].shape
    index, first = _each_frame_once(win)
    m = win["mouths"].astype(np.float32)
    motion = np.concatenate([np.full((n, 1), np.nan, np.float32),
                             np.abs(np.diff(m, axis=1)).mean(axis=(2, 3))], axis=1).ravel()
    opening = win.get("opening")
    opening = np.full(n * f, np.nan, np.float32) if opening is None else opening.ravel()
    order = first[np.argsort(win["times"].ravel()[first], kind="stable")]
    return {"frame_index": index[order], "times": win["times"].ravel()[order],
            "opening": opening[order], "motion": motion[order]}


def every_frame_windows(win: dict) -> dict:
    """``win`` re-cut with a window starting at every frame that has the window's length of
    consecutive frames after it (from the frames of the stored windows, each taken once: with
    ``sync_frames`` equal to ``every_nth`` about that many times as many windows). Each frame
    keeps the crop, lips and opening of the stored window it came from. For training: more
    ways to line a window up with the sound, from the same frames."""
    n, f = win["times"].shape
    index, first = _each_frame_once(win)
    idx = index[first]
    starts = [j for j in range(len(idx) - f + 1) if idx[j + f - 1] - idx[j] == f - 1]
    if not starts:
        return win
    take = np.asarray(starts)[:, None] + np.arange(f)[None, :]  # (M, f) into the unique frames
    src = first[take]  # (M, f) into the flattened (n * f) frames
    out = {k: v for k, v in win.items()}
    for key in ("mouths", "times", "lips", "opening"):
        if key in win:
            flat = win[key].reshape(n * f, *win[key].shape[2:])
            out[key] = flat[src]
    out["centre_index"] = idx[take[:, f // 2]]
    # a window has lips only when every one of its frames came with them; else it takes the
    # source of its first frame without
    sources = win["mouth_source"][src // f]  # (M, f)
    without = np.argmax(sources != "lip_landmarks", axis=1)
    out["mouth_source"] = sources[np.arange(len(src)), without]
    return out


def _settings(pp: "PreprocessConfig") -> np.ndarray:
    lips = int(resolve_landmarks(pp.landmarks) == "dlib68")
    return np.asarray([pp.sync_frames, pp.sync_mouth_px, N_MFCC, N_AUDIO, WINDOWS_VERSION, lips],
                      np.int64)


def _lip_landmarker(pp: "PreprocessConfig") -> Landmarker | None:
    """The 68-point model the windows' lips come from (``preprocess.landmarks``, resolved as
    preprocessing does); None when it has no lip contour (template5, off)."""
    lm = shared_landmarker(pp.landmarks, pp.detector)
    return lm if lm is not None and lm.name == "dlib68" else None


def write_windows(folder: Path, meta: dict, pp: "PreprocessConfig") -> bool:
    """Write ``folder/sync.npz`` for one processed video from its ``meta.json`` record; False
    when the video has no audio or no window (nothing written). ``pp.landmarks`` is resolved
    (``auto`` is not a model)."""
    centres = [(f["frame_index"], f["primary"]) for f in meta["frames"] if f["primary"]]
    win = video_windows(meta["record"]["path"], centres, pp.sync_frames, pp.sync_mouth_px,
                        _lip_landmarker(pp))
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
                  "settings": win["settings"].ndim == 1, "hop_s": win["hop_s"].shape == (),
                  "fps": win["fps"].shape == ()}
        if "lips" in win:
            shapes["lips"] = win["lips"].shape == (n, t, len(LIPS), 2)
            shapes["opening"] = win.get("opening", np.zeros(0)).shape == (n, t)
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
