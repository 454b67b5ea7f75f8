"""The `viskom` command's typer application: every command and its options.

Commands live in `pipeline_cmds` (init, sim, ingest, run, demo), `query` (metrics,
products, iq), `status_cmd` (status) and `external` (gaia-match, gaia, goes, movie);
`common` has what they share.
"""

from __future__ import annotations

from typing import Annotated

import typer

from viskom import __version__
from viskom.cli import (
    alerts_cmd,
    external,
    fetch_cmd,
    map_cmd,
    pipeline_cmds,
    query,
    site_cmd,
    status_cmd,
    watch_cmd,
)
from viskom.cli.common import out

app = typer.Typer(
    name="viskom",
    help="Quick-look monitor for the VIS camera of Euclid: fetch, register, measure, present.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        out.print(f"viskom {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """Quick-look monitor for the VIS camera of Euclid: fetch, register, measure, present."""


@app.command()
def version() -> None:
    """Print viskom's version."""
    out.print(__version__)


for command in (pipeline_cmds.init, pipeline_cmds.sim, pipeline_cmds.ingest, pipeline_cmds.run):
    app.command()(command)
app.command()(query.metrics)
app.command()(query.products)
app.command()(status_cmd.status)
app.command()(query.iq)
app.command("gaia-match")(external.gaia_match)
gaia_app = typer.Typer(
    help="Gaia DR3: fill and inspect the tile cache (VizieR, ESA TAP, local catalogues).",
    no_args_is_help=True,
)
gaia_app.command("cone")(external.gaia_cone)
gaia_app.command("seed")(external.gaia_seed)
app.add_typer(gaia_app, name="gaia")
goes_app = typer.Typer(
    help="GOES space weather: X-ray (XRS) fluxes and >=10 MeV protons.", no_args_is_help=True
)
goes_app.command("show")(external.goes_show)
goes_app.command("protons")(external.goes_protons)
app.add_typer(goes_app, name="goes")
app.command()(external.movie)
app.command()(pipeline_cmds.demo)
app.command()(watch_cmd.watch)
app.command()(fetch_cmd.fetch)
app.command("map")(map_cmd.map_)
app.command()(site_cmd.site)
app.command()(site_cmd.serve)
app.add_typer(alerts_cmd.app, name="alerts")

__all__ = ["app"]
