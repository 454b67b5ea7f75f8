"""`viskom site` (rebuild the dashboard) and `viskom serve` (look at it on a local port)."""

from __future__ import annotations

from typing import Annotated

import typer

from viskom.cli.common import ConfigOption, console, fail, load, open_store


def site(
    config: ConfigOption = None,
    full: Annotated[
        bool, typer.Option("--full", help="every page again, not only changes")
    ] = False,
) -> None:
    """Bring the dashboard (<data root>/site) up to date with the store; `viskom run` and
    `viskom watch` do this after each run. Prints where its index is."""
    from viskom.pipeline.site import build_site

    settings = load(config)
    with open_store(settings, read_only=True) as store:
        report = build_site(settings, store, full=full)
    console.print(report.line())
    console.print(f"open {report.index} (or `viskom serve`)")


def serve(
    config: ConfigOption = None,
    host: Annotated[str, typer.Option(help="address to bind (0.0.0.0: every interface)")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="port (0: any free one)")] = 8000,
) -> None:
    """Serve the dashboard (site/ and products/ of the data root, nothing else) until Ctrl-C."""
    from viskom.pipeline.site import site_dir
    from viskom.pipeline.site_server import make_server

    settings = load(config)
    if not (site_dir(settings) / "index.html").exists():
        raise fail("no site yet: `viskom site` builds it")
    try:
        server = make_server(settings.data_path, host, port)
    except OSError as exc:
        raise fail(f"cannot serve on {host}:{port}: {exc}") from None
    bound_host, bound_port = server.server_address[:2]
    console.print(f"serving http://{bound_host}:{bound_port}/site/index.html (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
