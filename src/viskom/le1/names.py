"""Exposure identity from VIS raw file names: one regular expression per naming convention.

Three conventions exist (VIS-REFERENCE 3): the archive's LE1 product names, the instrument
workstation (IWS) names that VISQL uses, and the public Q1 release names. Names are parsed
by pattern, never by character position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

FITS_SUFFIXES = (".fits.gz", ".fits.fz", ".fits", ".fit.gz", ".fit")

_ARCHIVE_RE = re.compile(
    r"^EUC_LE1_VIS-(?P<obs>\d+)-(?P<dither>\d+)-(?P<letter>[A-Z])_"
    r"(?P<ts>\d{8}T\d{6}(?:\.\d+)?)Z_(?P<index>\d{2})_01_01\.00(?:_EUCLIDSOC)?$"
)
_Q1_RE = re.compile(
    r"^EUC_LE1_VIS-(?P<obs>\d+)-(?P<dither>\d+)-D_(?P<ts>\d{8}T\d{6}(?:\.\d+)?)Z(?P<rest>.*)$"
)
_IWS_RE = re.compile(
    r"^C_(?P<date>\d{8})_(?P<time>\d{6})_(?P<letter>[A-Z])_(?P<hex>[0-9A-Fa-f]{8})"
    r"\.VIS\.bin_(?P<index>\d{2})_(?P<sub>\d{2})$"
)


@dataclass(frozen=True)
class ExposureName:
    """What a file name says about its exposure; fields the convention lacks are None."""

    name: str
    convention: str  # "archive", "q1", "iws" or "unknown"
    timestamp: datetime | None = None
    obs_id: int | None = None
    dither: int | None = None
    exposure_index: int | None = None


def exposure_name(path: str | Path) -> str:
    """The exposure's name: the file name without its FITS suffix (`.fits`, `.fits.gz`...)."""
    base = Path(path).name
    for suffix in FITS_SUFFIXES:
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def _parse_ts(ts: str) -> datetime:
    fmt = "%Y%m%dT%H%M%S.%f" if "." in ts else "%Y%m%dT%H%M%S"
    return datetime.strptime(ts, fmt).replace(tzinfo=UTC)


def parse_file_name(path: str | Path) -> ExposureName:
    """Identify the naming convention of a raw file and extract what it encodes."""
    name = exposure_name(path)
    if m := _ARCHIVE_RE.match(name):
        return ExposureName(
            name,
            "archive",
            _parse_ts(m["ts"]),
            int(m["obs"]),
            int(m["dither"]),
            int(m["index"]),
        )
    if m := _Q1_RE.match(name):
        return ExposureName(name, "q1", _parse_ts(m["ts"]), int(m["obs"]), int(m["dither"]), None)
    if m := _IWS_RE.match(name):
        ts = datetime.strptime(m["date"] + m["time"], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        return ExposureName(name, "iws", ts, None, None, int(m["index"]))
    return ExposureName(name, "unknown")
