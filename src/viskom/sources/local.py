"""The local-folder source: find raw frame files under paths given by the user."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from viskom.le1.names import FITS_SUFFIXES


def looks_like_frame_file(path: Path) -> bool:
    """True for names ending in a FITS suffix (content is checked later, not here)."""
    return path.name.lower().endswith(FITS_SUFFIXES) and not path.name.startswith(".")


def find_frame_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files named like FITS frames: given files as they are, folders searched recursively.

    A path that does not exist raises FileNotFoundError, so that a typo is not silently
    taken for an empty folder.
    """
    seen: set[Path] = set()
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
        candidates = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())
        for f in candidates:
            if (p.is_file() or looks_like_frame_file(f)) and f.resolve() not in seen:
                seen.add(f.resolve())
                yield f
