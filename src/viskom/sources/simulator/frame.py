"""Whole frames: `simulate_frame` puts headers, sky, quadrants and truth into one LE1 file.

Headers are `headers`, the sky `sky`, each quadrant `quadrant`, the truth files `truth`. The
frame file and its object list are written next to their final names and replace them only when
complete (`viskom.store.atomic`), then the truth JSON; the same seed gives identical bytes.
"""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from viskom.le1.focalplane import PIXELS_PER_DEG, sky_to_instrument, unwrap_longitude
from viskom.le1.geometry import all_extnames
from viskom.sources.simulator.config import (
    DEFECTS,
    FRAME_KINDS,
    NOMINAL_EXPTIME,
    SHORT_EXPTIME,
    SimConfig,
    SimulatedFrame,
)
from viskom.sources.simulator.events import mean_rate_multiplier
from viskom.sources.simulator.fitsio import BLOCK, FitsStream, header_bytes, padding
from viskom.sources.simulator.headers import as_utc, frame_layout, primary_header
from viskom.sources.simulator.psf import PsfModel
from viskom.sources.simulator.quadrant import QuadrantTask, concat_objects, run_quadrants
from viskom.sources.simulator.seeds import derived_seed, rng_for
from viskom.sources.simulator.sky import (
    base_pointing,
    catalogue_for,
    default_pointing,
    select_for_quadrant,
    sky_objects,
)
from viskom.sources.simulator.truth import (
    OBJECT_SCHEMA,
    TRUTH_DEFINITIONS,
    objects_table,
    warn_if_replacing,
    write_json,
)
from viskom.store.atomic import atomic_path, write_bytes_atomic

#: Default EXPTIME (s) per frame kind.
DEFAULT_EXPTIME: dict[str, float] = {
    "science": NOMINAL_EXPTIME,
    "dark": NOMINAL_EXPTIME,
    "bias": 0.0,
    "flat": 5.0,
    "charge": 0.0,
}
N_DEFECT_QUADRANTS = 3
REF_EXPTIME = 89.52


def frame_name(
    date_obs: datetime, *, naming: str, seed: int, obs_id: int, dither: int, exposure_index: int
) -> str:
    """File name (without .fits) in the archive or the instrument-workstation convention."""
    t = as_utc(date_obs)
    if naming == "iws":
        hex8 = f"{derived_seed(seed, 'iws-name'):08X}"
        return f"C_{t:%Y%m%d}_{t:%H%M%S}_W_{hex8}.VIS.bin_{exposure_index:02d}_01"
    return (
        f"EUC_LE1_VIS-{obs_id:05d}-{dither}-W_{t:%Y%m%dT%H%M%S.%f}Z_{exposure_index:02d}_01_01.00"
    )


def _resolved_config(config: SimConfig) -> SimConfig:
    """A picklable copy (rate multipliers are resolved per frame before use)."""
    return dataclasses.replace(config, xray_rate_multiplier=1.0, proton_rate_multiplier=1.0)


