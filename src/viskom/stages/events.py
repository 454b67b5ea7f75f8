"""Events stage: particle hits on SCIENCE and DARK frames, by both methods, per quadrant.

The pixel-level detector (`measure.cosmics.detect_hits`) runs on every quadrant with the
catalogue's star-like sources as guards, its PSF limits measured on the frame's own stars (the
catalogue's stellar locus and their sharpness, `psf_single_ratio_limit`, `psf_pair_ratio_limit`)
and the current hot-pixel map as a mask; its hits go to `<exposure>_hits.parquet`. Hits are
classified one by one, with the charge diffusion measured on this frame's own tracks
(`diffusion_var_px2`). VISQL's catalogue classes are
counted from the catalogue. Metrics per quadrant, CCD and FPA: `cr_hits` (distinct hits),
`cr_hits_per_cm2_s` (exposure + half the 72 s readout, 12 um pixels, masked pixels excluded),
`cr_particles` and `cr_particles_per_cm2_s` (hits corrected for deposits that touch and count
as one, `measure.cosmics.touch_probability`), `cr_pixel_fraction`,
`xray_candidates` (point deposits of 400-1200 ADU), `cr_tracks` (hits with a track),
`xray_events` (the candidates net of the near-vertical cosmic rays among them, from the
quiet-frame baseline; absent, with the outcome `no_xray_baseline`, until the store has one),
`xray_events_err`, `xray_contamination`, `proton_events`, and the catalogue counts `cat_xray`,
`cat_cosmics`, `cat_protons`; on the FPA also VISQL's `xray_top10count` and `proton_top10count`.
The science is in `measure.cosmics` and `measure.hit_counts`; this module opens the
quadrants and hands the results over.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from viskom.le1.frame import Le1Frame, Quadrant
from viskom.le1.quadrant_map import map_quadrants
from viskom.measure.cosmics import HitParams, catalogue_classes, detect_hits
from viskom.measure.detector import quadrant_bias
from viskom.measure.hit_counts import (
    classify_frame_hits,
    frame_locus,
    frame_psf_limits,
    merge_hit_tables,
    quadrant_hit_rows,
    star_guards,
    top10_rows,
    unit_metric_rows,
)
from viskom.stages.base import (
    ProductInput,
    ProductSpec,
    QualityOutcome,
    Stage,
    StageInputs,
    StageResult,
    usable_quadrants,
)

#: Why VISQL's catalogue classes are not given at the quick-look catalogue depth.
SHALLOW_CATALOGUE = (
    "catalogue_depth = quicklook: the catalogue holds the sources above 20 sigma only, so "
    "VISQL's catalogue classes (cat_xray, cat_cosmics, cat_protons, xray_top10count, "
    "proton_top10count) are not measured; the hit finder's counts (cr_hits, xray_candidates, "
    "proton_events ...) are"
)


def quadrant_hits(
    quad: Quadrant,
    guards: Mapping[str, tuple[np.ndarray, ...]],
    hot: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
    skies: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Hits of one quadrant: table rows (1-based array pixels, instrument frame) and counts.
    `skies`: the catalogue's sky meshes per quadrant (`measure.sky.SkyMesh`), not measured
    again where they fit."""
    g = quad.geometry
    bias = quadrant_bias(quad.data, g)[2]
    image = quad.data[g.image.slices].astype(np.float32)
    image -= np.float32(bias)
    objects = None
    if quad.extname in guards:
        x, y, r = guards[quad.extname]
        objects = (x - 1.0 - g.image.col0, y - 1.0 - g.image.row0, r)
    saturation = quad.header.saturate_adu
    gain = quad.header.gain_e_per_adu
    if gain is None or not np.isfinite(gain) or gain <= 0:
        return {"skipped": f"no valid GAIN in the header of {quad.extname}"}
    hits = detect_hits(
        image,
        gain_e_per_adu=gain,
        saturation_adu=None if saturation is None else saturation - bias,
        objects=objects,
        hot_pixels=hot.get(quad.extname),
        params=HitParams(**params),
        sky=None if skies is None else skies.get(quad.extname),
    )
    del image
    return quadrant_hit_rows(
        hits, quad.extname, g.image.col0, g.image.row0, quad.fits_header, hot.get(quad.extname)
    )


