"""Fixed detector properties of the 144 quadrants, drawn from the instrument seed.

A quadrant keeps its gain, read noise, bias pedestal and gradients, dark current, hot pixels,
LED flat pattern and charge-injection level from frame to frame, as a real detector does.
Only `geometry` ("small"/"full") changes the hot-pixel positions (they must lie in the image
area), nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from viskom.le1.focalplane import PIXEL_SIZE_CM, nominal_wcs_header
from viskom.le1.geometry import (
    DEFAULT_OVERSCAN_X,
    DEFAULT_OVERSCAN_Y,
    DEFAULT_PRESCAN_X,
    FULL_IMAGE_COLUMNS,
    FULL_IMAGE_ROWS,
    QuadrantGeometry,
    all_extnames,
    parse_extname,
    quadrant_geometry,
)
from viskom.sources.simulator.config import SimConfig
from viskom.sources.simulator.seeds import rng_for
from viskom.store.atomic import write_text_atomic

SMALL_IMAGE = 256


def geometry_size(geometry: str) -> tuple[int, int]:
    """(NAXIS1, NAXIS2) of a quadrant for the "small" or "full" geometry."""
    cols, rows = (
        (FULL_IMAGE_COLUMNS, FULL_IMAGE_ROWS) if geometry == "full" else (SMALL_IMAGE, SMALL_IMAGE)
    )
    return cols + DEFAULT_PRESCAN_X + DEFAULT_OVERSCAN_X, rows + DEFAULT_OVERSCAN_Y


@dataclass(frozen=True)
class QuadrantModel:
    """The fixed properties of one readout quadrant."""

    extname: str
    index: int  # position in all_extnames()
    geometry: QuadrantGeometry
    rotation_deg: float  # small rotation of the CCD in the focal plane (same for its 4 quadrants)
    gain_e_per_adu: float
    qe: float  # relative quantum efficiency (1 = focal-plane mean)
    relative_gain: float  # gain / (nominal gain * qe): VISQL's LED-flat relative gain
    read_noise_e: float
    pedestal_adu: float
    serial_gradient_adu: float  # bias change from the first to the last pixel read of a row
    parallel_gradient_adu: float  # bias change from the first to the last row read
    dark_current_e_per_s: float
    hot_x: np.ndarray  # image-area column (0-based) of each hot pixel
    hot_y: np.ndarray  # image-area row (0-based)
    hot_rate_e_per_s: np.ndarray
    flat_level_e: float  # LED flat level of this quadrant before the per-frame LED factor
    flat_coeffs: np.ndarray  # low-order illumination pattern (u, v, u2, v2, uv)
    ci_level_adu: float  # nominal charge-injection level above bias (ADU)

    @property
    def ccd(self) -> str:
        """CCD id ("3-4") of the extension name."""
        return self.extname.split(".")[0]

    @property
    def quadrant(self) -> str:
        """Quadrant letter ("E".."H") of the extension name."""
        return self.extname.split(".")[1]

    @property
    def detid(self) -> int:
        """Detector number 0..35 (row-major over the 6 x 6 CCDs)."""
        q = parse_extname(self.extname)
        return (q.ccd_row - 1) * 6 + (q.ccd_column - 1)

    @property
    def roeid(self) -> int:
        """Readout electronics unit (assumed: 12 ROEs, each serving 3 CCDs of a row)."""
        q = parse_extname(self.extname)
        return (q.ccd_row - 1) * 2 + (q.ccd_column - 1) // 3 + 1

    @property
    def read_noise_adu(self) -> float:
        """Read noise in ADU."""
        return self.read_noise_e / self.gain_e_per_adu

    @property
    def image_area_cm2(self) -> float:
        """Area of the image pixels (cm2), for particle hit rates."""
        g = self.geometry
        return g.image_columns * g.image_rows * PIXEL_SIZE_CM**2

    def wcs_header(self) -> dict:
        """The nominal WCS keywords of the quadrant (its CCD rotated by `rotation_deg`)."""
        return nominal_wcs_header(self.geometry, rotation_deg=self.rotation_deg)

    # --- bias model (noiseless, in ADU) --------------------------------------------------------
    def readout_order_columns(self) -> np.ndarray:
        """For each array column, its position in the serial readout order (0 = first read)."""
        g = self.geometry
        c = np.arange(g.naxis1, dtype=np.float64)
        return c if g.prescan_side == "left" else (g.naxis1 - 1) - c

    def readout_order_rows(self) -> np.ndarray:
        """For each array row, its distance (rows) from the serial register."""
        g = self.geometry
        r = np.arange(g.naxis2, dtype=np.float64)
        return r if g.parallel_overscan_side == "top" else (g.naxis2 - 1) - r

    def bias_vectors(self, drift_adu: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """(row term, column term) whose outer sum is the noiseless bias model of the array."""
        g = self.geometry
        col_term = self.serial_gradient_adu * self.readout_order_columns() / max(g.naxis1 - 1, 1)
        row_term = self.parallel_gradient_adu * self.readout_order_rows() / max(g.naxis2 - 1, 1)
        return row_term + self.pedestal_adu + drift_adu, col_term


def _ccd_rotation(instrument_seed: int, ccd: str) -> float:
    return float(rng_for(instrument_seed, "ccd-rotation", ccd).uniform(-0.015, 0.015))


def quadrant_models(config: SimConfig) -> dict[str, QuadrantModel]:
    """The 144 quadrant models for this configuration, keyed by EXTNAME (canonical order)."""
    naxis1, naxis2 = geometry_size(config.geometry)
    seed = config.instrument_seed
    models: dict[str, QuadrantModel] = {}
    lo_rn, hi_rn = config.read_noise_range_e
    lo_b, hi_b = config.bias_range_adu
    lo_g, hi_g = config.bias_serial_gradient_adu
    lo_f, hi_f = config.flat_level_range_e
    lo_ci, hi_ci = config.ci_level_range_adu
    lo_h, hi_h = config.hot_pixel_rate_e_per_s
    for index, ext in enumerate(all_extnames()):
        geom = quadrant_geometry(ext, naxis1, naxis2)
        rng = rng_for(seed, "quadrant", index)
        gain = float(
            np.clip(rng.normal(config.gain_e_per_adu, config.gain_spread_e_per_adu), 3.2, 3.6)
        )
        qe = float(np.clip(rng.normal(1.0, config.qe_spread), 0.9, 1.1))
        read_noise = float(rng.uniform(lo_rn, hi_rn))
        pedestal = float(rng.uniform(lo_b, hi_b))
        serial = float(rng.uniform(lo_g, hi_g) * rng.choice([-1.0, 1.0]))
        parallel = float(rng.uniform(-1.0, 1.0) * config.bias_parallel_gradient_adu)
        dark = float(config.dark_current_e_per_s * rng.uniform(0.8, 1.2))
        flat_level = float(rng.uniform(lo_f, hi_f) * qe)
        coeffs = rng.normal(0.0, 1.0, 5)
        ci_level = float(rng.uniform(lo_ci, hi_ci))
        # Hot pixels: stable positions in the image area of this geometry.
        hrng = rng_for(seed, "hot-pixels", index, config.geometry)
        n_hot = int(config.hot_pixels_per_quadrant)
        npx = geom.image_columns * geom.image_rows
        flat_idx = np.sort(hrng.choice(npx, size=min(n_hot, npx), replace=False))
        hot_y, hot_x = np.divmod(flat_idx, geom.image_columns)
        hot_rate = np.exp(hrng.uniform(np.log(lo_h), np.log(hi_h), flat_idx.size))
        models[ext] = QuadrantModel(
            extname=ext,
            index=index,
            geometry=geom,
            rotation_deg=_ccd_rotation(seed, ext.split(".")[0]),
            gain_e_per_adu=gain,
            qe=qe,
            relative_gain=gain / (config.gain_e_per_adu * qe),
            read_noise_e=read_noise,
            pedestal_adu=pedestal,
            serial_gradient_adu=serial,
            parallel_gradient_adu=parallel,
            dark_current_e_per_s=dark,
            hot_x=hot_x.astype(np.int64),
            hot_y=hot_y.astype(np.int64),
            hot_rate_e_per_s=hot_rate,
            flat_level_e=flat_level,
            flat_coeffs=coeffs,
            ci_level_adu=ci_level,
        )
    return models


def write_relative_gains(path: str | Path, config: SimConfig) -> Path:
    """Write the simulated instrument's true relative quadrant gains as an 'EXT gain' table.

    The format of VISQL's quadrant_relative_gains.txt ([gaia] gains_file): multiplying a
    quadrant's ADU fluxes by its gain puts all quadrants on one photometric scale.
    """
    models = quadrant_models(config)
    lines = [
        "# EXT relative_gain  (viskom simulator truth: gain / (nominal gain x QE);"
        f" instrument_seed {config.instrument_seed})\n"
    ]
    lines += [f"{ext} {m.relative_gain:.10f}\n" for ext, m in models.items()]
    return write_text_atomic(path, "".join(lines))
