"""viskom.store: the database layer (SQLAlchemy 2 models, packaged Alembic migrations).

Other modules use only :class:`Store` and the record dataclasses re-exported here. The
records are plain dataclasses, imported at once; `Store` and what needs SQLAlchemy are
imported on first use, so that a module that only reads records (or `store.quick`, the
status reader without SQLAlchemy) does not pay ~0.35 s of imports at start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .records import (
    DONE_STATUSES,
    EXPOSURE_STATES,
    FRAME_TYPES,
    RUN_STATUSES,
    Claim,
    Exposure,
    ExposureRecord,
    FetchedFile,
    MetricValue,
    OutcomeRecord,
    ProductRecord,
    StageRun,
)

if TYPE_CHECKING:
    from .alerts import AlertNotification, AlertRecord, AlertState
    from .database import Store
    from .engine import StoreError, shown_url
    from .fetches import FetchOutcome

#: name -> the submodule that defines it (imported when the name is first asked for)
_LAZY = {
    "AlertNotification": "alerts",
    "AlertRecord": "alerts",
    "AlertState": "alerts",
    "Store": "database",
    "StoreError": "engine",
    "shown_url": "engine",
    "FetchOutcome": "fetches",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DONE_STATUSES",
    "EXPOSURE_STATES",
    "FRAME_TYPES",
    "RUN_STATUSES",
    "AlertNotification",
    "AlertRecord",
    "AlertState",
    "Claim",
    "Exposure",
    "ExposureRecord",
    "FetchOutcome",
    "FetchedFile",
    "MetricValue",
    "OutcomeRecord",
    "ProductRecord",
    "StageRun",
    "Store",
    "StoreError",
    "shown_url",
]
