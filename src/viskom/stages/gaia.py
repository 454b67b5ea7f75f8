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
from typing import Any

import numpy as np

from viskom.le1.frame import Le1Frame, Quadrant
from viskom.measure.detector import quadrant_bias
from viskom.measure.gaia import (
    aperture_correction_estimate,
    aperture_flux_ratios,
    compare_with_gaia,
    gaia_instrument_frame,
    neighbour_flux,
)
from viskom.stages.base import ExposureInfo, Stage, StageResult
from viskom.stages.quadrants import map_quadrants
from viskom.store.products import read_table, write_json, write_table

#: Aperture correction: stars with FLUX_AUTO / FLUXERR_AUTO above this, unsaturated; other
#: sources well inside the aperture are subtracted, those within this margin [px] of its edge
#: may add at most this fraction of the star's flux; the measured correction is applied when
#: at least this many stars give it.
APCORR_MIN_SNR, APCORR_MARGIN_PX, APCORR_MAX_EDGE_FLUX, APCORR_MIN_STARS = 200.0, 5.0, 0.002, 5
BLIND_INDEX_STARS = 20000  # brightest Gaia stars in the blind-solve index
#: (product, extension) of everything this stage writes for an exposure.
GAIA_PRODUCTS = (
    ("gaia_stars", "parquet"), ("gaia", "json"), ("gaia_dxdy", "png"), ("gaia_colour", "png"),
)  # fmt: skip


class _NoMatchError(Exception):
    """No match better than chance could be found: a quality outcome, not a failure."""


def quadrant_aperture_ratios(
    quad: Quadrant, jobs: Mapping[str, Mapping[str, np.ndarray]], radius_px: float
) -> np.ndarray:
    """Large-aperture flux over FLUX_AUTO of one quadrant's chosen stars (catalogue rows)."""
    job = jobs[quad.extname]
    g = quad.geometry
    bias = quadrant_bias(quad.data, g)[2]
    image = quad.data.astype(np.float32) - np.float32(bias)
    region = (g.image.row0, g.image.row1, g.image.col0, g.image.col1)
    return aperture_flux_ratios(
        image,
        np.asarray(job["x_image"], float) - 1.0,
        np.asarray(job["y_image"], float) - 1.0,
        job["flux_auto"],
        job["background"],
        radius_px=radius_px,
        region=region,
        subtract=job["subtract"],
    )


def aperture_correction(
    frame: Le1Frame, stars: Mapping[str, np.ndarray], cat: Mapping[str, np.ndarray],
    radius_px: float, workers: int = 1,
) -> tuple[float, float, int]:  # fmt: skip
    """Large-aperture / FLUX_AUTO flux of bright, unsaturated PSF stars (other sources inside
    the aperture subtracted): (correction, error, stars), see `aperture_correction_estimate`.
    """
    ext = np.asarray(cat["extname"]).astype(str)
    index = {(e, float(x)): i for i, (e, x) in enumerate(zip(ext, cat["x_world"], strict=True))}
    rows = np.array(
        [index.get((str(e), float(x)), -1) for e, x in zip(stars["extname"], stars["x_world"],
                                                           strict=True)],
        dtype=np.intp,
    )  # fmt: skip
    rows = rows[rows >= 0]
    flux = np.asarray(cat["flux_auto"], float)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = flux / np.asarray(cat["fluxerr_auto"], float)
    ok = (snr[rows] > APCORR_MIN_SNR) & ((np.asarray(cat["flags"])[rows].astype(int) & 4) == 0)
    rows = rows[ok]
    jobs: dict[str, dict[str, np.ndarray]] = {}
    x_all, y_all = np.asarray(cat["x_image"], float), np.asarray(cat["y_image"], float)
    for name in np.unique(ext[rows]):
        mine = rows[ext[rows] == name]
        same = ext == name
        inside, straddle = neighbour_flux(
            x_all[mine], y_all[mine], flux[mine], x_all[same], y_all[same], flux[same],
            radius_px, edge=APCORR_MARGIN_PX,
        )  # fmt: skip
        usable = straddle < APCORR_MAX_EDGE_FLUX
        mine = mine[usable]
        if mine.size:
            job = {k: np.asarray(cat[k])[mine] for k in ("x_image", "y_image", "flux_auto")}
            job["background"] = np.asarray(cat["background"])[mine]
            job["subtract"] = inside[usable]
            jobs[str(name)] = job
    if not jobs:
        return math.nan, math.nan, 0
    ratios = map_quadrants(
        frame, quadrant_aperture_ratios, args=(jobs, radius_px), names=list(jobs), workers=workers
    )
    return aperture_correction_estimate(np.concatenate(list(ratios.values())))


