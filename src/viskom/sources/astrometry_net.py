"""Optional blind astrometry of the focal-plane star list with astrometry.net (Debian 0.93).

What: when the header pointing is missing, or the Gaia match around it fails, the VIS stars
(instrument frame X, Y in degrees, as `le1.focalplane.sky_to_instrument` gives them) are
solved blind with astrometry.net's `solve-field` against index files built from the cached
Gaia table with `build-astrometry-index`. The answer is a pointing in VISQL's convention:
the sky position (RA, DEC) of the instrument-frame origin and the position angle PA, such
that `sky_to_instrument(ra, dec, RA, DEC, PA)` reproduces the star positions.

How:

* `build_index` writes the Gaia stars (brightest first: `-S MAG`) to a FITS table and builds
  one index file per astrometry.net scale preset (`-P`) whose quads fall in `scale_arcmin`
  (default 4-22 arcmin, presets 2-6: quads from a tenth to about half of the ~40 arcmin VIS
  field, the range solve-field searches by default). `-E` limits the work to the HEALPix
  cells the catalogue occupies (without it, -P 2 takes ~50 s for 5000 stars instead of
  0.1 s); `-M` keeps it in memory; `-I` gives each file a unique id.
* `solve_star_list` removes VISQL's empirical distortion from the star positions (so the
  list is a near-perfect gnomonic image), bins them into pseudo-pixels (default 10 VIS
  pixels, i.e. 1 arcsec, about 2600 pseudo-pixels across), writes an xylist (X, Y, FLUX,
  the brightest `max_stars`) and runs `solve-field` on it with a generated backend config
  that lists only the given index files. The scale is stated within +-5 %
  (`--scale-units arcsecperpix`), the parity is fixed (found from `sky_to_instrument`
  itself: the instrument frame has the usual sky orientation, astrometry.net's "pos"),
  CRPIX is put on the instrument origin, SIP order 2 absorbs what distortion is left. The
  solver's uniformization is kept (a cluster of bright spurious sources on one CCD otherwise
  defeats it), its line removal is not (no CCD lines in a star list, and it costs time).
* The solver's star correspondences (`.corr`) pair input stars with Gaia stars; (RA, DEC, PA)
  is fitted to them by least squares through `sky_to_instrument` (distortion included),
  with the WCS's reference point as starting value and 4-sigma clipping, and the residual
  rms is reported in VIS pixels (0.1 arcsec). RA, DEC is thus VISQL's pointing parameter:
  the sky position that `sky_to_instrument` puts at (0, 0) before its distortion terms.

All temporary files live in a temporary folder that is removed. A failing tool raises
`AstrometryNetError` with the tail of its stderr; an unsolved field, or one not solved
within the time limit, gives None and a logged reason.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from viskom.le1.focalplane import PIXEL_SCALE_ARCSEC, PIXELS_PER_DEG, sky_to_instrument

log = logging.getLogger(__name__)

SOLVE_FIELD = "solve-field"
BUILD_INDEX = "build-astrometry-index"
TOOLS: tuple[str, ...] = (SOLVE_FIELD, BUILD_INDEX)
APT_PACKAGE = "astrometry.net"

#: Quad sizes (arcmin) of the index files: a tenth to about half of the ~40 arcmin field.
DEFAULT_SCALE_ARCMIN: tuple[float, float] = (4.0, 22.0)
#: VIS pixels per pseudo-pixel: 1 arcsec pseudo-pixels, ~2600 across the focal plane.
DEFAULT_BINNING = 10.0
#: Allowed relative error of the stated pseudo-pixel scale (VISQL's distortion changes the
#: scale by ~1 %; the solver is told the scale within this fraction either way).
SCALE_TOLERANCE = 0.05
#: Stars given to the solver at most (the brightest); more only slow down verification.
DEFAULT_MAX_STARS = 1000
#: A solution whose matched stars do not fit VISQL's model to this rms (VIS pixels) is refused:
#: a guard against convention errors, loose enough for distortion VISQL's model lacks (the
#: Gaia stage's own match searches offsets and matches within 20 pixels afterwards).
DEFAULT_MAX_RMS_PIX = 200.0
#: solve-field's CPU limit is this fraction of `timeout_s`, so that it stops by itself first.
_CPU_FRACTION = 0.9
#: Quad size range (arcmin) of `build-astrometry-index -P 0`; presets go in steps of sqrt(2).
_PRESET0_ARCMIN = 2.0
_MAX_PRESET = 19
_MARGIN_DEG = 0.005  # pseudo-image margin around the stars
_STDERR_TAIL = 1500  # characters of a tool's output quoted in error messages
_SORT_FILL_MAG = 99.0  # stars without a magnitude go last
_MAX_INDEX_ID = 20_000_000  # base ids below this; file ids are base * 100 + preset + 5


class AstrometryNetError(RuntimeError):
    """An astrometry.net tool is missing or failed; the message quotes its output's tail."""


