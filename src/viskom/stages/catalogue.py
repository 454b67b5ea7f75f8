"""Catalogue stage: the sources of every quadrant of SCIENCE, FLAT and DARK frames (Parquet).

A quadrant whose geometry, GAIN (flux errors) or SATURATE (saturation flags) keyword is
unusable or missing-when-needed is left out with a `bad_header_value` quality outcome
rather than measured with a default; when no quadrant is left the stage records `empty`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np

from viskom.le1.focalplane import unwrap_longitude
from viskom.le1.frame import Le1Frame, Quadrant
from viskom.le1.wcs import QuadrantWcs
from viskom.measure.catalogue import CATALOGUE_COLUMNS, ExtractionParams, extract_sources
from viskom.measure.cosmics import sharpness_ratios
from viskom.measure.detector import quadrant_bias
from viskom.stages.base import ExposureInfo, Stage, StageResult, usable_quadrants
from viskom.stages.quadrants import map_quadrants
from viskom.store.products import write_table

#: Columns of the exposure catalogue: the quadrant, the per-quadrant measurements, and the
#: instrument-frame position after the pixel position.
COLUMNS = (
    "extname",
    *CATALOGUE_COLUMNS[:3],
    "x_world",
    "y_world",
    "field_radius",
    *CATALOGUE_COLUMNS[3:],
)


def quadrant_catalogue(quad: Quadrant, params: ExtractionParams) -> dict[str, np.ndarray]:
    """Sources of one quadrant: bias removed, positions 1-based in the quadrant array and in
    the instrument frame (deg)."""
    g = quad.geometry
    bias = quadrant_bias(quad.data, g)[2]
    image = quad.data[g.image.slices].astype(np.float32)
    image -= np.float32(bias)
    saturation = quad.header.saturate_adu
    cat = extract_sources(
        image,
        gain_e_per_adu=quad.header.gain_e_per_adu,
        saturation_adu=None if saturation is None else saturation - bias,
        params=params,
    )
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
    return cat


def sextractor_catalogue(
    frame: Le1Frame, names: list[str] | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """The optional engine: Debian's source-extractor with VISQL's configuration on the
    whole raw frame, converted to this stage's columns, per quadrant. SExtractor measures
    the raw pixels, so its BACKGROUND includes the bias: the quadrant's bias is removed to
    give the same meaning as sep's (sky above bias). Only the quadrants `names` (default all)
    are kept."""
    from viskom.sources.sextractor import run_sextractor

    sex = run_sextractor(frame.path)
    ext_of = np.array([frame.extname_of_hdu(int(n)) or "" for n in sex["ext_number"]])
    out = {}
    for name in frame.quadrant_extnames if names is None else names:
        rows = np.flatnonzero(ext_of == name)
        quad = frame.quadrant(name)
        bias = quadrant_bias(quad.data, quad.geometry)[2]
        x_world = np.asarray(unwrap_longitude(sex["x_world"][rows]))
        g = quad.geometry
        image = quad.data[g.image.slices].astype(np.float32) - np.float32(bias)
        sky = sex["background"][rows] - bias
        single, pair = sharpness_ratios(
            image, sex["x_image"][rows] - 1.0 - g.image.col0,
            sex["y_image"][rows] - 1.0 - g.image.row0, sky,
        )  # fmt: skip
        out[name] = {
            "extname": np.full(rows.size, name, dtype=object),
            "number": sex["number"][rows].astype(np.int32),
            "x_image": sex["x_image"][rows],
            "y_image": sex["y_image"][rows],
            "x_world": x_world,
            "y_world": sex["y_world"][rows],
            "field_radius": np.hypot(x_world, sex["y_world"][rows]),
            "flux_auto": sex["flux_auto"][rows],
            "fluxerr_auto": sex["fluxerr_auto"][rows],
            "flux_radius": sex["flux_radius"][rows],
            "a_image": sex["a_image"][rows],
            "b_image": sex["b_image"][rows],
            "theta_image": sex["theta_image"][rows],
            "kron_radius": sex["kron_radius"][rows],
            "flags": sex["flags"][rows].astype(np.int32),
            "peak": sex["flux_max"][rows],
            "area": sex["isoarea_image"][rows].astype(np.int32),
            "background": sky,
            "sharp_single": single,
            "sharp_pair": pair,
        }
    return out


class Catalogue(Stage):
    """Source extraction on every quadrant: sep with VISQL's SExtractor settings (default), or
    Debian's source-extractor itself (`catalogue_engine = "source-extractor"`)."""

    name = "catalogue"
    version = "2"
    frame_types = frozenset({"SCIENCE", "FLAT", "DARK"})
    level = "quadrant"

    @staticmethod
    def config_of(settings: Any) -> dict[str, Any]:
        return {**asdict(ExtractionParams()), "engine": settings.catalogue_engine}

    def run(
        self, frame: Le1Frame, exposure: ExposureInfo, config: Mapping[str, Any]
    ) -> StageResult:
        cfg = dict(config)
        engine = cfg.pop("engine", "sep")
        names, outcomes = usable_quadrants(frame)
        if not names:
            per_quadrant = {}
        elif engine == "source-extractor":
            per_quadrant = sextractor_catalogue(frame, names)
        else:
            per_quadrant = map_quadrants(
                frame,
                quadrant_catalogue,
                args=(ExtractionParams(**cfg),),
                names=names,
                workers=exposure.quadrant_workers,
            )
        table = {c: [] for c in COLUMNS}
        metrics = []
        for ext, cat in per_quadrant.items():
            for c in COLUMNS:
                table[c].append(cat[c])
            metrics.append((ext, "n_sources", float(len(cat["number"]))))
            metrics.append((ext, "sky_background_adu", _median(cat["background"])))
        merged = {c: np.concatenate(v) if v else np.zeros(0) for c, v in table.items()}
        merged["extname"] = merged["extname"].astype(str)
        path = write_table(merged, exposure.product("catalogue", "parquet"))
        if not per_quadrant:  # an empty table all the same: downstream stages read it
            return StageResult(products=[path], outcomes=outcomes, measured=False)
        counts = np.array([m[2] for m in metrics if m[1] == "n_sources"])
        metrics.append(("FPA", "n_sources", float(counts.sum())))
        by_ccd: dict[str, float] = {}
        for ext, name, value in metrics:
            if name == "n_sources" and ext != "FPA":
                ccd = ext.split(".")[0]
                by_ccd[ccd] = by_ccd.get(ccd, 0.0) + value
        metrics.extend((ccd, "n_sources", v) for ccd, v in sorted(by_ccd.items()))
        return StageResult(metrics=metrics, products=[path], outcomes=outcomes)


def _median(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.median(values)) if values.size else float("nan")
