"""Mosaic astrometry stage: the science mosaic solved blind with astrometry.net (VISQL's getastrom).

VISQL solves every science thumbnail with `solve-field` and keeps its TAN-SIP `.wcs`
(VISQL-SPEC 4.4). Here the images stage's FITS mosaic is solved (`sources.astrometry_net.
image`: astrometry.net's own source finder on the binned picture, the mosaic's scale and
parity, an index built from the Gaia DR3 cone around the header pointing) and compared with
the WCS the header pointing gives the same mosaic (`measure.mosaic_astrometry`): offsets of
the centre, rotation, scale and the largest offset over the plane say how good the header
pointing is, independently of the PSF stage's star list the gaia stage uses.

Quality outcomes (status `empty`, no solution metrics): a compact mosaic (small frames) or one
without a sky WCS (`no_sky_layout`), astrometry.net not installed (`no_solver`), no Gaia star
(`no_gaia_stars`), no solution in time (`not_solved`); `[images] blind_solve = false` turns the
stage off (`blind_solve_off`). Products: `_mosaic_wcs.fits` (the solution's header, VISQL's
`.wcs`, to load on the mosaic in ds9).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from viskom.le1.frame import Le1Frame
from viskom.measure.mosaic_astrometry import parity_of, solution_offsets
from viskom.stages.base import ProductInput, ProductSpec, Stage, StageInputs, StageResult

INDEX_STARS = 20000  # brightest Gaia stars in the index (about 30000 per deg2 to G = 21)


class MosaicAstrometry(Stage):
    """Blind astrometric solution of the science mosaic, against the header pointing."""

    name = "mosaic_astrometry"
    version = "1"
    imports = ("astropy.wcs", "viskom.sources.astrometry_net")
    frame_types = frozenset({"SCIENCE"})
    inputs = (ProductInput("images", "mosaic_image"),)
    external = ("gaia_cone", "blind_solver")
    config_section = "images"
    config_keys = ("blind_solve", "blind_timeout_s")
    header_keywords = ("DATE-OBS", "RA", "DEC")
    products = (ProductSpec("mosaic_wcs", "fits", "TAN-SIP solution of the mosaic (VISQL's .wcs)"),)

    def run(self, frame: Le1Frame, inputs: StageInputs, config: Mapping[str, Any]) -> StageResult:
        from astropy.io import fits
        from astropy.wcs import WCS

        if not config["blind_solve"]:
            return StageResult.nothing("blind_solve_off", "[images] blind_solve = false")
        picture = inputs.product("mosaic_image")
        header = fits.getheader(picture)
        if header.get("COMPACT") or "CTYPE1" not in header:
            return StageResult.nothing(
                "no_sky_layout",
                "the mosaic is compact (small quadrants packed in a 12x12 grid) or has no sky "
                "WCS: a blind solution needs the true focal-plane layout",
            )
        solver = inputs.source("blind_solver")
        if missing := solver.missing():
            return StageResult.nothing("no_solver", f"no blind solution: {missing}")
        expected = WCS(header, relax=True)
        width, height = int(header["NAXIS1"]), int(header["NAXIS2"])
        scale_arcsec = float(np.sqrt(abs(np.linalg.det(expected.pixel_scale_matrix)))) * 3600.0
        p = frame.primary
        radius = 0.5 * math.hypot(width, height) * scale_arcsec / 3600.0 * 1.05
        gaia = inputs.source("gaia_cone")(p.ra, p.dec, radius, p.date_obs)
        if len(gaia) == 0:
            return StageResult.nothing(
                "no_gaia_stars",
                f"Gaia DR3 has no star within {radius:.2f} deg of RA {p.ra:.5f} Dec {p.dec:.5f}",
            )
        solution = solver.solve_picture(
            picture,
            (np.asarray(gaia["ra_epoch"], float), np.asarray(gaia["dec_epoch"], float),
             np.asarray(gaia["Gmag"], float)),
            scale_arcsec=scale_arcsec, parity=parity_of(expected.pixel_scale_matrix), ra_hint=p.ra,
            dec_hint=p.dec, radius_hint_deg=radius, index_stars=INDEX_STARS,
            timeout_s=float(config["blind_timeout_s"]),
        )  # fmt: skip
        if solution is None:
            return StageResult.nothing(
                "not_solved",
                f"astrometry.net found no solution of the {width}x{height} mosaic within "
                f"{float(config['blind_timeout_s']):g} s around the header RA/Dec",
            )
        offsets = solution_offsets(solution.wcs(), expected, width, height)
        metrics = [
            ("FPA", "mosaic_wcs_dra_arcsec", offsets["dra_arcsec"]),
            ("FPA", "mosaic_wcs_ddec_arcsec", offsets["ddec_arcsec"]),
            ("FPA", "mosaic_wcs_drot_deg", offsets["drot_deg"]),
            ("FPA", "mosaic_wcs_scale_ratio", offsets["scale_ratio"]),
            ("FPA", "mosaic_wcs_max_offset_arcsec", offsets["max_offset_arcsec"]),
            ("FPA", "mosaic_wcs_rms_arcsec", solution.rms_arcsec),
            ("FPA", "mosaic_wcs_stars", float(solution.n_matched)),
            ("FPA", "mosaic_wcs_seconds", solution.seconds),
        ]
        out = fits.Header()
        out.update(solution.header)
        out["ROTANGLE"] = (solution.rotation_deg(), "VISQL rotation angle (getastrom:34), deg")
        out["NMATCH"] = (solution.n_matched, "stars matched by astrometry.net")
        out["ORIGIN"] = "viskom (astrometry.net solve-field)"
        return StageResult(metrics=metrics, products={"mosaic_wcs": fits.PrimaryHDU(header=out)})
