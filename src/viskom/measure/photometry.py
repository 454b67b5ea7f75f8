"""VIS and Gaia fluxes: VISQL's flux scales, relative quadrant gains and the aperture correction.

Gaia G is turned into a VIS-like flux (VISQL-SPEC 8.4), VIS fluxes are scaled to the 89.52 s
reference exposure and multiplied by the relative gain of their quadrant, and FLUX_AUTO is
corrected to a total flux with the median large-aperture ratio of bright isolated stars.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from viskom.measure.arrays import quadrant_codes
from viskom.measure.robust import mad_sigma

REF_EXPTIME_S = 89.52  # VISQL scales VIS fluxes to the short exposure

#: Aperture correction: stars with FLUX_AUTO / FLUXERR_AUTO above this, unsaturated; other
#: sources well inside the aperture are subtracted, those within this margin [px] of its edge
#: may add at most this fraction of the star's flux; the measured correction is applied when
#: at least this many stars give it.
APCORR_MIN_SNR, APCORR_MARGIN_PX, APCORR_MAX_EDGE_FLUX, APCORR_MIN_STARS = 200.0, 5.0, 0.002, 5


# ---------------------------------------------------------------------------------------------
# Fluxes
# ---------------------------------------------------------------------------------------------
def gaia_flux(g_mag: np.ndarray) -> np.ndarray:
    """VISQL's Gaia flux in VIS-like units: 10^(-0.4 (G - 30)) / 1.5."""
    return 10.0 ** (-0.4 * (np.asarray(g_mag, float) - 30.0)) / 1.5


def gaia_mag(flux: np.ndarray) -> np.ndarray:
    """Inverse of `gaia_flux`: G = 30 - 2.5 log10(1.5 F)."""
    return 30.0 - 2.5 * np.log10(1.5 * np.asarray(flux, float))


def vis_flux_scaled(
    flux_adu: np.ndarray, exptime_s: float, gain: np.ndarray | float = 1.0
) -> np.ndarray:
    """VIS flux scaled to the 89.52 s reference exposure and multiplied by the relative gain."""
    return np.asarray(flux_adu, float) * (REF_EXPTIME_S / float(exptime_s)) * gain


def gains_from_flat_levels(levels: Mapping[str, float]) -> dict[str, float]:
    """Relative gains from flat levels in ADU: mean(level) / level (VISQL's gainN)."""
    good = {k: float(v) for k, v in levels.items() if np.isfinite(v) and v > 0}
    if not good:
        return {}
    mean = float(np.mean(list(good.values())))
    return {k: mean / v for k, v in good.items()}


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
    # sep sums float32 pixels (its PIXTYPE) whatever the array's type: a float32 image is
    # measured as it is, not copied to float64 first (70 MB a quadrant, for a few stars)
    dtype = np.float32 if image.dtype == np.float32 else np.float64
    data = np.ascontiguousarray(image, dtype=dtype)
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
    from scipy.spatial import cKDTree  # lazily: start-up time of the CLI

    tree = cKDTree(np.column_stack([x_all, y_all]))
    f_all = np.nan_to_num(np.asarray(flux_all, float), nan=0.0).clip(min=0.0)
    for i, near in enumerate(tree.query_ball_point(np.column_stack([x, y]), r=radius + edge)):
        near = np.asarray(near, np.intp)
        d = np.hypot(x_all[near] - x[i], y_all[near] - y[i])
        other = d > 1e-3
        inside[i] = f_all[near][other & (d < radius - edge)].sum()
        straddle[i] = f_all[near][other & (d >= radius - edge)].sum() / float(flux[i])
    return inside, straddle


def cutout_neighbour_flux(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    radius: float,
    *,
    edge: float = 5.0,
) -> tuple[np.ndarray, np.ndarray]:
    """`neighbour_flux` with the other sources found in each aperture's own cutout of the
    bias-subtracted `image` at VISQL's depth (`catalogue.extract_sources`, 1.5 sigma), for a
    catalogue that does not hold the faint ones (`catalogue_depth = "quicklook"`): their light
    inside a large aperture would otherwise count as the star's. The detection nearest each
    (x, y) (0-based) is the star itself; NaN where the cutout leaves the image."""
    from viskom.measure.catalogue import extract_sources

    n = len(x)
    inside = np.full(n, np.nan)
    straddle = np.full(n, np.nan)
    half = math.ceil(radius + edge) + 8
    height, width = image.shape
    for i in range(n):
        xi, yi = round(float(x[i])), round(float(y[i]))
        if xi - half < 0 or yi - half < 0 or xi + half >= width or yi + half >= height:
            continue
        cut = image[yi - half : yi + half + 1, xi - half : xi + half + 1]
        found = extract_sources(cut, radii=False)  # positions and FLUX_AUTO
        cx = np.asarray(found["x_image"]) - 1.0
        cy = np.asarray(found["y_image"]) - 1.0
        dx, dy = float(x[i]) - (xi - half), float(y[i]) - (yi - half)
        others = np.ones(cx.size, dtype=bool)
        if cx.size:
            d = np.hypot(cx - dx, cy - dy)
            others[int(np.argmin(d))] = not d.min() <= 1.5
        got = neighbour_flux(
            np.array([dx]), np.array([dy]), np.array([float(flux[i])]),
            cx[others], cy[others], np.asarray(found["flux_auto"])[others], radius, edge=edge,
        )  # fmt: skip
        inside[i], straddle[i] = got[0][0], got[1][0]
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
        keep = np.abs(v - med) <= clip * max(mad_sigma(v), 1e-4)
        if keep.all():
            break
        v = v[keep]
    if v.size < 3:
        return math.nan, math.nan, int(v.size)
    return float(np.median(v)), 1.2533 * mad_sigma(v) / math.sqrt(v.size), int(v.size)


