"""Catalogue stage: the sources of every quadrant of SCIENCE, FLAT and DARK frames (Parquet).

A quadrant whose geometry, GAIN (flux errors) or SATURATE (saturation flags) keyword is
unusable or missing-when-needed is left out with a `bad_header_value` quality outcome
rather than measured with a default; when no quadrant is left the stage records `empty`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from viskom.le1.frame import Le1Frame, Quadrant
from viskom.le1.quadrant_map import map_quadrants
from viskom.le1.wcs import QuadrantWcs
from viskom.measure.catalogue import (
    QUICKLOOK_PARAMS,
    ExtractionParams,
    catalogue_metrics,
    extract_sources,
    merge_catalogues,
    sextractor_quadrant,
)
from viskom.measure.detector import quadrant_bias
from viskom.stages.base import ProductSpec, Stage, StageInputs, StageResult, usable_quadrants

if TYPE_CHECKING:
    from viskom.measure.sky import SkyMesh


def quadrant_catalogue(quad: Quadrant, params: ExtractionParams) -> dict[str, np.ndarray]:
    """Sources of one quadrant: bias removed, positions 1-based in the quadrant array and in
    the instrument frame (deg)."""
    return quadrant_sources(quad, params)[0]


def quadrant_sources(
    quad: Quadrant, params: ExtractionParams
) -> tuple[dict[str, np.ndarray], SkyMesh]:
    """`quadrant_catalogue`, and the sky meshes it was measured on (above the bias), which
    the events stage reads instead of measuring the same sky again."""
    from viskom.measure.sky import sky_mesh  # lazily: numba

    g = quad.geometry
    bias = quadrant_bias(quad.data, g)[2]
    image = quad.data[g.image.slices].astype(np.float32)
    image -= np.float32(bias)
    saturation = quad.header.saturate_adu
    sky = sky_mesh(image, params.back_size, params.back_filtersize)
    cat = extract_sources(
        image,
        gain_e_per_adu=quad.header.gain_e_per_adu,
        saturation_adu=None if saturation is None else saturation - bias,
        params=params,
        overwrite=True,  # `image` is this function's own copy
        sky=sky,
    )
    del image
    cat["x_image"] = cat["x_image"] + g.image.col0
    cat["y_image"] = cat["y_image"] + g.image.row0
    n = len(cat["number"])
    if n:
        wcs = QuadrantWcs.from_header(quad.fits_header, quad.extname)
        x_world, y_world = wcs.pixel_to_instrument(cat["x_image"] - 1.0, cat["y_image"] - 1.0)
    else:
        x_world = y_world = np.zeros(0)
    cat["x_world"], cat["y_world"] = np.asarray(x_world), np.asarray(y_world)
    cat["field_radius"] = np.hypot(cat["x_world"], cat["y_world"])
    cat["extname"] = np.full(n, quad.extname, dtype=object)
    return cat, sky


def sextractor_catalogue(
    frame: Le1Frame, run_sextractor: Any, names: list[str] | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """The optional engine: Debian's source-extractor with VISQL's configuration on the
    whole raw frame, converted to this stage's columns, per quadrant. SExtractor measures
    the raw pixels, so its BACKGROUND includes the bias: the quadrant's bias is removed to
    give the same meaning as sep's (sky above bias). Only the quadrants `names` (default all)
    are kept. `run_sextractor(path)` runs the program (`sources.sextractor`)."""
    sex = run_sextractor(frame.path)
    ext_of = np.array([frame.extname_of_hdu(int(n)) or "" for n in sex["ext_number"]])
    out = {}
    for name in frame.quadrant_extnames if names is None else names:
        quad = frame.quadrant(name)
        g = quad.geometry
        bias = quadrant_bias(quad.data, g)[2]
        image = quad.data[g.image.slices].astype(np.float32) - np.float32(bias)
        out[name] = sextractor_quadrant(
            sex, np.flatnonzero(ext_of == name), name, image, bias, (g.image.row0, g.image.col0)
        )
    return out


class Catalogue(Stage):
    """Source extraction on every quadrant: sep with VISQL's SExtractor settings (default), or
    Debian's source-extractor itself (`catalogue_engine = "source-extractor"`)."""

    name = "catalogue"
    version = "2"
    imports = (
        "sep", "viskom.measure.sky", "viskom.measure.sky_kernels",
        "viskom.measure.hit_kernels", "viskom.sources.sextractor",
    )  # fmt: skip
    frame_types = frozenset({"SCIENCE", "FLAT", "DARK"})
    external = ("source_extractor",)
    parallel_quadrants = True
    products = (
        ProductSpec("catalogue", "parquet", "sources of every quadrant (one row each)"),
        ProductSpec("sky", "npz", "the sky and noise meshes of every quadrant (sep engine)"),
    )

    @classmethod
    def config_of(cls, settings: Any) -> dict[str, Any]:
        quick = getattr(settings, "catalogue_depth", "full") == "quicklook"
        params = QUICKLOOK_PARAMS if quick else ExtractionParams()
        config = asdict(params)
        # the quick-look-only settings are left out at VISQL's depth: a store measured before
        # they existed is not measured again for settings that change nothing there
        if params.shape_thresh is None:
            for key in ("shape_thresh", "shape_box_px", "shape_sharp_min"):
                config.pop(key)
        if params.thin_rmax_a == ExtractionParams.thin_rmax_a:
            config.pop("thin_rmax_a")
        if params.hit_mask_fraction is None:
            config.pop("hit_mask_fraction")
        return {**config, "engine": settings.catalogue_engine}

    def run(self, frame: Le1Frame, inputs: StageInputs, config: Mapping[str, Any]) -> StageResult:
        cfg = dict(config)
        engine = cfg.pop("engine", "sep")
        names, outcomes = usable_quadrants(frame)
        skies = {}
        if not names:
            per_quadrant = {}
        elif engine == "source-extractor":
            per_quadrant = sextractor_catalogue(frame, inputs.source("source_extractor"), names)
        else:
            params = ExtractionParams(**cfg)
            both = map_quadrants(
                frame,
                quadrant_sources,
                args=(params,),
                names=names,
                workers=inputs.exposure.quadrant_workers,
            )
            per_quadrant = {ext: cat for ext, (cat, _sky) in both.items()}
            skies = {ext: sky for ext, (_cat, sky) in both.items()}
        products = {
            "catalogue": merge_catalogues(per_quadrant)
        }  # an empty table all the same: downstream reads it
        if skies:
            from viskom.measure.sky import sky_product

            products["sky"] = sky_product(skies)
        if not per_quadrant:
            return StageResult(products=products, outcomes=outcomes, measured=False)
        return StageResult(
            metrics=catalogue_metrics(per_quadrant), products=products, outcomes=outcomes
        )
