"""`viskom fetch`: raw VIS frames of a time window from the Euclid archive, then registered."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

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


def fetch(
    config: ConfigOption = None,
    start: Annotated[
        str | None, typer.Option(help="window start, ISO (default: archive.days before the end)")
    ] = None,
    end: Annotated[str | None, typer.Option(help="window end, ISO (default: now)")] = None,
) -> None:
    """Download the raw frames of a window that are missing here (resumable, verified), then
    register what arrived; a summary line (new, already here, failed, bytes, time)."""
    from viskom.pipeline.fetch import ArchiveNotConfigured
    from viskom.pipeline.fetch import fetch as do_fetch
    from viskom.sources.archive.eas import ArchiveAnswerError
    from viskom.sources.http import ServiceError

    settings = load(config)

    def progress(name: str, size: int) -> None:
        console.print(f"  {name} {size / 1e6:.1f} MB")

    with open_store(settings) as store:
        try:
            done = do_fetch(settings, store, start=_when(start), end=_when(end), progress=progress)
        except (ArchiveNotConfigured, ValueError, ArchiveAnswerError) as exc:
            raise fail(str(exc)) from None
        except ServiceError as exc:
            if exc.status in (401, 403):
                raise fail("the archive refused the credentials (see README: ~/.netrc)") from None
            raise fail(f"the archive's listing failed: {exc}") from None
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
