"""Audio-visual synchronisation: dense mouth windows, a SyncNet-style model, a training-free
baseline, and per-clip offsets and sync scores.

Windows come from :mod:`dflab.data.sync_windows` (``sync.npz`` in each video's folder).

Offsets are in video frames: ``+k`` means the sound comes ``k`` frames early (the mouth shape of
time ``t`` is heard at ``t - k/fps``). Per clip, the distance curve ``D(k)`` (mean over windows of
the distance between the mouth and the audio ``k`` frames away) gives the estimated offset
(``argmin D``), a confidence (``median D - min D``, SyncNet's) and a sync score
(``D(0) - median D``: negative when sound and mouth agree at the clip's own timing, near 0 or
above when the sound is shifted or foreign; higher is more likely fake).

The learned model (:class:`SyncNet`) embeds 5 mouth frames and the matching MFCC window into one
space; it trains on real clips only (no labels needed): for each window the aligned audio is the
positive, the same clip's audio shifted by every other offset in ``+-sync.max_offset`` and the
other clips' audio in the batch are the negatives (a multi-way cross-entropy, as in Chung et al.,
"Perfect match", 2019). The baseline (:func:`baseline_curves`) needs no training: the correlation
of mouth motion (mean absolute frame difference in the mouth region) with the change of the audio
energy envelope over the same frame interval, at every offset.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dflab.core.events import Callback, CancelToken, Emitter, EpochMetrics
from dflab.core.files import load_torch_file, reading, write_json
from dflab.core.metrics import bootstrap_auc_ci, format_auc
from dflab.core.runs import create_run_dir
from dflab.data.landmarks import EXTRA, dlib_available, shared_landmarker
from dflab.data.sync_windows import (N_AUDIO, dense_track, every_frame_windows, load_windows,
                                     video_windows)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from dflab.core.config import LabConfig

log = logging.getLogger(__name__)

__all__ = ["audio_windows", "loudness_db", "speech_span", "lip_curve", "baseline_curves",
           "clip_summary", "SyncNet", "train_sync", "load_sync", "SyncModel", "model_curves",
           "score_sync", "sync_table", "format_sync_report"]

TRAIN_NEGATIVES = 15  # shifted windows of the clip's own audio per training batch
DETREND_S = 0.5  # lip opening and loudness less their 0.5 s moving mean (drift out, syllables in)
SILENCE_DB = 40.0  # quieter than the loudest 10 ms by this much is silence (ends trimmed)


# ----------------------------------------------------------------------------- audio windows

def _frame_step(win: dict) -> float:
    d = np.diff(win["times"], axis=1)
    step = float(np.median(d)) if d.size else 0.0
    return step if step > 0 else 1.0 / max(float(win["fps"]), 1.0)


def _column_times(win: dict) -> np.ndarray:
    """float64 (N, N_AUDIO): the times the audio of each window is sampled at (its frames' span,
    half a frame either side)."""
    step = _frame_step(win)
    start = win["times"][:, :1] - step / 2
    span = win["times"][:, -1:] + step / 2 - start
    return start + span * (np.arange(N_AUDIO) + 0.5) / N_AUDIO


def _interp(track: np.ndarray, hop: float, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of the columns of ``track (C, T)`` at times ``t`` (any shape):
    (values (C, *t.shape), valid t.shape)."""
    pos = t / hop
    valid = (pos >= 0) & (pos <= track.shape[1] - 1)
    pos = np.clip(pos, 0, track.shape[1] - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, track.shape[1] - 1)
    w = (pos - i0).astype(np.float32)
    return track[:, i0] * (1 - w) + track[:, i1] * w, valid


def audio_windows(win: dict, offsets: np.ndarray, rows: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The MFCC window of each window at each offset: (float32 (n, K, N_MFCC, N_AUDIO),
    valid bool (n, K): False where the audio runs out or falls in the leading or trailing
    silence, see :func:`speech_span`). The MFCC is standardised per coefficient over the
    clip."""
    mfcc = win["mfcc"]
    mfcc = (mfcc - mfcc.mean(1, keepdims=True)) / (mfcc.std(1, keepdims=True) + 1e-5)
    cols = _column_times(win)
    if rows is not None:
        cols = cols[rows]
    t = cols[:, None, :] - np.asarray(offsets)[None, :, None] * _frame_step(win)
    vals, valid = _interp(mfcc, float(win["hop_s"]), t)  # (C, n, K, N_AUDIO)
    start, end = speech_span(win)  # leading and trailing silence is never matched
    valid &= (t >= start - _frame_step(win)) & (t <= end + _frame_step(win))
    return np.ascontiguousarray(vals.transpose(1, 2, 0, 3)), valid.all(axis=2)


def loudness_db(win: dict, floor: float = 1e-4) -> np.ndarray:
    """The clip's loudness in dB at the 10 ms hop: 20 log10 of its RMS (``floor`` keeps
    silence finite)."""
    return 20 * np.log10(win["rms"].astype(np.float64) + floor)


def _corr(a: np.ndarray, b: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Pearson correlation of ``a`` and ``b`` along ``axis`` (all of them when None); 0 where
    either is constant."""
    a = a - a.mean(axis=axis, keepdims=True)
    b = b - b.mean(axis=axis, keepdims=True)
    den = np.sqrt((a * a).sum(axis=axis) * (b * b).sum(axis=axis))
    return np.where(den > 0, (a * b).sum(axis=axis) / np.where(den > 0, den, 1), 0.0)


