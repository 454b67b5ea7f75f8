"""What kind of failure a stage had, told in one short line.

A *transient* failure (a service unreachable, a timeout, a full disk, the database gone, a
worker killed) says nothing about the frame: later runs retry it by themselves, with a
backoff that doubles per attempt. A *permanent* one (a bad file, a bad header, a bug) would
fail again the same way: it is not retried until the input, the stage or its settings change
(or `viskom run --retry-failed`). The stored reason is one short line; the full text and
traceback go to the log.
"""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Iterator

TRANSIENT = "transient"
PERMANENT = "permanent"
#: Longest reason stored with a failed stage run (the log has the rest).
MAX_REASON = 240

_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ENOSPC", "EDQUOT", "ENETUNREACH", "ENETDOWN", "EHOSTUNREACH", "EHOSTDOWN",
        "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "ETIMEDOUT", "EAGAIN", "ESTALE",
        "EPIPE", "ENOMEM", "EBUSY",
    )
    if hasattr(errno, name)
)  # fmt: skip
#: Exception class names (from any library: requests, urllib3, httpx, astroquery, sqlalchemy,
#: psycopg, dask) that mean "the outside world failed", not "this frame is bad".
_TRANSIENT_NAMES = re.compile(
    r"Timeout|ConnectionError|ConnectError|ConnectTimeout|OperationalError|ServiceError"
    r"|Unavailable|KilledWorker|BrokenProcessPool|CommClosedError|InterfaceError|ProtocolError"
    r"|RemoteDisconnected|IncompleteRead|ChunkedEncodingError|WorkerDied"
)
_ENUMERATED = re.compile(r"\b(?:tile|satellite|day|file)\s+[^\s:]+:\s*", re.IGNORECASE)
_DRIVER_PREFIX = re.compile(r"^\([\w.]+\) ")  # SQLAlchemy's "(psycopg.OperationalError) "


class WorkerDied(RuntimeError):  # noqa: N818 (a fact, not an error of the frame)
    """The process running a task died (killed, out of memory) before it reported."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]


def failure_class(exc: BaseException) -> str:
    """'transient' when `exc` (or what caused it) comes from the outside world, else
    'permanent'."""
    for item in _chain(exc):
        declared = getattr(item, "transient", None)  # an exception may say so itself
        if isinstance(declared, bool):
            return TRANSIENT if declared else PERMANENT
        if isinstance(item, TimeoutError | ConnectionError | socket.gaierror | MemoryError):
            return TRANSIENT
        if isinstance(item, OSError) and item.errno in _TRANSIENT_ERRNOS:
            return TRANSIENT
        if any(_TRANSIENT_NAMES.search(cls.__name__) for cls in type(item).__mro__):
            return TRANSIENT
    return PERMANENT


def short_reason(text: str, limit: int = MAX_REASON) -> str:
    """One line of at most `limit` characters: `text` on one line, its '; '-separated parts
    told once each, without the tile (day, file) they were about: the same DNS error for
    forty tiles becomes one part, "(x40)"."""
    line = " ".join(str(text).split())
    head, counts = "", {}
    for part in line.split("; "):
        found = _ENUMERATED.search(part)
        if found:
            if not head and not counts:
                head = part[: found.start()]
            part = part[found.end() :]
        part = part.strip()
        if part:
            counts[part] = counts.get(part, 0) + 1
    if any(n > 1 for n in counts.values()):
        line = head + "; ".join(f"{k} (x{n})" if n > 1 else k for k, n in counts.items())
    if len(line) > limit:
        line = line[: limit - 1].rstrip() + "\u2026"
    return line


def describe_failure(exc: BaseException, where: str = "") -> tuple[str, str]:
    """(failure class, short reason) of an exception; `where` (file:line) is appended."""
    message = str(exc).strip()
    first = _DRIVER_PREFIX.sub("", message.splitlines()[0]) if message else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    suffix = f" (at {where})" if where else ""
    return failure_class(exc), short_reason(text, MAX_REASON - len(suffix)) + suffix
