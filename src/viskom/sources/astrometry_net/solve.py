"""Blind astrometry of a focal-plane star list with astrometry.net's `solve-field`.

`solve_star_list` removes VISQL's empirical distortion from the star positions (so the list is
a near-perfect gnomonic image), bins them into pseudo-pixels (default 10 VIS pixels, i.e. 1
arcsec, about 2600 pseudo-pixels across), writes an xylist (X, Y, FLUX, the brightest
`max_stars`) and runs `solve-field` on it with a generated backend config that lists only the
given index files. The scale is stated within +-5 % (`--scale-units arcsecperpix`), the parity
is fixed (found from `sky_to_instrument` itself: the instrument frame has the usual sky
orientation, astrometry.net's "pos"), CRPIX is put on the instrument origin, SIP order 2 absorbs
what distortion is left. The solver's uniformization is kept (a cluster of bright spurious
sources on one CCD otherwise defeats it), its line removal is not (no CCD lines in a star list,
and it costs time). The pointing is then fitted to the solver's matches (`fit`).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from viskom.le1.focalplane import PIXEL_SCALE_ARCSEC, PIXELS_PER_DEG, sky_to_instrument
from viskom.sources.astrometry_net.fit import (
    DEFAULT_MAX_RMS_PIX,
    BlindSolution,
    remove_visql_distortion,
    solution_from,
)
from viskom.sources.astrometry_net.tools import (
    SOLVE_FIELD,
    backend_config,
    index_paths,
    require_tool,
    run_solve_field,
)

log = logging.getLogger(__name__)

#: VIS pixels per pseudo-pixel: 1 arcsec pseudo-pixels, ~2600 across the focal plane.
DEFAULT_BINNING = 10.0
#: Allowed relative error of the stated pseudo-pixel scale (VISQL's distortion changes the
#: scale by ~1 %; the solver is told the scale within this fraction either way).
SCALE_TOLERANCE = 0.05
#: Stars given to the solver at most (the brightest); more only slow down verification.
DEFAULT_MAX_STARS = 1000
#: solve-field's CPU limit is this fraction of `timeout_s`, so that it stops by itself first.
_CPU_FRACTION = 0.9
_MARGIN_DEG = 0.005  # pseudo-image margin around the stars


def _instrument_parity() -> str:
    """astrometry.net parity ("pos"/"neg") of pseudo-pixels x ~ X, y ~ Y.

    astrometry.net's "pos" (its "normal") parity is the usual sky orientation of an image,
    det CD < 0 (north up, east left); the sign of the determinant of d(X, Y)/d(xi, eta)
    from `sky_to_instrument` tells ours. (Checked: the other parity solves too, through
    nearly symmetric quads, but only several times slower and deeper in the star list.)
    """
    # Three points near the origin of a pointing at the equator, PA 0.
    eps = 1e-3
    ra = np.array([0.0, eps, 0.0])
    dec = np.array([0.0, 0.0, eps])
    x, y = sky_to_instrument(ra, dec, 0.0, 0.0, 0.0, distortion=False)
    # Columns: d(X, Y)/d(xi) and d(X, Y)/d(eta) (xi = east = +RA, eta = north).
    jac = np.array([[x[1] - x[0], x[2] - x[0]], [y[1] - y[0], y[2] - y[0]]])
    return "neg" if np.linalg.det(jac) > 0 else "pos"


def _xylist(path: Path, x: np.ndarray, y: np.ndarray, flux: np.ndarray, w: int, h: int) -> None:
    cols = [
        fits.Column(name="X", format="D", array=x),
        fits.Column(name="Y", format="D", array=y),
        fits.Column(name="FLUX", format="D", array=flux),
    ]
    hdu = fits.BinTableHDU.from_columns(cols)
    hdu.header["IMAGEW"] = w
    hdu.header["IMAGEH"] = h
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)


def _read_table(path: Path) -> dict[str, np.ndarray] | None:
    """Columns (upper-case names) of the first table of an astrometry.net output file."""
    if not path.exists():
        return None
    try:
        with fits.open(path, memmap=False) as hdul:
            data = hdul[1].data
            return {name.upper(): np.array(data[name]) for name in data.columns.names}
    except Exception as exc:  # astropy raises many kinds on a malformed file
        log.warning("astrometry.net output %s unreadable: %s", path.name, exc)
        return None


def solve_star_list(
    x_deg: Any,
    y_deg: Any,
    flux: Any,
    index_files: Sequence[str | Path],
    *,
    ra_hint: float | None = None,
    dec_hint: float | None = None,
    radius_hint_deg: float | None = None,
    timeout_s: float = 60.0,
    binning: float = DEFAULT_BINNING,
    distortion: bool = True,
    max_stars: int = DEFAULT_MAX_STARS,
    max_rms_pix: float = DEFAULT_MAX_RMS_PIX,
    clip_sigma: float = 4.0,
) -> BlindSolution | None:
    """Blind pointing (VISQL's RA, DEC, PA) of a focal-plane star list, or None.

    `x_deg`, `y_deg`: instrument-frame positions (degrees, with VISQL's distortion unless
    `distortion=False`); `flux`: any brightness measure (larger = brighter; the brightest
    `max_stars` are used). `index_files`: from `build_index`. A hint (ra_hint, dec_hint,
    radius_hint_deg, default radius 1 deg) restricts the search to index stars near it.
    `timeout_s` bounds the wall-clock time: solve-field gets 90 % of it as CPU limit and is
    killed (with astrometry-engine) if still running a few seconds after it.

    None, with the reason logged, when the field is not solved in time or the solution does
    not fit VISQL's model to `max_rms_pix`. AstrometryNetError when solve-field is missing
    or fails; ValueError for bad input.
    """
    exe = require_tool(SOLVE_FIELD)
    t_start = time.perf_counter()
    x = np.ravel(np.asarray(x_deg, dtype=float))
    y = np.ravel(np.asarray(y_deg, dtype=float))
    f = np.ravel(np.asarray(flux, dtype=float))
    if not (x.size == y.size == f.size):
        raise ValueError(f"x, y, flux lengths differ ({x.size}, {y.size}, {f.size})")
    indexes = index_paths(index_files)
    if (ra_hint is None) != (dec_hint is None):
        raise ValueError("ra_hint and dec_hint go together")
    if not binning > 0:
        raise ValueError(f"binning {binning!r} must be positive")
    good = np.isfinite(x) & np.isfinite(y) & np.isfinite(f)
    idx = np.flatnonzero(good)
    idx = idx[np.argsort(-f[idx], kind="stable")][: int(max_stars)]
    if idx.size < 4:
        log.warning("blind astrometry: only %d usable star(s); need at least 4", idx.size)
        return None
    xs, ys, fs = x[idx], y[idx], f[idx]
    xu, yu = remove_visql_distortion(xs, ys) if distortion else (xs, ys)

    # Pseudo-pixels: 1-based FITS convention, instrument origin at (cx, cy).
    per_deg = PIXELS_PER_DEG / float(binning)
    x_lo, y_lo = min(float(xu.min()), 0.0) - _MARGIN_DEG, min(float(yu.min()), 0.0) - _MARGIN_DEG
    x_hi, y_hi = max(float(xu.max()), 0.0) + _MARGIN_DEG, max(float(yu.max()), 0.0) + _MARGIN_DEG
    width = math.ceil((x_hi - x_lo) * per_deg)
    height = math.ceil((y_hi - y_lo) * per_deg)
    cx, cy = -x_lo * per_deg + 0.5, -y_lo * per_deg + 0.5
    px, py = xu * per_deg + cx, yu * per_deg + cy
    scale = PIXEL_SCALE_ARCSEC * float(binning)

    with tempfile.TemporaryDirectory(prefix="viskom-ansolve-") as tmp:
        tmpdir = Path(tmp)
        xyls = tmpdir / "stars.xyls"
        _xylist(xyls, px, py, fs, width, height)
        cpu = max(_CPU_FRACTION * float(timeout_s), 0.1)
        config = backend_config(tmpdir, cpu, indexes)
        cmd = [exe, str(xyls), "--config", str(config), "--dir", str(tmpdir), "--out", "field"]
        cmd += ["--no-plots", "--overwrite", "--temp-dir", str(tmpdir)]
        cmd += ["--width", str(width), "--height", str(height)]
        cmd += ["--x-column", "X", "--y-column", "Y", "--sort-column", "FLUX"]
        cmd += ["--scale-units", "arcsecperpix"]
        cmd += ["--scale-low", f"{scale * (1 - SCALE_TOLERANCE):.6f}"]
        cmd += ["--scale-high", f"{scale * (1 + SCALE_TOLERANCE):.6f}"]
        cmd += ["--parity", _instrument_parity()]
        cmd += ["--crpix-x", f"{cx:.6f}", "--crpix-y", f"{cy:.6f}"]
        cmd += ["--tweak-order", "2", "--no-remove-lines"]
        hint = None if ra_hint is None else (ra_hint, dec_hint, radius_hint_deg)
        run = run_solve_field(cmd, workdir=tmpdir, out="field", cpu_s=cpu, timeout_s=timeout_s,
                              hint=hint)  # fmt: skip
        if run is None:
            log.warning("blind astrometry: solve-field killed, not finished after %.1f s",
                        float(timeout_s) + min(5.0, float(timeout_s)))  # fmt: skip
            return None
        wcs_path, corr_path = tmpdir / "field.wcs", tmpdir / "field.corr"
        if not run.solved:
            reason = (
                f"CPU limit of {cpu:g} s reached"
                if run.cpu_limited
                else "no match up to solve-field's depth"
            )
            log.warning(
                "blind astrometry: %d stars not solved (%s) against %d index file(s)",
                idx.size,
                reason,
                len(indexes),
            )
            return None
        header = fits.getheader(wcs_path)
        corr = _read_table(corr_path)
        match = _read_table(tmpdir / "field.match")

    return solution_from(
        header, corr, match, (xs, ys, px, py), indexes, t_start,
        binning=float(binning), distortion=distortion, max_rms_pix=max_rms_pix,
        clip_sigma=clip_sigma,
    )  # fmt: skip
