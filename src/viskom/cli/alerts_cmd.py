"""`viskom alerts`: the open alerts (metrics out of band, quality outcomes), `--all` with the
cleared ones; `viskom alerts ack ID` marks one as seen."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from viskom.cli.common import (
    ConfigOption,
    check_format,
    console,
    emit,
    fail,
    format_option,
    load,
    open_store,
    parse_time,
)

app = typer.Typer(
    help="Alerts: metrics out of their bands and quality outcomes (open first). "
    "`viskom alerts ack ID` acknowledges one.",
    invoke_without_command=True,
)

_COLUMNS = [
    "id", "state", "level", "kind", "metric", "unit", "frame_type", "value", "low", "high",
    "breaches", "first_seen", "last_seen", "exposure", "acknowledged_by", "acknowledged_at",
    "notified_at", "notify_error", "cleared_at", "message",
]  # fmt: skip
_TABLE = ["id", "state", "level", "metric", "unit", "type", "value", "band", "n", "since",
          "exposure", "ack"]  # fmt: skip


def _when(value: datetime | None, fmt: str) -> str | None:
    if value is None:
        return None
    value = value.astimezone(UTC)
    return value.isoformat() if fmt == "json" else value.strftime("%Y-%m-%d %H:%M:%S")


def _band(a: Any) -> str:
    if a.low is None and a.high is None:
        return ""
    low = "" if a.low is None else f"{a.low:.6g}"
    high = "" if a.high is None else f"{a.high:.6g}"
    return f"[{low}, {high}]"


@app.callback()
def alerts(
    ctx: typer.Context,
    config: ConfigOption = None,
    all_: Annotated[bool, typer.Option("--all", help="also the cleared alerts")] = False,
    kind: Annotated[str | None, typer.Option(help="band or outcome")] = None,
    exposure: Annotated[
        str | None, typer.Option(help="only alerts whose last breach is this exposure")
    ] = None,
    start: Annotated[str | None, typer.Option(help="last breach from this DATE-OBS (ISO)")] = None,
    fmt: Annotated[str, format_option("table")] = "table",
) -> None:
    """List the alerts: open ones first, then the most recent (`--all`: cleared ones too)."""
    if ctx.invoked_subcommand is not None:
        return
    check_format(fmt)
    if kind is not None and kind not in ("band", "outcome"):
        raise typer.BadParameter("--kind must be band or outcome")
    settings = load(config)
    with open_store(settings, read_only=True) as store:
        rows = store.alerts(
            state=None if all_ else "open", exposure=exposure, since=parse_time(start), kind=kind
        )
    if fmt == "table":  # a terminal: what, where, how much, since when; the rest in csv/json
        columns = [c for c in _TABLE if all_ or c != "state"]
        values = [
            [v for c, v in zip(_TABLE, (
                a.id, a.state, a.level, a.metric, a.unit, a.frame_type, a.value, _band(a),
                a.breaches, _when(a.first_seen, fmt), a.exposure, a.acknowledged_by or "",
            ), strict=True) if c in columns]
            for a in rows
        ]  # fmt: skip
        n_open = sum(1 for a in rows if a.is_open)
        title = f"{n_open} open alert{'s' if n_open != 1 else ''}" + (
            f", {len(rows) - n_open} cleared" if all_ else ""
        )
        emit(fmt, columns, values, title=title)
        if rows:
            console.print("`viskom alerts --format csv` for the messages; "
                          "`viskom alerts ack ID` acknowledges one")  # fmt: skip
        return
    emit(
        fmt,
        _COLUMNS,
        [
            (a.id, a.state, a.level, a.kind, a.metric, a.unit, a.frame_type, a.value, a.low,
             a.high, a.breaches, _when(a.first_seen, fmt), _when(a.last_seen, fmt), a.exposure,
             a.acknowledged_by, _when(a.acknowledged_at, fmt), _when(a.notified_at, fmt),
             a.notify_error, _when(a.cleared_at, fmt), a.message)
            for a in rows
        ],
    )  # fmt: skip


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        return "unknown"


@app.command("ack")
def ack(
    alert_id: Annotated[int, typer.Argument(metavar="ID", help="the alert's id (`viskom alerts`)")],
    config: ConfigOption = None,
    by: Annotated[str | None, typer.Option(help="who acknowledges (default: this user)")] = None,
) -> None:
    """Acknowledge an alert: seen, being looked at (it clears by itself once back in band)."""
    settings = load(config)
    who = by or _user()
    with open_store(settings) as store:
        try:
            alert = store.acknowledge_alert(alert_id, who)
        except LookupError:
            raise fail(f"no alert with id {alert_id} (`viskom alerts --all` lists them)") from None
    console.print(
        f"acknowledged alert {alert.id} ({alert.level}, {alert.state}) by {who}: {alert.message}",
        highlight=False,
    )
