"""viskom's settings: one typed object from `viskom.toml` with `VISKOM_*` environment overrides.

Where the settings come from, in order: `--config FILE`, else `$VISKOM_CONFIG`, else the
first `viskom.toml` in the current folder or its parents. Environment variables override
the file (`VISKOM_WORKERS=4`, nested keys with a double underscore:
`VISKOM_DETECTOR_HEALTH__HOT_PIXEL_SIGMA=8`). Relative paths are relative to the file's
folder. Invalid settings fail at start with a message naming the key.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

CONFIG_FILE_NAME = "viskom.toml"
_toml_data: ContextVar[dict[str, Any] | None] = ContextVar("_toml_data", default=None)


class ConfigError(Exception):
    """Settings that cannot be used; the message names the file, the key and the problem."""


class DetectorHealthSettings(BaseModel):
    """Thresholds of the detector-health stage."""

    model_config = ConfigDict(extra="forbid")
    bias_clip_sigma: float = Field(3.0, gt=1.0, description="sigma clip for bias levels")
    noise_clip_sigma: float = Field(4.0, gt=1.0, description="sigma clip for read noise")
    hot_pixel_sigma: float = Field(10.0, gt=0.0, description="hot pixel: median + N sigma")
    flat_block_px: int = Field(32, ge=4, description="block size for flat nonuniformity")
    geometry_threshold_adu: float = Field(5.0, gt=0.0, description="orientation check margin")


class PsfSettings(BaseModel):
    """Star selection and PSF moments (VISQL-SPEC 5.2, 5.5)."""

    model_config = ConfigDict(extra="forbid")
    weight_sigma_px: float = Field(2.5, gt=0.0, description="Gaussian weight sigma")
    stamp_half_size_px: int = Field(14, ge=3, le=50, description="stamp is 2h+1 square")
    edge_margin_px: int = Field(100, ge=0, description="stars closer to the array edge skipped")
    selection: Literal["adaptive", "visql"] = Field(
        "adaptive",
        description="stellar locus measured on the frame, or VISQL's chimney and star box",
    )
    min_snr: float = Field(100.0, gt=0.0, description="stars: FLUX_AUTO/FLUXERR_AUTO at least")
    locus_window: float = Field(
        0.1, gt=0.0, lt=1.0, description="widest relative radius window of the locus search"
    )
    blend_tolerance: float = Field(
        0.001, gt=0.0, description="a neighbour adding more than this to the weighted flux"
    )
    bmin_px: float = Field(1.3, ge=0.0, description="'visql' only: B_IMAGE above this")
    nominal_exptime_s: float = Field(
        560.52, gt=0.0, description="'visql' only: the exposure of VISQL's flux grid"
    )


class IQSettings(BaseModel):
    """Image-quality score reference (VISQL-SPEC 7.4 defaults; replace per calibration period)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "VISQL 2023-09-20..23"
    r2m: float = 1.9233812949640285
    e1m: float = -0.023129496402877696
    e2m: float = 0.002733812949640288
    cov00: float = 0.0005422666041080192
    cov01: float = -0.00011841403399019925
    cov11: float = 4.4881659889479756e-05
    vare2: float = 5.332022152062523e-06
    ok_below: float = Field(27.0, gt=0.0)
    reject_above: float = Field(1000.0, gt=0.0)

    @model_validator(mode="after")
    def _check_reference(self) -> IQSettings:
        from viskom.measure.iq import IQReference

        try:
            IQReference.from_mapping(self.reference_mapping())
        except (ValueError, TypeError) as exc:
            raise ValueError(f"IQ reference unusable: {exc}") from None
        if self.reject_above <= self.ok_below:
            raise ValueError("reject_above must be larger than ok_below")
        return self

    def reference_mapping(self) -> dict[str, Any]:
        keys = ("name", "r2m", "e1m", "e2m", "cov00", "cov01", "cov11", "vare2")
        return {k: getattr(self, k) for k in keys}


