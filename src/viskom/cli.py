"""The `viskom` command: thin calls into the layers (config, sources, pipeline, store)."""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from viskom import __version__
from viskom.config import ConfigError, Settings, load_settings, write_default_config

app = typer.Typer(
    name="viskom",
    help="Quick-look monitor for the VIS camera of Euclid: fetch, register, measure, present.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
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


def _settings(config: Path | None, *, required: bool = True) -> Settings:
    """The settings, or exit 2 with the reason; `required=False`: defaults without a file."""
    try:
        return load_settings(config, required=required)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _open_store(settings: Settings):
    from viskom.store import Store

    if settings.db_url.startswith("sqlite:///"):
        Path(settings.db_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        return Store(settings.db_url)
    except Exception as exc:
        console.print(f"[red]error:[/red] cannot open the database {settings.db_url}: {exc}")
        raise typer.Exit(2) from None


def _parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO time such as 2024-07-13T00:00:00"
        ) from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


@app.command()
def version() -> None:
    """Print viskom's version."""
    out.print(__version__)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="folder for viskom.toml and the data root")],
    force: Annotated[bool, typer.Option(help="overwrite an existing viskom.toml")] = False,
) -> None:
    """Write a commented default viskom.toml into DIRECTORY."""
    try:
        path = write_default_config(directory, overwrite=force)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"wrote {path}; `cd {directory}` and run `viskom ingest PATH` then `viskom run`")


