"""ESA's Euclid science archive (the public releases) through `astroquery.esa.euclid`.

The raw VIS frames of a window are listed with an asynchronous ADQL job on the release's
raw-frame table (`q1.raw_frame` for Q1): `launch_job_async`, because the synchronous call
stops at 2,000 rows without saying so. astroquery's Euclid calls log errors and return None
instead of raising; here a None, a failed job or a job that does not finish in time is a
`ServiceError`. The module is imported only when a listing is asked for (it talks to the
server as it is imported), with a socket timeout (its HTTP layer, http.client, has none of
its own) and its console messages kept out of viskom's output.

The files themselves are fetched by viskom's `Downloader` (resumable, verified) from the
data service URL that astroquery's `get_product(file_name=...)` asks:
`<server>sas-dd/data?TAPCLIENT=ASTROQUERY&RELEASE=<release>&FILE_NAME=<name>&RETRIEVAL_TYPE=FILE`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from viskom.sources.archive.downloads import RemoteFile
from viskom.sources.archive.eas import ArchiveAnswerError
from viskom.sources.http import ServiceError, wait_until

PUBLIC_URL = "https://eas.esac.esa.int/"
_ENVIRONMENT = "VISKOM"  # the astroquery environment viskom registers for its server
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_POLL_S = 0.5
_DONE = ("COMPLETED", "ERROR", "ABORTED")


class _Said(logging.Handler):
    """What astroquery printed or logged inside `_quiet_with_timeout`, kept to quote it."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.printed = io.StringIO()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def last(self) -> str:
        lines = self.lines + [x for x in self.printed.getvalue().splitlines() if x.strip()]
        return lines[-1][:200] if lines else "no reason given"


@contextlib.contextmanager
def _quiet_with_timeout(timeout_s: float) -> Iterator[_Said]:
    """astroquery's calls inside: sockets time out after `timeout_s` (a process-wide default,
    restored after), its prints and log messages are caught instead of shown."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    said = _Said()
    from astroquery import log as logger  # its own logger class, set up on import

    handlers, propagate = logger.handlers[:], logger.propagate
    logger.handlers, logger.propagate = [said], False
    try:
        with contextlib.redirect_stdout(said.printed):
            yield said
    finally:
        logger.handlers, logger.propagate = handlers, propagate
        socket.setdefaulttimeout(before)


def adql(table: str, start: datetime, end: datetime) -> str:
    """The ADQL query of the VIS raw frames observed in [start, end) in `table`."""
    if not _TABLE.match(table):
        raise ValueError(f"{table!r} is not a table name (schema.table)")

    def iso(t: datetime) -> str:
        return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")

    return (
        "SELECT file_name, observation_id, obs_time_utc "
        f"FROM {table} WHERE instrument_name = 'VIS' "
        f"AND obs_time_utc >= '{iso(start)}' AND obs_time_utc < '{iso(end)}' "
        "ORDER BY obs_time_utc"
    )


def file_url(server: str, release: str, name: str) -> str:
    """The data service's URL of one file (what astroquery's get_product asks)."""
    query = {"TAPCLIENT": "ASTROQUERY", "RELEASE": release, "FILE_NAME": name,
             "RETRIEVAL_TYPE": "FILE"}  # fmt: skip
    return f"{server.rstrip('/')}/sas-dd/data?{urlencode(query)}"


class PublicArchive:
    """Lists the raw VIS frames of a window from ESA's Euclid science archive."""

    def __init__(
        self,
        server: str = PUBLIC_URL,
        table: str = "q1.raw_frame",
        release: str = "sedm",
        *,
        timeout_s: float = 60.0,
    ) -> None:
        self.server = server if server.endswith("/") else server + "/"
        self.table, self.release, self.timeout_s = table, release, float(timeout_s)

    def _client(self) -> Any:
        with _quiet_with_timeout(self.timeout_s):
            from astroquery.esa.euclid import EuclidClass, conf  # talks to ESA on import

            conf.ENVIRONMENTS[_ENVIRONMENT] = {
                **conf.ENVIRONMENTS["PDR"],
                "url_server": self.server,
            }
            return EuclidClass(environment=_ENVIRONMENT, show_server_messages=False)

    def raw_frames(self, start: datetime, end: datetime) -> list[RemoteFile]:
        """The frames observed in [start, end), each once (ServiceError, ArchiveAnswerError)."""
        query = adql(self.table, start, end)
        where = f"{self.server}tap-server/tap/async"
        with _quiet_with_timeout(self.timeout_s) as said:
            try:
                client = self._client()
                job = client.launch_job_async(query, background=True, output_format="csv")
                if job is None:  # astroquery logged the error and gave nothing back
                    raise ServiceError(f"the archive refused the query ({said.last()})", where)
                phase = [str(job.get_phase()).strip().upper()]

                def finished() -> bool:
                    if phase[0] not in _DONE:
                        phase[0] = str(job.get_phase(update=True)).strip().upper()
                    return phase[0] in _DONE

                if not wait_until(finished, 3 * self.timeout_s, _POLL_S):
                    raise ServiceError(
                        f"the query did not finish in {3 * self.timeout_s:.0f} s "
                        f"(job {job.jobid}: {phase[0]})",
                        where,
                    )
                if phase[0] != "COMPLETED":
                    raise ServiceError(f"the query ended {phase[0]} (job {job.jobid})", where)
                table = job.get_results()
            except ServiceError:
                raise
            except Exception as exc:  # http.client and astroquery errors of every kind
                raise ServiceError(f"{type(exc).__name__}: {exc}", where) from None
        if table is None or "file_name" not in getattr(table, "colnames", ()):
            raise ArchiveAnswerError(f"the query's result has no file_name column: {table!r:.80}")
        found: dict[str, RemoteFile] = {}
        for value in table["file_name"]:
            name = str(value).strip()
            if not name or name in found:
                continue
            if not name.startswith("EUC_") or "/" in name:
                raise ArchiveAnswerError(f"unexpected file name {name[:80]!r}")
            found[name] = RemoteFile(name, file_url(self.server, self.release, name))
        return list(found.values())
