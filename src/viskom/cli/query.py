"""`viskom metrics`, `status`, `products` and `iq`: what the store knows, as csv, json or a
table; unknown names are errors that list the close ones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from viskom.cli.common import (
    ConfigOption,
    check_format,
    check_names,
    emit,
    fail,
    format_option,
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
