"""`viskom fetch`: raw VIS frames of a time window from the Euclid archive, then registered."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from viskom.cli.common import ConfigOption, console, fail, load, open_store


def _when(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO date or time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class BarProgress:
    """A rich progress bar of a fetch: bytes and rate over all files, a line per file done
    (thread-safe: the downloads report from their threads)."""

    def __init__(self, progress: Any) -> None:
        self.bar = progress
        self.task = progress.add_task("fetch", total=0)
        self._lock = threading.Lock()
        self._total: dict[str, int] = {}  # per file: its size, when the server says it
        self._done: dict[str, int] = {}  # per file: bytes here

    def started(self, name: str, total: int | None, offset: int) -> None:
        """A transfer (or a retry of it) begins at byte `offset`."""
        with self._lock:
            self._done[name] = offset
            self._total[name] = max(total or 0, offset)
            self.bar.update(
                self.task, total=sum(self._total.values()), completed=sum(self._done.values())
            )

    def advanced(self, name: str, n: int) -> None:
        """More bytes arrived."""
        with self._lock:
            self._done[name] = self._done.get(name, 0) + n
            self.bar.update(self.task, advance=n)

    def finished(self, name: str, state: str, detail: str) -> None:
        """A file is done: new and failed ones get a line above the bar."""
        if state == "new":
            self.bar.console.print(f"  {name}")
        elif state == "failed":
            self.bar.console.print(f"  [red]failed[/red] {name}: {detail}")


def fetch(
    config: ConfigOption = None,
    start: Annotated[
        str | None, typer.Option(help="window start, ISO (default: archive.days before the end)")
    ] = None,
    end: Annotated[str | None, typer.Option(help="window end, ISO (default: now)")] = None,
) -> None:
    """Download the raw frames of a window that are missing here (resumable, verified), then
    register what arrived; a progress bar (bytes, rate) and a summary line (new, already
    here, failed, bytes, time). With [archive] move_to set, measured old frames move first."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from viskom.pipeline.fetch import ArchiveNotConfigured
    from viskom.pipeline.fetch import fetch as do_fetch
    from viskom.sources.archive.eas import ArchiveAnswerError
    from viskom.sources.http import ServiceError

    settings = load(config)
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with open_store(settings) as store:
        try:
            with Progress(*columns, console=console, transient=True) as bar:
                progress = BarProgress(bar) if console.is_terminal else None
                done = do_fetch(
                    settings, store, start=_when(start), end=_when(end), progress=progress
                )
        except (ArchiveNotConfigured, ValueError, ArchiveAnswerError) as exc:
            raise fail(str(exc)) from None
        except ServiceError as exc:
            if exc.status in (401, 403):
                raise fail("the archive refused the credentials (see README: ~/.netrc)") from None
            raise fail(f"the archive's listing failed: {exc}") from None
    if done.moved is not None and (done.moved.moved or done.moved.failed):
        console.print(done.moved.line())
        for name, why in done.moved.failed:
            console.print(f"  [yellow]not moved[/yellow] {name}: {why}")
    console.print(f"listed {done.listed} frame(s)")
    console.print(done.report.line())
    for name, why in done.report.failed:
        console.print(f"  [red]failed[/red] {name}: {why}")
    for name in done.report.not_found:
        console.print(f"  [yellow]not found[/yellow] {name}")
    if done.ingest is not None:
        console.print(f"ingest: {len(done.ingest.new)} new, {len(done.ingest.invalid)} invalid")
    if done.report.stopped or done.report.failed:
        raise typer.Exit(1)