@app.command()
def sim(
    outdir: Annotated[Path, typer.Argument(help="folder to write frames and truth files into")],
    kind: Annotated[str, typer.Option(help="science|dark|bias|flat|charge")] = "science",
    count: Annotated[int, typer.Option(min=1, help="number of frames")] = 1,
    geometry: Annotated[str, typer.Option(help="full (2128x2086) or small quadrants")] = "small",
    seed: Annotated[int, typer.Option(help="random seed (same seed, same bytes)")] = 1,
    start: Annotated[str, typer.Option(help="DATE-OBS of the first frame (ISO, UTC)")] = (
        "2024-07-13T00:00:00"
    ),
    naming: Annotated[str, typer.Option(help="archive or iws file names")] = "archive",
    gzip: Annotated[bool, typer.Option("--gzip", help="write .fits.gz")] = False,
    defect: Annotated[
        str | None,
        typer.Option(help="truncated|missing-extensions|unknown-type|flipped-geometry|not-fits"),
    ] = None,
) -> None:
    """Simulate LE1 VIS frames with a truth file beside each (test data, demos)."""
    from viskom.sources.simulator import DEFECTS, FRAME_KINDS, SimConfig, simulate_set

    if kind not in FRAME_KINDS:
        raise typer.BadParameter(f"--kind must be one of {', '.join(FRAME_KINDS)}")
    if geometry not in ("full", "small"):
        raise typer.BadParameter("--geometry must be full or small")
    if defect is not None and defect not in DEFECTS:
        raise typer.BadParameter(f"--defect must be one of {', '.join(DEFECTS)}")
    cfg = SimConfig(geometry=geometry, naming=naming, gzip=gzip)
    frames = simulate_set(
        outdir, kind, count, seed=seed, start=_parse_time(start), config=cfg, defect=defect
    )
    for f in frames:
        out.print(str(f.path))


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or folders (searched recursively)")],
    config: ConfigOption = None,
) -> None:
    """Register frames: read headers, classify, verify; bad files are recorded with a reason."""
    from viskom.pipeline.register import ingest as do_ingest

    settings = _settings(config)
    with _open_store(settings) as store:
        try:
            report = do_ingest(store, paths, rules_path=settings.rules_path)
        except (FileNotFoundError, ValueError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
    from viskom.le1.header import summarise_problems

    n_warned = len(report.header_warnings)
    console.print(
        f"ingest: {len(report.new)} new, {len(report.updated)} updated, "
        f"{len(report.unchanged)} unchanged; {len(report.invalid)} invalid, "
        f"{len(report.unknown_type)} of unknown type"
        + (f", {n_warned} with header warnings" if n_warned else "")
    )
    for name, reason in report.invalid:
        console.print(f"  [red]invalid[/red] {name}: {reason}")
    for name, reason in report.unknown_type:
        console.print(f"  [yellow]unknown type[/yellow] {name}: {reason}")
    for name, reason in report.duplicates:
        console.print(f"  [yellow]duplicate name[/yellow] {name}: {reason}")
    for name, problems in report.header_warnings:
        for line in summarise_problems(problems):
            console.print(f"  [yellow]header[/yellow] {name}: {escape(line)}")


def _outcome_lines(rows: list[tuple[str, str, str, str, str]], limit: int = 0) -> list[str]:
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


@app.command()
def run(
    config: ConfigOption = None,
    workers: Annotated[int | None, typer.Option(min=1, help="override settings.workers")] = None,
    force: Annotated[bool, typer.Option(help="re-run every stage, even if up to date")] = False,
    retry_failed: Annotated[bool, typer.Option(help="also re-run stages that failed")] = False,
    exposure: Annotated[list[str] | None, typer.Option(help="only these exposures")] = None,
) -> None:
    """Run every pending stage on every registered exposure (incremental)."""
    from viskom.pipeline.executors import make_executor
    from viskom.pipeline.runner import run_pipeline

    settings = _settings(config)
    n_workers = workers or settings.workers
    executor = make_executor(settings.executor, n_workers)
    with _open_store(settings) as store:

        def progress(done: int, total: int, name: str) -> None:
            console.print(f"  [{done}/{total}] {name}")

        summary = run_pipeline(
            store,
            settings,
            executor,
            force=force,
            retry_failed=retry_failed,
            exposures=exposure,
            workers=n_workers,
            progress=progress,
        )
    console.print(
        f"run: {summary.exposures} exposures, {summary.stages_ok} stage runs ok, "
        f"{summary.stages_failed} failed, "
        + (f"{summary.stages_empty} found nothing, " if summary.stages_empty else "")
        + f"{summary.skipped} up to date ({summary.seconds:.1f} s)"
    )
    for note in summary.notes:
        console.print(f"  {note}")
    if summary.outcomes:
        n = len(summary.outcomes)
        console.print(f"  {n} quality outcome{'s' if n != 1 else ''}:")
        rows = [(e, st, o.code, o.unit, o.message) for e, st, o in summary.outcomes]
        for line in _outcome_lines(rows):
            console.print(f"    [yellow]{escape(line)}[/yellow]")
    if summary.blocked:
        console.print(
            f"  [yellow]{summary.blocked} stage(s) wait for a stage that failed[/yellow] "
            "(see `viskom status`; `viskom run --retry-failed` tries again)"
        )
    for name, stage, error in summary.failures:
        console.print(f"  [red]failed[/red] {name} {stage}: {error}")
    if summary.months:
        from viskom.pipeline.aggregate import update_month_products

        with _open_store(settings) as store:
            try:
                made = update_month_products(store, settings, summary.months)
                console.print(f"month products: {len(made)} files for {sorted(summary.months)}")
            except Exception as exc:  # aggregates never undo the run's measurements
                console.print(f"[red]month products failed:[/red] {exc}")


@app.command()
def metrics(
    config: ConfigOption = None,
    exposure: Annotated[list[str] | None, typer.Option(help="exposure name(s)")] = None,
    metric: Annotated[list[str] | None, typer.Option(help="metric name(s)")] = None,
    unit: Annotated[
        list[str] | None, typer.Option(help="FPA, a CCD R-C or a quadrant R-C.Q")
    ] = None,
    start: Annotated[str | None, typer.Option(help="from this DATE-OBS (ISO)")] = None,
    end: Annotated[str | None, typer.Option(help="until this DATE-OBS (ISO)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or json")] = "csv",
) -> None:
    """Print metrics as CSV (exposure,unit,metric,value) or JSON."""
    if fmt not in ("csv", "json"):
        raise typer.BadParameter("--format must be csv or json")
    settings = _settings(config)
    with _open_store(settings) as store:
        rows = store.metrics(
            exposures=exposure,
            metrics=metric,
            units=unit,
            since=_parse_time(start),
            until=_parse_time(end),
        )
    if fmt == "json":
        payload = [
            {
                "exposure": r.exposure,
                "unit": r.unit,
                "metric": r.metric,
                "value": _json_num(r.value),
            }
            for r in rows
        ]
        sys.stdout.write(json.dumps(payload, indent=1) + "\n")
        return
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["exposure", "unit", "metric", "value"])
    for r in rows:
        writer.writerow([r.exposure, r.unit, r.metric, "" if r.value is None else repr(r.value)])