@dataclass(frozen=True)
class BlindSolution:
    """A blind pointing in VISQL's convention and how well it fits.

    `ra_deg`, `dec_deg`, `pa_deg`: the pointing for `sky_to_instrument` (RA, DEC: the sky
    position it puts at the instrument-frame origin before VISQL's distortion terms).
    `rms_pix`: rms residual (VIS pixels, 0.1 arcsec) of the `n_matched` matched stars under
    that model (`n_rejected` more were clipped); `log_odds` and `n_solver_matches` are
    astrometry.net's own (NaN / -1 when not written); `index_id` and `index_file` name the
    index that solved. `wcs_header` is the solver's TAN-SIP WCS of the pseudo-image
    (`binning` VIS pixels per pseudo-pixel, undistorted instrument origin at CRPIX).
    """

    ra_deg: float
    dec_deg: float
    pa_deg: float
    rms_pix: float
    n_matched: int
    n_rejected: int
    log_odds: float
    n_solver_matches: int
    index_id: int
    index_file: Path | None
    binning: float
    elapsed_s: float
    wcs_header: fits.Header

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary (without the WCS header)."""
        return {
            "ra_deg": self.ra_deg,
            "dec_deg": self.dec_deg,
            "pa_deg": self.pa_deg,
            "rms_pix": self.rms_pix,
            "n_matched": self.n_matched,
            "n_rejected": self.n_rejected,
            "log_odds": self.log_odds,
            "n_solver_matches": self.n_solver_matches,
            "index_id": self.index_id,
            "index_file": None if self.index_file is None else str(self.index_file),
            "binning": self.binning,
            "elapsed_s": self.elapsed_s,
        }


# -- Tools ----------------------------------------------------------------------------------


def tools_available() -> str | None:
    """None when solve-field and build-astrometry-index are on PATH, else what is missing."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not missing:
        return None
    return (
        f"astrometry.net tool(s) not found on PATH: {', '.join(missing)} "
        f"(Debian/Ubuntu: apt-get install {APT_PACKAGE})"
    )


def _require_tool(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise AstrometryNetError(tools_available() or f"{tool} not found on PATH")
    return path


def _tail(text: str | bytes | None) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.strip()
    return text if len(text) <= _STDERR_TAIL else "..." + text[-_STDERR_TAIL:]


def _run(cmd: Sequence[str], *, cwd: Path, timeout_s: float) -> tuple[int, str, str] | None:
    """Run a tool in its own process group; (returncode, stdout, stderr), None on timeout.

    On timeout the whole group is killed (solve-field starts astrometry-engine as a child).
    """
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(cwd)},  # anything the tools write goes in there
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None
    return proc.returncode, out, err


# -- Index files ----------------------------------------------------------------------------


def preset_quad_range_arcmin(preset: int) -> tuple[float, float]:
    """Quad size range (arcmin) of `build-astrometry-index -P preset` (2.0-2.8 for -P 0)."""
    lo = _PRESET0_ARCMIN * math.sqrt(2.0) ** preset
    return lo, lo * math.sqrt(2.0)


def presets_for_scale(scale_arcmin: tuple[float, float]) -> list[int]:
    """The `-P` presets whose quad sizes overlap the range `scale_arcmin` (arcmin)."""
    lo, hi = (float(v) for v in scale_arcmin)
    if not (0 < lo < hi):
        raise ValueError(f"scale_arcmin {scale_arcmin!r} is not an increasing positive range")
    chosen = []
    for p in range(-5, _MAX_PRESET + 1):
        qlo, qhi = preset_quad_range_arcmin(p)
        if qhi > lo * (1 + 1e-9) and qlo < hi * (1 - 1e-9):
            chosen.append(p)
    if not chosen:
        raise ValueError(f"no build-astrometry-index preset covers quads of {lo}-{hi} arcmin")
    return chosen


