"""`viskom fetch`: the raw frames of a time window from the archive into the raw folder, then
registered. The archive is the settings' `[archive]`: the consortium's EAS (VISQL's) or ESA's
public science archive; credentials come from `~/.netrc` or from EUCLID_ARCHIVE_USER /
EUCLID_ARCHIVE_PASSWORD, never from the settings file, and are never printed.

Every file's outcome is recorded in the store (`fetched_files`): a file recorded as fetched
and still where the record says, with its size, is not fetched again, nor read. Before
downloading, measured raw files older than `[archive] move_after_days` move to `move_to`
when it is set (`housekeeping.move_measured`).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from viskom.sources.archive.downloads import Downloader, FetchReport, Progress, RemoteFile
from viskom.store import FetchOutcome

USER_ENV, PASSWORD_ENV = "EUCLID_ARCHIVE_USER", "EUCLID_ARCHIVE_PASSWORD"


class ArchiveNotConfigured(ValueError):  # noqa: N818 (what the user must set)
    """`[archive] kind` is "none"."""


@dataclass
class FetchResult:
    """The listing's size, the downloads, the registration of what arrived, and what the
    housekeeping moved."""

    listed: int
    report: FetchReport
    ingest: Any = None
    moved: Any = None


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


def archive_of(settings: Any, auth: Any = None) -> Any:
    """The archive client of `[archive] kind` (an object with `raw_frames(start, end)`)."""
    cfg = settings.archive
    if cfg.kind == "eas":
        from viskom.sources.archive.eas import EasArchive

        return EasArchive(
            cfg.metadata_url, cfg.files_url, timeout_s=cfg.timeout_s, retries=cfg.retries,
            auth=auth,
        )  # fmt: skip
    if cfg.kind == "public":
        from viskom.sources.archive.public import PublicArchive

        return PublicArchive(
            cfg.public_url, cfg.public_table, cfg.public_release, timeout_s=cfg.timeout_s
        )
    raise ArchiveNotConfigured(
        'no archive configured: set [archive] kind = "eas" (the consortium archive, '
        'credentials in ~/.netrc) or "public" in viskom.toml (see README)'
    )


def held_by_store(store: Any) -> Any:
    """`have(remote)` for the Downloader: the store recorded the file as fetched, and it is
    still where the record says, with the recorded size (no bytes read)."""
    records = {r.name: r for r in store.fetched_files(state="fetched")}

    def have(remote: RemoteFile) -> bool:
        record = records.get(remote.name)
        if record is None or record.path is None:
            return False
        try:
            return Path(record.path).stat().st_size == record.size_bytes
        except OSError:
            return False

    return have


def outcomes(files: list[RemoteFile], report: FetchReport) -> list[FetchOutcome]:
    """The store's records of a fetch: arrived, failed and not-found files (URLs as listed,
    which never hold credentials: those travel in headers)."""
    url = {f.name: f.url for f in files}
    rows = []
    for a in report.arrived:
        listed = _listed(a.name, url)
        rows.append(FetchOutcome(listed, url[listed], "fetched", str(a.path), a.size, a.sha256))
    rows += [FetchOutcome(n, url[n], "failed", error=why) for n, why in report.failed]
    rows += [FetchOutcome(n, url[n], "not_found", error="not found") for n in report.not_found]
    return rows


def _listed(name: str, url: dict[str, str]) -> str:
    """The listed name of a file kept under another (a gzip stream served as .fits gets .gz)."""
    return name if name in url else name.removesuffix(".gz")


def fetch(
    settings: Any,
    store: Any,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> FetchResult:
    """Move old measured frames (when set up), list the window's raw frames, download what
    is missing, record every outcome, register what arrived. Once `stop` is set no new
    download starts (those under way finish: they would resume anyway)."""
    from viskom.pipeline.housekeeping import move_measured
    from viskom.pipeline.register import KnownChecksum, ingest

    cfg = settings.archive
    auth = credentials()
    archive = archive_of(settings, auth)
    start, end = window(settings, start, end)
    moved = move_measured(settings, store) if settings.move_path is not None else None
    files = archive.raw_frames(start, end)
    downloader = Downloader(
        settings.raw_path, connections=cfg.connections, timeout_s=cfg.timeout_s,
        retries=cfg.retries,
        auth=auth if cfg.kind == "eas" else None, min_free_bytes=int(cfg.min_free_gb * 1e9),
        progress=progress, have=held_by_store(store), stop=stop,
    )  # fmt: skip
    report = downloader.fetch(files)
    store.record_fetches(cfg.kind, outcomes(files, report))
    arrived = [a.path for a in report.arrived]
    # the downloads' SHA-256 (of the bytes as written): the frames are not read again for it
    sums = {str(a.path.resolve()): KnownChecksum(a.size, a.mtime_ns, a.sha256)
            for a in report.arrived if a.mtime_ns is not None}  # fmt: skip
    registered = (
        ingest(store, arrived, rules_path=settings.rules_path, checksums=sums) if arrived else None
    )
    return FetchResult(len(files), report, registered, moved)
