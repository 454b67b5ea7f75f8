"""`viskom metrics`, `status`, `products` and `iq`: what the store knows, as csv, json or a
table; unknown names are errors that list the close ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from viskom.cli.common import (
    ConfigOption,
    check_format,
    check_names,
    emit,
    fail,
    format_option,
    json_clean,
    known_units,
    load,
    open_store,
    out,
    parse_time,
)


def metrics(
    config: ConfigOption = None,
    exposure: Annotated[list[str] | None, typer.Option(help="exposure name(s)")] = None,
    metric: Annotated[list[str] | None, typer.Option(help="metric name(s)")] = None,
    unit: Annotated[
        list[str] | None, typer.Option(help="FPA, a 3x3 block Bxxyy, a CCD R-C or a quadrant R-C.Q")
    ] = None,
    start: Annotated[str | None, typer.Option(help="from this DATE-OBS (ISO)")] = None,
    end: Annotated[str | None, typer.Option(help="until this DATE-OBS (ISO)")] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="the registered metrics: unit, roll-up, meaning")
    ] = False,
    fmt: Annotated[str, format_option("csv")] = "csv",
) -> None:
    """Metric values (exposure, unit, metric, value), or with --list the metric registry."""
    from viskom.metrics import METRICS

    check_format(fmt)
    check_names("metric", metric, METRICS)
    check_names("unit", unit, known_units())
    if list_:
        wanted = [METRICS[m] for m in metric] if metric else list(METRICS.values())
        emit(
            fmt,
            ["metric", "unit", "stage", "aggregation", "levels", "frame_types", "description"],
            [
                (
                    m.name,
                    m.unit,
                    m.stage,
                    m.aggregation,
                    ",".join(m.levels),
                    ",".join(sorted(m.frame_types)),
                    m.description,
                )
                for m in wanted
            ],
            title=f"{len(wanted)} registered metrics",
        )
        return
    settings = load(config)
    with open_store(settings) as store:
        if exposure:
            check_names("exposure", exposure, (e.name for e in store.list_exposures()))
        rows = store.metrics(
            exposures=exposure,
            metrics=metric,
            units=unit,
            since=parse_time(start),
            until=parse_time(end),
        )
    emit(
        fmt,
        ["exposure", "unit", "metric", "value"],
        [(r.exposure, r.unit, r.metric, r.value) for r in rows],
        title=f"{len(rows)} metric values",
    )


def products(
    config: ConfigOption = None,
    exposure: Annotated[list[str] | None, typer.Option(help="exposure name(s)")] = None,
    stage: Annotated[list[str] | None, typer.Option(help="stage name(s), or 'period'")] = None,
    kind: Annotated[list[str] | None, typer.Option(help="product kind(s), e.g. catalogue")] = None,
    period: Annotated[list[str] | None, typer.Option(help="month YYYY-MM, or 'all'")] = None,
    fmt: Annotated[str, format_option("table")] = "table",
) -> None:
    """The files in the product tree: exposure or period, stage, kind, path (relative to the
    data root), size and SHA-256."""
    from viskom.stages import STAGES

    check_format(fmt)
    check_names("stage", stage, [s.name for s in STAGES] + ["period"])
    settings = load(config)
    with open_store(settings) as store:
        if exposure:
            check_names("exposure", exposure, (e.name for e in store.list_exposures()))
        rows = store.products(exposures=exposure, stages=stage, kinds=kind, periods=period)
    columns = ["exposure", "period", "stage", "kind", "path", "size_bytes", "sha256"]
    values = [(p.exposure, p.period, p.stage, p.kind, p.path, p.size_bytes, p.sha256) for p in rows]
    total = sum(p.size_bytes for p in rows)
    title = f"{len(rows)} products, {total / 1e6:.1f} MB (paths relative to {settings.data_path})"
    if fmt == "table":  # a terminal: what and where; hashes with --format csv or json
        columns = ["stage", "kind", "kB", "path"]
        values = [(st, k, round(sz / 1e3, 1), pa) for _e, _pd, st, k, pa, sz, _sha in values]
    emit(fmt, columns, values, title=title)


def _stage_counts(
    store: Any, settings: Any
) -> tuple[list[tuple[str, int, int, int, int]], set[int]]:
    """Per stage: exposures measured (ok), found nothing (empty), failed, and pending (never
    ran, or ran with another version, configuration or upstream: what `viskom run` would do);
    and the ids of the exposures that every applicable stage has measured."""
    from viskom.pipeline.housekeeping import measured_ids
    from viskom.pipeline.runner import plan
    from viskom.stages import STAGES

    runs = store.stage_runs()
    tasks, _skipped, _blocked = plan(store, settings, workers=1)
    pending = {s.name: 0 for s in STAGES}
    for task in tasks:
        for name in task.stages:
            pending[name] += 1
    rows = []
    for stage in STAGES:
        status = [r.status for (_, name), r in runs.items() if name == stage.name]
        ok, empty, failed = status.count("ok"), status.count("empty"), status.count("failed")
        rows.append((stage.name, ok, empty, failed, pending[stage.name]))
    return rows, measured_ids(tasks, runs)


def _fetch_summary(store: Any, measured: set[int]) -> dict[str, Any]:
    """What the archive was asked for: files fetched, and of those how many are registered
    and measured; failures and files not found, with the last reason."""
    from viskom.le1.names import exposure_name

    records = store.fetched_files()
    exposures = {e.name: e for e in store.list_exposures()}
    fetched = [r for r in records if r.state == "fetched"]
    known = [exposures.get(exposure_name(r.path or r.name)) for r in fetched]
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
    from viskom.cli.pipeline_cmds import outcome_lines
    from viskom.le1.header import HeaderProblem, summarise_problems
    from viskom.store import shown_url

    fmt = "json" if as_json else check_format(fmt, ("json", "table"))
    settings = load(config)
    if why is not None:
        _status_why(settings, why, fmt)
        return
    shown = shown_url(settings.db_url)
    with open_store(settings, read_only=True) as store:
        writable = store.writable()
        now = store.now()
        claims = store.held_claims()
        summary = store.status_summary()
        stages, measured = _stage_counts(store, settings)
        fetches = _fetch_summary(store, measured)
        failed = store.failed_stage_runs()
        invalid = store.list_exposures(state="invalid")
        unknown = store.list_exposures(frame_type="UNKNOWN")
        flipped = [
            m
            for m in store.metrics(metrics=["geometry_mismatch"], units=["FPA"])
            if m.value is not None and m.value > 0
        ]
        warned = store.exposures_with_header_warnings()
        outcome_counts = store.quality_outcome_counts()
        outcomes = store.quality_outcomes()
    if fmt == "json":
        payload = {
            "database": shown,
            "writable": writable,
            "claims": [
                {
                    "unit": c.key,
                    "stage": c.stage,
                    "host": c.host,
                    "pid": c.pid,
                    "claimed_at": c.claimed_at.isoformat() if c.claimed_at else None,
                    "expires_at": c.expires_at.isoformat() if c.expires_at else None,
                    "live": not c.expired(now),
                }
                for c in claims
            ],
            "exposures": [
                {**row, "date": row["date"].isoformat() if row["date"] else None} for row in summary
            ],
            "fetched": fetches,
            "stages": [
                {"stage": n, "measured": ok, "empty": em, "failed": fa, "pending": pe}
                for n, ok, em, fa, pe in stages
            ],
            "invalid": [{"exposure": e.name, "reason": e.reason} for e in invalid],
            "unknown_type": [
                {"exposure": e.name, "reason": e.reason} for e in unknown if e.state != "invalid"
            ],
            "geometry_mismatch": [{"exposure": m.exposure, "quadrants": m.value} for m in flipped],
            "failed": [
                {"exposure": name, "stage": r.stage, "version": r.stage_version, "error": r.error}
                for name, r in failed
            ],
            "header_warnings": [
                {"exposure": e.name, "warnings": e.header_warnings} for e in warned
            ],
            "quality_outcome_counts": [
                {"stage": st, "code": code, "exposures": n} for st, code, n in outcome_counts
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
                for o in outcomes
            ],
        }
        sys.stdout.write(json.dumps(json_clean(payload), indent=1) + "\n")
        return
    table = Table(title=f"viskom status ({shown})")
    for col in ("date", "frame type", "state", "exposures"):
        table.add_column(col)
    for row in summary:
        table.add_row(
            str(row["date"] or "?"), str(row["frame_type"] or "-"), row["state"], str(row["count"])
        )
    out.print(table)
    if not summary:
        out.print("no exposures registered yet: `viskom ingest PATH`")
    else:
        runs = Table(title="stages (registered exposures they apply to)")
        for col in ("stage", "measured", "found nothing", "failed", "pending"):
            runs.add_column(col, justify="left" if col == "stage" else "right")
        for name, ok, empty, failed_n, pending in stages:
            runs.add_row(name, str(ok), str(empty), str(failed_n), str(pending))
        out.print(runs)
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
    if not writable:
        out.print("[yellow]read-only[/yellow]: this user cannot write the store (status only)")
    live = [c for c in claims if not c.expired(now)]
    stale = [c for c in claims if c.expired(now)]
    if live:
        hosts = sorted({f"{c.host} pid {c.pid}" for c in live})
        out.print(f"running: {len(live)} unit(s) claimed by {', '.join(hosts)}")
    if stale:
        out.print(
            f"[yellow]stale[/yellow]: {len(stale)} claim(s) whose holder stopped renewing its "
            "lease (killed?); the next run takes them"
        )
    for exp in invalid:
        out.print(f"[red]invalid[/red] {exp.name}: {exp.reason}")
    for exp in unknown:
        if exp.state != "invalid":
            out.print(f"[yellow]unknown type[/yellow] {exp.name}: {exp.reason}")
    for m in flipped:
        out.print(
            f"[yellow]geometry[/yellow] {m.exposure}: {m.value:.0f} quadrant(s) whose bias-only "
            "columns or rows are not where the header puts them "
            f"(`viskom metrics --exposure {m.exposure} --metric geometry_mismatch`)"
        )
    for name, runrow in failed:
        out.print(
            f"[red]failed[/red] {name} {runrow.stage} v{runrow.stage_version}: {runrow.error}"
        )
    for exp in warned:
        problems = [HeaderProblem.from_dict(w) for w in exp.header_warnings or []]
        for line in summarise_problems(problems):
            out.print(f"[yellow]header[/yellow] {exp.name}: {escape(line)}")
    if outcome_counts:
        counts = Table(title="quality outcomes (what a monitor found nothing of or left out)")
        for col in ("stage", "code", "exposures"):
            counts.add_column(col)
        for stage_name, code, n in outcome_counts:
            counts.add_row(stage_name, code, str(n))
        out.print(counts)
        rows = [(o.exposure, o.stage, o.code, o.unit, o.message) for o in outcomes]
        for line in outcome_lines(rows, limit=20):
            out.print(f"[yellow]outcome[/yellow] {escape(line)}")


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


def iq(
    config: ConfigOption = None,
    month: Annotated[str | None, typer.Option(help="calendar month YYYY-MM")] = None,
    from_visql: Annotated[
        Path | None, typer.Option("--from-visql", help="score VISQL's psfmoments_YYYYMM.txt")
    ] = None,
    fmt: Annotated[str, format_option("table")] = "table",
) -> None:
    """Per-exposure PSF medians and IQ scores of a month (or of a VISQL month table)."""
    from viskom.measure.iq import IQReference, iq_class
    from viskom.pipeline.iq import EXTRA_COLUMNS, IQ_COLUMNS, iq_rows_from_store, iq_rows_visql

    check_format(fmt)
    if (month is None) == (from_visql is None):
        raise typer.BadParameter("give exactly one of --month YYYY-MM or --from-visql FILE")
    columns = list(IQ_COLUMNS)
    if from_visql is not None:
        settings = load(config, required=False)  # the [iq] section, if any
        reference = IQReference.from_mapping(settings.iq.reference_mapping())
        try:
            rows = iq_rows_visql(from_visql, reference)
        except (OSError, ValueError) as exc:
            raise fail(str(exc)) from None
    else:
        settings = load(config)
        reference = IQReference.from_mapping(settings.iq.reference_mapping())
        with open_store(settings) as store:
            try:
                rows = iq_rows_from_store(store, month, reference)
            except ValueError as exc:
                raise typer.BadParameter(str(exc)) from None
        columns += list(EXTRA_COLUMNS)
    if fmt != "table":
        emit(fmt, columns, [[r.get(c) for c in columns] for r in rows], digits=None)
        return
    # A compact fixed-width table that stays readable in an 80-column terminal.
    ok, reject = settings.iq.ok_below, settings.iq.reject_above
    out.print(f"IQ reference: {reference.name}; OK < {ok:g}, rejected > {reject:g}")
    out.print(f"{'exposure':<58} {'R2':>6} {'e1':>7} {'e2':>7} {'score':>8}  class")
    for r in rows:
        out.print(
            f"{r['exposure'][:58]:<58} {r['r2']:6.3f} {r['e1']:7.4f} {r['e2']:7.4f} "
            f"{r['score']:8.1f}  {iq_class(r['score'], ok=ok, reject=reject)}",
            highlight=False,
        )
    out.print(f"{len(rows)} exposures")
