"""Star and galaxy stamps of one quadrant: mean electrons per pixel, as sparse (index, value).

Stars are the Moffat PSF of `psf.render_psf` (with its truth moments), galaxies Sersic profiles
(3 x 3 sub-sampled within 3 px of the centre) convolved with a Gaussian of the local PSF's
FWHM. Stamp sizes come from a few fixed radii, chosen per object from its brightness and size;
stamp pixels below 1e-3 e- are dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.special import erf

from viskom.sources.simulator.psf import moffat_fwhm, render_psf, weighted_moments

if TYPE_CHECKING:
    from viskom.sources.simulator.quadrant import QuadrantTask

_STAR_RADII = (15, 24, 32, 48, 64, 96, 128)
_GALAXY_RADII = (8, 12, 16, 24, 32, 48)
STAMP_MARGIN_PX = 128  # objects this far outside the image area still spill light into it
_GAL_SUB = 3


def _bucket(values: np.ndarray, radii: tuple[int, ...]) -> np.ndarray:
    idx = np.searchsorted(np.asarray(radii), values, side="left")
    return np.asarray(radii)[np.minimum(idx, len(radii) - 1)]


def _stamp_indices(cx, cy, radius, width, height):
    i = np.arange(-radius, radius + 1)
    gx = np.broadcast_to(cx[:, None, None] + i[None, None, :], (cx.size, i.size, i.size))
    gy = np.broadcast_to(cy[:, None, None] + i[None, :, None], (cx.size, i.size, i.size))
    valid = (gx >= 0) & (gx < width) & (gy >= 0) & (gy < height)
    return (gy * width + gx)[valid], valid


def render_stars(
    task: QuadrantTask,
    width: int,
    height: int,
    col0: int,
    row0: int,
    idx_parts: list[np.ndarray],
    w_parts: list[np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add star stamps (e-) to the sparse lists `idx_parts`/`w_parts`; return per-star truth
    moments (r2, e1, e2; NaN for stars outside the image area)."""
    st = task.stars
    m = task.model
    n = st["x"].size
    r2 = np.full(n, np.nan)
    e1 = np.full(n, np.nan)
    e2 = np.full(n, np.nan)
    if n == 0:
        return r2, e1, e2
    beta = task.psf_beta
    xi = st["x"] - col0
    yi = st["y"] - row0
    flux_e = st["flux_adu"] * m.gain_e_per_adu
    alpha = st["alpha"]
    peak = np.maximum(flux_e, 1.0) * (beta - 1.0) / (np.pi * alpha**2)
    need = np.ceil(alpha * (peak / 0.5) ** (1.0 / (2.0 * beta)))
    radius = _bucket(need, _STAR_RADII)
    inside = st["inside"]
    reach = (
        (xi + radius >= -0.5) & (xi - radius <= width - 0.5)
        & (yi + radius >= -0.5) & (yi - radius <= height - 0.5)
    )  # fmt: skip
    for R in np.unique(radius[reach]):
        sel = np.flatnonzero((radius == R) & reach)
        S = 2 * int(R) + 1
        chunk = max(1, 1_500_000 // (S * S))
        for c0 in range(0, sel.size, chunk):
            j = sel[c0 : c0 + chunk]
            cx = np.rint(xi[j]).astype(np.int64)
            cy = np.rint(yi[j]).astype(np.int64)
            stamps = render_psf(
                xi[j] - cx, yi[j] - cy, alpha[j], st["g1"][j], st["g2"][j], beta, int(R)
            )
            ins = inside[j]
            if ins.any():
                mr2, me1, me2, _, _ = weighted_moments(stamps[ins])
                r2[j[ins]] = mr2
                e1[j[ins]] = me1
                e2[j[ins]] = me2
            stamps *= flux_e[j, None, None]
            flat, valid = _stamp_indices(cx, cy, int(R), width, height)
            _append_significant(idx_parts, w_parts, flat, stamps[valid])
    return r2, e1, e2


def _append_significant(idx_parts, w_parts, flat, weights, floor_e: float = 1e-3) -> None:
    """Keep stamp pixels with a mean above floor_e electrons (the rest is < 0.1 % of a photon)."""
    keep = weights > floor_e
    idx_parts.append(flat[keep])
    w_parts.append(weights[keep])


def _convolve_separable(stamps: np.ndarray, kernel1d: np.ndarray) -> np.ndarray:
    """'Same'-size convolution of (n, S, S) stamps with a symmetric separable kernel."""
    half = kernel1d.size // 2
    S = stamps.shape[-1]
    pad = np.pad(stamps, ((0, 0), (0, 0), (half, half)))
    tmp = np.zeros_like(stamps)
    for k, c in enumerate(kernel1d):
        tmp += c * pad[:, :, k : k + S]
    pad = np.pad(tmp, ((0, 0), (half, half), (0, 0)))
    out = np.zeros_like(stamps)
    for k, c in enumerate(kernel1d):
        out += c * pad[:, k : k + S, :]
    return out


def _sersic_bn(n: np.ndarray) -> np.ndarray:
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n * n)


