"""The VIS focal plane: CCD layout in the instrument frame and sky <-> instrument rotation.

The instrument frame is centred on (0, 0) in degrees. CCD column C runs along +X and CCD
row R along +Y; the CCD pitches come from VISQL's focal-plane outline (VISQL-SPEC 8.3).
Inside a CCD, quadrants sit at their readout corner (see `geometry.readout_corner`).
This nominal layout is what the simulator writes into headers; readers always use the
WCS of each extension instead (`le1.wcs`).
"""

from __future__ import annotations

import numpy as np

from viskom.le1.geometry import (
    FULL_IMAGE_COLUMNS,
    FULL_IMAGE_ROWS,
    QuadrantGeometry,
    parse_extname,
)

PIXEL_SCALE_ARCSEC = 0.1
PIXEL_SCALE_DEG = PIXEL_SCALE_ARCSEC / 3600.0
PIXELS_PER_DEG = 36000.0
PIXEL_SIZE_CM = 12e-4
CCD_PITCH_X_DEG = 0.1186 - 0.0017
CCD_PITCH_Y_DEG = 0.1405 - 0.0087
CHARGE_INJECTION_GAP_ROWS = 4


def ccd_centre_deg(ccd_row: int, ccd_column: int) -> tuple[float, float]:
    """Nominal instrument-frame centre (X, Y) of a CCD, degrees."""
    return (ccd_column - 3.5) * CCD_PITCH_X_DEG, (ccd_row - 3.5) * CCD_PITCH_Y_DEG


def quadrant_image_origin_deg(
    geometry: QuadrantGeometry,
    full_columns: int = FULL_IMAGE_COLUMNS,
    full_rows: int = FULL_IMAGE_ROWS,
) -> tuple[float, float]:
    """Instrument-frame position (deg) of the centre of the image area's first pixel.

    A quadrant with a smaller image area than the real one (the simulator's `small`
    geometry) is placed at the readout corner of its full-size footprint, so that small
    frames sample the same focal-plane positions as full ones, only fewer pixels.
    """
    q = parse_extname(geometry.extname)
    xc, yc = ccd_centre_deg(q.ccd_row, q.ccd_column)
    ccd_width = 2 * full_columns
    ccd_height = 2 * full_rows + CHARGE_INJECTION_GAP_ROWS
    right = geometry.corner.endswith("right")
    top = geometry.corner.startswith("top")
    # CCD pixel coordinate (0-based, from the CCD's lower-left) of the image's first pixel.
    x0 = (ccd_width - geometry.image_columns) if right else 0
    y0 = (ccd_height - geometry.image_rows) if top else 0
    return (
        xc + (x0 + 0.5 - ccd_width / 2) * PIXEL_SCALE_DEG,
        yc + (y0 + 0.5 - ccd_height / 2) * PIXEL_SCALE_DEG,
    )


def nominal_wcs_header(geometry: QuadrantGeometry, rotation_deg: float = 0.0) -> dict:
    """TAN WCS keywords (CRVAL 0,0) mapping this quadrant's array into the instrument frame.

    `rotation_deg` rotates the CCD slightly about its quadrant origin, as real CCDs are
    not perfectly aligned.
    """
    x0, y0 = quadrant_image_origin_deg(geometry)
    c, s = np.cos(np.radians(rotation_deg)), np.sin(np.radians(rotation_deg))
    cd = PIXEL_SCALE_DEG * np.array([[c, -s], [s, c]])
    # FITS 1-based pixel of the image's first pixel centre.
    p0 = np.array([geometry.image.col0 + 1.0, geometry.image.row0 + 1.0])
    crpix = p0 - np.linalg.solve(cd, np.array([x0, y0]))
    return {
        "CTYPE1": "RA---TAN",
        "CTYPE2": "DEC--TAN",
        "CUNIT1": "deg",
        "CUNIT2": "deg",
        "CRVAL1": 0.0,
        "CRVAL2": 0.0,
        "CRPIX1": float(crpix[0]),
        "CRPIX2": float(crpix[1]),
        "CD1_1": float(cd[0, 0]),
        "CD1_2": float(cd[0, 1]),
        "CD2_1": float(cd[1, 0]),
        "CD2_2": float(cd[1, 1]),
    }


def sky_to_instrument(
    ra_deg: np.ndarray,
    dec_deg: np.ndarray,
    ra0_deg: float,
    dec0_deg: float,
    pa_deg: float,
    distortion: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Sky (RA, Dec) to instrument-frame (X, Y) in degrees for a pointing RA0, DEC0, PA.

    VISQL's model (VISQL-SPEC 8.3): rotate the pointing centre to the pole of longitude
    zero, roll by PA + 90 deg, take (flipped) longitude and latitude, then optionally add
    VISQL's empirical distortion terms.
    """
    ra = np.radians(np.asarray(ra_deg, dtype=float))
    dec = np.radians(np.asarray(dec_deg, dtype=float))
    dra = ra - np.radians(ra0_deg)
    dc = np.radians(dec0_deg)
    cpa, spa = np.cos(np.radians(pa_deg + 90.0)), np.sin(np.radians(pa_deg + 90.0))
    x = np.cos(dra) * np.cos(dec) * np.cos(dc) + np.sin(dec) * np.sin(dc)
    y = (
        np.sin(dra) * np.cos(dec) * cpa
        + np.cos(dra) * np.cos(dec) * np.sin(dc) * spa
        - np.sin(dec) * np.cos(dc) * spa
    )
    z = (
        np.sin(dra) * np.cos(dec) * spa
        - np.cos(dra) * np.cos(dec) * np.sin(dc) * cpa
        + np.sin(dec) * np.cos(dc) * cpa
    )
    xv = -np.degrees(np.arctan2(y, x))
    yv = np.degrees(np.arcsin(np.clip(z, -1.0, 1.0)))
    if distortion:
        xv, yv = apply_visql_distortion(xv, yv)
    return xv, yv


def apply_visql_distortion(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """VISQL's empirical focal-plane distortion (degrees in, degrees out)."""
    x = x + (x - 0.05) ** 2 * 550 / 36000 + (y + 0.05) ** 2 * 200 / 36000
    y = y - y * 450 / 36000 + y * x * 350 / 36000
    return x, y


def unwrap_longitude(x_deg: np.ndarray) -> np.ndarray:
    """Map instrument-frame longitudes to (-180, 180] degrees, as VISQL does for X_WORLD."""
    return (np.asarray(x_deg, dtype=float) + 180.0) % 360.0 - 180.0
