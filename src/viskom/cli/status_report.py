"""`viskom status`: what the store holds and what is left to do, in well under half a second.

It reads the database through `store.quick` (the DB-API driver and plain SQL, no SQLAlchemy)
and counts what is pending with the planner's own rules (`pipeline.pending`) against the
stages' current calls, kept between calls in a `pipeline.status_view.StatusView`: neither the
settings model, nor the stages, nor the ORM is imported while the view holds. Nor is typer:
the installed script (`cli.main`) answers the plain forms of the command here
(`quick_status_args`), and hands anything else (`--why`, `--help`, a mistyped option) to the
typer application, which calls `status_report` too.
"""

from __future__ import annotations

import json
import sys
from typing import Any

#: Options the script parses itself: value-taking ones (last one wins, as in click)
_VALUE_OPTIONS = {"--format": "fmt", "--config": "config", "-c": "config"}


class StatusError(Exception):
    """No report: unusable settings, or a database that cannot be read (the message says)."""


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=True)


def quick_status_args(args: list[str]) -> tuple[str | None, str] | None:
    """(config, format) when `args` are `status` with nothing but --json, --format json or
    table, --config/-c FILE (as `--opt value` or `--opt=value`); None for anything else,
    which typer parses (and explains)."""
    if not args or args[0] != "status":
        return None
    found: dict[str, str] = {}
    as_json = False
    rest = args[1:]
    i = 0
    while i < len(rest):
        name, eq, value = rest[i].partition("=")
        if rest[i] == "--json":
            as_json, i = True, i + 1
        elif name in _VALUE_OPTIONS and (eq or i + 1 < len(rest)):
            if not eq:
                value, i = rest[i + 1], i + 1
            if name == "-c" and eq:
                return None  # click reads "-c=x" as the value "=x": let it
            found[_VALUE_OPTIONS[name]] = value
            i += 1
        else:
            return None
    fmt = "json" if as_json else found.get("fmt", "table")
    if fmt not in ("json", "table"):
        return None
    return found.get("config"), fmt


def quick_status(config: str | None, fmt: str) -> int:
    """`viskom status` without typer: prints the report, or the reason on stderr (exit 2)."""
    from pathlib import Path

    try:
        report = status_report(None if config is None else Path(config))
    except StatusError as exc:
        _console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    report.write(fmt)
    return 0


