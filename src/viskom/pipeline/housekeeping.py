"""Free space in the raw folder: measured raw frames older than `[archive] move_after_days`
move to a second folder (`[archive] move_to`), verified before the original goes.

What VISQL's `freeupspace` did without checking (`cp -n`, then a symlink over the
original), done so that nothing is lost: each file is copied to a temporary name in the
second folder, flushed to disk, its SHA-256 compared with the one recorded when it was
registered, then renamed; the store's exposure (and fetch record) then points at the copy,
and only after that is the original removed. A file whose copy differs, or whose exposure
changed meanwhile, stays where it is and is reported. Only exposures every applicable stage
has measured (ok or found nothing, none pending, none failed) move: a frame that may be
measured again stays on the fast disk.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from viskom.pipeline.pending import measured_ids
from viskom.pipeline.register import sha256_of
from viskom.store.atomic import atomic_path

_COPY_CHUNK = 1 << 22


@dataclass
class MoveReport:
    """What a housekeeping pass moved (names), left (name, why) and how many bytes."""

    moved: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    bytes: int = 0

    def line(self) -> str:
        """One line: moved, failed, bytes."""
        text = f"moved {len(self.moved)} measured raw file(s), {self.bytes / 1e9:.2f} GB"
        return text + (f"; {len(self.failed)} left in place" if self.failed else "")


def copy_verified(source: Path, folder: Path, expected_sha256: str) -> Path:
    """Copy `source` into `folder` under its name, flushed to disk, and return the copy's
    path once its SHA-256 (computed from the copy's bytes as written) is `expected_sha256`;
    ValueError (and no copy) when it is not."""
    target = folder / source.name
    with atomic_path(target) as tmp:
        with source.open("rb") as src, tmp.open("wb") as dst:
            shutil.copyfileobj(src, dst, _COPY_CHUNK)
            dst.flush()
            os.fsync(dst.fileno())
        if sha256_of(tmp) != expected_sha256:
            raise ValueError(f"the copy in {folder} differs from the registered file")
    return target


def measured_exposures(store: Any, settings: Any) -> set[int]:
    """Ids of registered exposures that every applicable stage has measured."""
    from viskom.pipeline.runner import plan

    tasks, _skipped, _blocked = plan(store, settings, workers=1)
    return measured_ids({t.exposure_id for t in tasks}, store.stage_runs())


def move_measured(settings: Any, store: Any, now: datetime | None = None) -> MoveReport:
    """Move the raw folder's measured frames older than `move_after_days` to `move_to`."""
    report = MoveReport()
    folder = settings.move_path
    if folder is None:
        return report
    raw = settings.raw_path.resolve()
    cutoff = (now or datetime.now(UTC)) - timedelta(days=settings.archive.move_after_days)
    done = measured_exposures(store, settings)
    records = {Path(r.path).name: r for r in store.fetched_files(state="fetched") if r.path}
    for exp in store.list_exposures(state="registered"):
        path = Path(exp.path)
        if exp.id not in done or not path.is_relative_to(raw) or not path.exists():
            continue
        when = exp.date_obs or datetime.fromtimestamp(path.stat().st_mtime, UTC)
        if when > cutoff or not exp.checksum:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            copy = copy_verified(path, folder, exp.checksum)
        except (OSError, ValueError) as exc:
            report.failed.append((exp.name, str(exc)))
            continue
        record = records.get(path.name)
        if not store.relocate_file(
            record.name if record else path.name, exp.name, str(path), str(copy)
        ):
            copy.unlink(missing_ok=True)
            report.failed.append((exp.name, "the exposure changed while it was copied"))
            continue
        report.bytes += path.stat().st_size
        path.unlink()
        report.moved.append(exp.name)
    return report
