"""Instrument frame <-> quadrant pixels, from each extension's CRPIX/CRVAL/CD (and CTYPE).

The instrument frame is a spherical frame centred on (0, 0), in degrees; X is unwrapped
to (-180, 180]. Pixels are 0-based array coordinates (x = column, y = row) of the
quadrant as stored, so `data[int(round(y)), int(round(x))]` is the pixel at (x, y).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from viskom.le1.focalplane import unwrap_longitude
from viskom.le1.geometry import QuadrantGeometry

if TYPE_CHECKING:  # astropy is imported where a WCS is built: start-up time
    from astropy.io import fits
    from astropy.wcs import WCS

_WCS_KEYS = (
    "CTYPE1",
    "CTYPE2",
    "CUNIT1",
    "CUNIT2",
    "CRVAL1",
    "CRVAL2",
    "CRPIX1",
    "CRPIX2",
    "CD1_1",
    "CD1_2",
    "CD2_1",
    "CD2_2",
    "CDELT1",
    "CDELT2",
    "PC1_1",
    "PC1_2",
    "PC2_1",
    "PC2_2",
)


@dataclass
class QuadrantWcs:
    """The linear (or TAN) WCS of one quadrant extension."""

    extname: str
    wcs: WCS

    @classmethod
    def from_header(cls, header: Mapping | fits.Header, extname: str | None = None) -> QuadrantWcs:
        """Build from the extension header; ValueError if it has no usable WCS."""
        from astropy.io import fits
        from astropy.wcs import WCS, FITSFixedWarning

        hdr = fits.Header()
        for key in _WCS_KEYS:
            if key in header:
                hdr[key] = header[key]
        if "CRPIX1" not in hdr or not ({"CD1_1", "CDELT1"} & set(hdr.keys())):
            raise ValueError(f"{extname or '?'}: no CRPIX/CD WCS keywords in the header")
        hdr["NAXIS"] = 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            w = WCS(hdr)
        name = extname or str(header.get("EXTNAME", "?")).strip()
        return cls(name, w)

    def pixel_to_instrument(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based array pixels to instrument-frame (X, Y) in degrees."""
        X, Y = self.wcs.all_pix2world(np.asarray(x, float), np.asarray(y, float), 0)
        return unwrap_longitude(X), np.asarray(Y)

    def instrument_to_pixel(self, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Instrument-frame (X, Y) in degrees to 0-based array pixels."""
        x, y = self.wcs.all_world2pix(np.asarray(X, float) % 360.0, np.asarray(Y, float), 0)
        return np.asarray(x), np.asarray(y)

    def image_footprint(self, geometry: QuadrantGeometry) -> np.ndarray:
        """Instrument-frame corners (4 x 2, deg) of the quadrant's image area."""
        im = geometry.image
        xs = np.array([im.col0, im.col1 - 1, im.col1 - 1, im.col0], float)
        ys = np.array([im.row0, im.row0, im.row1 - 1, im.row1 - 1], float)
        X, Y = self.pixel_to_instrument(xs, ys)
        return np.column_stack([X, Y])


def locate(
    X: np.ndarray,
    Y: np.ndarray,
    wcs_by_ext: Mapping[str, QuadrantWcs],
    geometry_by_ext: Mapping[str, QuadrantGeometry],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For instrument-frame points, the quadrant whose image area holds each and its pixel.

    Returns (extname array, x, y); points in no image area (gaps, outside) get "" and NaN.
    """
    X = np.atleast_1d(np.asarray(X, float))
    Y = np.atleast_1d(np.asarray(Y, float))
    ext = np.full(X.shape, "", dtype=object)
    px = np.full(X.shape, np.nan)
    py = np.full(X.shape, np.nan)
    for name, w in wcs_by_ext.items():
        im = geometry_by_ext[name].image
        x, y = w.instrument_to_pixel(X, Y)
        inside = (
            (x >= im.col0 - 0.5) & (x < im.col1 - 0.5) & (y >= im.row0 - 0.5) & (y < im.row1 - 0.5)
        )
        inside &= ext == ""
        ext[inside], px[inside], py[inside] = name, x[inside], y[inside]
    return ext.astype(str), px, py


@dataclass(frozen=True)
class LinearWcs:
    """The linear part of an extension's WCS (CRPIX, CRVAL, CD or CDELT x PC), for placing
    quadrants fast (astropy builds a full WCS in ~4 ms; 144 of them cost half a second).

    VIS headers carry a linear WCS in the instrument frame centred on (0, 0); with a TAN
    projection about (0, 0) the linear relation is off by (tan r - r) ~ r^3 / 3: 0.02 arcsec
    at the focal plane's 0.4 deg corner, a thousandth of a mosaic pixel."""

    crpix: tuple[float, float]
    crval: tuple[float, float]
    cd: tuple[tuple[float, float], tuple[float, float]]

    @classmethod
    def from_header(cls, header: Mapping | fits.Header, extname: str = "?") -> LinearWcs:
        """From the keywords; ValueError when they are missing or the tangent point is not
        near the frame's origin (then use QuadrantWcs)."""
        try:
            crpix = (float(header["CRPIX1"]), float(header["CRPIX2"]))
            crval = (float(header.get("CRVAL1", 0.0)), float(header.get("CRVAL2", 0.0)))
            if "CD1_1" in header:
                cd = ((float(header["CD1_1"]), float(header.get("CD1_2", 0.0))),
                      (float(header.get("CD2_1", 0.0)), float(header["CD2_2"])))  # fmt: skip
            else:
                c1, c2 = float(header["CDELT1"]), float(header["CDELT2"])
                pc = [[float(header.get(f"PC{i}_{j}", float(i == j))) for j in (1, 2)]
                      for i in (1, 2)]  # fmt: skip
                cd = ((c1 * pc[0][0], c1 * pc[0][1]), (c2 * pc[1][0], c2 * pc[1][1]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{extname}: no usable linear WCS ({exc})") from None
        if abs(unwrap_longitude(np.array(crval[0]))) > 1.0 or abs(crval[1]) > 1.0:
            raise ValueError(f"{extname}: CRVAL {crval} is not the instrument frame's origin")
        return cls(crpix, crval, cd)

    def pixel_to_instrument(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based array pixels to instrument-frame (X, Y) in degrees."""
        dx = np.asarray(x, float) + 1.0 - self.crpix[0]  # FITS pixels are 1-based
        dy = np.asarray(y, float) + 1.0 - self.crpix[1]
        (a, b), (c, d) = self.cd
        X = unwrap_longitude(self.crval[0] + a * dx + b * dy)
        return X, self.crval[1] + c * dx + d * dy
