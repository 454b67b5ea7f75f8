"""VIS stars against Gaia DR3: astrometric match, affine fit and the colour-dependent flux ratio.

VISQL's gaiaphotom (VISQL-SPEC 8.3-8.8), rebuilt to scale and to be reproducible:

* the offset search is a cross-correlation of the two binned star lists by FFT, refined on
  the pairs near its peak (VISQL: an all-pairs Python comprehension and the left edge of a
  200-bin histogram), then nearest neighbours by KD-tree, one VIS star per Gaia star;
* the affine model `[dx, dy] = coef . [1, x, y]` is fitted with VISQL's clipping
  (keep |r|^2 < 2 (2.5 sigma)^2, sigma = sqrt(sum r^2 / 2n)) until the kept set is stable;
  offsets and gradients are reported in VISQL's units and order (Gaia minus VIS, pixels,
  gradients in pixels per 0.75 deg: ddx/dx, ddy/dx, ddx/dy, ddy/dy);
* ln(VIS/Gaia) against BP-RP is a quadratic with one 3-sigma-clipped refit (VISQL 8.4) or
  four (8.11, for stacks), evaluated at BP-RP = 0.75, 1.75, 2.75.

All positions are instrument-frame degrees (VISQL's XWORLD/YWORLD, RAV/DECV).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.ndimage import uniform_filter
from scipy.signal import fftconvolve
from scipy.spatial import cKDTree

from viskom.le1.focalplane import sky_to_instrument, unwrap_longitude

PIX_PER_DEG = 36000.0  # 0.1 arcsec pixels
REF_EXPTIME_S = 89.52  # VISQL scales VIS fluxes to the short exposure
GRADIENT_BASE_DEG = 0.75  # gradients are quoted in pixels per 0.75 deg (about the field)
COLOURS = (0.75, 1.75, 2.75)  # BP-RP at which VIS/Gaia is reported
COLOUR_FIT_GMAX = 19.5  # VISQL: only G < 19.5 enter the colour fit
FIELD_HALF_WIDTH_DEG = 0.4  # VISQL keeps Gaia stars with |RAV|, |DECV| < 0.4


# ---------------------------------------------------------------------------------------------
# Fluxes
# ---------------------------------------------------------------------------------------------
def gaia_flux(g_mag: np.ndarray) -> np.ndarray:
    """VISQL's Gaia flux in VIS-like units: 10^(-0.4 (G - 30)) / 1.5."""
    return 10.0 ** (-0.4 * (np.asarray(g_mag, float) - 30.0)) / 1.5


def gaia_mag(flux: np.ndarray) -> np.ndarray:
    """Inverse of `gaia_flux`: G = 30 - 2.5 log10(1.5 F)."""
    return 30.0 - 2.5 * np.log10(1.5 * np.asarray(flux, float))


def vis_flux_scaled(flux_adu: np.ndarray, exptime_s: float, gain: np.ndarray | float = 1.0):
    """VIS flux scaled to the 89.52 s reference exposure and multiplied by the relative gain."""
    return np.asarray(flux_adu, float) * (REF_EXPTIME_S / float(exptime_s)) * gain


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


# ---------------------------------------------------------------------------------------------
# Colour relation
# ---------------------------------------------------------------------------------------------
@dataclass
class ColourFit:
    """ln(VIS/Gaia) = c0 + c1 c + c2 c^2 (c = BP-RP), as VISQL fits it."""

    c0: float
    c1: float
    c2: float
    rms: float  # of ln(VIS/Gaia) about the fit, kept stars
    n_fit: int  # stars kept
    n_total: int  # stars offered
    n_terms: int  # 3: full quadratic; 1: offset only, shape from another fit; 0: no fit
    kept: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, bool))

    def ln_ratio(self, colour: np.ndarray | float) -> np.ndarray:
        """The fitted ln(VIS/Gaia) at BP-RP `colour`."""
        c = np.asarray(colour, float)
        return self.c0 + self.c1 * c + self.c2 * c**2

    def ratio_at(self, colours: Sequence[float] = COLOURS) -> tuple[float, ...]:
        """VIS/Gaia at the given BP-RP (VISQL: 0.75, 1.75, 2.75)."""
        return tuple(float(v) for v in np.exp(self.ln_ratio(np.asarray(colours, float))))

    def as_dict(self) -> dict:
        """JSON-friendly summary including VIS/Gaia at the three colours."""
        out = {k: v for k, v in asdict(self).items() if k != "kept"}
        out["vis_over_gaia"] = list(self.ratio_at())
        return out


