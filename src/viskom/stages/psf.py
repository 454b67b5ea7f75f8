"""PSF stage: stars on the stellar locus, their Gaussian-weighted moments, and the IQ score.

Reads the exposure's catalogue (catalogue stage), finds the stellar locus over the whole focal
plane from the data (`measure.stars.find_stellar_locus`; VISQL's chimney with
`selection = "visql"`), rejects the stars whose moments would be wrong before measuring them
(saturated, blended with another object, hit by a particle in the core), measures the moments
of the others quadrant by quadrant on the raw pixels (bias and local sky removed, particle hits
and neighbours elsewhere in the stamp replaced by the star's mirrored profile), and stores
per-exposure (FPA) and per-CCD medians and the IQ score. A field without a locus, or without a
clean star, is a result, not an error: the stage records the quality outcome
(`no_stellar_locus`, `no_clean_stars`) and measures nothing. The science is in
`measure.psf_stars`; this module opens the quadrants and hands the results over.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np

from viskom.le1.frame import Le1Frame, Quadrant
from viskom.le1.quadrant_map import map_quadrants
from viskom.measure.detector import quadrant_bias
from viskom.measure.iq import IQReference
from viskom.measure.psf_stars import (
    choose_stars,
    clean_star_moments,
    find_locus,
    merge_star_tables,
    neighbours_of_stars,
    psf_metric_rows,
    stars_by_quadrant,
)
from viskom.measure.stars import blended_stars
from viskom.stages.base import ProductInput, ProductSpec, Stage, StageInputs, StageResult


def quadrant_moments(
    quad: Quadrant,
    stars: Mapping[str, np.ndarray],
    neighbours: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    """Moments of one quadrant's selected stars (positions from the catalogue, 1-based) on
    its raw pixels, bias removed (`measure.psf_stars.clean_star_moments`)."""
    bias = quadrant_bias(quad.data, quad.geometry)[2]
    return clean_star_moments(quad.data, bias, quad.header.saturate_adu, stars, neighbours, params)


def _moments_of(
    quad: Quadrant,
    jobs: Mapping[str, Mapping[str, np.ndarray]],
    near: Mapping[str, Mapping[str, np.ndarray]],
    params: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    return quadrant_moments(quad, jobs[quad.extname], near[quad.extname], params)


class PsfMoments(Stage):
    """Star selection, PSF moments and IQ score for SCIENCE frames."""

    name = "psf"
    version = "2"
    imports = ("scipy.ndimage",)
    frame_types = frozenset({"SCIENCE"})
    inputs = (ProductInput("catalogue", "catalogue"),)
    config_section = "psf"
    products = (
        ProductSpec("stars", "parquet", "the measured stars: moments, flags, positions"),
        ProductSpec("stamps", "npz", "a few clean star stamps per quadrant, for the mosaic"),
        ProductSpec("locus", "json", "the stellar locus: box, limits, how it was found"),
    )

    @classmethod
    def config_of(cls, settings: Any) -> dict[str, Any]:
        return {**super().config_of(settings), "iq": settings.iq.reference_mapping()}

    def run(self, frame: Le1Frame, inputs: StageInputs, config: Mapping[str, Any]) -> StageResult:
        exposure = inputs.exposure
        cat = inputs.product("catalogue")
        locus = find_locus(cat, config, exposure.exptime)
        idx = np.flatnonzero(choose_stars(cat, locus, config))
        blended = blended_stars(cat, idx, locus, config)
        by_ext, jobs = stars_by_quadrant(cat, idx, blended, frame.quadrant_extnames)
        h = int(config["stamp_half_size_px"])
        near = neighbours_of_stars(cat, jobs, h + 3)
        results = map_quadrants(
            frame,
            _moments_of,
            args=(jobs, near, dict(config)),
            names=list(jobs),
            workers=exposure.quadrant_workers,
        )
        stars, stamps, stamp_labels = merge_star_tables(cat, by_ext, results)
        products = {
            "stars": stars,
            "stamps": {
                "stamps": np.stack(stamps) if stamps else np.zeros((0, 2 * h + 1, 2 * h + 1)),
                "labels": np.asarray(stamp_labels, dtype=str),
            },
            "locus": asdict(locus),
        }
        if not locus.found:
            return StageResult.nothing(
                "no_stellar_locus", locus.reason or "no stellar locus", products=products
            )
        metrics = psf_metric_rows(stars, locus, IQReference.from_mapping(config["iq"]))
        n_good = int(np.sum(np.asarray(stars["flag"]) == 0))
        if n_good == 0:
            counts = ", ".join(f"{m[1]} {m[2]:g}" for m in metrics if m[1].startswith("n_"))
            return StageResult.nothing(
                "no_clean_stars",
                f"a stellar locus at {locus.rc:.2f} px but no star left to measure ({counts})",
                products=products,
            )
        return StageResult(metrics=metrics, products=products)