class EventSettings(BaseModel):
    """[events]: particle hits (cosmic rays, X-ray events, protons) and the hot-pixel map."""

    model_config = ConfigDict(extra="forbid")

    seed_sigma: float = Field(5.0, gt=0.0, description="hit seed: sigma above the sky")
    grow_sigma: float = Field(2.5, gt=0.0, description="hits grow into pixels above this")
    psf_single_ratio: float = Field(0.24, gt=0.0, lt=2.0, description="PSF neighbour ratio")
    psf_pair_ratio: float = Field(0.055, gt=0.0, lt=1.0, description="PSF pair ratio")
    star_sharp_sigma: float = Field(5.0, gt=0.0, description="near stars: excess in sigma")
    xray_baseline_frames: int = Field(
        20, ge=1, description="recent quiet frames whose X-ray-class share makes the baseline"
    )
    xray_baseline_min_frames: int = Field(
        3, ge=1, description="no baseline (and no net X-ray count) with fewer quiet frames"
    )
    xray_quiet_goes_xrsb: float = Field(
        1e-6, gt=0.0, description="frames with GOES XRS-B max at or above this (W/m2) flare"
    )
    hot_pixel_darks: int = Field(5, ge=2, description="recent darks for the hot-pixel map")
    hot_pixel_sigma: float = Field(6.0, gt=0.0, description="hot in every dark above this")

    def hit_params(self) -> dict[str, float]:
        """The detector parameters (measure.cosmics.HitParams fields)."""
        keys = ("seed_sigma", "grow_sigma", "psf_single_ratio", "psf_pair_ratio",
                "star_sharp_sigma")  # fmt: skip
        return {k: getattr(self, k) for k in keys}


class GoesSettings(BaseModel):
    """[goes]: where GOES space-weather files are cached and whether to fetch them."""

    model_config = ConfigDict(extra="forbid")

    cache_dir: Path | None = Field(None, description="GOES day cache; default data_root/goes")
    online: bool = Field(False, description="fetch missing days from NOAA (else cache only)")
    timeout_s: float = Field(20.0, gt=0.0, description="HTTP timeout")


class GaiaSettings(BaseModel):
    """[gaia]: the Gaia DR3 cache and client, the VIS-Gaia match and the ice-trend reference."""

    model_config = ConfigDict(extra="forbid")

    cache_dir: Path | None = Field(None, description="Gaia tile cache; default data_root/gaia")
    online: bool = Field(False, description="query VizieR / ESA TAP for missing tiles")
    timeout_s: float = Field(60.0, gt=0.0, description="HTTP timeout per query")
    cone_radius_deg: float = Field(
        0.55, gt=0.1, le=2.0, description="Gaia cone per pointing (FPA corners at 0.52 deg)"
    )
    match_radius_pix: float = Field(20.0, gt=0.5, description="VIS-Gaia pair tolerance")
    search_window_deg: float = Field(0.4, gt=0.0, description="largest pointing offset sought")
    colour_gmax: float = Field(19.5, gt=10.0, description="colour fit: Gaia G below this")
    min_stars_quadratic: int = Field(10, ge=4, description="fewer: FPA colour shape + offset")
    aperture_radius_px: float = Field(
        15.0, ge=0.0, description="aperture correction FLUX_AUTO -> total (0: VISQL, none)"
    )
    aperture_max_error: float = Field(
        0.004, gt=0.0, description="apply the measured aperture correction below this error"
    )
    aperture_correction_fallback: float = Field(
        1.02, gt=0.5, lt=1.5, description="else this typical FLUX_AUTO -> total correction"
    )
    blind_solve: bool = Field(
        True, description="astrometry.net solve-field when the header pointing does not match"
    )
    blind_min_matched: int = Field(
        10, ge=3, description="fewer stars matched on the header pointing: solve blind"
    )
    gains_file: Path | None = Field(
        None, description="relative quadrant gains ('EXT gain'); default: from the latest flat"
    )
    reference_start: date = Field(date(2024, 3, 14), description="ice reference period start")
    reference_end: date = Field(date(2024, 3, 22), description="ice reference period end (incl.)")
    selfcal_ra_deg: float = Field(268.75, description="self-calibration field centre RA")
    selfcal_dec_deg: float = Field(65.3, description="self-calibration field centre Dec")

    @model_validator(mode="after")
    def _check_reference(self) -> GaiaSettings:
        if self.reference_end < self.reference_start:
            raise ValueError("reference_end is before reference_start")
        return self


