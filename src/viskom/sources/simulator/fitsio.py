"""Streaming FITS writer: header blocks and padded big-endian data, one extension at a time.

Only one quadrant is ever in memory. Optional gzip uses a raw zlib stream with a gzip header
(mtime 0, no file name) so that output bytes are deterministic.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from astropy.io import fits

BLOCK = 2880


def header_bytes(header: fits.Header) -> bytes:
    """The header as FITS blocks (END card, padded to 2880 bytes)."""
    return header.tostring(sep="", endcard=True, padding=True).encode("ascii")


def padding(nbytes: int) -> bytes:
    """Zero bytes that fill `nbytes` of data up to a whole 2880-byte FITS block."""
    return b"\0" * ((-nbytes) % BLOCK)


class FitsStream:
    """Write a FITS file sequentially, optionally gzip-compressed, optionally cut short.

    truncate_at: stop writing after this many (uncompressed) bytes. For gzip the stream is then
    flushed but never finished, like a partial download of a .fits.gz.
    """

    def __init__(self, path: Path, *, gzip: bool = False, level: int = 1, truncate_at=None):
        self.path = Path(path)
        self._fh = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._z = zlib.compressobj(level, zlib.DEFLATED, 31) if gzip else None
        self.truncate_at = truncate_at
        self.position = 0  # uncompressed bytes accepted so far
        self.truncated = False

    def write(self, data: bytes) -> None:
        """Append bytes (compressed if gzip); nothing more once the truncation point is hit."""
        if self.truncated:
            return
        if self.truncate_at is not None and self.position + len(data) >= self.truncate_at:
            data = data[: max(0, self.truncate_at - self.position)]
            self.truncated = True
        self.position += len(data)
        if self._z is not None:
            self._fh.write(self._z.compress(data))
        else:
            self._fh.write(data)

    def write_hdu(self, header: fits.Header | bytes, payload: bytes = b"") -> None:
        """Append a header (blocks) and its data, padded to whole FITS blocks."""
        self.write(header if isinstance(header, bytes) else header_bytes(header))
        if payload:
            self.write(payload)
            self.write(padding(len(payload)))

    def close(self) -> None:
        """Finish the gzip stream (only flushed when truncated) and close the file."""
        if self._z is not None:
            if self.truncated:
                self._fh.write(self._z.flush(zlib.Z_SYNC_FLUSH))
            else:
                self._fh.write(self._z.flush(zlib.Z_FINISH))
        self._fh.close()

    def __enter__(self) -> FitsStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
