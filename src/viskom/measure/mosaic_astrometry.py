"""How far a blind solution of the mosaic is from the WCS the header pointing gives it.

Both are astropy WCS objects of the same picture. The comparison is made where the picture
is: at its centre (offset in RA (times cos Dec) and Dec, arcsec), by the local linear maps
(rotation in deg, scale ratio), and as the largest separation over a 9 x 9 grid of the
picture (arcsec): a wrong pointing shows in the first, a wrong PA in the second and third.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

GRID = 9  # points along each axis of the picture where the two solutions are compared


def parity_of(cd: Any) -> str:
    """astrometry.net's parity of a pixel-to-sky CD matrix: "pos" (its normal orientation,
    north up and east left: det CD < 0) or "neg"."""
    return "pos" if float(np.linalg.det(np.asarray(cd, float))) < 0 else "neg"


def _local_map(wcs: Any, x: float, y: float, dec0: float) -> np.ndarray:
    """d(RA cos Dec, Dec)/d(x, y) at a pixel, deg per pixel (central differences)."""
    px = np.array([x - 1.0, x + 1.0, x, x])
    py = np.array([y, y, y - 1.0, y + 1.0])
    ra, dec = wcs.all_pix2world(px, py, 0)
    cosd = math.cos(math.radians(dec0))
    dra = (np.asarray(ra) - ra[0] + 180.0) % 360.0 - 180.0
    return np.array([
        [(dra[1] - dra[0]) * cosd / 2.0, (dra[3] - dra[2]) * cosd / 2.0],
        [(dec[1] - dec[0]) / 2.0, (dec[3] - dec[2]) / 2.0],
    ])  # fmt: skip


def _angle_deg(m: np.ndarray) -> float:
    """Rotation of a 2 x 2 map (its polar decomposition), in degrees; a mirrored map (the
    usual sky picture, det < 0) is unmirrored along the picture's y axis first."""
    if np.linalg.det(m) < 0:
        m = m @ np.diag([1.0, -1.0])
    u, _, vt = np.linalg.svd(m)
    r = u @ vt
    return math.degrees(math.atan2(r[1, 0] - r[0, 1], r[0, 0] + r[1, 1]))


def solution_offsets(solved: Any, expected: Any, width: int, height: int) -> dict[str, float]:
    """Solved minus expected WCS of a `width` x `height` picture: centre offsets (arcsec),
    rotation (deg), scale ratio, and the largest separation over the picture (arcsec)."""
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    centre = np.array([cx]), np.array([cy])
    ra_s, dec_s = (float(v[0]) for v in solved.all_pix2world(*centre, 0))
    ra_e, dec_e = (float(v[0]) for v in expected.all_pix2world(*centre, 0))
    cosd = math.cos(math.radians(dec_e))
    m_s, m_e = _local_map(solved, cx, cy, dec_s), _local_map(expected, cx, cy, dec_e)
    drot = (_angle_deg(m_s) - _angle_deg(m_e) + 180.0) % 360.0 - 180.0
    scale = math.sqrt(abs(np.linalg.det(m_s)) / abs(np.linalg.det(m_e)))
    gx, gy = np.meshgrid(np.linspace(0, width - 1, GRID), np.linspace(0, height - 1, GRID))
    a = np.radians(solved.all_pix2world(gx.ravel(), gy.ravel(), 0))
    b = np.radians(expected.all_pix2world(gx.ravel(), gy.ravel(), 0))
    # haversine separation
    h = np.sin((a[1] - b[1]) / 2) ** 2
    h += np.cos(a[1]) * np.cos(b[1]) * np.sin((a[0] - b[0]) / 2) ** 2
    sep = np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))) * 3600.0
    return {
        "dra_arcsec": ((ra_s - ra_e + 180.0) % 360.0 - 180.0) * cosd * 3600.0,
        "ddec_arcsec": (dec_s - dec_e) * 3600.0,
        "drot_deg": drot,
        "scale_ratio": scale,
        "max_offset_arcsec": float(sep.max()),
    }
