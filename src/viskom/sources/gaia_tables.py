"""Gaia DR3 rows as viskom uses them: columns, units, epochs, and the services' answers.

`GAIA_COLUMNS` are the VizieR I/355/gaiadr3 column names (positions ICRS at epoch 2016.0);
`propagate_to_epoch` moves positions by their proper motions (the simulator's formula). The
VOTable answers of VizieR and of ESA's Gaia TAP service (`gaiadr3.gaia_source`, columns mapped
to VizieR's) become tables of those columns, with errors and truncated answers (QUERY_STATUS
OVERFLOW) told apart so that the client never caches a cut answer. No network here.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from io import BytesIO
from typing import Any

import numpy as np
from astropy import units as u
from astropy.table import Table

log = logging.getLogger(__name__)


GAIA_COLUMNS: tuple[str, ...] = (
    "RA_ICRS",
    "DE_ICRS",
    "Source",
    "Gmag",
    "e_Gmag",
    "FG",
    "e_FG",
    "BPmag",
    "RPmag",
    "BP-RP",
    "pmRA",
    "pmDE",
    "Plx",
    "RUWE",
)
GAIA_EPOCH_JYEAR = 2016.0  # epoch of the DR3 positions
COLUMN_UNITS: dict[str, u.UnitBase | None] = {
    "RA_ICRS": u.deg,
    "DE_ICRS": u.deg,
    "Source": None,
    "Gmag": u.mag,
    "e_Gmag": u.mag,
    "FG": u.electron / u.s,
    "e_FG": u.electron / u.s,
    "BPmag": u.mag,
    "RPmag": u.mag,
    "BP-RP": u.mag,
    "pmRA": u.mas / u.yr,
    "pmDE": u.mas / u.yr,
    "Plx": u.mas,
    "RUWE": None,
}
VIZIER_CATALOGUE = "I/355/gaiadr3"
GAIA_TAP_URL = "https://gea.esac.esa.int/tap-server/tap"
GAIA_TAP_TABLE = "gaiadr3.gaia_source"
# VizieR column <- gaia_source column (e_Gmag is derived from the flux and its error).
TAP_COLUMNS: dict[str, str] = {
    "RA_ICRS": "ra",
    "DE_ICRS": "dec",
    "Source": "source_id",
    "Gmag": "phot_g_mean_mag",
    "FG": "phot_g_mean_flux",
    "e_FG": "phot_g_mean_flux_error",
    "BPmag": "phot_bp_mean_mag",
    "RPmag": "phot_rp_mean_mag",
    "BP-RP": "bp_rp",
    "pmRA": "pmra",
    "pmDE": "pmdec",
    "Plx": "parallax",
    "RUWE": "ruwe",
}
E_GMAG_FACTOR = 1.0857  # 2.5 / ln(10): e_Gmag = 1.0857 e_FG / FG
CATALOGUE_NAME = "Gaia DR3 (VizieR I/355/gaiadr3 columns)"


class GaiaAnswerError(ValueError):
    """An answer from VizieR or the Gaia TAP service that cannot be used; `truncated` if cut."""

    def __init__(self, message: str, *, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


# -- Epochs and proper motions ------------------------------------------------------------


def julian_epoch(epoch: datetime | float | Any) -> float:
    """Julian epoch (decimal year) of a datetime (naive = UTC), an astropy Time or a number."""
    if isinstance(epoch, datetime):
        t = epoch if epoch.tzinfo is not None else epoch.replace(tzinfo=UTC)
        j2000 = datetime(2000, 1, 1, 12, 0, 0, tzinfo=UTC)
        return 2000.0 + (t - j2000).total_seconds() / (365.25 * 86400.0)
    if hasattr(epoch, "jyear"):  # astropy Time
        return float(epoch.jyear)
    value = float(epoch)
    if not math.isfinite(value):
        raise ValueError(f"epoch {epoch!r} is not a finite decimal year")
    return value


def propagate_to_epoch(
    ra: Any, dec: Any, pmra: Any, pmde: Any, years: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Move positions (deg) by proper motions (mas/yr, pmRA includes cos Dec) over `years`.

    Linear, as the simulator's `propagate`; NaN proper motions mean no motion.
    """
    dec = np.asarray(dec, dtype=float)
    pmra = np.nan_to_num(np.asarray(pmra, dtype=float), nan=0.0)
    pmde = np.nan_to_num(np.asarray(pmde, dtype=float), nan=0.0)
    ddec = pmde * years / 3.6e6
    dra = pmra * years / 3.6e6 / np.cos(np.radians(dec))
    return (np.asarray(ra, dtype=float) + dra) % 360.0, dec + ddec


# -- Tables --------------------------------------------------------------------------------


def float_column(col: Any) -> np.ndarray:
    """float64 values of a (masked) column or quantity; masked entries become NaN."""
    if isinstance(col, u.Quantity):
        col = col.value
    return np.ma.filled(np.ma.asarray(col).astype(np.float64), np.nan)


def as_columns(table: Table, what: str) -> dict[str, np.ndarray]:
    """The GAIA_COLUMNS of a table as plain arrays (Source int64, others float64, NaN = null)."""
    missing = [c for c in GAIA_COLUMNS if c not in table.colnames]
    if missing:
        raise GaiaAnswerError(f"{what}: no column(s) {', '.join(missing)}")
    cols: dict[str, np.ndarray] = {}
    for name in GAIA_COLUMNS:
        if name == "Source":
            src = np.ma.asarray(table[name])
            if np.ma.count_masked(src):
                raise GaiaAnswerError(f"{what}: rows without a Source identifier")
            cols[name] = np.asarray(src.filled(0)).astype(np.int64)
        else:
            cols[name] = float_column(table[name])
    good = np.isfinite(cols["RA_ICRS"]) & np.isfinite(cols["DE_ICRS"])
    if not np.all(good):
        log.warning("%s: %d row(s) without a position dropped", what, int(np.sum(~good)))
        cols = {k: v[good] for k, v in cols.items()}
    cols["RA_ICRS"] = cols["RA_ICRS"] % 360.0
    return cols


