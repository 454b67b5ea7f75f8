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
from typing import Any, Protocol

from viskom.le1.completeness import GzipStreamCheck, file_is_complete
from viskom.sources.http import HttpClient, ServiceError
from viskom.store.atomic import promote

CREDENTIAL_STATUSES = frozenset({401, 403})
_READ = 1 << 22  # bytes read at a time when a file on disk is verified


@dataclass(frozen=True)
class RemoteFile:
    """A file the archive offers: its name, URL, and size and checksum when it gives them."""

    name: str
    url: str
    size: int | None = None
    checksum: str | None = None  # "md5:<hex>" or "sha256:<hex>"


@dataclass(frozen=True)
class Arrived:
    """A file that arrived: its name and place here, size, SHA-256, bytes moved this time."""

    name: str
    path: Path
    size: int
    sha256: str
    transferred: int
    mtime_ns: int | None = None  # of the file as it arrived: its SHA-256 holds while unchanged


@dataclass
class FetchReport:
    """What a fetch did: files new, skipped (already whole), failed (with why), bytes
    moved, seconds, and whether it stopped early (credentials, disk space)."""

    new: list[str] = field(default_factory=list)
    arrived: list[Arrived] = field(default_factory=list)
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


class StreamVerifier:
    """Checks a download's bytes as they arrive, in one pass: their number, their SHA-256
    (recorded in the store) and the archive's checksum when it gives another, and the
    gzip stream inflated (CRC and length of every member; zlib and hashlib release the
    GIL, so parallel downloads verify on every core). Nothing is kept but the state."""

    def __init__(self, remote: RemoteFile) -> None:
        self.remote = remote
        self.size = 0
        self.sha256 = hashlib.sha256()
        algorithm = (remote.checksum or "").partition(":")[0].lower()
        self.other = hashlib.new(algorithm) if algorithm not in ("", "sha256") else None
        self.gzip = GzipStreamCheck()

    def feed(self, data: bytes) -> None:
        """The next bytes of the file."""
        self.size += len(data)
        self.sha256.update(data)
        if self.other is not None:
            self.other.update(data)
        self.gzip.feed(data)

    def feed_file(self, path: Path, limit: int | None = None) -> None:
        """The first `limit` bytes of `path` (all of it by default): a resumed .part."""
        left = path.stat().st_size if limit is None else limit
        with path.open("rb") as fh:
            while left > 0 and (chunk := fh.read(min(_READ, left))):
                self.feed(chunk)
                left -= len(chunk)

    @property
    def gzipped(self) -> bool:
        """Whether the bytes are a gzip stream (by their magic, not the file's name)."""
        return "not a gzip stream" not in self.gzip.result()[1]

    def problem(self, path: Path) -> str | None:
        """Why the bytes fed (those of the file at `path`) are not the archive's file, or None."""
        remote = self.remote
        if self.size == 0:
            return "empty"
        if remote.size is not None and self.size != remote.size:
            return f"{self.size} bytes where the archive lists {remote.size}"
        if remote.checksum:
            algorithm, _, expected = remote.checksum.partition(":")
            digest = self.other if self.other is not None else self.sha256
            if digest.hexdigest().lower() != expected.lower():
                return f"{algorithm} checksum differs from the archive's"
        if remote.name.lower().endswith(".gz") or self.gzipped:
            whole, reason = self.gzip.result()
            if not whole or "left to ingest" in reason:
                reason = reason.replace(" (left to ingest)", "").replace(" (still arriving)", "")
                return f"broken gzip stream: {reason}"
            if not self.gzip.first.startswith(b"SIMPLE  ="):
                return "the gzip stream holds no FITS file"
            return None
        complete, reason = file_is_complete(path, gzipped=False)  # headers only
        if not complete or "left to ingest" in reason or "other bytes" in reason:
            reason = reason.replace(" (left to ingest)", "").replace(" (still arriving)", "")
            return f"broken FITS file: {reason}"
        return None


def verify(path: Path, remote: RemoteFile) -> str | None:
    """Why the file at `path` is not the archive's file, or None when it is (reads it once)."""
    verifier = StreamVerifier(remote)
    verifier.feed_file(path)
    return verifier.problem(path)


class Progress(Protocol):
    """What a fetch tells while it runs (a progress bar, a log): thread-safe."""

    def started(self, name: str, total: int | None, offset: int) -> None:
        """A transfer of `name` begins at byte `offset` of `total` (None: not known)."""

    def advanced(self, name: str, n: int) -> None:
        """`n` more bytes of `name` arrived."""

    def finished(self, name: str, state: str, detail: str) -> None:
        """`name` is done: state new, skipped, failed, not_found or left."""