class Events(Stage):
    """Cosmic rays, X-ray events and protons: pixel-level hits and VISQL's catalogue classes."""

    name = "events"
    version = "3"
    imports = (
        "viskom.measure.sky", "viskom.measure.sky_kernels", "viskom.measure.hit_kernels",
        "viskom.pipeline.calibration", "scipy.ndimage",
    )  # fmt: skip
    frame_types = frozenset({"SCIENCE", "DARK"})
    inputs = (
        ProductInput("catalogue", "catalogue"),
        ProductInput("catalogue", "sky", optional=True),  # its sky meshes: not measured again
    )
    calibrations = ("hot_pixels", "xray_baseline")
    config_section = "events"
    config_keys = ("seed_sigma", "grow_sigma", "psf_single_ratio", "psf_pair_ratio",
                   "star_sharp_sigma")  # fmt: skip
    parallel_quadrants = True
    products = (ProductSpec("hits", "parquet", "particle hits: pixels, charge, shape, kind"),)
    header_keywords = ("EXPTIME",)
    reads_catalogue_depth = True  # VISQL's catalogue classes need VISQL's depth

    def run(self, frame: Le1Frame, inputs: StageInputs, config: Mapping[str, Any]) -> StageResult:
        exposure = inputs.exposure
        if exposure.exptime is None or not np.isfinite(exposure.exptime):
            raise ValueError("no valid EXPTIME: hit rates per cm2 per s cannot be computed")
        cat = inputs.product("catalogue")
        hits_config = dict(config)
        # VISQL's classes are small, faint catalogue sources: a 20 sigma catalogue lacks most
        visql_classes = hits_config.pop("catalogue_depth", "full") != "quicklook"
        locus, stars = frame_locus(cat)
        single, pair, n_psf_stars = frame_psf_limits(cat, HitParams(**hits_config), stars)
        hits_config.update(psf_single_ratio=single, psf_pair_ratio=pair)
        hot = inputs.calibration("hot_pixels")
        names, header_outcomes = usable_quadrants(frame)
        from viskom.measure.sky import skies_from_product  # lazily: numba

        skies = skies_from_product(inputs.product("sky"))
        results = map_quadrants(
            frame,
            quadrant_hits,
            args=(star_guards(cat, locus), hot, hits_config, skies),
            names=names,
            workers=exposure.quadrant_workers,
        )
        skipped = {ext: r["skipped"] for ext, r in results.items() if "skipped" in r}
        per_quadrant = {ext: r for ext, r in results.items() if "skipped" not in r}
        if not per_quadrant:
            why = [o.message for o in header_outcomes] + list(skipped.values())
            raise ValueError(f"no quadrant could be measured: {why[0] if why else 'none'}")
        merged = merge_hit_tables(r["table"] for r in per_quadrant.values())
        merged["kind"], diffusion, n_tracks = classify_frame_hits(merged, HitParams(**hits_config))
        baseline = inputs.calibration("xray_baseline")
        classes = (
            catalogue_classes(cat["flux_auto"], cat["flux_radius"]) if visql_classes else None
        )  # VISQL's
        exptime = float(exposure.exptime)
        metrics = unit_metric_rows(per_quadrant, merged, cat, classes, exptime, baseline)
        hot_masked = float(sum(r["hot_pixels_masked"] for r in per_quadrant.values()))
        metrics += [
            ("FPA", "hot_pixels_masked", hot_masked),
            ("FPA", "diffusion_var_px2", diffusion),
            ("FPA", "psf_single_ratio_limit", single),
            ("FPA", "psf_pair_ratio_limit", pair),
            ("FPA", "psf_limit_stars", float(n_psf_stars)),
            ("FPA", "diffusion_tracks", float(n_tracks)),
            ("FPA", "quadrants_skipped", float(len(skipped) + len(header_outcomes))),
        ]
        if baseline is not None:
            metrics.append(("FPA", "xray_baseline_ratio", baseline.ratio))
        outcomes = header_outcomes + [
            QualityOutcome("bad_header_value", why, ext) for ext, why in sorted(skipped.items())
        ]
        if classes is not None:
            metrics += top10_rows(cat, classes)
        else:
            outcomes.append(QualityOutcome("shallow_catalogue", SHALLOW_CATALOGUE))
        if baseline is None:
            outcomes.append(
                QualityOutcome(
                    "no_xray_baseline",
                    "no quiet-frame X-ray baseline in the store yet: xray_candidates counted, "
                    "xray_events (net of near-vertical cosmic rays) not estimated",
                )
            )
        return StageResult(
            metrics=metrics, products={"hits": merged}, outcomes=outcomes, measured=True
        )
