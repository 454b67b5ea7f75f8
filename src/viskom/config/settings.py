"""The settings model (pydantic) and how it is read, written and rendered; `viskom.config`
re-exports every name of it (see its docstring for where settings come from)."""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
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

from viskom.config import CONFIG_FILE_NAME, ConfigError, find_config_file, retry_backoff_s
from viskom.config.monitors import (  # the sections of the edges, re-exported here
    VISQL_ZOOMS as VISQL_ZOOMS,
)
from viskom.config.monitors import AlertSettings, ArchiveSettings, ImagesSettings, SiteSettings
from viskom.config.monitors import BandSettings as BandSettings

_toml_data: ContextVar[dict[str, Any] | None] = ContextVar("_toml_data", default=None)


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
    name: str = Field("VISQL 2023-09-20..23", description="the reference's name")
    r2m: float = Field(1.9233812949640285, description="reference R2 [px2]")
    e1m: float = Field(-0.023129496402877696, description="reference e1")
    e2m: float = Field(0.002733812949640288, description="reference e2")
    cov00: float = Field(0.0005422666041080192, description="covariance R2-R2")
    cov01: float = Field(-0.00011841403399019925, description="covariance R2-e1")
    cov11: float = Field(4.4881659889479756e-05, description="covariance e1-e1")
    vare2: float = Field(5.332022152062523e-06, description="variance of e2")
    ok_below: float = Field(27.0, gt=0.0, description="score below this: OK")
    reject_above: float = Field(1000.0, gt=0.0, description="score above this: rejected")

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


class GoesSettings(BaseModel):
    """[goes]: where GOES space-weather files are cached and whether to fetch them."""

    model_config = ConfigDict(extra="forbid")

    cache_dir: Path | None = Field(
        None, description="GOES day cache (default: data_root/goes)", examples=["data/goes"]
    )
    online: bool = Field(
        False, description="true: fetch missing days from NOAA; false: the cache only"
    )
    timeout_s: float = Field(20.0, gt=0.0, description="HTTP timeout")
    retry_after_s: float = Field(
        600.0,
        ge=0.0,
        description="after a failed call the service is not asked again, by any exposure in "
        "any worker, for this long (one failed probe per run, not timeouts per exposure)",
    )


class GaiaSettings(BaseModel):
    """[gaia]: the Gaia DR3 cache and client, the VIS-Gaia match and the ice-trend reference."""

    model_config = ConfigDict(extra="forbid")

    cache_dir: Path | None = Field(
        None, description="Gaia tile cache (default: data_root/gaia)", examples=["data/gaia"]
    )
    online: bool = Field(
        False, description="true: query VizieR / ESA TAP for missing tiles; false: cache only"
    )
    timeout_s: float = Field(60.0, gt=0.0, description="HTTP timeout per query")
    retry_after_s: float = Field(
        600.0,
        ge=0.0,
        description="after a failed call the service is not asked again, by any exposure in "
        "any worker, for this long (one failed probe per run, not timeouts per exposure)",
    )
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
        None,
        description="relative quadrant gains ('EXT gain' lines; default: from the latest flat)",
        examples=["relative_gains.txt"],
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


class RunSettings(BaseModel):
    """[run]: how runs share one store (claims under a lease) and retry transient failures."""

    model_config = ConfigDict(extra="forbid")

    lease_s: float = Field(
        120.0, ge=1.0, description="a claimed work unit's lease; its holder renews it every third"
    )
    retry_base_s: float = Field(
        300.0, ge=0.0, description="wait before a transient failure is retried; doubles per try"
    )
    retry_max_s: float = Field(
        21600.0, ge=0.0, description="longest wait between two tries of a transient failure"
    )
    claim_wait_s: float = Field(
        300.0, ge=0.0, description="wait at most this for calibrations or period products "
        "that another run is making",
    )  # fmt: skip
    period_every_s: float = Field(
        0.0, ge=0.0, description="make the month products (tables, plots, ice trend) at most "
        "this often: 0 after every run that measured something; e.g. 1800 for `viskom watch` "
        "at the survey's cadence, the months measured meanwhile wait (said by `viskom run` and "
        "the watch log) and are made by the first run after that",
    )  # fmt: skip

    def retry_wait_s(self, attempts: int) -> float:
        """Seconds before the next try after `attempts` consecutive transient failures."""
        return retry_backoff_s(attempts, self.retry_base_s, self.retry_max_s)