def _column(table: Any, name: str) -> np.ndarray:
    col = table[name]
    if isinstance(col, u.Quantity):
        col = col.value
    return np.ma.filled(np.ma.asarray(col).astype(np.float64), np.nan)


def _catalogue_arrays(
    catalogue: Table | Mapping[str, Any] | tuple[Any, Any, Any], mag_column: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(catalogue, tuple | list):
        if len(catalogue) != 3:
            raise ValueError("catalogue arrays must be (ra_deg, dec_deg, mag)")
        ra, dec, mag = (
            np.asarray(np.ma.filled(np.ma.asarray(a, float), np.nan)) for a in catalogue
        )
    else:
        names = list(getattr(catalogue, "colnames", None) or catalogue.keys())
        missing = [c for c in ("RA_ICRS", "DE_ICRS", mag_column) if c not in names]
        if missing:
            raise ValueError(f"Gaia table has no column(s) {', '.join(missing)}")
        ra = _column(catalogue, "RA_ICRS")
        dec = _column(catalogue, "DE_ICRS")
        mag = _column(catalogue, mag_column)
    ra, dec, mag = (np.ravel(a).astype(np.float64) for a in (ra, dec, mag))
    if not (ra.size == dec.size == mag.size):
        raise ValueError(f"ra, dec, mag lengths differ ({ra.size}, {dec.size}, {mag.size})")
    good = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90.0)
    mag = np.where(np.isfinite(mag), mag, _SORT_FILL_MAG)
    return ra[good] % 360.0, dec[good], mag[good]


def default_index_id(ra: np.ndarray, dec: np.ndarray) -> int:
    """A stable index id in 1..19999999 from the catalogue's positions (milliarcsec).

    `build_index` multiplies it by 100 and adds the preset, staying below 2**31.
    """
    key = np.round(np.stack([ra, dec]) * 3.6e6).astype(np.int64).tobytes()
    return 1 + zlib.crc32(key) % (_MAX_INDEX_ID - 1)


