"""`viskom gaia-match`, `gaia cone|seed`, `goes show|protons` and `movie`: the external data
(VISQL's tables, Gaia DR3, GOES) and the movies of a period."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import numpy as np

from viskom.cli.common import (
    ConfigOption,
    check_format,
    console,
    emit,
    fail,
    format_option,
    json_clean,
    load,
    open_store,
    out,
    parse_time,
)


def gaia_match(
    stars: Annotated[Path, typer.Option(help="VISQL moments catalogue (*_stars2_mom.cat)")],
    gaia: Annotated[Path, typer.Option(help="Gaia in the instrument frame (*_stars2_gaia.cat)")],
    exptime: Annotated[float, typer.Option(help="exposure time of the VIS fluxes [s]")] = 560.52,
    gains: Annotated[
        Path | None, typer.Option(help="relative quadrant gains ('EXT gain'); default all 1")
    ] = None,
    match_radius_pix: Annotated[float, typer.Option(help="pair tolerance [pix]")] = 20.0,
    fmt: Annotated[str, format_option("table", ("json", "table"))] = "table",
) -> None:
    """Match VISQL-format star and Gaia tables: astrometric offsets, gradients and VIS/Gaia."""
    import numpy as np

    from viskom.measure.gaia import compare_with_gaia
    from viskom.sources.visql import (
        read_gaia_instrument_catalogue,
        read_quadrant_gains,
        read_star_moments,
    )

    check_format(fmt, ("json", "table"))
    if not exptime > 0:
        raise typer.BadParameter("--exptime must be positive")
    try:
        mom = read_star_moments(stars)
        cat = read_gaia_instrument_catalogue(gaia)
        gain_table = read_quadrant_gains(gains) if gains is not None else None
    except (OSError, ValueError) as exc:
        raise fail(str(exc)) from None
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
        out.print_json(json.dumps(json_clean(summary)))
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
    import numpy as np

    from viskom.sources.gaia import GaiaClient, GaiaUnavailable

    settings = load(config, required=False)
    client = GaiaClient(
        settings.gaia_cache_path, online=not offline, timeout_s=settings.gaia.timeout_s
    )
    when = parse_time(epoch) if epoch else None
    try:
        table = client.cone(ra, dec, radius, epoch=when)
    except (GaiaUnavailable, ValueError) as exc:
        raise fail(str(exc)) from None
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


def gaia_seed(
    files: Annotated[list[Path], typer.Argument(help="Parquet cones (e.g. simulator gaia_*)")],
    config: ConfigOption = None,
) -> None:
    """Store local Gaia-like cones (with ra0/dec0/radius_deg metadata) in the tile cache."""
    from viskom.sources.gaia import GaiaCache

    settings = load(config, required=False)
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
    t0, t1 = parse_time(start), parse_time(end)
    assert t0 is not None and t1 is not None
    if t1 <= t0:
        console.print(f"[red]error:[/red] --end {end} is not after --start {start}")
        raise typer.Exit(2)
    return t0, t1


def _goes_client(config: Path | None, cache: Path | None, offline: bool):
    """The GOES client on --cache, else on the settings' GOES cache ([goes] cache_dir, default
    data_root/goes; ./data/goes without settings), with their timeout."""
    from viskom.sources.goes import GoesClient

    settings = load(config, required=False)
    return GoesClient(cache or settings.goes_cache_path, offline=offline,
                      timeout_s=settings.goes.timeout_s)  # fmt: skip


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
        raise fail(str(exc)) from None
    _goes_report(missing, len(days_covering(*window)))
    return series


def _goes_out(fmt: str, header: list[str], times: np.ndarray, *columns: np.ndarray) -> None:
    """A GOES series as CSV (ISO UTC times, 6 significant digits, bad samples empty), JSON
    or a table."""
    import numpy as np

    iso = np.datetime_as_string(np.asarray(times, dtype="datetime64[ms]"), unit="s")
    if fmt != "csv":
        rows = [
            (f"{t}Z", *(float(v) for v in values)) for t, *values in zip(iso, *columns, strict=True)
        ]
        emit(fmt, header, rows, digits=6)
        return
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(header)
    for t, *values in zip(iso, *columns, strict=True):
        writer.writerow([f"{t}Z", *("" if v != v else f"{v:.6g}" for v in values)])


def goes_show(
    file: Annotated[Path | None, typer.Argument(help="a GOES XRS netCDF file (.nc)")] = None,
    start: GoesStart = None,
    end: GoesEnd = None,
    offline: GoesOffline = False,
    cache: GoesCache = None,
    satellite: GoesSatellite = None,
    product: Annotated[str, typer.Option(help="archive product: avg1m or flx1s")] = "avg1m",
    config: ConfigOption = None,
    fmt: Annotated[str, format_option("csv")] = "csv",
) -> None:
    """Print XRS fluxes: time,xrsa_flux,xrsb_flux (ISO UTC; bad or missing left empty).

    From a FILE, or for --start/--end from NOAA's archive through the cache.
    """
    from viskom.sources.goes import read_xrs

    check_format(fmt)
    series = _goes_series(
        file,
        _goes_window(file, start, end),
        read_xrs,
        lambda window: _goes_client(config, cache, offline).xrs_range(
            *window, satellite=satellite, product=product
        ),
    )
    _goes_out(
        fmt, ["time", "xrsa_flux", "xrsb_flux"], series.time, series.xrsa_flux, series.xrsb_flux
    )


def goes_protons(
    file: Annotated[Path | None, typer.Argument(help="a GOES SGPS L2 avg5m file (.nc)")] = None,
    start: GoesStart = None,
    end: GoesEnd = None,
    offline: GoesOffline = False,
    cache: GoesCache = None,
    satellite: GoesSatellite = None,
    config: ConfigOption = None,
    fmt: Annotated[str, format_option("csv")] = "csv",
) -> None:
    """Print >=10 MeV proton flux (pfu): time,flux_ge10mev (bad or missing left empty).

    From a FILE, or for --start/--end from NOAA's archive through the cache.
    """
    from viskom.sources.goes import read_sgps

    check_format(fmt)
    series = _goes_series(
        file,
        _goes_window(file, start, end),
        read_sgps,
        lambda window: _goes_client(config, cache, offline).protons_range(
            *window, satellite=satellite
        ),
    )
    _goes_out(fmt, ["time", "flux_ge10mev"], series.time, series.flux_ge10mev)


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

    from viskom.pipeline.movies import MOVIE_PANELS, make_movie

    if kind not in MOVIE_PANELS:
        raise fail(f"--kind must be one of {', '.join(MOVIE_PANELS)}")
    try:
        since = datetime.fromisoformat(start).replace(tzinfo=UTC)
        until = datetime.fromisoformat(end).replace(tzinfo=UTC) + timedelta(days=1)
    except ValueError as exc:
        raise fail(str(exc)) from None
    settings = load(config)
    with open_store(settings) as store:
        made = make_movie(
            store, settings, since, until, kind, output, label=f"{start}_{end}", fps=fps,
            progress=True,
        )  # fmt: skip
    if made.path is None:
        raise fail(f"no exposure between {start} and {end} has its plots yet")
    console.print(
        f"{made.path}: {made.frames} frames"
        + (f" ({made.skipped} without plots)" if made.skipped else "")
    )