class StatusReport:
    """Everything `viskom status` shows, read in one transaction."""

    def __init__(self, view: Any, reader: Any) -> None:
        from viskom.pipeline.pending import measured_ids, pending_work

        self.shown = view.shown_url
        self.writable = reader.writable()
        self.now = reader.now()
        self.claims = reader.held_claims()
        self.summary = reader.status_summary()
        exposures = reader.exposures()
        runs = reader.stage_runs()
        registered = [e for e in exposures if e.state == "registered"]
        planned, _skipped, _blocked = pending_work(
            registered, runs, view.stages, view.calls, self.now, retry_wait=view.retry_wait
        )
        pending = {s.name: 0 for s in view.stages}
        for _exp, names in planned:
            for name in names:
                pending[name] += 1
        self.stages = []
        for stage in view.stages:
            statuses = [r.status for (_, name), r in runs.items() if name == stage.name]
            ok, empty = statuses.count("ok"), statuses.count("empty")
            failed = statuses.count("failed")
            self.stages.append((stage.name, ok, empty, failed, pending[stage.name]))
        measured = measured_ids({exp.id for exp, _names in planned}, runs)
        self.fetches = _fetch_summary(reader.fetched_files(), exposures, measured)
        order = {e.id: i for i, e in enumerate(exposures)}
        names = {e.id: e.name for e in exposures}
        failed_runs = sorted(
            (r for r in runs.values() if r.status == "failed"),
            key=lambda r: (order.get(r.exposure_id, len(order)), r.stage),
        )
        self.failed = [(names.get(r.exposure_id, "?"), r) for r in failed_runs]
        self.invalid = [e for e in exposures if e.state == "invalid"]
        self.unknown = [e for e in exposures if e.frame_type == "UNKNOWN"]
        self.flipped = [
            (name, value)
            for name, value in reader.fpa_metric("geometry_mismatch")
            if value is not None and value > 0
        ]
        self.warned = [e for e in exposures if e.header_warnings is not None]
        self.outcome_counts = reader.quality_outcome_counts()
        self.outcomes = reader.quality_outcomes()

    def payload(self) -> dict[str, Any]:
        """The report as `--format json` prints it."""
        return {
            "database": self.shown,
            "writable": self.writable,
            "claims": [
                {
                    "unit": c.key,
                    "stage": c.stage,
                    "host": c.host,
                    "pid": c.pid,
                    "claimed_at": c.claimed_at.isoformat() if c.claimed_at else None,
                    "expires_at": c.expires_at.isoformat() if c.expires_at else None,
                    "live": not c.expired(self.now),
                }
                for c in self.claims
            ],
            "exposures": [
                {**row, "date": row["date"].isoformat() if row["date"] else None}
                for row in self.summary
            ],
            "fetched": self.fetches,
            "stages": [
                {"stage": n, "measured": ok, "empty": em, "failed": fa, "pending": pe}
                for n, ok, em, fa, pe in self.stages
            ],
            "invalid": [{"exposure": e.name, "reason": e.reason} for e in self.invalid],
            "unknown_type": [
                {"exposure": e.name, "reason": e.reason}
                for e in self.unknown
                if e.state != "invalid"
            ],
            "geometry_mismatch": [
                {"exposure": name, "quadrants": value} for name, value in self.flipped
            ],
            "failed": [
                {"exposure": name, "stage": r.stage, "version": r.stage_version, "error": r.error}
                for name, r in self.failed
            ],
            "header_warnings": [
                {"exposure": e.name, "warnings": e.header_warnings} for e in self.warned
            ],
            "quality_outcome_counts": [
                {"stage": st, "code": code, "exposures": n} for st, code, n in self.outcome_counts
            ],
            "quality_outcomes": [
                {
                    "exposure": o.exposure,
                    "stage": o.stage,
                    "code": o.code,
                    "unit": o.unit,
                    "message": o.message,
                    "recorded_at": o.recorded_at.isoformat() if o.recorded_at else None,
                }
                for o in self.outcomes
            ],
        }

    def write(self, fmt: str) -> None:
        """On stdout: JSON (`--format json`), or tables and lines for a terminal."""
        if fmt == "json":
            from viskom.store.records import json_clean

            sys.stdout.write(json.dumps(json_clean(self.payload()), indent=1) + "\n")
        else:
            self.print()

    def print(self) -> None:
        """The report as tables and lines for a terminal."""
        from rich.markup import escape
        from rich.table import Table

        out = _console()

        table = Table(title=f"viskom status ({self.shown})")
        for col in ("date", "frame type", "state", "exposures"):
            table.add_column(col)
        for row in self.summary:
            table.add_row(
                str(row["date"] or "?"),
                str(row["frame_type"] or "-"),
                row["state"],
                str(row["count"]),
            )
        out.print(table)
        if not self.summary:
            out.print("no exposures registered yet: `viskom ingest PATH`")
        else:
            runs = Table(title="stages (registered exposures they apply to)")
            for col in ("stage", "measured", "found nothing", "failed", "pending"):
                runs.add_column(col, justify="left" if col == "stage" else "right")
            for name, ok, empty, failed_n, pending in self.stages:
                runs.add_row(name, str(ok), str(empty), str(failed_n), str(pending))
            out.print(runs)
        fetches = self.fetches
        if fetches["fetched"] or fetches["failed"]:
            out.print(
                f"fetched from the archive: {fetches['fetched']} file(s), "
                f"{fetches['bytes'] / 1e9:.2f} GB; {fetches['registered']} registered, "
                f"{fetches['measured']} measured by every stage"
            )
            for row in fetches["failed"]:
                out.print(
                    f"[red]not fetched[/red] {row['file']} ({row['attempts']} attempt(s)): "
                    f"{escape(str(row['error']))}"
                )
        if not self.writable:
            out.print("[yellow]read-only[/yellow]: this user cannot write the store (status only)")
        live = [c for c in self.claims if not c.expired(self.now)]
        stale = [c for c in self.claims if c.expired(self.now)]
        if live:
            hosts = sorted({f"{c.host} pid {c.pid}" for c in live})
            out.print(f"running: {len(live)} unit(s) claimed by {', '.join(hosts)}")
        if stale:
            out.print(
                f"[yellow]stale[/yellow]: {len(stale)} claim(s) whose holder stopped renewing its "
                "lease (killed?); the next run takes them"
            )
        for exp in self.invalid:
            out.print(f"[red]invalid[/red] {exp.name}: {exp.reason}")
        for exp in self.unknown:
            if exp.state != "invalid":
                out.print(f"[yellow]unknown type[/yellow] {exp.name}: {exp.reason}")
        for name, value in self.flipped:
            out.print(
                f"[yellow]geometry[/yellow] {name}: {value:.0f} quadrant(s) whose bias-only "
                "columns or rows are not where the header puts them "
                f"(`viskom metrics --exposure {name} --metric geometry_mismatch`)"
            )
        for name, run in self.failed:
            out.print(f"[red]failed[/red] {name} {run.stage} v{run.stage_version}: {run.error}")
        if self.warned:
            from viskom.le1.header import HeaderProblem, summarise_problems

            for exp in self.warned:
                problems = [HeaderProblem.from_dict(w) for w in exp.header_warnings or []]
                for line in summarise_problems(problems):
                    out.print(f"[yellow]header[/yellow] {exp.name}: {escape(line)}")
        if self.outcome_counts:
            counts = Table(title="quality outcomes (what a monitor found nothing of or left out)")
            for col in ("stage", "code", "exposures"):
                counts.add_column(col)
            for stage_name, code, n in self.outcome_counts:
                counts.add_row(stage_name, code, str(n))
            out.print(counts)
            rows = [(o.exposure, o.stage, o.code, o.unit, o.message) for o in self.outcomes]
            for line in outcome_lines(rows, limit=20):
                out.print(f"[yellow]outcome[/yellow] {escape(line)}")