def build_index(
    catalogue: Table | Mapping[str, Any] | tuple[Any, Any, Any],
    folder: str | Path,
    *,
    scale_arcmin: tuple[float, float] = DEFAULT_SCALE_ARCMIN,
    presets: Sequence[int] | None = None,
    index_id: int | None = None,
    mag_column: str = "Gmag",
    max_stars: int | None = None,
    stars_per_cell: int = 10,
    jitter_arcsec: float = 1.0,
    timeout_s: float = 120.0,
) -> list[Path]:
    """Build astrometry.net index files from Gaia stars; returns their paths (one per preset).

    `catalogue`: a Gaia table (VizieR columns RA_ICRS, DE_ICRS and `mag_column`, as from
    `GaiaClient.cone`) or arrays (ra_deg, dec_deg, mag). Stars are used brightest first
    (`-S MAG`), at most `max_stars`; stars without a magnitude last. Presets default to those
    whose quads fall in `scale_arcmin`. Each file gets the unique id `index_id * 100 +
    preset + 5` (`index_id` defaults to a hash of the positions) and is written to `folder`
    as `viskom-gaia-<id>.fits` (atomically replacing an older one). AstrometryNetError when
    the tool is missing or fails; ValueError for an empty catalogue or bad scales. Positions
    are used as given (Gaia DR3: epoch 2016.0; `sources.gaia.propagate_to_epoch` moves them
    first if the ~10-100 mas of proper motion matter).
    """
    exe = _require_tool(BUILD_INDEX)
    ra, dec, mag = _catalogue_arrays(catalogue, mag_column)
    if ra.size < 4:
        raise ValueError(f"only {ra.size} catalogue star(s) with a position; need at least 4")
    order = np.argsort(mag, kind="stable")
    if max_stars is not None:
        order = order[: int(max_stars)]
    ra, dec, mag = ra[order], dec[order], mag[order]
    chosen = sorted(set(presets)) if presets is not None else presets_for_scale(scale_arcmin)
    if any(not (-5 <= p <= _MAX_PRESET) for p in chosen):
        raise ValueError(f"presets {chosen} outside -5..{_MAX_PRESET}")
    base = default_index_id(ra, dec) if index_id is None else int(index_id)
    if not (0 < base < _MAX_INDEX_ID):
        raise ValueError(f"index_id {index_id!r} must be in 1..{_MAX_INDEX_ID - 1}")
    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="viskom-anidx-") as tmp:
        tmpdir = Path(tmp)
        cat_path = tmpdir / "gaia.fits"
        cols = [
            fits.Column(name="RA", format="D", unit="deg", array=ra),
            fits.Column(name="DEC", format="D", unit="deg", array=dec),
            fits.Column(name="MAG", format="E", unit="mag", array=mag.astype(np.float32)),
        ]
        fits.BinTableHDU.from_columns(cols).writeto(cat_path)
        for preset in chosen:
            uid = base * 100 + (preset + 5)
            target = out_dir / f"viskom-gaia-{uid}.fits"
            partial = tmpdir / target.name
            cmd = [exe, "-i", str(cat_path), "-o", str(partial), "-P", str(preset)]
            cmd += ["-A", "RA", "-D", "DEC", "-S", "MAG", "-E", "-M", "-I", str(uid)]
            cmd += ["-n", str(int(stars_per_cell)), "-j", f"{float(jitter_arcsec):g}"]
            cmd += ["-t", str(tmpdir)]
            t0 = time.perf_counter()
            result = _run(cmd, cwd=tmpdir, timeout_s=timeout_s)
            if result is None:
                raise AstrometryNetError(f"{BUILD_INDEX} -P {preset} timed out after {timeout_s} s")
            code, out, err = result
            if code != 0 or not partial.exists():
                raise AstrometryNetError(
                    f"{BUILD_INDEX} -P {preset} failed (exit {code}): {_tail(err or out)}"
                )
            staged = out_dir / f".{target.name}.{os.getpid()}.partial"
            shutil.move(str(partial), staged)
            os.replace(staged, target)
            log.debug("index %s (-P %d) built in %.2f s", target, preset, time.perf_counter() - t0)
            written.append(target)
    log.info(
        "astrometry.net index %d: %d stars, presets %s, %d file(s) in %s",
        base,
        ra.size,
        chosen,
        len(written),
        out_dir,
    )
    return written


# -- Solving -----------------------------------------------------------------------------------


