"""Gaia stage: the exposure's stars against Gaia DR3, astrometry and photometry (VISQL-SPEC 8).

Gaia DR3 around the header pointing comes from the tile cache (`sources.gaia`; online only
when `[gaia] online = true`), moved to the exposure epoch with the proper motions and rotated
into the instrument frame (VISQL's rotation and empirical distortion). The PSF stage's stars
are matched to it (`measure.gaia.compare_with_gaia`): affine offsets, gradients and residual
sigma in pixels on the focal plane, Gaia-minus-VIS offsets per CCD and quadrant, and
ln(VIS/Gaia) against BP-RP with VIS/Gaia at BP-RP 0.75, 1.75, 2.75 per focal plane, 3x3
block, CCD and quadrant. Products: `_gaia_stars.parquet` (VISQL's `_frat.txt`: one row per
matched star), `_gaia.json` (the fit) and the two plots `_gaia_dxdy.png` and `_gaia_colour.png`.

Where the header has no PA, or fewer than `[gaia] blind_min_matched` stars match on the header
pointing, the star list is solved blind with astrometry.net (`sources.astrometry_net`: an
index built from the cached Gaia cone, `solve-field` around the header RA/DEC) and matched on
that pointing; `astrom_blind_*` metrics say how far the header was from it.

Failures (recorded as failed, retried with `--retry-failed`): no pointing or epoch in the
header (the runner checks DATE-OBS, EXPTIME, RA, DEC first), Gaia tiles missing from the
cache in offline mode or the service unreachable, no relative gains, astrometry.net not
installed when a blind solve is needed. Quality outcomes (status `empty`, no metrics): the
PSF stage selected no stars (`no_vis_stars`), Gaia DR3 has no star in the cone
(`no_gaia_stars`), or no match is better than chance, even after the blind solve
(`no_gaia_match`). A run first removes the exposure's previous Gaia products, so that the
month aggregates never read a result the current run did not make.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np

from viskom.le1.frame import Le1Frame, Quadrant
from viskom.le1.quadrant_map import map_quadrants
from viskom.measure.detector import quadrant_bias
from viskom.measure.gaia import (
    blind_solution_metrics,
    compare_with_gaia_table,
    exposure_summary,
    vis_star_list,
)
from viskom.measure.photometry import (
    APCORR_MARGIN_PX,
    APCORR_MAX_EDGE_FLUX,
    ApertureCorrection,
    aperture_correction_estimate,
    aperture_correction_stars,
    aperture_flux_ratios,
    cutout_neighbour_flux,
)
from viskom.stages.base import ProductInput, ProductSpec, Stage, StageInputs, StageResult

BLIND_INDEX_STARS = 20000  # brightest Gaia stars in the blind-solve index


class _NoMatchError(Exception):
    """No match better than chance could be found: a quality outcome, not a failure."""


def quadrant_aperture_ratios(
    quad: Quadrant,
    jobs: Mapping[str, Mapping[str, np.ndarray]],
    radius_px: float,
    neighbours_in_cutouts: bool = False,
) -> np.ndarray:
    """Large-aperture flux over FLUX_AUTO of one quadrant's chosen stars (catalogue rows);
    with `neighbours_in_cutouts` (a quick-look catalogue, without its faint sources), the
    other sources' flux in each aperture is found again at VISQL's depth."""
    g = quad.geometry
    bias = quadrant_bias(quad.data, g)[2]
    image = quad.data.astype(np.float32)
    image -= np.float32(bias)
    region = (g.image.row0, g.image.row1, g.image.col0, g.image.col1)
    job = dict(jobs[quad.extname])
    usable = np.ones(len(job["x"]), dtype=bool)
    if neighbours_in_cutouts:
        area = image[g.image.slices]
        inside, straddle = cutout_neighbour_flux(
            area, job["x"] - g.image.col0, job["y"] - g.image.row0, job["flux_auto"],
            radius_px, edge=APCORR_MARGIN_PX,
        )  # fmt: skip
        job["subtract"] = inside
        usable = straddle < APCORR_MAX_EDGE_FLUX
    ratios = aperture_flux_ratios(image, **job, radius_px=radius_px, region=region)
    return np.where(usable, ratios, np.nan)


def aperture_correction(
    frame: Le1Frame, stars: Mapping[str, np.ndarray], cat: Mapping[str, np.ndarray],
    radius_px: float, workers: int = 1, neighbours_in_cutouts: bool = False,
) -> tuple[float, float, int]:  # fmt: skip
    """Large-aperture / FLUX_AUTO flux of bright, unsaturated PSF stars (other sources inside
    the aperture subtracted): (correction, error, stars), see `aperture_correction_estimate`.
    `neighbours_in_cutouts`: see `quadrant_aperture_ratios`."""
    jobs = aperture_correction_stars(stars, cat, radius_px)
    if not jobs:
        return math.nan, math.nan, 0
    ratios = map_quadrants(
        frame,
        quadrant_aperture_ratios,
        args=(jobs, radius_px, neighbours_in_cutouts),
        names=list(jobs),
        workers=workers,
    )
    return aperture_correction_estimate(np.concatenate(list(ratios.values())))


class GaiaPhotometry(Stage):
    """VIS stars against Gaia DR3: pointing offset, field gradients, VIS/Gaia colour relation."""

    name = "gaia"
    version = "1"
    imports = (
        "viskom.measure.sky", "viskom.measure.sky_kernels", "viskom.present.astrometry",
        "viskom.sources.gaia", "viskom.sources.astrometry_net", "astropy.wcs",
    )  # fmt: skip
    frame_types = frozenset({"SCIENCE"})
    inputs = (
        ProductInput("psf", "stars"),
        ProductInput("catalogue", "catalogue", optional=True),  # for the aperture correction
    )
    calibrations = ("relative_gains",)
    external = ("gaia_cone", "blind_solver")
    config_section = "gaia"
    config_keys = (
        "cone_radius_deg", "match_radius_pix", "search_window_deg", "colour_gmax",
        "min_stars_quadratic", "aperture_radius_px", "aperture_max_error",
        "aperture_correction_fallback", "blind_solve", "blind_min_matched",
    )  # fmt: skip
    products = (
        ProductSpec("gaia_stars", "parquet", "matched stars (VISQL's _frat.txt)"),
        ProductSpec("gaia", "json", "the match and colour fits"),
        ProductSpec("gaia_dxdy", "png", "Gaia minus VIS offsets over the focal plane"),
        ProductSpec("gaia_colour", "png", "ln(VIS/Gaia) against BP-RP"),
    )
    header_keywords = ("DATE-OBS", "EXPTIME", "RA", "DEC")  # PA optional: blind solve
    #: with a quick-look catalogue the aperture correction finds the faint neighbours itself
    reads_catalogue_depth = True

    def run(self, frame: Le1Frame, inputs: StageInputs, config: Mapping[str, Any]) -> StageResult:
        from viskom.present.astrometry import plot_gaia_colour, plot_gaia_dxdy

        exposure = inputs.exposure
        gains = inputs.calibration("relative_gains")
        if gains.unusable:
            raise ValueError(f"relative gains unusable: {gains.source}")
        p = frame.primary
        if p.ra is None or p.dec is None:
            raise ValueError(
                "no pointing in the primary header (RA, DEC, PA): cannot choose the Gaia field"
            )
        if p.date_obs is None:
            raise ValueError("no DATE-OBS in the primary header: cannot move Gaia to the epoch")
        stars = inputs.product("stars")
        exptime = exposure.exptime if exposure.exptime is not None else p.exptime
        if exptime is None or not exptime > 0:
            raise ValueError(
                f"no usable exposure time (EXPTIME {exptime}): VIS fluxes cannot be scaled "
                "to 89.52 s"
            )
        vis = vis_star_list(stars)
        if not vis["flux"].size:
            return StageResult.nothing(
                "no_vis_stars",
                f"the psf stage selected no stars with a positive flux "
                f"({np.asarray(stars['flux_auto']).size} rows): nothing to match with Gaia",
            )

        # FLUX_AUTO misses the PSF wings: measured per exposure, applied when precise enough,
        # else the configured typical value (recorded either way)
        apcorr = ApertureCorrection()
        if (radius_px := float(config["aperture_radius_px"])) > 0:
            cat = inputs.product("catalogue")
            if cat is None:
                raise FileNotFoundError(
                    "no catalogue for the aperture correction: run the catalogue stage first"
                )
            apcorr = ApertureCorrection.choose(
                *aperture_correction(
                    frame,
                    stars,
                    cat,
                    radius_px,
                    exposure.quadrant_workers,
                    neighbours_in_cutouts=config.get("catalogue_depth") == "quicklook",
                ),
                max_error=float(config["aperture_max_error"]),
                fallback=float(config["aperture_correction_fallback"]),
            )
        vis["flux"] = vis["flux"] * apcorr.applied

        radius = float(config["cone_radius_deg"])
        gaia = inputs.source("gaia_cone")(p.ra, p.dec, radius, p.date_obs)
        if len(gaia) == 0:
            return StageResult.nothing(
                "no_gaia_stars",
                f"Gaia DR3 has no star within {radius:g} deg of RA {p.ra:.5f} Dec {p.dec:.5f}",
            )
        compare = partial(
            compare_with_gaia_table, vis, gaia, exptime=exptime, gains=gains.gains,
            match_radius_pix=float(config["match_radius_pix"]),
            window_deg=float(config["search_window_deg"]),
            colour_gmax=float(config["colour_gmax"]), min_stars=int(config["min_stars_quadratic"]),
        )  # fmt: skip
        result = compare((p.ra, p.dec, p.pa)) if p.pa is not None else None
        blind = None
        min_matched = int(config["blind_min_matched"])
        if result is None or not result.is_real(min_matched):
            why = (
                "no PA in the header"
                if result is None
                else f"{result.match.fit.n_matched} stars matched on the header pointing, "
                f"{result.chance_matches:.0f} expected by chance"
            )
            try:
                blind = _blind_pointing(vis, gaia, p, config, why, inputs.source("blind_solver"))
            except _NoMatchError as exc:
                return StageResult.nothing("no_gaia_match", str(exc))
            result = compare((blind.ra_deg, blind.dec_deg, blind.pa_deg))
            if not result.is_real(min_matched):
                return StageResult.nothing(
                    "no_gaia_match",
                    f"{why}; on the blind solution {result.match.fit.n_matched} stars matched, "
                    f"{result.chance_matches:.0f} expected by chance",
                )
        summary = exposure_summary(
            result, pointing=(p.ra, p.dec, p.pa), blind=blind, epoch=p.date_obs.isoformat(),
            exptime=exptime, gains_source=gains.source, aperture=apcorr,
        )  # fmt: skip
        title = f"{exposure.name}  ({exptime:.2f} s)"
        products = {
            "gaia_stars": result.stars,
            "gaia": summary,
            "gaia_dxdy": plot_gaia_dxdy(result, title=title),
            "gaia_colour": plot_gaia_colour(result, title=title),
        }
        metrics = [
            *result.metrics(),
            *blind_solution_metrics(blind, p.ra, p.dec, p.pa),
            *apcorr.metrics(),
        ]
        return StageResult(metrics=metrics, products=products)


def _blind_pointing(
    vis: Mapping[str, np.ndarray], gaia: Any, p: Any, config: Mapping[str, Any], why: str,
    solver: Any,
) -> Any:  # fmt: skip
    """Solve the focal-plane star list blind (astrometry.net on an index of the Gaia cone)."""
    if not config["blind_solve"]:
        raise _NoMatchError(f"{why}, and the blind solve is off ([gaia] blind_solve = false)")
    missing = solver.missing()
    if missing:
        raise ValueError(f"{why}; blind solve not possible: {missing}")
    solution = solver.solve(
        (vis["x"], vis["y"], vis["flux"]),
        (np.asarray(gaia["ra_epoch"], float), np.asarray(gaia["dec_epoch"], float),
         np.asarray(gaia["Gmag"], float)),
        ra_hint=p.ra, dec_hint=p.dec, radius_hint_deg=float(config["cone_radius_deg"]),
        index_stars=BLIND_INDEX_STARS,
    )  # fmt: skip
    if solution is None:
        raise _NoMatchError(f"{why}, and astrometry.net found no solution around the header RA/DEC")
    return solution
