"""What every `viskom` command shares: consoles, the --config and --format options, settings,
the store, time parsing, output formats (csv, json, table) and name checks with suggestions."""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from viskom.config import Settings

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="viskom.toml to use (default: $VISKOM_CONFIG, else "
        "viskom.toml in this folder or a parent)",
    ),
]
FORMATS = ("csv", "json", "table")


def format_option(default: str, allowed: Sequence[str] = FORMATS) -> Any:
    """The --format option of a command: one vocabulary (csv, json, table) for all."""
    return typer.Option("--format", help=" or ".join(allowed) + f" (default {default})")


def check_format(fmt: str, allowed: Sequence[str] = FORMATS) -> str:
    """`fmt` if allowed, else a usage error naming the allowed ones."""
    if fmt not in allowed:
        raise typer.BadParameter(f"--format must be one of {', '.join(allowed)} (got {fmt!r})")
    return fmt


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print an error on stderr; returns the Exit to raise."""
    console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def json_clean(value: Any) -> Any:
    """NaN and infinities as null, at any depth (the store's rule for JSON products)."""
    from viskom.store.records import json_clean as clean

    return clean(value)


def load(config: Path | None, *, required: bool = True) -> Settings:
    """The settings, or exit 2 with the reason; `required=False`: defaults without a file."""
    from viskom.config import ConfigError, load_settings  # not on `viskom --help`'s path

    try:
        return load_settings(config, required=required)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def open_store(settings: Settings, *, read_only: bool = False) -> Any:
    """The settings' database, or exit 2 saying why it cannot be opened (`read_only`: no
    file or table is created or migrated, for commands that only read)."""
    from viskom.store import Store, shown_url  # not pipeline.service: its imports are slow

    try:
        return Store(settings.db_url, read_only=read_only)
    except Exception as exc:
        raise fail(f"cannot open the database {shown_url(settings.db_url)}: {exc}") from None


def parse_time(text: str | None) -> datetime | None:
    """An ISO time (UTC when no zone is given), or a usage error."""
    if text is None:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO time such as 2024-07-13T00:00:00"
        ) from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def number_text(value: Any, digits: int | None = 10) -> str:
    """A number for people and CSV files: `digits` significant digits (no float noise such
    as 0.30000000000000004; counts stay exact; None: the shortest exact repr), integers
    without a decimal point, empty for None, NaN and infinities."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        if digits is None:
            return repr(value)
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.{digits}g}"
    return str(value)


def emit(
    fmt: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    title: str | None = None,
    digits: int | None = 10,
) -> None:
    """Rows on stdout as CSV (header first), JSON (a list of objects) or a table."""
    rows = list(rows)
    if fmt == "json":
        payload = [dict(zip(columns, r, strict=True)) for r in rows]
        sys.stdout.write(json.dumps(json_clean(payload), indent=1, default=str) + "\n")
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow([number_text(v, digits) for v in r])
    else:
        table = Table(title=title)
        for c in columns:
            table.add_column(c)
        for r in rows:
            table.add_row(*(number_text(v, 6) for v in r))
        out.print(table)


def check_names(kind: str, given: Sequence[str] | None, known: Iterable[str]) -> None:
    """Exit 2 when a name is not known, listing the closest known names."""
    from viskom.metrics import unknown_message

    if not given:
        return
    known = sorted(set(known))
    for name in given:
        if name not in known:
            raise fail(unknown_message(kind, name, known))


def known_units() -> list[str]:
    """Every unit a metric can be reported for: FPA, 3x3 blocks, CCDs and quadrants."""
    from viskom.measure.gaia_stack import BLOCKS, CCDS, QUADRANTS

    return ["FPA", *BLOCKS, *CCDS, *QUADRANTS]
