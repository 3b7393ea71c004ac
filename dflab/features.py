"""Forensic features: named FFT, DCT and noise-residual measurements of a face crop.

Computed on native-resolution crops (resizing before an FFT destroys the very artefacts it looks
for). Each family is registered in ``FEATURE_FAMILIES``; ``feature_names()`` lists every feature
and ``FEATURE_HELP`` gives its one-line meaning. ``extract_features(img)`` returns a float64 vector
of ``len(feature_names())`` values, never NaN or inf.

Input: ``uint8 (H, W, 3) BGR`` as OpenCV reads it; grayscale, RGBA and 16-bit images are converted
by :func:`as_bgr8`. Images smaller than one 8x8 block raise ``ValueError``.

These measurements come from the image-forensics literature (power-law spectra, up-sampling grid
peaks, JPEG block statistics, double-quantisation periodicity, noise residual statistics). No
library packages them, so they are written here on top of NumPy, SciPy and OpenCV.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from .registry import Registry

log = logging.getLogger(__name__)

__all__ = ["FEATURE_FAMILIES", "FEATURE_HELP", "feature_names", "extract_features", "as_bgr8",
           "families_for", "family_of", "family_costs", "best_ms",
           "azimuthal_profile", "log_spectrum", "block_dct", "noise_residual",
           "extract_many", "FEATURES_VERSION"]

FEATURES_VERSION = "2"  # bump whenever a feature changes: it keys the cache
FEATURE_FAMILIES: Registry = Registry("feature family")
FEATURE_HELP: dict[str, str] = {}
_EPS = 1e-12


def as_bgr8(img: np.ndarray) -> np.ndarray:
    """Any image array -> uint8 (H, W, 3) BGR; raises for images smaller than 8x8."""
    import cv2

    img = np.asarray(img)
    if img.ndim not in (2, 3) or min(img.shape[:2]) < 8:
        raise ValueError(f"image of shape {img.shape} is smaller than one 8x8 block (or not an "
                         f"image); forensic features need at least 8x8 pixels")
    if img.dtype == np.uint16:
        img = (img.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        f = img.astype(np.float64)
        img = np.clip(f * 255.0 if f.max() <= 1.0 else f, 0, 255).round().astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img)


def _gray(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float64)


def _family(name: str, features: dict[str, str]) -> Callable:
    """Register a family and the names (with help) of the features it computes, in order. The
    registered function returns ``{name: value}``; a family that computes a different number of
    values than it names is an error, never a silent shift of columns."""

    def deco(fn):
        names = list(features)

        def named(img: np.ndarray) -> dict[str, float]:
            values = fn(img)
            if len(values) != len(names):
                raise RuntimeError(f"feature family '{name}' computed {len(values)} values for "
                                   f"{len(names)} names")
            return dict(zip(names, values))

        named.__doc__, named.names = fn.__doc__, names
        FEATURE_FAMILIES.register(name, help=fn.__doc__.strip().split("\n")[0])(named)
        FEATURE_HELP.update(features)
        return named

    return deco


# ---------------------------------------------------------------------------------------- FFT
@lru_cache(maxsize=64)
def _window(shape: tuple[int, int]) -> np.ndarray:
    return np.outer(np.hanning(shape[0]), np.hanning(shape[1]))


@lru_cache(maxsize=64)
def _mirror(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays that fill the columns a real FFT leaves out, by P[i, j] = P[-i, -j]."""
    h, w = shape
    cols = np.arange(w // 2 + 1, w)
    return cols, (-np.arange(h)) % h, w - cols


def _half_power(gray: np.ndarray) -> np.ndarray:
    """The power of a real FFT's half plane (H, W // 2 + 1), unshifted (see :func:`_power`)."""
    from scipy import fft

    g = ((gray - gray.mean()) * _window(gray.shape)).astype(np.float32)
    half = fft.rfft2(g)
    return half.real.astype(np.float64) ** 2 + half.imag.astype(np.float64) ** 2


def _power(gray: np.ndarray) -> np.ndarray:
    """Centred power spectrum of a float (H, W) image (Hann window, mean removed). A real FFT in
    single precision (scipy.fft, plans cached) and the mirror symmetry of a real signal's
    spectrum give the full plane at a quarter of a complex double-precision FFT's cost; the
    features are ratios and logs of power, where float32's 1e-7 relative error is far below
    their spread (they match the float64 version to 1e-5, tests/test_features.py)."""
    from scipy import fft

    h, w = gray.shape
    half = _half_power(gray)
    full = np.empty((h, w))
    full[:, : w // 2 + 1] = half
    cols, rows, src = _mirror((h, w))
    if cols.size:
        full[:, cols] = half[rows][:, src]
    return fft.fftshift(full)


def log_spectrum(gray: np.ndarray) -> np.ndarray:
    """Centred log-magnitude spectrum of a float (H, W) image (Hann window, mean removed)."""
    return np.log1p(np.sqrt(_power(gray)))


@lru_cache(maxsize=64)
def _radius(shape: tuple[int, int]) -> np.ndarray:
    """Normalised radial frequency (0 at DC, 1 at the Nyquist edge) of a centred spectrum."""
    h, w = shape
    fy = (np.arange(h) - h // 2) / (h / 2)
    fx = (np.arange(w) - w // 2) / (w / 2)
    r = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    r.flags.writeable = False
    return r


@lru_cache(maxsize=64)
def _radius_order(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(argsort of the radius, the sorted radius), for the roll-off."""
    r = _radius(shape).ravel()
    order = np.argsort(r, kind="stable")
    return order, r[order]


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """A float dot product summed by numpy's pairwise sum, not BLAS: the same bits whatever the
    number of BLAS threads (a Dask worker runs one, this process several)."""
    return float(np.sum(a * b))


def _profile(p: np.ndarray, bins: int) -> np.ndarray:
    r = _radius(p.shape)
    idx = np.minimum((r * bins).astype(int), bins)
    sums = np.bincount(idx.ravel(), p.ravel(), bins + 1)[:bins]
    counts = np.bincount(idx.ravel(), None, bins + 1)[:bins]
    return np.log10(sums / np.maximum(counts, 1) + _EPS)


def azimuthal_profile(gray: np.ndarray, bins: int = 32) -> np.ndarray:
    """Mean power per radial-frequency bin, radius 0..1 in ``bins`` steps (log10 power)."""
    return _profile(_power(gray), bins)


def _peak_ratios(p: np.ndarray, freqs: list[tuple[float, float]],
                 shape: tuple[int, int] | None = None) -> np.ndarray:
    """For each normalised frequency (fy, fx): the power there and at its mirror images, over the
    median of the 7x7 neighbourhood around each (the centre left out), as a log10 ratio: how
    strongly that period shows up. All frequencies in one gather. ``p``: a centred power
    spectrum, or with ``shape`` (the image's) the unshifted half plane of :func:`_half_power`,
    read through the symmetry P[i, j] = P[-i, -j] without building the full plane."""
    h, w = shape or p.shape
    sign = np.array([(-1, -1), (-1, 1), (1, -1), (1, 1)])
    f = np.asarray(freqs, float)
    ys = np.round(h // 2 + sign[None, :, 0] * f[:, None, 0] * h / 2).astype(int) % h  # (n, 4)
    xs = np.round(w // 2 + sign[None, :, 1] * f[:, None, 1] * w / 2).astype(int) % w
    d = np.arange(-3, 4)
    by = (ys[..., None, None] + d[:, None]) % h  # (n, 4, 7, 1)
    bx = (xs[..., None, None] + d[None, :]) % w  # (n, 4, 1, 7)
    if shape is None:
        blocks, centre = p[by, bx], p[ys, xs]
    else:
        blocks, centre = _from_half(p, by, bx, h, w), _from_half(p, ys, xs, h, w)
    blocks = blocks.reshape(len(f), 4, 49)
    ring = np.median(np.delete(blocks, 24, axis=2), axis=2)  # (n, 4)
    return np.log10((centre.mean(axis=1) + _EPS) / (ring.mean(axis=1) + _EPS))


def _from_half(half: np.ndarray, y: np.ndarray, x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Values of the centred full power plane at (y, x), read from the unshifted half plane."""
    ky, kx = (y - h // 2) % h, (x - w // 2) % w
    mirror = kx > w // 2
    ky, kx = np.where(mirror, (-ky) % h, ky), np.where(mirror, w - kx, kx)
    return half[ky, kx]


@_family("fft", {
    "fft_slope": "slope of the 1/f power-law fit of the azimuthal spectrum (natural images ~ -2)",
    "fft_intercept": "intercept of that power-law fit (overall spectral level)",
    "fft_fit_residual": "RMS residual of the power-law fit (spectra that are not 1/f)",
    "fft_hf_residual": "mean residual of the fit in the top quarter of frequencies (up-sampling)",
    "fft_hf_ratio_25": "energy above 25% of Nyquist over energy below",
    "fft_hf_ratio_50": "energy above 50% of Nyquist over energy below",
    "fft_hf_ratio_75": "energy above 75% of Nyquist over energy below",
    "fft_entropy": "spectral entropy, normalised to [0, 1] (flat spectrum = 1)",
    "fft_flatness": "spectral flatness: geometric over arithmetic mean power",
    "fft_horizontal_ratio": "share of energy on the horizontal frequency axis band",
    "fft_vertical_ratio": "share of energy on the vertical frequency axis band",
    "fft_diagonal_ratio": "share of energy on the two diagonal bands",
    "fft_hv_asymmetry": "|horizontal - vertical| / (horizontal + vertical) band energy",
    "fft_grid_peak_2": "strength of the period-2 peaks left by 2x up-sampling (Nyquist corners)",
    "fft_grid_peak_4": "strength of the period-4 peaks (4x up-sampling)",
    "fft_grid_peak_8": "strength of the period-8 peaks (8x8 blocks, JPEG)",
    "fft_peak_max": "largest peak-to-neighbourhood ratio among high frequencies (any period)",
    "fft_quadrant_asymmetry": "energy difference between the two diagonal spectral quadrants",
    "fft_centroid": "spectral centroid radius (0 DC .. 1 Nyquist)",
    "fft_bandwidth": "spread of the spectrum around its centroid",
    "fft_rolloff_85": "radius below which 85% of the energy lies",
})
def fft_features(img: np.ndarray) -> list[float]:
    """2-D magnitude spectrum: power law, energy ratios, entropy, directions, grid peaks"""
    import cv2

    gray = _gray(img)
    p = _power(gray)
    geo = _fft_geometry(p.shape)
    flat = p.ravel()
    total = flat.sum() + _EPS
    prof = _profile(p, 32)
    freqs = (np.arange(32) + 0.5) / 32
    x, y = np.log10(freqs[1:]), prof[1:]
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    out = [slope, intercept, np.sqrt(np.mean(resid ** 2)), resid[-8:].mean()]
    # every sum over a disc or a ring from one cumulative sum over the radius-sorted spectrum
    pw = flat.copy()
    pw[geo["dc"]] = 0.0
    cum = np.cumsum(pw[geo["order"]])
    for c in (0.25, 0.5, 0.75):
        k = int(np.searchsorted(geo["r_sorted"], c, "left"))
        inner = cum[k - 1] if k else 0.0
        out.append(np.log10((cum[-1] - inner + _EPS) / (inner + _EPS)))
    # one natural log of the plane serves the entropy, the flatness and the peak search below:
    # log(q + eps) is log(p + eps) - log(sum) to within eps / q, far below float precision here
    logp = np.log(p + _EPS)
    pos = flat[geo["pos"]]
    s_pos = pos.sum() + _EPS
    q = pos / s_pos
    out.append(float(-_dot(q, logp.ravel()[geo["pos"]] - np.log(s_pos)) / np.log(q.size)))
    pp = pos + _EPS
    out.append(float(np.exp(logp.ravel()[geo["pos"]].mean()) / np.mean(pp)))
    eh, ev, ed = (flat[geo[k]].sum() / total for k in ("hor", "ver", "diag"))
    out += [eh, ev, ed, abs(eh - ev) / (eh + ev + _EPS)]
    # Resampling leaves periodic correlations between neighbours: the spectrum of the absolute
    # Laplacian shows peaks at the period (Popescu & Farid; Kirchner). Periods 2, 4 and 8.
    # Intensity grids (transposed convolutions) show in the Laplacian; pixel replication
    # (nearest-neighbour) in the first differences, which vanish between copied pixels.
    lg = np.abs(cv2.Laplacian(gray, cv2.CV_64F, ksize=1))
    gx, gy = np.abs(np.diff(gray, axis=1)), np.abs(np.diff(gray, axis=0))
    periods = (1.0, 0.5, 0.25)
    lap = _peak_ratios(_half_power(lg), [q for f in periods for q in ((f, 0.0), (0.0, f), (f, f))],
                       lg.shape)
    dx = _peak_ratios(_half_power(gx), [(0.0, f) for f in periods], gx.shape)
    dy = _peak_ratios(_half_power(gy), [(f, 0.0) for f in periods], gy.shape)
    out += [float(max(lap[3 * k: 3 * k + 3].max(), dx[k], dy[k])) for k in range(3)]
    log10p = (logp * (1 / np.log(10))).astype(np.float32)
    med = cv2.medianBlur(log10p, 5)
    out.append(float((log10p - med).ravel()[geo["hf"]].max()) if geo["hf"].size else 0.0)
    h, w = p.shape
    q1 = p[: h // 2, : w // 2].sum() + p[h // 2:, w // 2:].sum()
    q2 = p[: h // 2, w // 2:].sum() + p[h // 2:, : w // 2].sum()
    out.append(abs(q1 - q2) / (q1 + q2 + _EPS))
    rf = geo["r"]
    cen = _dot(pw, rf) / (cum[-1] + _EPS)
    d = rf - cen
    out += [cen, np.sqrt(_dot(pw, d * d) / (cum[-1] + _EPS))]
    out.append(float(geo["r_sorted"][np.searchsorted(cum, 0.85 * cum[-1])]) if cum[-1] > 0
               else 0.0)
    return [float(v) for v in out]


@lru_cache(maxsize=64)
def _fft_geometry(shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Per spectrum shape, computed once: the radius (flat), its sort order, flat indices of DC,
    of every non-DC bin, of the horizontal, vertical and diagonal bands and of r > 0.3."""
    h, w = shape
    r = _radius(shape)
    order, r_sorted = _radius_order(shape)
    fy = np.abs(np.arange(h) - h // 2)[:, None] / (h / 2)
    fx = np.abs(np.arange(w) - w // 2)[None, :] / (w / 2)
    band, nz = 0.04, r > 0
    return {"r": r.ravel(), "order": order, "r_sorted": r_sorted,
            "dc": np.flatnonzero(~nz.ravel()), "pos": np.flatnonzero(nz.ravel()),
            "hor": np.flatnonzero(((fy <= band) & nz).ravel()),
            "ver": np.flatnonzero(((fx <= band) & nz).ravel()),
            "diag": np.flatnonzero(((np.abs(fy - fx) <= band) & nz).ravel()),
            "hf": np.flatnonzero((r > 0.3).ravel())}


# ---------------------------------------------------------------------------------------- DCT
def block_dct(gray: np.ndarray) -> np.ndarray:
    """Orthonormal 8x8 block DCT-II of a float (H, W) image cropped to whole blocks, level-shifted
    by 128 as JPEG does: shape (H//8, W//8, 8, 8)."""
    from scipy.fft import dctn

    h, w = (gray.shape[0] // 8) * 8, (gray.shape[1] // 8) * 8
    blocks = (gray[:h, :w] - 128.0).reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3)
    return dctn(blocks, type=2, axes=(2, 3), norm="ortho")


_UV = np.add.outer(np.arange(8), np.arange(8))  # zig-zag order proxy: u + v


def _lattice_fit(c: np.ndarray, q: int) -> float:
    """How well coefficients sit on the lattice q*k: |mean(exp(2 pi i c / q))|, 1 = exactly."""
    return float(np.abs(np.exp(2j * np.pi * c / q).mean()))


def _lattice_fits(c: np.ndarray, max_q: int) -> np.ndarray:
    """:func:`_lattice_fit` for every step 2..max_q at once: |mean(cos), mean(sin)| of the
    phases 2 pi c / q, one (n, steps) matrix instead of a loop over complex exponentials."""
    # the fraction of c / q in double precision first, so the single-precision trig sees phases
    # in [0, 2 pi) and loses nothing (the values match the complex-exponential version to 1e-6)
    t = np.multiply.outer(c, 1.0 / np.arange(2, max_q + 1, dtype=np.float64))
    t -= np.floor(t)
    phase = (t * (2 * np.pi)).astype(np.float32)
    return np.hypot(np.cos(phase).mean(axis=0, dtype=np.float64),
                    np.sin(phase).mean(axis=0, dtype=np.float64))


def _double_quant(coefs: np.ndarray, max_q: int = 40) -> float:
    """Double JPEG compression, first with a coarser step q1, then with q2: the coefficients sit on
    two lattices, q1 and q2, that are not multiples of each other (a single compression at step q
    fits q and its divisors only). Per low-frequency AC position: q_hi = the coarsest lattice that
    fits (> 0.5), then the best fit of any step below q_hi that does not divide it. Mean over
    positions. (When q1 is a multiple of q2 the two are indistinguishable: a known limit.)"""
    scores = []
    for u, v in ((0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (2, 1), (1, 2)):
        c = coefs[..., u, v].ravel()
        c = c[np.abs(c) >= 1]
        if c.size < 32:
            continue
        fits = dict(zip(range(2, max_q + 1), _lattice_fits(c, max_q)))
        q_hi = max((q for q, f in fits.items() if f > 0.5), default=1)
        foreign = [fits[q] for q in range(2, q_hi) if q_hi % q]
        scores.append(max(foreign) if foreign else 0.0)
    return float(np.mean(scores)) if scores else 0.0


_LOW, _MID, _HIGH = (np.flatnonzero(((_UV <= 2) & (_UV > 0)).ravel()),
                     np.flatnonzero(((_UV >= 3) & (_UV <= 7)).ravel()),
                     np.flatnonzero((_UV >= 8).ravel()))
_AC = np.flatnonzero((_UV > 0).ravel())


@_family("dct", {
    "dct_ac_low": "share of AC energy in low frequencies (u+v <= 2) of the 8x8 block DCT",
    "dct_ac_mid": "share of AC energy in middle frequencies (3 <= u+v <= 7)",
    "dct_ac_high": "share of AC energy in high frequencies (u+v >= 8)",
    "dct_var_mean": "mean over frequencies of the log variance of |coefficient| across blocks",
    "dct_var_std": "spread over frequencies of that log variance",
    "dct_var_hf_lf": "log ratio of across-block variance at high vs low frequencies",
    "dct_zero_hf": "fraction of high-frequency coefficients that round to zero (quantisation)",
    "dct_peak_u": "vertical frequency index of the largest mean AC magnitude",
    "dct_peak_v": "horizontal frequency index of the largest mean AC magnitude",
    "dct_blockiness": "pixel jumps across 8x8 block borders over jumps inside blocks",
    "dct_blockiness_h": "that ratio for vertical borders (horizontal neighbours)",
    "dct_blockiness_v": "that ratio for horizontal borders (vertical neighbours)",
    "dct_double_quant": "periodicity of AC coefficient histograms: double JPEG compression",
    "dct_zero_peak": "share of low-frequency AC coefficients that round to zero",
    "dct_benford": "divergence of the first digits of AC coefficients from Benford's law",
})
def dct_features(img: np.ndarray) -> list[float]:
    """8x8 block DCT as in JPEG: energy bands, block variance, blockiness, double compression"""
    gray = _gray(img)
    c = block_dct(gray)
    cf = c.reshape(-1, 64)  # one row per block, frequencies (u, v) row-major
    mag = np.abs(cf)
    ac = (cf * cf).sum(axis=0) / len(cf)
    ac[0] = 0
    tot = ac.sum() + _EPS
    out = [ac[_LOW].sum() / tot, ac[_MID].sum() / tot, ac[_HIGH].sum() / tot]
    logvar = np.log10(mag.var(axis=0) + 1e-6)
    lv = logvar[_AC]
    out += [lv.mean(), lv.std(), logvar[_HIGH].mean() - logvar[_LOW].mean()]
    out.append(float((mag[:, _HIGH] <= 0.5).mean()))  # rounds to zero (half to even)
    m = mag.mean(axis=0)
    m[0] = -1
    u, v = divmod(int(np.argmax(m)), 8)
    out += [float(u), float(v)]
    h, w = (gray.shape[0] // 8) * 8, (gray.shape[1] // 8) * 8
    g = gray[:h, :w]
    dh = np.abs(np.diff(g, axis=1))
    dv = np.abs(np.diff(g, axis=0))
    bh = _border_ratio(dh.sum(axis=0), dh.shape[0])
    bv = _border_ratio(dv.sum(axis=1), dv.shape[1])
    out += [(bh + bv) / 2, bh, bv]
    out.append(_double_quant(c))
    out.append(float((mag[:, _LOW] <= 0.5).mean()))
    acs = mag[:, _AC].ravel()
    acs = acs[acs >= 1]
    if acs.size >= 10:
        first = (acs / 10 ** np.floor(np.log10(acs))).astype(int)
        obs = np.bincount(np.clip(first, 1, 9), minlength=10)[1:] / acs.size
        ben = np.log10(1 + 1 / np.arange(1, 10))
        out.append(float((obs * np.log((obs + _EPS) / ben)).sum()))
    else:
        out.append(0.0)
    return [float(v) for v in out]


def _border_ratio(line_sums: np.ndarray, per_line: int) -> float:
    """Mean jump across 8x8 block borders (differences k with k % 8 == 7) over the mean jump
    inside blocks, from the per-line sums of the absolute differences."""
    border = line_sums[7::8]
    if not border.size:
        return 1.0
    inside = line_sums.sum() - border.sum()
    n_in = (line_sums.size - border.size) * per_line
    return float((border.sum() / (border.size * per_line) + 1e-3) / (inside / n_in + 1e-3))


# ------------------------------------------------------------------------------ noise residual
def noise_residual(img: np.ndarray) -> np.ndarray:
    """float (H, W, 3) BGR residual: the image minus a 3x3 median-filtered copy."""
    import cv2

    return img.astype(np.float64) - cv2.medianBlur(img, 3).astype(np.float64)


def _skew_kurt(x: np.ndarray) -> tuple[float, float]:
    s = x.std()
    if s < 1e-9:
        return 0.0, 0.0
    z = (x - x.mean()) / s
    z2 = z * z
    return float(np.dot(z2, z) / z.size), float(np.dot(z2, z2) / z.size - 3.0)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = a.std(), b.std()
    if sa < 1e-9 or sb < 1e-9:
        return 0.0
    return float(((a - a.mean()) * (b - b.mean())).mean() / (sa * sb))


@_family("noise", {
    "noise_var_r": "variance of the noise residual, red channel",
    "noise_var_g": "variance of the noise residual, green channel",
    "noise_var_b": "variance of the noise residual, blue channel",
    "noise_skew_r": "skewness of the red residual",
    "noise_skew_g": "skewness of the green residual",
    "noise_skew_b": "skewness of the blue residual",
    "noise_kurt_r": "excess kurtosis of the red residual",
    "noise_kurt_g": "excess kurtosis of the green residual",
    "noise_kurt_b": "excess kurtosis of the blue residual",
    "noise_local_cv": "coefficient of variation of residual variance over a 4x4 grid of regions",
    "noise_local_range": "log ratio of the largest to the smallest regional residual variance",
    "noise_center_border": "log ratio of residual variance in the centre (face) to the border",
    "noise_corr_rg": "correlation of red and green residuals",
    "noise_corr_gb": "correlation of green and blue residuals",
    "noise_corr_rb": "correlation of red and blue residuals",
    "noise_energy_ratio": "residual variance over image variance (log10)",
})
def noise_features(img: np.ndarray) -> list[float]:
    """Image minus a median-filtered copy: per-channel statistics, regional consistency"""
    import cv2

    # The residual is an integer in [-255, 255] per channel: moments come exactly from a
    # 511-bin histogram and variances and covariances from integer sums, instead of float
    # passes over every pixel (same values as the float version, to rounding).
    b, g, r = (ch.astype(np.int32) - cv2.medianBlur(ch, 3).astype(np.int32)
               for ch in cv2.split(img))
    moments = [_hist_moments(ch) for ch in (r, g, b)]
    out = [m[0] for m in moments] + [m[1] for m in moments] + [m[2] for m in moments]
    lum3 = b + g + r  # 3 x the mean residual of the three channels
    h, w = lum3.shape
    ys, xs = np.linspace(0, h, 5).astype(int), np.linspace(0, w, 5).astype(int)
    sq = lum3.astype(np.int64) ** 2

    def block_sums(a: np.ndarray) -> np.ndarray:
        return np.add.reduceat(np.add.reduceat(a, ys[:-1], axis=0), xs[:-1], axis=1)

    n = np.outer(np.diff(ys), np.diff(xs))
    local = _var_from_sums(block_sums(lum3.astype(np.int64)), block_sums(sq), n).ravel() / 9
    out.append(float(local.std() / (local.mean() + 1e-6)))
    out.append(float(np.log10((local.max() + 1e-3) / (local.min() + 1e-3))))
    c = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))
    s1, s2, n_all = int(lum3.sum()), int(sq.sum()), h * w
    c1, c2 = int(lum3[c].sum()), int(sq[c].sum())
    n_c = (3 * h // 4 - h // 4) * (3 * w // 4 - w // 4)
    v_c = _var_from_sums(c1, c2, n_c) / 9
    v_b = _var_from_sums(s1 - c1, s2 - c2, n_all - n_c) / 9
    out.append(float(np.log10((v_c + 1e-3) / (v_b + 1e-3))))
    out += [_int_corr(r, g), _int_corr(g, b), _int_corr(r, b)]
    lum_var = _var_from_sums(s1, s2, n_all) / 9
    out.append(float(np.log10((lum_var + 1e-6) / (_gray(img).var() + 1e-6))))
    return [float(v) for v in out]


def _var_from_sums(s1, s2, n):
    """Population variance from the sum and the sum of squares of integers (exact until the
    final division)."""
    return (np.asarray(n) * np.asarray(s2) - np.asarray(s1) ** 2) / np.maximum(
        np.asarray(n), 1) ** 2


def _hist_moments(x: np.ndarray) -> tuple[float, float, float]:
    """(variance, skewness, excess kurtosis) of integers in [-255, 255] from their histogram."""
    counts = np.bincount((x + 255).ravel(), minlength=511).astype(np.float64)
    v = np.arange(-255, 256, dtype=np.float64)
    n = counts.sum()
    mean = _dot(counts, v) / n
    d = v - mean
    d2 = d * d
    m2 = _dot(counts, d2) / n
    if np.sqrt(m2) < 1e-9:
        return float(m2), 0.0, 0.0
    return float(m2), float(_dot(counts, d2 * d) / n / m2 ** 1.5), \
        float(_dot(counts, d2 * d2) / n / m2 ** 2 - 3.0)


def _int_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two integer images from integer sums."""
    n = a.size
    a64, b64 = a.ravel().astype(np.int64), b.ravel().astype(np.int64)
    sa, sb = int(a64.sum()), int(b64.sum())
    va = _var_from_sums(sa, int(a64 @ a64), n)
    vb = _var_from_sums(sb, int(b64 @ b64), n)
    if np.sqrt(va) < 1e-9 or np.sqrt(vb) < 1e-9:
        return 0.0
    cov = (n * int(a64 @ b64) - sa * sb) / n ** 2
    return float(cov / np.sqrt(va * vb))


def feature_names() -> list[str]:
    return [n for fam in FEATURE_FAMILIES.list() for n in FEATURE_FAMILIES.get(fam).names]


def family_of() -> dict[str, str]:
    """``{feature name: the family that computes it}``."""
    return {n: fam for fam in FEATURE_FAMILIES.list() for n in FEATURE_FAMILIES.get(fam).names}


def families_for(names: list[str] | None) -> list[str]:
    """The families that compute ``names`` (None: every family), in registry order; an unknown
    name is an error naming the closest known one."""
    if names is None:
        return FEATURE_FAMILIES.list()
    owner = family_of()
    unknown = [n for n in names if n not in owner]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], list(owner), n=1)
        raise ValueError(f"unknown forensic feature '{unknown[0]}'"
                         + (f"; did you mean '{close[0]}'?" if close else
                            "; see `dflab features -v`"))
    needed = {owner[n] for n in names}
    return [f for f in FEATURE_FAMILIES.list() if f in needed]


def _centre(img: np.ndarray, crop_size: int) -> np.ndarray:
    img = as_bgr8(img)
    if crop_size and min(img.shape[:2]) > crop_size:
        h, w = img.shape[:2]
        y, x = (h - crop_size) // 2, (w - crop_size) // 2
        img = img[y:y + crop_size, x:x + crop_size]
    return img


def feature_dict(img: np.ndarray, crop_size: int = 0,
                 families: list[str] | None = None) -> dict[str, float]:
    """``{feature name: value}`` for one image (``crop_size`` > 0: centre crop to that size
    first, never a resize; ``families``: only these, default all); NaN and infinities become 0."""
    img = _centre(img, crop_size)
    out: dict[str, float] = {}
    for fam in families if families is not None else FEATURE_FAMILIES.list():
        out.update(FEATURE_FAMILIES.get(fam)(img))
    return {k: float(np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)) for k, v in out.items()}


def extract_features(img: np.ndarray, crop_size: int = 0,
                     names: list[str] | None = None) -> np.ndarray:
    """float64 (n_features,) for one image, in :func:`feature_names` order (the columns of
    features.csv), or in the order of ``names`` (a subset: only the families it needs are
    computed); see :func:`feature_dict` for the values by name."""
    named = feature_dict(img, crop_size, families_for(names))
    return np.array([named[n] for n in (names or feature_names())], np.float64)


def best_ms(fn: Callable[..., object], *args: object, repeats: int = 3) -> float:
    """Milliseconds of the fastest of ``repeats`` calls of ``fn(*args)``."""
    import time

    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t)
    return best * 1000


def _centred_family(fam: str, img: np.ndarray, crop_size: int) -> dict[str, float]:
    """What :func:`feature_dict` runs for one family: the centre crop, then the family."""
    return FEATURE_FAMILIES.get(fam)(_centre(img, crop_size))


def family_costs(images: list[np.ndarray], crop_size: int = 0, repeats: int = 3
                 ) -> dict[str, float]:
    """Milliseconds per crop of each family, timed on the calls :func:`feature_dict` makes
    (after the centre crop), the median over ``images`` of the best of ``repeats``; ``_base``:
    the colour conversion and centre crop every subset pays."""
    times: dict[str, list[float]] = {f: [] for f in ["_base", *FEATURE_FAMILIES.list()]}
    for raw in images:
        times["_base"].append(best_ms(_centre, raw, crop_size, repeats=repeats))
        for fam in FEATURE_FAMILIES.list():
            times[fam].append(best_ms(_centred_family, fam, raw, crop_size, repeats=repeats))
    base = float(np.median(times["_base"]))
    return {k: round(float(np.median(v)) - (0 if k == "_base" else base), 3)
            for k, v in times.items()}


def _one(args: tuple[str, int, list[str] | None]) -> np.ndarray:
    import cv2

    path, crop_size, names = args
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise OSError(f"cannot read '{path}'")
    return extract_features(img, crop_size, names)


def _many(items: list[tuple[str, int, list[str] | None]]) -> list[np.ndarray]:
    return [_one(item) for item in items]


def _key(path: str, crop_size: int, names: list[str] | None = None) -> str:
    st = os.stat(path)
    subset = "" if names is None else "|" + ",".join(names)
    return hashlib.sha1(f"{FEATURES_VERSION}|{path}|{st.st_size}|{st.st_mtime_ns}|{crop_size}"
                        f"{subset}".encode()).hexdigest()


def _cached(cache: Path, key: str) -> Path:
    return cache / key[:2] / (key + ".npy")


def extract_many(paths: list[str], cache_dir: str | Path | None = None, crop_size: int = 0,
                 workers: int = 1, progress: Callable[[int, int], None] | None = None,
                 check: Callable[[], None] | None = None, cluster: str = "",
                 names: list[str] | None = None) -> np.ndarray:
    """float64 (n, n_features) for many image files; each crop's vector is cached on disk
    (keyed by path, size, mtime, settings and feature version), so re-runs are instant.
    ``names``: a subset (columns in that order; only the families it needs are computed, and a
    crop whose full vector is cached is read from it). ``cluster``: a Dask scheduler (see
    :mod:`dflab.cluster`) computes them, 64 crops a task."""
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
            f = _cached(cache, _key(p, crop_size, names))
            if f.exists():
                X[i] = np.load(f)
                continue
            full = _cached(cache, _key(p, crop_size)) if cols is not None else None
            if full is not None and full.exists():
                X[i] = np.load(full)[cols]
                continue
        todo.append(i)
    done = n - len(todo)
    if progress:
        progress(done, n)

    def store(i: int, v: np.ndarray) -> None:
        X[i] = v
        if cache is not None:
            f = _cached(cache, _key(paths[i], crop_size, names))
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_name(f.name + ".part.npy")
            np.save(tmp, v)
            os.replace(tmp, f)

    if cluster and todo:
        from .cluster import run_tasks

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
        import multiprocessing as mp

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
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
