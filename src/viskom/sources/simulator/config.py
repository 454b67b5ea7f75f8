"""Simulator settings, frame kinds, defects and the result record.

Every physical knob of the simulator is a field of `SimConfig`, with a realistic default and a
one-line description. Quantities that describe one detector (bias, gain, read noise, hot
pixels...) are drawn once per quadrant from `instrument_seed`, so a quadrant keeps its character
from frame to frame; quantities that vary physically from exposure to exposure are drawn from the
frame seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

FRAME_KINDS: tuple[str, ...] = ("science", "dark", "bias", "flat", "charge")
DEFECTS: tuple[str, ...] = (
    "truncated",
    "missing-extensions",
    "unknown-type",
    "flipped-geometry",
    "not-fits",
)
GEOMETRIES: tuple[str, ...] = ("small", "full")
NAMINGS: tuple[str, ...] = ("archive", "iws")

#: Nominal and short science exposure times (s), VIS-REFERENCE 4.
NOMINAL_EXPTIME = 560.52
SHORT_EXPTIME = 89.52

#: A rate multiplier: a constant, a function of UTC time, or (times, values) to interpolate.
RateMultiplier = float | Callable[[datetime], float] | tuple[Sequence[datetime], Sequence[float]]


@dataclass
class SimConfig:
    """All knobs of the LE1 VIS frame simulator (defaults are realistic for 2024 flight data)."""

    # --- output -------------------------------------------------------------------------------
    geometry: str = "small"  # "small" (256x256 image area per quadrant) | "full" (2048x2066)
    naming: str = "archive"  # "archive" (EUC_LE1_VIS-...) | "iws" (C_YYYYMMDD_hhmmss_W_...)
    gzip: bool = False  # write .fits.gz (deterministic gzip stream, mtime 0)
    gzip_level: int = 1  # zlib level for .fits.gz (1 = fast; the archive uses more)
    workers: int | None = None  # threads for quadrant synthesis; None: 2 for full, 1 for small
    # --- seeds --------------------------------------------------------------------------------
    instrument_seed: int = 20240701  # fixes per-quadrant detector properties across frames
    sky_seed: int = 1  # with OBS_ID, fixes the sky (Gaia-like stars, faint stars, galaxies)
    # --- detector -----------------------------------------------------------------------------
    gain_e_per_adu: float = 3.4  # mean conversion gain over the focal plane (e-/ADU)
    gain_spread_e_per_adu: float = 0.05  # rms of the per-quadrant gain, clipped to 3.2-3.6
    qe_spread: float = 0.01  # rms of the per-quadrant relative quantum efficiency
    read_noise_range_e: tuple[float, float] = (3.9, 4.4)  # per-quadrant read noise range (e-)
    bias_range_adu: tuple[float, float] = (2600.0, 2800.0)  # per-quadrant bias pedestal range
    bias_serial_gradient_adu: tuple[float, float] = (0.3, 2.0)  # |bias change| across a row
    bias_parallel_gradient_adu: float = 0.5  # max |bias change| along a column (0 = none)
    bias_drift_adu: float = 0.3  # rms frame-to-frame change of a quadrant's pedestal
    full_well_e: float = 200_000.0  # pixel full well (e-); charge above it blooms or is lost
    blooming: bool = True  # spread charge above full well along the column (else clip)
    dark_current_e_per_s: float = 0.0006  # mean dark current (e-/px/s), per quadrant +-20%
    hot_pixels_per_quadrant: int = 40  # hot pixels per quadrant image area (any geometry)
    hot_pixel_rate_e_per_s: tuple[float, float] = (0.02, 2.0)  # log-uniform hot pixel currents
    readout_time_s: float = 72.0  # readout duration; half of it adds to the particle exposure
    # --- photometry and sky -------------------------------------------------------------------
    sky_e_per_s: float = 0.22  # zodiacal background (e-/px/s): ~22.3 mag/arcsec2, ZP 25.67
    sky_variation: float = 0.15  # rms fractional frame-to-frame change of the sky level
    throughput: float = 1.0  # multiplies all source fluxes (ice contamination: < 1)
    colour_c0: float = -0.3807  # ln(F_VIS/F_G) = c0 + c1 (BP-RP) + c2 (BP-RP)^2
    colour_c1: float = 0.40095  # colour term, linear
    colour_c2: float = -0.0649  # colour term, quadratic
    star_density_factor: float | None = None  # star counts x this; None: 1 (full), 20 (small)
    gaia_radius_deg: float = 0.6  # radius of the Gaia-like cone written per pointing
    faint_star_gmax: float = 23.0  # stars fainter than Gaia's G=21 down to this are injected
    galaxy_density_per_deg2: float = 1.0e5  # galaxies per deg2 brighter than VIS mag 24.5
    galaxy_mag_range: tuple[float, float] = (20.0, 25.0)  # VIS magnitudes of injected galaxies
    pointing_error_pix: float = 3.0  # rms per axis of the true pointing offset (pixels)
    # --- PSF (elliptical Moffat, pixel-integrated) ----------------------------------------------
    psf_beta: float = 2.5  # Moffat index (wings); inf: a Gaussian (see psf.gaussian_r2)
    psf_r2_px2: float = 1.95  # VISQL R2 (Gaussian-weighted, sigma 2.5 px) of a round PSF at centre
    psf_size_variation: float = 0.015  # fractional growth of the Moffat scale at 0.4 deg radius
    psf_g1: float = -0.014  # mean shear component 1 of the PSF (e1 ~ 1.45 g1 after pixels)
    psf_g2: float = 0.0035  # mean shear component 2 of the PSF
    psf_astigmatism: float = 0.012  # amplitude of the (X^2-Y^2, 2XY) shear pattern at 0.4 deg
    psf_tilt: float = 0.004  # amplitude of the linear (X, Y) shear pattern at 0.4 deg
    psf_frame_jitter: float = 0.005  # rms per-frame fractional size change (0.3x that in shear)
    # --- particles ------------------------------------------------------------------------------
    cosmic_rate_per_cm2_s: float = 2.5  # galactic cosmic rays at L2 through a plane (hits/cm2/s)
    cosmic_e_per_um: float = 55.0  # most probable deposit of a MIP in silicon (e-/um)
    depletion_um: float = 40.0  # sensitive thickness; sets track lengths (12 um pixels)
    diffusion_sigma_px: float = 0.35  # charge diffusion rms for charge made at the back surface
    #: zenith-angle law of the cosmic-ray flux through the detector plane, dN/dOmega ~ cos^n:
    #: 1 = isotropic radiance (cos^2 theta uniform), 0 = more inclined tracks, > 1 more vertical
    cosmic_zenith_power: float = 1.0
    cosmic_landau_width: float = 0.2  # width of the Moyal fluctuation of the deposit per point
    cosmic_alpha_fraction: float = 0.01  # share of heavily ionising hits (alpha particles, x4)
    xray_rate_per_cm2_s: float = 0.002  # solar X-ray events, quiet Sun (events/cm2/s)
    xray_rate_multiplier: RateMultiplier = 1.0  # flare factor: number, f(datetime), or table
    xray_adu_range: tuple[float, float] = (400.0, 1200.0)  # total charge of an X-ray event (ADU)
    proton_rate_per_cm2_s: float = 0.0005  # energetic (solar) protons (events/cm2/s)
    proton_rate_multiplier: RateMultiplier = 1.0  # SEP factor: number, f(datetime), or table
    proton_adu_range: tuple[float, float] = (1.0e4, 4.0e4)  # total charge of a proton hit (ADU)
    # --- calibration frames --------------------------------------------------------------------
    flat_level_range_e: tuple[float, float] = (20_000.0, 40_000.0)  # LED level range per quadrant
    flat_nonuniformity: float = 0.01  # rms/median of the smooth LED illumination in a quadrant
    prnu_rms: float = 0.005  # pixel response non-uniformity (fixed per pixel)
    flat_led: str = "LED3"  # CUSTATUS of flat frames
    ci_level_range_adu: tuple[float, float] = (5000.0, 15000.0)  # injected level per quadrant
    ci_rows: int = 4  # rows per charge-injection band
    ci_period_rows: int = 100  # rows from one band to the next
    cti_trail_fraction: float = 0.004  # fraction of the CI level in the first trailing row
    cti_trail_rows: float = 2.0  # e-folding length (rows) of the CTI trail

    def validate(self) -> None:
        """Raise ValueError for a setting the simulator cannot honour."""
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}, not {self.geometry!r}")
        if self.naming not in NAMINGS:
            raise ValueError(f"naming must be one of {NAMINGS}, not {self.naming!r}")
        if not 0 <= int(self.gzip_level) <= 9:
            raise ValueError("gzip_level must be 0..9")
        if self.full_well_e <= 0 or self.gain_e_per_adu <= 0:
            raise ValueError("full_well_e and gain_e_per_adu must be positive")
        if self.cosmic_zenith_power < 0 or self.cosmic_landau_width < 0:
            raise ValueError("cosmic_zenith_power and cosmic_landau_width must be >= 0")
        if not 0 <= self.cosmic_alpha_fraction <= 1:
            raise ValueError("cosmic_alpha_fraction must be within 0..1")
        if self.ci_rows < 1 or self.ci_period_rows <= self.ci_rows:
            raise ValueError("need 1 <= ci_rows < ci_period_rows")

    @property
    def effective_star_density_factor(self) -> float:
        """The star density factor actually used (geometry-dependent default)."""
        if self.star_density_factor is not None:
            return float(self.star_density_factor)
        return 20.0 if self.geometry == "small" else 1.0


@dataclass
class SimulatedFrame:
    """One simulated frame on disk with its truth."""

    path: Path
    truth_path: Path
    objects_path: Path | None
    name: str
    kind: str
