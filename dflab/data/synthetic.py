"""The embedded demo dataset: a small labelled video set made offline from a real photograph.

It is a demo, not a benchmark: every clip is built from one public-domain portrait that installs with
scikit-image (``skimage.data.astronaut()``, NASA), framed differently per identity, with procedural
manipulations that leave the artefact families of the FaceForensics++ methods:

============== ====================================================================================
FaceSwap       another identity's face pasted with a narrow feather: a visible seam, colour mismatch
Deepfakes      the face decoded by an up-convolution from 1/2 resolution: periodic grid artefacts
Face2Face      a time-varying warp of mouth and jaw (expression transfer): resampling blur
NeuralTextures edge-preserving smoothing of the face: the sensor noise of the camera is gone
============== ====================================================================================

Real clips get camera-like noise (signal-dependent), slow motion, H.264 compression and a
speech-like audio track (glottal pulses through moving formant filters). The output uses the FF++
layout, its ``splits/*.json`` id-pair files, and a ``labels.csv``. The same seed gives the same
pixels.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import json
import logging
import math
import multiprocessing as mp
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dflab.core.events import Callback, CancelToken, Emitter
from dflab.data.video import ffmpeg_exe

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

__all__ = ["build_demo_dataset", "build_talking_dataset", "AV_METHODS", "DEMO_METHODS",
           "DEMO_SEED", "DEMO_VIDEOS", "trivial_statistics", "leak_check"]

DEMO_METHODS = ["FaceSwap", "Deepfakes", "Face2Face", "NeuralTextures"]
DEMO_VIDEOS = 100  # 20 identities: 10 id pairs, 5 for training, 2 for validation, 3 for test
DEMO_SEED = 0  # the demo set is one fixed set, whatever env.seed the runs use
FRAME_SIZE = 320
FPS = 15
SECONDS = 2.0
AUDIO_SR = 16000
# The portrait's face in skimage.data.astronaut() (512x512), found once with YuNet:
FACE_CENTER = (223.0, 120.0)
FACE_AXES = (50.0, 64.0)  # half width, half height of the face ellipse
MOUTH = (220.0, 150.0)


@dataclass(frozen=True)
class _Identity:
    """How one 'person' is shot: framing, colour grade, mirroring, noise level, voice."""

    idx: int
    window: float  # side of the source window shown, px of the 512 photo
    offset: tuple[float, float]  # face offset from the window centre, px
    gains: tuple[float, float, float]  # BGR colour grade
    mirror: bool
    noise: float  # sensor noise sigma at mid grey
    f0: float  # voice pitch, Hz

    @staticmethod
    def make(idx: int, seed: int) -> "_Identity":
        rng = np.random.default_rng([seed, idx, 1])
        return _Identity(
            idx=idx,
            window=float(rng.uniform(260, 330)),
            offset=(float(rng.uniform(-30, 30)), float(rng.uniform(-20, 35))),
            gains=tuple(float(g) for g in rng.uniform(0.82, 1.15, 3)),
            mirror=bool(idx % 2),
            noise=float(rng.uniform(2.0, 4.5)),
            f0=float(rng.uniform(95, 230)),
        )


def _source_photo() -> np.ndarray:
    """uint8 (512, 512, 3) BGR: the astronaut portrait (conversion from RGB happens here, once)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def _graded(photo: np.ndarray, ident: _Identity) -> np.ndarray:
    img = photo.astype(np.float32) * np.array(ident.gains, np.float32)
    if ident.mirror:
        img = img[:, ::-1]
    return np.clip(img, 0, 255)


def _affine(ident: _Identity, t: float) -> np.ndarray:
    """2x3 matrix from photo to frame coordinates at time t (slow pan, zoom and roll)."""
    import cv2

    cx = FACE_CENTER[0] if not ident.mirror else 511 - FACE_CENTER[0]
    cy = FACE_CENTER[1]
    scale = FRAME_SIZE / ident.window * (1.0 + 0.06 * math.sin(2 * math.pi * t / SECONDS))
    angle = 3.0 * math.sin(2 * math.pi * (t / SECONDS + ident.idx / 7))
    M = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    dx = 8 * math.sin(2 * math.pi * (t / SECONDS + ident.idx / 5))
    M[0, 2] += FRAME_SIZE / 2 + ident.offset[0] + dx - cx
    M[1, 2] += FRAME_SIZE / 2 + ident.offset[1] - cy
    return M