def baseline_curves(win: dict, max_offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training-free baseline: (per-window correlation (N, 2K+1), valid (N, 2K+1), the
    clip's pooled correlation (2K+1,)) of mouth motion with the change of the audio energy.

    Motion between consecutive frames is the mean absolute grey difference in the mouth crop;
    energy change is ``|E(t_j - k/fps) - E(t_{j-1} - k/fps)|`` of the loudness E (the RMS
    envelope in dB: on linear RMS the loudest syllables dominate and 2 of 30 shifted copies of
    the talking set's clips peaked at a wrong offset, 0 of 30 in dB). Written here: no library
    cross-correlates these two signals on irregular timestamps."""
    offsets = np.arange(-max_offset, max_offset + 1)
    m = win["mouths"].astype(np.float32)
    motion = np.abs(np.diff(m, axis=1)).mean(axis=(2, 3))  # (N, F-1)
    step = _frame_step(win)
    t = win["times"][:, None, :] - offsets[None, :, None] * step  # (N, K, F)
    loudness = loudness_db(win)
    energy, valid = _interp(loudness[None, :], float(win["hop_s"]), t)
    change = np.abs(np.diff(energy[0], axis=2))  # (N, K, F-1)
    valid = valid.all(axis=2)

    per_window = _corr(np.broadcast_to(motion[:, None, :], change.shape), change, axis=2)
    pooled = np.zeros(len(offsets))
    for k in range(len(offsets)):
        sel = valid[:, k]
        if sel.sum() >= 2:
            pooled[k] = _corr(motion[sel].ravel(), change[sel, k].ravel(), axis=0)
    return per_window, valid, pooled


def speech_span(win: dict, top_db: float = SILENCE_DB) -> tuple[float, float]:
    """(start, end) s of the clip's speech: from the first to the last 10 ms column whose
    loudness is within ``top_db`` of the clip's loudest (librosa.effects.trim's rule, on the
    stored RMS); leading and trailing silence fall outside."""
    loud = loudness_db(win, 1e-5)
    on = np.flatnonzero(loud >= loud.max() - top_db)
    hop = float(win["hop_s"])
    return (float(on[0] * hop), float(on[-1] * hop)) if on.size else (0.0, 0.0)


def _frame_mean(track: np.ndarray, hop: float, step: float) -> np.ndarray:
    """``track`` averaged over one video frame's span (a moving mean of step/hop columns), so
    that sampling it at a frame's time reads the whole frame's sound."""
    n = max(1, int(round(step / hop)))
    return np.convolve(track, np.ones(n) / n, mode="same")


def _detrend(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` less its centred moving mean over ``n`` samples (NaN-aware): keeps the syllable
    rate (2-7 Hz, where lips and speech envelope agree most: Chandrasekaran et al. 2009) and
    drops the slow drift (head turns, loudness changes) that correlates at any lag."""
    ok = np.isfinite(x)
    k = np.ones(max(1, n))
    total = np.convolve(np.where(ok, x, 0.0), k, mode="same")
    count = np.convolve(ok.astype(float), k, mode="same")
    return np.where(ok, x - total / np.maximum(count, 1), np.nan)


def lip_curve(win: dict, max_offset: int, min_frames: int = 25) -> np.ndarray:
    """The training-free detector on lip landmarks: per offset k in ``-max_offset..max_offset``
    the correlation, over the clip's frames, of the lip opening with the speech loudness (dB)
    heard ``k`` frames earlier, averaged with the correlation of the lip-opening speed (its
    rise between consecutive frames) with the onset strength over the same interval. Frames
    whose sound falls in the leading or trailing silence (:func:`speech_span`) are left out at
    each offset, so silence padded on either end changes nothing. NaN where fewer than
    ``min_frames`` frames remain or the windows have no lip landmarks.

    The two pairings are the classic ones (lip aperture follows the acoustic envelope: Grant &
    Seitz 2000, Chandrasekaran et al. 2009; a mouth opening starts a syllable, an onset), fixed
    before this was measured on real speech. Written here: no library correlates these on a
    clip's own frame times."""
    offsets = np.arange(-max_offset, max_offset + 1)
    curve = np.full(len(offsets), np.nan)
    tr = dense_track(win)
    if "onset" not in win or not np.isfinite(tr["opening"]).any():
        return curve
    t, op = tr["times"], tr["opening"].astype(np.float64)
    step, hop = _frame_step(win), float(win["hop_s"])
    rise = np.full(len(t), np.nan)
    follows = np.diff(tr["frame_index"]) == 1
    rise[1:] = np.where(follows, np.diff(op), np.nan)
    op = _detrend(op, int(round(DETREND_S / step)))
    loud = _detrend(_frame_mean(loudness_db(win), hop, step), int(round(DETREND_S / hop)))
    onset = _frame_mean(win["onset"].astype(np.float64), hop, step)
    start, end = speech_span(win)
    for j, k in enumerate(offsets):
        ta = t - k * step
        a_loud, ok = _interp(loud[None], hop, ta)
        a_on, _ = _interp(onset[None], hop, ta - step / 2)  # the interval the rise spans
        ok &= (ta >= start) & (ta <= end) & np.isfinite(op)
        ok_rise = ok & np.isfinite(rise)
        if ok.sum() < min_frames or ok_rise.sum() < min_frames:
            continue
        curve[j] = (_corr(op[ok], a_loud[0][ok]) + _corr(rise[ok_rise], a_on[0][ok_rise])) / 2
    return curve


def clip_summary(curve: np.ndarray, max_offset: int, fps: float, lower_is_better: bool = True
                 ) -> dict[str, float]:
    """Offset (frames and ms), confidence and sync score of one clip's curve over offsets
    ``-max_offset..max_offset`` (a distance curve, or a correlation with ``lower_is_better``
    False, which is negated first). NaN entries (no valid window) are ignored."""
    d = np.asarray(curve, float) if lower_is_better else -np.asarray(curve, float)
    ok = np.isfinite(d)
    if not ok.any():
        return {"offset_frames": float("nan"), "offset_ms": float("nan"),
                "confidence": float("nan"), "sync_score": float("nan")}
    best = int(np.nanargmin(np.where(ok, d, np.inf)))
    med = float(np.median(d[ok]))
    off = best - max_offset
    return {"offset_frames": float(off), "offset_ms": float(1000 * off / fps) if fps else 0.0,
            "confidence": med - float(d[best]), "sync_score": float(d[max_offset]) - med}


def _masked_curve(per_window: np.ndarray, valid: np.ndarray, min_share: float = 0.25) -> np.ndarray:
    """Mean over windows valid at each offset; NaN where fewer than ``min_share`` are valid."""
    n = valid.sum(axis=0)
    total = np.where(valid, per_window, 0.0).sum(axis=0)
    return np.where(n >= max(1, min_share * len(valid)), total / np.maximum(n, 1), np.nan)


def _window_scores(per_window: np.ndarray, valid: np.ndarray, max_offset: int,
                   lower_is_better: bool = True) -> np.ndarray:
    """Per window: value at offset 0 minus the median over its valid offsets (sign so that
    higher is more out of sync)."""
    d = per_window if lower_is_better else -per_window
    med = np.array([np.median(row[v]) if v.any() else np.nan for row, v in zip(d, valid)])
    return np.where(valid[:, max_offset], d[:, max_offset] - med, np.nan)


# ----------------------------------------------------------------------------- the model

def _torch():
    import torch
    from torch import nn

    return torch, nn


LIP_FEATURES = 41  # per frame: the 20 lip points (x, y) in the crop, and the lip opening
#: the lip points mirrored left to right (outer contour 48-59, then inner 60-67)
_MIRROR = np.array([(6 - i) % 12 for i in range(12)] + [12 + (4 - j) % 8 for j in range(8)])


def visual_input(win: dict, rows: np.ndarray, kind: str) -> np.ndarray:
    """What the sync model's visual stream reads of windows ``rows``: ``pixels``, the mouth
    crops (float32 (n, F, H, W), 0-255); ``lips``, each frame's lip contour in the aligned crop
    (centred, in half crop widths) and its lip opening (float32 (n, F, 41); NaN where a window
    has no lip landmarks)."""
    if kind == "pixels":
        return win["mouths"][rows].astype(np.float32)
    h, w = win["mouths"].shape[2:]
    if "lips" not in win:
        return np.full((len(rows), win["mouths"].shape[1], LIP_FEATURES), np.nan, np.float32)
    pts = (win["lips"][rows] - np.array([w / 2, h / 2], np.float32)) / (w / 2)
    n, f = pts.shape[:2]
    return np.concatenate([pts.reshape(n, f, -1), win["opening"][rows][..., None]],
                          axis=2).astype(np.float32)


def _augment(x: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One window's visual input, jittered: brightness and contrast (pixels) or scale, shift and
    point noise (lips), and mirrored half the time (a mouth is symmetric)."""
    if kind == "pixels":
        x = np.clip((x - x.mean()) * rng.uniform(0.8, 1.2) + x.mean() + rng.uniform(-15, 15),
                    0, 255)
        return x[:, :, ::-1] if rng.random() < 0.5 else x
    pts = x[:, :40].reshape(len(x), 20, 2)
    pts = pts * rng.uniform(0.9, 1.1) + rng.normal(0, 0.03, 2) + rng.normal(0, 0.01, pts.shape)
    if rng.random() < 0.5:
        pts = pts[:, _MIRROR] * np.array([-1.0, 1.0])
    return np.concatenate([pts.reshape(len(x), 40), x[:, 40:]], axis=1).astype(np.float32)


def SyncNet(frames: int = 5, embed: int = 64, visual: str = "pixels"):  # noqa: N802 - a factory that reads as a class
    """Two small streams into one ``embed``-dim unit sphere: the mouth (``visual``: ``pixels``,
    frames ``(B, frames, H, W)`` as channels into a small CNN; ``lips``, the lip contours and
    openings ``(B, frames, 41)`` into an MLP) and MFCC windows ``(B, N_MFCC, N_AUDIO)``."""
    torch, nn = _torch()

    def block(i, o, pool):
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(True),
                *([nn.MaxPool2d(pool)] if pool else [])]

    class _SyncNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.frames, self.embed, self.kind = frames, embed, visual
            if visual == "lips":
                self.visual = nn.Sequential(nn.Flatten(), nn.Linear(frames * LIP_FEATURES, 128),
                                            nn.ReLU(True), nn.Linear(128, 128), nn.ReLU(True),
                                            nn.Linear(128, embed))
            else:
                self.visual = nn.Sequential(*block(frames, 32, 2), *block(32, 64, 2),
                                            *block(64, 64, 2), *block(64, 64, 0),
                                            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                            nn.Linear(64, embed))
            self.audio = nn.Sequential(*block(1, 16, (1, 2)), *block(16, 32, 2),
                                       *block(32, 64, 0), nn.AdaptiveAvgPool2d(1),
                                       nn.Flatten(), nn.Linear(64, embed))

        def embed_visual(self, x):  # visual_input(): pixels (B, F, H, W) or lips (B, F, 41)
            if self.kind == "lips":
                return nn.functional.normalize(self.visual(x), dim=-1)
            return nn.functional.normalize(self.visual((x / 255.0 - 0.5) / 0.25), dim=-1)

        def embed_audio(self, a):  # (B, N_MFCC, N_AUDIO), standardised
            return nn.functional.normalize(self.audio(a[:, None]), dim=-1)

    return _SyncNet()


@dataclass
class _Clips:
    """The windows of a set of clips, with the clip each window belongs to."""

    wins: list[dict]
    uids: list[str]
    clip: np.ndarray  # (N,) int: index into wins
    row: np.ndarray  # (N,) int: window within its clip

    @staticmethod
    def load(processed: Path, uids: list[str], every_frame: bool = False) -> "_Clips":
        """The windows of ``uids`` (with ``every_frame``, re-cut at every frame:
        :func:`every_frame_windows`)."""
        wins, names, clip, row = [], [], [], []
        for uid in uids:
            w = load_windows(processed, uid)
            if w is None:
                continue
            if every_frame:
                w = every_frame_windows(w)
            clip += [len(wins)] * len(w["mouths"])
            row += list(range(len(w["mouths"])))
            wins.append(w)
            names.append(uid)
        return _Clips(wins, names, np.asarray(clip, int), np.asarray(row, int))

    def lips_only(self) -> "_Clips":
        """These windows less those without lip landmarks (clips left without any dropped)."""
        keep = np.array([self.wins[c]["mouth_source"][r] == "lip_landmarks"
                         for c, r in zip(self.clip, self.row)], bool)
        used = np.unique(self.clip[keep])
        new_index = {c: i for i, c in enumerate(used)}
        return _Clips([self.wins[c] for c in used], [self.uids[c] for c in used],
                      np.array([new_index[c] for c in self.clip[keep]], int), self.row[keep])

    def __len__(self) -> int:
        return len(self.clip)


def _batch(clips: _Clips, idx: np.ndarray, offsets: np.ndarray, rng: np.random.Generator | None,
           kind: str = "pixels"):
    """Visual inputs (:func:`visual_input`), audio candidates (B, K, C, A) and their validity
    (B, K)."""
    mouths, cands, valid = [], [], []
    for i in idx:
        w = clips.wins[clips.clip[i]]
        m = visual_input(w, np.asarray([clips.row[i]]), kind)[0]
        if rng is not None:
            m = _augment(m, kind, rng)
        a, v = audio_windows(w, offsets, np.asarray([clips.row[i]]))
        mouths.append(np.ascontiguousarray(m))
        cands.append(a[0])
        valid.append(v[0])
    return np.stack(mouths), np.stack(cands), np.stack(valid)


def _loss(model, x, a, valid, clip_ids, centre: int, temperature: float):
    """Multi-way matching: the aligned audio among the clip's own shifted audio and the other
    clips' aligned audio in the batch. Returns (loss, share of windows whose best own offset is
    within one frame of the aligned one)."""
    torch, nn = _torch()
    B, K = valid.shape
    v = model.embed_visual(x)  # (B, D)
    emb = model.embed_audio(a.reshape(B * K, *a.shape[2:])).reshape(B, K, -1)
    own = (emb * v[:, None]).sum(-1)  # (B, K)
    own = own.masked_fill(~valid, -1e4)
    other = v @ emb[:, centre].T  # (B, B): window i against window j's aligned audio
    same = clip_ids[:, None] == clip_ids[None, :]
    other = other.masked_fill(same, -1e4)
    logits = torch.cat([own, other], dim=1) / temperature
    target = torch.full((B,), centre, dtype=torch.long)
    keep = valid[:, centre]  # a window whose own audio falls in silence teaches nothing
    if not bool(keep.any()):
        return (logits * 0).sum(), 0.0
    loss = nn.functional.cross_entropy(logits[keep], target[keep])
    hit = ((own[keep].argmax(1) - centre).abs() <= 1).float().mean()
    return loss, float(hit)


def _split_uids(processed: Path, split: str, real_only: bool) -> list[str]:
    from dflab.data.datasets import load_index

    idx = load_index(processed)
    idx = idx[idx["split"] == split]
    if real_only:
        idx = idx[idx["label"] == "real"]
    return sorted(idx["uid"].unique())


def train_sync(cfg: "LabConfig", processed: str | Path, runs_root: str | Path, name: str = "",
               callbacks: list[Callback] | None = None, cancel: CancelToken | None = None,
               train_uids: list[str] | None = None, val_uids: list[str] | None = None) -> Path:
    """Train :class:`SyncNet` on the real clips of the train split (their windows), pick the
    epoch on the real clips of val (loss); returns the run folder with ``sync.pt``,
    ``history.jsonl`` and ``sync_summary.json``. ``train_uids`` / ``val_uids``: these clips
    instead of the splits' (e.g. folds by identity)."""
    # Long on purpose: the set-up and the epoch loop of a small model, read top to bottom as in
    # nanoGPT's train.py.
    torch, _ = _torch()

    processed = Path(processed)
    sc = cfg.sync
    em = Emitter("sync-train", callbacks, cancel)
    train_uids = train_uids if train_uids is not None else _split_uids(processed, "train", True)
    val_uids = val_uids if val_uids is not None else _split_uids(processed, "val", True)
    train = _Clips.load(processed, train_uids, every_frame=True)
    val = _Clips.load(processed, val_uids)
    if len(train) == 0 or len(val) == 0:
        which = "train" if not len(train) else "val"
        raise ValueError(f"'{processed}' has no sync windows for real {which} "
                         f"clips; extract them first (`dflab sync extract --processed "
                         f"{processed}`), from clips with audio and a face")
    frames = train.wins[0]["mouths"].shape[1]
    sources = np.concatenate([w["mouth_source"] for w in train.wins])
    lips = bool(np.mean(sources == "lip_landmarks") > 0.5)  # crops it reads: aligned on the lips
    kind = sc.visual if sc.visual != "auto" else ("lips" if lips else "pixels")
    if kind == "lips":
        if not lips:
            raise ValueError(f"sync.visual is lips but most of the train windows of '{processed}' "
                             f"have no lip landmarks: extract them with "
                             f"preprocess.landmarks=dlib68, or set sync.visual=pixels")
        train, val = train.lips_only(), val.lips_only()
    torch.manual_seed(cfg.env.seed)
    rng = np.random.default_rng(cfg.env.seed)
    model = SyncNet(frames, sc.embed_dim, kind)
    opt = torch.optim.AdamW(model.parameters(), lr=sc.lr, weight_decay=1e-4)
    # each batch meets the aligned audio and TRAIN_NEGATIVES of the clip's own shifted windows
    # (a fresh draw per batch): as good a teacher as all 2K of them at a fraction of the cost
    others = np.array([k for k in range(-sc.max_offset, sc.max_offset + 1) if k != 0])
    val_offsets = np.arange(-sc.max_offset, sc.max_offset + 1)
    val_offsets = val_offsets[val_offsets % 3 == 0]  # a fixed spread that holds 0
    run = create_run_dir(runs_root, "sync", cfg, name or time.strftime("%Y%m%d-%H%M%S"),
                         processed=processed)
    hist_path = run / "history.jsonl"
    hist_path.write_text("")
    best, best_epoch, stale = float("inf"), 0, 0
    vx, va, vv = _batch(val, np.arange(len(val)), val_offsets, None, kind)
    v_centre = int(np.flatnonzero(val_offsets == 0)[0])
    vclip = torch.as_tensor(val.clip)
    em.progress(0, sc.epochs, "epoch", "sync model")
    for epoch in range(1, sc.epochs + 1):
        model.train()
        order = rng.permutation(len(train))
        losses = []
        for s in range(0, len(order), sc.batch_size):
            em.check()
            idx = order[s:s + sc.batch_size]
            offsets = np.sort(np.append(rng.choice(others, min(TRAIN_NEGATIVES, len(others)),
                                                   replace=False), 0))
            x, a, v = _batch(train, idx, offsets, rng, kind)
            loss, _ = _loss(model, torch.as_tensor(x), torch.as_tensor(a), torch.as_tensor(v),
                            torch.as_tensor(train.clip[idx]), int(np.flatnonzero(offsets == 0)[0]),
                            sc.temperature)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the sync model's loss is {loss.item()} at epoch "
                                         f"{epoch}; lower sync.lr (now {sc.lr})")
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            vloss, vhit = _loss(model, torch.as_tensor(vx), torch.as_tensor(va),
                                torch.as_tensor(vv), vclip, v_centre, sc.temperature)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": float(vloss),
               "val_within_1_frame": vhit}
        with hist_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        em.emit(EpochMetrics("sync-train", epoch, {k: v for k, v in row.items() if k != "epoch"}))
        if row["val_loss"] < best - 1e-4:
            best, best_epoch, stale = row["val_loss"], epoch, 0
            torch.save({"state": model.state_dict(), "frames": frames, "embed": sc.embed_dim,
                        "max_offset": sc.max_offset, "epoch": epoch,
                        "mouth_px": int(train.wins[0]["mouths"].shape[3]),
                        "lip_landmarks": lips, "visual": kind}, run / "sync.pt")
        else:
            stale += 1
        em.progress(epoch, sc.epochs, "epoch", f"val loss {row['val_loss']:.3f}")
        if stale >= sc.patience:
            break
    summary = {"best_epoch": best_epoch, "best_val_loss": best, "epochs": epoch,
               "visual": kind, "train_windows": len(train), "train_clips": len(train.wins),
               "val_windows": len(val), "val_clips": len(val.wins),
               "selected_on": "val_loss (the aligned audio among every 3rd offset's)",
               "max_offset": sc.max_offset}
    write_json(run / "sync_summary.json", summary)
    em.result(run=str(run), **summary)
    return run


