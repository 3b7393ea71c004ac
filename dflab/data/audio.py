"""Audio: FFmpeg extraction to mono WAV, and librosa features aligned row by row to video frames.

For each sampled frame at time ``t`` the features are averaged over a window centred on ``t``:
MFCC (``n_mfcc``), spectral centroid, spectral bandwidth and zero-crossing rate. Row ``k`` of every
array belongs to the ``k``-th sampled frame, so audio-visual pairs line up by index.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from dflab.data.video import ffmpeg_exe

__all__ = ["has_audio", "extract_wav", "shift_audio", "frame_audio_features", "AUDIO_SR"]

AUDIO_SR = 16000


def has_audio(path: str | Path) -> bool:
    """True when FFmpeg sees an audio stream in ``path``."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True,
                         text=True)
    return "Audio:" in out.stderr


def extract_wav(video: str | Path, wav: str | Path, sr: int = AUDIO_SR,
                pad_start: bool = False) -> Path:
    """Decode the first audio stream of ``video`` to a mono ``sr`` Hz 16-bit WAV. ``pad_start``:
    an audio stream that starts after time 0 is preceded by silence, so sample 0 is time 0 of
    the video's clock (FFmpeg's aresample with ``first_pts=0``)."""
    wav = Path(wav)
    pad = ["-af", "aresample=async=1:first_pts=0"] if pad_start else []
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(video), "-vn", *pad, "-ac", "1",
           "-ar", str(sr), "-acodec", "pcm_s16le", str(wav)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not wav.exists():
        raise RuntimeError(f"ffmpeg could not extract audio from '{video}': "
                           f"{proc.stderr.strip()[-400:]}")
    return wav


def shift_audio(src: str | Path, out: str | Path, shift_s: float) -> Path:
    """``src`` re-muxed with its own sound ``shift_s`` seconds early (> 0: the start of the audio
    cut, FFmpeg ``-ss`` on the audio input) or late (< 0: the audio stream starts after time 0,
    ``-itsoffset``). The video stream is copied, so its frames are the clip's own: a known
    offset to measure a lip-sync detector against."""
    if shift_s >= 0:
        inputs = ["-i", str(src), "-ss", f"{shift_s:.4f}", "-i", str(src)]
    else:
        inputs = ["-i", str(src), "-itsoffset", f"{-shift_s:.4f}", "-i", str(src)]
    proc = subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", *inputs, "-map", "0:v",
                           "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-b:a", "96k", str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg could not re-mux '{src}' with its sound shifted: "
                           f"{proc.stderr.strip()[-400:]}")
    return Path(out)


def frame_audio_features(wav: str | Path, timestamps: np.ndarray, window_s: float = 0.5,
                         n_mfcc: int = 20, hop: int = 160) -> dict[str, np.ndarray]:
    """Features of the audio around each timestamp (seconds).

    Returns float32 arrays: ``mfcc (n, n_mfcc)``, ``centroid (n,)``, ``bandwidth (n,)``,
    ``zcr (n,)``, and ``rms (n,)``; a window that falls outside the audio gives zeros there and
    ``valid`` False.
    """
    import librosa

    y, sr = librosa.load(str(wav), sr=None, mono=True)
    n_fft = 512 if sr <= 16000 else 1024
    timestamps = np.asarray(timestamps, dtype=np.float64)
    n = len(timestamps)
    out = {"mfcc": np.zeros((n, n_mfcc), np.float32), "centroid": np.zeros(n, np.float32),
           "bandwidth": np.zeros(n, np.float32), "zcr": np.zeros(n, np.float32),
           "rms": np.zeros(n, np.float32), "valid": np.zeros(n, bool)}
    if len(y) < n_fft:
        return out
    # frame-level features once over the whole signal, then averaged per window
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=n_mfcc, n_fft=n_fft, hop_length=hop)
    cent = librosa.feature.spectral_centroid(y=y, sr=sr, n_fft=n_fft, hop_length=hop)[0]
    bw = librosa.feature.spectral_bandwidth(y=y, sr=sr, n_fft=n_fft, hop_length=hop)[0]
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=n_fft, hop_length=hop)[0]
    rms = librosa.feature.rms(y=y, frame_length=n_fft, hop_length=hop)[0]
    times = librosa.frames_to_time(np.arange(mfcc.shape[1]), sr=sr, hop_length=hop)
    half = window_s / 2
    for k, t in enumerate(timestamps):
        sel = (times >= t - half) & (times <= t + half)
        if not sel.any():
            continue
        out["mfcc"][k] = mfcc[:, sel].mean(axis=1)
        out["centroid"][k] = cent[sel].mean()
        out["bandwidth"][k] = bw[sel].mean()
        out["zcr"][k] = zcr[sel].mean()
        out["rms"][k] = rms[sel].mean()
        out["valid"][k] = True
    return out
