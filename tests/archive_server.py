"""A local HTTP archive (loopback only) that misbehaves on demand, for downloader tests.

Standard library only: a ``ThreadingHTTPServer`` on ``127.0.0.1`` (port 0, so the OS picks a free
one) serving from a daemon thread. Use the ``archive`` fixture (function scope)::

    import archive_server
    from archive_server import Fault

    archive = archive_server.archive  # the fixture (``from ... import archive`` trips ruff F811)

    def test_resume(archive):
        url = archive.add_file("a.fits.gz", data)
        archive.fault("a.fits.gz", Fault("cut", cut_at=1000))
        ...  # the first GET breaks off after 1000 body bytes, the next one is served normally
        assert archive.requests[1][2]["Range"] == "bytes=1000-"

(``pytest_plugins = ["archive_server"]`` works too, but after ``from archive_server import ...``
pytest warns that the module was imported before it could rewrite its asserts), or
``with ArchiveServer() as server: ...`` outside pytest.

A client note: with urllib3 2, ``Response.iter_content(n)`` on a body that breaks off raises
without yielding the last partial chunk, so up to ``n - 1`` received bytes are lost;
``response.raw.read1(n)`` in a loop hands over every byte that arrived before the error.

Routes:

* ``GET``/``HEAD /files/<name>``: the file added with :meth:`ArchiveServer.add_file` (404 when
  there is none). ``Range: bytes=N-`` (also ``bytes=N-M`` and ``bytes=-N``) answers 206 with
  ``Content-Range: bytes N-END/TOTAL``; a start at or past the end answers 416 with
  ``Content-Range: bytes */TOTAL``; a malformed or multi-part Range is ignored (200, whole file).
  Always ``Content-Length``, ``Accept-Ranges: bytes``, ``application/octet-stream``; never an
  ``ETag``, ``Last-Modified`` or ``Content-Encoding`` (a ``.gz`` is served as its raw bytes).
* ``GET``/``HEAD /query?...``: ``{"rows": listing}`` as JSON.
* ESA's science archive as astroquery's TapPlus asks it: ``POST /tap-server/tap/async``
  (an ADQL job: recorded in :attr:`ArchiveServer.tap_queries`, answered 303 with the job's
  ``Location``), ``GET .../async/<id>/phase`` (``EXECUTING`` for the first
  :attr:`ArchiveServer.tap_executing_polls` polls, then :attr:`ArchiveServer.tap_phase`),
  ``GET .../async/<id>/results/result`` (:attr:`ArchiveServer.tap_rows` as CSV) and
  ``.../error``; its data service ``GET /sas-dd/data?FILE_NAME=<name>&...`` serves the file
  added as ``<name>`` as ``/files/`` does. The fault name ``"tap"`` stands for the job POST.
* anything else: 404. Other methods get the standard library's 501.

Every request is recorded in :attr:`ArchiveServer.requests` first (also those answered 401 or
404). With :attr:`ArchiveServer.require_auth` set, a request without those HTTP Basic credentials
gets 401 (with ``WWW-Authenticate``) before anything else, and consumes no fault.

Faults (:meth:`ArchiveServer.fault`) are queued per name, FIFO, the name ``"query"`` standing for
``/query``; each request for that name (GET or HEAD alike) that is routed to an existing file, or
to ``/query``, takes one use of the fault at the head of the queue, and a fault is dropped after
``times`` uses. With the queue empty the file is served normally.

* ``status``: answers ``fault.status`` with a short text body (keep-alive stays usable).
* ``slow``: sleeps ``delay_s`` then answers normally, unless the client has closed the connection
  meanwhile (timed out), in which case nothing is sent (and nothing counted in ``bytes_sent``).
* ``cut``: the headers that the request would normally get (200 or 206, the full
  ``Content-Length``), then only ``cut_at`` body bytes, then the socket is shut down.
* ``wrong_length``: ``Content-Length`` 100 more than the body, the whole body, then the socket is
  shut down, so the client sees a body 100 bytes short.
* ``corrupt_gzip``: the body that would be served (the whole file or the range) with up to 16
  bytes around its middle inverted (XOR 0xFF); same length, same headers.

For HEAD the body is never sent, so ``cut``/``wrong_length``/``corrupt_gzip`` only alter the
headers (``wrong_length``'s Content-Length) and close the connection where they would.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import socket
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

FAULT_KINDS = ("status", "slow", "cut", "wrong_length", "corrupt_gzip")
QUERY_NAME = "query"
TAP_NAME = "tap"
TAP_ASYNC = "/tap-server/tap/async"
WRONG_LENGTH_EXTRA = 100
CORRUPT_SPAN = 16
_CHUNK = 64 * 1024
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


@dataclass
class Fault:
    """One misbehaviour, applied to the next ``times`` requests for a name."""

    kind: str  # "status", "slow", "cut", "wrong_length", "corrupt_gzip"
    times: int = 1  # how many requests it affects, then the file is served normally
    status: int = 500  # for kind "status" (e.g. 500, 503, 401, 403, 404)
    delay_s: float = 0  # for "slow": sleep this long before answering
    cut_at: int = 0  # for "cut": body bytes sent before the connection is shut down

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.times < 1:
            raise ValueError(f"times must be >= 1, got {self.times}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {self.status}")
        if self.delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {self.delay_s}")
        if self.cut_at < 0:
            raise ValueError(f"cut_at must be >= 0, got {self.cut_at}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    archive: ArchiveServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ArchiveServer/1"
    timeout = 30  # an idle keep-alive connection is dropped after this long
    disable_nagle_algorithm = True  # headers and body go in separate writes: no 40 ms stalls
    server: _Server

    # -- connection bookkeeping ---------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.server.archive._register(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.archive._unregister(self.connection)

    def log_message(self, format: str, *args: object) -> None:
        pass

    # -- routing ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle(head=False)

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(length) if length > 0 else b""
        self._handle(head=False)

    def _handle(self, *, head: bool) -> None:
        archive = self.server.archive
        archive._record(self.command, self.path, dict(self.headers.items()))
        try:
            if not archive._authorized(self.headers.get("Authorization")):
                self._send_simple(
                    401,
                    head=head,
                    extra={"WWW-Authenticate": 'Basic realm="archive", charset="UTF-8"'},
                )
                return
            path = urlsplit(self.path).path
            if path in ("/query", "/REST"):
                self._serve_query(head=head)
            elif path.startswith("/files/") and len(path) > len("/files/"):
                self._serve_file(unquote(path[len("/files/") :]), head=head)
            elif path == "/sas-dd/data":
                params = parse_qs(urlsplit(self.path).query)
                self._serve_file(params.get("FILE_NAME", [""])[0], head=head)
            elif path == TAP_ASYNC and self.command == "POST":
                self._tap_job()
            elif path.startswith(TAP_ASYNC + "/"):
                self._tap_get(path[len(TAP_ASYNC) + 1 :].split("/"), head=head)
            else:
                self._send_simple(404, head=head)
        except OSError:
            # The client went away (timed out on a slow answer, say): nothing more to tell it.
            self.close_connection = True

    def _serve_query(self, *, head: bool) -> None:
        archive = self.server.archive
        fault = archive._take_fault(QUERY_NAME)
        if archive.query_csv is not None:  # the EAS metadata service answers CSV
            body = archive.query_csv.encode()
            self._answer(200, {"Content-Type": "text/csv"}, body, fault, head=head, name=None)
            return
        body = json.dumps({"rows": archive.listing}).encode()
        self._answer(200, {"Content-Type": "application/json"}, body, fault, head=head, name=None)

    def _tap_job(self) -> None:
        archive = self.server.archive
        form = parse_qs(self._body.decode("utf-8", "replace"))
        fault = archive._take_fault(TAP_NAME)
        if fault is not None and fault.kind == "status":
            self._send_simple(fault.status, head=False)
            return
        job = archive._new_job(form.get("QUERY", [""])[0])
        self.send_response(303)
        self.send_header("Location", f"{archive.url}{TAP_ASYNC}/{job}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _tap_get(self, parts: list[str], *, head: bool) -> None:
        archive = self.server.archive
        job, what = parts[0], "/".join(parts[1:])
        if job not in archive._jobs:
            self._send_simple(404, head=head)
            return
        if what == "phase":
            body = archive._poll(job).encode()
            content = "text/plain"
        elif what == "results/result":
            head_line = ",".join(archive.tap_columns)
            rows = [",".join(str(r.get(c, "")) for c in archive.tap_columns)
                    for r in archive.tap_rows]  # fmt: skip
            body = "\n".join([head_line, *rows, ""]).encode()
            content = "text/csv"
        elif what == "error":
            body, content = b"the query failed on the server", "text/plain"
        else:
            self._send_simple(404, head=head)
            return
        self._answer(200, {"Content-Type": content}, body, None, head=head, name=None)

    def _serve_file(self, name: str, *, head: bool) -> None:
        archive = self.server.archive
        data = archive._file(name)
        if data is None:
            self._send_simple(404, head=head)
            return
        fault = archive._take_fault(name)
        total = len(data)
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        span = _parse_range(self.headers.get("Range"), total)
        if span is None:
            status, body = 200, data
        elif span == "unsatisfiable":
            status, body = 416, b""
            headers["Content-Range"] = f"bytes */{total}"
        else:
            start, end = span
            status, body = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        self._answer(status, headers, body, fault, head=head, name=name)

    # -- answering, with a fault or not ---------------------------------------------------------

    def _answer(
        self,
        status: int,
        headers: dict[str, str],
        body: bytes,
        fault: Fault | None,
        *,
        head: bool,
        name: str | None,
    ) -> None:
        kind = fault.kind if fault is not None else None
        if fault is not None and kind == "status":
            self._send_simple(fault.status, head=head)
            return
        if fault is not None and kind == "slow":
            stopping = self.server.archive._stopping.wait(fault.delay_s)
            if stopping or self._client_gone():
                self.close_connection = True  # shutting down, or the client timed out: give up
                return
        if kind == "corrupt_gzip":
            body = _corrupt(body)
        length = len(body)
        if kind == "wrong_length":
            length += WRONG_LENGTH_EXTRA
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if not head:
            if fault is not None and kind == "cut":
                body = body[: fault.cut_at]
            self._write_body(body, name)
        if kind in ("cut", "wrong_length"):
            self._break_connection()

    def _client_gone(self) -> bool:
        """Whether the client has closed its end (say after timing out on a slow answer)."""
        try:
            self.connection.setblocking(False)
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False  # still connected, nothing sent: it is waiting for the answer
        except OSError:
            return True
        finally:
            with contextlib.suppress(OSError):
                self.connection.settimeout(self.timeout)

    def _write_body(self, body: bytes, name: str | None) -> None:
        view = memoryview(body)
        for offset in range(0, len(view), _CHUNK):
            chunk = view[offset : offset + _CHUNK]
            # counted before the write: a client may have read the bytes (and its test
            # asked bytes_sent) before this thread runs again; taken back if the write fails
            if name is not None:
                self.server.archive._count(name, len(chunk))
            try:
                self.wfile.write(chunk)
            except OSError:
                if name is not None:
                    self.server.archive._count(name, -len(chunk))
                raise

    def _break_connection(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send_simple(self, status: int, *, head: bool, extra: dict[str, str] | None = None) -> None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        body = f"{status} {phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


def _parse_range(header: str | None, total: int) -> tuple[int, int] | str | None:
    """``(start, end)`` inclusive, ``"unsatisfiable"``, or None (no usable Range: serve all)."""
    if header is None:
        return None
    match = _RANGE_RE.match(header)
    if match is None:
        return None  # malformed, multi-part or another unit: ignore it (RFC 9110 allows that)
    first, last = match.groups()
    if first:
        start = int(first)
        if last and int(last) < start:
            return None
        if start >= total:
            return "unsatisfiable"
        end = min(int(last), total - 1) if last else total - 1
        return start, end
    if not last:
        return None
    suffix = int(last)
    if suffix == 0 or total == 0:
        return "unsatisfiable"
    return max(0, total - suffix), total - 1


def _corrupt(body: bytes) -> bytes:
    """``body`` with up to CORRUPT_SPAN bytes around its middle inverted."""
    if not body:
        return body
    span = min(CORRUPT_SPAN, max(1, len(body) // 4))
    start = (len(body) - span) // 2
    flipped = bytes(b ^ 0xFF for b in body[start : start + span])
    return body[:start] + flipped + body[start + span :]


class ArchiveServer:
    """The archive: files, queued faults, a JSON listing, and a record of what was asked."""

    def __init__(self) -> None:
        self.listing: list[dict] = []
        self.query_csv: str | None = None  # when set, /query and /REST answer this CSV
        self.tap_rows: list[dict] = []  # the rows every TAP job returns
        self.tap_columns: tuple[str, ...] = ("file_name", "observation_id", "obs_time_utc")
        self.tap_queries: list[str] = []  # the ADQL of every job, in order
        self.tap_executing_polls = 1  # phase polls answered EXECUTING before tap_phase
        self.tap_phase = "COMPLETED"
        self._jobs: dict[str, int] = {}  # job id -> phase polls so far
        self.require_auth: tuple[str, str] | None = None
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._files: dict[str, bytes] = {}
        self._faults: dict[str, deque[list]] = {}
        self._sent: dict[str, int] = {}
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.archive = self
        host, port = self._httpd.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"archive-server-{port}",
            daemon=True,
        )
        self._thread.start()
        self._closed = False

    # -- public API ---------------------------------------------------------------------------

    def add_file(self, name: str, data: bytes) -> str:
        """Serve ``data`` at ``/files/<name>`` (replacing any earlier file); return its URL."""
        if not name or name.startswith("/"):
            raise ValueError(f"bad file name {name!r}")
        with self._lock:
            self._files[name] = bytes(data)
            self._sent.setdefault(name, 0)
        return f"{self.url}/files/{quote(name)}"

    def fault(self, name: str, fault: Fault) -> None:
        """Queue ``fault`` for ``name`` (a file, or ``"query"``), after those already queued."""
        with self._lock:
            self._faults.setdefault(name, deque()).append([fault, fault.times])

    def bytes_sent(self, name: str) -> int:
        """Body bytes written to clients for file ``name`` so far (HEAD and errors send none)."""
        with self._lock:
            return self._sent.get(name, 0)

    def close(self) -> None:
        """Stop serving: wake slow answers, drop open connections, release the port."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ArchiveServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ArchiveServer({self.url!r}, files={sorted(self._files)})"

    # -- used by the handler ------------------------------------------------------------------

    def _record(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append((method, path, headers))

    def _authorized(self, header: str | None) -> bool:
        required = self.require_auth
        if required is None:
            return True
        if not header:
            return False
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        return bool(sep) and (user, password) == tuple(required)

    def _file(self, name: str) -> bytes | None:
        with self._lock:
            return self._files.get(name)

    def _new_job(self, query: str) -> str:
        with self._lock:
            self.tap_queries.append(query)
            job = f"{len(self._jobs) + 1:06d}A"
            self._jobs[job] = 0
            return job

    def _poll(self, job: str) -> str:
        with self._lock:
            self._jobs[job] += 1
            return "EXECUTING" if self._jobs[job] <= self.tap_executing_polls else self.tap_phase

    def _take_fault(self, name: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(name)
            if not queue:
                return None
            entry = queue[0]
            entry[1] -= 1
            if entry[1] <= 0:
                queue.popleft()
            return entry[0]

    def _count(self, name: str, n: int) -> None:
        with self._lock:
            self._sent[name] = self._sent.get(name, 0) + n

    def _register(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def _unregister(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)


@pytest.fixture
def archive() -> Iterator[ArchiveServer]:
    """A fresh :class:`ArchiveServer` on 127.0.0.1, shut down after the test."""
    with ArchiveServer() as server:
        yield server
