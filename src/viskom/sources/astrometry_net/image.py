"""Blind astrometry of a picture (the focal-plane mosaic) with solve-field: VISQL's getastrom.

VISQL (VISQL-SPEC 4.4) runs `solve-field -z 2 -L 0.8 -H 0.9 --parity neg --crpix-x 600
--crpix-y 577` on every science thumbnail and keeps the TAN-SIP `.wcs`. `solve_image` does the
same on the FITS mosaic of the images stage: astrometry.net finds the sources itself
(image2xy, after downsampling by `downsample`), the scale is the mosaic's within
`scale_tolerance`, the parity is the mosaic's (from its own WCS: it follows the quadrant
geometry, not the pointing), CRPIX is the image centre and SIP order 2 takes the distortion.
The index files are the caller's (built from the Gaia cone, or VISQL-style wide index files).

The answer (`ImageSolution`) is the solved WCS header with the matched-star count and the rms
of the matches on the sky; None (reason logged) when nothing is solved in time.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from viskom.sources.astrometry_net.solve import _read_table
from viskom.sources.astrometry_net.tools import (
    SOLVE_FIELD,
    backend_config,
    index_paths,
    require_tool,
    run_solve_field,
)

log = logging.getLogger(__name__)

#: VISQL's getastrom downsampling (`-z 2`): image2xy finds the stars on 2x2-binned pixels.
DEFAULT_DOWNSAMPLE = 2
#: Allowed relative error of the stated pixel scale (VISQL: 0.8-0.9 deg over 1200 px, +-6 %).
IMAGE_SCALE_TOLERANCE = 0.06
_CPU_FRACTION = 0.9


@dataclass(frozen=True)
class ImageSolution:
    """A solved picture: its TAN-SIP WCS (FITS cards), the stars that fixed it and their rms."""

    header: dict[str, Any]
    n_matched: int
    rms_arcsec: float
    index_id: str
    seconds: float
    width: int
    height: int

    def wcs(self) -> Any:
        """The solution as an astropy WCS (SIP included)."""
        from astropy.wcs import WCS

        return WCS(fits.Header(self.header), relax=True)

    def rotation_deg(self) -> float:
        """VISQL's rotation angle of the picture (getastrom:34):
        (atan2(CD1_2, CD1_1) - atan2(CD2_1, CD2_2)) / 2, in degrees."""
        h = self.header
        return math.degrees(
            (math.atan2(h["CD1_2"], h["CD1_1"]) - math.atan2(h["CD2_1"], h["CD2_2"])) / 2.0
        )


_WCS_KEYS = ("CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2",
             "CD1_1", "CD1_2", "CD2_1", "CD2_2", "A_ORDER", "B_ORDER", "AP_ORDER", "BP_ORDER",
             "EQUINOX", "IMAGEW", "IMAGEH", "RADESYS", "LONPOLE", "LATPOLE")  # fmt: skip


def _wcs_cards(header: fits.Header) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in header.items():
        if key in _WCS_KEYS or key[:2] in ("A_", "B_") or key[:3] in ("AP_", "BP_"):
            out[key] = value
    return out


def _match_rms_arcsec(corr: dict[str, np.ndarray] | None, scale_arcsec: float) -> tuple[int, float]:
    """Matched stars and the rms (arcsec) of field minus index positions, from `.corr`.

    In a crowded picture the verification also pairs a few blends several pixels apart; the
    rms is that of the core, pairs closer than 3 x the median distance (all are counted).
    """
    if not corr or "FIELD_X" not in corr or "INDEX_X" not in corr:
        return 0, math.nan
    dx = np.asarray(corr["FIELD_X"], float) - np.asarray(corr["INDEX_X"], float)
    dy = np.asarray(corr["FIELD_Y"], float) - np.asarray(corr["INDEX_Y"], float)
    d = np.hypot(dx, dy)
    d = d[np.isfinite(d)]
    if not d.size:
        return 0, math.nan
    core = d[d <= 3.0 * np.median(d)]
    return int(d.size), float(np.sqrt(np.mean(core**2)) * scale_arcsec)


def solve_image(
    image_path: str | Path,
    index_files: Sequence[str | Path],
    *,
    scale_arcsec: float,
    parity: str | None = None,
    ra_hint: float | None = None,
    dec_hint: float | None = None,
    radius_hint_deg: float | None = None,
    downsample: int = DEFAULT_DOWNSAMPLE,
    scale_tolerance: float = IMAGE_SCALE_TOLERANCE,
    sip_order: int = 2,
    timeout_s: float = 60.0,
) -> ImageSolution | None:
    """The TAN-SIP WCS of a FITS picture solved blind by `solve-field`, or None.

    `scale_arcsec`: the picture's pixel scale (stated to the solver within
    `scale_tolerance`); `parity`: "pos"/"neg" when known (`measure.mosaic_astrometry.
    parity_of` the picture's own CD), else both are tried. A hint (RA, Dec, radius in deg,
    default 1) restricts the search. `timeout_s` bounds the wall-clock time (90 % of it is
    solve-field's CPU limit).
    AstrometryNetError when solve-field is missing or fails; ValueError for bad input.
    """
    exe = require_tool(SOLVE_FIELD)
    t_start = time.perf_counter()
    image = Path(image_path)
    if not image.is_file():
        raise ValueError(f"no picture to solve at {image}")
    indexes = index_paths(index_files)
    if not scale_arcsec > 0:
        raise ValueError(f"scale {scale_arcsec!r} arcsec/px must be positive")
    if parity not in (None, "pos", "neg"):
        raise ValueError(f"parity {parity!r} is not 'pos', 'neg' or None")
    if (ra_hint is None) != (dec_hint is None):
        raise ValueError("ra_hint and dec_hint go together")
    with fits.open(image, memmap=False) as hdul:
        data = hdul[0].data
        height, width = (int(v) for v in data.shape)
        blank = ~np.isfinite(data)

    with tempfile.TemporaryDirectory(prefix="viskom-ansolve-") as tmp:
        tmpdir = Path(tmp)
        if blank.any():  # the gaps between CCDs are NaN: image2xy finds nothing around them
            filled = np.where(blank, np.float32(np.median(data[~blank])), data).astype(np.float32)
            image = tmpdir / "filled.fits"
            fits.PrimaryHDU(filled).writeto(image)
        del data
        cpu = max(_CPU_FRACTION * float(timeout_s), 0.1)
        config = backend_config(tmpdir, cpu, indexes)
        cmd = [exe, str(image.resolve()), "--config", str(config), "--dir", str(tmpdir)]
        cmd += ["--out", "picture", "--no-plots", "--overwrite", "--temp-dir", str(tmpdir)]
        cmd += ["--downsample", str(int(downsample)), "--scale-units", "arcsecperpix"]
        cmd += ["--scale-low", f"{scale_arcsec * (1 - scale_tolerance):.6f}"]
        cmd += ["--scale-high", f"{scale_arcsec * (1 + scale_tolerance):.6f}"]
        if parity is not None:
            cmd += ["--parity", parity]
        # --no-verify: the picture's own WCS (from the header pointing) must not be the answer
        cmd += ["--no-verify", "--crpix-center", "--tweak-order", str(int(sip_order))]
        hint = None if ra_hint is None else (ra_hint, dec_hint, radius_hint_deg)
        run = run_solve_field(cmd, workdir=tmpdir, out="picture", cpu_s=cpu,
                              timeout_s=timeout_s, hint=hint)  # fmt: skip
        if run is None:
            log.warning("mosaic astrometry: solve-field killed, not finished in %.0f s", timeout_s)
            return None
        if not run.solved:
            reason = "CPU limit reached" if run.cpu_limited else "no match"
            log.warning("mosaic astrometry: %s not solved (%s)", image.name, reason)
            return None
        header = fits.getheader(tmpdir / "picture.wcs")
        n, rms = _match_rms_arcsec(_read_table(tmpdir / "picture.corr"), scale_arcsec)
        match = _read_table(tmpdir / "picture.match")
    has_ids = bool(match) and "INDEXID" in match
    ids = sorted({int(v) for v in np.ravel(match["INDEXID"])}) if has_ids else []
    index_used = ",".join(str(i) for i in ids)
    cards = _wcs_cards(header)
    cards.setdefault("IMAGEW", width)
    cards.setdefault("IMAGEH", height)
    return ImageSolution(
        header=cards, n_matched=n, rms_arcsec=rms, index_id=index_used,
        seconds=time.perf_counter() - t_start, width=width, height=height,
    )  # fmt: skip
