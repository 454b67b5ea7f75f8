"""Quadrant geometry of VIS LE1 frames: names, readout corners and pixel regions.

A VIS quadrant array holds a serial prescan, the image area, a serial overscan and a
parallel overscan. Their widths come from the header (PRESCANX, OVRSCANX, OVRSCANY);
which side each sits on follows from the quadrant's readout corner (VIS-REFERENCE 1):
for CCD columns 1-3 the readout corner of E is bottom-left, F bottom-right, G top-right,
H top-left; CCD columns 4-6 are rotated by 180 degrees. Arrays are stored in focal-plane
orientation, so the prescan lies on the readout corner's side and the parallel overscan
on the far side from the serial register (next to the CCD's horizontal mid-line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

QUADRANTS: tuple[str, ...] = ("E", "F", "G", "H")
CCD_ROWS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
CCD_COLUMNS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)

#: Checked defaults for the quadrant layout (VIS-REFERENCE 1); headers take precedence.
DEFAULT_PRESCAN_X = 51
DEFAULT_OVERSCAN_X = 29
DEFAULT_OVERSCAN_Y = 20
FULL_IMAGE_COLUMNS = 2048
FULL_IMAGE_ROWS = 2066

_EXTNAME_RE = re.compile(r"^(?P<row>[1-6])-(?P<col>[1-6])\.(?P<quad>[EFGH])$")

Corner = Literal["bottom-left", "bottom-right", "top-right", "top-left"]
_CORNER_COLUMNS_1_3: dict[str, Corner] = {
    "E": "bottom-left",
    "F": "bottom-right",
    "G": "top-right",
    "H": "top-left",
}
_ROTATED_180: dict[Corner, Corner] = {
    "bottom-left": "top-right",
    "bottom-right": "top-left",
    "top-right": "bottom-left",
    "top-left": "bottom-right",
}


def all_extnames() -> list[str]:
    """The 144 quadrant extension names `R-C.Q` in a fixed, canonical order."""
    return [f"{r}-{c}.{q}" for r in CCD_ROWS for c in CCD_COLUMNS for q in QUADRANTS]


def all_ccds() -> list[str]:
    """The 36 CCD names `R-C`."""
    return [f"{r}-{c}" for r in CCD_ROWS for c in CCD_COLUMNS]


@dataclass(frozen=True)
class QuadrantId:
    """A readout quadrant: CCD row (1-6), CCD column (1-6) and quadrant letter (E-H)."""

    ccd_row: int
    ccd_column: int
    quadrant: str

    @property
    def extname(self) -> str:
        return f"{self.ccd_row}-{self.ccd_column}.{self.quadrant}"

    @property
    def ccd(self) -> str:
        return f"{self.ccd_row}-{self.ccd_column}"


def parse_extname(extname: str) -> QuadrantId:
    """Split an EXTNAME such as `3-4.G` into CCD row, column and quadrant; ValueError if not."""
    m = _EXTNAME_RE.match(extname.strip())
    if not m:
        raise ValueError(f"not a VIS quadrant extension name: {extname!r} (expected 'R-C.Q')")
    return QuadrantId(int(m["row"]), int(m["col"]), m["quad"])


def readout_corner(extname: str) -> Corner:
    """Corner of the CCD (as stored, focal-plane orientation) where this quadrant is read out."""
    q = parse_extname(extname)
    corner = _CORNER_COLUMNS_1_3[q.quadrant]
    return _ROTATED_180[corner] if q.ccd_column >= 4 else corner


@dataclass(frozen=True)
class Region:
    """A rectangular pixel region of a quadrant array as 0-based half-open row/column ranges."""

    name: str
    row0: int
    row1: int
    col0: int
    col1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """Numpy index (rows, columns) for this region."""
        return slice(self.row0, self.row1), slice(self.col0, self.col1)

    @property
    def shape(self) -> tuple[int, int]:
        return self.row1 - self.row0, self.col1 - self.col0

    @property
    def size(self) -> int:
        return max(0, self.row1 - self.row0) * max(0, self.col1 - self.col0)


@dataclass(frozen=True)
class QuadrantGeometry:
    """Where the prescan, overscans and image area lie in one stored quadrant array."""

    extname: str
    naxis1: int
    naxis2: int
    prescan_x: int
    overscan_x: int
    overscan_y: int
    corner: Corner

    @property
    def prescan_side(self) -> Literal["left", "right"]:
        return "left" if self.corner.endswith("left") else "right"

    @property
    def parallel_overscan_side(self) -> Literal["top", "bottom"]:
        # Serial register on the readout corner's edge; parallel overscan on the far side.
        return "top" if self.corner.startswith("bottom") else "bottom"

    @property
    def image_columns(self) -> int:
        return self.naxis1 - self.prescan_x - self.overscan_x

    @property
    def image_rows(self) -> int:
        return self.naxis2 - self.overscan_y

    def _image_col_range(self) -> tuple[int, int]:
        if self.prescan_side == "left":
            return self.prescan_x, self.prescan_x + self.image_columns
        return self.overscan_x, self.overscan_x + self.image_columns

    def _image_row_range(self) -> tuple[int, int]:
        if self.parallel_overscan_side == "top":
            return 0, self.image_rows
        return self.overscan_y, self.naxis2

    @property
    def image(self) -> Region:
        r0, r1 = self._image_row_range()
        c0, c1 = self._image_col_range()
        return Region("image", r0, r1, c0, c1)

    @property
    def serial_prescan(self) -> Region:
        """Prescan columns over the image rows (the corner with the parallel overscan excluded)."""
        r0, r1 = self._image_row_range()
        if self.prescan_side == "left":
            return Region("serial_prescan", r0, r1, 0, self.prescan_x)
        return Region("serial_prescan", r0, r1, self.naxis1 - self.prescan_x, self.naxis1)

    @property
    def serial_overscan(self) -> Region:
        """Serial overscan columns over the image rows."""
        r0, r1 = self._image_row_range()
        if self.prescan_side == "left":
            return Region("serial_overscan", r0, r1, self.naxis1 - self.overscan_x, self.naxis1)
        return Region("serial_overscan", r0, r1, 0, self.overscan_x)

    @property
    def parallel_overscan(self) -> Region:
        """Parallel overscan rows over the image columns."""
        c0, c1 = self._image_col_range()
        if self.parallel_overscan_side == "top":
            return Region("parallel_overscan", self.image_rows, self.naxis2, c0, c1)
        return Region("parallel_overscan", 0, self.overscan_y, c0, c1)

    def regions(self) -> dict[str, Region]:
        return {
            r.name: r
            for r in (self.serial_prescan, self.image, self.serial_overscan, self.parallel_overscan)
        }

    def image_to_array(self, col: float, row: float) -> tuple[float, float]:
        """Image-area pixel (0-based col,row from the image's lower-left) to array (x, y)."""
        return col + self.image.col0, row + self.image.row0


def quadrant_geometry(
    extname: str,
    naxis1: int,
    naxis2: int,
    prescan_x: int | None = DEFAULT_PRESCAN_X,
    overscan_x: int | None = DEFAULT_OVERSCAN_X,
    overscan_y: int | None = DEFAULT_OVERSCAN_Y,
) -> QuadrantGeometry:
    """Geometry of a quadrant from its size and PRESCANX/OVRSCANX/OVRSCANY (None: defaults).

    Raises ValueError when the numbers cannot describe a quadrant (negative widths, or no
    image area left), so that a corrupt header is reported rather than measured.
    """
    px = DEFAULT_PRESCAN_X if prescan_x is None else int(prescan_x)
    ox = DEFAULT_OVERSCAN_X if overscan_x is None else int(overscan_x)
    oy = DEFAULT_OVERSCAN_Y if overscan_y is None else int(overscan_y)
    if min(px, ox, oy) < 0:
        raise ValueError(f"{extname}: negative prescan/overscan width ({px}, {ox}, {oy})")
    if naxis1 - px - ox < 1 or naxis2 - oy < 1:
        raise ValueError(
            f"{extname}: NAXIS1={naxis1}, NAXIS2={naxis2} leave no image area with "
            f"PRESCANX={px}, OVRSCANX={ox}, OVRSCANY={oy}"
        )
    return QuadrantGeometry(extname, int(naxis1), int(naxis2), px, ox, oy, readout_corner(extname))


@dataclass(frozen=True)
class GeometryCheck:
    """Whether a quadrant's pixels agree with the geometry its header implies.

    `consistent` is False when the bias-only columns (or rows) clearly sit on the other
    side; None when the data cannot tell (e.g. a bias frame, where every pixel is bias).
    `excess_adu` is how much brighter the predicted bias-only strip is than its mirror.
    """

    consistent: bool | None
    excess_adu: float
    axis: str


def check_geometry(
    data: np.ndarray, geometry: QuadrantGeometry, threshold_adu: float = 5.0
) -> GeometryCheck:
    """Compare the predicted bias-only strips with their mirror images across the array.

    In a quadrant with any signal, prescan and overscan columns are the lowest, flattest
    columns. Only the columns (rows) where the predicted and mirrored strips differ are
    compared, so symmetric parts cancel. A predicted strip brighter than its mirror by
    more than `threshold_adu` (well above a bias gradient) means the header and the data
    disagree. Medians over a subsample of rows (columns) keep this cheap.
    """
    image = geometry.image
    results = []
    predicted = np.zeros(geometry.naxis1, dtype=bool)
    for region in (geometry.serial_prescan, geometry.serial_overscan):
        predicted[region.col0 : region.col1] = True
    mirrored = predicted[::-1]
    if (predicted != mirrored).any():
        rows = slice(image.row0, image.row1, max(1, image.shape[0] // 256))
        excess = float(
            np.median(data[rows][:, predicted & ~mirrored])
            - np.median(data[rows][:, mirrored & ~predicted])
        )
        results.append(("serial", excess))
    po = geometry.parallel_overscan
    pred_rows = np.zeros(geometry.naxis2, dtype=bool)
    pred_rows[po.row0 : po.row1] = True
    mirr_rows = pred_rows[::-1]
    if (pred_rows != mirr_rows).any():
        cols = slice(image.col0, image.col1, max(1, image.shape[1] // 256))
        excess = float(
            np.median(data[pred_rows & ~mirr_rows, cols])
            - np.median(data[mirr_rows & ~pred_rows, cols])
        )
        results.append(("parallel", excess))
    if not results:
        return GeometryCheck(None, 0.0, "none")
    axis, excess = max(results, key=lambda r: r[1])
    if excess > threshold_adu:
        return GeometryCheck(False, excess, axis)
    # Signal in the image area but none in the predicted strips: the geometry is confirmed.
    confirmed = any(-e > threshold_adu for _, e in results)
    return GeometryCheck(True if confirmed else None, excess, axis)
