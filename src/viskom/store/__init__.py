"""viskom.store: the database layer (SQLAlchemy 2 models, packaged Alembic migrations).

Other modules use only :class:`Store` and the record dataclasses re-exported here.
"""

from .alerts import AlertNotification, AlertRecord, AlertState
from .database import Store
from .engine import StoreError, shown_url
from .fetches import FetchedFile, FetchOutcome
from .records import (
    DONE_STATUSES,
    EXPOSURE_STATES,
    FRAME_TYPES,
    RUN_STATUSES,
    Exposure,
    ExposureRecord,
    MetricValue,
    OutcomeRecord,
    ProductRecord,
    StageRun,
)

__all__ = [
    "DONE_STATUSES",
    "EXPOSURE_STATES",
    "FRAME_TYPES",
    "RUN_STATUSES",
    "AlertNotification",
    "AlertRecord",
    "AlertState",
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
