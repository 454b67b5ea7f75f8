"""Downloads a mission can rely on: parallel, resumable, verified before they replace anything.

Each file goes to `<name>.part` beside its final place (an HTTP Range request resumes what
an earlier, interrupted download left), and becomes `<name>` only after it is verified: its
size (and checksum) as the archive gives them, and its structure (a whole gzip stream, CRC
and length checked, or FITS headers that reach the file's end). A file already there and
whole is not fetched again. 401/403 stop everything once, as a credentials problem (never
retried, credentials never printed); 404 is recorded; timeouts and 5xx are retried by the
HTTP layer with backoff. Nothing is left behind as a 0-byte placeholder, and nothing
starts while the folder has less than `min_free_bytes` left.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from viskom.le1.completeness import file_is_complete
from viskom.sources.http import HttpClient, ServiceError
from viskom.store.atomic import promote

CREDENTIAL_STATUSES = frozenset({401, 403})


@dataclass(frozen=True)
class RemoteFile:
    """A file the archive offers: its name, URL, and size and checksum when it gives them."""

    name: str
    url: str
    size: int | None = None
    checksum: str | None = None  # "md5:<hex>" or "sha256:<hex>"


@dataclass
class FetchReport:
    """What a fetch did: files new, skipped (already whole), failed (with why), bytes
    moved, seconds, and whether it stopped early (credentials, disk space)."""

    new: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # not tried: the fetch stopped first
    bytes: int = 0
    seconds: float = 0.0
    stopped: str | None = None

    def line(self) -> str:
        """The summary line: new, skipped, failed, bytes, time."""
        rate = self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0
        text = (
            f"fetch: {len(self.new)} new, {len(self.skipped)} already here, "
            f"{len(self.failed)} failed, {len(self.not_found)} not found"
            + (f", {len(self.left)} left" if self.left else "")
            + "; "
            f"{self.bytes / 1e6:.1f} MB in {self.seconds:.1f} s ({rate:.1f} MB/s)"
        )
        return text + (f"; stopped: {self.stopped}" if self.stopped else "")


class CredentialsProblem(Exception):  # noqa: N818 (what the user must fix)
    """The archive refused the credentials (HTTP 401/403)."""


def verify(path: Path, remote: RemoteFile) -> str | None:
    """Why the downloaded file at `path` is not the archive's file, or None when it is."""
    size = path.stat().st_size
    if size == 0:
        return "empty"
    if remote.size is not None and size != remote.size:
        return f"{size} bytes where the archive lists {remote.size}"
    if remote.checksum:
        algorithm, _, expected = remote.checksum.partition(":")
        digest = hashlib.new(algorithm)
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
        if digest.hexdigest().lower() != expected.lower():
            return f"{algorithm} checksum differs from the archive's"
    gz = remote.name.lower().endswith(".gz")
    complete, reason = file_is_complete(path, gzipped=gz)
    if not complete or "left to ingest" in reason or "other bytes" in reason:
        what = "broken gzip stream" if gz else "broken FITS file"
        return f"{what}: {reason.replace(' (left to ingest)', '').replace(' (still arriving)', '')}"
    return None


class Downloader:
    """Fetches `RemoteFile`s into `folder` over at most `connections` parallel connections."""

    def __init__(
        self,
        folder: Path,
        *,
        connections: int = 4,
        timeout_s: float = 60.0,
        retries: int = 4,
        backoff_s: float = 2.0,
        auth: Any = None,
        min_free_bytes: int = 0,
        progress: Callable[[str, int], None] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.connections = max(1, int(connections))
        self.http = HttpClient(timeout_s=timeout_s, retries=retries, backoff_s=backoff_s)
        self.http.session.trust_env = auth is None  # .netrc only when no credentials given
        self.auth = auth
        self.min_free_bytes = int(min_free_bytes)
        self.progress = progress
        self._stop = threading.Event()
        self._why_stopped: str | None = None
        self._lock = threading.Lock()

    def fetch(self, files: Iterable[RemoteFile]) -> FetchReport:
        """Download what is missing of `files` (duplicates by name counted once)."""
        t0 = time.perf_counter()
        report = FetchReport()
        unique = list({f.name: f for f in files}.values())
        self.folder.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=self.connections) as pool:
            futures = {pool.submit(self._one, f): f for f in unique}
            for future in as_completed(futures):
                remote = futures[future]
                try:
                    state, detail = future.result()
                except Exception as exc:  # reported, the others go on
                    state, detail = "failed", f"{type(exc).__name__}: {exc}"
                if state == "new":
                    report.new.append(remote.name)
                    report.bytes += int(detail)
                elif state == "skipped":
                    report.skipped.append(remote.name)
                elif state == "not_found":
                    report.not_found.append(remote.name)
                elif state == "failed":
                    report.failed.append((remote.name, str(detail)))
                else:
                    report.left.append(remote.name)
        report.stopped = self._why_stopped
        report.seconds = time.perf_counter() - t0
        return report

    def _halt(self, why: str) -> None:
        with self._lock:
            if self._why_stopped is None:
                self._why_stopped = why
        self._stop.set()

    def _one(self, remote: RemoteFile) -> tuple[str, Any]:
        target = self.folder / remote.name
        if target.exists() and verify(target, remote) is None:
            return "skipped", None
        if self._stop.is_set():
            return "left", None
        free = shutil.disk_usage(self.folder).free
        need = self.min_free_bytes + (remote.size or 0)
        if free < need:
            self._halt(f"{free / 1e9:.1f} GB free in {self.folder}, below the minimum")
            return "left", None
        part = target.with_name(target.name + ".part")
        before = part.stat().st_size if part.exists() else 0
        try:
            size = self.http.download(remote.url, part, auth=self.auth)
        except ServiceError as exc:
            if exc.status in CREDENTIAL_STATUSES:
                self._halt(f"the archive refused the credentials (HTTP {exc.status})")
                return "failed", f"HTTP {exc.status}: credentials refused"
            if exc.not_found:
                part.unlink(missing_ok=True)
                return "not_found", f"HTTP {exc.status}"
            return "failed", str(exc)  # the .part stays: the next fetch resumes it
        problem = verify(part, remote)
        if problem is not None:
            part.unlink(missing_ok=True)  # wrong bytes: resuming them cannot help
            return "failed", problem
        promote(part, target)
        if self.progress:
            self.progress(remote.name, size - before)
        return "new", size - before
