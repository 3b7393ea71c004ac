"""The forensic features on torch, for a batch of equal-sized crops at once, on a GPU when there
is one (``features.backend: torch``).

The same 52 measurements as :mod:`dflab.forensic.features`, in the same order, computed with
``torch.fft`` and tensor reductions in float64 instead of NumPy, SciPy and OpenCV per crop; equal
to the NumPy backend within 1e-4 relative (``tests/test_features.py``). What stays on the CPU, in
OpenCV, is what is cheap and exact there: the gray conversion (OpenCV's fixed-point formula) and
the 3x3 median the noise residual subtracts. The per-shape geometry (radii, bands, mirror
indices of the half plane, grid-peak neighbourhoods) is :mod:`dflab.forensic.features`' own, moved to the
device once per shape.

No library computes these features on a GPU, so they are written here on top of torch.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from dflab.core.environment import torch_device
from dflab.forensic import features as F

__all__ = ["extract_batch"]

EPS = F.EPS


@lru_cache(maxsize=32)
def _geometry(shape: tuple[int, int], device: str) -> dict:
    """:func:`dflab.forensic.features.fft_geometry` and the grid-peak indices as tensors on ``device``."""
    import torch

    geo = F.fft_geometry(shape)
    out = {}
    for k, v in geo.items():
        if isinstance(v, np.ndarray):
            dtype = torch.float64 if v.dtype.kind == "f" else torch.long
            out[k] = torch.as_tensor(np.ascontiguousarray(v), dtype=dtype, device=device)
        else:
            out[k] = v
    h, w = shape
    periods = (1.0, 0.5, 0.25)
    peaks = {"lap": ((h, w), tuple(q for f in periods for q in ((f, 0.0), (0.0, f), (f, f)))),
             "dx": ((h, w - 1), tuple((0.0, f) for f in periods)),
             "dy": ((h - 1, w), tuple((f, 0.0) for f in periods))}
    for k, (s, freqs) in peaks.items():
        blocks, centre = F.peak_index(freqs, s, True)
        out[f"{k}_blocks"] = torch.as_tensor(blocks, dtype=torch.long, device=device)
        out[f"{k}_centre"] = torch.as_tensor(centre, dtype=torch.long, device=device)
    out["window"] = {s: torch.as_tensor(F.hann_window(s), device=device)
                     for s in ((h, w), (h, w - 1), (h - 1, w))}
    out["dct"] = torch.as_tensor(F.dct_matrix(), device=device)
    out["first_digit"] = torch.as_tensor(F.FIRST_DIGIT, device=device)
    q = np.arange(2, 41)
    foreign = np.zeros((41, q.size), bool)  # foreign[q_hi]: the steps below q_hi not dividing it
    for hi in range(2, 41):
        foreign[hi] = (q < hi) & (hi % q != 0)
    out["q"] = torch.as_tensor(q, dtype=torch.float64, device=device)
    out["foreign"] = torch.as_tensor(foreign, device=device)
    return out


def _half_power(x, window):
    """(B, H, W//2+1) power of the real FFT of each (B, H, W) image, mean removed, Hann window."""
    import torch

    g = (x - x.mean(dim=(1, 2), keepdim=True)) * window
    half = torch.fft.rfft2(g)
    return half.real ** 2 + half.imag ** 2


def _peak_ratios(half, blocks, centre):
    """:func:`dflab.forensic.features._peak_ratios` for a batch: (B, n)."""
    import torch

    flat = half.reshape(half.shape[0], -1)
    ring = flat[:, blocks].sort(dim=-1).values  # (B, n, 4, 48)
    ring = (ring[..., 23] + ring[..., 24]) / 2
    return torch.log10((flat[:, centre].mean(dim=2) + EPS) / (ring.mean(dim=2) + EPS))


def _median_filter(x, k: int):
    """OpenCV's medianBlur (edges replicated) of (B, H, W) images, k x k, k odd."""
    import torch.nn.functional as nnf

    b, h, w = x.shape
    pad = nnf.pad(x[:, None], (k // 2,) * 4, mode="replicate")
    patches = nnf.unfold(pad, k)  # (B, k*k, H*W)
    return patches.median(dim=1).values.reshape(b, h, w)


def _fft(gray, geo) -> list:
    """The FFT family (21 values per crop) as a list of (B,) tensors."""
    import torch
    import torch.nn.functional as nnf

    b, h, w = gray.shape
    ph = _half_power(gray, geo["window"][(h, w)]).reshape(b, -1)
    mp = ph * geo["m"]
    s_all = mp.sum(dim=1)
    total = s_all + EPS
    sums = torch.zeros(b, 33, dtype=mp.dtype, device=mp.device).index_add_(1, geo["bin"], mp)
    prof = torch.log10(sums[:, :32] / geo["bin_count"] + EPS)
    x, y = geo["log_f"], prof[:, 1:]
    xc = x - x.mean()
    slope = ((y - y.mean(dim=1, keepdim=True)) * xc).sum(dim=1) / (xc * xc).sum()
    intercept = y.mean(dim=1) - slope * x.mean()
    resid = y - (slope[:, None] * x + intercept[:, None])
    out = [slope, intercept, torch.sqrt((resid ** 2).mean(dim=1)), resid[:, -8:].mean(dim=1)]
    pw = mp.clone()
    pw[:, geo["dc"]] = 0.0
    cum = torch.cumsum(pw[:, geo["order"]], dim=1)
    s_pos = cum[:, -1]
    zero = torch.zeros_like(s_pos)
    for c in (0.25, 0.5, 0.75):
        k = geo[f"disc_{c}"]
        inner = cum[:, k - 1] if k else zero
        out.append(torch.log10((s_pos - inner + EPS) / (inner + EPS)))
    logp = torch.log(ph + EPS)
    n_pos = geo["n_pos"]
    out.append(-((pw * logp).sum(dim=1) - torch.log(s_pos + EPS) * s_pos) / (s_pos + EPS)
               / np.log(n_pos))
    out.append(torch.exp((logp * geo["m_pos"]).sum(dim=1) / n_pos) / (s_pos / n_pos + EPS))
    eh, ev, ed = ((ph[:, geo[k]] * geo[k + "_w"]).sum(dim=1) / total
                  for k in ("hor", "ver", "diag"))
    out += [eh, ev, ed, (eh - ev).abs() / (eh + ev + EPS)]
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]],
                          dtype=gray.dtype, device=gray.device)[None, None]
    lap = nnf.conv2d(nnf.pad(gray[:, None], (1, 1, 1, 1), mode="reflect"), kernel)[:, 0].abs()
    gx = (gray[:, :, 1:] - gray[:, :, :-1]).abs()
    gy = (gray[:, 1:] - gray[:, :-1]).abs()
    peaks = {k: _peak_ratios(_half_power(img, geo["window"][tuple(img.shape[1:])]),
                             geo[f"{k}_blocks"], geo[f"{k}_centre"])
             for k, img in (("lap", lap), ("dx", gx), ("dy", gy))}
    for k in range(3):
        out.append(torch.maximum(peaks["lap"][:, 3 * k: 3 * k + 3].amax(dim=1),
                                 torch.maximum(peaks["dx"][:, k], peaks["dy"][:, k])))
    log10p = (logp / np.log(10))[:, geo["src"]]  # (B, H, W) centred full plane
    med = torch.cat([_median_filter(log10p[i:i + 16], 5) for i in range(0, b, 16)])
    diff = (log10p - med).reshape(b, -1)
    out.append(diff[:, geo["hf"]].amax(dim=1) if geo["hf"].numel() else zero)
    q1 = (ph * geo["q1_w"]).sum(dim=1)
    out.append((2 * q1 - s_all).abs() / (s_all + EPS))
    s_pw = s_pos + EPS
    cen = (pw * geo["r"]).sum(dim=1) / s_pw
    out += [cen, torch.sqrt(torch.clamp((pw * geo["r2"]).sum(dim=1) / s_pw
                                        - cen * cen * (s_pos / s_pw), min=0.0))]
    at = torch.searchsorted(cum, (0.85 * s_pos)[:, None]).clamp(max=cum.shape[1] - 1)[:, 0]
    out.append(torch.where(s_pos > 0, geo["r_sorted"][at], zero))
    return out


