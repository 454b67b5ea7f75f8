"""Focal-plane mosaics and zooms of a raw frame, as pure functions on one quadrant at a time.

VISQL's `png` job had ds9 draw a 1200 x 1200 thumbnail of every frame (25 VIS pixels per
thumbnail pixel, zscale) and nine 900 x 900 full-resolution zooms. Here each quadrant's image
area is bias-subtracted (median of its serial overscan), block-averaged into bins of `bin`
pixels aligned to the quadrant's low-X, low-Y edge, and placed where its WCS puts it in the
instrument frame, turned so that X runs right and Y up (the readout corner's flips come from
the CD matrix, never from a table). A zoom is cut from the quadrants that overlap its box
during the same pass over the pixels. Nothing here reads files: the stage hands the quadrants
in and writes the results.

Small quadrants (the simulator's `small` geometry, 256 x 256 pixels at the readout corner of
each full-size footprint) would leave most of the plane empty: when the image areas cover
less than a quarter of their nominal footprints the mosaic is *compact*: every quadrant in a
cell of a 12 x 12 grid at its place in the focal plane, the empty space between them left
out, and no sky WCS (`Mosaic.compact`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from viskom.le1.focalplane import PIXEL_SCALE_DEG
from viskom.le1.geometry import QuadrantGeometry, parse_extname

ZOOM_SIZE = 900
COMPACT_BELOW = 0.25  # image areas covering less of their footprints: a compact mosaic


@dataclass(frozen=True)
class Placement:
    """Where a quadrant's image area lies in the instrument frame, and how it is turned.

    `x0`, `y0`: instrument-frame position (deg) of the image area's low-X, low-Y pixel edge;
    `transpose`: array rows run along X; `flip_x`, `flip_y`: after transposing, the array's
    columns (rows) run towards -X (-Y). `scale_deg`: degrees per pixel.
    """

    extname: str
    x0: float
    y0: float
    width: int  # pixels along X
    height: int  # pixels along Y
    transpose: bool
    flip_x: bool
    flip_y: bool
    scale_deg: float

    def orient(self, image: np.ndarray) -> np.ndarray:
        """The image area as a view with columns along +X and rows along +Y."""
        a = image.T if self.transpose else image
        return a[:: -1 if self.flip_y else 1, :: -1 if self.flip_x else 1]


def placement(extname: str, geometry: QuadrantGeometry, wcs: object) -> Placement:
    """The placement of a quadrant's image area from its WCS (an object with
    `pixel_to_instrument(x, y)`, 0-based array pixels to degrees)."""
    im = geometry.image
    x = np.array([im.col0, im.col0 + 1.0, im.col0], float)
    y = np.array([im.row0, im.row0, im.row0 + 1.0], float)
    X, Y = wcs.pixel_to_instrument(x, y)  # type: ignore[attr-defined]
    dcol = np.array([X[1] - X[0], Y[1] - Y[0]])  # one column step, in degrees
    drow = np.array([X[2] - X[0], Y[2] - Y[0]])
    scale = float(np.sqrt(abs(np.linalg.det(np.array([dcol, drow])))))
    transpose = abs(dcol[1]) > abs(dcol[0])  # columns run along Y
    along_x, along_y = (drow, dcol) if transpose else (dcol, drow)
    flip_x, flip_y = bool(along_x[0] < 0), bool(along_y[1] < 0)
    n_cols, n_rows = im.col1 - im.col0, im.row1 - im.row0
    width, height = (n_rows, n_cols) if transpose else (n_cols, n_rows)
    # the image's pixel edges: first pixel centre minus half a step, extended over the area
    corners_x = [X[0] + (i - 0.5) * dcol[0] + (j - 0.5) * drow[0] for i in (0, n_cols)
                 for j in (0, n_rows)]  # fmt: skip
    corners_y = [Y[0] + (i - 0.5) * dcol[1] + (j - 0.5) * drow[1] for i in (0, n_cols)
                 for j in (0, n_rows)]  # fmt: skip
    return Placement(extname, float(min(corners_x)), float(min(corners_y)), width, height,
                     bool(transpose), flip_x, flip_y, scale)  # fmt: skip


def serial_bias(data: np.ndarray, geometry: QuadrantGeometry) -> float:
    """The bias pedestal: median of the serial overscan (the prescan if there is none)."""
    region = geometry.serial_overscan if geometry.overscan_x > 0 else geometry.serial_prescan
    values = data[region.slices]
    return float(np.median(values)) if values.size else 0.0


def block_mean(image: np.ndarray, bin: int) -> np.ndarray:
    """Mean of each `bin` x `bin` block (float32), blocks aligned to pixel (0, 0); the last
    row and column of blocks average the pixels that are there. Rows of blocks are summed
    first (whole rows at a time), then columns: four times faster than one 4-d reduction."""
    h, w = image.shape
    if bin == 1:
        return image.astype(np.float32)
    acc = np.uint32 if image.dtype.kind == "u" and image.dtype.itemsize <= 2 else np.float64
    ny, nx = h // bin, w // bin
    rows = np.empty((-(-h // bin), w), acc)
    if ny:
        rows[:ny] = np.add.reduce(image[: ny * bin].reshape(ny, bin, w), axis=1, dtype=acc)
    if h % bin:
        rows[ny] = image[ny * bin :].sum(axis=0, dtype=acc)
    sums = np.empty((rows.shape[0], -(-w // bin)), np.float64)
    if nx:
        sums[:, :nx] = np.add.reduce(rows[:, : nx * bin].reshape(-1, nx, bin), axis=2)
    if w % bin:
        sums[:, nx] = rows[:, nx * bin :].sum(axis=1)
    row_n = np.full(rows.shape[0], bin, float)
    col_n = np.full(sums.shape[1], bin, float)
    if h % bin:
        row_n[-1] = h % bin
    if w % bin:
        col_n[-1] = w % bin
    return (sums / np.outer(row_n, col_n)).astype(np.float32)


@dataclass(frozen=True)
class ZoomBox:
    """A full-resolution cut-out: its name, what it shows, and its lower-left corner and size
    in focal-plane pixels (the instrument frame in VIS pixels from the mosaic's origin)."""

    name: str
    what: str
    x0: int
    y0: int
    size: int = ZOOM_SIZE


@dataclass
class QuadrantImages:
    """What one pass over a quadrant gives: its binned, bias-subtracted image (oriented X
    right, Y up), its bias and median level (ADU), and its pieces of the zoom boxes."""

    extname: str
    binned: np.ndarray
    bias_adu: float
    level_adu: float
    pieces: dict[str, tuple[int, int, np.ndarray]] = field(default_factory=dict)


@dataclass(frozen=True)
class FocalPlaneGrid:
    """The focal plane in VIS pixels: instrument-frame origin (deg) of pixel (0, 0)'s low
    edge, and its size; zoom boxes and the FITS mosaic's WCS are expressed in it."""

    x_min: float
    y_min: float
    width: int
    height: int
    scale_deg: float = PIXEL_SCALE_DEG

    def pixel(self, X: float, Y: float) -> tuple[float, float]:
        """Focal-plane pixel (x, y) of an instrument-frame position (deg)."""
        return (X - self.x_min) / self.scale_deg, (Y - self.y_min) / self.scale_deg


def focal_plane_grid(placements: Sequence[Placement], nominal: Sequence[tuple]) -> FocalPlaneGrid:
    """The grid that holds every quadrant's footprint: the nominal full-size rectangles
    (x0, y0, width, height in deg: the same grid for every frame) and the actual areas."""
    xs = [r[0] for r in nominal] + [p.x0 for p in placements]
    ys = [r[1] for r in nominal] + [p.y0 for p in placements]
    xe = [r[0] + r[2] for r in nominal] + [p.x0 + p.width * p.scale_deg for p in placements]
    ye = [r[1] + r[3] for r in nominal] + [p.y0 + p.height * p.scale_deg for p in placements]
    x_min, y_min = min(xs), min(ys)
    return FocalPlaneGrid(
        x_min, y_min,
        int(np.ceil((max(xe) - x_min) / PIXEL_SCALE_DEG)),
        int(np.ceil((max(ye) - y_min) / PIXEL_SCALE_DEG)),
    )  # fmt: skip


def quadrant_images(
    data: np.ndarray,
    geometry: QuadrantGeometry,
    place: Placement,
    grid: FocalPlaneGrid,
    bin: int,
    boxes: Sequence[ZoomBox] = (),
) -> QuadrantImages:
    """One pass over a quadrant's pixels: bias, binned image and the pieces of `boxes`."""
    bias = serial_bias(data, geometry)
    image = place.orient(data[geometry.image.slices])
    binned = block_mean(image, bin) - np.float32(bias)
    level = float(np.median(binned)) if binned.size else float("nan")
    pieces: dict[str, tuple[int, int, np.ndarray]] = {}
    qx, qy = grid.pixel(place.x0, place.y0)
    qx0, qy0 = round(qx), round(qy)
    for box in boxes:
        x0, x1 = max(box.x0, qx0), min(box.x0 + box.size, qx0 + place.width)
        y0, y1 = max(box.y0, qy0), min(box.y0 + box.size, qy0 + place.height)
        if x1 <= x0 or y1 <= y0:
            continue
        cut = image[y0 - qy0 : y1 - qy0, x0 - qx0 : x1 - qx0].astype(np.float32) - bias
        pieces[box.name] = (x0 - box.x0, y0 - box.y0, cut)
    return QuadrantImages(place.extname, binned, bias, level, pieces)


@dataclass
class Mosaic:
    """A binned focal-plane image (float32, NaN where there is no data; row 0 at low Y) and
    where each quadrant landed: `cells[extname] = (col0, row0, width, height)` in mosaic
    pixels. `compact`: quadrants packed in a 12 x 12 grid (small frames): no linear sky WCS.
    `bin`: VIS pixels per mosaic pixel; `origin`: the grid pixel of mosaic pixel (0, 0)'s
    low edge (true layouts only)."""

    image: np.ndarray
    bin: int
    cells: dict[str, tuple[int, int, int, int]]
    compact: bool
    origin: tuple[float, float] = (0.0, 0.0)


def is_compact(placements: Sequence[Placement], full_columns: int, full_rows: int) -> bool:
    """Whether the quadrants' image areas cover less than COMPACT_BELOW of their nominal
    full-size footprints (the simulator's small frames)."""
    if not placements:
        return False
    covered = np.mean([p.width * p.height for p in placements])
    return bool(covered < COMPACT_BELOW * full_columns * full_rows)


def assemble(
    parts: Mapping[str, QuadrantImages],
    placements: Mapping[str, Placement],
    grid: FocalPlaneGrid,
    bin: int,
    *,
    compact: bool = False,
    missing: Sequence[str] = (),
) -> Mosaic:
    """Paste the binned quadrants into one focal-plane image. In a true layout each lands
    where its placement says (to the nearest mosaic pixel); in a compact one in its cell of
    the 12 x 12 grid, towards its corner of the CCD. `missing` quadrants (bad or absent
    extensions) get their cell too, left NaN, so that the picture shows the hole."""
    if compact:
        return _assemble_compact(parts, placements, bin, missing)
    width, height = -(-grid.width // bin), -(-grid.height // bin)
    image = np.full((height, width), np.nan, np.float32)
    cells: dict[str, tuple[int, int, int, int]] = {}
    for name, place in placements.items():
        px, py = grid.pixel(place.x0, place.y0)
        c0, r0 = round(px / bin), round(py / bin)
        w, h = -(-place.width // bin), -(-place.height // bin)
        c0, r0 = min(max(c0, 0), width - w), min(max(r0, 0), height - h)
        cells[name] = (c0, r0, w, h)
        if name in parts:
            image[r0 : r0 + h, c0 : c0 + w] = parts[name].binned[:h, :w]
    return Mosaic(image, bin, cells, compact=False)


def _assemble_compact(
    parts: Mapping[str, QuadrantImages],
    placements: Mapping[str, Placement],
    bin: int,
    missing: Sequence[str],
) -> Mosaic:
    sizes = [(-(-p.width // bin), -(-p.height // bin)) for p in placements.values()]
    cw = max((s[0] for s in sizes), default=1)
    ch = max((s[1] for s in sizes), default=1)
    gap_q, gap_ccd = max(1, cw // 32), max(2, cw // 8)  # thin between quadrants, wider CCDs
    cell_x = [c * (2 * cw + gap_q + gap_ccd) + h * (cw + gap_q) for c in range(6) for h in (0, 1)]
    cell_y = [r * (2 * ch + gap_q + gap_ccd) + h * (ch + gap_q) for r in range(6) for h in (0, 1)]
    width, height = cell_x[-1] + cw + gap_ccd, cell_y[-1] + ch + gap_ccd
    image = np.full((height, width), np.nan, np.float32)
    cells: dict[str, tuple[int, int, int, int]] = {}
    for name in {*placements, *missing}:
        q = parse_extname(name)
        half_x, half_y = _quadrant_half(q.ccd_column, q.quadrant)
        col = 2 * (q.ccd_column - 1) + half_x
        row = 2 * (q.ccd_row - 1) + half_y
        place = placements.get(name)
        w, h = (-(-place.width // bin), -(-place.height // bin)) if place else (cw, ch)
        c0 = cell_x[col] + (cw - w if half_x == 0 else 0)  # towards the CCD's outer corner
        r0 = cell_y[row] + (ch - h if half_y == 0 else 0)
        cells[name] = (c0, r0, w, h)
        if name in parts:
            image[r0 : r0 + h, c0 : c0 + w] = parts[name].binned[:h, :w]
    return Mosaic(image, bin, cells, compact=True)


def _quadrant_half(ccd_column: int, quadrant: str) -> tuple[int, int]:
    """Which half of its CCD a quadrant covers: (0 left / 1 right, 0 bottom / 1 top), from
    the readout corners (VIS-REFERENCE 1; CCD columns 4-6 turned by 180 degrees)."""
    x, y = {"E": (0, 0), "F": (1, 0), "G": (1, 1), "H": (0, 1)}[quadrant]
    return (1 - x, 1 - y) if ccd_column >= 4 else (x, y)


def zoom_image(box: ZoomBox, pieces: Sequence[tuple[int, int, np.ndarray]]) -> np.ndarray:
    """The full-resolution cut-out of `box` from the quadrants' pieces (NaN in the gaps)."""
    out = np.full((box.size, box.size), np.nan, np.float32)
    for dx, dy, cut in pieces:
        out[dy : dy + cut.shape[0], dx : dx + cut.shape[1]] = cut
    return out


def zoom_box(name: str, what: str, x: float, y: float, size: int = ZOOM_SIZE) -> ZoomBox:
    """A zoom box of `size` pixels centred on focal-plane pixel (x, y)."""
    return ZoomBox(name, what, round(x - size / 2), round(y - size / 2), size)


def densest_cell(px: np.ndarray, py: np.ndarray, size: int) -> tuple[int, int, int] | None:
    """The cell of a `size`-pixel grid holding the most of the points (px, py): its column,
    row and count (None without a finite point); of equally full cells the first in
    (column, row) order, as np.unique(axis=1) gives it, counted with one integer per cell
    instead of sorting the pairs (0.66 s for a frame's ~1e6 cosmic rays)."""
    px, py = np.asarray(px, float), np.asarray(py, float)
    finite = np.isfinite(px) & np.isfinite(py)
    if not finite.any():
        return None
    ix = (px[finite] // size).astype(np.int64)
    iy = (py[finite] // size).astype(np.int64)
    ix0, iy0 = int(ix.min()), int(iy.min())
    rows = int(iy.max()) - iy0 + 1
    if (int(ix.max()) - ix0 + 1) * rows > 4 * ix.size + 1_000_000:  # far-flung points
        cells, counts = np.unique(np.stack([ix, iy]), axis=1, return_counts=True)
        k = int(np.argmax(counts))
        return int(cells[0, k]), int(cells[1, k]), int(counts[k])
    counts = np.bincount((ix - ix0) * rows + (iy - iy0))
    best = int(np.argmax(counts))
    return ix0 + best // rows, iy0 + best % rows, int(counts[best])


def snap_to_data(box: ZoomBox, placements: Sequence[Placement], grid: FocalPlaneGrid) -> ZoomBox:
    """`box`, moved onto the nearest quadrant image area when it holds almost no data
    (small frames, where VISQL's fixed positions fall between the quadrants)."""

    def overlap(p: Placement, b: ZoomBox) -> int:
        px, py = grid.pixel(p.x0, p.y0)
        ox = min(b.x0 + b.size, px + p.width) - max(b.x0, px)
        oy = min(b.y0 + b.size, py + p.height) - max(b.y0, py)
        return int(max(ox, 0) * max(oy, 0))

    covered = sum(overlap(p, box) for p in placements)
    if not placements or covered >= 0.1 * box.size * box.size:
        return box
    cx, cy = box.x0 + box.size / 2, box.y0 + box.size / 2

    def distance(p: Placement) -> float:
        px, py = grid.pixel(p.x0, p.y0)
        qx = min(max(cx, px), px + p.width)
        qy = min(max(cy, py), py + p.height)
        return float(np.hypot(qx - cx, qy - cy))

    best = min(placements, key=distance)
    px, py = grid.pixel(best.x0, best.y0)
    half_w, half_h = min(box.size, best.width) / 2, min(box.size, best.height) / 2
    centre_x = min(max(cx, px + half_w), px + best.width - half_w)
    centre_y = min(max(cy, py + half_h), py + best.height - half_h)
    return zoom_box(box.name, box.what, centre_x, centre_y, box.size)


def north_east(ra_deg: float, dec_deg: float, pa_deg: float) -> tuple[tuple[float, float], ...]:
    """Unit vectors of North and East in the instrument frame (X, Y) at the pointing."""
    from viskom.le1.focalplane import sky_to_instrument

    step = 1.0 / 60.0
    ra = np.array([ra_deg, ra_deg, ra_deg + step / max(np.cos(np.radians(dec_deg)), 1e-6)])
    dec = np.array([dec_deg, dec_deg + step, dec_deg])
    X, Y = sky_to_instrument(ra, dec, ra_deg, dec_deg, pa_deg, distortion=False)
    out = []
    for i in (1, 2):
        v = np.array([X[i] - X[0], Y[i] - Y[0]])
        v /= np.hypot(*v)
        out.append((float(v[0]), float(v[1])))
    return tuple(out)


def mosaic_sky_wcs(
    mosaic: Mosaic,
    grid: FocalPlaneGrid,
    ra_deg: float,
    dec_deg: float,
    pa_deg: float,
    order: int = 3,
) -> dict[str, object]:
    """FITS keywords of a TAN-SIP WCS of a true-layout mosaic, fitted by linear least squares
    to sky positions that VISQL's focal-plane model (distortion included) puts on the
    mosaic's pixels; the tangent point is the pointing. (astropy's fit_wcs_from_points does
    the same by iterative optimisation, a hundred times slower.)"""
    from viskom.le1.focalplane import sky_to_instrument

    height, width = mosaic.image.shape
    scale = grid.scale_deg * mosaic.bin

    def to_pixel(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (X - grid.x_min) / scale - 0.5, (Y - grid.y_min) / scale - 0.5

    radius = 0.75 * max(width, height) * scale
    g = np.linspace(-radius, radius, 41)
    dx, dy = np.meshgrid(g, g)
    dec = np.clip(dec_deg + dy.ravel(), -89.9, 89.9)
    ra = ra_deg + dx.ravel() / np.cos(np.radians(dec))
    col, row = to_pixel(*sky_to_instrument(ra, dec, ra_deg, dec_deg, pa_deg))
    keep = (col > -2) & (col < width + 1) & (row > -2) & (row < height + 1)
    xi, eta = _gnomonic(ra[keep], dec[keep], ra_deg, dec_deg)
    c0, r0 = (float(v[0]) for v in to_pixel(*sky_to_instrument(
        np.array([ra_deg]), np.array([dec_deg]), ra_deg, dec_deg, pa_deg)))  # fmt: skip
    u, v = col[keep] - c0, row[keep] - r0
    terms = [(p, q) for p in range(order + 1) for q in range(order + 1 - p) if p + q >= 1]
    design = np.column_stack([u**p * v**q for p, q in terms])
    coef, *_ = np.linalg.lstsq(design, np.column_stack([xi, eta]), rcond=None)
    linear = {t: coef[i] for i, t in enumerate(terms)}
    cd = np.column_stack([linear[(1, 0)], linear[(0, 1)]])  # d(xi, eta) / d(u, v)
    inverse = np.linalg.inv(cd)
    header: dict[str, object] = {
        "CTYPE1": "RA---TAN-SIP", "CTYPE2": "DEC--TAN-SIP", "CUNIT1": "deg", "CUNIT2": "deg",
        "CRVAL1": float(ra_deg), "CRVAL2": float(dec_deg),
        "CRPIX1": c0 + 1.0, "CRPIX2": r0 + 1.0,  # FITS pixels start at 1
        "CD1_1": float(cd[0, 0]), "CD1_2": float(cd[0, 1]),
        "CD2_1": float(cd[1, 0]), "CD2_2": float(cd[1, 1]),
        "A_ORDER": order, "B_ORDER": order,
    }  # fmt: skip
    for i, (p, q) in enumerate(terms):
        if p + q < 2:
            continue
        a, b = inverse @ coef[i]  # SIP: (xi, eta) = CD (u + f, v + g)
        header[f"A_{p}_{q}"], header[f"B_{p}_{q}"] = float(a), float(b)
    return header


def _gnomonic(
    ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float
) -> tuple[np.ndarray, np.ndarray]:
    """Intermediate world coordinates (deg) of the TAN projection about (ra0, dec0)."""
    a, d = np.radians(ra - ra0), np.radians(dec)
    d0 = np.radians(dec0)
    cos_c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a)
    xi = np.cos(d) * np.sin(a) / cos_c
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a)) / cos_c
    return np.degrees(xi), np.degrees(eta)