def aperture_correction_stars(
    stars: Mapping[str, np.ndarray], cat: Mapping[str, np.ndarray], radius_px: float
) -> dict[str, dict[str, np.ndarray]]:
    """The PSF stars that can measure the aperture correction, per quadrant: bright and
    unsaturated catalogue rows whose aperture edge holds little flux of other sources.

    Each quadrant's columns are the arguments of `aperture_flux_ratios`: x, y (0-based array
    pixels), flux_auto, background and subtract (other sources' flux inside the aperture).
    """
    names = sorted({str(e) for e in np.asarray(stars["extname"], dtype=object)})
    code = quadrant_codes(cat["extname"], names)  # len(names): a quadrant without PSF stars
    rows = _rows_of(stars, cat, code, names)
    flux = np.asarray(cat["flux_auto"], float)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = flux / np.asarray(cat["fluxerr_auto"], float)
    ok = (snr[rows] > APCORR_MIN_SNR) & ((np.asarray(cat["flags"])[rows].astype(int) & 4) == 0)
    rows = rows[ok]
    jobs: dict[str, dict[str, np.ndarray]] = {}
    x_all, y_all = np.asarray(cat["x_image"], float), np.asarray(cat["y_image"], float)
    for c in np.unique(code[rows]):
        name = names[int(c)]
        mine = rows[code[rows] == c]
        same = code == c
        inside, straddle = neighbour_flux(
            x_all[mine], y_all[mine], flux[mine], x_all[same], y_all[same], flux[same],
            radius_px, edge=APCORR_MARGIN_PX,
        )  # fmt: skip
        usable = straddle < APCORR_MAX_EDGE_FLUX
        mine = mine[usable]
        if mine.size:
            jobs[str(name)] = {
                "x": x_all[mine] - 1.0,
                "y": y_all[mine] - 1.0,
                "flux_auto": np.asarray(cat["flux_auto"])[mine],
                "background": np.asarray(cat["background"])[mine],
                "subtract": inside[usable],
            }
    return jobs


def _rows_of(
    stars: Mapping[str, np.ndarray],
    cat: Mapping[str, np.ndarray],
    code: np.ndarray,
    names: list[str],
) -> np.ndarray:
    """The catalogue rows of the PSF stars (same quadrant, same x_world: the psf stage copies
    them), found by sorting x_world once; stars not found are left out."""
    xw = np.asarray(cat["x_world"], float)
    star_x = np.asarray(stars["x_world"], float)
    star_code = np.array([names.index(str(e)) for e in stars["extname"]], dtype=np.int64)
    if not xw.size or not star_x.size:
        return np.zeros(0, dtype=np.intp)
    order = np.lexsort((xw, code))  # by quadrant, then x_world
    keys_code, keys_x = code[order], xw[order]
    lo = np.searchsorted(keys_code, star_code, side="left")
    hi = np.searchsorted(keys_code, star_code, side="right")
    rows = np.full(star_x.size, -1, dtype=np.intp)
    for i in range(star_x.size):
        j = lo[i] + np.searchsorted(keys_x[lo[i] : hi[i]], star_x[i])
        if j < hi[i] and keys_x[j] == star_x[i]:
            rows[i] = order[j]
    return rows[rows >= 0]


@dataclass(frozen=True)
class ApertureCorrection:
    """The FLUX_AUTO correction applied to an exposure's stars (1 when not measured) and the
    measurement it was chosen from (`aperture_correction_estimate`)."""

    applied: float = 1.0
    measured: float = math.nan
    error: float = math.nan
    n_stars: int = 0

    @classmethod
    def choose(
        cls, measured: float, error: float, n_stars: int, *, max_error: float, fallback: float
    ) -> ApertureCorrection:
        """The measured correction when at least APCORR_MIN_STARS stars give it within
        `max_error`, else the typical value `fallback` (the measurement is kept either way)."""
        good = n_stars >= APCORR_MIN_STARS and error <= max_error
        return cls(measured if good else fallback, measured, error, n_stars)

    def summary(self) -> dict[str, float | int]:
        """The correction and its measurement for the Gaia fit's JSON summary."""
        return {
            "aperture_correction": self.applied,
            "aperture_correction_measured": self.measured,
            "aperture_correction_error": self.error,
            "aperture_correction_stars": self.n_stars,
        }

    def metrics(self) -> list[tuple[str, str, float]]:
        """Metric rows on the FPA: the applied and the measured correction, its error, stars."""
        return [
            ("FPA", "gaia_aperture_correction", self.applied),
            ("FPA", "gaia_aperture_measured", self.measured),
            ("FPA", "gaia_aperture_error", self.error),
            ("FPA", "gaia_aperture_stars", float(self.n_stars)),
        ]
