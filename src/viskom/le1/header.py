"""Typed, validated models of the LE1 primary and quadrant-extension headers (VIS-REFERENCE 2).

Every keyword a monitor uses is checked for type and range when the header is read. A bad
value parses as None (never as a default) and is kept as a :class:`HeaderProblem`, so that
registration can record it as a warning on the exposure and the stages that need the keyword
can fail (or leave a quadrant out) with that reason.

What counts as a problem:

- primary: EXPTIME (a number, 0 <= x < 1e5 s), DATE-OBS (ISO date and time, years
  2000-2099), MJD-OBS (a number, 40000-100000, within 5 s of DATE-OBS), RA (0-360 deg),
  DEC (-90..90 deg), PA (finite; wrapped into [0, 360)), IMG_CAT/IMG_T1/IMG_T2 (strings).
  Missing keywords are problems only where the frame type's monitors need them
  (:data:`REQUIRED_PRIMARY`): DATE-OBS for every type, EXPTIME for SCIENCE and DARK (rates,
  dark current), RA/DEC for SCIENCE (the Gaia field). A missing PA is legitimate (the gaia
  stage solves blind); a missing EXPTIME on a BIAS, FLAT or CHARGE frame is too.
- quadrant extensions: GAIN (0.5-20 e-/ADU; missing is a problem: every frame type converts
  to electrons), RDNOISE (0-100 e-), SATURATE (0 < x <= the largest value BITPIX/BZERO/BSCALE
  can store), PRESCANX/OVRSCANX (integers, 0 <= x < NAXIS1, leaving image columns),
  OVRSCANY (integer, 0 <= x < NAXIS2). Missing geometry keywords fall back to the nominal
  widths, which the detector-health stage checks against the pixels (`geometry_mismatch`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

#: Bump when the checks change: registration re-reads exposures checked by an older version.
HEADER_CHECK_VERSION = 1

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

#: Primary keywords whose absence is a problem, per frame type (what its monitors need).
REQUIRED_PRIMARY: dict[str, tuple[str, ...]] = {
    "SCIENCE": ("DATE-OBS", "EXPTIME", "RA", "DEC"),
    "DARK": ("DATE-OBS", "EXPTIME"),
    "FLAT": ("DATE-OBS",),
    "BIAS": ("DATE-OBS",),
    "CHARGE": ("DATE-OBS",),
    "UNKNOWN": (),
}

#: Quadrant keywords that place the prescan, image and overscan regions.
GEOMETRY_KEYWORDS = ("PRESCANX", "OVRSCANX", "OVRSCANY")
#: Quadrant keywords a pixel measurement in electrons or of saturation depends on.
QUADRANT_KEYWORDS = (*GEOMETRY_KEYWORDS, "GAIN", "SATURATE")

EXPTIME_MAX_S = 1e5  # longer than any VIS exposure by a factor 100
MJD_RANGE = (40000.0, 100000.0)  # 1968-2132
MJD_TOLERANCE_S = 5.0  # MJD-OBS written with 5 decimals still agrees with DATE-OBS
DATE_YEARS = (2000, 2099)
GAIN_RANGE = (0.5, 20.0)  # e-/ADU; VIS quadrants are near 3.4
RDNOISE_MAX_E = 100.0


@dataclass(frozen=True)
class HeaderProblem:
    """One unusable header value: keyword, extension (None: primary), value as text, reason.

    `value` is None when the keyword is missing; `reason` completes a sentence after the
    keyword and value, e.g. "is not a number" or "is missing".
    """

    keyword: str
    extname: str | None
    value: str | None
    reason: str

    @property
    def where(self) -> str:
        """'primary header' or 'extension R-C.Q'."""
        return "primary header" if self.extname is None else f"extension {self.extname}"

    def describe(self) -> str:
        """One line, e.g. "EXPTIME = 'abc' is not a number (primary header)"."""
        shown = self.keyword if self.value is None else f"{self.keyword} = {self.value}"
        return f"{shown} {self.reason} ({self.where})"

    def as_dict(self) -> dict[str, str | None]:
        """JSON form, as stored on the exposure."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeaderProblem:
        """Inverse of :meth:`as_dict`."""
        return cls(
            keyword=str(data["keyword"]),
            extname=None if data.get("extname") is None else str(data["extname"]),
            value=None if data.get("value") is None else str(data["value"]),
            reason=str(data["reason"]),
        )


