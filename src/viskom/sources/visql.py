"""Readers for the text tables written by VISQL, the system viskom replaces (VISQL-SPEC 3-8).

Every reader returns an `astropy.table.Table` with lower-case snake-case column names, reads
gzip-compressed files transparently (by their magic bytes), and raises ValueError naming the
file and line for malformed input instead of guessing. `median_moments` and
`iq_rows_from_visql` reproduce VISQL's per-exposure summaries (medianmoments.py,
psfclassify.py) from these tables.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from viskom.measure.iq import IQReference, iq_score

if TYPE_CHECKING:  # astropy.table is imported by the readers that make tables: start-up
    from astropy.table import Table

StrPath = str | PathLike[str]

MOMCAT_SUFFIX = "_stars2_mom.cat"
PLACEHOLDER_R2 = 9.9  # medianmoments.py's value for an empty or unreadable catalogue
PLACEHOLDER_OTHER = 0.9999

#: psfmoments_YYYYMM.txt: header names (spaces removed, upper case) -> our column names.
PSFMOMENTS_COLUMNS = {
    "R2": "r2",
    "COMA1": "coma1",
    "COMA2": "coma2",
    "ELL1": "e1",
    "ELL2": "e2",
    "TREF1": "trefoil1",
    "TREF2": "trefoil2",
}

#: *_stars2_mom.cat header names -> our column names (starfield2_with_measures.py).
STAR_MOMENTS_COLUMNS = {
    "EXT": "extname",
    "XWORLD": "x_world",
    "YWORLD": "y_world",
    "FLUX": "flux",
    "FLUXERR": "fluxerr",
    "FLUXRAD": "flux_radius",
    "FIELDRAD": "field_radius",
    "XIMAGE": "x_image",
    "YIMAGE": "y_image",
    "DX": "dx",
    "DY": "dy",
    "WTFLUX": "wtflux",
    "R2": "r2",
    "e1": "e1",
    "e2": "e2",
    "tr1": "t1",
    "tr2": "t2",
    "com1": "c1",
    "com2": "c2",
}

#: Header-less 11-column *.cat.gz / *_stars2.cat (VISQL-SPEC 3.4), and the integer columns.
STAR_CATALOGUE_COLUMNS = (
    "x_world",
    "y_world",
    "flux_auto",
    "fluxerr_auto",
    "flux_radius",
    "a_image",
    "b_image",
    "theta_image",
    "number",
    "flags",
    "field_radius",
)

#: *_stars2_gaia.cat header names -> our column names (align_Gaia_to_VISWCS.py).
GAIA_COLUMNS = {
    "RAV": "x_deg",
    "DECV": "y_deg",
    "G": "gmag",
    "Gerr": "gmag_err",
    "R": "r",
    "A": "a",
    "B": "b",
    "PA": "pa",
    "ID": "source_id",
    "FLG": "flg",
    "BpRp": "bp_rp",
}

_EXTNAME = re.compile(r"^[1-6]-[1-6]\.[EFGH]$")
_MISSING = {"--", "", "nan", "NaN", "NAN"}


def _lines(path: StrPath) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline) of a text file, gzip or not."""
    p = Path(path)
    with p.open("rb") as fh:
        magic = fh.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    with opener(p, "rt", encoding="utf-8", errors="strict") as fh:  # type: ignore[operator]
        try:
            for number, line in enumerate(fh, start=1):
                yield number, line.rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _fail(path: StrPath, number: int, message: str) -> ValueError:
    return ValueError(f"{path}: line {number}: {message}")


