"""Synthesis of one quadrant: electrons -> ADU -> uint16, with its truth and object list.

Signal chain (image area only; prescan and overscans hold bias + read noise):
  mean electrons per pixel = sky + dark current + hot pixels + stars + galaxies (+ LED flat
  illumination x PRNU, or charge-injection bands with a CTI trail), all in e-;
  photon/dark shot noise: exact Poisson for the uniform background (inverse CDF) and for the
  sparse source maps, except where a pixel's mean exceeds 1000 e- (flats, injection lines, bright
  star cores), which use the Gaussian N(mu, mu) approximation, exact to 1/sqrt(mu);
  + particle hits (cosmic rays, X-rays, protons: their charge is already a random deposit);
  charge above the full well blooms along the column (or is clipped);
  / gain -> + noiseless bias model (pedestal + serial and parallel gradients + frame drift)
  + Gaussian read noise -> round -> clip to 0..65535.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import erf, gammaln

from viskom.sources.simulator.config import SimConfig
from viskom.sources.simulator.events import KIND_NAMES, deposit, generate_hits
from viskom.sources.simulator.instrument import QuadrantModel
from viskom.sources.simulator.psf import moffat_fwhm, render_psf, weighted_moments
from viskom.sources.simulator.seeds import rng_for

GAUSS_POISSON_ABOVE_E = 1000.0
_STAR_RADII = (15, 24, 32, 48, 64, 96, 128)
_GALAXY_RADII = (8, 12, 16, 24, 32, 48)
STAMP_MARGIN_PX = 128  # objects this far outside the image area still spill light into it
_GAL_SUB = 3

OBJECT_COLUMNS: dict[str, str] = {
    "kind": "str",
    "extname": "str",
    "x": "f8",
    "y": "f8",
    "flux_adu": "f8",
    "source_id": "i8",  # -1: not in the Gaia-like catalogue (null in the parquet file)
    "in_gaia": "bool",
    "gmag": "f8",
    "bp_rp": "f8",
    "true_r2": "f8",
    "true_e1": "f8",
    "true_e2": "f8",
    "vis_mag": "f8",
    "re_px": "f8",
    "sersic_n": "f8",
    "axis_ratio": "f8",
    "theta_deg": "f8",
    "length_px": "f8",
    "npix": "i8",
    "charge_adu": "f8",
}


@dataclass
class QuadrantTask:
    """Everything needed to synthesise one quadrant (picklable, for process pools)."""

    model: QuadrantModel
    kind: str
    frame_seed: int
    config: SimConfig  # with rate multipliers already resolved (plain floats)
    exptime: float
    t_dark: float  # integration time of dark current and hot pixels: EXPTIME
    bias_drift_adu: float = 0.0
    sky_e_per_s: float = 0.0  # this quadrant's sky (already x QE)
    flat_factor: float = 1.0  # per-frame LED intensity factor
    ci_factor: float = 1.0  # per-frame injection level factor
    n_cosmic_mean: float = 0.0
    n_xray_mean: float = 0.0
    n_proton_mean: float = 0.0
    stars: dict[str, np.ndarray] | None = None
    galaxies: dict[str, np.ndarray] | None = None
    psf_beta: float = 2.5
    psf_at_centre: tuple[float, float, float] = (1.44, 0.0, 0.0)
    flipped: bool = False


@dataclass
class QuadrantResult:
    extname: str
    data: bytes  # big-endian BITPIX 16 payload (value - 32768), unpadded
    truth: dict
    objects: dict[str, np.ndarray] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Random numbers
# ---------------------------------------------------------------------------------------------
def poisson_uniform(rng: np.random.Generator, lam: float, n: int) -> np.ndarray:
    """n Poisson(lam) deviates (float32): exact inverse CDF, Gaussian above 1000 e-.

    Inverse CDF on 32-bit uniform integers through a 65536-bin lookup table; only the few
    bins that contain a CDF step need a search.
    """
    if lam <= 0.0 or n == 0:
        return np.zeros(n, dtype=np.float32)
    if lam > GAUSS_POISSON_ABOVE_E:
        out = rng.standard_normal(n, dtype=np.float32)
        out *= np.float32(np.sqrt(lam))
        out += np.float32(lam)
        return np.rint(out, out=out)
    kmax = int(lam + 12.0 * np.sqrt(lam) + 12.0)
    k = np.arange(kmax + 1, dtype=np.float64)
    cdf = np.cumsum(np.exp(k * np.log(lam) - lam - gammaln(k + 1.0)))
    cdf[-1] = 1.0
    scaled = cdf * 2.0**32  # k(u) = number of scaled CDF values <= u, u uniform in [0, 2^32)
    starts = np.arange(65536, dtype=np.float64) * 65536.0
    k_lo = np.searchsorted(scaled, starts, side="right")
    k_hi = np.searchsorted(scaled, starts + 65535.0, side="right")
    table = k_lo.astype(np.float32)
    ambiguous = k_hi != k_lo
    u32 = rng.integers(0, 2**32, n, dtype=np.uint32, endpoint=False)
    bins = u32 >> np.uint32(16)
    out = table[bins]
    fix = np.flatnonzero(ambiguous[bins])
    if fix.size:
        out[fix] = np.searchsorted(scaled, u32[fix].astype(np.float64), side="right")
    return out


def poisson_any(rng: np.random.Generator, lam: np.ndarray) -> np.ndarray:
    """Poisson deviates of an array of means (Gaussian approximation above 1000 e-)."""
    lam = np.asarray(lam, dtype=np.float64)
    out = np.empty(lam.shape, dtype=np.float64)
    big = lam > GAUSS_POISSON_ABOVE_E
    small = ~big
    out[small] = rng.poisson(np.maximum(lam[small], 0.0))
    if big.any():
        lb = lam[big]
        out[big] = np.rint(lb + np.sqrt(lb) * rng.standard_normal(lb.size))
    return out


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------
def _bucket(values: np.ndarray, radii: tuple[int, ...]) -> np.ndarray:
    idx = np.searchsorted(np.asarray(radii), values, side="left")
    return np.asarray(radii)[np.minimum(idx, len(radii) - 1)]


def _stamp_indices(cx, cy, radius, width, height):
    i = np.arange(-radius, radius + 1)
    gx = np.broadcast_to(cx[:, None, None] + i[None, None, :], (cx.size, i.size, i.size))
    gy = np.broadcast_to(cy[:, None, None] + i[None, :, None], (cx.size, i.size, i.size))
    valid = (gx >= 0) & (gx < width) & (gy >= 0) & (gy < height)
    return (gy * width + gx)[valid], valid


def _render_stars(task, width, height, col0, row0, idx_parts, w_parts):
    """Add star stamps (e-) and return per-star truth moments (NaN for stars outside)."""
    st = task.stars
    m = task.model
    n = st["x"].size
    r2 = np.full(n, np.nan)
    e1 = np.full(n, np.nan)
    e2 = np.full(n, np.nan)
    if n == 0:
        return r2, e1, e2
    beta = task.psf_beta
    xi = st["x"] - col0
    yi = st["y"] - row0
    flux_e = st["flux_adu"] * m.gain_e_per_adu
    alpha = st["alpha"]
    peak = np.maximum(flux_e, 1.0) * (beta - 1.0) / (np.pi * alpha**2)
    need = np.ceil(alpha * (peak / 0.5) ** (1.0 / (2.0 * beta)))
    radius = _bucket(need, _STAR_RADII)
    inside = st["inside"]
    reach = (
        (xi + radius >= -0.5) & (xi - radius <= width - 0.5)
        & (yi + radius >= -0.5) & (yi - radius <= height - 0.5)
    )  # fmt: skip
    for R in np.unique(radius[reach]):
        sel = np.flatnonzero((radius == R) & reach)
        S = 2 * int(R) + 1
        chunk = max(1, 1_500_000 // (S * S))
        for c0 in range(0, sel.size, chunk):
            j = sel[c0 : c0 + chunk]
            cx = np.rint(xi[j]).astype(np.int64)
            cy = np.rint(yi[j]).astype(np.int64)
            stamps = render_psf(
                xi[j] - cx, yi[j] - cy, alpha[j], st["g1"][j], st["g2"][j], beta, int(R)
            )
            ins = inside[j]
            if ins.any():
                mr2, me1, me2, _, _ = weighted_moments(stamps[ins])
                r2[j[ins]] = mr2
                e1[j[ins]] = me1
                e2[j[ins]] = me2
            stamps *= flux_e[j, None, None]
            flat, valid = _stamp_indices(cx, cy, int(R), width, height)
            _append_significant(idx_parts, w_parts, flat, stamps[valid])
    return r2, e1, e2


def _append_significant(idx_parts, w_parts, flat, weights, floor_e: float = 1e-3) -> None:
    """Keep stamp pixels with a mean above floor_e electrons (the rest is < 0.1 % of a photon)."""
    keep = weights > floor_e
    idx_parts.append(flat[keep])
    w_parts.append(weights[keep])


def _convolve_separable(stamps: np.ndarray, kernel1d: np.ndarray) -> np.ndarray:
    """'Same'-size convolution of (n, S, S) stamps with a symmetric separable kernel."""
    half = kernel1d.size // 2
    S = stamps.shape[-1]
    pad = np.pad(stamps, ((0, 0), (0, 0), (half, half)))
    tmp = np.zeros_like(stamps)
    for k, c in enumerate(kernel1d):
        tmp += c * pad[:, :, k : k + S]
    pad = np.pad(tmp, ((0, 0), (half, half), (0, 0)))
    out = np.zeros_like(stamps)
    for k, c in enumerate(kernel1d):
        out += c * pad[:, k : k + S, :]
    return out


def _sersic_bn(n: np.ndarray) -> np.ndarray:
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n * n)


def _sersic_stamps(dx, dy, re, sn, q, theta_deg, radius):
    """Unnormalised Sersic stamps (n, S, S): pixel centres, 3 x 3 sub-samples within 3 px."""
    th = np.radians(theta_deg)[:, None, None]
    ct, stt = np.cos(th), np.sin(th)
    qq = q[:, None, None]
    inv_re = 1.0 / re[:, None, None]
    nn = sn[:, None, None]
    bn = _sersic_bn(nn)

    def prof(X, Y):
        xp = X * ct + Y * stt
        yp = -X * stt + Y * ct
        r = np.sqrt(qq * xp * xp + yp * yp / qq) * inv_re
        return np.exp(-bn * r ** (1.0 / nn))

    i = np.arange(-radius, radius + 1, dtype=np.float64)
    out = prof(i[None, None, :] - dx[:, None, None], i[None, :, None] - dy[:, None, None])
    core = min(3, radius)
    off = (np.arange(_GAL_SUB) + 0.5) / _GAL_SUB - 0.5
    c = (np.arange(-core, core + 1)[:, None] + off[None, :]).ravel()
    m = 2 * core + 1
    sub = prof(c[None, None, :] - dx[:, None, None], c[None, :, None] - dy[:, None, None])
    sub = sub.reshape(dx.size, m, _GAL_SUB, m, _GAL_SUB).mean(axis=(2, 4))
    out[:, radius - core : radius + core + 1, radius - core : radius + core + 1] = sub
    return out


def _render_galaxies(task, width, height, col0, row0, idx_parts, w_parts):
    gal = task.galaxies
    m = task.model
    n = gal["x"].size
    if n == 0:
        return
    # PSF convolution: a Gaussian with the FWHM of the local Moffat PSF (galaxies are
    # 1-20 px wide, so the PSF wings matter little for them).
    alpha_c = task.psf_at_centre[0]
    sigma = moffat_fwhm(alpha_c, task.psf_beta) / 2.3548
    taps = np.arange(-3, 4, dtype=np.float64)
    kernel1d = np.diff(0.5 * erf((np.append(taps, 4.0) - 0.5) / (np.sqrt(2.0) * sigma)))
    kernel1d /= kernel1d.sum()
    xi = gal["x"] - col0
    yi = gal["y"] - row0
    flux_e = gal["flux_adu"] * m.gain_e_per_adu
    re = gal["re_px"]
    sn = gal["sersic_n"]
    need = np.ceil(re * (2.5 + sn)) + 3.0
    radius = _bucket(need, _GALAXY_RADII)
    # Skip galaxies whose stamp cannot reach the image area.
    reach = (
        (xi + radius >= -0.5) & (xi - radius <= width - 0.5)
        & (yi + radius >= -0.5) & (yi - radius <= height - 0.5)
    )  # fmt: skip
    for R in np.unique(radius[reach]):
        sel = np.flatnonzero((radius == R) & reach)
        S = 2 * int(R) + 1
        chunk = max(1, 1_000_000 // (S * S))
        for c0 in range(0, sel.size, chunk):
            j = sel[c0 : c0 + chunk]
            cx = np.rint(xi[j]).astype(np.int64)
            cy = np.rint(yi[j]).astype(np.int64)
            prof = _sersic_stamps(
                xi[j] - cx, yi[j] - cy, re[j], sn[j], gal["axis_ratio"][j],
                gal["theta_deg"][j], int(R),
            )  # fmt: skip
            prof *= (flux_e[j] / prof.sum(axis=(1, 2)))[:, None, None]
            prof = _convolve_separable(prof, kernel1d)
            flat, valid = _stamp_indices(cx, cy, int(R), width, height)
            _append_significant(idx_parts, w_parts, flat, prof[valid])


# ---------------------------------------------------------------------------------------------
# Detector effects
# ---------------------------------------------------------------------------------------------
def bloom(electrons: np.ndarray, full_well: float, spread: bool = True) -> None:
    """In place: charge above full well spreads up and down its column (lost at the edges)."""
    over = electrons > full_well
    if not over.any():
        return
    if not spread:
        np.minimum(electrons, full_well, out=electrons)
        return
    for col in np.flatnonzero(over.any(axis=0)):
        column = electrons[:, col].astype(np.float64)
        for _ in range(50):
            full = column >= full_well
            if not (column > full_well).any():
                break
            # Runs of full pixels containing an excess.
            edges = np.diff(np.concatenate(([0], full.astype(np.int8), [0])))
            starts = np.flatnonzero(edges == 1)
            ends = np.flatnonzero(edges == -1)  # exclusive
            for a, b in zip(starts, ends, strict=True):
                excess = float(np.sum(column[a:b] - full_well))
                if excess <= 0.0:
                    continue
                column[a:b] = full_well
                half = 0.5 * excess
                # Upwards (increasing row), then downwards; leftovers cross to the other side.
                left_over = _fill(column[b:], full_well, half)
                left_over = _fill(column[:a][::-1], full_well, half + left_over)
                if left_over > 0.0:
                    _fill(column[b:], full_well, left_over)
        electrons[:, col] = np.minimum(column, full_well)


def _fill(segment: np.ndarray, full_well: float, amount: float) -> float:
    """Fill a 1-D view from its start up to full well with `amount`; return what did not fit."""
    if amount <= 0.0 or segment.size == 0:
        return max(amount, 0.0)
    capacity = np.maximum(full_well - segment, 0.0)
    cum = np.cumsum(capacity)
    k = int(np.searchsorted(cum, amount, side="left"))
    if k >= segment.size:
        segment[:] = full_well
        return float(amount - cum[-1])
    segment[:k] = np.maximum(segment[:k], full_well)
    segment[k] += amount - (cum[k - 1] if k > 0 else 0.0)
    return 0.0


def _flat_illumination(task: QuadrantTask, width: int, height: int) -> tuple[np.ndarray, float]:
    """Noiseless LED illumination (e-) of the image area, before PRNU; and its median."""
    m = task.model
    cfg = task.config
    u = (2.0 * (np.arange(width) + 0.5) / width - 1.0)[None, :]
    v = (2.0 * (np.arange(height) + 0.5) / height - 1.0)[:, None]
    c = m.flat_coeffs
    pattern = (
        c[0] * u + c[1] * v + c[2] * (u * u - 1.0 / 3.0) + c[3] * (v * v - 1.0 / 3.0) + c[4] * u * v
    )
    pattern = pattern - pattern.mean()
    pattern *= cfg.flat_nonuniformity / max(float(pattern.std()), 1e-12)
    illum = (m.flat_level_e * task.flat_factor) * (1.0 + pattern)
    return illum, float(np.median(illum))


def _ci_profile(task: QuadrantTask, height: int) -> tuple[np.ndarray, float]:
    """Mean injected electrons per image row (bands + CTI trails) and the band level (e-)."""
    m = task.model
    cfg = task.config
    level_adu = m.ci_level_adu * task.ci_factor
    level_e = level_adu * m.gain_e_per_adu
    dist = np.arange(height)  # rows from the serial register, in readout order
    period, rows = int(cfg.ci_period_rows), int(cfg.ci_rows)
    start = period // 2
    phase = (dist - start) % period
    in_band = (dist >= start) & (phase < rows)
    profile = np.where(in_band, level_e, 0.0)
    trail_j = phase - rows  # rows after the end of the band
    has_band = dist - start >= rows
    trail = (~in_band) & has_band & (trail_j >= 0) & (trail_j < max(1, int(6 * cfg.cti_trail_rows)))
    profile = profile + np.where(
        trail,
        level_e * cfg.cti_trail_fraction * np.exp(-np.maximum(trail_j, 0) / cfg.cti_trail_rows),
        0.0,
    )
    if m.geometry.parallel_overscan_side == "bottom":  # serial register at the top
        profile = profile[::-1]
    return profile, level_adu


def _region_mean(row_term: np.ndarray, col_term: np.ndarray, region) -> float:
    rs, cs = region.slices
    if region.size == 0:
        return float("nan")
    return float(row_term[rs].mean() + col_term[cs].mean())


def _object_block(kind: str, extname: str, n: int, **cols) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, dtype in OBJECT_COLUMNS.items():
        if name == "kind":
            out[name] = np.full(n, kind, dtype=object)
        elif name == "extname":
            out[name] = np.full(n, extname, dtype=object)
        elif name in cols:
            out[name] = np.asarray(cols[name]).astype(dtype if dtype != "str" else object)
        elif dtype == "f8":
            out[name] = np.full(n, np.nan)
        elif dtype == "i8":
            out[name] = np.full(n, -1, dtype=np.int64)
        else:
            out[name] = np.zeros(n, dtype=bool)
    return out


def concat_objects(blocks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not blocks:
        return _object_block("", "", 0)
    return {k: np.concatenate([b[k] for b in blocks]) for k in OBJECT_COLUMNS}


# ---------------------------------------------------------------------------------------------
# The quadrant
# ---------------------------------------------------------------------------------------------
def synthesize(task: QuadrantTask) -> QuadrantResult:
    """Simulate one quadrant; returns its BITPIX 16 payload, truth and injected objects."""
    m = task.model
    cfg = task.config
    geom = m.geometry
    img = geom.image
    width, height = img.col1 - img.col0, img.row1 - img.row0
    col0, row0 = img.col0, img.row0
    npx = width * height
    gain = m.gain_e_per_adu
    kind = task.kind
    key = (task.frame_seed, kind, "quadrant", m.index)
    blocks: list[dict[str, np.ndarray]] = []

    # --- mean signal, electrons ----------------------------------------------------------------
    uniform_e = m.dark_current_e_per_s * task.t_dark
    sky_e = task.sky_e_per_s * task.exptime if kind == "science" else 0.0
    uniform_e += sky_e
    idx_parts: list[np.ndarray] = []
    w_parts: list[np.ndarray] = []
    n_stars = n_galaxies = 0
    if kind == "science" and task.stars is not None:
        r2, e1, e2 = _render_stars(task, width, height, col0, row0, idx_parts, w_parts)
        st = task.stars
        ins = st["inside"]
        n_stars = int(ins.sum())
        blocks.append(
            _object_block(
                "star", m.extname, n_stars,
                x=st["x"][ins], y=st["y"][ins], flux_adu=st["flux_adu"][ins],
                source_id=st["source"][ins], in_gaia=st["source"][ins] >= 0,
                gmag=st["gmag"][ins], bp_rp=st["bp_rp"][ins],
                true_r2=r2[ins], true_e1=e1[ins], true_e2=e2[ins],
            )
        )  # fmt: skip
    if kind == "science" and task.galaxies is not None:
        _render_galaxies(task, width, height, col0, row0, idx_parts, w_parts)
        gal = task.galaxies
        ins = gal["inside"]
        n_galaxies = int(ins.sum())
        blocks.append(
            _object_block(
                "galaxy", m.extname, n_galaxies,
                x=gal["x"][ins], y=gal["y"][ins], flux_adu=gal["flux_adu"][ins],
                vis_mag=gal["mag"][ins], re_px=gal["re_px"][ins], sersic_n=gal["sersic_n"][ins],
                axis_ratio=gal["axis_ratio"][ins], theta_deg=gal["theta_deg"][ins],
            )
        )  # fmt: skip
    hot_e = m.hot_rate_e_per_s * task.t_dark
    if hot_e.size and task.t_dark > 0:
        idx_parts.append(m.hot_y * width + m.hot_x)
        w_parts.append(hot_e)
        blocks.append(
            _object_block(
                "hot", m.extname, hot_e.size,
                x=m.hot_x + col0, y=m.hot_y + row0, flux_adu=hot_e / gain,
            )
        )  # fmt: skip

    # --- shot noise ----------------------------------------------------------------------------
    rng = rng_for(*key, "shot")
    electrons = poisson_uniform(rng, uniform_e, npx)
    if idx_parts:
        sparse = np.bincount(
            np.concatenate(idx_parts), weights=np.concatenate(w_parts), minlength=npx
        )
        nz = np.flatnonzero(sparse > 0.0)
        electrons[nz] += poisson_any(rng, sparse[nz]).astype(np.float32)
        del sparse
    electrons = electrons.reshape(height, width)
    flat_level = flat_nonuni = ci_level_adu = None
    background_e = uniform_e
    if kind == "flat":
        illum, flat_level = _flat_illumination(task, width, height)
        flat_nonuni = float(illum.std() / flat_level)
        prnu = rng_for(cfg.instrument_seed, "prnu", m.index, cfg.geometry).normal(
            1.0, cfg.prnu_rms, (height, width)
        )
        lam = (illum * prnu).astype(np.float32)
        del illum, prnu
        noise = rng.standard_normal(lam.shape, dtype=np.float32)
        noise *= np.sqrt(lam)
        lam += noise
        electrons += np.rint(lam)
        del lam, noise
        background_e += flat_level
    elif kind == "charge":
        profile, ci_level_adu = _ci_profile(task, height)
        rows = np.flatnonzero(profile > 0.0)
        if rows.size:
            lam = np.broadcast_to(profile[rows, None], (rows.size, width))
            electrons[rows, :] += poisson_any(rng, lam).astype(np.float32)

    # --- particles -----------------------------------------------------------------------------
    prng = rng_for(*key, "particles")
    n_cos = int(prng.poisson(task.n_cosmic_mean))
    n_xr = int(prng.poisson(task.n_xray_mean))
    n_pr = int(prng.poisson(task.n_proton_mean))
    sigma_bg_e = float(np.sqrt(m.read_noise_e**2 + background_e))
    threshold = 3.0 * sigma_bg_e
    hits = generate_hits(
        prng, width, height,
        n_cosmic=n_cos, n_xray=n_xr, n_proton=n_pr, gain=gain,
        e_per_um=cfg.cosmic_e_per_um, depletion_um=cfg.depletion_um,
        sigma_back=cfg.diffusion_sigma_px,
        xray_adu=tuple(cfg.xray_adu_range), proton_adu=tuple(cfg.proton_adu_range),
        zenith_power=cfg.cosmic_zenith_power, landau_width=cfg.cosmic_landau_width,
        alpha_fraction=cfg.cosmic_alpha_fraction,
    )  # fmt: skip
    dep = deposit(hits, width, height, threshold)
    cosmic_fraction = float(np.count_nonzero(dep["image"] > threshold)) / npx
    electrons += dep["image"].astype(np.float32)
    for code, name in enumerate(KIND_NAMES):
        sel = dep["kind"] == code
        k = int(sel.sum())
        if k:
            q_adu = dep["charge_e"][sel] / gain
            blocks.append(
                _object_block(
                    name, m.extname, k,
                    x=dep["x"][sel] + col0, y=dep["y"][sel] + row0, flux_adu=q_adu,
                    length_px=dep["length_px"][sel], npix=dep["npix"][sel], charge_adu=q_adu,
                    theta_deg=dep["phi_deg"][sel],
                )
            )  # fmt: skip
    del dep

    # --- full well -----------------------------------------------------------------------------
    bloom(electrons, cfg.full_well_e, spread=cfg.blooming)
    n_saturated = int(np.count_nonzero(electrons >= cfg.full_well_e * (1.0 - 1e-6)))

    # --- ADU -----------------------------------------------------------------------------------
    row_term, col_term = m.bias_vectors(task.bias_drift_adu)
    nrng = rng_for(*key, "read-noise")
    adu = nrng.standard_normal((geom.naxis2, geom.naxis1), dtype=np.float32)
    adu *= np.float32(m.read_noise_adu)
    adu += row_term.astype(np.float32)[:, None]
    adu += col_term.astype(np.float32)[None, :]
    electrons *= np.float32(1.0 / gain)
    adu[img.slices] += electrons
    del electrons
    if task.flipped:
        adu = adu[:, ::-1]
        col_term = col_term[::-1]
    np.rint(adu, out=adu)
    np.clip(adu, 0.0, 65535.0, out=adu)
    adu -= np.float32(32768.0)
    data = adu.astype(">i2").tobytes()
    del adu

    objects = concat_objects(blocks)
    if task.flipped:
        objects["x"] = (geom.naxis1 - 1) - objects["x"]
        objects["true_e2"] = -objects["true_e2"]
        objects["theta_deg"] = (180.0 - objects["theta_deg"]) % 180.0

    rn_adu = m.read_noise_adu
    truth = {
        "gain_e_per_adu": gain,
        "relative_gain": m.relative_gain,
        "qe": m.qe,
        "read_noise_e": m.read_noise_e,
        "read_noise_adu": rn_adu,
        "read_noise_digitised_adu": float(np.sqrt(rn_adu**2 + 1.0 / 12.0)),
        "bias_prescan_adu": _region_mean(row_term, col_term, geom.serial_prescan),
        "bias_overscan_adu": _region_mean(row_term, col_term, geom.serial_overscan),
        "bias_parallel_overscan_adu": _region_mean(row_term, col_term, geom.parallel_overscan),
        "bias_image_adu": _region_mean(row_term, col_term, geom.image),
        "bias_pedestal_adu": m.pedestal_adu + task.bias_drift_adu,
        "bias_serial_gradient_adu": m.serial_gradient_adu,
        "bias_parallel_gradient_adu": m.parallel_gradient_adu,
        "dark_current_e_per_s": m.dark_current_e_per_s,
        "sky_e_per_s": task.sky_e_per_s if kind == "science" else None,
        "flat_level_e": flat_level,
        "flat_nonuniformity": flat_nonuni,
        "ci_level_adu": ci_level_adu,
        "n_hot_pixels": int(m.hot_x.size),
        "n_cosmic_rays": n_cos,
        "cosmic_pixel_fraction": cosmic_fraction,
        "particle_threshold_e": threshold,
        "n_xray_events": n_xr,
        "n_proton_events": n_pr,
        "n_stars": n_stars if kind == "science" else None,
        "n_galaxies": n_galaxies if kind == "science" else None,
        "n_saturated_pixels": n_saturated,
        "flipped": bool(task.flipped),
    }
    return QuadrantResult(m.extname, data, truth, objects)