def _face_mask(M: np.ndarray, mirror: bool, feather: float) -> np.ndarray:
    """float32 (H, W) in [0, 1]: the face ellipse in frame coordinates, edge blurred by feather px."""
    import cv2

    cx = FACE_CENTER[0] if not mirror else 511 - FACE_CENTER[0]
    c = M @ np.array([cx, FACE_CENTER[1], 1.0])
    scale = math.hypot(M[0, 0], M[0, 1])
    angle = math.degrees(math.atan2(M[1, 0], M[0, 0]))
    mask = np.zeros((FRAME_SIZE, FRAME_SIZE), np.float32)
    cv2.ellipse(mask, (int(c[0]), int(c[1])),
                (int(FACE_AXES[0] * scale), int(FACE_AXES[1] * scale)), angle, 0, 360, 1.0, -1)
    if feather > 0:
        k = int(feather) * 2 + 1
        mask = cv2.GaussianBlur(mask, (k, k), feather / 2)
    return mask[..., None]


def _sensor_noise(frame: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Signal-dependent (shot + read) noise on a float32 BGR frame."""
    std = sigma * np.sqrt(0.3 + frame / 128.0)
    return frame + rng.standard_normal(frame.shape).astype(np.float32) * std


def _upconv(face: np.ndarray) -> np.ndarray:
    """Down-sample 2x then up-sample 2x by zero insertion and a 3x3 kernel: the checkerboard of a
    transposed convolution with stride 2 whose kernel does not tile evenly."""
    import cv2

    h, w = face.shape[:2]
    small = cv2.resize(face, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    # bilinear would be [[.25, .5, .25], [.5, 1, .5], [.25, .5, .25]] (even output); this one
    # gives the four output phases gains of 0.96, 1.0, 1.0 and 1.08: a faint 2-pixel grid
    kernel = np.array([[0.27, 0.5, 0.27], [0.5, 0.96, 0.5], [0.27, 0.5, 0.27]], np.float32)
    up = np.zeros((small.shape[0] * 2, small.shape[1] * 2, 3), np.float32)
    up[::2, ::2] = small
    out = cv2.filter2D(up, -1, kernel, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(out, (w, h), interpolation=cv2.INTER_NEAREST)


def _source_face(photo: np.ndarray, ident: _Identity, source: _Identity) -> np.ndarray:
    """The source identity's graded portrait as FaceSwap pastes it into ``ident``'s frames:
    mirrored about the face centre when the two are shot from opposite sides."""
    src = _graded(photo, source)
    return np.ascontiguousarray(src[:, ::-1]) if source.mirror != ident.mirror else src


def _render(graded: np.ndarray, ident: _Identity, method: str, source: np.ndarray | None,
            t: float, rng: np.random.Generator) -> np.ndarray:
    """One frame: uint8 (FRAME_SIZE, FRAME_SIZE, 3) BGR, from ``ident``'s graded portrait
    (``_graded``) and, for FaceSwap, the source's (``_source_face``): both are the same for every
    frame of a clip, so the clip grades them once."""
    import cv2

    size = (FRAME_SIZE, FRAME_SIZE)
    M = _affine(ident, t)
    frame = cv2.warpAffine(graded, M, size, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT)
    frame = _sensor_noise(frame, ident.noise, rng)
    if method == "FaceSwap":
        assert source is not None
        # the source identity's face, posed like the target, with its own colour grade: the
        # mismatch stays
        src = cv2.warpAffine(source, M, size, flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
        src = cv2.GaussianBlur(src, (3, 3), 0.8)  # re-rendered: no sensor noise of its own
        mask = _face_mask(M, ident.mirror, feather=2)
        frame = frame * (1 - mask) + src * mask
    elif method == "Deepfakes":
        mask = _face_mask(M, ident.mirror, feather=6)
        frame = frame * (1 - mask) + _upconv(frame) * mask
    elif method == "Face2Face":
        mouth = M @ np.array([(MOUTH[0] if not ident.mirror else 511 - MOUTH[0]), MOUTH[1], 1.0])
        yy, xx = np.mgrid[0:FRAME_SIZE, 0:FRAME_SIZE].astype(np.float32)
        scale = math.hypot(M[0, 0], M[0, 1])
        r2 = ((xx - mouth[0]) ** 2 + ((yy - mouth[1]) * 0.8) ** 2) / (28 * scale) ** 2
        amp = 7.0 * scale * math.sin(2 * math.pi * 1.5 * t) ** 2  # jaw opens and closes
        dy = amp * np.exp(-r2) * np.tanh((yy - mouth[1]) / (6 * scale))
        frame = cv2.remap(frame, xx, (yy - dy).astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    elif method == "NeuralTextures":
        mask = _face_mask(M, ident.mirror, feather=8)
        # the two bilateral passes only where the mask is not 0 (blend weight 0 keeps the frame
        # as it is), plus the 8 px their two 9-tap windows reach: the same bytes as filtering the
        # whole frame (tests/test_demo.py; the 100-clip set hashed the same), and the demo set
        # builds in 30 s instead of 44 (2026-12-04, three runs each)
        ys, xs = np.nonzero(mask[..., 0])
        y0, y1 = max(0, ys.min() - 8), min(FRAME_SIZE, ys.max() + 9)
        x0, x1 = max(0, xs.min() - 8), min(FRAME_SIZE, xs.max() + 9)
        roi = np.ascontiguousarray(frame[y0:y1, x0:x1])
        clean = cv2.bilateralFilter(cv2.bilateralFilter(roi, 9, 40, 5), 9, 30, 5)
        m = mask[y0:y1, x0:x1]
        frame[y0:y1, x0:x1] = roi * (1 - m) + clean * m
    elif method != "original":
        raise ValueError(f"unknown demo method '{method}'; use one of {DEMO_METHODS}")
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8)


def _glottal(f0: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """float (n,) voice source: jittered glottal pulses at ``f0`` Hz (a slow vibrato), through
    a lip-radiation filter, with a little breath noise."""
    from scipy.signal import lfilter

    t = np.arange(n) / AUDIO_SR
    pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * 0.7 * t)) * (1 + 0.01 * rng.standard_normal(n))
    pulses = (np.diff(np.floor(np.cumsum(pitch / AUDIO_SR)), prepend=0) > 0).astype(np.float32)
    return lfilter([1.0], [1.0, -0.97], pulses) + 0.02 * rng.standard_normal(n)


_VOWELS = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480),
           (570, 840, 2410)]  # formants F1-F3 (Hz) of five vowels


def _vowel(source: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``source`` through the three formant resonators of a vowel drawn from ``rng``."""
    from scipy.signal import lfilter

    y = source
    for f in _VOWELS[rng.integers(len(_VOWELS))]:
        r = np.exp(-np.pi * 90 / AUDIO_SR)
        y = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / AUDIO_SR), r * r], y)
    return y