def value_text(value: Any) -> str:
    """A header value as FITS shows it: strings quoted, logicals T/F."""
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def _is_blank(value: Any) -> bool:
    """No usable value: absent, astropy's Undefined (a card without value), or blank text."""
    if value is None or type(value).__name__ == "Undefined":
        return True
    return isinstance(value, str) and not value.strip()


def _as_number(value: Any) -> float | None:
    """A real number from an int, float or numeric string; None for anything else."""
    if isinstance(value, bool | complex):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    try:
        return float(value)  # numpy scalars
    except (TypeError, ValueError):
        return None


def _interval(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    lo_text = "-inf" if lo is None else f"{lo:g}"
    hi_text = "inf" if hi is None else f"{hi:g}"
    return f"{left}{lo_text}, {hi_text}{right}"


class _Checker:
    """Reads keywords of one header, collecting a HeaderProblem for each unusable value."""

    def __init__(self, header: Mapping[str, Any], extname: str | None) -> None:
        self.header = header
        self.extname = extname
        self.problems: list[HeaderProblem] = []

    def raw(self, key: str) -> Any:
        value = self.header.get(key)
        return None if _is_blank(value) else value

    def bad(self, key: str, value: Any, reason: str) -> None:
        text = None if value is None else value_text(value)
        self.problems.append(HeaderProblem(key, self.extname, text, reason))

    def number(
        self,
        key: str,
        lo: float | None = None,
        hi: float | None = None,
        *,
        lo_open: bool = False,
        hi_open: bool = False,
        unit: str = "",
        required: bool = False,
    ) -> float | None:
        value = self.raw(key)
        if value is None:
            if required:
                self.bad(key, None, "is missing")
            return None
        x = _as_number(value)
        if x is None:
            self.bad(key, value, "is not a number")
            return None
        if not math.isfinite(x):
            self.bad(key, value, "is not finite")
            return None
        below = lo is not None and (x <= lo if lo_open else x < lo)
        above = hi is not None and (x >= hi if hi_open else x > hi)
        if below or above:
            self.bad(key, value, f"is outside {_interval(lo, hi, lo_open, hi_open)}{unit}")
            return None
        return x

    def integer(self, key: str, lo: int, hi_open: int) -> int | None:
        value = self.raw(key)
        if value is None:
            return None
        x = _as_number(value)
        if x is None or not math.isfinite(x) or x != math.floor(x):
            self.bad(key, value, "is not an integer")
            return None
        if not lo <= x < hi_open:
            self.bad(key, value, f"is outside [{lo}, {hi_open})")
            return None
        return int(x)

    def string(self, key: str) -> str | None:
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.bad(key, value, "is not a string")
            return None
        return value.strip()

    def date(self, key: str) -> datetime | None:
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.bad(key, value, "is not an ISO date and time (not a string)")
            return None
        dt = parse_date_obs(value)
        if dt is None:
            self.bad(key, value, "is not an ISO date and time")
            return None
        if not DATE_YEARS[0] <= dt.year <= DATE_YEARS[1]:
            self.bad(key, value, f"is outside the years {DATE_YEARS[0]}-{DATE_YEARS[1]}")
            return None
        return dt


def _get(header: Mapping[str, Any], key: str) -> Any:
    value = header.get(key)
    if _is_blank(value):
        return None
    return value.strip() if isinstance(value, str) else value


def _float(header: Mapping[str, Any], key: str) -> float | None:
    """Lenient: for keywords no monitor uses (SAA...), None when not a finite number."""
    x = _as_number(_get(header, key))
    return x if x is not None and math.isfinite(x) else None


def _int(header: Mapping[str, Any], key: str) -> int | None:
    value = _float(header, key)
    return None if value is None else int(value)


def _str(header: Mapping[str, Any], key: str) -> str | None:
    value = _get(header, key)
    return None if value is None else str(value)


def parse_date_obs(value: Any) -> datetime | None:
    """DATE-OBS (ISO, UTC) as a timezone-aware datetime, or None if absent or unparseable."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1]
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _mjd_of(dt: datetime) -> float:
    """Modified Julian Date (UTC, no leap seconds) of an aware datetime."""
    epoch = datetime(1858, 11, 17, tzinfo=UTC)
    return (dt - epoch).total_seconds() / 86400.0


#: Primary keyword -> PrimaryHeader attribute, for the keywords a stage may declare it needs.
PRIMARY_ATTRIBUTES: dict[str, str] = {
    "DATE-OBS": "date_obs",
    "MJD-OBS": "mjd_obs",
    "EXPTIME": "exptime",
    "OBS_ID": "obs_id",
    "OBSMODE": "obs_mode",
    "IMG_CAT": "img_cat",
    "IMG_T1": "img_t1",
    "IMG_T2": "img_t2",
    "RA": "ra",
    "DEC": "dec",
    "PA": "pa",
    "SAA": "saa",
}


@dataclass(frozen=True)
class PrimaryHeader:
    """Exposure metadata from the primary HDU; `problems` lists the values found unusable."""

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
    problems: tuple[HeaderProblem, ...] = field(default=())

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> PrimaryHeader:
        """Parse and validate; bad values become None and are listed in `problems`."""
        summary = {k: _json_value(header.get(k)) for k in PRIMARY_KEYWORDS if k in header}
        c = _Checker(header, None)
        date_obs = c.date("DATE-OBS")
        mjd_obs = c.number("MJD-OBS", *MJD_RANGE)
        if mjd_obs is not None and date_obs is not None:
            off_s = (mjd_obs - _mjd_of(date_obs)) * 86400.0
            if abs(off_s) > MJD_TOLERANCE_S:
                c.bad("MJD-OBS", c.raw("MJD-OBS"), f"disagrees with DATE-OBS by {off_s:.0f} s")
                mjd_obs = None
        exptime = c.number("EXPTIME", 0.0, EXPTIME_MAX_S, hi_open=True, unit=" s")
        ra = c.number("RA", 0.0, 360.0, unit=" deg")
        dec = c.number("DEC", -90.0, 90.0, unit=" deg")
        pa = c.number("PA", unit=" deg")
        return cls(
            date_obs=date_obs,
            mjd_obs=mjd_obs,
            exptime=exptime,
            obs_id=_str(header, "OBS_ID"),
            dither=_int(header, "DITHOBS"),
            expnum=_int(header, "EXPNUM"),
            obs_mode=_str(header, "OBSMODE"),
            img_cat=c.string("IMG_CAT"),
            img_t1=c.string("IMG_T1"),
            img_t2=c.string("IMG_T2"),
            ra=ra,
            dec=dec,
            pa=None if pa is None else pa % 360.0,
            saa=_float(header, "SAA"),
            summary=summary,
            problems=tuple(c.problems),
        )

    def problem(self, keyword: str) -> HeaderProblem | None:
        """The problem recorded for `keyword`, if its value was unusable."""
        return next((p for p in self.problems if p.keyword == keyword), None)

    def blocking_problem(self, keywords: Iterable[str]) -> HeaderProblem | None:
        """The first of `keywords` that is unusable or missing (a stage cannot run without it)."""
        for key in keywords:
            found = self.problem(key)
            if found is not None:
                return found
            attribute = PRIMARY_ATTRIBUTES.get(key)
            if attribute is None:
                raise KeyError(f"{key} is not a primary keyword viskom reads")
            if getattr(self, attribute) is None:
                return HeaderProblem(key, None, None, "is missing")
        return None

    def missing_for(self, frame_type: str | None) -> list[HeaderProblem]:
        """'is missing' problems for the keywords this frame type's monitors need."""
        needed = REQUIRED_PRIMARY.get((frame_type or "UNKNOWN").upper(), ())
        return [
            HeaderProblem(key, None, None, "is missing")
            for key in needed
            if self.problem(key) is None and getattr(self, PRIMARY_ATTRIBUTES[key]) is None
        ]


@dataclass(frozen=True)
class QuadrantHeader:
    """Per-quadrant keywords of an image extension; `problems` lists the unusable ones."""

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
    problems: tuple[HeaderProblem, ...] = field(default=())

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> QuadrantHeader:
        """Parse and validate; bad values become None and are listed in `problems`.

        The structural keywords (NAXIS1/2, BITPIX, BZERO, BSCALE) are read as they are:
        astropy has checked them, and `Le1Frame.problems` rejects a frame they make unusable.
        """
        extname = str(header.get("EXTNAME", "")).strip()
        naxis1 = int(header.get("NAXIS1", 0) or 0)
        naxis2 = int(header.get("NAXIS2", 0) or 0)
        bitpix = int(header.get("BITPIX", 0) or 0)
        bzero = float(header.get("BZERO", 0.0) or 0.0)
        bscale = float(header.get("BSCALE", 1.0) or 1.0)
        c = _Checker(header, extname or None)
        prescan_x = c.integer("PRESCANX", 0, max(naxis1, 1))
        overscan_x = c.integer("OVRSCANX", 0, max(naxis1, 1))
        overscan_y = c.integer("OVRSCANY", 0, max(naxis2, 1))
        if naxis1 > 0 and (prescan_x is not None or overscan_x is not None):
            from viskom.le1.geometry import DEFAULT_OVERSCAN_X, DEFAULT_PRESCAN_X  # numpy

            px = DEFAULT_PRESCAN_X if prescan_x is None else prescan_x
            ox = DEFAULT_OVERSCAN_X if overscan_x is None else overscan_x
            if naxis1 - px - ox < 1:
                key = "OVRSCANX" if overscan_x is not None else "PRESCANX"
                value = overscan_x if overscan_x is not None else prescan_x
                why = (
                    f"leaves no image columns (PRESCANX + OVRSCANX = {px + ox}, NAXIS1 = {naxis1})"
                )
                c.bad(key, value, why)
                prescan_x = overscan_x = None
        gain = c.number("GAIN", *GAIN_RANGE, unit=" e-/ADU", required=True)
        rdnoise = c.number("RDNOISE", 0.0, RDNOISE_MAX_E, unit=" e-")
        # the largest value the data can hold (BITPIX 8 is unsigned, 16/32/64 signed)
        largest_raw = 255 if bitpix == 8 else 2 ** (bitpix - 1) - 1
        largest = bzero + bscale * largest_raw if bitpix > 0 else None
        saturate = c.number("SATURATE", 0.0, largest, lo_open=True, unit=" ADU")
        return cls(
            extname=extname,
            naxis1=naxis1,
            naxis2=naxis2,
            bitpix=bitpix,
            bzero=bzero,
            bscale=bscale,
            prescan_x=prescan_x,
            overscan_x=overscan_x,
            overscan_y=overscan_y,
            gain_e_per_adu=gain,
            read_noise_e=rdnoise,
            saturate_adu=saturate,
            problems=tuple(c.problems),
        )

    def problems_with(self, keywords: Iterable[str]) -> tuple[HeaderProblem, ...]:
        """The problems of these keywords (e.g. QUADRANT_KEYWORDS) in this quadrant."""
        wanted = set(keywords)
        return tuple(p for p in self.problems if p.keyword in wanted)

    @property
    def geometry_problems(self) -> tuple[HeaderProblem, ...]:
        """Problems that leave the quadrant's regions unknown (it cannot be measured)."""
        return self.problems_with(GEOMETRY_KEYWORDS)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise_problems(problems: Iterable[HeaderProblem], max_units: int = 4) -> list[str]:
    """Problems as lines, those repeated over quadrants folded into one line each."""
    groups: dict[tuple[str, str | None, str], list[str | None]] = {}
    for p in problems:
        groups.setdefault((p.keyword, p.value, p.reason), []).append(p.extname)
    lines = []
    for (keyword, value, reason), where in groups.items():
        first = HeaderProblem(keyword, where[0], value, reason)
        if len(where) == 1:
            lines.append(first.describe())
            continue
        names = [w or "primary" for w in where]
        shown = ", ".join(names[:max_units]) + (" ..." if len(names) > max_units else "")
        head = keyword if value is None else f"{keyword} = {value}"
        lines.append(f"{head} {reason} ({len(names)} extensions: {shown})")
    return lines


def _json_value(value: Any) -> Any:
    if _is_blank(value) and value is not None and not isinstance(value, str):
        return None
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)