def _sersic_stamps(dx, dy, re, sn, q, theta_deg, radius):
    """Unnormalised Sersic stamps (n, S, S): pixel centres, 3 x 3 sub-samples within 3 px."""
    th = np.radians(theta_deg)[:, None, None]
    ct, stt = np.cos(th), np.sin(th)
    qq = q[:, None, None]
    inv_re = 1.0 / re[:, None, None]
    nn = sn[:, None, None]
    bn = _sersic_bn(nn)

    def prof(X, Y):
        xp = X * ct + Y * stt
        yp = -X * stt + Y * ct
        r = np.sqrt(qq * xp * xp + yp * yp / qq) * inv_re
        return np.exp(-bn * r ** (1.0 / nn))

    i = np.arange(-radius, radius + 1, dtype=np.float64)
    out = prof(i[None, None, :] - dx[:, None, None], i[None, :, None] - dy[:, None, None])
    core = min(3, radius)
    off = (np.arange(_GAL_SUB) + 0.5) / _GAL_SUB - 0.5
    c = (np.arange(-core, core + 1)[:, None] + off[None, :]).ravel()
    m = 2 * core + 1
    sub = prof(c[None, None, :] - dx[:, None, None], c[None, :, None] - dy[:, None, None])
    sub = sub.reshape(dx.size, m, _GAL_SUB, m, _GAL_SUB).mean(axis=(2, 4))
    out[:, radius - core : radius + core + 1, radius - core : radius + core + 1] = sub
    return out


def render_galaxies(
    task: QuadrantTask,
    width: int,
    height: int,
    col0: int,
    row0: int,
    idx_parts: list[np.ndarray],
    w_parts: list[np.ndarray],
) -> None:
    """Add galaxy stamps (e-, PSF-convolved) to the sparse lists `idx_parts`/`w_parts`."""
    gal = task.galaxies
    m = task.model
    n = gal["x"].size
    if n == 0:
        return
    # PSF convolution: a Gaussian with the FWHM of the local Moffat PSF (galaxies are
    # 1-20 px wide, so the PSF wings matter little for them).
    alpha_c = task.psf_at_centre[0]
    sigma = moffat_fwhm(alpha_c, task.psf_beta) / 2.3548
    taps = np.arange(-3, 4, dtype=np.float64)
    kernel1d = np.diff(0.5 * erf((np.append(taps, 4.0) - 0.5) / (np.sqrt(2.0) * sigma)))
    kernel1d /= kernel1d.sum()
    xi = gal["x"] - col0
    yi = gal["y"] - row0
    flux_e = gal["flux_adu"] * m.gain_e_per_adu
    re = gal["re_px"]
    sn = gal["sersic_n"]
    need = np.ceil(re * (2.5 + sn)) + 3.0
    radius = _bucket(need, _GALAXY_RADII)
    # Skip galaxies whose stamp cannot reach the image area.
    reach = (
        (xi + radius >= -0.5) & (xi - radius <= width - 0.5)
        & (yi + radius >= -0.5) & (yi - radius <= height - 0.5)
    )  # fmt: skip
    for R in np.unique(radius[reach]):
        sel = np.flatnonzero((radius == R) & reach)
        S = 2 * int(R) + 1
        chunk = max(1, 1_000_000 // (S * S))
        for c0 in range(0, sel.size, chunk):
            j = sel[c0 : c0 + chunk]
            cx = np.rint(xi[j]).astype(np.int64)
            cy = np.rint(yi[j]).astype(np.int64)
            prof = _sersic_stamps(
                xi[j] - cx, yi[j] - cy, re[j], sn[j], gal["axis_ratio"][j],
                gal["theta_deg"][j], int(R),
            )  # fmt: skip
            prof *= (flux_e[j] / prof.sum(axis=(1, 2)))[:, None, None]
            prof = _convolve_separable(prof, kernel1d)
            flat, valid = _stamp_indices(cx, cy, int(R), width, height)
            _append_significant(idx_parts, w_parts, flat, prof[valid])