class Settings(BaseSettings):
    """Everything viskom needs to know, validated once at start."""

    model_config = SettingsConfigDict(
        env_prefix="VISKOM_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_root: Path = Field(Path("data"), description="folder with the database and products")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite file")
    raw_dir: Path | None = Field(None, description="where raw frames live; default data_root/raw")
    products_dir: Path | None = Field(None, description="product tree; default data_root/products")
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=512)
    executor: Literal["process", "serial"] = "process"
    frame_type_rules: Path | None = Field(None, description="TOML rules; default built-in")
    catalogue_engine: Literal["sep", "source-extractor"] = Field(
        "sep", description="source extraction: sep (library) or Debian's source-extractor"
    )
    detector_health: DetectorHealthSettings = Field(default_factory=DetectorHealthSettings)
    psf: PsfSettings = Field(default_factory=PsfSettings)
    iq: IQSettings = Field(default_factory=IQSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    goes: GoesSettings = Field(default_factory=GoesSettings)
    gaia: GaiaSettings = Field(default_factory=GaiaSettings)
    config_file: Path | None = Field(None, exclude=True)

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        if v is not None and "://" not in v:
            raise ValueError("must be a SQLAlchemy URL such as sqlite:///path/viskom.db")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _TomlSource(settings_cls)

    # -- derived paths ------------------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        return self.config_file.parent if self.config_file else Path.cwd()

    def _resolve(self, p: Path) -> Path:
        p = p.expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def data_path(self) -> Path:
        return self._resolve(self.data_root)

    @property
    def raw_path(self) -> Path:
        return self._resolve(self.raw_dir) if self.raw_dir else self.data_path / "raw"

    @property
    def products_path(self) -> Path:
        return (
            self._resolve(self.products_dir) if self.products_dir else self.data_path / "products"
        )

    @property
    def goes_cache_path(self) -> Path:
        """The GOES day cache (downloaded NOAA files)."""
        return (
            self._resolve(self.goes.cache_dir) if self.goes.cache_dir else self.data_path / "goes"
        )

    @property
    def gaia_cache_path(self) -> Path:
        """The Gaia DR3 tile cache."""
        return (
            self._resolve(self.gaia.cache_dir) if self.gaia.cache_dir else self.data_path / "gaia"
        )

    @property
    def gaia_gains_path(self) -> Path | None:
        """The configured relative-gain table, if any."""
        return self._resolve(self.gaia.gains_file) if self.gaia.gains_file else None

    @property
    def rules_path(self) -> Path | None:
        return self._resolve(self.frame_type_rules) if self.frame_type_rules else None

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_path / 'viskom.db'}"


class _TomlSource(PydanticBaseSettingsSource):
    """The parsed viskom.toml of the current load (lowest priority)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_toml_data.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_toml_data.get() or {})


def find_config_file(explicit: str | Path | None = None, start: Path | None = None) -> Path | None:
    """The settings file to use: explicit, else $VISKOM_CONFIG, else viskom.toml upwards."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get("VISKOM_CONFIG")
    if env:
        return Path(env).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def load_settings(config_file: str | Path | None = None, *, required: bool = True) -> Settings:
    """Find, read and validate the settings; ConfigError with a clear message if unusable."""
    path = find_config_file(config_file)
    data: dict[str, Any] = {}
    if path is None:
        if required:
            raise ConfigError(
                f"no {CONFIG_FILE_NAME} found here or in any parent folder; create one with "
                "`viskom init DIR` (or `viskom demo DIR`), or pass --config FILE"
            )
    else:
        if not path.is_file():
            raise ConfigError(f"settings file {path} does not exist")
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    token = _toml_data.set(data)
    try:
        return Settings(config_file=path)
    except ValidationError as exc:
        where = str(path) if path else "settings"
        lines = []
        for err in exc.errors():
            key = ".".join(str(x) for x in err["loc"])
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  {key}: {err['msg']}{shown}")
        raise ConfigError(f"{where}: invalid settings\n" + "\n".join(lines)) from None
    finally:
        _toml_data.reset(token)


