"""VISQL's pointing (RA, DEC, PA) fitted to the star correspondences of an astrometry.net solution.

The solver's star correspondences (`.corr`) pair input stars with Gaia stars; (RA, DEC, PA) is
fitted to them by least squares through `sky_to_instrument` (distortion included), with the
WCS's reference point as starting value and 4-sigma clipping, and the residual rms is reported
in VIS pixels (0.1 arcsec). RA, DEC is thus VISQL's pointing parameter: the sky position that
`sky_to_instrument` puts at (0, 0) before its distortion terms.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from viskom.le1.focalplane import PIXELS_PER_DEG, sky_to_instrument
from viskom.measure.robust import MAD_TO_SIGMA

log = logging.getLogger(__name__)

#: A solution whose matched stars do not fit VISQL's model to this rms (VIS pixels) is refused:
#: a guard against convention errors, loose enough for distortion VISQL's model lacks (the
#: Gaia stage's own match searches offsets and matches within 20 pixels afterwards).
DEFAULT_MAX_RMS_PIX = 200.0


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


def solution_from(
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
        sigma = MAD_TO_SIGMA * float(np.median(resid[keep]))  # residuals are >= 0
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