@dataclass
class SyncModel:
    """A trained sync model and the windows it reads."""

    net: Any
    max_offset: int
    frames: int
    mouth_px: int
    lip_landmarks: bool = False  # trained on crops aligned on dlib's lip landmarks

    def score(self, win: dict) -> dict[str, Any]:
        """:func:`score_clip` of one clip's windows with this model (and the baseline)."""
        return score_clip(win, self.net, self.max_offset)

    def score_video(self, path: str | Path, centres: list[tuple[int, dict]]
                    ) -> dict[str, Any] | None:
        """:meth:`score` of a video file's windows around ``centres`` (frame index, face
        record with landmarks), cut as the model's training windows were (on the lip landmarks
        when it was trained on them); None without audio or windows."""
        landmarker = None
        if self.lip_landmarks:
            if not dlib_available():
                raise ImportError(f"this sync model reads mouths aligned on dlib's lip "
                                  f"landmarks: pip install 'dflab[{EXTRA}]'")
            landmarker = shared_landmarker("dlib68")
        win = video_windows(path, centres, self.frames, self.mouth_px, landmarker)
        return None if win is None else self.score(win)


def load_sync(run: str | Path) -> SyncModel:
    """The :class:`SyncModel` of a sync run folder (``sync.pt``, read once)."""
    torch, _ = _torch()
    path = Path(run) / "sync.pt"
    if not path.is_file():
        raise FileNotFoundError(f"'{run}' is not a sync run (no sync.pt); train one with "
                                f"`dflab sync train`")

    redo = "train it again with `dflab sync train`"
    ck = load_torch_file(path, "sync model", redo)
    with reading(path, "sync model", redo, also=(RuntimeError,)):
        frames, embed, offset = int(ck["frames"]), int(ck["embed"]), int(ck["max_offset"])
        mouth_px = int(ck.get("mouth_px", 48))
        if not (3 <= frames <= 64 and 1 <= embed <= 4096 and 0 <= offset <= 100
                and 8 <= mouth_px <= 512):
            raise ValueError(f"frames {frames}, embed {embed}, max_offset {offset}, mouth_px "
                             f"{mouth_px} are not the settings of a sync model")
        kind = str(ck.get("visual", "pixels"))
        if kind not in ("pixels", "lips"):
            raise ValueError(f"visual input '{kind}' is not pixels or lips")
        net = SyncNet(frames, embed, kind)
        net.load_state_dict(ck["state"])
    return SyncModel(net.eval(), offset, frames, mouth_px,
                     bool(ck.get("lip_landmarks", False)) or kind == "lips")


