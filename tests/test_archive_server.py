"""The misbehaving local archive (tests/archive_server.py), checked with ``requests``."""

from __future__ import annotations

import gzip
import http.client
import json
import random
import socket
import time
import zlib

import pytest
import requests
import urllib3

import archive_server
from archive_server import ArchiveServer, Fault

archive = archive_server.archive  # the fixture

TIMEOUT = 5  # seconds, for every request that should succeed


def _payload(n: int = 200_000, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def _gz_payload() -> bytes:
    rng = random.Random(7)
    text = "".join(f"{i} {rng.random():.12f} {rng.choice('ABCDEFGH') * 5}\n" for i in range(8000))
    return gzip.compress(text.encode(), mtime=0)


def _read_until_broken(response: requests.Response) -> tuple[bytes, BaseException | None]:
    """The body bytes that arrived before the connection broke, and the error (None if whole).

    ``raw.read1`` hands over every byte received; ``iter_content(n)`` would drop the last
    partial chunk of a broken body (urllib3 2 raises IncompleteRead instead of returning it).
    """
    got = bytearray()
    try:
        while chunk := response.raw.read1(65536):
            got += chunk
    except urllib3.exceptions.ProtocolError as exc:
        return bytes(got), exc
    return bytes(got), None


# -- normal serving ----------------------------------------------------------------------------


def test_whole_file_is_byte_identical(archive: ArchiveServer) -> None:
    data = _payload()
    url = archive.add_file("a.fits", data)
    assert url == f"{archive.url}/files/a.fits"
    assert archive.url.startswith("http://127.0.0.1:")

    r = requests.get(url, timeout=TIMEOUT)

    assert r.status_code == 200
    assert r.content == data
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Accept-Ranges"] == "bytes"
    assert "ETag" not in r.headers
    assert "Content-Encoding" not in r.headers
    assert "Content-Range" not in r.headers


def test_gzip_file_is_served_raw(archive: ArchiveServer) -> None:
    data = _gz_payload()
    url = archive.add_file("cat.csv.gz", data)
    r = requests.get(url, timeout=TIMEOUT)
    assert r.content == data  # no Content-Encoding, so requests does not inflate it


def test_range_from_offset_gives_206_and_the_tail(archive: ArchiveServer) -> None:
    data = _payload(5000)
    url = archive.add_file("a.fits", data)

    r = requests.get(url, headers={"Range": "bytes=10-"}, timeout=TIMEOUT)

    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes 10-{len(data) - 1}/{len(data)}"
    assert r.headers["Content-Length"] == str(len(data) - 10)
    assert r.content == data[10:]


def test_closed_and_suffix_ranges(archive: ArchiveServer) -> None:
    data = _payload(1000)
    url = archive.add_file("a", data)
    r = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=TIMEOUT)
    assert (r.status_code, r.headers["Content-Range"], r.content) == (
        206,
        "bytes 100-199/1000",
        data[100:200],
    )
    r = requests.get(url, headers={"Range": "bytes=-50"}, timeout=TIMEOUT)
    assert (r.status_code, r.content) == (206, data[-50:])
    r = requests.get(url, headers={"Range": "bytes=0-5,10-20"}, timeout=TIMEOUT)
    assert (r.status_code, r.content) == (200, data)  # multi-part ranges are ignored


@pytest.mark.parametrize("start", [1000, 1001, 10**9])
def test_range_at_or_beyond_the_end_gives_416(archive: ArchiveServer, start: int) -> None:
    url = archive.add_file("a", _payload(1000))

    r = requests.get(url, headers={"Range": f"bytes={start}-"}, timeout=TIMEOUT)

    assert r.status_code == 416
    assert r.headers["Content-Range"] == "bytes */1000"
    assert r.content == b""


