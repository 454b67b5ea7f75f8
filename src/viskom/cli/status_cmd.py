"""`viskom status` as a typer command (`cli.status_report` makes and prints the report; the
installed script calls it directly for the plain forms). `--why` (one exposure, every
reason in full) takes the planner's full path."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from viskom.cli.common import (
    ConfigOption,
    check_format,
    check_names,
    fail,
    format_option,
    load,
    open_store,
    out,
)
from viskom.cli.status_report import StatusError, status_report


def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="the same as --format json")] = False,
    fmt: Annotated[str, format_option("table", ("json", "table"))] = "table",
    why: Annotated[
        str | None, typer.Option("--why", help="why each stage of this exposure is pending or done")
    ] = None,
) -> None:
    """Exposures by date, type and state; per stage what was measured, found nothing, failed
    or is pending; what runs now; failed stages, invalid files, header warnings and quality
    outcomes. Only reads: works on a store this user may not write."""
    fmt = "json" if as_json else check_format(fmt, ("json", "table"))
    if why is not None:
        _status_why(load(config), why, fmt)
        return
    try:
        report = status_report(config)
    except StatusError as exc:
        raise fail(str(exc)) from None
    report.write(fmt)


def _status_why(settings: Any, name: str, fmt: str) -> None:
    """`viskom status --why EXPOSURE`: a line per stage, its state and why."""
    from viskom.pipeline.runner import explain

    with open_store(settings, read_only=True) as store:
        try:
            states = explain(store, settings, name)
        except KeyError:
            check_names("exposure", [name], (e.name for e in store.list_exposures()))
            raise
    if fmt == "json":
        rows = [{"stage": s.stage, "state": s.state, "why": s.reason} for s in states]
        sys.stdout.write(json.dumps({"exposure": name, "stages": rows}, indent=1) + "\n")
        return
    table = Table(title=f"{name}: why each stage is pending or done")
    for col in ("stage", "state", "why"):
        table.add_column(col, overflow="fold")
    for s in states:
        table.add_row(s.stage, s.state, escape(s.reason))
    out.print(table)
