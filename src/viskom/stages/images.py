"""Images stage: the focal-plane mosaic of every frame, its FITS twin, and zooms (VISQL's png).

One pass over the quadrants (`measure.mosaic.quadrant_images`, in parallel): bias removed,
binned, placed by each quadrant's WCS; the fixed zooms (VISQL's nine, for SCIENCE and FLAT)
and the zooms where the monitors point (the worst-IQ quadrant from the psf stage's stars, the
densest cosmic-ray field from the events stage's hits) are cut in the same pass; the zoom on
the hottest quadrant (highest bias-subtracted median) reads that one quadrant again. A missing
or unreadable quadrant is a grey, crossed cell and a quality outcome, not a failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from viskom.le1.frame import FrameError, Le1Frame, Quadrant
from viskom.le1.geometry import FULL_IMAGE_COLUMNS, FULL_IMAGE_ROWS, all_extnames
from viskom.le1.header import GEOMETRY_KEYWORDS
from viskom.le1.quadrant_map import map_quadrants
from viskom.le1.wcs import LinearWcs
from viskom.measure import mosaic as mm
from viskom.stages.base import (
    ProductInput,
    ProductSpec,
    QualityOutcome,
    Stage,
    StageInputs,
    StageResult,
    usable_quadrants,
)

COMPACT_NOTE = "compact layout: small quadrants, the empty focal plane between them left out"
MIN_IQ_STARS = 5  # stars a quadrant needs for its median R2 to point a zoom at it


class Images(Stage):
    """Mosaic (PNG and FITS) and zooms of one frame (pictures from `viskom.present.images`)."""

    name = "images"
    version = "2"  # 2: zoom titles say what they show first
    imports = ("viskom.present.images", "viskom.present.focal", "astropy.wcs")
    frame_types = frozenset({"SCIENCE", "DARK", "BIAS", "FLAT", "CHARGE", "UNKNOWN"})
    inputs = (ProductInput("psf", "stars", optional=True), ProductInput("events", "hits",
                                                                        optional=True))  # fmt: skip
    config_section = "images"
    products = (
        ProductSpec("mosaic", "png", "the focal plane, binned, bias removed, one grey scale"),
        ProductSpec("mosaic_image", "fits", "the binned mosaic, with a sky WCS (TAN-SIP)"),
        ProductSpec("zoom_*", "png", "full-resolution cut-outs, named after what they show"),
    )

    def run(self, frame: Le1Frame, inputs: StageInputs, config: Mapping[str, Any]) -> StageResult:
        from viskom.present.images import grey_levels, mosaic_png, to_grey, zoom_png

        exposure = inputs.exposure
        names, outcomes = usable_quadrants(frame, GEOMETRY_KEYWORDS)
        placements: dict[str, mm.Placement] = {}
        for name in names:
            try:
                placements[name] = mm.placement(name, frame.geometry(name), _wcs(frame, name))
            except (ValueError, FrameError) as exc:
                outcomes.append(QualityOutcome("no_quadrant_wcs", f"not placed: {exc}", name))
        if not placements:
            return StageResult.nothing("no_quadrants", "no quadrant could be placed",
                                       outcomes=outcomes)  # fmt: skip
        from viskom.present.focal import quadrant_rectangle

        grid = mm.focal_plane_grid(
            list(placements.values()), [quadrant_rectangle(n) for n in all_extnames()]
        )
        compact = config["layout"] == "compact" or (
            config["layout"] == "auto"
            and mm.is_compact(list(placements.values()), FULL_IMAGE_COLUMNS, FULL_IMAGE_ROWS)
        )
        bin_ = int(config["bin"])
        if compact:  # as many mosaic pixels per quadrant as a full frame gets at `bin`
            width = float(np.median([p.width for p in placements.values()]))
            bin_ = max(1, round(bin_ * width / FULL_IMAGE_COLUMNS))
        if compact:  # a zoom no larger than a quadrant: small frames' zooms are filled
            smallest = min(min(p.width, p.height) for p in placements.values())
            config = {**config, "zoom_size": min(int(config["zoom_size"]), smallest)}
        boxes = self._zoom_boxes(exposure.frame_type, inputs, placements, grid, config)
        parts, unread = _read_all(frame, list(placements), placements, grid, bin_, boxes)
        for name, why in unread.items():
            outcomes.append(QualityOutcome("unreadable_quadrant", why[:200], name))
        if not parts:
            return StageResult.nothing("no_quadrants", "no quadrant could be read",
                                       outcomes=outcomes)  # fmt: skip
        absent = [n for n in all_extnames() if n not in parts]
        for name in absent:
            if name not in frame.quadrant_extnames:
                outcomes.append(QualityOutcome("missing_quadrant", "no such extension", name))
        mosaic = mm.assemble(parts, placements, grid, bin_, compact=compact, missing=absent)
        stretch = str(config["stretch"])
        levels = grey_levels(mosaic.image, stretch)
        when = (exposure.date_obs or "")[:19].replace("T", " ")
        exptime = f"{exposure.exptime:g} s" if exposure.exptime is not None else "? s"
        title = f"{exposure.name}  {exposure.frame_type}  {when}  {exptime}"
        pointing = _pointing(frame)
        products: dict[str, Any] = {
            "mosaic": mosaic_png(
                to_grey(mosaic.image, levels, stretch),
                title=title,
                ccd_labels=_ccd_labels(mosaic.cells),
                missing_cells=[mosaic.cells[n] for n in absent if n in mosaic.cells],
                north_east=mm.north_east(*pointing) if pointing else None,
                arcsec_per_pixel=grid.scale_deg * 3600.0 * mosaic.bin,
                note=COMPACT_NOTE if compact else "",
            )
        }
        products["mosaic_image"] = _mosaic_hdu(mosaic, grid, pointing, title, levels)
        if not pointing:
            outcomes.append(QualityOutcome("no_pointing", "RA, DEC or PA unusable: the "
                                           "mosaic has no sky WCS and no compass"))  # fmt: skip
        hottest = max(parts.values(), key=lambda p: p.level_adu if np.isfinite(p.level_adu)
                      else -np.inf)  # fmt: skip
        if config["flagged_zooms"] and np.isfinite(hottest.level_adu):
            box = _centre_box(placements[hottest.extname], grid, "hottest",
                              f"hottest quadrant {hottest.extname}: median "
                              f"{hottest.level_adu:.1f} ADU above its bias", config)  # fmt: skip
            again = _read_all(frame, [hottest.extname], placements, grid, bin_, [box])[0]
            boxes.append(box)
            parts[hottest.extname].pieces.update(again.get(hottest.extname, _none).pieces)
        cuts = {}
        for box in boxes:
            pieces = [p.pieces[box.name] for p in parts.values() if box.name in p.pieces]
            if not pieces:
                outcomes.append(QualityOutcome("empty_zoom", f"zoom {box.name} holds no data"))
                continue
            cuts[box] = mm.zoom_image(box, pieces)

        def picture(box: mm.ZoomBox) -> bytes:
            return zoom_png(cuts[box], title=f"{box.what}  {exposure.name}", stretch=stretch)

        # zlib and numpy release the GIL: two threads draw the zooms in half the time
        with ThreadPoolExecutor(max_workers=2) as pool:
            for box, png in zip(cuts, pool.map(picture, cuts), strict=True):
                products[f"zoom_{box.name}"] = png
        return StageResult(products=products, outcomes=outcomes, measured=True)

    def _zoom_boxes(
        self,
        frame_type: str,
        inputs: StageInputs,
        placements: Mapping[str, mm.Placement],
        grid: mm.FocalPlaneGrid,
        config: Mapping[str, Any],
    ) -> list[mm.ZoomBox]:
        size = int(config["zoom_size"])
        boxes: list[mm.ZoomBox] = []
        places = list(placements.values())
        if frame_type.upper() in {t.upper() for t in config["zoom_frame_types"]}:
            for name, (x, y) in config["zooms"].items():
                box = mm.zoom_box(name, f"fixed zoom {name} at ({x:.0f}, {y:.0f})", x, y, size)
                boxes.append(box)
        if not config["flagged_zooms"]:
            return [mm.snap_to_data(b, places, grid) for b in boxes]
        stars = inputs.product("stars")
        if stars is not None and len(stars.get("r2", ())):
            good = np.asarray(stars["flag"]) == 0
            ext = np.asarray(stars["extname"]).astype(str)[good]
            r2 = np.asarray(stars["r2"], float)[good]
            xs, ys = (np.asarray(stars[c], float)[good] for c in ("x_world", "y_world"))
            for unit in (ext, np.array([e.split(".")[0] for e in ext])):  # quadrant, else CCD
                counts = {u: int(np.sum(unit == u)) for u in set(unit)}
                medians = {u: float(np.median(r2[unit == u])) for u, n in counts.items()
                           if n >= MIN_IQ_STARS}  # fmt: skip
                if medians:
                    worst = max(medians, key=medians.__getitem__)
                    sel = unit == worst
                    x, y = grid.pixel(float(np.median(xs[sel])), float(np.median(ys[sel])))
                    what = (f"worst IQ: {worst}, median R2 {medians[worst]:.2f} px2 of "
                            f"{counts[worst]} stars")  # fmt: skip
                    boxes.append(mm.zoom_box("worst_iq", what, x, y, size))
                    break
        hits = inputs.product("hits")
        if hits is not None and len(hits.get("kind", ())):
            cosmic = np.asarray(hits["kind"]) == "cosmic"  # no str copy of ~1e6 kinds
            densest = None
            if cosmic.any():
                px, py = grid.pixel(np.asarray(hits["x_world"], float)[cosmic],
                                    np.asarray(hits["y_world"], float)[cosmic])  # fmt: skip
                densest = mm.densest_cell(px, py, size)
            if densest is not None:
                cx, cy, most = densest
                sel = (px // size == cx) & (py // size == cy)
                what = f"densest cosmic rays: {most} hits in {size} px"
                boxes.append(mm.zoom_box("densest_cr", what, float(np.median(px[sel])),
                                         float(np.median(py[sel])), size))  # fmt: skip
        return [mm.snap_to_data(b, places, grid) for b in boxes]


_none = mm.QuadrantImages("", np.zeros((0, 0), np.float32), 0.0, float("nan"))


def _centre_box(
    place: mm.Placement, grid: mm.FocalPlaneGrid, name: str, what: str, config: Mapping[str, Any]
) -> mm.ZoomBox:
    x, y = grid.pixel(place.x0, place.y0)
    return mm.zoom_box(name, what, x + place.width / 2, y + place.height / 2,
                       int(config["zoom_size"]))  # fmt: skip


def _quadrant_images(
    quad: Quadrant,
    placements: Mapping[str, mm.Placement],
    grid: mm.FocalPlaneGrid,
    bin_: int,
    boxes: list[mm.ZoomBox],
) -> mm.QuadrantImages:
    return mm.quadrant_images(quad.data, quad.geometry, placements[quad.extname], grid, bin_, boxes)


def _read_all(
    frame: Le1Frame,
    names: list[str],
    placements: Mapping[str, mm.Placement],
    grid: mm.FocalPlaneGrid,
    bin_: int,
    boxes: list[mm.ZoomBox],
) -> tuple[dict[str, mm.QuadrantImages], dict[str, str]]:
    """Every quadrant's pass; a quadrant that cannot be read is left out with its reason (the
    others are read one by one then).

    One process, a second thread reading ahead: the pass is bound by reading and converting
    the pixels, and two forked workers cost more than they gain (full frame: 1.07 s with one
    process, 1.27 s with two; benchmarks/bench_images.py)."""
    args = (placements, grid, bin_, boxes)
    try:
        done = map_quadrants(frame, _quadrant_images, args=args, names=names, workers=1)
        return done, {}
    except FrameError:
        pass
    parts: dict[str, mm.QuadrantImages] = {}
    unread: dict[str, str] = {}
    for name in names:
        try:
            parts[name] = _quadrant_images(frame.quadrant(name), *args)
        except FrameError as exc:
            unread[name] = str(exc)
    return parts, unread


def _wcs(frame: Le1Frame, name: str) -> Any:
    """The quadrant's WCS: its linear part when the header's allows (fast), else astropy's."""
    try:
        return LinearWcs.from_header(frame.quadrant_fits_header(name), name)
    except ValueError:
        return frame.wcs(name)