NO_FIT = ColourFit(math.nan, math.nan, math.nan, math.nan, 0, 0, 0)


def fit_colour_relation(
    bp_rp: np.ndarray,
    ln_ratio: np.ndarray,
    *,
    clip_sigma: float = 3.0,
    refits: int = 1,
    min_stars: int = 10,
    shape: ColourFit | None = None,
) -> ColourFit:
    """Quadratic least squares of ln(VIS/Gaia) against BP-RP with sigma clipping.

    VISQL (8.4): rms = sqrt(sum r^2 / N); keep r^2 < (3 rms)^2; refit once (`refits=1`);
    the stacked fits of 8.11 use four. Fewer than `min_stars` stars: with `shape` (e.g. the
    focal plane's fit of the same exposure) only the offset c0 is fitted, same clipping,
    with at least 3 stars; else no fit (NaN, n_terms 0).
    """
    c = np.asarray(bp_rp, float)
    v = np.asarray(ln_ratio, float)
    ok = np.isfinite(c) & np.isfinite(v)
    n_total = int(ok.sum())
    if n_total >= min_stars:
        terms, design = 3, np.column_stack([np.ones(c.size), c, c**2])
        base = np.zeros(c.size)
    elif shape is not None and shape.n_terms == 3 and n_total >= 3:
        terms, design = 1, np.ones((c.size, 1))
        base = shape.c1 * c + shape.c2 * c**2
    else:
        return ColourFit(math.nan, math.nan, math.nan, math.nan, 0, n_total, 0, ok & False)
    target = np.where(ok, v - base, 0.0)
    keep = ok.copy()
    coef = np.zeros(terms)
    rms = math.nan
    for i in range(refits + 1):
        coef = np.linalg.lstsq(design[keep], target[keep], rcond=None)[0]
        resid = np.where(ok, target - design @ coef, np.inf)
        rms = math.sqrt(float(np.sum(resid[keep] ** 2)) / keep.sum())
        if i == refits:
            break
        new = ok & (resid**2 < (clip_sigma * rms) ** 2)
        if new.sum() < max(terms, 3) or np.array_equal(new, keep):
            break
        keep = new
    if terms == 3:
        c0, c1, c2 = (float(x) for x in coef)
    else:
        c0, c1, c2 = float(coef[0]), shape.c1, shape.c2  # type: ignore[union-attr]
    return ColourFit(c0, c1, c2, rms, int(keep.sum()), n_total, terms, keep)


def frat_model(bp_rp: np.ndarray, ratios: Sequence[float]) -> np.ndarray:
    """VISQL's FRATMOD: exp of the quadratic through (0.75, ln r1), (1.75, ln r2), (2.75, ln r3).

    The Lagrange form of mapzptwithgaia.py (VISQL-SPEC 8.5), so that a residual table can be
    rebuilt from the three published ratios alone.
    """
    c = np.asarray(bp_rp, float)
    lr = np.log(np.asarray(ratios, float))
    b = COLOURS
    out = np.zeros_like(c)
    for i in range(3):
        term = np.full_like(c, lr[i])
        for j in range(3):
            if j != i:
                term = term * (c - b[j]) / (b[i] - b[j])
        out = out + term
    return np.exp(out)


