"""The events monitor's science around the hit detector: guards, PSF limits, counts, rows.

`measure.cosmics` finds and classifies the hits of one quadrant. This module gives it what it
needs from the frame's catalogue (the star-like sources it must not count, `star_guards`, and
its PSF limits from the frame's own stars, `frame_psf_limits`), turns one quadrant's hits into
table rows (`quadrant_hit_rows`), merges and classifies the frame's hits (`merge_hit_tables`,
`classify_frame_hits`) and counts them per quadrant, CCD and focal plane (`unit_metric_rows`,
`count_metrics`, `top10_rows`). Catalogue and table positions are 1-based array pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from viskom.le1.geometry import parse_extname
from viskom.le1.wcs import QuadrantWcs
from viskom.measure.arrays import quadrant_codes, stack_tables
from viskom.measure.catalogue import FLAG_HIT_MASKED
from viskom.measure.cosmics import (
    HitParams,
    XrayBaseline,
    classify_hits,
    diffusion_variance,
    particles_from_hits,
    point_variance_limit,
    psf_limits,
    rate_per_cm2_s,
    top10count,
    xray_net,
)
from viskom.measure.stars import (
    LocusResult,
    locus_of_catalogue,
    particle_like,
    stars_of_catalogue,
)

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
    if "flags" in cat:  # a hit beside a star's core makes it look sharper than the PSF
        stars = stars & ((np.asarray(cat["flags"]).astype(np.int64) & FLAG_HIT_MASKED) == 0)
    return psf_limits(cat["sharp_single"][stars], cat["sharp_pair"][stars], params)


def quadrant_hit_rows(
    hits: Mapping[str, Any],
    extname: str,
    col0: int,
    row0: int,
    header: Any,
    hot_pixels: np.ndarray | None = None,
) -> dict[str, Any]:
    """One quadrant's hits (`measure.cosmics.detect_hits`, image-area pixels from (col0,
    row0)) as table rows (1-based array pixels, instrument frame from the WCS of the
    extension `header`) and the counts its metrics need."""
    n = hits["x"].size
    x_image = hits["x"] + col0 + 1.0
    y_image = hits["y"] + row0 + 1.0
    if n:
        wcs = QuadrantWcs.from_header(header, extname)
        xw, yw = (np.asarray(a) for a in wcs.pixel_to_instrument(x_image - 1.0, y_image - 1.0))
    else:
        xw = yw = np.zeros(0)
    hot_masked = 0 if hot_pixels is None else int(hot_pixels.size)
    return {
        "table": {
            "extname": np.full(n, extname, dtype=object),
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


def merge_hit_tables(tables: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The quadrants' hit tables (`quadrant_hit_rows`) in one, EXTNAME as str."""
    return stack_tables(tables, HIT_TABLE_COLUMNS)


def classify_frame_hits(
    hits: Mapping[str, np.ndarray], params: HitParams
) -> tuple[np.ndarray, float, int]:
    """The kind of each of the frame's hits, classified with the charge diffusion measured
    on the whole frame's tracks; returns (kinds, diffusion variance px^2, tracks used)."""
    diffusion, n_tracks = diffusion_variance(hits["var_minor_px2"], hits["length_px"], params)
    kind = classify_hits(
        hits["charge_adu"],
        hits["var_major_px2"],
        hits["length_px"],
        point_variance_limit(diffusion),
        params,
    ).astype(str)
    return kind, diffusion, n_tracks


def unit_groups(extnames: Iterable[str]) -> dict[str, list[str]]:
    """The units metrics are given for: every quadrant, every CCD (R-C) and the focal plane
    ("FPA"), each with its quadrants."""
    extnames = list(extnames)
    groups: dict[str, list[str]] = {ext: [ext] for ext in extnames}
    for ext in extnames:
        groups.setdefault(parse_extname(ext).ccd, []).append(ext)
    groups["FPA"] = extnames
    return groups


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


def unit_metric_rows(
    per_quadrant: Mapping[str, Mapping[str, Any]],
    hits: Mapping[str, np.ndarray],
    cat: Mapping[str, np.ndarray],
    classes: Mapping[str, np.ndarray] | None,
    exptime: float,
    baseline: XrayBaseline | None,
) -> list[tuple[str, str, float]]:
    """Per quadrant, CCD and FPA (`unit_groups` of the measured quadrants): the hit counts
    (`count_metrics`) and the counts of VISQL's catalogue `classes` (`cat_<class>`; none
    when `classes` is None: a catalogue too shallow for them)."""
    names = list(per_quadrant)
    # hits grouped by quadrant once (a unit's hits are its quadrants' slices), the catalogue's
    # classes counted per quadrant once: no string comparison of every row for every unit
    hit_code = quadrant_codes(hits["extname"], names)
    order = np.argsort(hit_code, kind="stable")
    kinds = np.asarray(hits["kind"])[order]
    bounds = np.searchsorted(hit_code[order], np.arange(len(names) + 1))
    class_counts = {}
    if classes is not None:
        cat_code = quadrant_codes(cat["extname"], names)
        known = cat_code < len(names)
        class_counts = {
            cls: np.bincount(cat_code[known & classes[cls]], minlength=len(names))
            for cls in ("xray", "cosmics", "protons")
        }
    index = {name: i for i, name in enumerate(names)}
    rows: list[tuple[str, str, float]] = []
    for unit, members in unit_groups(per_quadrant).items():
        codes = [index[m] for m in members]
        unit_kinds = np.concatenate([kinds[bounds[c] : bounds[c + 1]] for c in codes])
        measured = sum(per_quadrant[m]["measured_pixels"] for m in members)
        hit_pixels = sum(per_quadrant[m]["hit_pixels"] for m in members)
        confusion = sum(
            per_quadrant[m]["confusion_fraction"] * per_quadrant[m]["measured_pixels"]
            for m in members
        ) / max(measured, 1)
        particles = sum(per_quadrant[m]["cr_particles"] for m in members)
        rows += count_metrics(
            unit,
            unit_kinds,
            measured,
            hit_pixels,
            exptime,
            baseline,
            confusion,
            particles,
        )
        for cls, counts in class_counts.items():
            rows.append((unit, f"cat_{cls}", float(counts[codes].sum())))
    return rows


def top10_rows(
    cat: Mapping[str, np.ndarray], classes: Mapping[str, np.ndarray]
) -> list[tuple[str, str, float]]:
    """VISQL's map statistic (`measure.cosmics.top10count`) of the catalogue's X-ray and
    proton classes on the focal plane."""
    xw = np.asarray(cat["x_world"], float)
    yw = np.asarray(cat["y_world"], float)
    return [
        ("FPA", "xray_top10count", top10count(xw[classes["xray"]], yw[classes["xray"]])),
        ("FPA", "proton_top10count", top10count(xw[classes["protons"]], yw[classes["protons"]])),
    ]
