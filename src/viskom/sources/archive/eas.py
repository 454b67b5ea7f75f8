"""The Euclid consortium archive (EAS) as VISQL's `dleas` job asks it: the metadata service
lists the LE1 VIS raw frames of a time window, the data distribution service serves them.

Metadata: `<metadata_url>?class_name=DpdVisRawFrame&project=EUCLID&allow_array=True&
Header.ManualValidationStatus!=INVALID&Header.CreationDate>dt(Y,M,D)&Header.CreationDate<
dt(Y,M,D)&fields=Header.ProductId.LimitedString:Data.InputRawFiles.RawFile`; the answer is
CSV, one header line, then double-quoted values. Files: `<files_url>/<product id without
its _EUCLIDSOC suffix>.fits.gz`, HTTP Basic authentication (from `~/.netrc`, which requests
reads itself, or given). The window is on the product's creation date, as VISQL's.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

from viskom.sources.archive.downloads import RemoteFile
from viskom.sources.http import HttpClient

EAS_METADATA_URL = "https://eas-dps-rest-ops.esac.esa.int/REST"
EAS_FILES_URL = "https://euclidsoc.esac.esa.int"
_FIELDS = "Header.ProductId.LimitedString:Data.InputRawFiles.RawFile"
_SUFFIX = "_EUCLIDSOC"


class ArchiveAnswerError(ValueError):
    """The metadata service answered something that is not its CSV listing."""


def _dt(when: datetime) -> str:
    return f"dt({when.year},{when.month},{when.day})"


def query_url(metadata_url: str, start: datetime, end: datetime) -> str:
    """The metadata query of LE1 VIS raw frames created in [start, end)."""
    parts = [
        "class_name=DpdVisRawFrame",
        "Header.ManualValidationStatus!=INVALID",
        "project=EUCLID",
        f"fields={_FIELDS}",
        "allow_array=True",
        f"Header.CreationDate>{_dt(start)}",
        f"Header.CreationDate<{_dt(end)}",
    ]
    return f"{metadata_url}?{'&'.join(parts)}"


def parse_listing(text: str, files_url: str) -> list[RemoteFile]:
    """The frames of a metadata answer (CSV with a header line), each once, in its order."""
    rows = list(csv.reader(io.StringIO(text.strip())))
    if not rows or not rows[0] or "ProductId" not in rows[0][0]:
        head = text.strip()[:80]
        raise ArchiveAnswerError(f"not the archive's CSV listing (it begins {head!r})")
    found: dict[str, RemoteFile] = {}
    for row in rows[1:]:
        if not row or not row[0].strip():
            continue
        product = row[0].strip()
        if not product.startswith("EUC_"):
            raise ArchiveAnswerError(f"unexpected product id {product[:80]!r}")
        name = product.removesuffix(_SUFFIX) + ".fits.gz"
        found.setdefault(name, RemoteFile(name, f"{files_url.rstrip('/')}/{name}"))
    return list(found.values())


class EasArchive:
    """Lists the raw VIS frames of a window from the EAS metadata service."""

    def __init__(
        self,
        metadata_url: str = EAS_METADATA_URL,
        files_url: str = EAS_FILES_URL,
        *,
        timeout_s: float = 60.0,
        retries: int = 3,
        auth: Any = None,
    ) -> None:
        self.metadata_url, self.files_url, self.auth = metadata_url, files_url, auth
        self.http = HttpClient(timeout_s=timeout_s, retries=retries, backoff_s=2.0)

    def raw_frames(self, start: datetime, end: datetime) -> list[RemoteFile]:
        """The frames created in [start, end) (ServiceError, ArchiveAnswerError if not)."""
        url = query_url(self.metadata_url, start, end)
        # urllib3 sends '>' and '<' percent-encoded (%3E, %3C), which the service decodes
        body = self.http.get(url, auth=self.auth)
        return parse_listing(body.decode("utf-8", errors="replace"), self.files_url)
