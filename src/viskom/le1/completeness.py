"""Whether a frame file has arrived whole, without reading its pixels.

A file still being written or copied must not be registered; one that is whole but wrong
must be (registration records why it is invalid). `file_is_complete` tells the two apart for
plain FITS (the headers walked block by block to the file's end) and gzip streams (inflated in
chunks, nothing kept, CRC and length checked). `viskom watch` asks it before ingesting, the
archive downloads before a file replaces anything.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

BLOCK = 2880
CARD = 80
_CHUNK = 1 << 20  # bytes read at a time from a gzip stream
_BITPIX = {8, 16, 32, 64, -32, -64}
_GZIP_MAGIC = b"\x1f\x8b"


def file_is_complete(path: str | Path, *, gzipped: bool | None = None) -> tuple[bool, str]:
    """(ready, reason): whether the file's end is there, so that it can be registered.

    `.gz` names: the gzip stream is decompressed in chunks (nothing kept) and must end, with
    its CRC and length checked; every member of a multi-member stream likewise. Other names
    (`.fits`, `.fit`, `.fits.fz`): the FITS headers are walked block by block (END card,
    BITPIX, NAXIS, NAXISn, PCOUNT, GCOUNT give each HDU's data size, padded to 2880 bytes)
    and the last HDU must end at the file's size: at its padded end, or exactly at the end
    of its data (writers that do not pad), or be followed by whole blocks that start no
    extension. The pixel data is never read.

    False means "still arriving". A file that is not FITS, or not gzip, or is corrupt in a
    way more bytes cannot fix, is ready (True): `ingest` records it as invalid.
    """
    path = Path(path)
    if gzipped is None:  # from the name, unless the caller knows (a download's .part file)
        gzipped = path.name.lower().endswith(".gz")
    if gzipped:
        return _gzip_complete(path)
    return _fits_complete(path)


class GzipStreamCheck:
    """Inflates a gzip stream fed in pieces (nothing kept) and says whether it was whole.

    Every member's CRC-32 and length are checked by zlib; zero padding after the last
    member is allowed, other trailing bytes are not. `feed` as the bytes come (from a file
    or from the network: zlib releases the GIL, so downloads verify in parallel), then
    `result()`. `first` holds the first inflated bytes (to see that a FITS file is inside).
    """

    def __init__(self) -> None:
        self.total = 0  # uncompressed bytes
        self.members = 0
        self.first = b""
        self._z: Any = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._zeros = False  # zero padding seen after the last member
        self._seen = b""  # the first bytes of the stream, until the magic is checked
        self._verdict: tuple[bool, str] | None = None  # a final verdict, reached early

    def feed(self, data: bytes) -> None:
        """Inflate the next bytes of the stream."""
        if self._verdict is not None or not data:
            return
        if len(self._seen) < 2:
            self._seen += data[: 2 - len(self._seen)]
            if self._seen != _GZIP_MAGIC[: len(self._seen)]:
                self._verdict = (True, "not a gzip stream (left to ingest)")
                return
        buf = bytes(data)
        while buf:
            if self._z is None:  # between members: zero padding or another member
                if not buf.strip(b"\0"):
                    self._zeros = True
                    return
                if self._zeros or not buf.startswith(_GZIP_MAGIC[: len(buf)]):
                    self._verdict = (True, "trailing bytes after the gzip stream (left to ingest)")
                    return
                self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:  # bounded output per call: a chunk of zeros may inflate 1000-fold
                out = self._z.decompress(buf, 8 * _CHUNK)
            except zlib.error as exc:  # bytes that are there and wrong: more cannot help
                self._verdict = (True, f"corrupt gzip stream ({exc}; left to ingest)")
                return
            if len(self.first) < BLOCK:
                self.first += out[: BLOCK - len(self.first)]
            self.total += len(out)
            buf = self._z.unconsumed_tail
            if self._z.eof:  # the member's CRC-32 and length matched
                self.members += 1
                buf, self._z = self._z.unused_data, None

    def result(self) -> tuple[bool, str]:
        """(ready, reason) as `file_is_complete` gives them, for the bytes fed so far."""
        if self._verdict is not None:
            return self._verdict
        if not self._seen:
            return False, "empty (still arriving)"
        if self._z is None:
            return True, f"complete gzip stream ({self.members} member(s), {self.total} bytes)"
        return False, f"gzip stream unfinished after {self.total} bytes (still arriving)"

    @property
    def decided(self) -> bool:
        """A verdict that more bytes cannot change (corrupt, not gzip, trailing bytes)."""
        return self._verdict is not None


def _gzip_complete(path: Path) -> tuple[bool, str]:
    check = GzipStreamCheck()
    with path.open("rb") as fh:
        while not check.decided and (chunk := fh.read(_CHUNK)):
            check.feed(chunk)
    return check.result()


def _card_int(card: bytes) -> int | None:
    """The integer value of a fixed-format card, None when it is not an integer."""
    text = card[10:].split(b"/", 1)[0].strip()
    try:
        return int(text)
    except ValueError:
        return None


def _read_header(fh: Any, start: int, size: int) -> tuple[str, dict[str, int] | None, int]:
    """Walk one header from `start`: ('ok', values, end), ('short', None, where) when the
    file ends inside it, ('bad', None, where) when it is not a FITS header."""
    values: dict[str, int] = {}
    pos = start
    first = True
    while True:
        if pos + BLOCK > size:
            fh.seek(pos)
            prefix = fh.read(size - pos)
            if first and not _could_start_hdu(prefix, start == 0):
                return "bad", None, pos
            return "short", None, pos
        fh.seek(pos)
        block = fh.read(BLOCK)
        if len(block) < BLOCK:  # the file shrank under us
            return "short", None, pos
        if first and not _could_start_hdu(block, start == 0):
            return "bad", None, pos
        first = False
        pos += BLOCK
        for i in range(0, BLOCK, CARD):
            card = block[i : i + CARD]
            keyword = card[:8].rstrip().decode("ascii", "replace")
            if keyword == "END":
                return "ok", values, pos
            if card[8:10] != b"= ":
                continue
            if keyword in ("BITPIX", "NAXIS", "PCOUNT", "GCOUNT") or (
                keyword.startswith("NAXIS") and keyword[5:].isdigit()
            ):
                value = _card_int(card)
                if value is None:
                    return "bad", None, pos
                values.setdefault(keyword, value)


def _could_start_hdu(prefix: bytes, primary: bool) -> bool:
    """Whether `prefix` is (or could grow into) the first card of an HDU."""
    want = b"SIMPLE  =" if primary else b"XTENSION="
    n = min(len(prefix), len(want))
    return prefix[:n] == want[:n]


def _data_size(values: dict[str, int]) -> int | None:
    """Bytes of an HDU's data (unpadded) from its header values, None when they make no sense."""
    bitpix = values.get("BITPIX")
    naxis = values.get("NAXIS")
    if bitpix not in _BITPIX or naxis is None or not 0 <= naxis <= 999:
        return None
    if naxis == 0:
        return 0
    axes = [values.get(f"NAXIS{i}") for i in range(1, naxis + 1)]
    if any(a is None or a < 0 for a in axes):
        return None
    if axes[0] == 0:  # random groups: NAXIS1 = 0, the groups' axes follow
        axes = axes[1:]
    n = 1
    for a in axes:
        n *= a
    pcount, gcount = values.get("PCOUNT", 0), values.get("GCOUNT", 1)
    if pcount < 0 or gcount < 0:
        return None
    return abs(bitpix) // 8 * gcount * (pcount + n)


def _fits_complete(path: Path) -> tuple[bool, str]:
    size = path.stat().st_size
    if size == 0:
        return False, "empty (still arriving)"
    pos = 0
    n_hdu = 0
    with path.open("rb") as fh:
        while True:
            state, values, where = _read_header(fh, pos, size)
            if state == "bad":
                what = "not a FITS file" if n_hdu == 0 else f"HDU {n_hdu + 1}: not a FITS header"
                if n_hdu and size % BLOCK == 0:
                    return True, f"complete: {n_hdu} HDU(s), then {size - pos} other bytes"
                return True, f"{what} (left to ingest)"
            if state == "short":
                return False, f"HDU {n_hdu + 1}: header incomplete at {size} bytes (still arriving)"
            assert values is not None
            n_data = _data_size(values)
            if n_data is None:
                return True, f"HDU {n_hdu + 1}: unusable size keywords (left to ingest)"
            n_hdu += 1
            end = where + n_data
            padded = end + (-n_data) % BLOCK
            if size < end:
                return False, f"HDU {n_hdu}: {size} of {end} bytes (still arriving)"
            if size == padded:
                return True, f"complete: {n_hdu} HDU(s), {size} bytes"
            if size == end:  # a writer that does not pad the last HDU
                return True, f"complete: {n_hdu} HDU(s), the last one without its padding"
            if size < padded:
                return False, f"HDU {n_hdu}: padding incomplete at {size} bytes (still arriving)"
            pos = padded