def simulate_frame(
    outdir: Path,
    kind: str,
    *,
    seed: int,
    date_obs: datetime,
    exptime: float | None = None,
    config: SimConfig | None = None,
    exposure_index: int = 1,
    obs_id: int = 2370,
    dither: int = 1,
    pointing: tuple[float, float, float] | None = None,
    defect: str | None = None,
) -> SimulatedFrame:
    """Simulate one LE1 VIS raw frame in `outdir` (created if missing), with its truth files.

    kind: one of FRAME_KINDS. exptime: default 560.52 s (science, dark), 0 (bias, charge),
    5 s (flat). pointing: commanded (RA, Dec, PA) in degrees, default a high-latitude field of
    OBS_ID with the dither offset. defect: one of DEFECTS or None.
    """
    cfg = config if config is not None else SimConfig()
    cfg.validate()
    if kind not in FRAME_KINDS:
        raise ValueError(f"kind must be one of {FRAME_KINDS}, not {kind!r}")
    if defect is not None and defect not in DEFECTS:
        raise ValueError(f"defect must be one of {DEFECTS} or None, not {defect!r}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    date_obs = as_utc(date_obs)
    exptime = float(DEFAULT_EXPTIME[kind] if exptime is None else exptime)
    if exptime < 0:
        raise ValueError("exptime must be >= 0")
    seed = int(seed)
    base = frame_name(
        date_obs, naming=cfg.naming, seed=seed, obs_id=obs_id, dither=dither,
        exposure_index=exposure_index,
    )  # fmt: skip
    path = outdir / (base + (".fits.gz" if cfg.gzip else ".fits"))
    truth_path = outdir / (base + ".truth.json")
    objects_path = outdir / (base + ".objects.parquet")
    warn_if_replacing(truth_path, kind=kind, seed=seed, defect=defect, geometry=cfg.geometry)
    if pointing is None:
        pointing = default_pointing(obs_id, dither, cfg.sky_seed)
        centre = base_pointing(obs_id, cfg.sky_seed)[:2]
    else:
        pointing = tuple(float(v) for v in pointing)  # type: ignore[assignment]
        centre = (pointing[0], pointing[1])

    truth: dict = {
        "name": base,
        "file": path.name,
        "kind": kind,
        "geometry": cfg.geometry,
        "seed": seed,
        "instrument_seed": int(cfg.instrument_seed),
        "exptime": exptime,
        "date_obs": date_obs.replace(tzinfo=None).isoformat(timespec="microseconds"),
        "obs_id": int(obs_id),
        "dither": int(dither),
        "exposure_index": int(exposure_index),
        "defect": defect,
        "missing_extensions": [],
        "flipped_quadrants": [],
        "pointing": {"ra": pointing[0], "dec": pointing[1], "pa": pointing[2]},
    }

    if defect == "not-fits":
        rng = rng_for(seed, "not-fits")
        text = (
            "<html><body>503 Service Unavailable: the archive could not deliver "
            f"{path.name}</body></html>\n"
        ).encode()
        write_bytes_atomic(path, text + rng.bytes(int(rng.integers(3000, 9000))))
        truth.update({"pointing_error_pix": None, "photometry": None, "psf": None,
                      "gaia_catalogue": None, "objects_file": None, "quadrants": {}})  # fmt: skip
        write_json(truth_path, truth)
        if objects_path.exists():
            objects_path.unlink()
        return SimulatedFrame(path, truth_path, None, base, kind)

    frng = rng_for(seed, kind, "frame")
    models, wcs_of, header_of = frame_layout(cfg)
    extnames = all_extnames()
    order = [extnames[i] for i in rng_for(seed, "extension-order").permutation(len(extnames))]
    missing: list[str] = []
    flipped: list[str] = []
    if defect == "missing-extensions":
        missing = sorted(
            rng_for(seed, "missing").choice(extnames, N_DEFECT_QUADRANTS, replace=False).tolist(),
            key=extnames.index,
        )
        order = [e for e in order if e not in missing]
    if defect == "flipped-geometry":
        flipped = sorted(
            rng_for(seed, "flipped").choice(extnames, N_DEFECT_QUADRANTS, replace=False).tolist(),
            key=extnames.index,
        )

    # Frame-level random state (fixed draw order).
    err_dx, err_dy = (float(v) for v in frng.normal(0.0, cfg.pointing_error_pix, 2))
    sky_frame = float(cfg.sky_e_per_s * frng.lognormal(0.0, cfg.sky_variation))
    flat_factor = float(frng.normal(1.0, 0.01))
    ci_factor = float(frng.normal(1.0, 0.002))
    drifts = frng.normal(0.0, cfg.bias_drift_adu, len(extnames))
    psf = PsfModel.from_config(cfg, frng)

    # Dark current and hot pixels integrate over EXPTIME; particles also hit during the
    # readout (on average half of it, as VISQL's expfactor assumes).
    t_dark = exptime
    t_particles = exptime + cfg.readout_time_s / 2.0
    xray_mult = mean_rate_multiplier(cfg.xray_rate_multiplier, date_obs, t_particles)
    proton_mult = mean_rate_multiplier(cfg.proton_rate_multiplier, date_obs, t_particles)

    # Sky content (science only).
    gaia_path = None
    sky = None
    X = Y = Xg = Yg = None
    if kind == "science":
        gaia_path, table = catalogue_for(outdir, obs_id, pointing, centre, cfg)
        sky = sky_objects(table, date_obs, cfg, obs_id)
        shift_x, shift_y = err_dx / PIXELS_PER_DEG, err_dy / PIXELS_PER_DEG
        X, Y = sky_to_instrument(sky["star_ra"], sky["star_dec"], *pointing)
        X, Y = unwrap_longitude(X) + shift_x, Y + shift_y
        Xg, Yg = sky_to_instrument(sky["gal_ra"], sky["gal_dec"], *pointing)
        Xg, Yg = unwrap_longitude(Xg) + shift_x, Yg + shift_y
        colour = sky["star_bp_rp"]
        ratio = np.exp(cfg.colour_c0 + cfg.colour_c1 * colour + cfg.colour_c2 * colour**2)
        star_flux0 = 10 ** (-0.4 * (sky["star_gmag"] - 30.0)) / 1.5 * ratio
        gal_flux0 = 10 ** (-0.4 * (sky["gal_mag"] - 30.0)) / 1.5
        scale = exptime / REF_EXPTIME * cfg.throughput

    run_cfg = _resolved_config(cfg)
    tasks: list[QuadrantTask] = []
    for ext in order:
        m = models[ext]
        task = QuadrantTask(
            model=m,
            kind=kind,
            frame_seed=seed,
            config=run_cfg,
            exptime=exptime,
            t_dark=t_dark,
            bias_drift_adu=float(drifts[m.index]),
            sky_e_per_s=sky_frame * m.qe if kind == "science" else 0.0,
            flat_factor=flat_factor,
            ci_factor=ci_factor,
            n_cosmic_mean=cfg.cosmic_rate_per_cm2_s * m.image_area_cm2 * t_particles,
            n_xray_mean=cfg.xray_rate_per_cm2_s * xray_mult * m.image_area_cm2 * t_particles,
            n_proton_mean=(
                cfg.proton_rate_per_cm2_s * proton_mult * m.image_area_cm2 * t_particles
            ),
            psf_beta=psf.beta,
            flipped=ext in flipped,
        )
        if kind == "science":
            wcs = wcs_of[ext]
            img = m.geometry.image
            ccx, ccy = wcs.all_pix2world(
                [(img.col0 + img.col1 - 1) / 2.0], [(img.row0 + img.row1 - 1) / 2.0], 0
            )
            a_c, g1_c, g2_c = psf.params_at(unwrap_longitude(ccx), ccy)
            task.psf_at_centre = (float(a_c[0]), float(g1_c[0]), float(g2_c[0]))
            idx, px, py, inside = select_for_quadrant(m, wcs, X, Y)
            alpha, g1, g2 = psf.params_at(X[idx], Y[idx])
            task.stars = {
                "x": px, "y": py, "inside": inside,
                "flux_adu": star_flux0[idx] * scale / m.relative_gain,
                "alpha": alpha, "g1": g1, "g2": g2,
                "source": sky["star_source"][idx], "gmag": sky["star_gmag"][idx],
                "bp_rp": sky["star_bp_rp"][idx],
            }  # fmt: skip
            gidx, gx, gy, gin = select_for_quadrant(m, wcs, Xg, Yg)
            task.galaxies = {
                "x": gx, "y": gy, "inside": gin,
                "flux_adu": gal_flux0[gidx] * scale / m.relative_gain,
                "mag": sky["gal_mag"][gidx], "re_px": sky["gal_re_px"][gidx],
                "sersic_n": sky["gal_n"][gidx], "axis_ratio": sky["gal_q"][gidx],
                "theta_deg": sky["gal_theta_deg"][gidx],
            }  # fmt: skip
        tasks.append(task)

    # Headers and byte layout (for the truncation point).
    phdr = primary_header(
        kind=kind, defect=defect, date_obs=date_obs, exptime=exptime, obs_id=obs_id,
        dither=dither, exposure_index=exposure_index, pointing=pointing, seed=seed, config=cfg,
    )  # fmt: skip
    headers = [header_of[e] for e in order]
    truncate_at = None
    truncated_ext = None
    if defect == "truncated" and order:
        pos = len(header_bytes(phdr))
        target = max(0, len(order) - 3)
        for i, h in enumerate(headers):
            g = models[order[i]].geometry
            data_len = g.naxis1 * g.naxis2 * 2
            pos += len(h)
            if i == target:
                truncate_at = pos + data_len // 2 + 1
                if truncate_at % BLOCK == 0:
                    truncate_at += 1
                truncated_ext = order[i]
                break
            pos += data_len + len(padding(data_len))

    workers = cfg.workers
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if cfg.geometry == "full" else 1
    quadrant_truth: dict[str, dict] = {}
    buffered: list[dict[str, np.ndarray]] = []
    n_buffered = 0
    # The frame replaces `path` first, then the object list; on error neither is touched.
    with atomic_path(objects_path) as tmp_objects, atomic_path(path) as tmp_path:
        writer = pq.ParquetWriter(tmp_objects, OBJECT_SCHEMA, compression="zstd")
        try:
            with FitsStream(tmp_path, gzip=cfg.gzip, level=cfg.gzip_level,
                            truncate_at=truncate_at) as stream:  # fmt: skip
                stream.write_hdu(phdr)
                for header, result in zip(headers, run_quadrants(tasks, int(workers)), strict=True):
                    stream.write_hdu(header, result.data)
                    quadrant_truth[result.extname] = result.truth
                    buffered.append(result.objects)
                    n_buffered += result.objects["kind"].size
                    if n_buffered >= 250_000:
                        writer.write_table(objects_table(concat_objects(buffered)))
                        buffered, n_buffered = [], 0
            writer.write_table(objects_table(concat_objects(buffered)))
        finally:
            writer.close()

    truth.update(
        {
            "missing_extensions": missing,
            "flipped_quadrants": flipped,
            "extension_order": order,
            "truncated_at_byte": truncate_at,
            "truncated_extension": truncated_ext,
            "pointing_error_pix": {"dx": err_dx, "dy": err_dy},
            "pointing_error_definition": (
                "true instrument-frame position = sky_to_instrument(ra, dec, RA, DEC, PA, "
                "distortion=True) + (dx, dy) / 36000 deg"
            ),
            "photometry": {
                "c0": cfg.colour_c0,
                "c1": cfg.colour_c1,
                "c2": cfg.colour_c2,
                "throughput": cfg.throughput,
                "reference_exptime": REF_EXPTIME,
                "flux_definition": (
                    "star flux_adu = 10**(-0.4*(G-30))/1.5 * exp(c0+c1*c+c2*c**2) * "
                    "EXPTIME/89.52 * throughput / relative_gain (c = BP-RP); galaxies the same "
                    "with their VIS magnitude and no colour term"
                ),
            },
            "psf": psf.describe(),
            "gaia_catalogue": gaia_path.name if gaia_path is not None else None,
            "star_density_factor": cfg.effective_star_density_factor,
            "sky_e_per_s": sky_frame if kind == "science" else None,
            "dark_time_s": t_dark,
            "particle_time_s": t_particles,
            "xray_rate_multiplier": xray_mult,
            "proton_rate_multiplier": proton_mult,
            "objects_file": objects_path.name,
            "definitions": TRUTH_DEFINITIONS,
            "quadrants": {e: quadrant_truth[e] for e in extnames if e in quadrant_truth},
        }
    )
    write_json(truth_path, truth)
    return SimulatedFrame(path, truth_path, objects_path, base, kind)


def simulate_set(
    outdir: Path,
    kind: str,
    count: int,
    *,
    seed: int,
    start: datetime,
    config: SimConfig | None = None,
    defect: str | None = None,
    obs_id: int = 2370,
    exptime: float | None = None,
) -> list[SimulatedFrame]:
    """`count` consecutive frames of one kind, EXPTIME + readout (72 s) apart.

    Science frames cycle through the 4 dithers of a field (OBS_ID incremented every 4 frames);
    calibration frames share OBS_ID and number their exposures 1, 2, ... Frame i uses the seed
    derived_seed(seed, "set", i).
    """
    cfg = config if config is not None else SimConfig()
    if kind not in FRAME_KINDS:
        raise ValueError(f"kind must be one of {FRAME_KINDS}, not {kind!r}")
    t_exp = float(DEFAULT_EXPTIME[kind] if exptime is None else exptime)
    step = timedelta(seconds=t_exp + cfg.readout_time_s)
    frames: list[SimulatedFrame] = []
    t = as_utc(start)
    for i in range(int(count)):
        if kind == "science":
            obs, dither, index = obs_id + i // 4, i % 4 + 1, 1 if t_exp != SHORT_EXPTIME else 2
        else:
            obs, dither, index = obs_id, 1, i + 1
        frames.append(
            simulate_frame(
                outdir, kind, seed=derived_seed(seed, "set", i), date_obs=t, exptime=t_exp,
                config=cfg, exposure_index=index, obs_id=obs, dither=dither, defect=defect,
            )
        )  # fmt: skip
        t = t + step
    return frames
