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
    XrayBaseline,
    catalogue_classes,
    classify_hits,
    detect_hits,
    diffusion_variance,
    particles_from_hits,
    point_variance_limit,
    psf_limits,
    rate_per_cm2_s,
    top10count,
    xray_net,
)
from viskom.measure.detector import quadrant_bias
from viskom.measure.stars import (
    LocusResult,
    locus_of_catalogue,
    particle_like,
    stars_of_catalogue,
)
from viskom.pipeline.calibration import (
    hot_pixel_map_path,
    load_hot_pixels,
    load_xray_baseline,
    xray_baseline_path,
)
from viskom.stages.base import (
    ExposureInfo,
    QualityOutcome,
    Stage,
    StageResult,
    usable_quadrants,
)
from viskom.stages.quadrants import map_quadrants
from viskom.store.products import read_table, write_table

#: Guards without a stellar locus (no stars to learn the PSF from): catalogue sources that
#: look like stars (not compact hits, not thin tracks, not large galaxies); with a locus they
#: come from it. The radius guarded around them is 3 px + 2 FLUX_RADIUS.
GUARD_MIN_RADIUS, GUARD_MAX_RADIUS, GUARD_MIN_B = 0.9, 3.0, 1.0

HIT_TABLE_COLUMNS = (
    "extname", "x_image", "y_image", "x_world", "y_world",
    "npix", "charge_adu", "peak_adu", "length_px",
    "var_major_px2", "var_minor_px2", "peak_fraction", "kind",
)  # fmt: skip


def star_guards(
    cat: Mapping[str, np.ndarray], locus: LocusResult | None = None
) -> dict[str, tuple[np.ndarray, ...]]:
    """Per quadrant: (x, y, radius) of star-like catalogue sources, 1-based array pixels.

    With the frame's stellar locus: every source not sharper (`measure.stars.particle_like`)
    nor flatter (b/a) than its stars, up to three times their radius (stars and compact
    galaxies; larger ones are broader than any hit). Without one (no stars to measure the PSF
    on), VISQL-era fixed limits: FLUX_RADIUS 0.9-3 px and B_IMAGE >= 1 px.
    """
    fr = np.asarray(cat["flux_radius"], float)
    if locus is not None and locus.found:
        keep = ~particle_like(cat, locus) & (fr <= 3.0 * float(locus.rc))
        if np.isfinite(locus.roundness_min):  # tracks are flatter than any star
            with np.errstate(divide="ignore", invalid="ignore"):
                q = np.asarray(cat["b_image"], float) / np.asarray(cat["a_image"], float)
            keep &= q >= locus.roundness_min
    else:
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


def frame_locus(cat: Mapping[str, np.ndarray]) -> tuple[LocusResult, np.ndarray]:
    """The stellar locus of this frame's catalogue and its stars (`measure.stars`)."""
    locus = locus_of_catalogue(cat)
    return locus, stars_of_catalogue(cat, locus)


def frame_psf_limits(
    cat: Mapping[str, np.ndarray], params: HitParams, stars: np.ndarray | None = None
) -> tuple[float, float, int]:
    """The hit detector's PSF limits from the sharpness of this frame's stars (the stellar
    locus of its catalogue, `measure.cosmics.psf_limits`); the configured ones without stars."""
    if "sharp_single" not in cat or len(cat["flux_radius"]) == 0:
        return float(params.psf_single_ratio), float(params.psf_pair_ratio), 0
    if stars is None:
        stars = frame_locus(cat)[1]
    return psf_limits(cat["sharp_single"][stars], cat["sharp_pair"][stars], params)


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
            "var_major_px2": hits["var_major_px2"],
            "var_minor_px2": hits["var_minor_px2"],
            "peak_fraction": hits["peak_fraction"],
            "kind": hits["kind"],
        },
        "measured_pixels": int(hits["image_pixels"] - hits["masked_pixels"]),
        "hit_pixels": int(hits["hit_pixels"]),
        "hot_pixels_masked": hot_masked,
        "confusion_fraction": float(hits["confusion_fraction"]),
        "cr_particles": particles_from_hits(n, hits["touch_probability"]),
    }