def model_curves(model, win: dict, max_offset: int, batch: int = 64
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(distance 1 - cos (N, 2K+1), valid (N, 2K+1)) of every window of one clip."""
    torch, _ = _torch()
    offsets = np.arange(-max_offset, max_offset + 1)
    out, valid = [], []
    with torch.no_grad():
        for s in range(0, len(win["mouths"]), batch):
            rows = np.arange(s, min(s + batch, len(win["mouths"])))
            a, v = audio_windows(win, offsets, rows)
            x = visual_input(win, rows, getattr(model, "kind", "pixels"))
            ok = np.isfinite(x).reshape(len(rows), -1).all(axis=1)  # lips: windows without none
            v = v & ok[:, None]
            ev = model.embed_visual(torch.as_tensor(np.nan_to_num(x)))
            ea = model.embed_audio(torch.as_tensor(a.reshape(-1, *a.shape[2:]))).reshape(
                len(rows), len(offsets), -1)
            out.append(1 - (ea * ev[:, None]).sum(-1).numpy())
            valid.append(v)
    return np.concatenate(out), np.concatenate(valid)


def score_clip(win: dict, model=None, max_offset: int = 15) -> dict[str, Any]:
    """Everything known about one clip's sync: per model (``learned`` when a model is given,
    and ``baseline``) the clip summary, the curve over offsets and each window's score."""
    fps = 1.0 / _frame_step(win)
    out: dict[str, Any] = {"fps": fps, "windows": int(len(win["mouths"])),
                           "centre_index": win["centre_index"].tolist(),
                           "offsets": list(range(-max_offset, max_offset + 1))}
    per, valid, pooled = baseline_curves(win, max_offset)
    lips = lip_curve(win, max_offset)
    kind = "lip_opening" if np.isfinite(lips).any() else "mouth_motion"
    curve = lips if kind == "lip_opening" else pooled
    out["baseline"] = {**clip_summary(curve, max_offset, fps, lower_is_better=False),
                       "kind": kind, "curve": curve.tolist(),
                       "window_scores": _window_scores(per, valid, max_offset, False).tolist()}
    if model is not None:
        dist, valid = model_curves(model, win, max_offset)
        curve = _masked_curve(dist, valid)
        out["learned"] = {**clip_summary(curve, max_offset, fps), "curve": curve.tolist(),
                          "window_scores": _window_scores(dist, valid, max_offset).tolist(),
                          "window_curves": np.where(valid, dist, np.nan).astype(np.float32)}
    return out