def _json_num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


@app.command()
def status(
    config: ConfigOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="everything as one JSON document on stdout")
    ] = False,
) -> None:
    """Exposures by date, type and state; failed stages, invalid files, header warnings and
    quality outcomes (what monitors found nothing of), with reasons."""
    from sqlalchemy import make_url

    from viskom.le1.header import HeaderProblem, summarise_problems

    settings = _settings(config)
    with _open_store(settings) as store:
        summary = store.status_summary()
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
    if as_json:
        payload = {
            "database": make_url(settings.db_url).render_as_string(hide_password=True),
            "exposures": [
                {**row, "date": row["date"].isoformat() if row["date"] else None} for row in summary
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
        sys.stdout.write(json.dumps(_json_clean(payload), indent=1) + "\n")
        return
    table = Table(title=f"viskom status ({settings.db_url})")
    for col in ("date", "frame type", "state", "exposures"):
        table.add_column(col)
    for row in summary:
        table.add_row(
            str(row["date"] or "?"), str(row["frame_type"] or "-"), row["state"], str(row["count"])
        )
    out.print(table)
    if not summary:
        out.print("no exposures registered yet: `viskom ingest PATH`")
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
        for line in _outcome_lines(rows, limit=20):
            out.print(f"[yellow]outcome[/yellow] {escape(line)}")


@app.command()
def iq(
    config: ConfigOption = None,
    month: Annotated[str | None, typer.Option(help="calendar month YYYY-MM")] = None,
    from_visql: Annotated[
        Path | None, typer.Option("--from-visql", help="score VISQL's psfmoments_YYYYMM.txt")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or table")] = "table",
) -> None:
    """Per-exposure PSF medians and IQ scores of a month (or of a VISQL month table)."""
    from viskom.measure.iq import IQReference, iq_class
    from viskom.pipeline.iq import EXTRA_COLUMNS, IQ_COLUMNS, iq_rows_from_store, iq_rows_visql

    if fmt not in ("csv", "table"):
        raise typer.BadParameter("--format must be csv or table")
    if (month is None) == (from_visql is None):
        raise typer.BadParameter("give exactly one of --month YYYY-MM or --from-visql FILE")
    columns = list(IQ_COLUMNS)
    if from_visql is not None:
        settings = _settings(config, required=False)  # the [iq] section, if any
        reference = IQReference.from_mapping(settings.iq.reference_mapping())
        try:
            rows = iq_rows_visql(from_visql, reference)
        except (OSError, ValueError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
    else:
        settings = _settings(config)
        reference = IQReference.from_mapping(settings.iq.reference_mapping())
        with _open_store(settings) as store:
            try:
                rows = iq_rows_from_store(store, month, reference)
            except ValueError as exc:
                raise typer.BadParameter(str(exc)) from None
        columns += list(EXTRA_COLUMNS)
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow([_csv_value(r.get(c)) for c in columns])
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


def _csv_value(value: object, digits: int | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return f"{value:.{digits}g}" if digits else repr(value)
    return str(value)


@app.command("gaia-match")
def gaia_match(
    stars: Annotated[Path, typer.Option(help="VISQL moments catalogue (*_stars2_mom.cat)")],
    gaia: Annotated[Path, typer.Option(help="Gaia in the instrument frame (*_stars2_gaia.cat)")],
    exptime: Annotated[float, typer.Option(help="exposure time of the VIS fluxes [s]")] = 560.52,
    gains: Annotated[
        Path | None, typer.Option(help="relative quadrant gains ('EXT gain'); default all 1")
    ] = None,
    match_radius_pix: Annotated[float, typer.Option(help="pair tolerance [pix]")] = 20.0,
    fmt: Annotated[str, typer.Option("--format", help="json or text")] = "text",
) -> None:
    """Match VISQL-format star and Gaia tables: astrometric offsets, gradients and VIS/Gaia."""
    from viskom.measure.gaia import compare_with_gaia
    from viskom.sources.visql import (
        read_gaia_instrument_catalogue,
        read_quadrant_gains,
        read_star_moments,
    )

    if fmt not in ("json", "text"):
        raise typer.BadParameter("--format must be json or text")
    if not exptime > 0:
        raise typer.BadParameter("--exptime must be positive")
    try:
        mom = read_star_moments(stars)
        cat = read_gaia_instrument_catalogue(gaia)
        gain_table = read_quadrant_gains(gains) if gains is not None else None
    except (OSError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    result = compare_with_gaia(
        mom["extname"], mom["x_world"], mom["y_world"], mom["flux"],
        cat["x_deg"], cat["y_deg"], cat["gmag"], cat["bp_rp"],
        exptime=exptime, gains=gain_table, source_id=cat["source_id"],
        match_radius_pix=match_radius_pix,
    )  # fmt: skip
    summary = result.summary()
    if gains is not None:
        missing = sorted(set(np.asarray(mom["extname"]).astype(str)) - set(gain_table or {}))
        summary["quadrants_without_gain"] = missing
    if fmt == "json":
        out.print_json(json.dumps(_json_clean(summary)))
        return
    g = summary["gradients_pix"]
    r = summary["vis_over_gaia"]
    out.print(
        f"matched {summary['n_matched']} of {summary['n_vis']} VIS stars "
        f"({summary['n_gaia']} Gaia); sigma {summary['sigma_pix']:.3f} pix",
        highlight=False,
        markup=False,
    )
    out.print(
        f"offset Gaia-VIS dx {summary['dx_pix']:.3f} dy {summary['dy_pix']:.3f} pix; gradients "
        f"[pix/0.75 deg] ddx/dx {g[0]:.3f} ddy/dx {g[1]:.3f} ddx/dy {g[2]:.3f} ddy/dy {g[3]:.3f}",
        highlight=False,
        markup=False,
    )
    out.print(
        f"VIS/Gaia at BP-RP 0.75 1.75 2.75: {r[0]:.4f} {r[1]:.4f} {r[2]:.4f} "
        f"({summary['colour_fit']['n_fit']} stars, rms {summary['colour_fit']['rms']:.4f})",
        highlight=False,
        markup=False,
    )


def _json_clean(value: Any) -> Any:
    """NaN and infinities become null, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {k: _json_clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


gaia_app = typer.Typer(
    help="Gaia DR3: fill and inspect the tile cache (VizieR, ESA TAP, local catalogues).",
    no_args_is_help=True,
)
app.add_typer(gaia_app, name="gaia")


@gaia_app.command("cone")
def gaia_cone(
    ra: Annotated[float, typer.Option(help="cone centre RA [deg]")],
    dec: Annotated[float, typer.Option(help="cone centre Dec [deg]")],
    radius: Annotated[float, typer.Option(help="cone radius [deg]")] = 0.55,
    epoch: Annotated[
        str | None, typer.Option(help="move stars to this date (ISO) with their proper motions")
    ] = None,
    offline: Annotated[bool, typer.Option(help="cache only, never the network")] = False,
    output: Annotated[Path | None, typer.Option(help="write the stars as CSV here")] = None,
    config: ConfigOption = None,
) -> None:
    """Gaia DR3 stars of a cone: from the cache, fetching missing tiles unless --offline."""
    from viskom.sources.gaia import GaiaClient, GaiaUnavailable

    settings = _settings(config, required=False)
    client = GaiaClient(
        settings.gaia_cache_path, online=not offline, timeout_s=settings.gaia.timeout_s
    )
    when = _parse_time(epoch) if epoch else None
    try:
        table = client.cone(ra, dec, radius, epoch=when)
    except (GaiaUnavailable, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    g = np.asarray(table["Gmag"], float)
    console.print(
        f"{len(table)} Gaia DR3 stars within {radius:g} deg of RA {ra:.5f} Dec {dec:.5f}"
        + (f", G {np.nanmin(g):.2f}-{np.nanmax(g):.2f}" if len(table) else "")
        + f"; cache {client.cache.folder}",
        highlight=False,
    )
    if output is not None:
        table.write(output, format="ascii.csv", overwrite=True)
        console.print(f"written {output}")


@gaia_app.command("seed")
def gaia_seed(
    files: Annotated[list[Path], typer.Argument(help="Parquet cones (e.g. simulator gaia_*)")],
    config: ConfigOption = None,
) -> None:
    """Store local Gaia-like cones (with ra0/dec0/radius_deg metadata) in the tile cache."""
    from viskom.sources.gaia import GaiaCache

    settings = _settings(config, required=False)
    cache = GaiaCache(settings.gaia_cache_path)
    failed = 0
    for path in files:
        try:
            tiles = cache.seed_from_file(path)
        except (OSError, ValueError, KeyError) as exc:
            console.print(f"[red]error:[/red] {path}: {type(exc).__name__}: {exc}")
            failed += 1
            continue
        console.print(f"{path.name}: {len(tiles)} tiles", highlight=False)
    if failed:
        raise typer.Exit(2)


goes_app = typer.Typer(
    help="GOES space weather: X-ray (XRS) fluxes and >=10 MeV protons.", no_args_is_help=True
)
app.add_typer(goes_app, name="goes")

GoesStart = Annotated[
    str | None, typer.Option("--start", help="UTC start of the window, e.g. 2024-07-13T00:00")
]
GoesEnd = Annotated[str | None, typer.Option("--end", help="UTC end of the window (excluded)")]
GoesOffline = Annotated[
    bool, typer.Option("--offline", help="use only the cache, never the network")
]
GoesCache = Annotated[
    Path | None,
    typer.Option("--cache", help="GOES cache folder (default: the settings' data_root/goes)"),
]
GoesSatellite = Annotated[
    int | None,
    typer.Option("--satellite", min=1, max=99, help="this GOES only (default: by date)"),
]


def _goes_window(
    file: Path | None, start: str | None, end: str | None
) -> tuple[datetime, datetime] | None:
    """The --start/--end window, None for FILE; exit 2 when the choice is not exactly one."""
    if file is not None and (start or end):
        console.print("[red]error:[/red] give either FILE or --start/--end, not both")
        raise typer.Exit(2)
    if file is not None:
        return None
    if not (start and end):
        console.print("[red]error:[/red] give a FILE, or both --start and --end")
        raise typer.Exit(2)
    t0, t1 = _parse_time(start), _parse_time(end)
    assert t0 is not None and t1 is not None
    if t1 <= t0:
        console.print(f"[red]error:[/red] --end {end} is not after --start {start}")
        raise typer.Exit(2)
    return t0, t1


def _goes_client(config: Path | None, cache: Path | None, offline: bool):
    """The GOES client on --cache, else on data_root/goes of the settings (./data/goes without)."""
    from viskom.sources.goes import GoesClient

    if cache is None:
        cache = _settings(config, required=False).data_path / "goes"
    return GoesClient(cache, offline=offline)


def _goes_report(missing: list[str], n_days: int) -> None:
    """Missing days to stderr; exit 2 when no day at all could be read."""
    from rich.markup import escape

    for message in missing:
        console.print(f"[yellow]warning:[/yellow] {escape(message)}")
    if n_days and len(missing) >= n_days:
        console.print("[red]error:[/red] no GOES data for any day of the window")
        raise typer.Exit(2)


def _goes_series(
    file: Path | None,
    window: tuple[datetime, datetime] | None,
    read_file: Callable[[Path], Any],
    read_range: Callable[[tuple[datetime, datetime]], tuple[Any, list[str]]],
) -> Any:
    """A GOES series from FILE, or for a --start/--end window through the cache (missing
    days reported on stderr); unusable input exits with code 2."""
    from viskom.sources.goes import GoesFileError, days_covering

    if window is None:
        try:
            return read_file(file)
        except (GoesFileError, FileNotFoundError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
    try:
        series, missing = read_range(window)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    _goes_report(missing, len(days_covering(*window)))
    return series


def _goes_csv(header: list[str], times: np.ndarray, *columns: np.ndarray) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(header)
    iso = np.datetime_as_string(np.asarray(times, dtype="datetime64[ms]"), unit="s")
    for t, *values in zip(iso, *columns, strict=True):
        writer.writerow([f"{t}Z", *("" if v != v else f"{v:.6g}" for v in values)])


@goes_app.command("show")
def goes_show(
    file: Annotated[Path | None, typer.Argument(help="a GOES XRS netCDF file (.nc)")] = None,
    start: GoesStart = None,
    end: GoesEnd = None,
    offline: GoesOffline = False,
    cache: GoesCache = None,
    satellite: GoesSatellite = None,
    product: Annotated[str, typer.Option(help="archive product: avg1m or flx1s")] = "avg1m",
    config: ConfigOption = None,
) -> None:
    """Print XRS fluxes as CSV: time,xrsa_flux,xrsb_flux (ISO UTC; bad or missing left empty).

    From a FILE, or for --start/--end from NOAA's archive through the cache.
    """
    from viskom.sources.goes import read_xrs

    series = _goes_series(
        file,
        _goes_window(file, start, end),
        read_xrs,
        lambda window: _goes_client(config, cache, offline).xrs_range(
            *window, satellite=satellite, product=product
        ),
    )
    _goes_csv(["time", "xrsa_flux", "xrsb_flux"], series.time, series.xrsa_flux, series.xrsb_flux)


@goes_app.command("protons")
def goes_protons(
    file: Annotated[Path | None, typer.Argument(help="a GOES SGPS L2 avg5m file (.nc)")] = None,
    start: GoesStart = None,
    end: GoesEnd = None,
    offline: GoesOffline = False,
    cache: GoesCache = None,
    satellite: GoesSatellite = None,
    config: ConfigOption = None,
) -> None:
    """Print >=10 MeV proton flux (pfu) as CSV: time,flux_ge10mev (bad or missing left empty).

    From a FILE, or for --start/--end from NOAA's archive through the cache.
    """
    from viskom.sources.goes import read_sgps

    series = _goes_series(
        file,
        _goes_window(file, start, end),
        read_sgps,
        lambda window: _goes_client(config, cache, offline).protons_range(
            *window, satellite=satellite
        ),
    )
    _goes_csv(["time", "flux_ge10mev"], series.time, series.flux_ge10mev)


@app.command()
def movie(
    start: Annotated[str, typer.Option(help="first day, YYYY-MM-DD (UTC)")],
    end: Annotated[str, typer.Option(help="last day, YYYY-MM-DD (UTC), included")],
    kind: Annotated[str, typer.Option(help="xray: GOES + X-ray map + rf; protons")] = "xray",
    output: Annotated[
        Path | None, typer.Option(help="MP4 file; default in the product tree")
    ] = None,
    fps: Annotated[float, typer.Option(min=0.5, help="frames per second")] = 4.0,
    config: ConfigOption = None,
) -> None:
    """Render a movie of a period: one frame per exposure (VISQL's xmovie), MP4 via ffmpeg."""
    from datetime import timedelta

    from viskom.present.movie import compose_frame, encode_mp4
    from viskom.stages.base import ExposureInfo

    if kind not in ("xray", "protons"):
        console.print("[red]error:[/red] --kind must be xray or protons")
        raise typer.Exit(2)
    try:
        since = datetime.fromisoformat(start).replace(tzinfo=UTC)
        until = datetime.fromisoformat(end).replace(tzinfo=UTC) + timedelta(days=1)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    settings = _settings(config)
    panels = ("goes", "cosmiX", "rf") if kind == "xray" else ("goes", "protons")
    with _open_store(settings) as store:
        exposures = [
            e
            for ft in ("SCIENCE", "DARK")
            for e in store.list_exposures(
                frame_type=ft, state="registered", since=since, until=until
            )
        ]
    exposures.sort(key=lambda e: e.date_obs)
    frames_dir = settings.products_path / "movies" / f".frames_{kind}_{start}_{end}"
    frames, skipped = [], 0
    for e in exposures:
        info = ExposureInfo(
            e.id, e.name, e.path, e.frame_type or "", e.exptime, str(settings.products_path),
            date_obs=e.date_obs.isoformat() if e.date_obs else None,
        )  # fmt: skip
        paths = [info.product(p, "png") for p in panels]
        if not all(p.exists() for p in paths):
            skipped += 1
            continue
        frames.append(compose_frame(paths, frames_dir / f"{len(frames):05d}_{e.name}.png"))
    if not frames:
        console.print(f"[red]error:[/red] no exposure between {start} and {end} has its plots yet")
        raise typer.Exit(2)
    name = f"{'XCOSMIX' if kind == 'xray' else 'PROTONS'}_{start}_{end}.mp4"
    out = output or settings.products_path / "movies" / name
    encode_mp4(frames, out, fps=fps, progress=True)
    console.print(
        f"{out}: {len(frames)} frames" + (f" ({skipped} without plots)" if skipped else "")
    )


@app.command()
def demo(
    directory: Annotated[Path, typer.Argument(help="folder for the demo")] = Path("viskom-demo"),
    seed: Annotated[int, typer.Option(help="simulation seed")] = 2024,
    workers: Annotated[int | None, typer.Option(min=1, help="parallel workers")] = None,
) -> None:
    """Simulate a small day of frames, ingest them, run the pipeline and show the status."""
    from viskom.demo import make_demo_day

    directory = directory.resolve()
    cfg_path = directory / "viskom.toml"
    if not cfg_path.exists():
        write_default_config(directory)
        # the demo day brings its own GOES files and Gaia cones: no network; the simulated
        # instrument's relative gains stand in for a gain calibration
        text = cfg_path.read_text().replace("online = true ", "online = false")
        text = text.replace(
            '# gains_file = "relative_gains.txt"', 'gains_file = "relative_gains.txt"'
        )
        cfg_path.write_text(text)
    settings = _settings(cfg_path)
    console.print(f"simulating a small day of VIS frames into {settings.raw_path} ...")
    paths = make_demo_day(
        settings.raw_path,
        seed=seed,
        goes_cache=settings.goes_cache_path,
        gaia_cache=settings.gaia_cache_path,
        gains_file=directory / "relative_gains.txt",
    )
    console.print(f"  {len(paths)} files")
    ingest([settings.raw_path], config=cfg_path)
    run(config=cfg_path, workers=workers, force=False, retry_failed=False, exposure=None)
    status(config=cfg_path)
    console.print(
        f"\ndone. `cd {directory}` and try `viskom status`, "
        "`viskom metrics --unit FPA --metric read_noise_e`"
    )


if __name__ == "__main__":  # pragma: no cover
    app()
