"""`viskom init`, `sim`, `ingest`, `run` and `demo`: set up, register and measure."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from viskom.cli.common import ConfigOption, console, fail, load, open_store, out, parse_time
from viskom.cli.status_report import outcome_lines


def init(
    directory: Annotated[Path, typer.Argument(help="folder for viskom.toml and the data root")],
    force: Annotated[bool, typer.Option(help="overwrite an existing viskom.toml")] = False,
) -> None:
    """Write a commented default viskom.toml into DIRECTORY."""
    from viskom.config import ConfigError, write_default_config

    try:
        path = write_default_config(directory, overwrite=force)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    console.print(f"wrote {path}; `cd {directory}` and run `viskom ingest PATH` then `viskom run`")


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
        outdir, kind, count, seed=seed, start=parse_time(start), config=cfg, defect=defect
    )
    for f in frames:
        out.print(str(f.path))


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or folders (searched recursively)")],
    config: ConfigOption = None,
) -> None:
    """Register frames: read headers, classify, verify; bad files are recorded with a reason."""
    from viskom.le1.header import summarise_problems
    from viskom.pipeline.register import ingest as do_ingest

    settings = load(config)
    with open_store(settings) as store:
        try:
            report = do_ingest(store, paths, rules_path=settings.rules_path)
        except (FileNotFoundError, ValueError) as exc:
            raise fail(str(exc)) from None
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


def run(
    config: ConfigOption = None,
    workers: Annotated[int | None, typer.Option(min=1, help="override settings.workers")] = None,
    force: Annotated[bool, typer.Option(help="re-run every stage, even if up to date")] = False,
    retry_failed: Annotated[bool, typer.Option(help="also re-run stages that failed")] = False,
    exposure: Annotated[list[str] | None, typer.Option(help="only these exposures")] = None,
    executor: Annotated[
        str | None, typer.Option(help="process, serial or dask (default: the settings')")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="with dask: an existing cluster, e.g. tcp://host:8786")
    ] = None,
    month_products: Annotated[
        bool | None,
        typer.Option(
            "--month-products/--no-month-products",
            help="make the month products now / not in this run (default: when [run] "
            "period_every_s has passed since they were last made)",
        ),
    ] = None,
) -> None:
    """Run every pending stage on every registered exposure (incremental), then the month
    products of the months measured anew."""
    from viskom.pipeline.executors import make_executor
    from viskom.pipeline.service import run_pending

    settings = load(config)
    kind = executor or settings.executor
    if kind not in ("process", "serial", "dask"):
        raise typer.BadParameter("--executor must be process, serial or dask")
    if scheduler and kind != "dask":
        raise typer.BadParameter("--scheduler needs --executor dask")
    n_workers = workers or settings.workers
    pool = make_executor(kind, n_workers, scheduler or settings.scheduler)
    with open_store(settings) as store:
        if exposure:
            known = {e.name for e in store.list_exposures()}
            from viskom.cli.common import check_names

            check_names("exposure", exposure, known)

        def progress(done: int, total: int, name: str) -> None:
            console.print(f"  [{done}/{total}] {name}")

        try:
            done = run_pending(
                settings, pool, store=store, force=force, retry_failed=retry_failed,
                exposures=exposure, workers=n_workers, progress=progress,
                month_products=month_products,
            )  # fmt: skip
        finally:
            pool.close()
    summary = done.summary
    console.print(
        f"run: {summary.exposures} exposures, {summary.stages_ok} stage runs ok, "
        f"{summary.stages_failed} failed, "
        + (f"{summary.stages_empty} found nothing, " if summary.stages_empty else "")
        + f"{summary.skipped} up to date"
        + (f", {summary.left} left to another run" if summary.left else "")
        + f" ({summary.seconds:.1f} s)"
    )
    for note in summary.notes:
        console.print(f"  {note}")
    if summary.outcomes:
        n = len(summary.outcomes)
        console.print(f"  {n} quality outcome{'s' if n != 1 else ''}:")
        rows = [(e, st, o.code, o.unit, o.message) for e, st, o in summary.outcomes]
        for line in outcome_lines(rows):
            console.print(f"    [yellow]{escape(line)}[/yellow]")
    if summary.blocked:
        console.print(
            f"  [yellow]{summary.blocked} stage(s) wait for a stage that failed[/yellow] "
            "(see `viskom status`; `viskom run --retry-failed` tries again)"
        )
    for name, stage, error in summary.failures:
        console.print(f"  [red]failed[/red] {name} {stage}: {error}")
    periods_line = done.periods.line()
    if periods_line:
        console.print(escape(periods_line), style="red" if done.periods.error else None)
    if done.alerts.exposures or done.alerts.error:
        console.print(done.alerts.line())
    if done.site is not None:
        console.print(done.site.line())


def demo(
    directory: Annotated[Path, typer.Argument(help="folder for the demo")] = Path("viskom-demo"),
    seed: Annotated[int, typer.Option(help="simulation seed")] = 2024,
    workers: Annotated[int | None, typer.Option(min=1, help="parallel workers")] = None,
) -> None:
    """Simulate a small day of frames, ingest them, run the pipeline and show the status."""
    from viskom.cli.status_cmd import status
    from viskom.demo import prepare_demo

    directory = directory.resolve()
    cfg_path = prepare_demo(directory, seed=seed, say=console.print)
    settings = load(cfg_path)
    ingest([settings.raw_path], config=cfg_path)
    run(
        config=cfg_path, workers=workers, force=False, retry_failed=False, exposure=None,
        executor=None, scheduler=None,
    )  # fmt: skip
    status(config=cfg_path, fmt="table", as_json=False)
    from viskom.pipeline.site import site_dir

    index = site_dir(settings) / "index.html"
    console.print(
        f"\ndone. The dashboard: {index.as_uri()}\n"
        f"(or `cd {directory} && viskom serve`, then http://127.0.0.1:8000/); "
        "try `viskom status`, `viskom alerts`, `viskom metrics --unit FPA --metric read_noise_e`"
    )