def sync_table(processed: str | Path, run: str | Path, split: str = "test",
               uids: list[str] | None = None) -> tuple["pd.DataFrame", "pd.DataFrame"]:
    """(one row per clip, one row per window) for the clips of ``split`` that have windows:
    label, method, and for the learned model and the baseline the offset, confidence and sync
    score (clip) and window score (window)."""
    import pandas as pd

    from dflab.data.datasets import load_index

    processed = Path(processed)
    sync = load_sync(run)
    idx = load_index(processed)
    idx = idx[idx["split"] == split] if split != "all" else idx
    meta = idx.groupby("uid").first()
    clips, windows = [], []
    for uid in (uids or sorted(meta.index)):
        win = load_windows(processed, uid)
        if win is None or uid not in meta.index:
            continue
        sc = sync.score(win)
        r = meta.loc[uid]
        base = {"uid": uid, "method": r["method"], "label": r["label"],
                "target": int(r["label"] == "fake"), "video_id": r["video_id"]}
        clips.append({**base, "fps": sc["fps"], "windows": sc["windows"],
                      **{f"{m}_{k}": sc[m][k] for m in ("learned", "baseline")
                         for k in ("offset_frames", "offset_ms", "confidence", "sync_score")},
                      "learned_curve": sc["learned"]["curve"],
                      "window_curves": sc["learned"]["window_curves"]})
        for j, fi in enumerate(sc["centre_index"]):
            windows.append({**base, "frame_index": int(fi),
                            "learned_window_score": sc["learned"]["window_scores"][j],
                            "baseline_window_score": sc["baseline"]["window_scores"][j]})
    return pd.DataFrame(clips), pd.DataFrame(windows)


