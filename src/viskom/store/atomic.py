"""One way to write a file so that a reader never sees half of it.

Every file viskom writes (products, calibration maps, cache tiles, downloads, movies) goes
through `atomic_path`: the writer fills a temporary file in the same folder, which replaces
the target only when the writer finished without error; on error the temporary file goes and
an older target stays as it was. The temporary name is unique per process and call, so two
workers writing the same product never mix their bytes.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


def temporary_sibling(path: Path, suffix: str = "") -> Path:
    """A fresh hidden name beside `path` (same folder, so os.replace is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on error it is removed.

    `suffix` ends the temporary name, for writers that choose the format by extension
    (numpy's savez adds '.npz' unless the name ends with it; ffmpeg needs '.mp4').
    The file gets the permissions of a normal new file (umask honoured).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(target, suffix)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def stale_temporaries(root: str | os.PathLike[str], before: float) -> list[Path]:
    """Temporary files of `atomic_path` under `root` last written before `before` (a Unix
    time): what a killed writer left behind."""
    found: list[Path] = []
    if not Path(root).is_dir():
        return found
    for path in Path(root).rglob(".*.tmp*"):
        try:
            if path.is_file() and ".tmp" in path.name and path.stat().st_mtime < before:
                found.append(path)
        except OSError:  # gone meanwhile
            continue
    return found


def remove_stale_temporaries(root: str | os.PathLike[str], before: float) -> int:
    """Remove `stale_temporaries(root, before)`; returns how many went."""
    removed = 0
    for path in stale_temporaries(root, before):
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return removed


def promote(done: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Put a finished file (a verified download's `.part`, in the target's folder) in place
    of `target` in one step: a reader sees the old file or the new one, never a mix."""
    os.replace(done, target)
    return Path(target)
