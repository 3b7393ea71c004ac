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

import difflib
import logging
import time
from functools import lru_cache
from typing import Callable

import numpy as np

from dflab.core.registry import Registry
from dflab.data.video import to_bgr8

log = logging.getLogger(__name__)

__all__ = ["FEATURE_FAMILIES", "FEATURE_HELP", "feature_names", "extract_features", "as_bgr8",
           "families_for", "family_of", "family_costs", "best_ms",
           "azimuthal_profile", "log_spectrum", "block_dct", "noise_residual",
           "centre_crop", "FEATURES_VERSION"]

FEATURES_VERSION = "3"  # bump whenever a feature changes: it keys the cache
FEATURE_FAMILIES: Registry = Registry("feature family")
FEATURE_HELP: dict[str, str] = {}
EPS = 1e-12


def as_bgr8(img: np.ndarray) -> np.ndarray:
    """Any image array -> uint8 (H, W, 3) BGR (:func:`dflab.data.video.to_bgr8`); raises for
    images smaller than 8x8."""
    img = np.asarray(img)
    if img.ndim not in (2, 3) or min(img.shape[:2]) < 8:
        raise ValueError(f"image of shape {img.shape} is smaller than one 8x8 block (or not an "
                         f"image); forensic features need at least 8x8 pixels")
    return to_bgr8(img)


def to_gray(img: np.ndarray) -> np.ndarray:
    """float64 (H, W) luminance of a ``uint8 (H, W, 3) BGR`` image, as every gray feature uses."""
    import cv2

    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float64)


class _Crop:
    """One image as the families see it: the uint8 BGR array and its float64 gray version,
    converted once and shared by every family (:func:`feature_dict` passes one to each)."""

    __slots__ = ("bgr", "_gray", "_gray32")

    def __init__(self, bgr: np.ndarray):
        self.bgr, self._gray, self._gray32 = bgr, None, None

    @property
    def gray(self) -> np.ndarray:
        if self._gray is None:
            self._gray = to_gray(self.bgr)
        return self._gray

    @property
    def gray32(self) -> np.ndarray:
        """The gray image in float32: integers, so exact, and so are their differences."""
        if self._gray32 is None:
            self._gray32 = self.gray.astype(np.float32)
        return self._gray32


def _family(name: str, features: dict[str, str]) -> Callable:
    """Register a family and the names (with help) of the features it computes, in order. The
    registered function returns ``{name: value}``; a family that computes a different number of
    values than it names is an error, never a silent shift of columns."""

    def deco(fn):
        names = list(features)

        def named(img: np.ndarray | _Crop) -> dict[str, float]:
            values = fn(img if isinstance(img, _Crop) else _Crop(img))
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
def hann_window(shape: tuple[int, int]) -> np.ndarray:
    return np.outer(np.hanning(shape[0]), np.hanning(shape[1]))


@lru_cache(maxsize=64)
def _window32(shape: tuple[int, int]) -> np.ndarray:
    return hann_window(shape).astype(np.float32)