class Downloader:
    """Fetches `RemoteFile`s into `folder` over at most `connections` parallel connections.

    `have(remote)` says that a file is already held, verified, elsewhere or under its name
    (the store's record of earlier fetches): it is skipped without reading it. A file found
    under its name that `have` does not vouch for is verified once (read whole) before it
    counts as here.
    """

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
        progress: Progress | None = None,
        have: Callable[[RemoteFile], bool] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.connections = max(1, int(connections))
        self.http = HttpClient(
            timeout_s=timeout_s, retries=retries, backoff_s=backoff_s,
            pool_size=max(10, self.connections),  # a kept connection per download thread
        )  # fmt: skip
        self.http.session.trust_env = auth is None  # .netrc only when no credentials given
        self.auth = auth
        self.min_free_bytes = int(min_free_bytes)
        self.progress = progress
        self.have = have
        self._stop = threading.Event()  # set by a credentials or disk problem
        self._outer_stop = stop  # set by the caller (a watch asked to stop)
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
                    report.new.append(detail.name)
                    report.arrived.append(detail)
                    report.bytes += detail.transferred
                elif state == "skipped":
                    report.skipped.append(remote.name)
                elif state == "not_found":
                    report.not_found.append(remote.name)
                elif state == "failed":
                    report.failed.append((remote.name, str(detail)))
                else:
                    report.left.append(remote.name)
                if self.progress:
                    self.progress.finished(remote.name, state, str(detail or ""))
        report.stopped = self._why_stopped
        report.seconds = time.perf_counter() - t0
        return report

    def _halt(self, why: str) -> None:
        with self._lock:
            if self._why_stopped is None:
                self._why_stopped = why
        self._stop.set()

    def _here(self, remote: RemoteFile) -> bool:
        """Whether the file is already held (the store says so, or its bytes check out)."""
        if self.have is not None and self.have(remote):
            return True
        for name in _names(remote.name):
            target = self.folder / name
            if target.exists() and verify(target, remote) is None:
                return True
        return False

    def _one(self, remote: RemoteFile) -> tuple[str, Any]:
        if self._here(remote):
            return "skipped", None
        if self._stop.is_set() or (self._outer_stop is not None and self._outer_stop.is_set()):
            return "left", None
        free = shutil.disk_usage(self.folder).free
        need = self.min_free_bytes + (remote.size or 0)
        if free < need:
            self._halt(f"{free / 1e9:.1f} GB free in {self.folder}, below the minimum")
            return "left", None
        part = self.folder / (remote.name + ".part")
        before = part.stat().st_size if part.exists() else 0
        checked: list[StreamVerifier] = []

        def attempt(offset: int, total: int | None) -> Callable[[bytes], None]:
            verifier = StreamVerifier(remote)  # every attempt starts afresh from `offset`
            if offset:
                verifier.feed_file(part, offset)
            checked[:] = [verifier]
            if self.progress is None:
                return verifier.feed
            progress, name = self.progress, remote.name
            progress.started(name, total, offset)

            def feed(chunk: bytes) -> None:
                verifier.feed(chunk)
                progress.advanced(name, len(chunk))

            return feed

        try:
            size = self.http.download(remote.url, part, auth=self.auth, on_attempt=attempt)
        except ServiceError as exc:
            if exc.status in CREDENTIAL_STATUSES:
                self._halt(f"the archive refused the credentials (HTTP {exc.status})")
                return "failed", f"HTTP {exc.status}: credentials refused"
            if exc.not_found:
                part.unlink(missing_ok=True)
                return "not_found", f"HTTP {exc.status}"
            return "failed", str(exc)  # the .part stays: the next fetch resumes it
        if not checked or checked[0].size != size:  # 416: all there before this fetch
            checked[:] = [StreamVerifier(remote)]
            checked[0].feed_file(part)
        verifier = checked[0]
        problem = verifier.problem(part)
        if problem is not None:
            part.unlink(missing_ok=True)  # wrong bytes: resuming them cannot help
            return "failed", problem
        name = remote.name
        if verifier.gzipped and not name.lower().endswith(".gz"):
            name += ".gz"  # kept as the archive serves it, named for what it is
        target = self.folder / name
        promote(part, target)
        mtime_ns = target.stat().st_mtime_ns
        return "new", Arrived(
            name, target, size, verifier.sha256.hexdigest(), size - before, mtime_ns
        )


def _names(name: str) -> tuple[str, ...]:
    """The names a file of the archive may have here (a gzip stream served as .fits gets .gz)."""
    return (name,) if name.lower().endswith(".gz") else (name, name + ".gz")
