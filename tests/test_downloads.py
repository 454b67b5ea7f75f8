"""Archive downloads over real HTTP (a local server that misbehaves on demand): every fault
gives the right retry or the right error, nothing corrupt lands in the raw folder, and the
next fetch completes the set."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

import archive_server
from archive_server import ArchiveServer, Fault
from viskom.sources.archive.downloads import Downloader, RemoteFile, verify
from viskom.sources.simulator import SimConfig, simulate_frame

archive = archive_server.archive  # the fixture: a local archive that misbehaves on demand
T0 = datetime(2024, 7, 16, 1, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> dict[str, bytes]:
    """Two small simulated frames, served as the archive serves them (.fits.gz)."""
    out = tmp_path_factory.mktemp("served")
    small = SimConfig(geometry="small")
    made = {}
    for i in range(2):
        path = simulate_frame(out, "bias", seed=40 + i, date_obs=T0.replace(minute=i),
                              config=small).path  # fmt: skip
        made[path.name + ".gz"] = gzip.compress(path.read_bytes(), compresslevel=1)
    return made


def _remote(archive, frames, name: str, *, checksum: bool = True) -> RemoteFile:
    url = archive.add_file(name, frames[name])
    digest = "sha256:" + hashlib.sha256(frames[name]).hexdigest() if checksum else None
    return RemoteFile(name, url, len(frames[name]), digest)


def _downloader(folder: Path, **kw) -> Downloader:
    return Downloader(folder, connections=2, timeout_s=2.0, retries=3, backoff_s=0.05, **kw)


def _raw(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_clean_fetch_then_nothing_again(archive, frames, tmp_path) -> None:
    files = [_remote(archive, frames, n) for n in frames]
    report = _downloader(tmp_path).fetch(files + files[:1])  # a listing with a duplicate
    assert sorted(report.new) == sorted(frames) and not report.failed
    assert report.bytes == sum(len(b) for b in frames.values())
    assert _raw(tmp_path) == frames
    again = _downloader(tmp_path).fetch(files)
    assert sorted(again.skipped) == sorted(frames) and again.new == [] and again.bytes == 0
    assert "2 already here" in again.line()


def test_a_cut_connection_resumes_with_only_the_missing_bytes(archive, frames, tmp_path) -> None:
    name = next(iter(frames))
    remote = _remote(archive, frames, name)
    total = len(frames[name])
    archive.fault(name, Fault("cut", cut_at=total // 3))
    report = _downloader(tmp_path).fetch([remote])
    assert report.new == [name] and _raw(tmp_path) == {name: frames[name]}
    ranges = [h.get("Range") for m, p, h in archive.requests if p.endswith(name)]
    assert ranges[0] is None and ranges[1].startswith(f"bytes={total // 3}-")
    assert archive.bytes_sent(name) == total  # the first third once, then the rest


def test_a_fetch_that_gives_up_mid_file_leaves_a_part_the_next_one_completes(
    archive, frames, tmp_path
) -> None:
    name = next(iter(frames))
    remote = _remote(archive, frames, name)
    total = len(frames[name])
    archive.fault(name, Fault("cut", cut_at=total // 2))
    archive.fault(name, Fault("status", times=50, status=503))  # more than the retries
    first = _downloader(tmp_path).fetch([remote])
    assert first.failed and first.new == [] and "503" in first.failed[0][1]
    assert name not in _raw(tmp_path)  # nothing half-written under the frame's own name
    assert (tmp_path / (name + ".part")).stat().st_size == total // 2
    with ArchiveServer() as mirror:  # the archive is back (here: at another address)
        again = _downloader(tmp_path).fetch(
            [replace(remote, url=mirror.add_file(name, frames[name]))]
        )
        assert again.new == [name] and _raw(tmp_path) == {name: frames[name]}
        assert mirror.bytes_sent(name) == total - total // 2  # only the missing bytes
        assert again.bytes == total - total // 2


def test_server_errors_are_retried_timeouts_too(archive, frames, tmp_path) -> None:
    a, b = list(frames)
    files = [_remote(archive, frames, a), _remote(archive, frames, b)]
    archive.fault(a, Fault("status", times=2, status=503))
    archive.fault(b, Fault("slow", delay_s=3.0))  # longer than the 2 s timeout, once
    report = _downloader(tmp_path).fetch(files)
    assert sorted(report.new) == sorted(frames), report.failed
    assert _raw(tmp_path) == frames


def test_credentials_refused_stop_the_fetch_once(archive, frames, tmp_path) -> None:
    archive.require_auth = ("euclid", "s3cret")
    files = [_remote(archive, frames, n) for n in frames]
    report = _downloader(tmp_path, auth=("euclid", "wrong")).fetch(files)
    assert report.new == [] and "credentials" in (report.stopped or "")
    assert "s3cret" not in report.line() and "wrong" not in report.line()
    assert not any(p.name.endswith(".part") and p.stat().st_size for p in tmp_path.iterdir())
    ok = _downloader(tmp_path, auth=("euclid", "s3cret")).fetch(files)
    assert sorted(ok.new) == sorted(frames)


def test_missing_files_are_recorded_and_nothing_is_left(archive, frames, tmp_path) -> None:
    name = next(iter(frames))
    gone = RemoteFile("EUC_NOT_THERE.fits.gz", archive.url + "/files/EUC_NOT_THERE.fits.gz")
    report = _downloader(tmp_path).fetch([gone, _remote(archive, frames, name)])
    assert report.not_found == [gone.name] and report.new == [name]
    assert sorted(_raw(tmp_path)) == [name]  # no 0-byte placeholder


def test_corrupt_or_short_answers_never_land(archive, frames, tmp_path) -> None:
    a, b = list(frames)
    archive.fault(a, Fault("corrupt_gzip"))
    archive.fault(b, Fault("wrong_length", times=10))
    report = _downloader(tmp_path).fetch(
        [_remote(archive, frames, a, checksum=False), _remote(archive, frames, b)]
    )
    reasons = dict(report.failed)
    assert "broken gzip stream" in reasons[a]  # said as such, not as a FITS header error
    # a Content-Length that promised more: the body is checked, and it is the whole file
    assert report.new == [b] and _raw(tmp_path) == {b: frames[b]}
    again = _downloader(tmp_path).fetch(
        [_remote(archive, frames, a, checksum=False), _remote(archive, frames, b)]
    )
    assert again.new == [a] and again.skipped == [b] and _raw(tmp_path) == frames


def test_verify_tells_what_is_wrong(frames, tmp_path) -> None:
    name, data = next(iter(frames.items()))
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    remote = RemoteFile(name, "http://x", None, None)
    assert "broken gzip stream" in verify(path, remote)
    path.write_bytes(data)
    assert verify(path, remote) is None
    assert "bytes where the archive lists" in verify(path, RemoteFile(name, "x", 5))
    assert "checksum" in verify(path, RemoteFile(name, "x", None, "md5:00"))


def test_no_space_stops_before_writing(archive, frames, tmp_path) -> None:
    files = [_remote(archive, frames, n) for n in frames]
    report = _downloader(tmp_path, min_free_bytes=1 << 62).fetch(files)
    assert report.new == [] and "free" in (report.stopped or "") and len(report.left) == 2
    assert _raw(tmp_path) == {}


class _Recorder:
    """A Progress that keeps what it was told."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, int | None, int]] = []
        self.bytes = 0
        self.done: list[tuple[str, str]] = []

    def started(self, name: str, total: int | None, offset: int) -> None:
        self.starts.append((name, total, offset))

    def advanced(self, name: str, n: int) -> None:
        self.bytes += n

    def finished(self, name: str, state: str, detail: str) -> None:
        self.done.append((name, state))