@lru_cache(maxsize=64)
def _mirror(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays that fill the columns a real FFT leaves out, by P[i, j] = P[-i, -j]."""
    h, w = shape
    cols = np.arange(w // 2 + 1, w)
    return cols, (-np.arange(h)) % h, w - cols


def _half_power(gray: np.ndarray) -> np.ndarray:
    """The power of a real FFT's half plane (H, W // 2 + 1), unshifted (see :func:`_power`);
    float64 for a float64 image, float32 (mean removal, window and power in single precision)
    for a float32 one."""
    from scipy import fft

    if gray.dtype == np.float32:
        g = gray - np.float32(gray.mean(dtype=np.float64))
        g *= _window32(gray.shape)
        half = fft.rfft2(g, overwrite_x=True)
        return half.real * half.real + half.imag * half.imag

    # mean removal and window in float64, one rounding to float32: rounding each step in
    # float32 moved the near-zero bins an up-sampled image has (fft_peak_max by 4e-5)
    g = ((gray - gray.mean()) * hann_window(gray.shape)).astype(np.float32)
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


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """A float dot product summed by numpy's pairwise sum, not BLAS: the same bits whatever the
    number of BLAS threads (a Dask worker runs one, this process several)."""
    return float(np.sum(a * b))


@lru_cache(maxsize=64)
def _profile_bins(shape: tuple[int, int], bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(the radial bin of every spectrum bin, flat; the number of bins in each radial bin)."""
    idx = np.minimum((_radius(shape) * bins).astype(np.intp), bins).ravel()
    return idx, np.maximum(np.bincount(idx, None, bins + 1)[:bins], 1)


def _profile(p: np.ndarray, bins: int) -> np.ndarray:
    idx, counts = _profile_bins(p.shape, bins)
    sums = np.bincount(idx, p.ravel(), bins + 1)[:bins]
    return np.log10(sums / counts + EPS)


def azimuthal_profile(gray: np.ndarray, bins: int = 32) -> np.ndarray:
    """Mean power per radial-frequency bin, radius 0..1 in ``bins`` steps (log10 power)."""
    return _profile(_power(gray), bins)


def _peak_ratios(p: np.ndarray, freqs: tuple[tuple[float, float], ...],
                 shape: tuple[int, int] | None = None) -> np.ndarray:
    """For each normalised frequency (fy, fx): the power there and at its mirror images, over the
    median of the 7x7 neighbourhood around each (the centre left out), as a log10 ratio: how
    strongly that period shows up. All frequencies in one gather. ``p``: a centred power
    spectrum, or with ``shape`` (the image's) the unshifted half plane of :func:`_half_power`,
    read through the symmetry P[i, j] = P[-i, -j] without building the full plane."""
    blocks_at, centre_at = peak_index(tuple(freqs), shape or p.shape, shape is not None)
    flat = p.ravel()
    ring = np.partition(flat[blocks_at], (23, 24), axis=2)  # (n, 4, 48): the centre left out
    ring = (ring[..., 23] + ring[..., 24]) / 2  # the median of 48
    return np.log10((flat[centre_at].mean(axis=1) + EPS) / (ring.mean(axis=1) + EPS))


@lru_cache(maxsize=64)
def peak_index(freqs: tuple[tuple[float, float], ...], shape: tuple[int, int], half: bool
                ) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices, per shape and frequencies, computed once, into the centred plane (or with
    ``half`` the unshifted half plane) of :func:`_peak_ratios`' neighbourhoods (n, 4, 48) and
    centres (n, 4)."""
    h, w = shape
    sign = np.array([(-1, -1), (-1, 1), (1, -1), (1, 1)])
    f = np.asarray(freqs, float)
    ys = np.round(h // 2 + sign[None, :, 0] * f[:, None, 0] * h / 2).astype(int) % h  # (n, 4)
    xs = np.round(w // 2 + sign[None, :, 1] * f[:, None, 1] * w / 2).astype(int) % w
    d = np.arange(-3, 4)
    by = np.broadcast_to((ys[..., None, None] + d[:, None]) % h, (*ys.shape, 7, 7))
    bx = np.broadcast_to((xs[..., None, None] + d[None, :]) % w, (*xs.shape, 7, 7))
    if half:
        (by, bx), (ys, xs) = _from_half(by, bx, h, w), _from_half(ys, xs, h, w)
    cols = w // 2 + 1 if half else w
    blocks = (by * cols + bx).reshape(len(f), 4, 49)
    return np.delete(blocks, 24, axis=2), ys * cols + xs


def _from_half(y: np.ndarray, x: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the centred full power plane's (y, x) lies in the unshifted half plane."""
    ky, kx = (y - h // 2) % h, (x - w // 2) % w
    mirror = kx > w // 2
    return np.where(mirror, (-ky) % h, ky), np.where(mirror, w - kx, kx)


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
def fft_features(img: _Crop) -> list[float]:
    """2-D magnitude spectrum: power law, energy ratios, entropy, directions, grid peaks"""
    # Long on purpose: one spectrum, computed once, feeds every FFT feature of the family.
    import cv2

    gray = img.gray
    half = _half_power(gray)  # (H, W // 2 + 1): each bin stands for 1 or 2 of the full plane
    geo = fft_geometry(gray.shape)
    ph = half.ravel()
    mp = ph * geo["m"]  # the power the full plane holds at each half-plane bin
    s_all = mp.sum()
    total = s_all + EPS
    prof = np.log10(np.bincount(geo["bin"], mp, 33)[:32] / geo["bin_count"] + EPS)
    # the power-law fit: least squares of a line through 31 points, in closed form
    x, y = geo["log_f"], prof[1:]
    xc = x - x.mean()
    slope = float(_dot(xc, y - y.mean()) / _dot(xc, xc))
    intercept = float(y.mean() - slope * x.mean())
    resid = y - (slope * x + intercept)
    out = [slope, intercept, np.sqrt(np.mean(resid ** 2)), resid[-8:].mean()]
    # every sum over a disc or a ring from one cumulative sum over the radius-sorted spectrum
    pw = mp.copy()
    pw[geo["dc"]] = 0.0
    cum = np.cumsum(pw[geo["order"]])
    for c in (0.25, 0.5, 0.75):
        k = geo[f"disc_{c}"]
        inner = cum[k - 1] if k else 0.0
        out.append(np.log10((cum[-1] - inner + EPS) / (inner + EPS)))
    # one natural log of the plane serves the entropy, the flatness and the peak search below:
    # log(q + eps) is log(p + eps) - log(sum) to within eps / q, far below float precision here.
    # In float32 (a SIMD log, a quarter of float64's cost): 1e-7 relative error in each log,
    # sums accumulated in float64
    logp = np.log((ph + EPS).astype(np.float32))
    s_pos = cum[-1]  # the full plane's power without DC
    n_pos = geo["n_pos"]
    log_pos = logp * geo["m_pos"]  # each bin's log counted as often as the full plane holds it
    out.append(float(-(_dot(pw, logp) - np.log(s_pos + EPS) * s_pos) / (s_pos + EPS)
                     / np.log(n_pos)))
    out.append(float(np.exp(log_pos.sum(dtype=np.float64) / n_pos) / (s_pos / n_pos + EPS)))
    eh, ev, ed = (_dot(ph[geo[k]], geo[k + "_w"]) / total for k in ("hor", "ver", "diag"))
    out += [eh, ev, ed, abs(eh - ev) / (eh + ev + EPS)]
    # Resampling leaves periodic correlations between neighbours: the spectrum of the absolute
    # Laplacian shows peaks at the period (Popescu & Farid; Kirchner). Periods 2, 4 and 8.
    # Intensity grids (transposed convolutions) show in the Laplacian; pixel replication
    # (nearest-neighbour) in the first differences, which vanish between copied pixels.
    g32 = img.gray32
    lg = np.abs(cv2.Laplacian(g32, cv2.CV_32F, ksize=1))
    gx, gy = cv2.absdiff(g32[:, 1:], g32[:, :-1]), cv2.absdiff(g32[1:], g32[:-1])
    periods = (1.0, 0.5, 0.25)
    lap = _peak_ratios(_half_power(lg), tuple(q for f in periods for q in ((f, 0.0), (0.0, f),
                                                                          (f, f))), lg.shape)
    dx = _peak_ratios(_half_power(gx), tuple((0.0, f) for f in periods), gx.shape)
    dy = _peak_ratios(_half_power(gy), tuple((f, 0.0) for f in periods), gy.shape)
    out += [float(max(lap[3 * k: 3 * k + 3].max(), dx[k], dy[k])) for k in range(3)]
    # the peak search needs the centred full plane: one gather from the half plane's logs
    log10p = (logp * np.float32(1 / np.log(10)))[geo["src"]]
    med = cv2.medianBlur(log10p, 5)
    out.append(float((log10p - med).ravel()[geo["hf"]].max()) if geo["hf"].size else 0.0)
    q1 = _dot(ph, geo["q1_w"])  # the top-left and bottom-right quadrants of the centred plane
    out.append(abs(2 * q1 - s_all) / (s_all + EPS))
    s_pw = s_pos + EPS
    cen = _dot(pw, geo["r"]) / s_pw
    # the spread from the second moment: sum p (r - c)^2 = sum p r^2 - c^2 sum p
    out += [cen, np.sqrt(max(_dot(pw, geo["r2"]) / s_pw - cen * cen * (s_pos / s_pw), 0.0))]
    out.append(float(geo["r_sorted"][np.searchsorted(cum, 0.85 * s_pos)]) if s_pos > 0 else 0.0)
    return [float(v) for v in out]


@lru_cache(maxsize=64)
def fft_geometry(shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Per image shape, computed once, on the half plane of a real FFT (:func:`_half_power`):
    ``src`` maps the centred full plane to it (P[i, j] = P[-i, -j]), ``m`` counts the full-plane
    bins each half-plane bin stands for (1 or 2), so a sum over the full plane is a weighted sum
    over the half; the radius, its sort order, the radial bins of the profile, DC, the bands
    (as indices and counts), the quadrant weights, and the full plane's bins with r > 0.3."""
    h, w = shape
    hw = w // 2 + 1
    idx = np.arange(h * hw).reshape(h, hw)
    full = np.empty((h, w), np.intp)
    full[:, :hw] = idx
    cols, rows, src_cols = _mirror((h, w))
    if cols.size:
        full[:, cols] = idx[rows][:, src_cols]
    src = np.fft.fftshift(full)  # centred full plane -> half-plane flat index
    n = h * hw

    def weights(mask: np.ndarray) -> np.ndarray:
        return np.bincount(src[mask], minlength=n).astype(np.float64)

    m = weights(np.ones((h, w), bool))
    r_full = _radius(shape)
    r = np.zeros(n)
    r[src.ravel()] = r_full.ravel()  # a bin and its mirror image have the same radius
    order = np.argsort(r, kind="stable")
    r_sorted = r[order]
    fy = np.abs(np.arange(h) - h // 2)[:, None] / (h / 2)
    fx = np.abs(np.arange(w) - w // 2)[None, :] / (w / 2)
    band, nz = 0.04, r_full > 0
    bins = np.minimum((r_full * 32).astype(np.intp), 32)
    bin_half = np.zeros(n, np.intp)
    bin_half[src.ravel()] = bins.ravel()
    out = {"src": src, "m": m, "r": r, "r2": r * r, "order": order, "r_sorted": r_sorted,
           "bin": bin_half, "bin_count": np.maximum(np.bincount(bins.ravel(), None, 33)[:32], 1),
           "log_f": np.log10((np.arange(1, 32) + 0.5) / 32),
           "dc": np.flatnonzero(r == 0), "n_pos": int(nz.sum()), "m_pos": weights(nz),
           "q1_w": weights(np.equal.outer(np.arange(h) < h // 2, np.arange(w) < w // 2)),
           "hf": np.flatnonzero((r_full > 0.3).ravel())}
    out.update({f"disc_{c}": int(np.searchsorted(r_sorted, c, "left")) for c in (0.25, 0.5, 0.75)})
    for k, mask in (("hor", (fy <= band) & nz), ("ver", (fx <= band) & nz),
                    ("diag", (np.abs(fy - fx) <= band) & nz)):
        wk = weights(mask)
        out[k] = np.flatnonzero(wk)
        out[k + "_w"] = wk[out[k]]
    return out


# ---------------------------------------------------------------------------------------- DCT
def block_dct(gray: np.ndarray) -> np.ndarray:
    """Orthonormal 8x8 block DCT-II of a float (H, W) image cropped to whole blocks, level-shifted
    by 128 as JPEG does: shape (H//8, W//8, 8, 8). Two matrix products with the 8x8 DCT matrix
    over the whole image (rows of every block, then columns): the values of
    ``scipy.fft.dctn(blocks, axes=(2, 3), norm="ortho")`` to 1e-12, at a fifth of its cost on
    8x8 blocks."""
    h, w = (gray.shape[0] // 8) * 8, (gray.shape[1] // 8) * 8
    d = dct_matrix()
    rows = d @ (gray[:h, :w] - 128.0).reshape(h // 8, 8, w)  # (H/8, u, W)
    return (rows.reshape(h // 8, 8, w // 8, 8) @ d.T).transpose(0, 2, 1, 3)


@lru_cache(maxsize=1)
def dct_matrix() -> np.ndarray:
    """The orthonormal 8-point DCT-II as a matrix: ``D @ x == scipy.fft.dct(x, norm="ortho")``."""
    from scipy.fft import dct

    return dct(np.eye(8), type=2, axis=0, norm="ortho")


# the first significant digit of every integer 0..4096 (0 for 0): an 8-bit image's orthonormal
# 8x8 DCT coefficients are at most 1024 in magnitude, and a number >= 1 has the first digit of its
# integer part
TIE = 1e-9
FIRST_DIGIT = np.array([0] + [int(str(n)[0]) for n in range(1, 4097)], np.intp)
_UV = np.add.outer(np.arange(8), np.arange(8))  # zig-zag order proxy: u + v


def _lattice_fits(c: np.ndarray, max_q: int) -> np.ndarray:
    """How well coefficients ``c`` sit on the lattice q*k, for every step q = 2..max_q at once:
    |mean(exp(2 pi i c / q))| (1 = exactly), one (steps, n) matrix of cosines and sines instead
    of a loop over complex exponentials. Only the steps above max_q / 2 take trigonometry: a step
    q <= max_q / 2 has exp(2 pi i c / q) = exp(2 pi i c / 2q)^2, so its row is the square of row
    2q's (the double-angle formulas), half the cosines and sines. Matches the direct
    complex-exponential version to 1e-7."""
    hi, blocks = _lattice_plan(max_q)
    # the fraction of c / q in double precision first, so the single-precision trig sees phases
    # in [-pi, pi] and loses nothing
    t = np.multiply.outer(1.0 / hi, c)
    t -= np.rint(t)
    phase = (t * (2 * np.pi)).astype(np.float32)
    cos = np.empty((max_q - 1, len(c)), np.float32)  # row q - 2
    sin = np.empty_like(cos)
    np.cos(phase, out=cos[hi[0] - 2:])
    np.sin(phase, out=sin[hi[0] - 2:])
    for rows, doubled in blocks:
        a, b = cos[doubled], sin[doubled]
        cos[rows] = a * a - b * b
        sin[rows] = 2 * a * b
    return np.hypot(cos.sum(axis=1, dtype=np.float64), sin.sum(axis=1, dtype=np.float64)) / len(c)


@lru_cache(maxsize=8)
def _lattice_plan(max_q: int) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """(the steps computed by trigonometry, max_q // 2 + 1 .. max_q; then blocks of (rows of
    steps q, rows of 2q), largest q first, so each block squares rows already filled)."""
    hi = np.arange(max_q // 2 + 1, max_q + 1)
    blocks, q = [], max_q // 2
    while q >= 2:
        lo = max(2, q // 2 + 1)
        qs = np.arange(lo, q + 1)
        blocks.append((qs - 2, 2 * qs - 2))
        q = lo - 1
    return hi, blocks


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


DCT_LOW, DCT_MID, DCT_HIGH = (np.flatnonzero(((_UV <= 2) & (_UV > 0)).ravel()),
                     np.flatnonzero(((_UV >= 3) & (_UV <= 7)).ravel()),
                     np.flatnonzero((_UV >= 8).ravel()))
DCT_AC = np.flatnonzero((_UV > 0).ravel())


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
def dct_features(img: _Crop) -> list[float]:
    """8x8 block DCT as in JPEG: energy bands, block variance, blockiness, double compression"""
    import cv2

    c = block_dct(img.gray)
    cf = c.reshape(-1, 64)  # one row per block, frequencies (u, v) row-major
    mag = np.abs(cf)
    sq = cf * cf
    ac = sq.sum(axis=0) / len(cf)
    m = mag.mean(axis=0)
    var = np.maximum(ac - m * m, 0.0)  # the variance of |c| per frequency, from the same sums
    ac[0] = 0
    tot = ac.sum() + EPS
    out = [ac[DCT_LOW].sum() / tot, ac[DCT_MID].sum() / tot, ac[DCT_HIGH].sum() / tot]
    logvar = np.log10(var + 1e-6)
    lv = logvar[DCT_AC]
    out += [lv.mean(), lv.std(), logvar[DCT_HIGH].mean() - logvar[DCT_LOW].mean()]
    # Integer images give coefficients of exactly 0.5, 1, 10, ...: thresholds and digits are
    # taken with a 1e-9 margin (TIE), so a tie counts the same whichever DCT computed it
    zero = (mag <= 0.5 + TIE).sum(axis=0)  # rounds to zero (half to even)
    out.append(float(zero[DCT_HIGH].sum() / (len(cf) * DCT_HIGH.size)))
    m = m.round(9)
    m[0] = -1
    u, v = divmod(int(np.argmax(m)), 8)
    out += [float(u), float(v)]
    h, w = (img.gray.shape[0] // 8) * 8, (img.gray.shape[1] // 8) * 8
    g = img.gray32[:h, :w]
    # |differences| of integers and their line sums (< 2^24) are exact in float32
    dh = cv2.absdiff(g[:, 1:], g[:, :-1])
    dv = cv2.absdiff(g[1:], g[:-1])
    bh = _border_ratio(dh.sum(axis=0, dtype=np.float64), dh.shape[0])
    bv = _border_ratio(dv.sum(axis=1, dtype=np.float64), dv.shape[1])
    out += [(bh + bv) / 2, bh, bv]
    out.append(_double_quant(c))
    out.append(float(zero[DCT_LOW].sum() / (len(cf) * DCT_LOW.size)))
    # how many coefficients have each integer part, then how many each first digit (0 below 1)
    ints = (mag + TIE).astype(np.intp)
    per_int = np.bincount(ints.ravel()) - np.bincount(ints[:, 0], minlength=ints.max() + 1)
    counts = np.bincount(FIRST_DIGIT[:per_int.size], per_int, minlength=10)
    n_ac = counts[1:].sum()
    if n_ac >= 10:
        obs = counts[1:] / n_ac
        ben = np.log10(1 + 1 / np.arange(1, 10))
        out.append(float((obs * np.log((obs + EPS) / ben)).sum()))
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
def noise_features(img: _Crop) -> list[float]:
    """Image minus a median-filtered copy: per-channel statistics, regional consistency"""
    import cv2

    # The residual is an integer in [-255, 255] per channel, so its power sums (up to the 4th:
    # at most 255^4 * H * W, far below 2^53), the channels' cross sums and the regional sums are
    # exact in float64 whatever the order of summation (BLAS dot products may compute them): the
    # moments follow from them without a pass over centred copies. The residual stays int16 and
    # the regional sums come from integral images, so the temporaries are fewer and smaller than
    # the histogram's int64 copy, the int32 residual and the float planes and squares they
    # replace (several MB a crop, whose pages glibc handed back and faulted in again each crop).
    h, w = img.bgr.shape[:2]
    bgr, n_all = img.bgr, h * w
    res = cv2.subtract(bgr, cv2.medianBlur(bgr, 3), dtype=cv2.CV_16S)  # (H, W, 3) int16
    b, g, r = (p.ravel().astype(np.float64) for p in cv2.split(res))
    rgb = (r, g, b)
    s1 = [float(x.sum()) for x in rgb]
    moments = []
    for x, s in zip(rgb, s1):
        x2 = x * x
        moments.append(_moments_from_sums(n_all, s, float(x2.sum()), float(np.dot(x2, x)),
                                          float(np.dot(x2, x2))))
    out = [m[0] for m in moments] + [m[1] for m in moments] + [m[2] for m in moments]
    cov = np.empty((3, 3))  # R G B
    for i in range(3):
        for j in range(i, 3):
            cov[i, j] = cov[j, i] = (n_all * float(np.dot(rgb[i], rgb[j])) - s1[i] * s1[j]) \
                / n_all ** 2
    # 3 x the mean residual of the channels, and every regional sum of it and of its square from
    # its integral images (exact: integers in float64), read at the region corners
    lum3 = cv2.transform(res, np.ones((1, 3)))  # (H, W) int16, |values| <= 765
    s, s2 = cv2.integral2(lum3, sdepth=cv2.CV_64F, sqdepth=cv2.CV_64F)  # (H + 1, W + 1)

    def region_sums(table: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        corners = table[np.ix_(ys, xs)]
        return corners[1:, 1:] - corners[:-1, 1:] - corners[1:, :-1] + corners[:-1, :-1]

    ys, xs = np.linspace(0, h, 5).astype(int), np.linspace(0, w, 5).astype(int)
    n = np.outer(np.diff(ys), np.diff(xs))
    local = _var_from_sums(region_sums(s, ys, xs), region_sums(s2, ys, xs), n).ravel() / 9
    out.append(float(local.std() / (local.mean() + 1e-6)))
    out.append(float(np.log10((local.max() + 1e-3) / (local.min() + 1e-3))))
    cy, cx = np.array([h // 4, 3 * h // 4]), np.array([w // 4, 3 * w // 4])
    c1, c2 = float(region_sums(s, cy, cx)[0, 0]), float(region_sums(s2, cy, cx)[0, 0])
    t1, t2 = float(s[h, w]), float(s2[h, w])
    n_c = (3 * h // 4 - h // 4) * (3 * w // 4 - w // 4)
    v_c = _var_from_sums(c1, c2, n_c) / 9
    v_b = _var_from_sums(t1 - c1, t2 - c2, n_all - n_c) / 9
    out.append(float(np.log10((v_c + 1e-3) / (v_b + 1e-3))))
    out += [_corr_from_cov(cov, i, j) for i, j in ((0, 1), (1, 2), (0, 2))]  # rg, gb, rb
    lum_var = cov.sum() / 9
    out.append(float(np.log10((lum_var + 1e-6) / (img.gray.var() + 1e-6))))
    return [float(v) for v in out]


def _corr_from_cov(cov: np.ndarray, i: int, j: int) -> float:
    """Pearson correlation of channels ``i`` and ``j`` from their covariance matrix."""
    if np.sqrt(max(cov[i, i], 0.0)) < 1e-9 or np.sqrt(max(cov[j, j], 0.0)) < 1e-9:
        return 0.0
    return float(cov[i, j] / np.sqrt(cov[i, i] * cov[j, j]))


def _var_from_sums(s1, s2, n):
    """Population variance from the sum and the sum of squares of integers (exact until the
    final division)."""
    return (np.asarray(n) * np.asarray(s2) - np.asarray(s1) ** 2) / np.maximum(
        np.asarray(n), 1) ** 2


def _moments_from_sums(n: int, s1: float, s2: float, s3: float, s4: float
                       ) -> tuple[float, float, float]:
    """(variance, skewness, excess kurtosis) of ``n`` values from their power sums
    ``s1..s4`` (the central moments expanded in the raw ones)."""
    mean = s1 / n
    m2 = max(s2 / n - mean * mean, 0.0)
    if np.sqrt(m2) < 1e-9:
        return m2, 0.0, 0.0
    m3 = s3 / n - 3 * mean * s2 / n + 2 * mean ** 3
    m4 = s4 / n - 4 * mean * s3 / n + 6 * mean * mean * s2 / n - 3 * mean ** 4
    return m2, m3 / m2 ** 1.5, m4 / m2 ** 2 - 3.0


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
        close = difflib.get_close_matches(unknown[0], list(owner), n=1)
        raise ValueError(f"unknown forensic feature '{unknown[0]}'"
                         + (f"; did you mean '{close[0]}'?" if close else
                            "; see `dflab features -v`"))
    needed = {owner[n] for n in names}
    return [f for f in FEATURE_FAMILIES.list() if f in needed]


def centre_crop(img: np.ndarray, crop_size: int) -> np.ndarray:
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
    crop = _Crop(centre_crop(img, crop_size))
    out: dict[str, float] = {}
    for fam in families if families is not None else FEATURE_FAMILIES.list():
        out.update(FEATURE_FAMILIES.get(fam)(crop))
    values = np.nan_to_num(np.fromiter(out.values(), np.float64, len(out)), nan=0.0, posinf=0.0,
                           neginf=0.0)
    return dict(zip(out, values.tolist()))


def extract_features(img: np.ndarray, crop_size: int = 0,
                     names: list[str] | None = None) -> np.ndarray:
    """float64 (n_features,) for one image, in :func:`feature_names` order (the columns of
    features.csv), or in the order of ``names`` (a subset: only the families it needs are
    computed); see :func:`feature_dict` for the values by name."""
    named = feature_dict(img, crop_size, families_for(names))
    return np.array([named[n] for n in (names or feature_names())], np.float64)


def best_ms(fn: Callable[..., object], *args: object, repeats: int = 3) -> float:
    """Milliseconds of the fastest of ``repeats`` calls of ``fn(*args)``."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t)
    return best * 1000


def _centred_family(fam: str, img: np.ndarray, crop_size: int) -> dict[str, float]:
    """What :func:`feature_dict` runs for one family: the centre crop, then the family."""
    return FEATURE_FAMILIES.get(fam)(centre_crop(img, crop_size))


def family_costs(images: list[np.ndarray], crop_size: int = 0, repeats: int = 3
                 ) -> dict[str, float]:
    """Milliseconds per crop of each family, timed on the calls :func:`feature_dict` makes
    (after the centre crop), the median over ``images`` of the best of ``repeats``; ``_base``:
    the colour conversion and centre crop every subset pays."""
    times: dict[str, list[float]] = {f: [] for f in ["_base", *FEATURE_FAMILIES.list()]}
    for raw in images:
        times["_base"].append(best_ms(centre_crop, raw, crop_size, repeats=repeats))
        for fam in FEATURE_FAMILIES.list():
            times[fam].append(best_ms(_centred_family, fam, raw, crop_size, repeats=repeats))
    base = float(np.median(times["_base"]))
    return {k: round(float(np.median(v)) - (0 if k == "_base" else base), 3)
            for k, v in times.items()}
