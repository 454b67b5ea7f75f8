"""VIS stars against Gaia DR3: Gaia in the instrument frame, the offset search, the match, the fit.

VISQL's matchcat2gaiaVIS (VISQL-SPEC 8.3-8.4), rebuilt to scale and to be reproducible:

* the offset search is a cross-correlation of the two binned star lists by FFT, refined on
  the pairs near its peak (VISQL: an all-pairs Python comprehension and the left edge of a
  200-bin histogram), then nearest neighbours by KD-tree, one VIS star per Gaia star;
* the affine model `[dx, dy] = coef . [1, x, y]` is fitted with VISQL's clipping
  (keep |r|^2 < 2 (2.5 sigma)^2, sigma = sqrt(sum r^2 / 2n)) until the kept set is stable;
  offsets and gradients are reported in VISQL's units and order (Gaia minus VIS, pixels,
  gradients in pixels per 0.75 deg: ddx/dx, ddy/dx, ddx/dy, ddy/dy).

All positions are instrument-frame degrees (VISQL's XWORLD/YWORLD, RAV/DECV).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scipy.spatial import cKDTree

from viskom.le1.focalplane import sky_to_instrument, unwrap_longitude

PIX_PER_DEG = 36000.0  # 0.1 arcsec pixels
GRADIENT_BASE_DEG = 0.75  # gradients are quoted in pixels per 0.75 deg (about the field)
FIELD_HALF_WIDTH_DEG = 0.4  # VISQL keeps Gaia stars with |RAV|, |DECV| < 0.4


# ---------------------------------------------------------------------------------------------
# Gaia into the instrument frame
# ---------------------------------------------------------------------------------------------
def gaia_instrument_frame(
    ra_deg: np.ndarray,
    dec_deg: np.ndarray,
    g_mag: np.ndarray,
    e_fg: np.ndarray,
    fg: np.ndarray,
    bp_rp: np.ndarray,
    pointing: tuple[float, float, float],
    *,
    half_width_deg: float = FIELD_HALF_WIDTH_DEG,
    g_max: float = 21.0,
    g_err_max: float = 0.02,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaia stars (at the exposure epoch) in the VIS instrument frame, with VISQL's cuts.

    Returns (x_deg, y_deg, keep): the frame positions of every input row (rotation and
    VISQL's empirical distortion, VISQL-SPEC 8.3) and the mask of rows VISQL keeps:
    |x|, |y| < half_width, G < g_max, Gerr = 1.086 e_FG / FG < g_err_max, BP-RP finite.
    """
    ra0, dec0, pa = pointing
    x, y = sky_to_instrument(ra_deg, dec_deg, ra0, dec0, pa, distortion=True)
    x = unwrap_longitude(x)
    g = np.asarray(g_mag, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        g_err = 1.086 * np.asarray(e_fg, float) / np.asarray(fg, float)
    keep = (
        (np.abs(x) < half_width_deg)
        & (np.abs(y) < half_width_deg)
        & (g < g_max)
        & (g_err < g_err_max)
        & np.isfinite(np.asarray(bp_rp, float))
    )
    return x, y, keep


# ---------------------------------------------------------------------------------------------
# Offset search and matching
# ---------------------------------------------------------------------------------------------
def trim_flux_ranges(
    flux_vis: np.ndarray, flux_gaia: np.ndarray, *, ratio: float = 20.0
) -> tuple[np.ndarray, np.ndarray]:
    """VISQL's flux trimming: keep each list within [min/ratio, max*ratio] of the other's range.

    Masks (vis, gaia). Gaia stars far fainter or brighter than anything VIS measured cannot
    match and only add background to the offset search.
    """
    fv = np.asarray(flux_vis, float)
    fg = np.asarray(flux_gaia, float)
    ok_v, ok_g = np.isfinite(fv) & (fv > 0), np.isfinite(fg) & (fg > 0)
    if not ok_v.any() or not ok_g.any():
        return ok_v, ok_g
    keep_g = ok_g & (fg > fv[ok_v].min() / ratio) & (fg < fv[ok_v].max() * ratio)
    keep_v = ok_v & (fv > fg[ok_g].min() / ratio) & (fv < fg[ok_g].max() * ratio)
    return keep_v, keep_g


def find_offset(
    x_vis: np.ndarray,
    y_vis: np.ndarray,
    x_gaia: np.ndarray,
    y_gaia: np.ndarray,
    *,
    window_deg: float = 0.4,
    first_window_deg: float = 0.02,
    bin_deg: float = 0.002,
    fine_bin_deg: float = 3.0 / PIX_PER_DEG,
    refine_to_deg: float = 2.0 / PIX_PER_DEG,
) -> tuple[float, float, int]:
    """The shift (Gaia minus VIS) that lines the two star lists up; (dx_deg, dy_deg, n_peak).

    VISQL histograms all pair separations; here only the pairs that can matter are formed.
    Header pointings are good to arcseconds, so first the pairs within `first_window_deg`
    (KD-tree) are histogrammed at `fine_bin_deg`; the peak is accepted when its pairs stand
    out from chance coincidences (at least 5, and 5 sigma above the Poisson expectation).
    Otherwise both lists are binned at `bin_deg` and cross-correlated by FFT over the whole
    `window_deg` (the correlation at lag d counts the pairs separated by d, at O(N log N)),
    and the fine histogram is repeated around that peak. The offset is the median separation
    of the pairs within `refine_to_deg` of the peak; n_peak is their number.
    """
    xv, yv = np.asarray(x_vis, float), np.asarray(y_vis, float)
    xg, yg = np.asarray(x_gaia, float), np.asarray(y_gaia, float)
    if xv.size == 0 or xg.size == 0:
        return math.nan, math.nan, 0
    from scipy.spatial import cKDTree  # lazily: start-up time of the CLI

    tree = cKDTree(np.column_stack([xg, yg]))
    first = min(first_window_deg, window_deg)
    dx, dy, n, chance = _pair_peak(tree, xv, yv, xg, yg, 0.0, 0.0, first, fine_bin_deg,
                                   refine_to_deg)  # fmt: skip
    if n >= max(5.0, chance + 5.0 * math.sqrt(chance)) or first >= window_deg:
        return dx, dy, n
    cx, cy = _correlation_peak(xv, yv, xg, yg, window_deg, bin_deg)
    dx2, dy2, n2, _ = _pair_peak(tree, xv, yv, xg, yg, cx, cy, 3.0 * bin_deg, fine_bin_deg,
                                 refine_to_deg)  # fmt: skip
    return (dx2, dy2, n2) if n2 > n else (dx, dy, n)


def _pair_peak(
    tree: cKDTree, xv, yv, xg, yg, cx: float, cy: float, radius: float, fine_bin: float,
    refine_to: float,
) -> tuple[float, float, int, float]:  # fmt: skip
    """Peak of the Gaia-minus-VIS separations within `radius` of (cx, cy): dx, dy, n, chance.

    chance is the number of pairs expected within `refine_to` of any point by coincidence.
    """
    pairs = tree.query_ball_point(np.column_stack([xv + cx, yv + cy]), r=radius)
    iv = np.repeat(np.arange(xv.size), [len(p) for p in pairs])
    ig = np.fromiter((j for p in pairs for j in p), dtype=np.intp, count=iv.size)
    if iv.size == 0:
        return math.nan, math.nan, 0, 0.0
    ddx, ddy = xg[ig] - xv[iv], yg[ig] - yv[iv]
    nb = max(int(2 * radius / fine_bin), 1)
    h, ye, xe = np.histogram2d(
        ddy, ddx, bins=nb, range=((cy - radius, cy + radius), (cx - radius, cx + radius))
    )
    from scipy.ndimage import uniform_filter  # lazily: scipy.signal and ndimage are slow

    h = uniform_filter(h, size=5, mode="constant")  # unmodelled distortion spreads the peak
    iy, ix = np.unravel_index(np.argmax(h), h.shape)
    dx, dy = 0.5 * (xe[ix] + xe[ix + 1]), 0.5 * (ye[iy] + ye[iy + 1])
    chance = iv.size * (refine_to / radius) ** 2
    r = 4.0 * fine_bin
    n = 0
    while True:
        near = (ddx - dx) ** 2 + (ddy - dy) ** 2 <= r**2
        n = int(near.sum())
        if n == 0:
            return dx, dy, 0, chance
        dx, dy = float(np.median(ddx[near])), float(np.median(ddy[near]))
        if r <= refine_to:
            break
        r = max(r / 2.0, refine_to)
    n = int(((ddx - dx) ** 2 + (ddy - dy) ** 2 <= refine_to**2).sum())
    return dx, dy, n, chance


def _correlation_peak(xv, yv, xg, yg, window: float, bin_deg: float) -> tuple[float, float]:
    """Lag (Gaia minus VIS) of the peak of the FFT cross-correlation of the binned lists."""
    lo_x = min(xv.min(), xg.min())
    lo_y = min(yv.min(), yg.min())
    nx = int((max(xv.max(), xg.max()) - lo_x) / bin_deg) + 2
    ny = int((max(yv.max(), yg.max()) - lo_y) / bin_deg) + 2

    def grid(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        h = np.zeros((ny, nx))
        np.add.at(h, (((y - lo_y) / bin_deg).astype(int), ((x - lo_x) / bin_deg).astype(int)), 1)
        return h

    from scipy.ndimage import uniform_filter
    from scipy.signal import fftconvolve  # lazily: `viskom status` plans without it

    corr = fftconvolve(grid(xg, yg), grid(xv, yv)[::-1, ::-1], mode="full")
    corr = uniform_filter(corr, size=3, mode="constant")  # a peak spreads over +-1 bin
    lag_y = (np.arange(corr.shape[0]) - (ny - 1)) * bin_deg
    lag_x = (np.arange(corr.shape[1]) - (nx - 1)) * bin_deg
    corr[lag_y[:, None] ** 2 + lag_x[None, :] ** 2 > window**2] = -np.inf
    iy, ix = np.unravel_index(np.argmax(corr), corr.shape)
    return float(lag_x[ix]), float(lag_y[iy])


def match_nearest(
    x_vis: np.ndarray,
    y_vis: np.ndarray,
    x_gaia: np.ndarray,
    y_gaia: np.ndarray,
    *,
    max_sep_deg: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest Gaia star of each VIS star within max_sep, one VIS star per Gaia star.

    Returns index arrays (i_vis, i_gaia) of the pairs; where several VIS stars pick the
    same Gaia star (VISQL allows it), only the closest is kept.
    """
    if len(x_vis) == 0 or len(x_gaia) == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    from scipy.spatial import cKDTree

    tree = cKDTree(np.column_stack([x_gaia, y_gaia]))
    dist, ig = tree.query(np.column_stack([x_vis, y_vis]), k=1, distance_upper_bound=max_sep_deg)
    iv = np.flatnonzero(np.isfinite(dist))
    ig, dist = ig[iv], dist[iv]
    order = np.lexsort((dist, ig))  # by Gaia star, closest first
    first = np.ones(order.size, bool)
    first[1:] = ig[order][1:] != ig[order][:-1]
    keep = np.sort(order[first])
    return iv[keep], ig[keep]


# ---------------------------------------------------------------------------------------------
# Affine astrometric fit
# ---------------------------------------------------------------------------------------------
@dataclass
class AstrometricFit:
    """VISQL's affine match of one exposure: offsets, gradients, residual sigma (pixels)."""

    n_matched: int  # pairs kept in the final fit (VISQL's "keep")
    n_pairs: int  # pairs matched before clipping
    sigma_pix: float  # sqrt(sum r^2 / 2 n), per axis
    dx_pix: float  # Gaia minus VIS at the frame origin
    dy_pix: float
    gradients_pix: tuple[float, float, float, float]  # ddx/dx, ddy/dx, ddx/dy, ddy/dy per 0.75 deg
    coef: np.ndarray = field(repr=False)  # (3, 2) in degrees: rows 1, x, y; columns dx, dy
    kept: np.ndarray = field(repr=False)  # mask over the pairs
    iterations: int = 0

    def model(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The fitted (dx, dy) in degrees at VIS positions (x, y)."""
        a = np.column_stack([np.ones(len(x)), x, y])
        d = a @ self.coef
        return d[:, 0], d[:, 1]

    def as_dict(self) -> dict:
        """JSON-friendly summary (no arrays)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("coef", "kept")}
        out["gradients_pix"] = list(self.gradients_pix)
        return out


def fit_affine(
    x: np.ndarray,
    y: np.ndarray,
    dx: np.ndarray,
    dy: np.ndarray,
    *,
    clip_sigma: float = 2.5,
    max_iterations: int = 25,
) -> AstrometricFit:
    """Iteratively clipped least squares of [dx, dy] = coef . [1, x, y] (degrees in).

    VISQL's clipping: sigma = sqrt(sum |r|^2 / (2 n_kept)); keep |r|^2 < 2 (clip sigma)^2;
    up to 25 iterations (stops early once the kept set no longer changes).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    d = np.column_stack([np.asarray(dx, float), np.asarray(dy, float)])
    a = np.column_stack([np.ones(x.size), x, y])
    keep = np.isfinite(d).all(axis=1)
    nan = math.nan
    coef = np.full((3, 2), nan)
    sig = nan
    it = 0
    for it in range(1, max_iterations + 1):  # noqa: B007 - the count is reported
        if keep.sum() < 3:
            break
        coef = np.linalg.lstsq(a[keep], d[keep], rcond=None)[0]
        r2 = ((d - a @ coef) ** 2).sum(axis=1)
        sig = math.sqrt(r2[keep].sum() / keep.sum() / 2.0)
        new = np.isfinite(r2) & (r2 < 2.0 * (clip_sigma * sig) ** 2)
        if np.array_equal(new, keep):
            break
        keep = new
    grads = coef[1:].flatten() * PIX_PER_DEG * GRADIENT_BASE_DEG
    return AstrometricFit(
        n_matched=int(keep.sum()) if np.isfinite(sig) else 0,
        n_pairs=int(x.size),
        sigma_pix=sig * PIX_PER_DEG,
        dx_pix=float(coef[0, 0] * PIX_PER_DEG),
        dy_pix=float(coef[0, 1] * PIX_PER_DEG),
        gradients_pix=tuple(float(g) for g in grads),  # type: ignore[arg-type]
        coef=coef,
        kept=keep,
        iterations=it,
    )


@dataclass
class Match:
    """One exposure's VIS-Gaia pairs and their astrometric fit."""

    i_vis: np.ndarray  # indices into the VIS star list
    i_gaia: np.ndarray  # indices into the Gaia list
    fit: AstrometricFit
    search_dx_deg: float  # the offset search's answer, before the fit
    search_dy_deg: float

    @property
    def kept(self) -> np.ndarray:
        """Mask over the pairs: kept by the affine fit."""
        return self.fit.kept


def match_to_gaia(
    x_vis: np.ndarray,
    y_vis: np.ndarray,
    x_gaia: np.ndarray,
    y_gaia: np.ndarray,
    *,
    flux_vis: np.ndarray | None = None,
    flux_gaia: np.ndarray | None = None,
    window_deg: float = 0.4,
    match_radius_pix: float = 20.0,
) -> Match:
    """Offset search, nearest-neighbour match and clipped affine fit (VISQL-SPEC 8.4).

    With fluxes, the offset search uses VISQL's flux trimming first. The match is done
    twice: after the offset search, then after the first affine fit (so that field
    gradients do not push edge stars out of `match_radius_pix`).
    """
    xv, yv = np.asarray(x_vis, float), np.asarray(y_vis, float)
    xg, yg = np.asarray(x_gaia, float), np.asarray(y_gaia, float)
    sv, sg = np.ones(xv.size, bool), np.ones(xg.size, bool)
    if flux_vis is not None and flux_gaia is not None:
        sv, sg = trim_flux_ranges(flux_vis, flux_gaia)
    sdx, sdy, _ = find_offset(xv[sv], yv[sv], xg[sg], yg[sg], window_deg=window_deg)
    radius = match_radius_pix / PIX_PER_DEG
    if not np.isfinite(sdx):
        empty = np.zeros(0, np.intp)
        return Match(empty, empty, fit_affine(empty, empty, empty, empty), sdx, sdy)
    iv, ig = match_nearest(xv + sdx, yv + sdy, xg, yg, max_sep_deg=radius)
    fit = fit_affine(xv[iv], yv[iv], xg[ig] - xv[iv], yg[ig] - yv[iv])
    if fit.n_matched >= 3:
        mdx, mdy = fit.model(xv, yv)
        iv, ig = match_nearest(xv + mdx, yv + mdy, xg, yg, max_sep_deg=radius)
        fit = fit_affine(xv[iv], yv[iv], xg[ig] - xv[iv], yg[ig] - yv[iv])
    return Match(iv, ig, fit, sdx, sdy)
