"""Detector-health stage: bias, read noise and type-specific levels for every quadrant.

Header values are not replaced by defaults: a quadrant whose geometry keywords are unusable
is left out; one with an unusable or missing GAIN keeps its ADU metrics but not those in
electrons; one with an unusable SATURATE does not count saturated pixels; a DARK without a
usable EXPTIME gets no dark current. Each omission is a `bad_header_value` quality outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np

from viskom.le1.frame import Le1Frame, Quadrant
from viskom.le1.header import GEOMETRY_KEYWORDS
from viskom.le1.quadrant_map import map_quadrants
from viskom.measure.detector import DetectorHealthParams, quadrant_health
from viskom.stages.base import (
    ProductSpec,
    QualityOutcome,
    Stage,
    StageInputs,
    StageResult,
    usable_quadrants,
)

#: Metrics converted to electrons with the quadrant's GAIN.
GAIN_METRICS = ("read_noise_e", "dark_current_e_per_s", "flat_level_e")


class DetectorHealth(Stage):
    """Per-quadrant detector statistics, with CCD and focal-plane summaries."""

    name = "detector_health"
    version = "2"  # 2: the per-quadrant table as a product (health maps); metrics unchanged
    frame_types = frozenset({"SCIENCE", "DARK", "BIAS", "FLAT", "CHARGE", "UNKNOWN"})
    config_section = "detector_health"
    products = (ProductSpec("health", "parquet", "per-quadrant detector metrics, a row each"),)
    header_keywords = ()  # EXPTIME only for a DARK's dark current: handled per metric

    def run(self, frame: Le1Frame, inputs: StageInputs, config: Mapping[str, Any]) -> StageResult:
        exposure = inputs.exposure
        params = DetectorHealthParams(**{**asdict(DetectorHealthParams()), **dict(config)})
        if not frame.quadrant_extnames:
            raise ValueError("no quadrant extensions to measure")
        names, outcomes = usable_quadrants(frame, GEOMETRY_KEYWORDS)
        if not names:
            return StageResult(outcomes=outcomes, measured=False)
        exptime = exposure.exptime if exposure.exptime is not None else frame.primary.exptime
        dark = exposure.frame_type.upper() == "DARK"
        exptime_problem = frame.primary.blocking_problem(("EXPTIME",)) if dark else None
        if exptime_problem is not None:
            exptime = None
            outcomes.append(
                QualityOutcome(
                    "bad_header_value",
                    f"{exptime_problem.describe()}: dark_current_e_per_s not measured",
                )
            )
        per_quadrant = map_quadrants(
            frame,
            _quadrant_health,
            args=(exposure.frame_type, exptime, params),
            names=names,
            workers=exposure.quadrant_workers,
        )
        for ext, metrics in per_quadrant.items():
            qh = frame.quadrant_header(ext)
            dropped = []
            for keyword, affected in (("GAIN", GAIN_METRICS), ("SATURATE", ("saturated_pixels",))):
                problems = qh.problems_with((keyword,))
                gone = [m for m in affected if m in metrics]
                if problems and gone:
                    for m in gone:
                        del metrics[m]
                    dropped.append(f"{problems[0].describe()}: {', '.join(gone)} not measured")
            if exptime is None and "dark_current_e_per_s" in metrics:
                del metrics["dark_current_e_per_s"]
            if dropped:
                outcomes.append(QualityOutcome("bad_header_value", "; ".join(dropped), ext))
        rows = [(ext, name, v) for ext, m in per_quadrant.items() for name, v in m.items()]
        names_measured = sorted({name for m in per_quadrant.values() for name in m})
        table = {"extname": np.array(list(per_quadrant), dtype=str)}
        for metric in names_measured:
            table[metric] = np.array([m.get(metric, np.nan) for m in per_quadrant.values()], float)
        return StageResult(  # CCD and FPA: the runner's roll-up
            metrics=rows, outcomes=outcomes, products={"health": table}
        )


def _quadrant_health(
    quad: Quadrant, frame_type: str, exptime: float | None, params: DetectorHealthParams
) -> dict[str, float]:
    return quadrant_health(
        quad.data,
        quad.geometry,
        frame_type=frame_type,
        gain_e_per_adu=quad.header.gain_e_per_adu,
        exptime_s=exptime,
        saturate_adu=quad.header.saturate_adu,
        params=params,
    )