def _float(text: str, path: StrPath, number: int, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        if text.strip() in _MISSING:
            return float("nan")
        raise _fail(path, number, f"column {name!r}: not a number: {text!r}") from None


def _int(text: str, path: StrPath, number: int, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if value.is_integer():
            return int(value)
        raise _fail(path, number, f"column {name!r}: not an integer: {text!r}") from None


def read_psfmoments_table(path: StrPath) -> Table:
    """Read VISQL's monthly `psfmoments_YYYYMM.txt` ('|'-delimited medians per catalogue).

    Columns: catalogue, exposure (catalogue without `_stars2_mom.cat`), r2, coma1, coma2,
    e1, e2, trefoil1, trefoil2 and `placeholder` (VISQL's R2=9.9 / 0.9999 row for an empty or
    unreadable catalogue; kept, flagged). Blank lines are skipped.
    """
    from astropy.table import Table

    names = list(PSFMOMENTS_COLUMNS.values())
    rows: list[tuple[Any, ...]] = []
    for number, line in _lines(path):
        text = line.strip()
        if not text:
            continue
        if text.startswith("#"):
            cells = [c.strip() for c in text.lstrip("#").strip().strip("|").split("|")]
            header = [c.replace(" ", "").upper() for c in cells]
            if header[:1] == ["CATALOGUE"] and header[1:] != list(PSFMOMENTS_COLUMNS):
                raise _fail(path, number, f"unexpected header columns {cells}")
            continue
        if not (text.startswith("|") and text.endswith("|")):
            raise _fail(path, number, "expected a row '| catalogue | R2 | ... | TREF 2 |'")
        cells = [c.strip() for c in text[1:-1].split("|")]
        if len(cells) != 1 + len(names):
            raise _fail(path, number, f"expected {1 + len(names)} fields, found {len(cells)}")
        catalogue = cells[0]
        if not catalogue or " " in catalogue:
            raise _fail(path, number, f"bad catalogue name {catalogue!r}")
        values = [_float(c, path, number, n) for c, n in zip(cells[1:], names, strict=True)]
        rows.append((catalogue, catalogue.removesuffix(MOMCAT_SUFFIX), *values))
    table = Table(
        rows=rows or None,
        names=["catalogue", "exposure", *names],
        dtype=[str, str] + [float] * len(names),
    )
    r2 = np.asarray(table["r2"], dtype=float)
    others = np.column_stack([np.asarray(table[n], dtype=float) for n in names[1:]])
    table["placeholder"] = np.isclose(r2, PLACEHOLDER_R2, atol=5e-4) & np.isclose(
        others, PLACEHOLDER_OTHER, atol=5e-5
    ).all(axis=1)
    return table


def _whitespace_rows(
    path: StrPath, names: list[str], kinds: list[str]
) -> tuple[list[list[Any]], list[str] | None]:
    """Parse whitespace-separated rows (kinds 's', 'f', 'i'); return rows and a '#' header."""
    rows: list[list[Any]] = []
    header: list[str] | None = None
    conv = {"s": lambda t, p, n, c: t, "f": _float, "i": _int}
    for number, line in _lines(path):
        text = line.strip()
        if not text:
            continue
        if text.startswith("#"):
            if header is None and not rows:
                header = text.lstrip("#").split()
            continue
        parts = text.split()
        if len(parts) != len(names):
            raise _fail(path, number, f"expected {len(names)} columns, found {len(parts)}")
        rows.append(
            [conv[k](t, path, number, n) for t, n, k in zip(parts, names, kinds, strict=True)]
        )
    return rows, header


def _make_table(rows: list[list[Any]], names: list[str], kinds: list[str]) -> Table:
    from astropy.table import Table

    dtypes = {"s": str, "f": np.float64, "i": np.int64}
    if not rows:
        return Table(names=names, dtype=[dtypes[k] for k in kinds])
    columns = list(zip(*rows, strict=True))
    return Table(
        [np.array(c, dtype=dtypes[k]) for c, k in zip(columns, kinds, strict=True)],
        names=names,
    )


def read_star_moments(path: StrPath) -> Table:
    """Read a `*_stars2_mom.cat` (VISQL's per-star moments; VISQL-SPEC 5.5 step 8).

    Columns: extname, x_world, y_world, flux, fluxerr, flux_radius, field_radius, x_image,
    y_image (1-based, as VISQL wrote them), dx, dy, wtflux, r2, e1, e2, t1, t2, c1, c2.
    """
    expected = list(STAR_MOMENTS_COLUMNS)
    names = list(STAR_MOMENTS_COLUMNS.values())
    kinds = ["s"] + ["f"] * (len(names) - 1)
    rows, header = _whitespace_rows(path, names, kinds)
    if header is not None and header != expected:
        raise ValueError(f"{path}: header {header} differs from VISQL's {expected}")
    for i, row in enumerate(rows):
        if not _EXTNAME.match(row[0]):
            raise ValueError(f"{path}: data row {i + 1}: bad extension name {row[0]!r}")
    return _make_table(rows, names, kinds)


def read_star_catalogue(path: StrPath) -> Table:
    """Read a header-less 11-column `.cat.gz` / `_stars2.cat` (VISQL-SPEC 3.4)."""
    names = list(STAR_CATALOGUE_COLUMNS)
    kinds = ["i" if n in ("number", "flags") else "f" for n in names]
    rows, _ = _whitespace_rows(path, names, kinds)
    return _make_table(rows, names, kinds)


def read_gaia_instrument_catalogue(path: StrPath) -> Table:
    """Read a `_stars2_gaia.cat`: Gaia DR3 stars rotated into the VIS instrument frame.

    Columns (renamed from RAV DECV G Gerr R A B PA ID FLG BpRp): x_deg, y_deg, gmag,
    gmag_err, r, a, b, pa, source_id (int64), flg, bp_rp (NaN where missing).
    """
    first = next(((n, t) for n, t in _lines(path) if t.strip()), None)
    if first is None:
        return _make_table([], list(GAIA_COLUMNS.values()), ["f"] * 8 + ["i", "f", "f"])
    number, text = first
    if not text.lstrip().startswith("#"):
        raise _fail(path, number, "expected a commented header '# RAV DECV G ...'")
    header = text.lstrip().lstrip("#").split()
    unknown = [h for h in header if h not in GAIA_COLUMNS]
    missing = [h for h in GAIA_COLUMNS if h not in header]
    if unknown or missing or len(set(header)) != len(header):
        raise _fail(path, number, f"header {header}: unknown {unknown}, missing {missing}")
    names = [GAIA_COLUMNS[h] for h in header]
    kinds = ["i" if n == "source_id" else "f" for n in names]
    rows, _ = _whitespace_rows(path, names, kinds)
    return _make_table(rows, names, kinds)


def read_quadrant_gains(path: StrPath) -> dict[str, float]:
    """Read `quadrant_relative_gains.txt` ('EXT gain' per line, '#' comments) into a dict."""
    gains: dict[str, float] = {}
    for number, line in _lines(path):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) != 2:
            raise _fail(path, number, f"expected 'EXT gain', found {len(parts)} fields")
        ext, value = parts
        if not _EXTNAME.match(ext):
            raise _fail(path, number, f"bad extension name {ext!r}")
        if ext in gains:
            raise _fail(path, number, f"duplicate extension {ext}")
        gain = _float(value, path, number, "relative_gain")
        if not (np.isfinite(gain) and gain > 0):
            raise _fail(path, number, f"gain must be finite and > 0, got {value}")
        gains[ext] = gain
    return gains


def median_moments(table: Table) -> dict[str, float]:
    """Per-catalogue medians of the star moments, as VISQL's medianmoments.py computes them.

    Takes a `read_star_moments` table; returns r2, coma1, coma2, e1, e2, trefoil1, trefoil2
    and n_stars. Non-finite values are ignored; an empty catalogue gives NaN (VISQL wrote
    placeholders 9.9 / 0.9999 instead).
    """
    pairs = {
        "r2": "r2",
        "coma1": "c1",
        "coma2": "c2",
        "e1": "e1",
        "e2": "e2",
        "trefoil1": "t1",
        "trefoil2": "t2",
    }
    out: dict[str, float] = {}
    for key, column in pairs.items():
        values = np.asarray(table[column], dtype=float)
        values = values[np.isfinite(values)]
        out[key] = float(np.median(values)) if values.size else float("nan")
    out["n_stars"] = len(table)
    return out


def iq_rows_from_visql(path: StrPath, reference: IQReference | None = None) -> list[dict]:
    """IQ rows {exposure, r2, e1, e2, score, coma1, coma2, trefoil1, trefoil2} of a month.

    Reads a psfmoments table and scores each exposure with `viskom.measure.iq.iq_score`.
    VISQL placeholder rows get NaN moments and score (no measurement) instead of 9.9.
    """
    table = read_psfmoments_table(path)
    keys = ("r2", "e1", "e2", "coma1", "coma2", "trefoil1", "trefoil2")
    cols = {k: np.asarray(table[k], dtype=float).copy() for k in keys}
    placeholder = np.asarray(table["placeholder"], dtype=bool)
    for k in keys:
        cols[k][placeholder] = np.nan
    score = iq_score(cols["r2"], cols["e1"], cols["e2"], reference)
    rows = []
    for i, exposure in enumerate(table["exposure"]):
        row: dict[str, Any] = {"exposure": str(exposure)}
        row.update({k: float(cols[k][i]) for k in ("r2", "e1", "e2")})
        row["score"] = float(score[i])
        row.update({k: float(cols[k][i]) for k in ("coma1", "coma2", "trefoil1", "trefoil2")})
        rows.append(row)
    return rows