class GaiaPhotometry(Stage):
    """VIS stars against Gaia DR3: pointing offset, field gradients, VIS/Gaia colour relation."""

    name = "gaia"
    version = "1"
    frame_types = frozenset({"SCIENCE"})
    level = "quadrant"
    requires = ("psf",)
    header_keywords = ("DATE-OBS", "EXPTIME", "RA", "DEC")  # PA optional: blind solve

    @staticmethod
    def config_of(settings: Any) -> dict[str, Any]:
        from viskom.pipeline.calibration import resolve_relative_gains

        gains, source = resolve_relative_gains(settings)
        g = settings.gaia
        return {
            "cache_dir": str(settings.gaia_cache_path),
            "online": g.online,
            "timeout_s": g.timeout_s,
            "cone_radius_deg": g.cone_radius_deg,
            "match_radius_pix": g.match_radius_pix,
            "search_window_deg": g.search_window_deg,
            "colour_gmax": g.colour_gmax,
            "min_stars_quadratic": g.min_stars_quadratic,
            "aperture_radius_px": g.aperture_radius_px,
            "aperture_max_error": g.aperture_max_error,
            "aperture_correction_fallback": g.aperture_correction_fallback,
            "blind_solve": g.blind_solve,
            "blind_min_matched": g.blind_min_matched,
            "gains": gains,
            "gains_source": source,
        }

    def run(
        self, frame: Le1Frame, exposure: ExposureInfo, config: Mapping[str, Any]
    ) -> StageResult:
        from viskom.present.astrometry import plot_gaia_colour, plot_gaia_dxdy
        from viskom.sources.gaia import GaiaClient

        for product, ext in GAIA_PRODUCTS:
            exposure.product(product, ext).unlink(missing_ok=True)
        if str(config["gains_source"]).startswith("error"):
            raise ValueError(f"relative gains unusable: {config['gains_source']}")
        p = frame.primary
        if p.ra is None or p.dec is None:
            raise ValueError(
                "no pointing in the primary header (RA, DEC, PA): cannot choose the Gaia field"
            )
        if p.date_obs is None:
            raise ValueError("no DATE-OBS in the primary header: cannot move Gaia to the epoch")
        stars_path = exposure.product("stars", "parquet")
        if not stars_path.exists():
            raise FileNotFoundError(f"no star table at {stars_path}: run the psf stage first")
        stars = read_table(stars_path)
        exptime = exposure.exptime if exposure.exptime is not None else p.exptime
        if exptime is None or not exptime > 0:
            raise ValueError(
                f"no usable exposure time (EXPTIME {exptime}): VIS fluxes cannot be scaled "
                "to 89.52 s"
            )
        flux_auto = np.asarray(stars["flux_auto"], float)
        good = np.isfinite(flux_auto) & (flux_auto > 0)
        if not good.any():
            return StageResult.nothing(
                "no_vis_stars",
                f"the psf stage selected no stars with a positive flux ({flux_auto.size} rows):"
                " nothing to match with Gaia",
            )

        # FLUX_AUTO misses the PSF wings: measured per exposure, applied when precise enough,
        # else the configured typical value (recorded either way)
        measured, apcorr_err, n_apcorr = math.nan, math.nan, 0
        apcorr = 1.0
        if float(config["aperture_radius_px"]) > 0:
            cat = read_table(exposure.product("catalogue", "parquet"))
            measured, apcorr_err, n_apcorr = aperture_correction(
                frame, stars, cat, float(config["aperture_radius_px"]), exposure.quadrant_workers
            )
            good_apcorr = n_apcorr >= APCORR_MIN_STARS and apcorr_err <= float(
                config["aperture_max_error"]
            )
            apcorr = measured if good_apcorr else float(config["aperture_correction_fallback"])

        client = GaiaClient(
            config["cache_dir"], online=bool(config["online"]), timeout_s=config["timeout_s"]
        )
        radius = float(config["cone_radius_deg"])
        gaia = client.cone(p.ra, p.dec, radius, epoch=p.date_obs)
        if len(gaia) == 0:
            return StageResult.nothing(
                "no_gaia_stars",
                f"Gaia DR3 has no star within {radius:g} deg of RA {p.ra:.5f} Dec {p.dec:.5f}",
            )
        vis = {
            "extname": np.asarray(stars["extname"]).astype(str)[good],
            "x": np.asarray(stars["x_world"], float)[good],
            "y": np.asarray(stars["y_world"], float)[good],
            "flux": np.asarray(stars["flux_auto"], float)[good] * apcorr,
        }
        pointing = (p.ra, p.dec, p.pa)
        result = None
        if p.pa is not None:
            result = _compare(vis, gaia, pointing, exptime, config)
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
                blind = _blind_pointing(vis, gaia, p, config, why)
            except _NoMatchError as exc:
                return StageResult.nothing("no_gaia_match", str(exc))
            pointing = (blind.ra_deg, blind.dec_deg, blind.pa_deg)
            result = _compare(vis, gaia, pointing, exptime, config)
            if not result.is_real(min_matched):
                return StageResult.nothing(
                    "no_gaia_match",
                    f"{why}; on the blind solution {result.match.fit.n_matched} stars matched, "
                    f"{result.chance_matches:.0f} expected by chance",
                )
        table = write_table(result.stars, exposure.product("gaia_stars", "parquet"))
        summary = {
            **result.summary(),
            "pointing": {"ra": p.ra, "dec": p.dec, "pa": p.pa},
            "blind_solution": blind.as_dict() if blind is not None else None,
            "epoch": p.date_obs.isoformat(),
            "exptime": exptime,
            "gains_source": config["gains_source"],
            "aperture_correction": apcorr,
            "aperture_correction_measured": measured,
            "aperture_correction_error": apcorr_err,
            "aperture_correction_stars": n_apcorr,
            "colour_fits": {u: f.as_dict() for u, f in result.colour.items()},
        }
        write_json(summary, exposure.product("gaia", "json"))
        title = f"{exposure.name}  ({exptime:.2f} s)"
        plots = [
            plot_gaia_dxdy(result, exposure.product("gaia_dxdy", "png"), title=title),
            plot_gaia_colour(result, exposure.product("gaia_colour", "png"), title=title),
        ]
        metrics = [
            *result.metrics(),
            *_blind_metrics(blind, p),
            ("FPA", "gaia_aperture_correction", apcorr),
            ("FPA", "gaia_aperture_measured", measured),
            ("FPA", "gaia_aperture_error", apcorr_err),
            ("FPA", "gaia_aperture_stars", float(n_apcorr)),
        ]
        return StageResult(metrics=metrics, products=[table, *plots])


