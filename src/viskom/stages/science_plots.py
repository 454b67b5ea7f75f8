"""Science plots stage: the per-exposure PNGs of the catalogue and PSF products.

Flux-radius diagram with the stellar-locus box (VISQL's chimney2), PSF moment maps over
the focal plane (like VISQL's map3), moments against position, and a mosaic of star
stamps. A separate stage, so that better plots can be remade (new version) without
measuring anything again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from viskom.le1.frame import Le1Frame
from viskom.measure.stars import LocusResult
from viskom.stages.base import ExposureInfo, Stage, StageResult
from viskom.stages.psf import choose_stars
from viskom.store.products import read_table


class SciencePlots(Stage):
    """PNG plots of one science exposure, written into its product folder."""

    name = "science_plots"
    version = "1"
    frame_types = frozenset({"SCIENCE"})
    level = "exposure"
    requires = ("catalogue", "psf")

    @staticmethod
    def config_of(settings: Any) -> dict[str, Any]:
        return {
            "nominal_exptime_s": settings.psf.nominal_exptime_s,
            "psf": settings.psf.model_dump(),
        }

    def run(
        self, frame: Le1Frame, exposure: ExposureInfo, config: Mapping[str, Any]
    ) -> StageResult:
        from viskom.present.plots import (
            plot_flux_radius,
            plot_moment_maps,
            plot_moments_vs_position,
            plot_star_stamps,
        )

        cat = read_table(exposure.product("catalogue", "parquet"))
        stars = read_table(exposure.product("stars", "parquet"))
        exptime = exposure.exptime or config["nominal_exptime_s"]
        # The box the psf stage actually used.
        saved = json.loads(exposure.product("locus", "json").read_text())
        locus = LocusResult(**{k: (float("nan") if v is None else v) for k, v in saved.items()})
        when = (exposure.date_obs or "")[:19].replace("T", " ")
        title = f"{exposure.name}  {when}  {exptime:g} s"
        good = {k: np.asarray(v)[np.asarray(stars["flag"]) == 0] for k, v in stars.items()}
        paths = [
            plot_flux_radius(
                cat,
                locus,
                exposure.product("flux_radius", "png"),
                title=title,
                selected=choose_stars(cat, locus, config["psf"]),
            ),
            plot_moment_maps(
                good,
                exposure.product("moment_maps", "png"),
                title=title,
                # sparse fields (short exposures, small test frames): show single stars too
                min_stars=1 if len(good["r2"]) < 300 else 3,
            ),
            plot_moments_vs_position(
                good, exposure.product("moments_position", "png"), title=title
            ),
        ]
        stamps_path = exposure.product("stamps", "npz")
        if stamps_path.exists():
            with np.load(stamps_path) as z:
                stamps, labels = z["stamps"], [str(s) for s in z["labels"]]
        else:
            stamps, labels = np.zeros((0, 29, 29)), []
        paths.append(
            plot_star_stamps(stamps, exposure.product("stamps", "png"), labels=labels, title=title)
        )
        return StageResult(metrics=[], products=paths)