def _auc_block(y: np.ndarray, s: np.ndarray, groups: np.ndarray, n_boot: int, seed: int
               ) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(s)
    y, s, groups = y[ok], s[ok], groups[ok]
    if len(np.unique(y)) < 2:
        return {"auc": float("nan"), "auc_ci": [float("nan")] * 2, "n_real": int((y == 0).sum()),
                "n_fake": int((y == 1).sum())}
    return {"auc": float(roc_auc_score(y, s)),
            "auc_ci": bootstrap_auc_ci(y, s, groups, n_boot, seed=seed),
            "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum()),
            "n_videos": int(len(np.unique(groups)))}


def score_sync(run: str | Path, processed: str | Path, split: str = "test", n_boot: int = 1000,
               seed: int = 0, shifts: dict[str, float] | None = None,
               callbacks: list[Callback] | None = None,
               cancel: CancelToken | None = None) -> dict[str, Any]:
    """Score every clip of ``split`` with windows; write ``sync_<split>.json`` (with each clip's
    distance curve), ``sync_clips_<split>.csv``, ``sync_windows_<split>.csv`` and
    ``sync_curves_<split>.npz`` (each window's curve; keys: uids with ``/`` as ``__``) into the
    sync run; return the
    report: per fake method, the AUC of its windows (and clips) against the real ones' (95%
    video-bootstrap interval, n), for the learned model and the baseline; and, where
    ``shifts`` gives a clip's true offset (uid -> seconds, sound early > 0), the offset errors."""
    em = Emitter("sync-score", callbacks, cancel)
    em.progress(0, 1, "step", f"scoring the {split} clips")
    clips, windows = sync_table(processed, run, split)
    if clips.empty:
        raise ValueError(f"no {split} clip of '{processed}' has sync windows; extract them "
                         f"(`dflab sync extract`)")
    em.check()
    report: dict[str, Any] = {"split": split, "processed": str(processed), "run": str(run),
                              "clips": int(len(clips)), "windows": int(len(windows)),
                              "methods": {}}
    import pandas as pd

    real_w, real_c = windows[windows["target"] == 0], clips[clips["target"] == 0]
    for method in sorted(set(clips.loc[clips["target"] == 1, "method"])):
        fw = pd.concat([real_w, windows[windows["method"] == method]], ignore_index=True)
        fc = pd.concat([real_c, clips[clips["method"] == method]], ignore_index=True)
        report["methods"][method] = {
            m: {"window": _auc_block(fw["target"].to_numpy(), fw[f"{m}_window_score"].to_numpy(),
                                     fw["uid"].to_numpy(), n_boot, seed),
                "clip": _auc_block(fc["target"].to_numpy(), fc[f"{m}_sync_score"].to_numpy(),
                                   fc["uid"].to_numpy(), n_boot, seed)}
            for m in ("learned", "baseline")}
    if shifts:
        known = clips[clips["uid"].isin(shifts)].copy()
        if not known.empty:
            known["true_offset_frames"] = [shifts[u] * f for u, f in zip(known["uid"],
                                                                         known["fps"])]
            report["offsets"] = {m: _offset_errors(known, m) for m in ("learned", "baseline")}
            clips = clips.merge(known[["uid", "true_offset_frames"]], on="uid", how="left")
    run = Path(run)
    # per window, the distance over offsets -K..K (NaN where the audio runs out)
    np.savez_compressed(run / f"sync_curves_{split}.npz", offsets=np.arange(
        -(clips["window_curves"].iloc[0].shape[1] // 2), clips["window_curves"].iloc[0].shape[1] // 2
        + 1), **{u.replace("/", "__"): c for u, c in zip(clips["uid"], clips["window_curves"])})
    clips.drop(columns=["learned_curve", "window_curves"]).to_csv(run / f"sync_clips_{split}.csv",
                                                                   index=False)
    windows.to_csv(run / f"sync_windows_{split}.csv", index=False)
    write_json(run / f"sync_{split}.json", {**report, "curves": {
        u: c for u, c in zip(clips["uid"], clips["learned_curve"])}})
    em.progress(1, 1, "step", "done")
    em.result(**{"run": str(run), "clips": report["clips"]})
    return report


def _offset_errors(known: "pd.DataFrame", model: str) -> dict[str, Any]:
    err = (known[f"{model}_offset_frames"] - known["true_offset_frames"]).abs()
    return {"n": int(len(known)), "median_abs_error_frames": float(err.median()),
            "max_abs_error_frames": float(err.max()),
            "within_1_frame": float((err <= 1).mean()),
            "per_clip": {u: {"true": round(float(t), 2), "estimated": float(e)} for u, t, e in
                         zip(known["uid"], known["true_offset_frames"],
                             known[f"{model}_offset_frames"])}}


def format_sync_report(rep: dict[str, Any]) -> str:
    """The sync report as the few lines a person reads."""
    lines = [f"sync on the {rep['split']} split: {rep['clips']} clips, {rep['windows']} windows "
             f"(AUC of fake against real, 95% video-bootstrap interval)"]
    for method, by_model in rep["methods"].items():
        for m, lv in by_model.items():
            lines.append(f"  {method:<11} {m:<8} windows {format_auc(lv['window'])} "
                         f"(n {lv['window']['n_real']}+{lv['window']['n_fake']}); clips "
                         f"{format_auc(lv['clip'])}")
    for m, o in rep.get("offsets", {}).items():
        lines.append(f"  offset error, {m}: median {o['median_abs_error_frames']:.1f} frames, "
                     f"max {o['max_abs_error_frames']:.1f}, within one frame "
                     f"{o['within_1_frame']:.0%} of {o['n']} clips")
    return "\n".join(lines)