def _pointing(frame: Le1Frame) -> tuple[float, float, float] | None:
    p = frame.primary
    values = (p.ra, p.dec, p.pa)
    if any(v is None or not np.isfinite(v) for v in values):
        return None
    return float(p.ra), float(p.dec), float(p.pa)  # type: ignore[arg-type]


def _ccd_labels(cells: Mapping[str, tuple[int, int, int, int]]) -> dict[str, tuple[float, float]]:
    """Label positions: the middle of each CCD's quadrant cells (mosaic pixels)."""
    boxes: dict[str, list[tuple[int, int, int, int]]] = {}
    for name, cell in cells.items():
        boxes.setdefault(name.split(".")[0], []).append(cell)
    out = {}
    for ccd, cs in boxes.items():
        x0 = min(c[0] for c in cs)
        x1 = max(c[0] + c[2] for c in cs)
        y0 = min(c[1] for c in cs)
        y1 = max(c[1] + c[3] for c in cs)
        out[ccd] = ((x0 + x1) / 2, (y0 + y1) / 2)
    return out


def _mosaic_hdu(
    mosaic: mm.Mosaic,
    grid: mm.FocalPlaneGrid,
    pointing: tuple[float, float, float] | None,
    title: str,
    levels: tuple[float, float],
) -> Any:
    from astropy.io import fits

    header = fits.Header()
    if pointing and not mosaic.compact:
        header.update(mm.mosaic_sky_wcs(mosaic, grid, *pointing))
    header["BUNIT"] = ("adu", "bias-subtracted mean of each bin")
    header["BINNING"] = (mosaic.bin, "VIS pixels per mosaic pixel along each axis")
    header["COMPACT"] = (mosaic.compact, "quadrants packed in a 12x12 grid (no sky WCS)")
    header["ZLOW"], header["ZHIGH"] = levels[0], levels[1]
    header["TITLE"] = title[:68]
    header["ORIGIN"] = "viskom"
    return fits.PrimaryHDU(mosaic.image, header=header)
