"""The `viskom` command: parses, calls the layers (config, pipeline service, store), prints.

`main` is the installed script. The typer application (`app`, in `cli.commands`) is imported only
when needed: `viskom status` in its plain forms (`--json`, `--format`, `--config`) is answered
by `cli.status_report` without typer, whose option parsing alone (it builds every option
through pydantic) costs ~0.15 s of the half second a status may take.
"""

from __future__ import annotations

import sys
from typing import Any


def main() -> None:
    """The `viskom` script."""
    from viskom.cli.status_report import quick_status, quick_status_args

    wanted = quick_status_args(sys.argv[1:])
    if wanted is not None:
        sys.exit(quick_status(*wanted))
    from viskom.cli.commands import app

    app()


def __getattr__(name: str) -> Any:
    if name == "app":
        from viskom.cli.commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
