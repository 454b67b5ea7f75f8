"""One VIS exposure against Gaia DR3: the match, the colour relations and the residual table.

VISQL's gaiaphotom (VISQL-SPEC 8.3-8.8), rebuilt to scale and to be reproducible, in parts:

* `measure.gaia_match`: Gaia in the instrument frame, the offset search (FFT cross-correlation
  refined on the pairs near its peak), the nearest-neighbour match and VISQL's clipped affine
  fit (offsets and gradients in VISQL's units and order);
* `measure.gaia_colour`: ln(VIS/Gaia) against BP-RP, a quadratic with one 3-sigma-clipped refit
  (8.4) or four (8.11, for stacks), per focal-plane unit, evaluated at BP-RP 0.75, 1.75, 2.75;
* `measure.photometry`: the flux scales, relative gains and the aperture correction.

This module puts them together for one exposure (`compare_with_gaia`; from the Gaia cone and a
pointing, `compare_with_gaia_table`) and re-exports their names, so `from viskom.measure.gaia
import ...` keeps working for all of them.

All positions are instrument-frame degrees (VISQL's XWORLD/YWORLD, RAV/DECV).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from viskom.measure.gaia_colour import (
    COLOUR_FIT_GMAX,
    COLOURS,
    NO_FIT,
    ColourFit,
    block_name,
    colour_fits_by_unit,
    colour_metrics,
    fit_colour_relation,
    frat_model,
    unit_members,
)
from viskom.measure.gaia_match import (
    FIELD_HALF_WIDTH_DEG,
    GRADIENT_BASE_DEG,
    PIX_PER_DEG,
    AstrometricFit,
    Match,
    find_offset,
    fit_affine,
    gaia_instrument_frame,
    match_nearest,
    match_to_gaia,
    trim_flux_ranges,
)
from viskom.measure.photometry import (
    REF_EXPTIME_S,
    ApertureCorrection,
    aperture_correction_estimate,
    aperture_flux_ratios,
    gaia_flux,
    gaia_mag,
    gains_from_flat_levels,
    neighbour_flux,
    vis_flux_scaled,
)

__all__ = [
    "COLOURS",
    "COLOUR_FIT_GMAX",
    "FIELD_HALF_WIDTH_DEG",
    "GRADIENT_BASE_DEG",
    "NO_FIT",
    "PIX_PER_DEG",
    "REF_EXPTIME_S",
    "STAR_COLUMNS",
    "AstrometricFit",
    "ColourFit",
    "GaiaComparison",
    "Match",
    "SkySolution",
    "aperture_correction_estimate",
    "aperture_flux_ratios",
    "blind_solution_metrics",
    "block_name",
    "colour_fits_by_unit",
    "colour_metrics",
    "compare_with_gaia",
    "compare_with_gaia_table",
    "exposure_summary",
    "find_offset",
    "fit_affine",
    "fit_colour_relation",
    "frat_model",
    "gaia_flux",
    "gaia_instrument_frame",
    "gaia_mag",
    "gains_from_flat_levels",
    "match_nearest",
    "match_to_gaia",
    "median_by_quadrant",
    "neighbour_flux",
    "pair_offsets",
    "trim_flux_ranges",
    "unit_members",
    "vis_flux_scaled",
    "vis_star_list",
]


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
        """The focal plane's colour fit (NO_FIT if there is none)."""
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