def remove_visql_distortion(
    x_deg: np.ndarray, y_deg: np.ndarray, iterations: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `apply_visql_distortion` (fixed-point iteration; exact to < 1e-12 deg)."""
    from viskom.le1.focalplane import apply_visql_distortion

    x_obs = np.asarray(x_deg, dtype=float)
    y_obs = np.asarray(y_deg, dtype=float)
    xu, yu = x_obs.copy(), y_obs.copy()
    for _ in range(iterations):
        xd, yd = apply_visql_distortion(xu, yu)
        xu, yu = xu + (x_obs - xd), yu + (y_obs - yd)
    return xu, yu


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


def _fit_pointing(
    x_deg: np.ndarray,
    y_deg: np.ndarray,
    ra: np.ndarray,
    dec: np.ndarray,
    start: tuple[float, float, float],
    distortion: bool,
) -> tuple[float, float, float]:
    """Least-squares (RA, DEC, PA) with `sky_to_instrument(ra, dec, ...) ~ (x, y)`."""
    from scipy.optimize import least_squares

    ra0, dec0, pa0 = start
    cosd = max(math.cos(math.radians(dec0)), 1e-6)

    def model(p: np.ndarray) -> tuple[float, float, float]:
        return ra0 + p[0] / 3600.0 / cosd, dec0 + p[1] / 3600.0, pa0 + p[2] / 3600.0

    def residual(p: np.ndarray) -> np.ndarray:
        xm, ym = sky_to_instrument(ra, dec, *model(p), distortion=distortion)
        return np.concatenate([xm - x_deg, ym - y_deg]) * PIXELS_PER_DEG

    fit = least_squares(residual, np.zeros(3), x_scale=np.array([1.0, 1.0, 10.0]), method="lm")
    ra_fit, dec_fit, pa_fit = model(fit.x)
    return float(ra_fit % 360.0), float(dec_fit), float((pa_fit + 180.0) % 360.0 - 180.0)


def _start_pa(
    xu: np.ndarray, yu: np.ndarray, ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float
) -> float:
    """PA from the rotation between the PA=0 model and the (undistorted) star positions."""
    best, best_cost = 0.0, math.inf
    u0, v0 = sky_to_instrument(ra, dec, ra0, dec0, 0.0, distortion=False)
    theta = math.degrees(math.atan2(np.sum(u0 * yu - v0 * xu), np.sum(u0 * xu + v0 * yu)))
    for pa in (theta, -theta):
        um, vm = sky_to_instrument(ra, dec, ra0, dec0, pa, distortion=False)
        cost = float(np.median(np.hypot(um - xu, vm - yu)))
        if cost < best_cost:
            best, best_cost = pa, cost
    return best


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
    exe = _require_tool(SOLVE_FIELD)
    t_start = time.perf_counter()
    x = np.ravel(np.asarray(x_deg, dtype=float))
    y = np.ravel(np.asarray(y_deg, dtype=float))
    f = np.ravel(np.asarray(flux, dtype=float))
    if not (x.size == y.size == f.size):
        raise ValueError(f"x, y, flux lengths differ ({x.size}, {y.size}, {f.size})")
    indexes = [Path(p).resolve() for p in index_files]
    if not indexes:
        raise ValueError("no index files given")
    absent = [str(p) for p in indexes if not p.is_file()]
    if absent:
        raise ValueError(f"index file(s) not found: {', '.join(absent)}")
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
        config = tmpdir / "backend.cfg"
        cpu = max(_CPU_FRACTION * float(timeout_s), 0.1)
        lines = [f"cpulimit {cpu:g}"]
        lines += [f"index {p}" for p in indexes]
        config.write_text("\n".join(lines) + "\n")
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
        cmd += ["--cpulimit", f"{cpu:g}"]
        cmd += ["--new-fits", "none", "--rdls", "none", "--index-xyls", "none"]
        if ra_hint is not None and dec_hint is not None:
            radius = 1.0 if radius_hint_deg is None else float(radius_hint_deg)
            cmd += ["--ra", f"{float(ra_hint) % 360.0:.8f}", "--dec", f"{float(dec_hint):.8f}"]
            cmd += ["--radius", f"{radius:g}"]
        wall = float(timeout_s) + min(5.0, float(timeout_s))
        result = _run(cmd, cwd=tmpdir, timeout_s=wall)
        if result is None:
            log.warning("blind astrometry: solve-field killed, not finished after %.1f s", wall)
            return None
        code, out, err = result
        if code != 0:
            raise AstrometryNetError(
                f"{SOLVE_FIELD} failed (exit {code}): {_tail(err) or _tail(out)}"
            )
        wcs_path, corr_path = tmpdir / "field.wcs", tmpdir / "field.corr"
        if not (tmpdir / "field.solved").exists() or not wcs_path.exists():
            said = (out + err).lower()
            reason = (
                f"CPU limit of {cpu:g} s reached"
                if "time limit reached" in said
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

    return _solution_from(
        header, corr, match, (xs, ys, px, py), indexes, t_start,
        binning=float(binning), distortion=distortion, max_rms_pix=max_rms_pix,
        clip_sigma=clip_sigma,
    )  # fmt: skip


def _index_ids(index_files: Sequence[Path]) -> dict[int, tuple[int, Path]]:
    """Index id -> (id, file) of the index files, keyed also by the low 16 bits (signed).

    The solver's match file stores the id as a 16-bit integer.
    """
    ids: dict[int, tuple[int, Path]] = {}
    for path in index_files:
        try:
            uid = int(fits.getheader(path).get("INDEXID", -1))
        except (OSError, ValueError, TypeError):
            continue
        low = ((uid & 0xFFFF) ^ 0x8000) - 0x8000
        ids.setdefault(low, (uid, path))
        ids[uid] = (uid, path)
    return ids


def _first(table: Mapping[str, np.ndarray] | None, name: str) -> float | None:
    if table is None or name not in table or len(table[name]) == 0:
        return None
    return float(np.ravel(table[name])[0])


def _solution_from(
    header: fits.Header,
    corr: Mapping[str, np.ndarray] | None,
    match: Mapping[str, np.ndarray] | None,
    stars: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    index_files: Sequence[Path],
    t_start: float,
    *,
    binning: float,
    distortion: bool,
    max_rms_pix: float,
    clip_sigma: float,
) -> BlindSolution | None:
    """Fit VISQL's pointing to the solver's correspondences; None (logged) when unusable."""
    from scipy.spatial import cKDTree

    xs, ys, px, py = stars
    needed = ("FIELD_X", "FIELD_Y", "INDEX_RA", "INDEX_DEC")
    if corr is None or any(c not in corr for c in needed) or len(corr["FIELD_X"]) < 3:
        log.warning("blind astrometry: solved, but fewer than 3 star correspondences written")
        return None
    # Correspondences back to the input stars by their pseudo-pixel positions (echoed).
    fx, fy = np.asarray(corr["FIELD_X"], float), np.asarray(corr["FIELD_Y"], float)
    dist, row = cKDTree(np.column_stack([px, py])).query(np.column_stack([fx, fy]))
    ok = dist < 1e-3
    if np.sum(ok) < 3:
        log.warning("blind astrometry: solver correspondences do not match the input stars")
        return None
    row = row[ok]
    ra_ref = np.asarray(corr["INDEX_RA"], float)[ok]
    dec_ref = np.asarray(corr["INDEX_DEC"], float)[ok]
    x_obs, y_obs = xs[row], ys[row]

    ra0, dec0 = float(header["CRVAL1"]), float(header["CRVAL2"])  # CRPIX = instrument origin
    xu, yu = remove_visql_distortion(x_obs, y_obs) if distortion else (x_obs, y_obs)
    pa0 = _start_pa(xu, yu, ra_ref, dec_ref, ra0, dec0)
    keep = np.ones(x_obs.size, bool)
    resid = np.zeros(x_obs.size)
    for _ in range(5):
        ra0, dec0, pa0 = _fit_pointing(
            x_obs[keep], y_obs[keep], ra_ref[keep], dec_ref[keep], (ra0, dec0, pa0), distortion
        )
        xm, ym = sky_to_instrument(ra_ref, dec_ref, ra0, dec0, pa0, distortion=distortion)
        resid = np.hypot(xm - x_obs, ym - y_obs) * PIXELS_PER_DEG
        sigma = 1.4826 * float(np.median(resid[keep]))
        new_keep = resid < max(clip_sigma * sigma, 1.0)
        if np.sum(new_keep) < 3 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    rms = float(np.sqrt(np.mean(resid[keep] ** 2)))
    log_odds = _first(match, "LOGODDS")
    n_solver = _first(match, "NMATCH")
    raw_id = _first(match, "INDEXID")
    index_id, index_file = _index_ids(index_files).get(
        int(raw_id) if raw_id is not None else -1, (-1, None)
    )
    solution = BlindSolution(
        ra_deg=ra0,
        dec_deg=dec0,
        pa_deg=pa0,
        rms_pix=rms,
        n_matched=int(np.sum(keep)),
        n_rejected=int(np.sum(~keep)),
        log_odds=math.nan if log_odds is None else log_odds,
        n_solver_matches=-1 if n_solver is None else int(n_solver),
        index_id=index_id,
        index_file=index_file,
        binning=binning,
        elapsed_s=time.perf_counter() - t_start,
        wcs_header=header,
    )
    if not rms <= max_rms_pix:
        log.warning(
            "blind astrometry: solution RA %.5f Dec %+.5f PA %.3f refused: %d stars fit "
            "VISQL's model to %.1f pix rms (> %.1f)",
            ra0, dec0, pa0, solution.n_matched, rms, max_rms_pix,
        )  # fmt: skip
        return None
    log.info(
        "blind astrometry: RA %.6f Dec %+.6f PA %.4f from %d stars, rms %.2f pix, "
        "log-odds %.1f, %.1f s",
        ra0, dec0, pa0, solution.n_matched, rms, solution.log_odds, solution.elapsed_s,
    )  # fmt: skip
    return solution