def _compare(
    vis: Mapping[str, np.ndarray],
    gaia: Any,
    pointing: tuple[float, float, float],
    exptime: float,
    config: Mapping[str, Any],
):
    """Gaia in the instrument frame of `pointing`, matched to the VIS stars (one exposure)."""
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
        gains=config["gains"],
        source_id=np.asarray(gaia["Source"], np.int64)[keep],
        match_radius_pix=float(config["match_radius_pix"]),
        window_deg=float(config["search_window_deg"]),
        colour_gmax=float(config["colour_gmax"]),
        min_stars=int(config["min_stars_quadratic"]),
    )  # fmt: skip


def _blind_pointing(vis: Mapping[str, np.ndarray], gaia: Any, p: Any, config, why: str):
    """Solve the focal-plane star list with astrometry.net on an index of the Gaia cone."""
    import tempfile

    from viskom.sources.astrometry_net import build_index, solve_star_list, tools_available

    if not config["blind_solve"]:
        raise _NoMatchError(f"{why}, and the blind solve is off ([gaia] blind_solve = false)")
    missing = tools_available()
    if missing:
        raise ValueError(f"{why}; blind solve not possible: {missing}")
    with tempfile.TemporaryDirectory(prefix="viskom-index-") as tmp:
        index = build_index(
            (np.asarray(gaia["ra_epoch"], float), np.asarray(gaia["dec_epoch"], float),
             np.asarray(gaia["Gmag"], float)),
            tmp, max_stars=BLIND_INDEX_STARS,
        )  # fmt: skip
        solution = solve_star_list(
            vis["x"], vis["y"], vis["flux"], index,
            ra_hint=p.ra, dec_hint=p.dec, radius_hint_deg=float(config["cone_radius_deg"]),
        )  # fmt: skip
    if solution is None:
        raise _NoMatchError(f"{why}, and astrometry.net found no solution around the header RA/DEC")
    return solution


def _blind_metrics(blind: Any, p: Any) -> list[tuple[str, str, float]]:
    """Whether the pointing came from a blind solve, and how far the header was from it."""
    if blind is None:
        return [("FPA", "astrom_blind_solved", 0.0)]
    cosd = math.cos(math.radians(blind.dec_deg))
    dra = ((blind.ra_deg - p.ra + 180.0) % 360.0 - 180.0) * cosd * 3600.0
    rows = [
        ("FPA", "astrom_blind_solved", 1.0),
        ("FPA", "astrom_blind_dra_arcsec", dra),
        ("FPA", "astrom_blind_ddec_arcsec", (blind.dec_deg - p.dec) * 3600.0),
        ("FPA", "astrom_blind_rms_pix", blind.rms_pix),
    ]
    if p.pa is not None:
        rows.append(("FPA", "astrom_blind_dpa_deg", (blind.pa_deg - p.pa + 180.0) % 360.0 - 180.0))
    return rows
