"""Settings sections of the monitor's edges: where frames come from (`[archive]`), the
pictures made of them (`[images]`) and the bands metrics should stay in (`[alerts]`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

#: VISQL's nine zoom centres in focal-plane pixels (`mkallthumbszooms`): t/c/l = top, centre,
#: lower row; l/c/r = column.
VISQL_ZOOMS: dict[str, tuple[float, float]] = {
    "ll": (2000, 2000), "cl": (2000, 15000), "tl": (2000, 25900),
    "lc": (12600, 2000), "cc": (12600, 15000), "tc": (12600, 25900),
    "lr": (23150, 2000), "cr": (23150, 15000), "tr": (23150, 25900),
}  # fmt: skip


class ImagesSettings(BaseModel):
    """[images]: focal-plane mosaics and full-resolution zooms of every frame (VISQL's png)."""

    model_config = ConfigDict(extra="forbid")

    bin: int = Field(
        25, ge=1, le=256, description="VIS pixels per mosaic pixel along each axis (VISQL: 25)"
    )
    layout: Literal["auto", "true", "compact"] = Field(
        "auto",
        description="true: quadrants where their WCS puts them; compact: packed in a 12x12 "
        "grid; auto: compact only for small quadrants (the simulator's small frames)",
    )
    stretch: Literal["zscale", "asinh"] = Field(
        "zscale", description="grey scale of the mosaic and zooms: zscale (ds9's) or asinh"
    )
    zoom_size: int = Field(900, ge=64, le=4096, description="zoom side, full-resolution pixels")
    zooms: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: dict(VISQL_ZOOMS),
        description="zoom centres in focal-plane pixels (VISQL's nine: _ll ... _tr)",
    )
    zoom_frame_types: list[str] = Field(
        default_factory=lambda: ["SCIENCE", "FLAT"],
        description="frame types that get the fixed zooms (VISQL: SCIENCE and FLAT)",
    )
    flagged_zooms: bool = Field(
        True,
        description="also zoom where the monitors point: worst IQ, densest cosmic rays, "
        "hottest quadrant",
    )
    blind_solve: bool = Field(
        True,
        description="solve each science mosaic blind with astrometry.net (VISQL's getastrom) "
        "and compare with the header pointing (true-layout mosaics only)",
    )
    blind_timeout_s: float = Field(
        60.0, gt=0, le=600, description="wall-clock limit of one mosaic's blind solve, s"
    )

    @field_validator("zooms")
    @classmethod
    def _zoom_names(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name in v:
            if not re.fullmatch(r"[a-z0-9]{1,12}", name):
                raise ValueError(f"zoom name {name!r}: 1-12 lower-case letters or digits")
        return v


class ArchiveSettings(BaseModel):
    """[archive]: where `viskom fetch` finds raw frames (credentials: ~/.netrc, or the
    environment variables EUCLID_ARCHIVE_USER and EUCLID_ARCHIVE_PASSWORD; never here)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["none", "eas", "public"] = Field(
        "none",
        description="none: no archive; eas: the consortium archive (VISQL's); public: ESA's "
        "Euclid science archive (public releases, through astroquery.esa.euclid)",
    )
    metadata_url: str = Field(
        "https://eas-dps-rest-ops.esac.esa.int/REST", description="EAS metadata service"
    )
    files_url: str = Field(
        "https://euclidsoc.esac.esa.int", description="where the raw frames are served"
    )
    public_url: str = Field(
        "https://eas.esac.esa.int/",
        description="kind public: the science archive's server (its TAP and data services)",
    )
    public_table: str = Field(
        "q1.raw_frame",
        description="kind public: the raw-frame table of the release (q1.raw_frame for Q1)",
    )
    public_release: str = Field(
        "sedm", description="kind public: the release (schema) the data service serves from"
    )
    days: int = Field(14, ge=1, description="default window: the last N days")
    connections: int = Field(4, ge=1, le=32, description="parallel downloads")
    timeout_s: float = Field(120.0, gt=0.0, description="HTTP timeout")
    retries: int = Field(
        4, ge=0, le=20, description="retries of a timeout or 5xx answer (waits 2, 4, 8... s)"
    )
    min_free_gb: float = Field(50.0, ge=0.0, description="stop fetching below this free space")
    move_to: Path | None = Field(
        None,
        description="a second folder: raw files older than move_after_days, once measured, "
        "are moved there (copied, verified, then removed); unset: nothing is moved",
        examples=["/mnt/second-disk/vis-raw"],
    )
    move_after_days: float = Field(
        30.0, gt=0.0, description="age (from DATE-OBS) after which a measured raw file moves"
    )


class BandSettings(BaseModel):
    """One alert band: where a metric should stay, fixed or learned from its own history."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field(description="a registered metric")
    frame_types: list[str] = Field(
        default_factory=list, description="frame types it applies to (empty: all)"
    )
    level: Literal["quadrant", "ccd", "fpa"] = Field(
        "fpa", description="the units it watches: every quadrant, every CCD or the focal plane"
    )
    low: float | None = Field(None, description="fixed band: the lowest good value")
    high: float | None = Field(None, description="fixed band: the highest good value")
    learned: bool = Field(
        False,
        description="learned band: rolling median +- k x 1.4826 MAD of the same frame type and "
        "exposure time over the last `days` (the point itself left out)",
    )
    days: float = Field(14.0, gt=0.0, description="learned band: history window (days)")
    k_warning: float = Field(3.0, gt=0.0, description="learned band: warning at k robust sigma")
    k_alarm: float = Field(5.0, gt=0.0, description="learned band: alarm at k robust sigma")
    min_points: int = Field(8, ge=3, description="learned band: history points needed")
    floor: float = Field(0.0, ge=0.0, description="learned band: smallest half-width (units)")
    consecutive: int = Field(
        1, ge=1, description="an alarm only after this many breaches in a row (warnings before)"
    )

    @field_validator("metric")
    @classmethod
    def _registered(cls, v: str) -> str:
        from viskom.metrics import METRICS, unknown_message

        if v not in METRICS:
            raise ValueError(unknown_message("metric", v, METRICS))
        return v

    @model_validator(mode="after")
    def _some_band(self) -> BandSettings:
        if not self.learned and self.low is None and self.high is None:
            raise ValueError(f"band of {self.metric}: give low and/or high, or learned = true")
        return self


def _default_bands() -> list[BandSettings]:
    """The VIS team's own quick-look plan (read noise <= 4.5 e- in each of the 144 quadrants,
    bias stable within 2 ADU) and learned bands for the other key metrics."""
    learned = {"learned": True}
    return [
        BandSettings(metric="read_noise_e", level="quadrant", high=4.5),
        BandSettings(metric="bias_overscan_adu", level="quadrant", floor=2.0, **learned),
        BandSettings(metric="dark_current_e_per_s", frame_types=["DARK"], **learned),
        BandSettings(metric="psf_r2", frame_types=["SCIENCE"], **learned),
        BandSettings(metric="iq_score", frame_types=["SCIENCE"], high=27.0),  # VISQL's OK
        BandSettings(metric="cr_particles_per_cm2_s", frame_types=["SCIENCE", "DARK"], **learned),
        BandSettings(metric="xray_events", frame_types=["SCIENCE", "DARK"], **learned),
        BandSettings(metric="vis_over_gaia_075", frame_types=["SCIENCE"], **learned),
    ]


#: Quality outcomes that are alarms at once: the frame itself is damaged.
DEFAULT_ALARM_OUTCOMES = ("missing_quadrant", "unreadable_quadrant", "no_quadrants")
#: Quality outcomes that say how viskom was set up, not how the camera is: no alert.
DEFAULT_IGNORED_OUTCOMES = ("no_sky_layout", "blind_solve_off")
#: Keys refused in [alerts]: SMTP credentials come from the environment only.
SMTP_CREDENTIAL_KEYS = ("smtp_user", "smtp_password", "smtp_username", "smtp_pass")


def _names(v: object) -> object:
    """A list of names also given as one comma-separated string ("a@x.org, b@y.org"; the
    brackets and quotes of the commented default in viskom.toml, "['a', 'b']", are dropped)."""
    if isinstance(v, str):
        parts = (part.strip().strip("[]'\"").strip() for part in v.split(","))
        return [part for part in parts if part]
    return v


class AlertSettings(BaseModel):
    """[alerts]: the bands metrics should stay in, and where new alarms are sent."""

    model_config = ConfigDict(extra="forbid")

    bands: list[BandSettings] = Field(default_factory=_default_bands)
    enabled: bool = Field(
        True, description="evaluate the bands and quality outcomes after every run"
    )
    alarm_outcomes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ALARM_OUTCOMES),
        description="quality outcome codes that are alarms at once (other outcomes: warnings)",
    )
    ignored_outcomes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_IGNORED_OUTCOMES),
        description="quality outcome codes that raise no alert at all (default: the mosaic "
        "astrometry's small-frame and switched-off outcomes)",
    )
    site_url: str | None = Field(
        None,
        description="the dashboard's address: messages link {site_url}/exposures/NAME.html",
        examples=["https://vis-ql.example.org"],
    )
    webhook_url: str | None = Field(
        None,
        description="new alarms as one JSON POST per evaluation (Mattermost/Slack 'text' + "
        "'alarms'); unset: no webhook",
        examples=["https://chat.example.org/hooks/xxxx"],
    )
    timeout_s: float = Field(20.0, gt=0.0, description="webhook and SMTP timeout")
    retries: int = Field(
        2, ge=0, le=10, description="webhook retries of a timeout or 5xx answer (then: next run)"
    )
    smtp_host: str | None = Field(
        None,
        description="new alarms by e-mail through this server (user and password only from "
        "VISKOM_SMTP_USER / VISKOM_SMTP_PASSWORD); unset: no e-mail",
        examples=["smtp.example.org"],
    )
    smtp_port: int = Field(587, ge=1, le=65535, description="SMTP port")
    smtp_starttls: bool = Field(True, description="STARTTLS before logging in and sending")
    smtp_from: str | None = Field(
        None, description="sender address of alarm mails", examples=["viskom@example.org"]
    )
    smtp_to: list[str] = Field(
        default_factory=list, description="recipients of alarm mails (a list, or 'a, b')"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, data: object) -> object:
        if isinstance(data, dict):
            found = sorted(k for k in data if str(k).lower() in SMTP_CREDENTIAL_KEYS)
            if found:
                raise ValueError(
                    f"{', '.join(found)}: SMTP credentials never go in the settings file; set "
                    "VISKOM_SMTP_USER and VISKOM_SMTP_PASSWORD in the environment"
                )
        return data

    @field_validator("smtp_to", "alarm_outcomes", "ignored_outcomes", mode="before")
    @classmethod
    def _split_names(cls, v: object) -> object:
        return _names(v)

    @field_validator("site_url", "webhook_url")
    @classmethod
    def _http_url(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None or not v.strip():
            return None
        v = v.strip()
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("not an http(s):// address")
        return v.rstrip("/") if info.field_name == "site_url" else v

    @model_validator(mode="after")
    def _mail_complete(self) -> AlertSettings:
        if self.smtp_host and (not self.smtp_from or not self.smtp_to):
            raise ValueError("smtp_host is set: give smtp_from and smtp_to too")
        return self

    @property
    def channels(self) -> tuple[str, ...]:
        """Where new alarms go: 'webhook' and/or 'email' (empty: nowhere)."""
        return (("webhook",) if self.webhook_url else ()) + (("email",) if self.smtp_host else ())

    def fixed_band(
        self, metric: str, frame_type: str | None = None
    ) -> tuple[float | None, float | None] | None:
        """The fixed (low, high) of `metric` for a frame type, if a band sets one."""
        for band in self.bands:
            kinds = {t.upper() for t in band.frame_types}
            if band.metric != metric or (kinds and frame_type and frame_type.upper() not in kinds):
                continue
            if band.low is not None or band.high is not None:
                return band.low, band.high
        return None


class SiteSettings(BaseModel):
    """[site]: the dashboard under <data root>/site (`viskom site`, `viskom serve`)."""

    model_config = ConfigDict(extra="forbid")

    update: bool = Field(
        True, description="bring the dashboard up to date after every run and watch cycle"
    )
