"""The PSF monitor's science: which stars to measure, their moments, and the metric rows.

The stellar locus of the exposure's catalogue (`find_locus`, either method of
`measure.stars`) gives the stars (`choose_stars`); those whose moments would be wrong are
rejected before measuring (saturated, blended, hit by a particle in the core) and the others
are measured on one quadrant's raw pixels (`clean_star_moments`), neighbours in their stamps
replaced by the star's mirrored profile (`neighbours_of_stars`). The quadrants' results are
merged into one star table (`merge_star_tables`) whose medians per FPA and CCD, and the IQ
score, are the metrics (`psf_metric_rows`). Positions are catalogue (1-based) pixels in and out
of the tables, 0-based inside `clean_star_moments`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from viskom.measure.iq import IQReference, iq_score
from viskom.measure.moments import (
    MomentFlag,
    cut_stamps,
    flag_outliers,
    measure_stars,
    replace_neighbours,
)
from viskom.measure.stars import (
    LocusResult,
    find_visql_chimney,
    locus_of_catalogue,
    select_visql_box,
    stars_of_catalogue,
)

#: Per-star moment columns -> FPA/CCD metric names (medians).
MOMENT_METRICS = {
    "r2": "psf_r2",
    "e1": "psf_e1",
    "e2": "psf_e2",
    "c1": "psf_coma1",
    "c2": "psf_coma2",
    "t1": "psf_trefoil1",
    "t2": "psf_trefoil2",
}
STAMPS_PER_QUADRANT = 2


def find_locus(
    cat: Mapping[str, np.ndarray], config: Mapping[str, Any], exptime: float | None
) -> LocusResult:
    """The stellar locus with the configured method ('adaptive', or VISQL's 'visql' chimney,
    whose flux grid assumes a 560.52 s exposure and needs EXPTIME)."""
    if config.get("selection", "adaptive") == "visql":
        if exptime is None or not np.isfinite(exptime) or exptime <= 0:
            raise ValueError("no valid EXPTIME: VISQL's chimney grid cannot be scaled")
        return find_visql_chimney(
            cat["flux_radius"],
            cat["flux_auto"],
            cat["b_image"],
            bmin=float(config["bmin_px"]),
            flux_scale=float(exptime) / float(config["nominal_exptime_s"]),
        )
    return locus_of_catalogue(
        cat, min_snr=float(config["min_snr"]), window=float(config["locus_window"])
    )


def choose_stars(
    cat: Mapping[str, np.ndarray], locus: Any, config: Mapping[str, Any]
) -> np.ndarray:
    """The stars to measure from a locus of either method (the box of VISQL's chimney, or
    the adaptive locus's radii, S/N and shape limits)."""
    if getattr(locus, "method", "visql") == "visql":
        return select_visql_box(
            cat["flux_radius"], cat["flux_auto"], cat["b_image"], locus, flags=cat["flags"]
        )
    return stars_of_catalogue(
        cat, locus, min_snr=float(config["min_snr"]) if "min_snr" in config else None
    )


def stars_by_quadrant(
    cat: Mapping[str, np.ndarray],
    idx: np.ndarray,
    blended: np.ndarray,
    extnames: Sequence[str],
) -> tuple[dict[str, list[int]], dict[str, dict[str, np.ndarray]]]:
    """The selected stars (catalogue rows `idx`, `blended` flags) grouped by quadrant: their
    rows per EXTNAME, and per quadrant of `extnames` (in that order) the columns to measure."""
    by_ext: dict[str, list[int]] = {}
    for i, ext in zip(idx, cat["extname"][idx], strict=True):
        by_ext.setdefault(str(ext), []).append(i)
    names = [n for n in extnames if n in by_ext]
    jobs = {
        n: {
            **{k: cat[k][by_ext[n]] for k in ("x_image", "y_image", "background", "flux_auto")},
            "blended": blended[np.searchsorted(idx, by_ext[n])],
        }
        for n in names
    }
    return by_ext, jobs


def clean_star_moments(
    raw: np.ndarray,
    bias: float,
    saturate: float | None,
    stars: Mapping[str, np.ndarray],
    neighbours: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    """Moments of one quadrant's selected stars on its raw pixels (catalogue positions,
    1-based), the other catalogue sources in their stamps replaced (`replace_neighbours`).

    Stars with a saturated pixel in the stamp, or a particle hit in the core, are rejected
    (flag SATURATED or COSMIC_HIT, no moments); stars flagged BLENDED by the caller too.
    """
    x = np.asarray(stars["x_image"], float) - 1.0
    y = np.asarray(stars["y_image"], float) - 1.0
    background = bias + np.asarray(stars["background"], float)
    h = int(params["stamp_half_size_px"])
    n = x.size
    reject = np.zeros(n, dtype=np.int32)
    reject[np.asarray(stars["blended"], bool)] |= MomentFlag.BLENDED
    # the stamp and a pixel more: the centroid may move the stamp by one pixel
    hs = h + 1
    inside = (
        (np.floor(x + 0.5) >= hs)
        & (np.floor(x + 0.5) < raw.shape[1] - hs)
        & (np.floor(y + 0.5) >= hs)
        & (np.floor(y + 0.5) < raw.shape[0] - hs)
    )
    if saturate is not None and inside.any():
        ix = np.floor(x[inside] + 0.5).astype(int)
        iy = np.floor(y[inside] + 0.5).astype(int)
        peak_raw = cut_stamps(raw, ix, iy, hs).max(axis=(1, 2))
        sat = np.zeros(n, dtype=bool)
        sat[inside] = peak_raw >= saturate
        reject[sat] |= MomentFlag.SATURATED
    image = raw.astype(np.float32)
    image, n_replaced, core_hit = replace_neighbours(
        image,
        x,
        y,
        np.asarray(neighbours["x_image"], float) - 1.0,
        np.asarray(neighbours["y_image"], float) - 1.0,
        np.maximum(2.5, 2.0 * np.asarray(neighbours["a_image"], float) + 1.0),
        half_size=h,
        background=background,
    )
    reject[core_hit] |= MomentFlag.COSMIC_HIT
    keep = reject == 0
    res = measure_stars(
        image,
        np.where(keep, x, np.nan),
        np.where(keep, y, np.nan),
        background=background,
        half_size=h,
        edge_margin=int(params["edge_margin_px"]),
        sigma_w=float(params["weight_sigma_px"]),
    )
    # rejected stars are reported with their reason (and their catalogue position), unmeasured
    res["flag"] = np.where(keep, res["flag"], reject).astype(np.int32)
    res["skipped"] = res["skipped"] & keep
    res["x_image"] = np.where(keep, res["x_image"], x)
    res["y_image"] = np.where(keep, res["y_image"], y)
    res["n_replaced"] = n_replaced
    good = ~res["skipped"] & (res["flag"] == 0)
    # A few of the brightest clean stars as stamps, for the mosaic plot.
    order = np.argsort(-np.where(good, np.asarray(stars["flux_auto"], float), -np.inf))
    pick = [i for i in order[:STAMPS_PER_QUADRANT] if good[i]]
    if pick:
        ix = np.floor(res["x_image"][pick] + 0.5).astype(int)
        iy = np.floor(res["y_image"][pick] + 0.5).astype(int)
        stamps = cut_stamps(image, ix, iy, h) - background[pick][:, None, None]
    else:
        stamps = np.zeros((0, 2 * h + 1, 2 * h + 1))
    res["stamps"] = stamps.astype(np.float32)
    res["stamp_index"] = np.asarray(pick, dtype=int)
    return res


def neighbours_of_stars(
    cat: Mapping[str, np.ndarray], jobs: Mapping[str, Mapping[str, np.ndarray]], reach: int
) -> dict[str, dict[str, np.ndarray]]:
    """Per quadrant, the catalogue sources close enough to a selected star to matter (within
    `reach` px in x and y), to be replaced in the stars' stamps."""
    out = {}
    for ext, stars in jobs.items():
        rows = np.flatnonzero(cat["extname"] == ext)
        xs, ys = cat["x_image"][rows], cat["y_image"][rows]
        close = np.zeros(rows.size, dtype=bool)
        for sx, sy in zip(stars["x_image"], stars["y_image"], strict=True):
            close |= (np.abs(xs - sx) <= reach) & (np.abs(ys - sy) <= reach)
        out[ext] = {k: cat[k][rows[close]] for k in ("x_image", "y_image", "a_image")}
    return out


def merge_star_tables(
    cat: Mapping[str, np.ndarray],
    by_ext: Mapping[str, list[int]],
    results: Mapping[str, Mapping[str, np.ndarray]],
) -> tuple[dict[str, np.ndarray], list[np.ndarray], list[str]]:
    """The quadrants' measured stars in one table (with their catalogue columns, 1-based
    positions, outliers flagged) and the stamps of the clean ones with their labels."""
    cols: dict[str, list[np.ndarray]] = {}
    stamps: list[np.ndarray] = []
    labels: list[str] = []
    stamp_rows: list[int] = []  # row of each stamp's star in the merged table
    offset = 0
    keep_cat = ("extname", "x_world", "y_world", "field_radius", "flux_auto", "flux_radius")
    keep_cat += ("b_image", "flags")
    for ext, res in results.items():
        rows = np.asarray(by_ext[ext])
        measured = ~res["skipped"]
        for k in keep_cat:
            cols.setdefault(k, []).append(np.asarray(cat[k])[rows][measured])
        cols.setdefault("x_image", []).append(res["x_image"][measured] + 1.0)
        cols.setdefault("y_image", []).append(res["y_image"][measured] + 1.0)
        for k in (
            "wtflux",
            "r2",
            "e1",
            "e2",
            "t1",
            "t2",
            "c1",
            "c2",
            "n_iter",
            "flag",
            "n_replaced",
        ):
            cols.setdefault(k, []).append(res[k][measured])
        cols.setdefault("converged", []).append(res["converged"][measured])
        row_of = np.cumsum(measured) - 1 + offset
        offset += int(measured.sum())
        for j, s in zip(res["stamp_index"], res["stamps"], strict=True):
            stamps.append(s)
            labels.append(f"{ext} R2={res['r2'][j]:.2f}")
            stamp_rows.append(int(row_of[j]))
    names = (*keep_cat, "x_image", "y_image", "wtflux", "r2", "e1", "e2", "t1", "t2", "c1", "c2")
    names += ("n_iter", "flag", "n_replaced", "converged")
    stars = {k: np.concatenate(cols[k]) if k in cols else np.zeros(0) for k in names}
    stars["extname"] = np.asarray(stars["extname"], dtype=str)
    stars["flag"] = flag_outliers(stars["r2"], stars["e1"], stars["e2"], stars["flag"])
    # no stamp of a star the outlier test rejected
    clean = [k for k, row in enumerate(stamp_rows) if stars["flag"][row] == 0]
    return stars, [stamps[k] for k in clean], [labels[k] for k in clean]


def psf_metric_rows(
    stars: Mapping[str, np.ndarray], locus: Any, reference: IQReference
) -> list[tuple[str, str, float]]:
    """The PSF metrics: the locus, star counts and rejections, the clean stars' median
    moments on the FPA and per CCD, and the IQ score of the FPA medians."""
    flag = np.asarray(stars["flag"]).astype(np.int64)
    good = flag == 0 if len(stars["r2"]) else np.zeros(0, bool)
    rows: list[tuple[str, str, float]] = [
        ("FPA", "psf_locus_found", 1.0 if locus.found else 0.0),
        ("FPA", "psf_locus_radius_px", float(locus.rc) if locus.found else float("nan")),
        ("FPA", "n_stars", float(good.sum())),
        ("FPA", "n_star_candidates", float(flag.size)),
    ]
    for bit, metric in (
        (MomentFlag.SATURATED, "n_rejected_saturated"),
        (MomentFlag.BLENDED, "n_rejected_blended"),
        (MomentFlag.COSMIC_HIT, "n_rejected_cosmic_hit"),
        (MomentFlag.OUTLIER, "n_rejected_outlier"),
    ):
        rows.append(("FPA", metric, float(np.count_nonzero(flag & int(bit)))))
    medians = {}
    for col, metric in MOMENT_METRICS.items():
        v = np.asarray(stars[col], float)[good] if good.size else np.zeros(0)
        medians[col] = float(np.median(v)) if v.size else float("nan")
        rows.append(("FPA", metric, medians[col]))
    score = float(iq_score(medians["r2"], medians["e1"], medians["e2"], reference))
    rows.append(("FPA", "iq_score", score))
    ccds = np.array([e.split(".")[0] for e in stars["extname"]]) if good.size else np.zeros(0)
    for ccd in sorted(set(ccds[good])) if good.size else []:
        sel = good & (ccds == ccd)
        rows.append((ccd, "n_stars", float(sel.sum())))
        for col, metric in MOMENT_METRICS.items():
            rows.append((ccd, metric, float(np.median(np.asarray(stars[col], float)[sel]))))
    return rows