class Settings(BaseSettings):
    """Everything viskom needs to know, validated once at start."""

    model_config = SettingsConfigDict(
        env_prefix="VISKOM_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_root: Path = Field(Path("data"), description="folder with the database and products")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL (default: the SQLite file data_root/viskom.db)",
        examples=["postgresql+psycopg://viskom@dbhost:5432/viskom"],
    )
    raw_dir: Path | None = Field(
        None, description="raw LE1 frames (default: data_root/raw)", examples=["data/raw"]
    )
    products_dir: Path | None = Field(
        None,
        description="the product tree, inside data_root (default: data_root/products)",
        examples=["data/products"],
    )
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=512,
        description="parallel workers of `viskom run` (default: the number of CPUs)",
    )
    executor: Literal["process", "serial", "dask"] = Field(
        "process",
        description="process: a local process pool; serial: one process (debugging); dask: a "
        "Dask cluster (a LocalCluster of `workers` processes, or `scheduler`)",
    )
    scheduler: str | None = Field(
        None,
        description="executor dask: the scheduler of an existing cluster (default: a LocalCluster)",
        examples=["tcp://dask-scheduler:8786"],
    )
    frame_type_rules: Path | None = Field(
        None,
        description="frame-type rules (default: the built-in viskom/le1/frame_types.toml)",
        examples=["frame_types.toml"],
    )
    catalogue_engine: Literal["sep", "source-extractor"] = Field(
        "sep", description="source extraction: sep (library) or Debian's source-extractor"
    )
    catalogue_depth: Literal["full", "quicklook"] = Field(
        "full",
        description="full: VISQL's 1.5 sigma catalogue (every source, particle hits too); "
        "quicklook: the bright sources the PSF, hit guards and Gaia need (20 sigma, 8 px), "
        "2.3x faster on a full frame (README, Performance)",
    )
    detector_health: DetectorHealthSettings = Field(default_factory=DetectorHealthSettings)
    psf: PsfSettings = Field(default_factory=PsfSettings)
    iq: IQSettings = Field(default_factory=IQSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    images: ImagesSettings = Field(default_factory=ImagesSettings)
    goes: GoesSettings = Field(default_factory=GoesSettings)
    gaia: GaiaSettings = Field(default_factory=GaiaSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    site: SiteSettings = Field(default_factory=SiteSettings)
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)
    config_file: Path | None = Field(None, exclude=True)

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        if v is not None and "://" not in v:
            raise ValueError("must be a SQLAlchemy URL such as sqlite:///path/viskom.db")
        return v

    @model_validator(mode="after")
    def _products_inside_data_root(self) -> Settings:
        try:
            self.products_path.resolve().relative_to(self.data_path.resolve())
        except ValueError:
            raise ValueError(
                f"products_dir {self.products_path} must be inside data_root {self.data_path}: "
                "product files are recorded relative to it"
            ) from None
        return self

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
    def move_path(self) -> Path | None:
        """The second folder that measured old raw files move to, if any."""
        return self._resolve(self.archive.move_to) if self.archive.move_to else None

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


_TEMPLATE_HEADER = """\
# viskom settings: every key with its default, generated from viskom's settings model
# (viskom.config.Settings), so this file and the code cannot disagree. Every key can be
# overridden by an environment variable VISKOM_<KEY> (nested keys:
# VISKOM_DETECTOR_HEALTH__HOT_PIXEL_SIGMA=8). Relative paths are relative to this file's
# folder. A commented key is unset: its comment says what applies, its value is an example.
"""


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_value(value: Any) -> str:
    """A default as TOML text (lists, tables and settings models inline, on one line)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_defaults=True)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = [
            f"{k if _BARE_KEY.match(str(k)) else json.dumps(str(k))} = {_toml_value(v)}"
            for k, v in value.items()
            if v is not None  # TOML has no null: an unset key is the default
        ]
        return "{ " + ", ".join(items) + " }"
    return json.dumps(str(value))


def _field_lines(name: str, field: Any, value: Any, explicit: bool) -> list[str]:
    """`key = value  # description` (commented out with an example when unset)."""
    text = field.description or ""
    if value is None or (field.default_factory is not None and not explicit):
        shown = value if value is not None else (field.examples or [""])[0]
        return [f"# {name} = {_toml_value(shown)}   # {text}"]
    line = f"{name} = {_toml_value(value)}"
    return [f"{line:<40} # {text}" if text else line]


def render_default_config(overrides: Mapping[str, Any] | None = None) -> str:
    """The commented viskom.toml of the defaults (`overrides`: {"gaia": {"online": True}}
    or {"workers": 2} set those keys instead); loading it gives `Settings()` (tested)."""
    overrides = dict(overrides or {})
    lines = [_TEMPLATE_HEADER]
    sections: list[tuple[str, Any]] = []
    for name, field in Settings.model_fields.items():
        if name == "config_file":
            continue
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            sections.append((name, model))
            continue
        explicit = name in overrides
        value = overrides[name] if explicit else field.get_default(call_default_factory=True)
        lines += _field_lines(name, field, value, explicit)
    for name, model in sections:
        doc = (model.__doc__ or "").strip().splitlines()[0]
        lines += ["", f"[{name}]", f"# {doc}"]
        given = overrides.get(name, {})
        for key, field in model.model_fields.items():
            explicit = key in given
            value = given[key] if explicit else field.get_default(call_default_factory=True)
            lines += _field_lines(key, field, value, explicit)
    return "\n".join(lines) + "\n"


def write_default_config(
    folder: Path, overwrite: bool = False, overrides: Mapping[str, Any] | None = None
) -> Path:
    """Write a commented default viskom.toml (see `render_default_config`) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CONFIG_FILE_NAME
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists already (use --force to overwrite)")
    path.write_text(render_default_config(overrides))
    return path
