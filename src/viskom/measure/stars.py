"""Star selection: the stellar locus of a source catalogue, found from the data, and the stars.

Stars are the one population whose half-light radius (FLUX_RADIUS) does not depend on their
flux: in the FLUX_RADIUS r vs FLUX_AUTO f plane they stand as a vertical "chimney" at the
PSF's radius (VISQL-SPEC 5.2), while galaxies spread to larger radii and particle hits to
smaller ones. Particle hits carry a limited charge, so above a signal-to-noise ratio of ~100
they are rare, and stars dominate there at any density.

`find_stellar_locus` (the default) measures the locus on the frame itself: the densest window
in log r among sources with S/N >= min_snr (no absolute size or flux constant), accepted when
it stands out of its flanks by several Poisson sigma; its centre and width come from the
sources in it (median and robust scatter, clipped), and so do the shape limits that keep
particle hits out (roundness b/a and peak-to-flux ratio: nothing on the sky is sharper than
the PSF). `select_stars` applies them. It works for any PSF width, exposure time and star
density, with or without saturated stars.

VISQL's own algorithm is kept as `find_visql_chimney` / `select_visql_box` (a count of sources
with B_IMAGE > bmin in the region

    smoke: fc (r/rc)^2 / (1+fwidth) < f < fc (r/rc)^2 (1+fwidth),  f < fc (r/rc)^4,
           r > rc / (1+rwidth)
    stack: rc / (1+rwidth) < r < rc (1+rwidth),  f > 1e5 rc^2 / 1.1^2,  f < fc (r/rc)^4

on the grid rc in logspace(0, 1, 20), fc in logspace(0, 0.5, 8) * 3e5 rc^2, best count wins;
box rmin = rc/1.15, rmax = 1.15 rc, fmax = fc/2, fmin = fmax/10, radius box twice re-centred
on the median radius rmed in it: rmin = rmed/1.1, rmax = 1.1 rmed). Its flux constants assume
saturated stars in a 560 s exposure and its bmin the real PSF: it is the reference for what
it finds when it works, and finds nothing on sparse fields, short exposures or other PSFs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from viskom.measure.robust import mad_sigma

SEXTRACTOR_SATURATED = 4  # SExtractor FLAGS bit: at least one pixel saturated (or near it)

_CHUNK = 16384  # sources per broadcast block in the grid search: bounds memory at ~20 MB


@dataclass(frozen=True)
class LocusResult:
    """The stellar locus and the star box derived from it (NaN numbers when not found).

    method "adaptive" (`find_stellar_locus`) or "visql" (`find_visql_chimney`). For the
    adaptive locus: rc is the locus's median radius, sigma_ln_r its robust scatter in ln r,
    rmin..rmax the accepted radii, fmin the faintest flux of the S/N limit `snr_min`,
    roundness_min (b/a) and peak_fraction_max (peak/flux) the shape limits measured on it;
    best_count and background the window counts at the peak and in its flanks.
    """

    found: bool
    reason: str
    rc: float = float("nan")
    fc: float = float("nan")
    rmin: float = float("nan")
    rmax: float = float("nan")
    fmin: float = float("nan")
    fmax: float = float("nan")
    n_in_box: int = 0
    best_count: int = 0
    bmin: float = 1.3
    method: str = "visql"
    snr_min: float = float("nan")
    sigma_ln_r: float = float("nan")
    background: float = float("nan")
    roundness_min: float = float("nan")
    peak_fraction_max: float = float("nan")


def chimney_counts(
    r: np.ndarray,
    f: np.ndarray,
    rc: np.ndarray,
    fc: np.ndarray,
    *,
    rwidth: float = 0.1,
    fwidth: float = 0.15,
    stack_flux: float = 1e5,
) -> np.ndarray:
    """Number of sources in VISQL's chimney region for each (rc, fc) grid point.

    rc has shape (m,), fc shape (m, k); returns (m, k) integer counts. Broadcast over sources
    in blocks so memory stays bounded for catalogues of millions of detections.
    """
    rc = np.asarray(rc, dtype=float)
    fc = np.asarray(fc, dtype=float)
    counts = np.zeros(fc.shape, dtype=np.int64)
    rc3 = rc[:, None, None]
    fc3 = fc[:, :, None]
    r_lo = rc3 / (1.0 + rwidth)
    r_hi = rc3 * (1.0 + rwidth)
    f_stack = stack_flux * rc3 * rc3 / 1.1**2
    for start in range(0, r.size, _CHUNK):
        rr = r[None, None, start : start + _CHUNK]
        ff = f[None, None, start : start + _CHUNK]
        u2 = (rr / rc3) ** 2
        line = u2 * fc3
        below_quartic = ff < u2 * line  # f < fc (r/rc)^4
        smoke = (ff < line * (1.0 + fwidth)) & (ff > line / (1.0 + fwidth))
        stack = (rr < r_hi) & (ff > f_stack)
        inside = below_quartic & (rr > r_lo) & (smoke | stack)
        counts += inside.sum(axis=2)
    return counts


def find_visql_chimney(
    flux_radius: np.ndarray,
    flux: np.ndarray,
    b_image: np.ndarray,
    *,
    bmin: float = 1.3,
    flux_scale: float = 1.0,
    rwidth: float = 0.1,
    fwidth: float = 0.15,
    box_flux_ratio: float = 10.0,
    min_count: int = 1,
    n_refine: int = 2,
) -> LocusResult:
    """Find the stellar locus by VISQL's chimney grid search and derive the star box.

    `flux_scale` multiplies VISQL's flux constants (1 for a 560 s exposure in ADU);
    `box_flux_ratio` is fmax/fmin (VISQL: 10); `min_count` the least chimney count accepted.
    """
    r = np.asarray(flux_radius, dtype=float).ravel()
    f = np.asarray(flux, dtype=float).ravel()
    b = np.asarray(b_image, dtype=float).ravel()
    if not (r.size == f.size == b.size):
        raise ValueError(f"column lengths differ: {r.size}, {f.size}, {b.size}")
    if not (flux_scale > 0 and box_flux_ratio > 1):
        raise ValueError(
            f"need flux_scale > 0 and box_flux_ratio > 1, got {flux_scale}, {box_flux_ratio}"
        )
    if r.size == 0:
        return LocusResult(found=False, reason="no sources", bmin=bmin)
    keep = np.isfinite(r) & np.isfinite(f) & np.isfinite(b) & (b > bmin) & (r > 0)
    if not keep.any():
        return LocusResult(found=False, reason=f"no sources with b_image > {bmin}", bmin=bmin)
    r13, f13 = r[keep], f[keep]

    rc_grid = np.logspace(0.0, 1.0, 20)
    fc_grid = np.logspace(0.0, 0.5, 8)[None, :] * 3e5 * flux_scale * rc_grid[:, None] ** 2
    counts = chimney_counts(
        r13, f13, rc_grid, fc_grid, rwidth=rwidth, fwidth=fwidth, stack_flux=1e5 * flux_scale
    )
    i, j = np.unravel_index(int(np.argmax(counts)), counts.shape)
    best = int(counts[i, j])
    if best < max(min_count, 1):
        return LocusResult(
            found=False, reason=f"no chimney: best count {best}", best_count=best, bmin=bmin
        )
    rc, fc = float(rc_grid[i]), float(fc_grid[i, j])
    rmin, rmax = rc / 1.15, rc * 1.15
    fmax = fc / 2.0
    fmin = fmax / box_flux_ratio
    in_flux = (f13 > fmin) & (f13 < fmax)
    for _ in range(n_refine):
        in_box = in_flux & (r13 > rmin) & (r13 < rmax)
        if not in_box.any():
            return LocusResult(
                found=False,
                reason=f"no sources in the star box around rc={rc:.3f}, fc={fc:.4g}",
                rc=rc,
                fc=fc,
                best_count=best,
                bmin=bmin,
            )
        rmed = float(np.median(r13[in_box]))
        rmin, rmax = rmed / 1.1, rmed * 1.1
    n_in_box = int((in_flux & (r13 > rmin) & (r13 < rmax)).sum())
    return LocusResult(
        found=n_in_box > 0,
        reason="" if n_in_box > 0 else "no sources in the refined star box",
        rc=rc,
        fc=fc,
        rmin=rmin,
        rmax=rmax,
        fmin=fmin,
        fmax=fmax,
        n_in_box=n_in_box,
        best_count=best,
        bmin=bmin,
    )


def select_visql_box(
    flux_radius: np.ndarray,
    flux: np.ndarray,
    b_image: np.ndarray,
    locus: LocusResult,
    *,
    flags: np.ndarray | None = None,
    peak: np.ndarray | None = None,
    saturate: float | None = None,
) -> np.ndarray:
    """Boolean mask of unsaturated stars in the locus box (all False if no locus).

    In rmin < r < rmax, fmin < f < fmax and b_image > bmin (VISQL's awk cut), and, unlike
    VISQL, not flagged saturated (FLAGS & 4) and with peak < saturate when both are given.
    """
    r = np.asarray(flux_radius, dtype=float)
    f = np.asarray(flux, dtype=float)
    b = np.asarray(b_image, dtype=float)
    if not locus.found:
        return np.zeros(r.shape, dtype=bool)
    mask = (
        (r > locus.rmin) & (r < locus.rmax) & (f > locus.fmin) & (f < locus.fmax) & (b > locus.bmin)
    )
    if flags is not None:
        mask &= (np.asarray(flags).astype(np.int64) & SEXTRACTOR_SATURATED) == 0
    if peak is not None and saturate is not None:
        mask &= np.asarray(peak, dtype=float) < saturate
    return mask


#: SExtractor FLAGS bit 8: truncated at the image border (its radius is not the PSF's).
SEXTRACTOR_TRUNCATED = 8


def _window_counts(sorted_ln_r: np.ndarray, centres: np.ndarray, half: float) -> np.ndarray:
    """Number of sorted ln r values within +-half of each centre."""
    lo = np.searchsorted(sorted_ln_r, centres - half, side="left")
    hi = np.searchsorted(sorted_ln_r, centres + half, side="right")
    return hi - lo


def find_stellar_locus(
    flux_radius: np.ndarray,
    flux: np.ndarray,
    fluxerr: np.ndarray,
    *,
    a_image: np.ndarray | None = None,
    b_image: np.ndarray | None = None,
    peak: np.ndarray | None = None,
    flags: np.ndarray | None = None,
    min_snr: float = 100.0,
    window: float = 0.1,
    min_stars: int = 5,
    significance: float = 5.0,
    clip: float = 3.0,
    shape_clip: float = 3.0,
    min_roundness: float = 0.5,
    max_peak_fraction: float = 0.5,
) -> LocusResult:
    """The stellar locus measured on this catalogue (see the module docstring).

    Sources with S/N >= min_snr, unsaturated and untruncated (FLAGS 4, 8), not clearly
    elongated (b/a >= `min_roundness`, 0.5: an ellipticity of 1/3, twice what VIS's PSF may
    have, so only particle tracks and edge-on galaxies are left out) and with less than
    `max_peak_fraction` of their flux in the brightest pixel (single-pixel events), are counted
    in windows of +-`window` (relative) in radius; the densest window is the locus when its
    count exceeds its sidebands by `significance` Poisson sigma and `min_stars`. Windows of a
    quarter, half and the whole `window` are tried (a real PSF's locus is a few per cent wide,
    a simulated one can be 1 %), each against its own sidebands (1.5 windows on either side,
    the higher one), and the most significant wins. Particle hits have too little charge to
    pile up above S/N 100, so no lower limit is tried (below it, hot pixels and point-like
    hits make ridges of their own). The locus's median and robust scatter in ln r, clipped at
    `clip` sigma, give rmin..rmax (at least the window); a scatter wider than `window` is no
    locus. Its roundness (b/a) and peak-to-flux ratios give the shape limits, `shape_clip`
    one-sided robust sigma (median to the 16th or 84th percentile) from their medians,
    measured on the brighter half of the locus.
    """
    r = np.asarray(flux_radius, dtype=float).ravel()
    f = np.asarray(flux, dtype=float).ravel()
    e = np.asarray(fluxerr, dtype=float).ravel()
    if not (r.size == f.size == e.size):
        raise ValueError(f"column lengths differ: {r.size}, {f.size}, {e.size}")
    if not (min_snr > 0 and 0 < window < 1):
        raise ValueError("need min_snr > 0 and 0 < window < 1")
    base = dict(method="adaptive", bmin=float("nan"))
    if r.size == 0:
        return LocusResult(found=False, reason="no sources", **base)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(e > 0, f / e, np.nan)
    usable = np.isfinite(r) & np.isfinite(f) & np.isfinite(snr) & (r > 0) & (f > 0)
    if flags is not None:
        bad = SEXTRACTOR_SATURATED | SEXTRACTOR_TRUNCATED
        usable &= (np.asarray(flags).astype(np.int64).ravel() & bad) == 0
    if a_image is not None and b_image is not None:
        # the search ignores clearly elongated sources (particle tracks): b/a >= min_roundness
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.asarray(b_image, float).ravel() / np.asarray(a_image, float).ravel()
        usable &= q >= min_roundness
    if peak is not None:
        # a star spreads over pixels: half its light or more in one pixel is a particle hit
        # or a hot pixel (VIS's PSF, FWHM 1.6 px, puts < 30 % in the brightest pixel; a
        # Gaussian of FWHM 1.2 px at most 46 %)
        with np.errstate(divide="ignore", invalid="ignore"):
            usable &= np.asarray(peak, float).ravel() / f < max_peak_fraction
    limit = float(min_snr)
    cand = usable & (snr >= limit)
    n_cand = int(cand.sum())
    if n_cand < min_stars:
        reason = f"no stellar locus: {n_cand} usable sources with S/N >= {limit:g}"
        return LocusResult(found=False, reason=reason, snr_min=limit, **base)
    ln_r = np.sort(np.log(r[cand]))
    grid = np.arange(ln_r[0], ln_r[-1] + 0.0025, 0.0025)
    best = None
    # a ridge of any width up to `window`: the most significant one
    for half in np.log1p(float(window) * np.array([0.25, 0.5, 1.0])):
        counts = _window_counts(ln_r, grid, half)
        # each sideband (3 half-widths on either side), per window width; a ridge stands
        # above both (the edge of a broad population stands above one only)
        left = _window_counts(ln_r, grid - 2.5 * half, 1.5 * half)
        right = _window_counts(ln_r, grid + 2.5 * half, 1.5 * half)
        background = np.maximum(left, right) * (2.0 / 3.0)
        z = (counts - background) / np.sqrt(background + 1.0)
        k = int(np.argmax(z))
        if best is None or z[k] > best[0]:
            best = (float(z[k]), k, float(half), int(counts[k]), float(background[k]))
    zbest, k, half, peak_count, background = best
    if zbest < significance or peak_count - background < min_stars:
        reason = (
            f"no stellar locus: the densest radius window ({np.exp(grid[k]):.2f} px) holds "
            f"{peak_count} sources with S/N >= {limit:g} against {background:.1f} in its "
            f"sidebands ({zbest:.1f} sigma)"
        )
        return LocusResult(found=False, reason=reason, snr_min=limit, **base)
    return _describe_locus(
        r, f, snr, cand, float(np.exp(grid[k])), half, float(np.log1p(window)), limit,
        peak_count, background, clip, shape_clip, a_image, b_image, peak,
    )  # fmt: skip


def _describe_locus(
    r,
    f,
    snr,
    cand,
    r_peak,
    half,
    max_half,
    limit,
    peak_count,
    background,
    clip,
    shape_clip,
    a,
    b,
    peak,
) -> LocusResult:
    """Centre, width, flux range and shape limits of the locus found at r_peak; not found when
    the sources there do not form a ridge narrower than `max_half` (a broad pile is no PSF)."""
    ln_all = np.log(np.where(r > 0, r, np.nan))
    centre, sigma = float(np.log(r_peak)), half / 2.0
    members = cand & (np.abs(ln_all - centre) < 2.0 * half)
    for _ in range(10):
        vals = ln_all[members]
        centre = float(np.median(vals))
        sigma = max(mad_sigma(vals), 1e-3)
        new = cand & (np.abs(ln_all - centre) < max(clip * sigma, half))
        if np.array_equal(new, members):
            break
        members = new
    if sigma > max_half:
        return LocusResult(
            found=False,
            reason=(
                f"no stellar locus: the sources near {np.exp(centre):.2f} px spread by "
                f"{sigma:.2f} in ln(radius), more than a PSF's radius scatters"
            ),
            method="adaptive",
            bmin=float("nan"),
            snr_min=float(limit),
        )
    width = max(clip * sigma, half)
    rmin, rmax = float(np.exp(centre - width)), float(np.exp(centre + width))
    in_band = cand & (r > rmin) & (r < rmax)
    # shapes from the brighter half of the locus, where particle hits (of limited charge) are
    # rarest: the limits then keep the fainter hits that share the stars' radius out
    bright = in_band & (snr >= np.median(snr[in_band]))
    roundness_min = peak_fraction_max = float("nan")
    if a is not None and b is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.asarray(b, float).ravel() / np.asarray(a, float).ravel()
        qs = q[bright & np.isfinite(q)]
        if qs.size >= 5:  # one-sided: b/a <= 1, the tail that matters is the flat side
            med = float(np.median(qs))
            lower = max(med - float(np.percentile(qs, 15.87)), 0.02)
            roundness_min = med - shape_clip * lower
    if peak is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            pf = np.asarray(peak, float).ravel() / f
        ps = pf[bright & np.isfinite(pf)]
        if ps.size >= 5:  # one-sided: particle hits are sharper than stars
            med = float(np.median(ps))
            upper = max(float(np.percentile(ps, 84.13)) - med, 0.01 * med)
            peak_fraction_max = med + shape_clip * upper
    fluxes = f[in_band]
    return LocusResult(
        found=True,
        reason="",
        rc=float(np.exp(centre)),
        rmin=rmin,
        rmax=rmax,
        fmin=float(fluxes.min()),
        fmax=float(fluxes.max()),
        n_in_box=int(in_band.sum()),
        best_count=int(peak_count),
        bmin=float("nan"),
        method="adaptive",
        snr_min=float(limit),
        sigma_ln_r=float(sigma),
        background=float(background),
        roundness_min=roundness_min,
        peak_fraction_max=peak_fraction_max,
    )


def select_stars(
    flux_radius: np.ndarray,
    flux: np.ndarray,
    fluxerr: np.ndarray,
    locus: LocusResult,
    *,
    a_image: np.ndarray | None = None,
    b_image: np.ndarray | None = None,
    peak: np.ndarray | None = None,
    flags: np.ndarray | None = None,
    min_snr: float | None = None,
) -> np.ndarray:
    """Boolean mask of the stars of an adaptive locus: radius in rmin..rmax, S/N >= min_snr
    (default: the locus's own limit), unsaturated and untruncated (FLAGS 4, 8), and within the
    locus's shape limits (not flatter, not sharper than its stars). All False if no locus."""
    r = np.asarray(flux_radius, dtype=float)
    if not locus.found:
        return np.zeros(r.shape, dtype=bool)
    f = np.asarray(flux, dtype=float)
    err = np.asarray(fluxerr, dtype=float)
    limit = float(locus.snr_min if min_snr is None else min_snr)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(err > 0, f / err, 0.0)
        mask = (r > locus.rmin) & (r < locus.rmax) & (snr >= limit) & (f > 0)
        if flags is not None:
            bad = SEXTRACTOR_SATURATED | SEXTRACTOR_TRUNCATED
            mask &= (np.asarray(flags).astype(np.int64) & bad) == 0
        if a_image is not None and b_image is not None and np.isfinite(locus.roundness_min):
            q = np.asarray(b_image, float) / np.asarray(a_image, float)
            mask &= q >= locus.roundness_min
        if peak is not None and np.isfinite(locus.peak_fraction_max):
            mask &= np.asarray(peak, float) / f <= locus.peak_fraction_max
    return mask


#: Catalogue columns the adaptive locus and star selection use for shapes and flags.
SHAPE_COLUMNS = ("a_image", "b_image", "peak", "flags")


def locus_of_catalogue(
    cat: Mapping[str, np.ndarray], *, min_snr: float = 100.0, window: float = 0.1
) -> LocusResult:
    """`find_stellar_locus` on a catalogue table (SExtractor-like column names)."""
    shape = {k: cat[k] for k in SHAPE_COLUMNS if k in cat}
    return find_stellar_locus(
        cat["flux_radius"], cat["flux_auto"], cat["fluxerr_auto"],
        min_snr=min_snr, window=window, **shape,
    )  # fmt: skip


def stars_of_catalogue(
    cat: Mapping[str, np.ndarray], locus: LocusResult, *, min_snr: float | None = None
) -> np.ndarray:
    """`select_stars` on a catalogue table: the mask of its stars on `locus`."""
    shape = {k: cat[k] for k in SHAPE_COLUMNS if k in cat}
    return select_stars(
        cat["flux_radius"], cat["flux_auto"], cat["fluxerr_auto"], locus,
        min_snr=min_snr, **shape,
    )  # fmt: skip


def particle_like(cat: Mapping[str, np.ndarray], locus: LocusResult) -> np.ndarray:
    """Sources sharper than the stars of the locus (smaller radius, or a larger peak-to-flux
    ratio): particle hits and hot pixels, which nothing on the sky can be."""
    r = np.asarray(cat["flux_radius"], dtype=float)
    if not locus.found:
        return np.zeros(r.shape, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        sharp = r < locus.rmin
        if "peak" in cat and np.isfinite(locus.peak_fraction_max):
            pf = np.asarray(cat["peak"], float) / np.asarray(cat["flux_auto"], float)
            sharp |= pf > locus.peak_fraction_max
    return sharp


def blended_stars(
    cat: Mapping[str, np.ndarray],
    star_index: np.ndarray,
    locus: LocusResult,
    config: Mapping[str, Any],
) -> np.ndarray:
    """Which of the stars `star_index` (rows of `cat`) another object's light contaminates.

    A neighbouring object (not particle-like: those are mirrored away in the stamp) adds to the
    star's weighted flux about (f_j / f_i) exp(-d^2 / (2 (sigma_w^2 + sigma_psf^2))) (Gaussian
    weight and PSF, sigma_psf from the locus radius); the star is blended when that exceeds
    `blend_tolerance` and the neighbour sits within 3 sigma_w plus twice its own half-light
    radius, where its light falls under the weight's core and no mirror can remove it.
    """
    from scipy.spatial import cKDTree

    idx = np.asarray(star_index, dtype=int)
    out = np.zeros(idx.size, dtype=bool)
    if idx.size == 0 or not locus.found:
        return out
    sigma_w = float(config["weight_sigma_px"])
    tol = float(config["blend_tolerance"])
    sigma_psf = float(locus.rc) / np.sqrt(2.0 * np.log(2.0))  # half-light radius of a Gaussian
    s2 = 2.0 * (sigma_w**2 + sigma_psf**2)
    ext = np.asarray(cat["extname"]).astype(str)
    x = np.asarray(cat["x_image"], float)
    y = np.asarray(cat["y_image"], float)
    flux = np.asarray(cat["flux_auto"], float)
    radius = np.asarray(cat["flux_radius"], float)
    objects = ~particle_like(cat, locus) & np.isfinite(flux) & (flux > 0)
    reach = (
        3.0 * sigma_w + 2.0 * float(np.nanpercentile(radius[objects], 99)) if objects.any() else 0
    )
    for name in np.unique(ext[idx]):
        rows = np.flatnonzero((ext == name) & objects)
        if rows.size < 2:
            continue
        tree = cKDTree(np.c_[x[rows], y[rows]])
        mine = np.flatnonzero(ext[idx] == name)
        for k, j_list in zip(
            mine, tree.query_ball_point(np.c_[x[idx[mine]], y[idx[mine]]], reach), strict=True
        ):
            i = idx[k]
            for j in rows[j_list]:
                if j == i:
                    continue
                d2 = (x[j] - x[i]) ** 2 + (y[j] - y[i]) ** 2
                if np.sqrt(d2) > 3.0 * sigma_w + 2.0 * radius[j]:
                    continue
                if flux[j] / flux[i] * np.exp(-d2 / s2) > tol:
                    out[k] = True
                    break
    return out
