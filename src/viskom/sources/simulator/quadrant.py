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

Star and galaxy stamps are `stamps`, shot noise and the other detector effects `detector`;
`run_quadrants` schedules the quadrants of a frame on threads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from viskom.sources.simulator.config import SimConfig
from viskom.sources.simulator.detector import (
    bloom,
    ci_profile,
    flat_illumination,
    poisson_any,
    poisson_uniform,
)
from viskom.sources.simulator.events import KIND_NAMES, deposit, generate_hits
from viskom.sources.simulator.instrument import QuadrantModel
from viskom.sources.simulator.seeds import rng_for
from viskom.sources.simulator.stamps import render_galaxies, render_stars

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
    """One synthesised quadrant: its data, truth and injected objects."""

    extname: str
    data: bytes  # big-endian BITPIX 16 payload (value - 32768), unpadded
    truth: dict
    objects: dict[str, np.ndarray] = field(default_factory=dict)


def _region_mean(row_term: np.ndarray, col_term: np.ndarray, region: Any) -> float:
    rs, cs = region.slices
    if region.size == 0:
        return float("nan")
    return float(row_term[rs].mean() + col_term[cs].mean())


def _object_block(kind: str, extname: str, n: int, **cols: Any) -> dict[str, np.ndarray]:
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
    """The object lists of several blocks as one (OBJECT_COLUMNS)."""
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
        r2, e1, e2 = render_stars(task, width, height, col0, row0, idx_parts, w_parts)
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
        render_galaxies(task, width, height, col0, row0, idx_parts, w_parts)
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
        illum, flat_level = flat_illumination(task, width, height)
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
        profile, ci_level_adu = ci_profile(task, height)
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


def run_quadrants(tasks: list[QuadrantTask], workers: int) -> Iterator[QuadrantResult]:
    """Results in task order. workers > 1: a thread pool (numpy releases the GIL in its heavy
    loops), at most 2 x workers quadrants in flight so that memory stays bounded."""
    if workers <= 1 or len(tasks) < 2:
        for task in tasks:
            yield synthesize(task)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="viskom-sim") as pool:
        pending: deque = deque()
        it = iter(tasks)
        for task in it:
            pending.append(pool.submit(synthesize, task))
            if len(pending) >= 2 * workers:
                break
        try:
            while pending:
                result = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(synthesize, nxt))
                yield result
        finally:
            for future in pending:
                future.cancel()
