"""Typed models of the LE1 primary and quadrant-extension headers (VIS-REFERENCE 2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

#: Primary keywords kept in the exposure's header summary.
PRIMARY_KEYWORDS = (
    "DATE-OBS",
    "MJD-OBS",
    "DATE-END",
    "EXPTIME",
    "OBS_ID",
    "DITHOBS",
    "PTGID",
    "EXPNUM",
    "FIELDID",
    "PLAN_ID",
    "OBSMODE",
    "IMG_CAT",
    "IMG_T1",
    "IMG_T2",
    "CI_STAT",
    "TP_STAT",
    "CUSTATUS",
    "CALBLKID",
    "CALBLKVR",
    "RA",
    "DEC",
    "PA",
    "SAA",
    "ALPHA",
)


def _get(header: Mapping[str, Any], key: str) -> Any:
    value = header.get(key)
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _float(header: Mapping[str, Any], key: str) -> float | None:
    value = _get(header, key)
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _int(header: Mapping[str, Any], key: str) -> int | None:
    value = _float(header, key)
    return None if value is None else int(value)


def _str(header: Mapping[str, Any], key: str) -> str | None:
    value = _get(header, key)
    return None if value is None else str(value)


def parse_date_obs(value: Any) -> datetime | None:
    """DATE-OBS (ISO, UTC) as a timezone-aware datetime, or None if absent or unparseable."""
    if not value:
        return None
    text = str(value).strip().rstrip("Z")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


@dataclass(frozen=True)
class PrimaryHeader:
    """Exposure metadata from the primary HDU."""

    date_obs: datetime | None
    mjd_obs: float | None
    exptime: float | None
    obs_id: str | None
    dither: int | None
    expnum: int | None
    obs_mode: str | None
    img_cat: str | None
    img_t1: str | None
    img_t2: str | None
    ra: float | None
    dec: float | None
    pa: float | None
    saa: float | None
    summary: dict[str, Any]

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> PrimaryHeader:
        summary = {k: _json_value(header.get(k)) for k in PRIMARY_KEYWORDS if k in header}
        return cls(
            date_obs=parse_date_obs(header.get("DATE-OBS")),
            mjd_obs=_float(header, "MJD-OBS"),
            exptime=_float(header, "EXPTIME"),
            obs_id=_str(header, "OBS_ID"),
            dither=_int(header, "DITHOBS"),
            expnum=_int(header, "EXPNUM"),
            obs_mode=_str(header, "OBSMODE"),
            img_cat=_str(header, "IMG_CAT"),
            img_t1=_str(header, "IMG_T1"),
            img_t2=_str(header, "IMG_T2"),
            ra=_float(header, "RA"),
            dec=_float(header, "DEC"),
            pa=_float(header, "PA"),
            saa=_float(header, "SAA"),
            summary=summary,
        )


@dataclass(frozen=True)
class QuadrantHeader:
    """Per-quadrant keywords of an image extension."""

    extname: str
    naxis1: int
    naxis2: int
    bitpix: int
    bzero: float
    bscale: float
    prescan_x: int | None
    overscan_x: int | None
    overscan_y: int | None
    gain_e_per_adu: float | None
    read_noise_e: float | None
    saturate_adu: float | None

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> QuadrantHeader:
        return cls(
            extname=str(header.get("EXTNAME", "")).strip(),
            naxis1=int(header.get("NAXIS1", 0) or 0),
            naxis2=int(header.get("NAXIS2", 0) or 0),
            bitpix=int(header.get("BITPIX", 0) or 0),
            bzero=float(header.get("BZERO", 0.0) or 0.0),
            bscale=float(header.get("BSCALE", 1.0) or 1.0),
            prescan_x=_int(header, "PRESCANX"),
            overscan_x=_int(header, "OVRSCANX"),
            overscan_y=_int(header, "OVRSCANY"),
            gain_e_per_adu=_float(header, "GAIN"),
            read_noise_e=_float(header, "RDNOISE"),
            saturate_adu=_float(header, "SATURATE"),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _json_value(value: Any) -> Any:
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)