def test_head_gives_the_headers_and_no_body(archive: ArchiveServer) -> None:
    data = _payload(3000)
    url = archive.add_file("a", data)

    r = requests.head(url, timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.headers["Content-Length"] == "3000"
    assert r.content == b""

    r = requests.head(url, headers={"Range": "bytes=1000-"}, timeout=TIMEOUT)
    assert r.status_code == 206
    assert r.headers["Content-Length"] == "2000"
    assert r.headers["Content-Range"] == "bytes 1000-2999/3000"
    assert archive.bytes_sent("a") == 0


def test_unknown_paths_are_404(archive: ArchiveServer) -> None:
    archive.add_file("a", b"x")
    for path in ("/", "/files/", "/files/b", "/nope", "/files/a/extra", "/queryx"):
        r = requests.get(archive.url + path, timeout=TIMEOUT)
        assert r.status_code == 404, path
    assert requests.head(archive.url + "/files/b", timeout=TIMEOUT).status_code == 404


def test_names_needing_quoting(archive: ArchiveServer) -> None:
    url = archive.add_file("dir/a b#1.fits", b"hello")
    assert requests.get(url, timeout=TIMEOUT).content == b"hello"


def test_requests_are_recorded_in_order(archive: ArchiveServer) -> None:
    url = archive.add_file("a", _payload(100))
    requests.get(url, timeout=TIMEOUT)
    requests.get(url, headers={"Range": "bytes=10-"}, timeout=TIMEOUT)
    requests.head(url, timeout=TIMEOUT)
    requests.get(archive.url + "/query?obs=1&band=VIS", timeout=TIMEOUT)

    assert [(m, p) for m, p, _ in archive.requests] == [
        ("GET", "/files/a"),
        ("GET", "/files/a"),
        ("HEAD", "/files/a"),
        ("GET", "/query?obs=1&band=VIS"),
    ]
    assert "Range" not in archive.requests[0][2]
    assert archive.requests[1][2]["Range"] == "bytes=10-"
    assert archive.requests[0][2]["Host"] == archive.url.removeprefix("http://")


def test_keep_alive_connections_are_reused(archive: ArchiveServer) -> None:
    url = archive.add_file("a", _payload(2000))
    archive.fault("a", Fault("status", status=503))
    conn = http.client.HTTPConnection("127.0.0.1", int(archive.url.rsplit(":", 1)[1]), timeout=5)
    try:
        bodies = []
        for _ in range(3):
            conn.request("GET", "/files/a")
            resp = conn.getresponse()
            bodies.append((resp.status, len(resp.read())))
            assert not resp.will_close
        assert bodies[0][0] == 503
        assert bodies[1:] == [(200, 2000), (200, 2000)]
    finally:
        conn.close()
    with requests.Session() as session:
        for _ in range(3):
            assert session.get(url, timeout=TIMEOUT).status_code == 200


# -- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 401, 403, 404])
def test_status_fault_applies_times_then_serves(archive: ArchiveServer, status: int) -> None:
    data = _payload(1000)
    url = archive.add_file("a", data)
    archive.fault("a", Fault("status", times=2, status=status))

    with requests.Session() as session:
        got = [session.get(url, timeout=TIMEOUT) for _ in range(3)]

    assert [r.status_code for r in got] == [status, status, 200]
    assert got[0].content.startswith(str(status).encode())
    assert got[2].content == data
    assert archive.bytes_sent("a") == len(data)


def test_slow_fault_triggers_client_timeouts_then_serves(archive: ArchiveServer) -> None:
    data = _payload(1000)
    url = archive.add_file("a", data)
    archive.fault("a", Fault("slow", times=2, delay_s=0.6))

    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(url, timeout=(2, 0.15))
        assert time.monotonic() - started < 0.5
    started = time.monotonic()
    r = requests.get(url, timeout=(2, 0.15))
    assert time.monotonic() - started < 0.5
    assert r.content == data


def test_slow_fault_sends_nothing_to_a_client_that_gave_up(archive: ArchiveServer) -> None:
    url = archive.add_file("a", _payload(1000))
    archive.fault("a", Fault("slow", delay_s=0.3))
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(url, timeout=(2, 0.1))  # the connection is closed when get() returns
    time.sleep(0.5)
    assert archive.bytes_sent("a") == 0


def test_slow_fault_answers_normally_after_the_delay(archive: ArchiveServer) -> None:
    data = _payload(1000)
    url = archive.add_file("a", data)
    archive.fault("a", Fault("slow", delay_s=0.3))
    started = time.monotonic()
    r = requests.get(url, timeout=TIMEOUT)
    assert time.monotonic() - started >= 0.3
    assert (r.status_code, r.content) == (200, data)


def test_cut_fault_breaks_off_after_cut_at_bytes(archive: ArchiveServer) -> None:
    data = _payload(100_000)
    url = archive.add_file("a", data)
    archive.fault("a", Fault("cut", times=2, cut_at=1000))

    with requests.Session() as session:
        for _ in range(2):
            r = session.get(url, stream=True, timeout=TIMEOUT)
            assert r.status_code == 200
            assert r.headers["Content-Length"] == str(len(data))
            got, error = _read_until_broken(r)
            assert error is not None
            assert got == data[:1000]
        r = session.get(url, timeout=TIMEOUT)
    assert r.content == data
    assert archive.bytes_sent("a") == 2 * 1000 + len(data)


def test_cut_fault_on_a_range_request_then_resume(archive: ArchiveServer) -> None:
    data = _payload(50_000)
    url = archive.add_file("a", data)
    archive.fault("a", Fault("cut", cut_at=0))
    archive.fault("a", Fault("cut", cut_at=7000))

    r = requests.get(url, stream=True, timeout=TIMEOUT)
    got, error = _read_until_broken(r)
    assert (r.status_code, got) == (200, b"")
    assert error is not None

    r = requests.get(url, headers={"Range": "bytes=20000-"}, stream=True, timeout=TIMEOUT)
    assert r.status_code == 206
    assert r.headers["Content-Length"] == "30000"
    assert r.headers["Content-Range"] == "bytes 20000-49999/50000"
    got, error = _read_until_broken(r)
    assert error is not None
    assert got == data[20000:27000]

    r = requests.get(url, headers={"Range": "bytes=27000-"}, timeout=TIMEOUT)
    assert (r.status_code, r.content) == (206, data[27000:])


def test_wrong_length_fault_gives_a_short_body(archive: ArchiveServer) -> None:
    data = _payload(10_000)
    url = archive.add_file("a", data)
    archive.fault("a", Fault("wrong_length", times=2))

    for _ in range(2):
        r = requests.get(url, stream=True, timeout=TIMEOUT)
        assert r.headers["Content-Length"] == str(len(data) + 100)
        got, error = _read_until_broken(r)
        assert error is not None
        assert got == data
    r = requests.get(url, timeout=TIMEOUT)
    assert r.headers["Content-Length"] == str(len(data))
    assert r.content == data


def test_corrupt_gzip_fault_fails_decompression(archive: ArchiveServer) -> None:
    data = _gz_payload()
    gzip.decompress(data)  # the original is fine
    url = archive.add_file("cat.csv.gz", data)
    archive.fault("cat.csv.gz", Fault("corrupt_gzip", times=2))

    for _ in range(2):
        r = requests.get(url, timeout=TIMEOUT)
        assert r.status_code == 200
        assert len(r.content) == len(data)
        assert r.headers["Content-Length"] == str(len(data))
        assert r.content != data
        differing = [i for i, (a, b) in enumerate(zip(r.content, data, strict=True)) if a != b]
        assert len(data) // 4 < differing[0] <= differing[-1] < 3 * len(data) // 4
        with pytest.raises((OSError, EOFError, zlib.error)):
            gzip.decompress(r.content)
    r = requests.get(url, timeout=TIMEOUT)
    assert r.content == data


def test_faults_are_fifo_and_per_name(archive: ArchiveServer) -> None:
    data = _payload(5000)
    url_a = archive.add_file("a", data)
    url_b = archive.add_file("b", data)
    archive.fault("a", Fault("status", status=503))
    archive.fault("a", Fault("cut", cut_at=10))
    archive.fault("a", Fault("status", status=404))

    assert requests.get(url_b, timeout=TIMEOUT).status_code == 200  # b has no faults
    assert requests.get(url_a, timeout=TIMEOUT).status_code == 503
    got, error = _read_until_broken(requests.get(url_a, stream=True, timeout=TIMEOUT))
    assert (got, error is not None) == (data[:10], True)
    assert requests.get(url_a, timeout=TIMEOUT).status_code == 404
    assert requests.get(url_a, timeout=TIMEOUT).content == data


def test_bad_faults_are_refused() -> None:
    with pytest.raises(ValueError):
        Fault("explode")
    with pytest.raises(ValueError):
        Fault("status", times=0)


# -- auth, query, counters ---------------------------------------------------------------------


def test_require_auth(archive: ArchiveServer) -> None:
    data = _payload(500)
    url = archive.add_file("a", data)
    archive.listing = [{"id": 1}]
    archive.require_auth = ("alice", "s3cret:x")
    archive.fault("a", Fault("status", status=503))

    r = requests.get(url, timeout=TIMEOUT)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.get(url, auth=("alice", "wrong"), timeout=TIMEOUT).status_code == 401
    assert requests.get(url, auth=("bob", "s3cret:x"), timeout=TIMEOUT).status_code == 401
    assert requests.get(archive.url + "/query", timeout=TIMEOUT).status_code == 401
    assert requests.head(url, timeout=TIMEOUT).status_code == 401

    # the 401s consumed no fault: the 503 comes now, then the file
    assert requests.get(url, auth=("alice", "s3cret:x"), timeout=TIMEOUT).status_code == 503
    r = requests.get(url, auth=("alice", "s3cret:x"), timeout=TIMEOUT)
    assert (r.status_code, r.content) == (200, data)
    r = requests.get(archive.url + "/query", auth=("alice", "s3cret:x"), timeout=TIMEOUT)
    assert r.json() == {"rows": [{"id": 1}]}
    assert archive.bytes_sent("a") == len(data)
    assert len(archive.requests) == 8

    archive.require_auth = None
    assert requests.get(url, timeout=TIMEOUT).status_code == 200


def test_query_returns_the_listing(archive: ArchiveServer) -> None:
    assert requests.get(archive.url + "/query", timeout=TIMEOUT).json() == {"rows": []}
    archive.listing = [
        {"name": "a.fits", "size": 10, "url": archive.url + "/files/a.fits"},
        {"name": "b.fits", "size": 20, "ok": True, "tags": ["x"]},
    ]

    r = requests.get(
        archive.url + "/query", params={"date": "2024-01-01", "band": "VIS"}, timeout=TIMEOUT
    )

    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {"rows": archive.listing}
    assert archive.requests[-1][:2] == ("GET", "/query?date=2024-01-01&band=VIS")


def test_query_faults(archive: ArchiveServer) -> None:
    archive.listing = [{"i": i, "pad": "x" * 50} for i in range(200)]
    archive.fault("query", Fault("status", status=503))
    archive.fault("query", Fault("slow", delay_s=0.5))
    archive.fault("query", Fault("cut", cut_at=100))
    query = archive.url + "/query?q=1"

    assert requests.get(query, timeout=TIMEOUT).status_code == 503
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(query, timeout=(2, 0.1))
    r = requests.get(query, stream=True, timeout=TIMEOUT)
    got, error = _read_until_broken(r)
    assert error is not None
    assert len(got) == 100
    r = requests.get(query, timeout=TIMEOUT)
    assert json.loads(r.content) == {"rows": archive.listing}


def test_bytes_sent_counts_body_bytes(archive: ArchiveServer) -> None:
    data = _payload(10_000)
    url = archive.add_file("a", data)
    archive.add_file("b", b"other")
    assert archive.bytes_sent("a") == 0
    assert archive.bytes_sent("never-added") == 0

    requests.get(url, timeout=TIMEOUT)
    assert archive.bytes_sent("a") == 10_000
    requests.get(url, headers={"Range": "bytes=9000-"}, timeout=TIMEOUT)
    assert archive.bytes_sent("a") == 11_000
    requests.head(url, timeout=TIMEOUT)
    requests.get(url, headers={"Range": "bytes=10000-"}, timeout=TIMEOUT)  # 416
    assert archive.bytes_sent("a") == 11_000
    archive.fault("a", Fault("cut", cut_at=123))
    _read_until_broken(requests.get(url, stream=True, timeout=TIMEOUT))
    assert archive.bytes_sent("a") == 11_123
    archive.fault("a", Fault("status", status=500))
    requests.get(url, timeout=TIMEOUT)
    assert archive.bytes_sent("a") == 11_123
    assert archive.bytes_sent("b") == 0


# -- lifetime ----------------------------------------------------------------------------------


def test_close_releases_the_port_and_wakes_slow_answers() -> None:
    server = ArchiveServer()
    url = server.add_file("a", b"data")
    server.fault("a", Fault("slow", delay_s=30))
    host, port = server.url.removeprefix("http://").split(":")
    held = requests.Session()
    assert held.get(server.url + "/query", timeout=TIMEOUT).status_code == 200  # idle keep-alive
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(url, timeout=(2, 0.1))  # its handler now sleeps

    started = time.monotonic()
    server.close()
    server.close()  # idempotent
    assert time.monotonic() - started < 2
    held.close()

    with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=1):
        pass