def status_report(config: Any) -> StatusReport:
    """The report of the store the settings `config` name; StatusError says why not."""
    from viskom.config import ConfigError
    from viskom.pipeline.status_view import status_view
    from viskom.store.migrate import head_revision
    from viskom.store.quick import QuickReader, QuickReadError

    try:
        view = status_view(config)
    except ConfigError as exc:
        raise StatusError(str(exc)) from None
    try:
        reader = QuickReader(view.db_url, view.shown_url)
        with reader.opened():
            reader.check_revision(head_revision())
            return StatusReport(view, reader)
    except QuickReadError as exc:
        raise StatusError(f"cannot open the database {view.shown_url}: {exc}") from None
    except Exception as exc:  # the driver's own errors: a refused connection, a locked file
        raise StatusError(f"cannot open the database {view.shown_url}: {exc}") from None


def _fetch_summary(records: list[Any], exposures: list[Any], measured: set[int]) -> dict[str, Any]:
    """What the archive was asked for: files fetched, and of those how many are registered
    and measured; failures and files not found, with the last reason."""
    from viskom.le1.names import exposure_name

    by_name = {e.name: e for e in exposures}
    fetched = [r for r in records if r.state == "fetched"]
    known = [by_name.get(exposure_name(r.path or r.name)) for r in fetched]
    registered = [e for e in known if e is not None and e.state == "registered"]
    return {
        "fetched": len(fetched),
        "bytes": sum(r.size_bytes or 0 for r in fetched),
        "registered": len(registered),
        "measured": sum(1 for e in registered if e.id in measured),
        "failed": [
            {"file": r.name, "attempts": r.attempts, "error": r.error}
            for r in records
            if r.state != "fetched" or r.error
        ],
    }


def outcome_lines(rows: list[tuple[str, str, str, str, str]], limit: int = 0) -> list[str]:
    """(exposure, stage, code, unit, message) as lines, one per exposure, stage and code:
    "EXP psf no_stellar_locus (FPA): message", units folded when there are several;
    `limit` > 0 keeps that many lines per (stage, code) and says how many more there are."""
    groups: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
    for exposure, stage, code, unit, message in rows:
        groups.setdefault((exposure, stage, code), []).append((unit, message))
    lines, shown, hidden = [], {}, {}
    for (exposure, stage, code), items in groups.items():
        n = shown.get((stage, code), 0)
        if limit and n >= limit:
            hidden[(stage, code)] = hidden.get((stage, code), 0) + 1
            continue
        shown[(stage, code)] = n + 1
        if len(items) == 1:
            unit, message = items[0]
            lines.append(f"{exposure} {stage} {code} ({unit}): {message}")
            continue
        units = [u for u, _ in items]
        listed = ", ".join(units[:4]) + (" ..." if len(units) > 4 else "")
        lines.append(f"{exposure} {stage} {code}: {len(units)} units ({listed}): {items[0][1]}")
    for (stage, code), n in hidden.items():
        lines.append(f"... {stage} {code} on {n} more exposure(s) (`viskom status --json`)")
    return lines