def test_progress_sees_each_byte_once_across_a_resume(archive, frames, tmp_path) -> None:
    name = next(iter(frames))
    total = len(frames[name])
    remote = _remote(archive, frames, name)
    archive.fault(name, Fault("cut", cut_at=total // 4))
    seen = _Recorder()
    report = _downloader(tmp_path, progress=seen).fetch([remote])
    assert report.new == [name] and seen.done == [(name, "new")]
    assert seen.starts == [(name, total, 0), (name, total, total // 4)]
    assert seen.bytes == total
    (arrived,) = report.arrived  # the SHA-256 of the whole file, also across the resume
    assert arrived.sha256 == hashlib.sha256(frames[name]).hexdigest() and arrived.size == total


def test_a_gzip_stream_served_as_fits_is_named_for_what_it_is(archive, frames, tmp_path) -> None:
    name, data = next(iter(frames.items()))
    plain = name.removesuffix(".gz")
    remote = RemoteFile(plain, archive.add_file(plain, data))
    report = _downloader(tmp_path).fetch([remote])
    assert report.new == [name] and _raw(tmp_path) == {name: data}
    assert _downloader(tmp_path).fetch([remote]).skipped == [plain]  # found under its .gz name
    not_fits = RemoteFile("EUC_X.fits.gz", archive.add_file("EUC_X.fits.gz", gzip.compress(b"x")))
    failed = dict(_downloader(tmp_path).fetch([not_fits]).failed)
    assert failed == {"EUC_X.fits.gz": "the gzip stream holds no FITS file"}