def vis_star_list(stars: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The PSF stars with a finite, positive FLUX_AUTO as `compare_with_gaia_table` takes them:
    extname, x, y (instrument frame, deg) and flux (ADU)."""
    flux = np.asarray(stars["flux_auto"], float)
    good = np.isfinite(flux) & (flux > 0)
    return {
        "extname": np.asarray(stars["extname"]).astype(str)[good],
        "x": np.asarray(stars["x_world"], float)[good],
        "y": np.asarray(stars["y_world"], float)[good],
        "flux": flux[good],
    }


def compare_with_gaia_table(
    vis: Mapping[str, np.ndarray],
    gaia: Any,
    pointing: tuple[float, float, float],
    *,
    exptime: float,
    gains: Mapping[str, float] | None = None,
    match_radius_pix: float = 20.0,
    window_deg: float = 0.4,
    colour_gmax: float = COLOUR_FIT_GMAX,
    min_stars: int = 10,
) -> GaiaComparison:
    """`compare_with_gaia` of a VIS star list (`vis_star_list`) and a Gaia cone moved into the
    instrument frame of `pointing` (RA, Dec, PA in deg), for one exposure.

    `gaia` holds the cone's columns at the exposure epoch (a table or a mapping of arrays):
    ra_epoch, dec_epoch, Gmag, e_FG, FG, BP-RP and Source.
    """
    xg, yg, keep = gaia_instrument_frame(
        np.asarray(gaia["ra_epoch"], float),
        np.asarray(gaia["dec_epoch"], float),
        np.asarray(gaia["Gmag"], float),
        np.asarray(gaia["e_FG"], float),
        np.asarray(gaia["FG"], float),
        np.asarray(gaia["BP-RP"], float),
        pointing,
    )
    return compare_with_gaia(
        vis["extname"], vis["x"], vis["y"], vis["flux"],
        xg[keep], yg[keep],
        np.asarray(gaia["Gmag"], float)[keep],
        np.asarray(gaia["BP-RP"], float)[keep],
        exptime=exptime,
        gains=gains,
        source_id=np.asarray(gaia["Source"], np.int64)[keep],
        match_radius_pix=match_radius_pix,
        window_deg=window_deg,
        colour_gmax=colour_gmax,
        min_stars=min_stars,
    )  # fmt: skip


class SkySolution(Protocol):
    """A pointing solved from the stars (astrometry.net's blind solution), in VISQL's terms."""

    ra_deg: float
    dec_deg: float
    pa_deg: float
    rms_pix: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary of the solution."""
        ...


def blind_solution_metrics(
    blind: SkySolution | None, ra_deg: float, dec_deg: float, pa_deg: float | None
) -> list[tuple[str, str, float]]:
    """Whether the pointing came from a blind solve, and how far the header pointing (RA, Dec,
    PA in deg) was from it: offsets in arcsec on the sky and PA in deg."""
    if blind is None:
        return [("FPA", "astrom_blind_solved", 0.0)]
    cosd = math.cos(math.radians(blind.dec_deg))
    dra = ((blind.ra_deg - ra_deg + 180.0) % 360.0 - 180.0) * cosd * 3600.0
    rows = [
        ("FPA", "astrom_blind_solved", 1.0),
        ("FPA", "astrom_blind_dra_arcsec", dra),
        ("FPA", "astrom_blind_ddec_arcsec", (blind.dec_deg - dec_deg) * 3600.0),
        ("FPA", "astrom_blind_rms_pix", blind.rms_pix),
    ]
    if pa_deg is not None:
        rows.append(
            ("FPA", "astrom_blind_dpa_deg", (blind.pa_deg - pa_deg + 180.0) % 360.0 - 180.0)
        )
    return rows


def exposure_summary(
    result: GaiaComparison,
    *,
    pointing: tuple[float, float, float | None],
    blind: SkySolution | None,
    epoch: str,
    exptime: float,
    gains_source: str,
    aperture: ApertureCorrection,
) -> dict[str, Any]:
    """One exposure's Gaia comparison as a JSON-able object (the `_gaia.json` product): the
    match, the header pointing (RA, Dec, PA), the blind solution, the flux scaling and the
    colour fits per unit."""
    ra, dec, pa = pointing
    return {
        **result.summary(),
        "pointing": {"ra": ra, "dec": dec, "pa": pa},
        "blind_solution": blind.as_dict() if blind is not None else None,
        "epoch": epoch,
        "exptime": exptime,
        "gains_source": gains_source,
        **aperture.summary(),
        "colour_fits": {u: f.as_dict() for u, f in result.colour.items()},
    }


def pair_offsets(result: GaiaComparison) -> dict[str, np.ndarray]:
    """Gaia-minus-VIS offsets of the matched pairs and their residuals after the affine fit.

    Columns (pixels for offsets): x, y (VIS, deg), dx, dy, rx, ry (residuals) and kept (the
    pairs the astrometric fit kept).
    """
    s = result.stars
    x, y = s["x_world"], s["y_world"]
    dx = (s["x_gaia"] - x) * PIX_PER_DEG
    dy = (s["y_gaia"] - y) * PIX_PER_DEG
    mdx, mdy = result.match.fit.model(x, y) if x.size else (x, y)
    return {
        "x": x,
        "y": y,
        "dx": dx,
        "dy": dy,
        "rx": dx - mdx * PIX_PER_DEG,
        "ry": dy - mdy * PIX_PER_DEG,
        "kept": s["astrom_kept"],
    }


def median_by_quadrant(extname: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """Median of `values` per quadrant name, in sorted name order."""
    ext = np.asarray(extname)
    v = np.asarray(values)
    return {str(name): float(np.median(v[ext == name])) for name in np.unique(ext)}