DEFAULT_CONFIG_TEXT = """\
# viskom settings. Every key can be overridden by an environment variable VISKOM_<KEY>
# (nested keys: VISKOM_DETECTOR_HEALTH__HOT_PIXEL_SIGMA=8). Relative paths are relative
# to this file's folder.

# Folder that holds the database (SQLite by default) and the product tree.
data_root = "data"

# SQLAlchemy URL of the database. Default: a SQLite file data_root/viskom.db.
# For several machines use PostgreSQL, e.g.
# database_url = "postgresql+psycopg://viskom@dbhost:5432/viskom"

# Where raw LE1 frames are stored (fetch writes here). Default: data_root/raw
# raw_dir = "data/raw"

# Where products (catalogues, plots, pages) are written. Default: data_root/products
# products_dir = "data/products"

# Parallel workers for `viskom run` (exposures are processed in parallel).
# workers = 2

# "process" (a local process pool) or "serial" (one process, easiest to debug).
executor = "process"

# Source catalogues: "sep" (SExtractor's algorithms as a library, VISQL's settings; about
# twice as fast on two cores) or "source-extractor" (Debian's program, VISQL's configuration).
catalogue_engine = "sep"

# Frame-type rules (TOML). Default: the built-in rules (viskom/le1/frame_types.toml).
# frame_type_rules = "frame_types.toml"

[detector_health]
bias_clip_sigma = 3.0        # sigma clipping of prescan/overscan levels
noise_clip_sigma = 4.0       # sigma clipping of the overscan for read noise
hot_pixel_sigma = 10.0       # a hot pixel is above the image median + N robust sigma
flat_block_px = 32           # block size (px) for the flat's large-scale nonuniformity
geometry_threshold_adu = 5.0 # bias-only strips brighter than their mirror by this: flagged

[psf]
weight_sigma_px = 2.5        # Gaussian weight of the moments (VISQL: 2.5 px)
stamp_half_size_px = 14      # 29 x 29 stamps
edge_margin_px = 100         # stars closer than this to the quadrant array's edge are skipped
selection = "adaptive"       # "adaptive": the stellar locus measured on the frame;
                             # "visql": VISQL's chimney grid and one-decade star box
min_snr = 100.0              # stars have FLUX_AUTO / FLUXERR_AUTO >= this
locus_window = 0.1           # widest relative radius window of the locus search (VISQL: 0.1)
blend_tolerance = 0.001      # reject stars a neighbour adds more than this to (weighted flux)
bmin_px = 1.3                # "visql" only: B_IMAGE above this (VISQL's bmin)
nominal_exptime_s = 560.52   # "visql" only: the exposure time of VISQL's flux grid

[iq]
# Reference of the image-quality score (Mahalanobis distance in R2, e1, e2). Defaults:
# VISQL's, calibrated on 2023-09-20..23. Replace all seven numbers for a new period.
name = "VISQL 2023-09-20..23"
r2m = 1.9233812949640285
e1m = -0.023129496402877696
e2m = 0.002733812949640288
cov00 = 0.0005422666041080192
cov01 = -0.00011841403399019925
cov11 = 4.4881659889479756e-05
vare2 = 5.332022152062523e-06
ok_below = 27.0              # score below this: OK
reject_above = 1000.0        # score above this: rejected

[events]
# Particle hits (cosmic rays, X-ray events, protons); see viskom.measure.cosmics.
seed_sigma = 5.0             # a hit's seed pixels are this many sky sigma above the sky
grow_sigma = 2.5             # hits grow into neighbours above this
xray_baseline_frames = 20    # X-ray baseline: the recent quiet frames it is measured on
xray_baseline_min_frames = 3 # fewer quiet frames: no baseline, no net xray_events yet
xray_quiet_goes_xrsb = 1e-6  # frames with GOES XRS-B max >= this (C1) are not quiet
hot_pixel_darks = 5          # the hot-pixel map uses the most recent N darks

[goes]
# GOES X-ray and proton day files (NOAA NCEI), cached in data_root/goes by default.
online = true                # fetch missing days; false: work from the cache only
# cache_dir = "data/goes"

[gaia]
# Gaia DR3 (VizieR I/355/gaiadr3, ESA TAP as fallback), cached as HEALPix tiles.
online = true                # query missing tiles; false: work from the cache only
# cache_dir = "data/gaia"
# gains_file = "relative_gains.txt"  # 'EXT gain' per quadrant; default: from the latest flat
reference_start = 2024-03-14 # ice reference period (just after a decontamination)
reference_end = 2024-03-22
"""


def write_default_config(folder: Path, overwrite: bool = False) -> Path:
    """Write a commented default viskom.toml into `folder` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CONFIG_FILE_NAME
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists already (use --force to overwrite)")
    path.write_text(DEFAULT_CONFIG_TEXT)
    return path