def _double_quant(c, geo):
    """:func:`dflab.forensic.features._double_quant` for a batch of block DCTs (B, nh, nw, 8, 8)."""
    import torch

    b = c.shape[0]
    pos = ((0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (2, 1), (1, 2))
    coef = torch.stack([c[..., u, v].reshape(b, -1) for u, v in pos], dim=1)  # (B, 7, n)
    used = (coef.abs() >= 1).to(coef.dtype)
    n = used.sum(dim=2)  # (B, 7)
    q = geo["q"]
    re = torch.zeros(b, 7, q.numel(), dtype=coef.dtype, device=coef.device)
    im = torch.zeros_like(re)
    for k in range(q.numel()):  # one step at a time bounds the memory to (B, 7, n)
        t = coef / q[k]
        phase = 2 * np.pi * (t - torch.floor(t))
        re[..., k] = (torch.cos(phase) * used).sum(dim=2)
        im[..., k] = (torch.sin(phase) * used).sum(dim=2)
    fits = torch.sqrt(re * re + im * im) / n.clamp(min=1)[..., None]
    above = fits > 0.5
    steps = torch.arange(q.numel(), device=c.device)
    hi = torch.where(above, steps, torch.full_like(steps, -1)).amax(dim=2)  # index of q_hi
    q_hi = torch.where(hi >= 0, hi + 2, torch.ones_like(hi))  # 1 when no step fits
    mask = geo["foreign"][q_hi.clamp(max=40)]  # (B, 7, 39)
    score = torch.where(mask, fits, torch.full_like(fits, -1.0)).amax(dim=2).clamp(min=0.0)
    valid = (n >= 32).to(fits.dtype)
    count = valid.sum(dim=1)
    return torch.where(count > 0, (score * valid).sum(dim=1) / count.clamp(min=1),
                       torch.zeros_like(count))


def _dct(gray, geo) -> list:
    """The DCT family (15 values per crop)."""
    import torch

    b, h0, w0 = gray.shape
    h, w = (h0 // 8) * 8, (w0 // 8) * 8
    d = geo["dct"]
    rows = d @ (gray[:, :h, :w] - 128.0).reshape(b, h // 8, 8, w)
    c = (rows.reshape(b, h // 8, 8, w // 8, 8) @ d.T).permute(0, 1, 3, 2, 4)  # (B, i, j, u, v)
    cf = c.reshape(b, -1, 64)
    n = cf.shape[1]
    mag = cf.abs()
    ac = (cf * cf).sum(dim=1) / n
    m = mag.mean(dim=1)
    var = torch.clamp(ac - m * m, min=0.0)
    ac[:, 0] = 0
    tot = ac.sum(dim=1) + EPS
    low, mid, high, acs = (torch.as_tensor(i, device=gray.device)
                           for i in (F.DCT_LOW, F.DCT_MID, F.DCT_HIGH, F.DCT_AC))
    out = [ac[:, low].sum(dim=1) / tot, ac[:, mid].sum(dim=1) / tot, ac[:, high].sum(dim=1) / tot]
    logvar = torch.log10(var + 1e-6)
    lv = logvar[:, acs]
    out += [lv.mean(dim=1), lv.std(dim=1, unbiased=False),
            logvar[:, high].mean(dim=1) - logvar[:, low].mean(dim=1)]
    zero = (mag <= 0.5 + F.TIE).sum(dim=1).to(gray.dtype)
    out.append(zero[:, high].sum(dim=1) / (n * high.numel()))
    m = torch.round(m * 1e9) / 1e9
    m[:, 0] = -1
    peak = torch.argmax(m, dim=1)
    out += [(peak // 8).to(gray.dtype), (peak % 8).to(gray.dtype)]
    g = gray[:, :h, :w]
    dh = (g[:, :, 1:] - g[:, :, :-1]).abs()
    dv = (g[:, 1:] - g[:, :-1]).abs()
    bh = _border_ratio(dh.sum(dim=1), dh.shape[1])
    bv = _border_ratio(dv.sum(dim=2), dv.shape[2])
    out += [(bh + bv) / 2, bh, bv]
    out.append(_double_quant(c, geo))
    out.append(zero[:, low].sum(dim=1) / (n * low.numel()))
    digit = geo["first_digit"][(mag + F.TIE).to(torch.long).clamp(max=4096)]  # (B, n, 64)
    # per-crop counts by one bincount over crop-offset digits (integer counts, deterministic on
    # a GPU too, unlike a scatter-add), less the DC column's
    offset = 10 * torch.arange(b, device=gray.device)
    counts = (torch.bincount((digit + offset[:, None, None]).reshape(-1), minlength=10 * b)
              - torch.bincount((digit[:, :, 0] + offset[:, None]).reshape(-1), minlength=10 * b))
    counts = counts.reshape(b, 10).to(gray.dtype)
    n_ac = counts[:, 1:].sum(dim=1)
    obs = counts[:, 1:] / n_ac.clamp(min=1)[:, None]
    ben = torch.log10(1 + 1 / torch.arange(1, 10, dtype=gray.dtype, device=gray.device))
    kl = (obs * torch.log((obs + EPS) / ben)).sum(dim=1)
    out.append(torch.where(n_ac >= 10, kl, torch.zeros_like(kl)))
    return out


def _border_ratio(line_sums, per_line: int):
    """:func:`dflab.forensic.features._border_ratio` for a batch of per-line sums (B, L)."""
    border = line_sums[:, 7::8]
    if not border.shape[1]:
        return line_sums.new_ones(line_sums.shape[0])
    inside = line_sums.sum(dim=1) - border.sum(dim=1)
    n_in = (line_sums.shape[1] - border.shape[1]) * per_line
    return (border.sum(dim=1) / (border.shape[1] * per_line) + 1e-3) / (inside / n_in + 1e-3)


def _noise(res, gray, shape) -> list:
    """The noise family (16 values per crop) from the residuals (B, 3, H, W), B G R."""
    import torch

    b = res.shape[0]
    h, w = shape
    flat = res.reshape(b, 3, -1)
    mean = flat.mean(dim=2, keepdim=True)
    d = flat - mean
    d2 = d * d
    m2 = d2.mean(dim=2)
    m3 = (d2 * d).mean(dim=2)
    m4 = (d2 * d2).mean(dim=2)
    flat_ok = torch.sqrt(m2) >= 1e-9
    safe = torch.where(flat_ok, m2, torch.ones_like(m2))
    skew = torch.where(flat_ok, m3 / safe ** 1.5, torch.zeros_like(m2))
    kurt = torch.where(flat_ok, m4 / safe ** 2 - 3.0, torch.zeros_like(m2))
    out = [m2[:, k] for k in (2, 1, 0)] + [skew[:, k] for k in (2, 1, 0)] \
        + [kurt[:, k] for k in (2, 1, 0)]
    cov = d @ d.transpose(1, 2) / flat.shape[2]  # (B, 3, 3)
    lum3 = flat.sum(dim=1).reshape(b, h, w)
    ys, xs = np.linspace(0, h, 5).astype(int), np.linspace(0, w, 5).astype(int)
    sq = lum3 * lum3

    def region_sums(a):
        """Sums over the 4x4 grid of regions, from the integral image."""
        s = torch.nn.functional.pad(a.cumsum(1).cumsum(2), (1, 0, 1, 0))
        yy, xx = torch.as_tensor(ys, device=a.device), torch.as_tensor(xs, device=a.device)
        corner = s[:, yy][:, :, xx]  # (B, 5, 5)
        return corner[:, 1:, 1:] - corner[:, :-1, 1:] - corner[:, 1:, :-1] + corner[:, :-1, :-1]

    n = torch.as_tensor(np.outer(np.diff(ys), np.diff(xs)), dtype=res.dtype, device=res.device)
    s1, s2 = region_sums(lum3), region_sums(sq)
    local = ((n * s2 - s1 * s1) / n.clamp(min=1) ** 2).reshape(b, -1) / 9
    out.append(local.std(dim=1, unbiased=False) / (local.mean(dim=1) + 1e-6))
    out.append(torch.log10((local.amax(dim=1) + 1e-3) / (local.amin(dim=1) + 1e-3)))
    cy, cx = slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4)
    t1, t2 = lum3.sum(dim=(1, 2)), sq.sum(dim=(1, 2))
    c1, c2 = lum3[:, cy, cx].sum(dim=(1, 2)), sq[:, cy, cx].sum(dim=(1, 2))
    n_all = h * w
    n_c = (3 * h // 4 - h // 4) * (3 * w // 4 - w // 4)
    v_c = (n_c * c2 - c1 * c1) / max(n_c, 1) ** 2 / 9
    v_b = ((n_all - n_c) * (t2 - c2) - (t1 - c1) ** 2) / max(n_all - n_c, 1) ** 2 / 9
    out.append(torch.log10((v_c + 1e-3) / (v_b + 1e-3)))
    for i, j in ((2, 1), (1, 0), (2, 0)):  # rg, gb, rb
        vi, vj = cov[:, i, i].clamp(min=0.0), cov[:, j, j].clamp(min=0.0)
        ok = (torch.sqrt(vi) >= 1e-9) & (torch.sqrt(vj) >= 1e-9)
        out.append(torch.where(ok, cov[:, i, j] / torch.sqrt(torch.where(ok, vi * vj, 1.0)),
                               torch.zeros_like(vi)))
    lum_var = cov.sum(dim=(1, 2)) / 9
    out.append(torch.log10((lum_var + 1e-6) / (gray.reshape(b, -1).var(dim=1, unbiased=False)
                                               + 1e-6)))
    return out


def extract_batch(images: list[np.ndarray], device: str = "auto") -> np.ndarray:
    """float64 (n, 52) for uint8 BGR crops of one shape (any image :func:`as_bgr8` accepts), in
    :func:`dflab.forensic.features.feature_names` order; NaN and infinities become 0, as in the NumPy
    backend."""
    import cv2
    import torch

    if not images:
        return np.zeros((0, len(F.feature_names())))
    bgr = [F.as_bgr8(im) for im in images]
    shape = bgr[0].shape[:2]
    if any(im.shape[:2] != shape for im in bgr):
        raise ValueError(f"extract_batch needs crops of one shape; got {shape} and "
                         f"{next(im.shape[:2] for im in bgr if im.shape[:2] != shape)} "
                         f"(extract_many groups them for you)")
    dev = torch_device(device)
    geo = _geometry(tuple(shape), str(dev))
    gray = torch.as_tensor(np.stack([cv2.cvtColor(im, cv2.COLOR_BGR2GRAY) for im in bgr]),
                           device=dev).to(torch.float64)
    res = np.stack([np.stack([ch.astype(np.int16) - cv2.medianBlur(ch, 3)
                              for ch in cv2.split(im)]) for im in bgr])  # (B, 3, H, W)
    res = torch.as_tensor(res, device=dev).to(torch.float64)
    with torch.no_grad():
        family = {"fft": lambda: _fft(gray, geo), "dct": lambda: _dct(gray, geo),
                  "noise": lambda: _noise(res, gray, shape)}
        cols = [c for fam in F.FEATURE_FAMILIES.list() for c in family[fam]()]
        X = torch.stack(cols, dim=1).cpu().numpy()
    return np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)