def _speech(f0: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """float32 mono speech-like signal: a vowel every quarter second, shaped by a smooth
    syllable envelope, with a pause for about one syllable in seven."""
    n = int(seconds * AUDIO_SR)
    source = _glottal(f0, n, rng)
    out = np.zeros(n, np.float32)
    syl = int(AUDIO_SR / 4)
    for start in range(0, n, syl):
        seg = source[start:start + syl]
        y = _vowel(seg, rng)
        env = np.sin(np.linspace(0, np.pi, len(seg))) ** 2 * (rng.random() > 0.15)
        out[start:start + len(seg)] = y * env
    return (0.3 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def _encode(frames: list[np.ndarray], audio: np.ndarray, out: Path, fps: int = FPS) -> None:
    """H.264 (CRF 23, like FF++ c23) + AAC into ``out``, written atomically."""
    import soundfile as sf

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".part.mp4")
    with tempfile.TemporaryDirectory() as td:
        wav = Path(td) / "a.wav"
        sf.write(wav, audio, AUDIO_SR)
        cmd = [ffmpeg_exe(), "-y", "-loglevel", "error",
               "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{FRAME_SIZE}x{FRAME_SIZE}",
               "-r", str(fps), "-i", "-", "-i", str(wav),
               "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
               "-threads", "1", "-c:a", "aac", "-b:a", "64k", "-shortest",
               "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
               "-map_metadata", "-1", str(tmp)]
        proc = subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames),
                              capture_output=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"ffmpeg failed writing '{out}': {proc.stderr.decode()[-500:]}")
    os.replace(tmp, out)