def empty_columns() -> dict[str, np.ndarray]:
    """Zero rows of every GAIA_COLUMNS column."""
    return {c: np.zeros(0, np.int64 if c == "Source" else np.float64) for c in GAIA_COLUMNS}


def to_table(cols: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> Table:
    """An astropy Table of the GAIA_COLUMNS (with their units) and `meta`."""
    table = Table()
    for name in GAIA_COLUMNS:
        table[name] = cols[name]
        if COLUMN_UNITS[name] is not None:
            table[name].unit = COLUMN_UNITS[name]
    table.meta.update(meta or {})
    return table


def select_rows(cols: Mapping[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The rows `keep` (mask or indices) of every column."""
    return {k: v[keep] for k, v in cols.items()}


def concat_columns(parts: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The rows of several column sets, one after the other (GAIA_COLUMNS)."""
    parts = list(parts)
    if not parts:
        return empty_columns()
    return {c: np.concatenate([p[c] for p in parts]) for c in GAIA_COLUMNS}


def _parse_votable(content: bytes, what: str) -> Any:
    from astropy.io import votable
    from astropy.utils.exceptions import AstropyWarning

    if content.lstrip()[:5] not in (b"<?xml", b"<VOTA"):
        head = content[:80].decode("utf-8", "replace").strip()
        raise GaiaAnswerError(f"{what}: not a VOTable (starts with {head!r})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            vot = votable.parse(BytesIO(content), verify="ignore")
    except Exception as exc:  # astropy raises many kinds on malformed XML
        raise GaiaAnswerError(f"{what}: unreadable VOTable ({type(exc).__name__}: {exc})") from None
    for info in vot.iter_info():
        name = str(info.name or "").strip().lower()
        value = str(info.value or "").strip().upper()
        text = str(getattr(info, "content", None) or info.value or "").strip()
        if name == "query_status" and value == "OVERFLOW":
            raise GaiaAnswerError(f"{what}: truncated answer ({text})", truncated=True)
        if (name == "query_status" and value == "ERROR") or name == "error":
            raise GaiaAnswerError(f"{what}: service error ({text})")
    return vot


def parse_vizier_votable(content: bytes) -> Table:
    """The I/355/gaiadr3 rows of a VizieR VOTable answer as a GAIA_COLUMNS table.

    No such table and no error: zero rows (VizieR leaves empty tables out). GaiaAnswerError
    when malformed, an error, truncated (QUERY_STATUS OVERFLOW) or missing columns.
    """
    from astropy.utils.exceptions import AstropyWarning

    vot = _parse_votable(content, "VizieR")
    found = [
        t for t in vot.iter_tables() if VIZIER_CATALOGUE in (t.name, str(t.ID).replace("_", "/"))
    ]
    if not found:
        return to_table(empty_columns())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        table = found[0].to_table(use_names_over_ids=True)
    return to_table(as_columns(table, f"VizieR {VIZIER_CATALOGUE}"))


def parse_tap_votable(content: bytes) -> Table:
    """A Gaia TAP gaia_source VOTable answer as a GAIA_COLUMNS table (VizieR names)."""
    from astropy.utils.exceptions import AstropyWarning

    vot = _parse_votable(content, "Gaia TAP")
    tables = list(vot.iter_tables())
    if not tables:
        raise GaiaAnswerError("Gaia TAP: answer holds no table")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        raw = tables[0].to_table(use_names_over_ids=True)
    lower = {name.lower(): name for name in raw.colnames}
    missing = [t for t in TAP_COLUMNS.values() if t not in lower]
    if missing:
        raise GaiaAnswerError(f"Gaia TAP: no column(s) {', '.join(missing)}")
    table = Table()
    for viz, tap in TAP_COLUMNS.items():
        table[viz] = raw[lower[tap]]
    with np.errstate(divide="ignore", invalid="ignore"):
        fg, e_fg = float_column(table["FG"]), float_column(table["e_FG"])
        table["e_Gmag"] = np.where(fg > 0, E_GMAG_FACTOR * e_fg / fg, np.nan)
    return to_table(as_columns(table, f"Gaia TAP {GAIA_TAP_TABLE}"))


def tap_query(ra: float, dec: float, radius_deg: float) -> str:
    """ADQL for the gaia_source rows in a cone (columns to be renamed with TAP_COLUMNS)."""
    cols = ", ".join(TAP_COLUMNS.values())
    return (
        f"SELECT {cols} FROM {GAIA_TAP_TABLE} WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), "
        f"CIRCLE('ICRS', {ra:.10f}, {dec:.10f}, {radius_deg:.10f}))"
    )


def tap_error_text(body: bytes) -> str:
    """The message of a TAP error document (QUERY_STATUS ERROR), if the body is one."""
    m = re.search(rb"QUERY_STATUS[^>]*ERROR[^>]*>(.*?)</INFO>", body or b"", re.S | re.I)
    text = m.group(1) if m else b""
    return " ".join(text.decode("utf-8", "replace").split())[:300]
