"""`viskom fetch`: the raw frames of a time window from the archive into the raw folder, then
registered. The archive is the settings' `[archive]`; credentials come from `~/.netrc` or
from EUCLID_ARCHIVE_USER / EUCLID_ARCHIVE_PASSWORD, never from the settings file, and are
never printed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from viskom.sources.archive.downloads import Downloader, FetchReport
from viskom.sources.archive.eas import EasArchive

USER_ENV, PASSWORD_ENV = "EUCLID_ARCHIVE_USER", "EUCLID_ARCHIVE_PASSWORD"


class ArchiveNotConfigured(ValueError):  # noqa: N818 (what the user must set)
    """`[archive] kind` is "none"."""


@dataclass
class FetchResult:
    """The listing's size, the downloads, and the registration of what arrived."""

    listed: int
    report: FetchReport
    ingest: Any = None


def credentials() -> tuple[str, str] | None:
    """(user, password) from the environment, or None (then requests reads ~/.netrc)."""
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    return (user, password) if user and password else None


def window(
    settings: Any, start: datetime | None, end: datetime | None
) -> tuple[datetime, datetime]:
    """[start, end): as given, else the last `[archive] days` up to now (UTC)."""
    end = end or datetime.now(UTC)
    start = start or end - timedelta(days=int(settings.archive.days))
    if start >= end:
        raise ValueError(f"the window {start.isoformat()} .. {end.isoformat()} is empty")
    return start, end


def fetch(
    settings: Any,
    store: Any,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> FetchResult:
    """List the window's raw frames, download what is missing, register what arrived."""
    from viskom.pipeline.register import ingest

    cfg = settings.archive
    if cfg.kind == "none":
        raise ArchiveNotConfigured(
            'no archive configured: set [archive] kind = "eas" in viskom.toml '
            "(credentials in ~/.netrc, see README)"
        )
    start, end = window(settings, start, end)
    auth = credentials()
    archive = EasArchive(cfg.metadata_url, cfg.files_url, timeout_s=cfg.timeout_s, auth=auth)
    files = archive.raw_frames(start, end)
    downloader = Downloader(
        settings.raw_path, connections=cfg.connections, timeout_s=cfg.timeout_s, auth=auth,
        min_free_bytes=int(cfg.min_free_gb * 1e9), progress=progress,
    )  # fmt: skip
    report = downloader.fetch(files)
    arrived = [settings.raw_path / name for name in report.new]
    registered = ingest(store, arrived, rules_path=settings.rules_path) if arrived else None
    return FetchResult(len(files), report, registered)
