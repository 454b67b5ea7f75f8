"""Events stage: particle hits on SCIENCE and DARK frames, by both methods, per quadrant.

The pixel-level detector (`measure.cosmics.detect_hits`) runs on every quadrant with the
catalogue's star-like sources as guards and the current hot-pixel map as a mask; its hits go
to `<exposure>_hits.parquet`. VISQL's catalogue classes are counted from the catalogue.
Metrics per quadrant, CCD and FPA: `cr_hits`, `cr_hits_per_cm2_s` (exposure + half the 72 s
readout, 12 um pixels, masked pixels excluded), `cr_pixel_fraction`, `xray_candidates`
(point-like 400-1200 ADU hits), `xray_events` (those minus the cosmic rays that look like
them), `proton_events`, and the catalogue counts `cat_xray`, `cat_cosmics`, `cat_protons`;
on the FPA also VISQL's `xray_top10count` and `proton_top10count`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from viskom.le1.frame import Le1Frame, Quadrant
from viskom.le1.geometry import parse_extname
from viskom.le1.wcs import QuadrantWcs
from viskom.measure.cosmics import (
    HitParams,
    catalogue_classes,
    detect_hits,
    long_tracks,
    rate_per_cm2_s,
    top10count,
    xray_excess,
)
from viskom.measure.detector import quadrant_bias
from viskom.pipeline.calibration import hot_pixel_map_path, load_hot_pixels
from viskom.stages.base import ExposureInfo, Stage, StageResult
from viskom.stages.quadrants import map_quadrants
from viskom.store.products import read_table, write_table

#: Guards: catalogue sources that look like stars (not compact hits, not thin tracks, not
#: large galaxies) and the radius around them, 3 px + 2 FLUX_RADIUS.
GUARD_MIN_RADIUS, GUARD_MAX_RADIUS, GUARD_MIN_B = 0.9, 3.0, 1.0

HIT_TABLE_COLUMNS = (
    "extname", "x_image", "y_image", "x_world", "y_world",
    "npix", "charge_adu", "peak_adu", "length_px", "kind",
)  # fmt: skip


def star_guards(cat: Mapping[str, np.ndarray]) -> dict[str, tuple[np.ndarray, ...]]:
    """Per quadrant: (x, y, radius) of star-like catalogue sources, 1-based array pixels."""
    fr = np.asarray(cat["flux_radius"], float)
    b = np.asarray(cat["b_image"], float)
    keep = (fr >= GUARD_MIN_RADIUS) & (fr <= GUARD_MAX_RADIUS) & (b >= GUARD_MIN_B)
    ext = np.asarray(cat["extname"]).astype(str)
    out = {}
    for name in np.unique(ext[keep]):
        sel = keep & (ext == name)
        out[str(name)] = (
            np.asarray(cat["x_image"], float)[sel],
            np.asarray(cat["y_image"], float)[sel],
            3.0 + 2.0 * fr[sel],
        )
    return out


def quadrant_hits(
    quad: Quadrant,
    guards: Mapping[str, tuple[np.ndarray, ...]],
    hot: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """Hits of one quadrant: table rows (1-based array pixels, instrument frame) and counts."""
    g = quad.geometry
    bias = quadrant_bias(quad.data, g)[2]
    image = quad.data[g.image.slices].astype(np.float32)
    image -= np.float32(bias)
    objects = None
    if quad.extname in guards:
        x, y, r = guards[quad.extname]
        objects = (x - 1.0 - g.image.col0, y - 1.0 - g.image.row0, r)
    saturation = quad.header.saturate_adu
    hits = detect_hits(
        image,
        gain_e_per_adu=quad.header.gain_e_per_adu or 3.4,
        saturation_adu=None if saturation is None else saturation - bias,
        objects=objects,
        hot_pixels=hot.get(quad.extname),
        params=HitParams(**params),
    )
    del image
    n = hits["x"].size
    x_image = hits["x"] + g.image.col0 + 1.0
    y_image = hits["y"] + g.image.row0 + 1.0
    if n:
        wcs = QuadrantWcs.from_header(quad.fits_header, quad.extname)
        xw, yw = (np.asarray(a) for a in wcs.pixel_to_instrument(x_image - 1.0, y_image - 1.0))
    else:
        xw = yw = np.zeros(0)
    hot_masked = 0 if quad.extname not in hot else int(hot[quad.extname].size)
    return {
        "table": {
            "extname": np.full(n, quad.extname, dtype=object),
            "x_image": x_image,
            "y_image": y_image,
            "x_world": xw,
            "y_world": yw,
            "npix": hits["npix"],
            "charge_adu": hits["charge_adu"],
            "peak_adu": hits["peak_adu"],
            "length_px": hits["length_px"],
            "kind": hits["kind"],
        },
        "measured_pixels": int(hits["image_pixels"] - hits["masked_pixels"]),
        "hit_pixels": int(hits["hit_pixels"]),
        "hot_pixels_masked": hot_masked,
        "confusion_fraction": float(hits["confusion_fraction"]),
    }


def count_metrics(
    unit: str,
    kind: np.ndarray,
    length_px: np.ndarray,
    measured_pixels: float,
    hit_pixels: float,
    exptime: float,
    params: HitParams,
    confusion_fraction: float = 0.0,
) -> list[tuple[str, str, float]]:
    """Hit counts and rates of one unit (quadrant, CCD or FPA)."""
    n_x = float(np.count_nonzero(kind == "xray"))
    n_long = float(np.count_nonzero(long_tracks(length_px, params) & (kind == "cosmic")))
    n = float(kind.size)
    return [
        (unit, "cr_hits", n),
        (unit, "cr_hits_per_cm2_s", rate_per_cm2_s(n, measured_pixels, exptime)),
        (unit, "cr_pixel_fraction", hit_pixels / measured_pixels if measured_pixels else np.nan),
        (unit, "xray_candidates", n_x),
        (unit, "long_tracks", n_long),
        (
            unit,
            "xray_events",
            xray_excess(n_x, n_long, params.xray_cosmic_ratio, confusion_fraction),
        ),
        (unit, "proton_events", float(np.count_nonzero(kind == "proton"))),
    ]


class Events(Stage):
    """Cosmic rays, X-ray events and protons: pixel-level hits and VISQL's catalogue classes."""

    name = "events"
    version = "1"
    frame_types = frozenset({"SCIENCE", "DARK"})
    level = "quadrant"
    requires = ("catalogue",)

    @staticmethod
    def config_of(settings: Any) -> dict[str, Any]:
        return {
            "hits": settings.events.hit_params(),
            "hot_pixel_map": str(hot_pixel_map_path(settings.products_path)),
        }

    def run(
        self, frame: Le1Frame, exposure: ExposureInfo, config: Mapping[str, Any]
    ) -> StageResult:
        params = HitParams(**config["hits"])
        cat = read_table(exposure.product("catalogue", "parquet"))
        hot, _darks = load_hot_pixels(config["hot_pixel_map"])
        per_quadrant = map_quadrants(
            frame,
            quadrant_hits,
            args=(star_guards(cat), hot, config["hits"]),
            workers=exposure.quadrant_workers,
        )
        exptime = float(exposure.exptime or 0.0)
        tables = {c: [] for c in HIT_TABLE_COLUMNS}
        metrics: list[tuple[str, str, float]] = []
        # units: every quadrant, every CCD (R-C) and the focal plane
        groups: dict[str, list[str]] = {ext: [ext] for ext in per_quadrant}
        for ext in per_quadrant:
            groups.setdefault(parse_extname(ext).ccd, []).append(ext)
        groups["FPA"] = list(per_quadrant)
        for res in per_quadrant.values():
            for c in HIT_TABLE_COLUMNS:
                tables[c].append(res["table"][c])
        merged = {c: np.concatenate(v) if v else np.zeros(0) for c, v in tables.items()}
        merged["extname"] = merged["extname"].astype(str)
        merged["kind"] = merged["kind"].astype(str)
        path = write_table(merged, exposure.product("hits", "parquet"))
        # catalogue classes (VISQL)
        cat_ext = np.asarray(cat["extname"]).astype(str)
        classes = catalogue_classes(cat["flux_auto"], cat["flux_radius"])
        for unit, members in groups.items():
            sel_hits = np.isin(merged["extname"], members)
            measured = sum(per_quadrant[m]["measured_pixels"] for m in members)
            hit_pixels = sum(per_quadrant[m]["hit_pixels"] for m in members)
            confusion = sum(
                per_quadrant[m]["confusion_fraction"] * per_quadrant[m]["measured_pixels"]
                for m in members
            ) / max(measured, 1)
            metrics += count_metrics(
                unit,
                merged["kind"][sel_hits],
                merged["length_px"][sel_hits],
                measured,
                hit_pixels,
                exptime,
                params,
                confusion,
            )
            sel_cat = np.isin(cat_ext, members)
            for cls in ("xray", "cosmics", "protons"):
                metrics.append(
                    (unit, f"cat_{cls}", float(np.count_nonzero(classes[cls] & sel_cat)))
                )
        metrics.append(
            (
                "FPA",
                "hot_pixels_masked",
                float(sum(r["hot_pixels_masked"] for r in per_quadrant.values())),
            )
        )
        xw = np.asarray(cat["x_world"], float)
        yw = np.asarray(cat["y_world"], float)
        metrics.append(
            ("FPA", "xray_top10count", top10count(xw[classes["xray"]], yw[classes["xray"]]))
        )
        metrics.append(
            ("FPA", "proton_top10count", top10count(xw[classes["protons"]], yw[classes["protons"]]))
        )
        return StageResult(metrics=metrics, products=[path])