def count_metrics(
    unit: str,
    kind: np.ndarray,
    measured_pixels: float,
    hit_pixels: float,
    exptime: float,
    baseline: XrayBaseline | None,
    confusion_fraction: float = 0.0,
    particles: float | None = None,
) -> list[tuple[str, str, float]]:
    """Hit counts and rates of one unit (quadrant, CCD or FPA); the net X-ray count only with
    a quiet-frame baseline; `particles` the hits corrected for touching deposits."""
    n_x = float(np.count_nonzero(kind == "xray"))
    n_tracks = float(np.count_nonzero(kind == "cosmic"))
    n = float(kind.size)
    particles = n if particles is None else float(particles)
    rows = [
        (unit, "cr_hits", n),
        (unit, "cr_hits_per_cm2_s", rate_per_cm2_s(n, measured_pixels, exptime)),
        (unit, "cr_particles", particles),
        (unit, "cr_particles_per_cm2_s", rate_per_cm2_s(particles, measured_pixels, exptime)),
        (unit, "cr_pixel_fraction", hit_pixels / measured_pixels if measured_pixels else np.nan),
        (unit, "xray_candidates", n_x),
        (unit, "cr_tracks", n_tracks),
        (unit, "proton_events", float(np.count_nonzero(kind == "proton"))),
    ]
    if baseline is not None:
        net, err, contamination = xray_net(n_x, n_tracks, baseline, confusion_fraction)
        rows += [
            (unit, "xray_events", net),
            (unit, "xray_events_err", err),
            (unit, "xray_contamination", contamination),
        ]
    return rows


class Events(Stage):
    """Cosmic rays, X-ray events and protons: pixel-level hits and VISQL's catalogue classes."""

    name = "events"
    version = "3"
    frame_types = frozenset({"SCIENCE", "DARK"})
    level = "quadrant"
    requires = ("catalogue",)
    header_keywords = ("EXPTIME",)

    @staticmethod
    def config_of(settings: Any) -> dict[str, Any]:
        return {
            "hits": settings.events.hit_params(),
            "hot_pixel_map": str(hot_pixel_map_path(settings.products_path)),
            "xray_baseline": str(xray_baseline_path(settings.products_path)),
        }

    def run(
        self, frame: Le1Frame, exposure: ExposureInfo, config: Mapping[str, Any]
    ) -> StageResult:
        if exposure.exptime is None or not np.isfinite(exposure.exptime):
            raise ValueError("no valid EXPTIME: hit rates per cm2 per s cannot be computed")
        cat = read_table(exposure.product("catalogue", "parquet"))
        hits_config = dict(config["hits"])
        locus, stars = frame_locus(cat)
        single, pair, n_psf_stars = frame_psf_limits(cat, HitParams(**hits_config), stars)
        hits_config.update(psf_single_ratio=single, psf_pair_ratio=pair)
        params = HitParams(**hits_config)
        hot, _darks = load_hot_pixels(config["hot_pixel_map"])
        names, header_outcomes = usable_quadrants(frame)
        results = map_quadrants(
            frame,
            quadrant_hits,
            args=(star_guards(cat, locus), hot, hits_config),
            names=names,
            workers=exposure.quadrant_workers,
        )
        skipped = {ext: r["skipped"] for ext, r in results.items() if "skipped" in r}
        per_quadrant = {ext: r for ext, r in results.items() if "skipped" not in r}
        if not per_quadrant:
            why = [o.message for o in header_outcomes] + list(skipped.values())
            raise ValueError(f"no quadrant could be measured: {why[0] if why else 'none'}")
        exptime = float(exposure.exptime)
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
        # classify with the charge diffusion of the whole frame's tracks
        diffusion, n_tracks = diffusion_variance(
            merged["var_minor_px2"], merged["length_px"], params
        )
        merged["kind"] = classify_hits(
            merged["charge_adu"],
            merged["var_major_px2"],
            merged["length_px"],
            point_variance_limit(diffusion),
            params,
        ).astype(str)
        path = write_table(merged, exposure.product("hits", "parquet"))
        baseline = load_xray_baseline(config["xray_baseline"], exposure.frame_type)
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
            particles = sum(per_quadrant[m]["cr_particles"] for m in members)
            metrics += count_metrics(
                unit,
                merged["kind"][sel_hits],
                measured,
                hit_pixels,
                exptime,
                baseline,
                confusion,
                particles,
            )
            sel_cat = np.isin(cat_ext, members)
            for cls in ("xray", "cosmics", "protons"):
                metrics.append(
                    (unit, f"cat_{cls}", float(np.count_nonzero(classes[cls] & sel_cat)))
                )
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
        xw = np.asarray(cat["x_world"], float)
        yw = np.asarray(cat["y_world"], float)
        metrics.append(
            ("FPA", "xray_top10count", top10count(xw[classes["xray"]], yw[classes["xray"]]))
        )
        metrics.append(
            ("FPA", "proton_top10count", top10count(xw[classes["protons"]], yw[classes["protons"]]))
        )
        outcomes = header_outcomes + [
            QualityOutcome("bad_header_value", why, ext) for ext, why in sorted(skipped.items())
        ]
        if baseline is None:
            outcomes.append(
                QualityOutcome(
                    "no_xray_baseline",
                    "no quiet-frame X-ray baseline in the store yet: xray_candidates counted, "
                    "xray_events (net of near-vertical cosmic rays) not estimated",
                )
            )
        return StageResult(metrics=metrics, products=[path], outcomes=outcomes, measured=True)
