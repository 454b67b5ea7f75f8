"""Science plots stage: the per-exposure PNGs of the catalogue and PSF products.

Flux-radius diagram with the stellar-locus box (VISQL's chimney2), PSF moment maps over
the focal plane (like VISQL's map3), moments against position, and a mosaic of star
stamps. A separate stage, so that better plots can be remade (new version) without
measuring anything again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from viskom.le1.frame import Le1Frame
from viskom.measure.psf_stars import choose_stars
from viskom.measure.stars import LocusResult
from viskom.stages.base import ProductInput, ProductSpec, Stage, StageInputs, StageResult


class SciencePlots(Stage):
    """PNG plots of one science exposure (figures from `viskom.present`)."""

    name = "science_plots"
    version = "1"
    imports = ("viskom.present.moment_maps", "viskom.present.psf_plots")
    frame_types = frozenset({"SCIENCE"})
    inputs = (
        ProductInput("catalogue", "catalogue"),
        ProductInput("psf", "stars"),
        ProductInput("psf", "locus"),
        ProductInput("psf", "stamps", optional=True),
    )
    products = (
        ProductSpec("flux_radius", "png", "flux-radius diagram with the star box"),
        ProductSpec("moment_maps", "png", "PSF moment maps over the focal plane"),
        ProductSpec("moments_position", "png", "PSF moments against position"),
        ProductSpec("stamps", "png", "mosaic of star stamps"),
    )

    @classmethod
    def config_of(cls, settings: Any) -> dict[str, Any]:
        return {
            "nominal_exptime_s": settings.psf.nominal_exptime_s,
            "psf": settings.psf.model_dump(mode="json"),
        }

    def run(self, frame: Le1Frame, inputs: StageInputs, config: Mapping[str, Any]) -> StageResult:
        from viskom.present.moment_maps import plot_moment_maps
        from viskom.present.psf_plots import (
            plot_flux_radius,
            plot_moments_vs_position,
            plot_star_stamps,
        )

        exposure = inputs.exposure
        cat, stars = inputs.product("catalogue"), inputs.product("stars")
        exptime = exposure.exptime or config["nominal_exptime_s"]
        # The box the psf stage actually used.
        saved = inputs.product("locus")
        locus = LocusResult(**{k: (float("nan") if v is None else v) for k, v in saved.items()})
        when = (exposure.date_obs or "")[:19].replace("T", " ")
        title = f"{exposure.name}  {when}  {exptime:g} s"
        good = {k: np.asarray(v)[np.asarray(stars["flag"]) == 0] for k, v in stars.items()}
        stamps = inputs.product("stamps") or {"stamps": np.zeros((0, 29, 29)), "labels": []}
        figures = {
            "flux_radius": plot_flux_radius(
                cat, locus, title=title, selected=choose_stars(cat, locus, config["psf"])
            ),
            # sparse fields (short exposures, small test frames): show single stars too
            "moment_maps": plot_moment_maps(
                good, title=title, min_stars=1 if len(good["r2"]) < 300 else 3
            ),
            "moments_position": plot_moments_vs_position(good, title=title),
            "stamps": plot_star_stamps(
                stamps["stamps"], labels=[str(s) for s in stamps["labels"]], title=title
            ),
        }
        return StageResult(products=figures)
