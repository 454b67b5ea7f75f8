"""Drawing the VIS focal plane: 6x6 CCD outlines, quadrant divisions and CCD labels.

Rectangles come from the nominal layout in `viskom.le1.focalplane` (CCD centres and pitches,
quadrant image origins at the readout corners), in instrument-frame degrees. Real positions
differ by the field distortion (up to ~0.003 deg at the corners), negligible at map scale.
"""

from __future__ import annotations

from functools import cache

from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PolyCollection

from viskom.le1.focalplane import (
    CHARGE_INJECTION_GAP_ROWS,
    PIXEL_SCALE_DEG,
    ccd_centre_deg,
    quadrant_image_origin_deg,
)
from viskom.le1.geometry import (
    CCD_COLUMNS,
    CCD_ROWS,
    DEFAULT_OVERSCAN_X,
    DEFAULT_OVERSCAN_Y,
    DEFAULT_PRESCAN_X,
    FULL_IMAGE_COLUMNS,
    FULL_IMAGE_ROWS,
    all_extnames,
    parse_extname,
    quadrant_geometry,
)

CCD_WIDTH_DEG = 2 * FULL_IMAGE_COLUMNS * PIXEL_SCALE_DEG
CCD_HEIGHT_DEG = (2 * FULL_IMAGE_ROWS + CHARGE_INJECTION_GAP_ROWS) * PIXEL_SCALE_DEG
QUADRANT_WIDTH_DEG = FULL_IMAGE_COLUMNS * PIXEL_SCALE_DEG
QUADRANT_HEIGHT_DEG = FULL_IMAGE_ROWS * PIXEL_SCALE_DEG

#: Axis limits of every focal-plane map (VISQL's map3: X +-0.4, Y +-0.45 deg).
FPA_XLIM = (-0.4, 0.4)
FPA_YLIM = (-0.45, 0.45)

Rect = tuple[float, float, float, float]  # x0, y0, width, height (deg)


def ccd_rectangle(ccd_row: int, ccd_column: int) -> Rect:
    """Nominal outline of a CCD's image area (both halves and the charge-injection gap)."""
    xc, yc = ccd_centre_deg(ccd_row, ccd_column)
    return xc - CCD_WIDTH_DEG / 2, yc - CCD_HEIGHT_DEG / 2, CCD_WIDTH_DEG, CCD_HEIGHT_DEG


@cache
def quadrant_rectangle(extname: str) -> Rect:
    """Nominal outline of a quadrant's image area, at its readout corner of the CCD."""
    geom = quadrant_geometry(
        extname,
        DEFAULT_PRESCAN_X + FULL_IMAGE_COLUMNS + DEFAULT_OVERSCAN_X,
        FULL_IMAGE_ROWS + DEFAULT_OVERSCAN_Y,
    )
    x0, y0 = quadrant_image_origin_deg(geom)  # centre of the first pixel
    half = 0.5 * PIXEL_SCALE_DEG
    return x0 - half, y0 - half, QUADRANT_WIDTH_DEG, QUADRANT_HEIGHT_DEG


def region_rectangle(name: str) -> Rect | None:
    """Outline of a quadrant 'R-C.Q' or a CCD 'R-C'; None if the name is neither."""
    name = name.strip()
    try:
        return quadrant_rectangle(parse_extname(name).extname)
    except ValueError:
        pass
    parts = name.split("-")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        row, col = int(parts[0]), int(parts[1])
        if row in CCD_ROWS and col in CCD_COLUMNS:
            return ccd_rectangle(row, col)
    return None


def region_centre(name: str) -> tuple[float, float] | None:
    """Nominal centre (X, Y) of a quadrant 'R-C.Q' or CCD 'R-C'; None if neither."""
    rect = region_rectangle(name)
    if rect is None:
        return None
    x0, y0, w, h = rect
    return x0 + w / 2, y0 + h / 2


def _outline(rect: Rect) -> list[tuple[float, float]]:
    x0, y0, w, h = rect
    return [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)]


def focal_plane_axes(
    ax: Axes,
    *,
    quadrants: bool = True,
    ccd_labels: bool = True,
    set_limits: bool = True,
    zorder: float = 2.5,
) -> None:
    """Draw the 6x6 CCD outlines, thin quadrant divisions and small CCD labels 'R-C' on `ax`.

    With `set_limits`, also sets equal aspect, X +-0.4 / Y +-0.45 deg and the axis labels.
    """
    ccds = [_outline(ccd_rectangle(r, c)) for r in CCD_ROWS for c in CCD_COLUMNS]
    ax.add_collection(
        PolyCollection(
            ccds, closed=True, facecolors="none", edgecolors="0.3", linewidths=0.8, zorder=zorder
        )
    )
    if quadrants:
        segments = []
        for r in CCD_ROWS:
            for c in CCD_COLUMNS:
                x0, y0, w, h = ccd_rectangle(r, c)
                segments.append([(x0 + w / 2, y0), (x0 + w / 2, y0 + h)])
                segments.append([(x0, y0 + h / 2), (x0 + w, y0 + h / 2)])
        ax.add_collection(
            LineCollection(segments, colors="0.55", linewidths=0.35, zorder=zorder - 0.1)
        )
    if ccd_labels:
        for r in CCD_ROWS:
            for c in CCD_COLUMNS:
                x0, y0, _, h = ccd_rectangle(r, c)
                ax.text(
                    x0 + 0.002,
                    y0 + h - 0.002,
                    f"{r}-{c}",
                    fontsize=5.5,
                    color="0.45",
                    alpha=0.8,
                    ha="left",
                    va="top",
                    zorder=zorder,
                )
    if set_limits:
        ax.set_xlim(*FPA_XLIM)
        ax.set_ylim(*FPA_YLIM)
        ax.set_aspect("equal")
        ax.set_xlabel("X [deg]")
        ax.set_ylabel("Y [deg]")


__all__ = [
    "CCD_HEIGHT_DEG",
    "CCD_WIDTH_DEG",
    "FPA_XLIM",
    "FPA_YLIM",
    "all_extnames",
    "ccd_rectangle",
    "focal_plane_axes",
    "quadrant_rectangle",
    "region_centre",
    "region_rectangle",
]