def _pairs(n_ids: int) -> list[tuple[str, str]]:
    return [(f"{i:03d}", f"{i + 1:03d}") for i in range(0, n_ids - 1, 2)]


def _make_clip(job: tuple) -> str:
    """Render and encode one clip (a worker process's unit of work); returns its path."""
    path, method, target, source, seed, seconds = job
    photo = _source_photo()
    # the same sensor noise as the target's original: a fake differs only where it was
    # manipulated, as FF++ fakes share their original's background
    rng = np.random.default_rng([seed, target.idx])
    graded = _graded(photo, target)
    src = _source_face(photo, target, source) if source is not None else None
    frames = [_render(graded, target, method, src, j / FPS, rng)
              for j in range(int(seconds * FPS))]
    voice = np.random.default_rng([seed, target.idx, 99])  # a fake keeps the target's voice
    _encode(frames, _speech(target.f0, seconds, voice), path)
    return str(path)


def _write_splits(out: Path, pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Official-style splits by id pair (half train, a quarter val, a quarter test) written to
    ``out/splits/*.json``; returns {id: split}."""
    n_train = max(1, len(pairs) // 2)
    n_val = max(1, (len(pairs) - n_train) // 2)
    split_pairs = {"train": pairs[:n_train], "val": pairs[n_train:n_train + n_val],
                   "test": pairs[n_train + n_val:]}
    (out / "splits").mkdir(parents=True, exist_ok=True)
    for s, ps in split_pairs.items():
        (out / "splits" / f"{s}.json").write_text(json.dumps([list(p) for p in ps]))
    return {i: s for s, ps in split_pairs.items() for p in ps for i in p}


def _render_all(make, todo: list, done: int, total: int, em: Emitter, workers: int) -> None:
    """Run ``make`` on every job of ``todo`` in ``workers`` processes (0: one per core),
    reporting progress. Every clip has its own seeded generators, so the pixels do not depend
    on the worker count."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    pool = cf.ProcessPoolExecutor(workers, mp.get_context("spawn")) if workers > 1 else None
    try:
        for rel in (pool.map(make, todo) if pool else map(make, todo)):
            em.check()
            done += 1
            em.progress(done, total, "clip", rel)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)


def _write_labels(out: Path, rows: list[dict]) -> Path:
    """``out/labels.csv``, written atomically."""
    labels = out / "labels.csv"
    tmp = labels.with_suffix(".csv.part")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, labels)
    return labels


def build_demo_dataset(out: str | Path, n_videos: int = DEMO_VIDEOS, seed: int = DEMO_SEED,
                       seconds: float = SECONDS, callbacks: list[Callback] | None = None,
                       cancel: CancelToken | None = None, workers: int = 0) -> Path:
    """Write about ``n_videos`` clips (a fifth real, the rest fake) under ``out`` in the FF++ layout.

    At least 30 clips: three id pairs, one for each of train, val and test. Resumable: finished
    clips are kept and skipped. ``workers`` processes render clips (0: one per CPU core). Returns
    the path of ``labels.csv``.
    """
    out = Path(out)
    n_ids = max(6, 2 * round(n_videos / (1 + len(DEMO_METHODS)) / 2))
    pairs = _pairs(n_ids)
    split_of = _write_splits(out, pairs)

    jobs: list[tuple[str, str, str, str | None]] = []  # (relpath, method, target, source)
    for i in range(n_ids):
        vid = f"{i:03d}"
        jobs.append((f"original_sequences/youtube/c23/videos/{vid}.mp4", "original", vid, None))
    for method in DEMO_METHODS:
        for a, b in pairs:
            for tgt, src in ((a, b), (b, a)):
                jobs.append((f"manipulated_sequences/{method}/c23/videos/{tgt}_{src}.mp4",
                             method, tgt, src))

    idents = {f"{i:03d}": _Identity.make(i, seed) for i in range(n_ids)}
    em = Emitter("demo-data", callbacks, cancel)
    rows = [{"path": rel, "label": "real" if method == "original" else "fake", "method": method,
             "dataset": "demo", "compression": "c23", "source_id": tgt,
             "video_id": Path(rel).stem, "split": split_of[tgt]}
            for rel, method, tgt, _ in jobs]
    todo = [(out / rel, method, idents[tgt], idents.get(src or ""), seed, seconds)
            for rel, method, tgt, src in jobs if not (out / rel).exists()]
    done = len(jobs) - len(todo)
    em.progress(done, len(jobs), "clip")
    _render_all(_make_clip, todo, done, len(jobs), em, workers)
    labels = _write_labels(out, rows)
    (out / "README.txt").write_text(
        "dflab demo set: procedurally manipulated clips of one public-domain portrait "
        "(skimage.data.astronaut). A demo of the pipeline, not a benchmark.\n")
    em.result(clips=len(rows), out=str(out), labels=str(labels))
    return labels


def trivial_statistics(labels_csv: str | Path) -> "pd.DataFrame":
    """One row per clip of a labels.csv: what a detector must *not* be able to learn from —
    file size, frame count, fps, width, height, the mean B, G, R (colour grade) and the pixel
    standard deviation — with ``target`` (1 = fake) and ``group`` (the id pair, for grouped CV)."""
    import cv2
    import pandas as pd

    labels_csv = Path(labels_csv)
    df = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    rows = []
    for r in df.itertuples():
        path = labels_csv.parent / r.path
        cap = cv2.VideoCapture(str(path))
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        fps = cap.get(cv2.CAP_PROP_FPS)
        cap.release()
        if not frames:
            raise ValueError(f"'{path}' has no decodable frames; rebuild the demo set")
        a = np.stack(frames).astype(np.float32)  # (T, H, W, 3) BGR
        ids = [int(r.source_id), *(int(v) for v in str(r.video_id).split("_")[1:])]
        rows.append({"path": r.path, "file_bytes": path.stat().st_size, "frames": len(frames),
                     "fps": fps, "width": a.shape[2], "height": a.shape[1],
                     "mean_b": a[..., 0].mean(), "mean_g": a[..., 1].mean(),
                     "mean_r": a[..., 2].mean(), "pixel_std": a.std(),
                     "target": int(r.label == "fake"), "group": min(ids) // 2})
    return pd.DataFrame(rows)


def leak_check(labels_csv: str | Path, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """ROC-AUC of classifiers that see only :func:`trivial_statistics` (a logistic regression
    and a random forest), out of fold with the folds grouped by id pair so no identity is in
    both. A demo whose labels leak through such statistics would teach nothing; near 0.5 is the
    goal."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    t = trivial_statistics(labels_csv)
    X = t.drop(columns=["path", "target", "group"]).to_numpy()
    cv = GroupKFold(min(folds, t["group"].nunique()))
    out = {}
    for name, clf in (("logistic", make_pipeline(StandardScaler(), LogisticRegression())),
                      ("forest", RandomForestClassifier(200, random_state=seed))):
        p = cross_val_predict(clf, X, t["target"], groups=t["group"], cv=cv,
                              method="predict_proba")[:, 1]
        out[name] = float(roc_auc_score(t["target"], p))
    return out


# ---------------------------------------------------------------------------------------------
# The talking set: clips with a mouth that opens with the speech, for the audio-visual sync
# detector (dflab.av.sync). Real clips are in sync; AudioShift fakes carry the same speech shifted by
# 0.2-1 s, AudioSwap fakes the speech of their pair's other identity. The pixels of every fake
# are those of its real clip: only the sound differs, so no frame classifier can tell them apart.

AV_METHODS = ["AudioShift", "AudioSwap"]
AV_IDENTITIES = 16  # 8 id pairs: 4 train, 2 val, 2 test
AV_FIRST_ID = 100  # identities 100.. (the visual demo set uses 000..): other framings and voices
AV_FPS = 25
AV_SECONDS = 4.0
AV_SHIFT_S = (0.2, 1.0)


@dataclass(frozen=True)
class _Utterance:
    """Syllables as (start s, length s, loudness); pauses between some of them. Irregular
    lengths, so no shift of the track lines it up with itself again."""

    syllables: tuple[tuple[float, float, float], ...]

    @staticmethod
    def make(seconds: float, rng: np.random.Generator) -> "_Utterance":
        out, t = [], float(rng.uniform(0.0, 0.3))
        while t < seconds:
            length = float(rng.uniform(0.12, 0.34))
            out.append((t, length, float(rng.uniform(0.55, 1.0))))
            t += length + (float(rng.uniform(0.12, 0.45)) if rng.random() < 0.3 else 0.0)
        return _Utterance(tuple(out))

    def envelope(self, t: np.ndarray) -> np.ndarray:
        """float (len(t),) in [0, 1]: how open the mouth is (and how loud the voice) at times t."""
        t = np.asarray(t, float)
        env = np.zeros_like(t)
        for start, length, loud in self.syllables:
            inside = (t >= start) & (t < start + length)
            env[inside] = np.maximum(env[inside],
                                     loud * np.sin(np.pi * (t[inside] - start) / length) ** 2)
        return env


def _voice(utt: _Utterance, f0: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """float32 mono speech-like signal of ``utt``: a vowel per syllable, times the syllable
    envelope, with room noise in the pauses."""
    n = int(round(seconds * AUDIO_SR))
    source = _glottal(f0, n, rng)
    out = np.zeros(n, np.float32)
    for start, length, _ in utt.syllables:
        a, b = int(start * AUDIO_SR), min(n, int((start + length) * AUDIO_SR))
        if a >= n:
            break
        out[a:b] = _vowel(source[a:b], rng)
    out *= utt.envelope(np.arange(n) / AUDIO_SR).astype(np.float32)
    out = 0.3 * out / (np.abs(out).max() + 1e-9)
    return (out + 0.002 * rng.standard_normal(n)).astype(np.float32)  # room noise in the pauses


def _draw_mouth(frame: np.ndarray, ident: _Identity, t: float, opening: float) -> np.ndarray:
    """The portrait's mouth redrawn open by ``opening`` (0..1): a dark ellipse inside lips,
    placed and turned with the frame's affine map. float32 BGR in and out."""
    import cv2

    M = _affine(ident, t)
    x = MOUTH[0] if not ident.mirror else 511 - MOUTH[0]
    c = M @ np.array([x, MOUTH[1], 1.0])
    scale = math.hypot(M[0, 0], M[0, 1])
    angle = math.degrees(math.atan2(M[1, 0], M[0, 0]))
    half_w, half_h = 15 * scale, (2.0 + 11.0 * opening) * scale
    out = frame.copy()
    centre = (int(round(c[0] * 16)), int(round(c[1] * 16)))  # 4 fractional bits
    cv2.ellipse(out, centre, (int(half_w * 16 + 40), int((half_h + 2.5 * scale) * 16)), angle,
                0, 360, (70, 70, 150), -1, cv2.LINE_AA, 4)
    cv2.ellipse(out, centre, (int(half_w * 16), int(half_h * 16)), angle, 0, 360,
                (25, 20, 45), -1, cv2.LINE_AA, 4)
    return out


def _make_talking_clip(job: tuple) -> str:
    """Render and encode one talking clip: the mouth follows ``mouth_utt``, the track plays
    ``voice_utt`` (of ``voice_ident``) from ``shift`` seconds on."""
    import cv2

    path, ident, mouth_utt, voice_ident, voice_utt, shift, seed, seconds = job
    photo = _source_photo()
    rng = np.random.default_rng([seed, ident.idx, 7])
    n = int(round(seconds * AV_FPS))
    opening = mouth_utt.envelope(np.arange(n) / AV_FPS)
    frames = []
    size = (FRAME_SIZE, FRAME_SIZE)
    graded = _graded(photo, ident)
    for j in range(n):
        t = j / AV_FPS
        frame = cv2.warpAffine(graded, _affine(ident, t), size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
        frame = _sensor_noise(_draw_mouth(frame, ident, t, float(opening[j])), ident.noise, rng)
        frames.append(np.clip(frame + 0.5, 0, 255).astype(np.uint8))
    voice_rng = np.random.default_rng([seed, voice_ident.idx, 99])
    audio = _voice(voice_utt, voice_ident.f0, seconds + AV_SHIFT_S[1] + 0.1, voice_rng)
    a = int(round(shift * AUDIO_SR))
    _encode(frames, audio[a:a + int(round(seconds * AUDIO_SR))], path, fps=AV_FPS)
    return str(path)


def build_talking_dataset(out: str | Path, n_identities: int = AV_IDENTITIES,
                          seed: int = DEMO_SEED, seconds: float = AV_SECONDS,
                          callbacks: list[Callback] | None = None,
                          cancel: CancelToken | None = None, workers: int = 0) -> Path:
    """Write the talking set under ``out`` (FF++ layout, ``labels.csv``, ``splits/``, and
    ``shifts.json``: each clip's true audio offset in seconds, positive when the sound comes
    early). Per identity: one real clip in sync, one AudioShift and one AudioSwap fake.
    Resumable like :func:`build_demo_dataset`. Returns the path of ``labels.csv``."""
    out = Path(out)
    n_ids = max(6, 2 * (n_identities // 2))
    ids = [f"{AV_FIRST_ID + i:03d}" for i in range(n_ids)]
    pairs = [(ids[i], ids[i + 1]) for i in range(0, n_ids - 1, 2)]
    split_of = _write_splits(out, pairs)
    idents = {v: _Identity.make(int(v), seed) for v in ids}
    utts = {v: _Utterance.make(seconds + AV_SHIFT_S[1] + 0.1,
                               np.random.default_rng([seed, int(v), 5])) for v in ids}
    partner = {a: b for p in pairs for a, b in (p, p[::-1])}
    jobs, rows, shifts = [], [], {}
    for v in ids:
        shift_rng = np.random.default_rng([seed, int(v), 11])
        shift = float(np.round(shift_rng.uniform(*AV_SHIFT_S), 2))
        for rel, method, voice, s in (
                (f"original_sequences/youtube/c23/videos/{v}.mp4", "original", v, 0.0),
                (f"manipulated_sequences/AudioShift/c23/videos/{v}_{v}.mp4", "AudioShift", v,
                 shift),
                (f"manipulated_sequences/AudioSwap/c23/videos/{v}_{partner[v]}.mp4", "AudioSwap",
                 partner[v], 0.0)):
            jobs.append((out / rel, idents[v], utts[v], idents[voice], utts[voice], s, seed,
                         seconds))
            rows.append({"path": rel, "label": "real" if method == "original" else "fake",
                         "method": method, "dataset": "demo_av", "compression": "c23",
                         "source_id": v, "video_id": Path(rel).stem, "split": split_of[v]})
            if method != "AudioSwap":
                shifts[rel] = s
    em = Emitter("demo-data", callbacks, cancel)
    todo = [j for j in jobs if not Path(j[0]).exists()]
    done = len(jobs) - len(todo)
    em.progress(done, len(jobs), "clip")
    _render_all(_make_talking_clip, todo, done, len(jobs), em, workers)
    (out / "shifts.json").write_text(json.dumps(shifts, indent=1))
    labels = _write_labels(out, rows)
    (out / "README.txt").write_text(
        "dflab talking demo set: the astronaut portrait with a drawn mouth that opens with a "
        "synthetic voice. Real clips are in sync; AudioShift fakes have the voice shifted "
        "(shifts.json), AudioSwap fakes another identity's voice. A demo, not a benchmark.\n")
    em.result(clips=len(rows), out=str(out), labels=str(labels))
    return labels
