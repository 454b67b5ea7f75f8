"""viskom's settings: one typed object from `viskom.toml` with `VISKOM_*` environment overrides.

Where the settings come from, in order: `--config FILE`, else `$VISKOM_CONFIG`, else the
first `viskom.toml` in the current folder or its parents. Environment variables override
the file (`VISKOM_WORKERS=4`, nested keys with a double underscore:
`VISKOM_DETECTOR_HEALTH__HOT_PIXEL_SIGMA=8`). Relative paths are relative to the file's
folder. Invalid settings fail at start with a message naming the key.

The model lives in `viskom.config.settings` and is imported on first use of any of its
names: finding the file (`find_config_file`) does not load pydantic, so a reading command
such as `viskom status` can tell whether its cached view of the settings still holds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CONFIG_FILE_NAME = "viskom.toml"


class ConfigError(Exception):
    """Settings that cannot be used; the message names the file, the key and the problem."""


def find_config_file(explicit: str | Path | None = None, start: Path | None = None) -> Path | None:
    """The settings file to use: explicit, else $VISKOM_CONFIG, else viskom.toml upwards."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get("VISKOM_CONFIG")
    if env:
        return Path(env).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def retry_backoff_s(attempts: int, base_s: float, max_s: float) -> float:
    """Seconds before the next try after `attempts` consecutive transient failures: doubling
    from `base_s`, at most `max_s` (`[run]` retry_base_s, retry_max_s)."""
    return min(max_s, base_s * 2.0 ** max(0, attempts - 1))


def __getattr__(name: str) -> Any:
    """Everything else (Settings, load_settings, ConfigError...) from the settings model."""
    if name.startswith("__"):
        raise AttributeError(name)
    import importlib

    model = importlib.import_module("viskom.config.settings")
    try:
        return getattr(model, name)
    except AttributeError:
        raise AttributeError(f"module 'viskom.config' has no attribute {name!r}") from None
