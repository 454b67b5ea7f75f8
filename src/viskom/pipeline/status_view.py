"""What `viskom status` needs of the settings and the stage registry, kept between calls.

Counting what is pending needs every stage's current version and provenance hash
(`work.stage_calls`), which needs the settings model (pydantic), the stages and their
calibrations: ~0.6 s of imports and file reads before the first query. A `StatusView`
holds just that (plus the database URL and the retry backoff), and is kept in the user's
cache folder under a key made of everything it was computed from: viskom's version and
source files, the settings file's path and bytes, and the `VISKOM_*` environment. It holds
while the calibration files it read are unchanged (path, size, mtime); otherwise, or on
a first call, it is computed again (and saved when the cache folder is writable).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import viskom
from viskom.config import find_config_file, retry_backoff_s
from viskom.pipeline.pending import StagePlan

#: Bump when what a view holds changes: older files are then ignored.
VIEW_FORMAT = 1


@dataclass(frozen=True)
class CallBrief:
    """A stage's current call as planning compares it with a stored run (`work.StageCall`
    without its configuration: the reasons it gives say only that the hash moved)."""

    stage: str
    version: str
    config_hash: str
    config: dict[str, Any] = field(default_factory=dict)
    upstream: dict[str, Any] = field(default_factory=dict)
    calibrations: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StatusView:
    """The database, the stages in pipeline order with their current calls, the backoff."""

    db_url: str
    shown_url: str
    stages: tuple[StagePlan, ...]
    calls: dict[str, CallBrief]
    retry_base_s: float
    retry_max_s: float

    def retry_wait(self, attempts: int) -> float:
        """The settings' `[run]` backoff after `attempts` transient failures."""
        return retry_backoff_s(attempts, self.retry_base_s, self.retry_max_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "db_url": self.db_url,
            "shown_url": self.shown_url,
            "stages": [
                [s.name, sorted(s.frame_types), list(s.upstream), list(s.needs)]
                for s in self.stages
            ],
            "calls": {n: [c.version, c.config_hash] for n, c in self.calls.items()},
            "retry": [self.retry_base_s, self.retry_max_s],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StatusView:
        stages = tuple(
            StagePlan(n, frozenset(ft), tuple(up), tuple(nd)) for n, ft, up, nd in data["stages"]
        )
        calls = {n: CallBrief(n, v, h) for n, (v, h) in data["calls"].items()}
        base, top = data["retry"]
        return cls(data["db_url"], data["shown_url"], stages, calls, float(base), float(top))


def build_view(settings: Any) -> tuple[StatusView, list[Path]]:
    """The view of `settings` (the slow way), and the calibration files it depends on."""
    from viskom.pipeline.resources import calibration_files
    from viskom.pipeline.work import stage_calls
    from viskom.stages import STAGES
    from viskom.store import shown_url

    calls = stage_calls(settings, STAGES)
    view = StatusView(
        db_url=settings.db_url,
        shown_url=shown_url(settings.db_url),
        stages=tuple(StagePlan.of(s) for s in STAGES),
        calls={n: CallBrief(n, c.version, c.config_hash) for n, c in calls.items()},
        retry_base_s=float(settings.run.retry_base_s),
        retry_max_s=float(settings.run.retry_max_s),
    )
    return view, calibration_files(settings)


def status_view(config: str | Path | None) -> StatusView:
    """The view of the settings `config` names (or finds): from the cache when it still
    holds, else built and cached. Unusable settings raise `viskom.config.ConfigError`."""
    path = find_config_file(config)
    key = _key(path) if path is not None and path.is_file() else None
    cached = _cache_file(key) if key else None
    if cached is not None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            data = json.loads(cached.read_text())
            if data.get("format") == VIEW_FORMAT and _unchanged(data.get("files", {})):
                return StatusView.from_json(data["view"])
    from viskom.config import load_settings

    view, files = build_view(load_settings(config))
    if cached is not None:
        with contextlib.suppress(
            OSError, ValueError, KeyError, TypeError
        ):  # a read-only home only makes the next status slower
            cached.parent.mkdir(parents=True, exist_ok=True)
            payload = {
                "format": VIEW_FORMAT,
                "view": view.to_json(),
                "files": {str(p): _signature(p) for p in files},
            }
            tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(payload))
            tmp.replace(cached)
    return view


def _signature(path: Path) -> list[int] | None:
    """(size, mtime_ns) of a file, or None when it is not there."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _unchanged(files: dict[str, Any]) -> bool:
    return all(
        _signature(Path(p)) == (sig if sig is None else list(sig)) for p, sig in files.items()
    )


def _key(config_path: Path) -> str:
    """What a view is computed from: viskom's version and source files, the settings file
    and the environment's VISKOM_* variables."""
    digest = hashlib.sha256()
    digest.update(f"{VIEW_FORMAT}|{viskom.__version__}|{config_path}".encode())
    digest.update(config_path.read_bytes())
    env = sorted((k.upper(), v) for k, v in os.environ.items() if k.upper().startswith("VISKOM_"))
    digest.update(json.dumps(env).encode())
    package = Path(viskom.__file__).parent
    for source in sorted(package.rglob("*.py")):
        st = source.stat()
        digest.update(f"{source}|{st.st_size}|{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def _cache_file(key: str) -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "viskom" / "status" / f"{key}.json"