# ---------------------------------------------------------------------------------------------
# Focal-plane units
# ---------------------------------------------------------------------------------------------
def block_name(ccd_row: int, ccd_column: int) -> str:
    """VISQL's 3x3 block of a CCD: column pair then row pair, e.g. CCD 3-5 (row 3) -> '5634'."""
    c0 = 2 * ((ccd_column - 1) // 2) + 1
    r0 = 2 * ((ccd_row - 1) // 2) + 1
    return f"{c0}{c0 + 1}{r0}{r0 + 1}"


def unit_members(extnames: np.ndarray) -> dict[str, np.ndarray]:
    """Row indices of each unit: 'FPA', each 3x3 block 'B1212'..., each CCD 'R-C', quadrant."""
    from viskom.le1.geometry import parse_extname

    ext = np.asarray(extnames, dtype=str)
    groups: dict[str, list[int]] = {"FPA": list(range(ext.size))}
    parsed: dict[str, tuple[str, str]] = {}
    for name in np.unique(ext):
        try:
            q = parse_extname(str(name))
        except ValueError:
            continue
        parsed[str(name)] = (
            f"{q.ccd_row}-{q.ccd_column}",
            "B" + block_name(q.ccd_row, q.ccd_column),
        )
    for i, name in enumerate(ext):
        if name not in parsed:
            continue
        ccd, block = parsed[name]
        for unit in (block, ccd, name):
            groups.setdefault(unit, []).append(i)
    return {k: np.asarray(v, np.intp) for k, v in groups.items()}


def colour_fits_by_unit(
    extnames: np.ndarray,
    bp_rp: np.ndarray,
    ln_ratio: np.ndarray,
    usable: np.ndarray,
    *,
    min_stars: int = 10,
    refits: int = 1,
) -> dict[str, ColourFit]:
    """The colour relation of the focal plane and of every block, CCD and quadrant.

    Units with fewer than `min_stars` usable stars get the focal plane's shape and their
    own offset (n_terms 1), so that every unit with >= 3 stars has a VIS/Gaia.
    """
    groups = unit_members(extnames)
    usable = np.asarray(usable, bool)
    fits: dict[str, ColourFit] = {}
    idx = groups.pop("FPA")
    sel = idx[usable[idx]]
    fpa = fit_colour_relation(bp_rp[sel], ln_ratio[sel], min_stars=min_stars, refits=refits)
    fits["FPA"] = fpa
    for unit, idx in groups.items():
        sel = idx[usable[idx]]
        fits[unit] = fit_colour_relation(
            bp_rp[sel], ln_ratio[sel], min_stars=min_stars, refits=refits, shape=fpa
        )
    return fits


def colour_metrics(fits: Mapping[str, ColourFit]) -> list[tuple[str, str, float]]:
    """Metric rows (unit, metric, value) of colour fits: VIS/Gaia at the 3 colours and terms."""
    rows: list[tuple[str, str, float]] = []
    for unit, f in fits.items():
        r = f.ratio_at()
        rows += [
            (unit, "vis_over_gaia_075", r[0]),
            (unit, "vis_over_gaia_175", r[1]),
            (unit, "vis_over_gaia_275", r[2]),
            (unit, "gaia_colour_n_stars", float(f.n_fit)),
        ]
        if unit == "FPA" or f.n_terms == 3:
            rows += [
                (unit, "gaia_colour_c0", f.c0),
                (unit, "gaia_colour_c1", f.c1),
                (unit, "gaia_colour_c2", f.c2),
                (unit, "gaia_colour_rms", f.rms),
            ]
    return rows


def gains_from_flat_levels(levels: Mapping[str, float]) -> dict[str, float]:
    """Relative gains from flat levels in ADU: mean(level) / level (VISQL's gainN)."""
    good = {k: float(v) for k, v in levels.items() if np.isfinite(v) and v > 0}
    if not good:
        return {}
    mean = float(np.mean(list(good.values())))
    return {k: mean / v for k, v in good.items()}


# ---------------------------------------------------------------------------------------------
# One exposure, end to end
# ---------------------------------------------------------------------------------------------
#: Columns of the per-star residual table (VISQL's _frat.txt, with the match kept).
STAR_COLUMNS = (
    "extname", "x_world", "y_world", "x_gaia", "y_gaia", "source_id", "flux", "exptime",
    "gain", "g_mag", "bp_rp", "vis_flux", "gaia_flux", "ln_ratio", "frat_model", "frat",
    "astrom_kept", "colour_used", "colour_kept",
)  # fmt: skip


@dataclass
class GaiaComparison:
    """One exposure against Gaia: the match, the colour fits per unit and the star table."""

    match: Match
    colour: dict[str, ColourFit]
    stars: dict[str, np.ndarray]
    n_vis: int
    n_gaia: int
    chance_matches: float = math.nan  # pairs expected by coincidence within the kept radius

    @property
    def fpa(self) -> ColourFit:
        return self.colour.get("FPA", NO_FIT)

    def is_real(self, min_matched: int = 10, nsigma: float = 5.0) -> bool:
        """The match stands out from chance: >= min_matched pairs and nsigma above chance.

        A wrong pointing (PA off, say) still pairs stars by coincidence in dense fields, and
        the affine fit can absorb some rotation; this is the test that it did not.
        """
        n = self.match.fit.n_matched
        lam = self.chance_matches if math.isfinite(self.chance_matches) else 0.0
        return n >= min_matched and n >= lam + nsigma * math.sqrt(max(lam, 1.0))

    def summary(self) -> dict:
        """VISQL's two result lines as one object (what `viskom gaia-match` prints)."""
        f = self.match.fit
        return {
            "n_matched": f.n_matched,
            "n_pairs": f.n_pairs,
            "sigma_pix": f.sigma_pix,
            "dx_pix": f.dx_pix,
            "dy_pix": f.dy_pix,
            "gradients_pix": list(f.gradients_pix),
            "gradient_order": ["ddx/dx", "ddy/dx", "ddx/dy", "ddy/dy"],
            "colours_bp_rp": list(COLOURS),
            "vis_over_gaia": list(self.fpa.ratio_at()),
            "colour_fit": {k: v for k, v in self.fpa.as_dict().items() if k != "vis_over_gaia"},
            "n_vis": self.n_vis,
            "n_gaia": self.n_gaia,
            "chance_matches": self.chance_matches,
        }

    def metrics(self) -> list[tuple[str, str, float]]:
        """Metric rows: astrometry on the FPA (and offsets per CCD/quadrant), colour per unit."""
        f = self.match.fit
        g = f.gradients_pix
        rows: list[tuple[str, str, float]] = [
            ("FPA", "n_matched", float(f.n_matched)),
            ("FPA", "n_gaia_stars", float(self.n_gaia)),
            ("FPA", "astrom_dx_pix", f.dx_pix),
            ("FPA", "astrom_dy_pix", f.dy_pix),
            ("FPA", "astrom_sigma_pix", f.sigma_pix),
            ("FPA", "astrom_ddx_dx", g[0]),
            ("FPA", "astrom_ddy_dx", g[1]),
            ("FPA", "astrom_ddx_dy", g[2]),
            ("FPA", "astrom_ddy_dy", g[3]),
        ]
        kept = self.stars["astrom_kept"]
        ddx = (self.stars["x_gaia"] - self.stars["x_world"]) * PIX_PER_DEG
        ddy = (self.stars["y_gaia"] - self.stars["y_world"]) * PIX_PER_DEG
        for unit, idx in unit_members(self.stars["extname"]).items():
            if unit == "FPA" or unit.startswith("B"):
                continue
            sel = idx[kept[idx]]
            rows.append((unit, "n_matched", float(sel.size)))
            if sel.size:
                rows.append((unit, "astrom_dx_pix", float(np.median(ddx[sel]))))
                rows.append((unit, "astrom_dy_pix", float(np.median(ddy[sel]))))
        return rows + colour_metrics(self.colour)


def compare_with_gaia(
    extname: np.ndarray,
    x_vis: np.ndarray,
    y_vis: np.ndarray,
    flux_vis: np.ndarray,
    x_gaia: np.ndarray,
    y_gaia: np.ndarray,
    g_mag: np.ndarray,
    bp_rp: np.ndarray,
    *,
    exptime: float,
    gains: Mapping[str, float] | None = None,
    source_id: np.ndarray | None = None,
    match_radius_pix: float = 20.0,
    window_deg: float = 0.4,
    colour_gmax: float = COLOUR_FIT_GMAX,
    min_stars: int = 10,
) -> GaiaComparison:
    """Match one exposure's stars to Gaia (instrument frame) and fit its colour relations.

    VIS fluxes are scaled to 89.52 s and multiplied by the quadrant's relative gain (1 for
    quadrants missing from `gains`). The colour fits use the astrometrically kept pairs with
    G < colour_gmax and a finite BP-RP: the focal plane with VISQL's one refit, then every
    3x3 block, CCD and quadrant (see `colour_fits_by_unit`).
    """
    ext = np.asarray(extname).astype(str)
    gain = np.array([(gains or {}).get(e, 1.0) for e in ext], float)
    fv = vis_flux_scaled(flux_vis, exptime, gain)
    g = np.asarray(g_mag, float)
    fg = gaia_flux(g)
    match = match_to_gaia(
        x_vis, y_vis, x_gaia, y_gaia, flux_vis=fv, flux_gaia=fg,
        window_deg=window_deg, match_radius_pix=match_radius_pix,
    )  # fmt: skip
    iv, ig = match.i_vis, match.i_gaia
    colour = np.asarray(bp_rp, float)[ig]
    with np.errstate(divide="ignore", invalid="ignore"):
        ln_ratio = np.log(fv[iv] / fg[ig])
    usable = match.kept & (g[ig] < colour_gmax) & np.isfinite(colour) & np.isfinite(ln_ratio)
    fits = colour_fits_by_unit(ext[iv], colour, ln_ratio, usable, min_stars=min_stars)
    fpa = fits["FPA"]
    colour_kept = np.zeros(iv.size, bool)
    colour_kept[np.flatnonzero(usable)] = fpa.kept if fpa.kept.size else False
    model = np.exp(fpa.ln_ratio(colour))
    sid = np.full(iv.size, -1, np.int64) if source_id is None else np.asarray(source_id)[ig]
    stars = {
        "extname": ext[iv],
        "x_world": np.asarray(x_vis, float)[iv],
        "y_world": np.asarray(y_vis, float)[iv],
        "x_gaia": np.asarray(x_gaia, float)[ig],
        "y_gaia": np.asarray(y_gaia, float)[ig],
        "source_id": sid.astype(np.int64),
        "flux": np.asarray(flux_vis, float)[iv],
        "exptime": np.full(iv.size, float(exptime)),
        "gain": gain[iv],
        "g_mag": g[ig],
        "bp_rp": colour,
        "vis_flux": fv[iv],
        "gaia_flux": fg[ig],
        "ln_ratio": ln_ratio,
        "frat_model": model,
        "frat": np.exp(ln_ratio) / model,
        "astrom_kept": match.kept.copy(),
        "colour_used": usable,
        "colour_kept": colour_kept,
    }
    # coincidences expected within the radius the clipped fit keeps (3.54 sigma, VISQL's cut)
    xg, yg = np.asarray(x_gaia, float), np.asarray(y_gaia, float)
    radius = min(match_radius_pix, 3.54 * match.fit.sigma_pix) / PIX_PER_DEG
    area = (np.ptp(xg) * np.ptp(yg)) if xg.size > 1 else math.nan
    n_vis = len(np.asarray(x_vis))
    chance = n_vis * xg.size / area * math.pi * radius**2 if area and area > 0 else math.nan
    return GaiaComparison(match, fits, stars, n_vis=n_vis, n_gaia=g.size, chance_matches=chance)


# ---------------------------------------------------------------------------------------------
# Aperture correction: FLUX_AUTO to total flux
# ---------------------------------------------------------------------------------------------
def aperture_flux_ratios(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    flux_auto: np.ndarray,
    background: np.ndarray | float,
    *,
    radius_px: float = 20.0,
    region: tuple[int, int, int, int] | None = None,
    subtract: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Flux in a large circular aperture over FLUX_AUTO, per star (NaN where not measurable).

    FLUX_AUTO's Kron aperture misses the PSF wings (about 2% for VIS), which biases a zero
    point; the median of this ratio over bright isolated stars is the aperture correction.
    `image` is bias-subtracted; `background` the local sky per star (ADU); x, y 0-based array
    pixels; `region` (row0, row1, col0, col1) the image area: apertures must lie inside it;
    `subtract` the flux of other sources inside each aperture (see `neighbour_flux`).
    """
    import sep

    x = np.asarray(x, float)
    y = np.asarray(y, float)
    out = np.full(x.size, np.nan)
    if x.size == 0:
        return out
    r0, r1, c0, c1 = region if region is not None else (0, image.shape[0], 0, image.shape[1])
    inside = (
        (x - radius_px >= c0) & (x + radius_px <= c1 - 1)
        & (y - radius_px >= r0) & (y + radius_px <= r1 - 1)
    )  # fmt: skip
    if not inside.any():
        return out
    data = np.ascontiguousarray(image, dtype=np.float64)
    flux, _err, _flag = sep.sum_circle(data, x[inside], y[inside], radius_px, subpix=5)
    bkg = np.broadcast_to(np.asarray(background, float), x.shape)[inside]
    others = np.broadcast_to(np.asarray(subtract, float), x.shape)[inside]
    total = flux - bkg * math.pi * radius_px**2 - others
    with np.errstate(divide="ignore", invalid="ignore"):
        out[inside] = total / np.asarray(flux_auto, float)[inside]
    return out


def neighbour_flux(
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    x_all: np.ndarray,
    y_all: np.ndarray,
    flux_all: np.ndarray,
    radius: float,
    *,
    edge: float = 5.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Other sources' flux inside an aperture, and the fraction straddling its edge.

    Returns (inside, edge_fraction) per source: the summed `flux_all` of other sources whose
    centres are within radius - edge (to subtract from the aperture sum), and the summed
    flux of those within radius +- edge over the source's own flux (partly inside: an
    aperture with much of it is not usable).
    """
    n = len(x)
    inside = np.zeros(n)
    straddle = np.zeros(n)
    if n == 0:
        return inside, straddle
    tree = cKDTree(np.column_stack([x_all, y_all]))
    f_all = np.nan_to_num(np.asarray(flux_all, float), nan=0.0).clip(min=0.0)
    for i, near in enumerate(tree.query_ball_point(np.column_stack([x, y]), r=radius + edge)):
        near = np.asarray(near, np.intp)
        d = np.hypot(x_all[near] - x[i], y_all[near] - y[i])
        other = d > 1e-3
        inside[i] = f_all[near][other & (d < radius - edge)].sum()
        straddle[i] = f_all[near][other & (d >= radius - edge)].sum() / float(flux[i])
    return inside, straddle


def aperture_correction_estimate(
    ratios: np.ndarray, *, plausible: tuple[float, float] = (0.8, 1.25), clip: float = 4.0
) -> tuple[float, float, int]:
    """Robust aperture correction from per-star ratios: (median, its error, stars used).

    Ratios outside the plausible range (blends, bad neighbour subtraction) are dropped, then
    the rest is clipped at `clip` robust sigma (1.4826 MAD) until stable; the error is that
    of a median, 1.2533 sigma / sqrt(n). NaN with fewer than 3 stars.
    """
    v = np.asarray(ratios, float)
    v = v[np.isfinite(v) & (v > plausible[0]) & (v < plausible[1])]
    for _ in range(5):
        if v.size < 3:
            return math.nan, math.nan, int(v.size)
        med = float(np.median(v))
        sigma = 1.4826 * float(np.median(np.abs(v - med)))
        keep = np.abs(v - med) <= clip * max(sigma, 1e-4)
        if keep.all():
            break
        v = v[keep]
    if v.size < 3:
        return math.nan, math.nan, int(v.size)
    med = float(np.median(v))
    sigma = 1.4826 * float(np.median(np.abs(v - med)))
    return med, 1.2533 * sigma / math.sqrt(v.size), int(v.size)
