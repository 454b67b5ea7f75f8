"""`viskom watch`: register and measure what arrives, every --interval seconds, until stopped.

The loop is `viskom.pipeline.watch.Watcher`; this command only reads the options, sets up
logging (stderr with a timestamp, and --log-file) and the SIGINT/SIGTERM handlers.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from viskom.cli.common import ConfigOption, fail, load

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


@contextmanager
def _logging_to(log_file: Path | None) -> Iterator[None]:
    """viskom's INFO messages (and everyone's warnings) to stderr and `log_file`; the
    handlers are removed again afterwards."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            # reopened when logrotate moves the file away
            handlers.append(logging.handlers.WatchedFileHandler(log_file, encoding="utf-8"))
        except OSError as exc:
            raise fail(f"cannot write the log file {log_file}: {exc}") from None
    root, viskom_log = logging.getLogger(), logging.getLogger("viskom")
    before = root.level, viskom_log.level
    formatter = logging.Formatter(LOG_FORMAT)
    for h in handlers:
        h.setFormatter(formatter)
        root.addHandler(h)
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)  # other libraries: warnings only (alembic talks a lot)
    viskom_log.setLevel(logging.INFO)
    try:
        yield
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()
        root.setLevel(before[0])
        viskom_log.setLevel(before[1])


def watch(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="more folders or files to watch, besides the raw folder"),
    ] = None,
    config: ConfigOption = None,
    interval: Annotated[
        float, typer.Option(min=0.5, help="seconds between the starts of two cycles")
    ] = 60.0,
    once: Annotated[
        bool, typer.Option("--once", help="one cycle, then exit: 0 if it ran, 1 if it failed")
    ] = False,
    log_file: Annotated[
        Path | None, typer.Option(help="also log to this file (appended; logrotate-safe)")
    ] = None,
    max_backoff: Annotated[
        float, typer.Option(min=0, help="longest wait after failed cycles, in seconds")
    ] = 900.0,
    settle: Annotated[
        float,
        typer.Option(
            min=0, help="a file seen for the first time is taken once unchanged this long (s)"
        ),
    ] = 10.0,
    give_up: Annotated[
        float,
        typer.Option(
            min=0, help="an incomplete file unchanged this long (s) is registered as it is"
        ),
    ] = 3600.0,
) -> None:
    """Watch the raw folder: every --interval seconds register the complete new frames and
    measure what is pending, one log line per cycle. SIGINT or SIGTERM stop it cleanly (the
    work in flight finishes); a second one aborts."""
    from viskom.pipeline.watch import Watcher, stop_on_signals

    settings = load(config)
    with _logging_to(log_file):
        watcher = Watcher(
            settings, paths=paths or (), interval_s=interval, settle_s=settle,
            max_backoff_s=max_backoff, give_up_s=give_up,
        )  # fmt: skip
        stop = threading.Event()
        with stop_on_signals(stop):
            report = watcher.run(stop, once=once)
    if once and not report.ok:
        raise typer.Exit(1)  # the reason is in the cycle's log line on stderr
