"""Detector-health stage: bias, read noise and type-specific levels for every quadrant."""

from __future__ import annotations

import multiprocessing
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from typing import Any

from viskom.le1.frame import Le1Frame, Quadrant
from viskom.measure.detector import DetectorHealthParams, quadrant_health, summarise
from viskom.pipeline.threads import bounded_map
from viskom.stages.base import ExposureInfo, Stage, StageResult


class DetectorHealth(Stage):
    """Per-quadrant detector statistics, with CCD and focal-plane summaries."""

    name = "detector_health"
    version = "1"
    frame_types = frozenset({"SCIENCE", "DARK", "BIAS", "FLAT", "CHARGE", "UNKNOWN"})
    level = "quadrant"

    @staticmethod
    def config_of(settings: Any) -> dict[str, Any]:
        return settings.detector_health.model_dump()

    def run(
        self, frame: Le1Frame, exposure: ExposureInfo, config: Mapping[str, Any]
    ) -> StageResult:
        params = DetectorHealthParams(**{**asdict(DetectorHealthParams()), **dict(config)})
        names = frame.quadrant_extnames
        if not names:
            raise ValueError("no quadrant extensions to measure")
        workers = min(exposure.quadrant_workers, len(names))
        if workers > 1 and not frame.gzipped:
            # Memory-mapped frames: each process reads and measures its share of quadrants.
            chunks = [names[i::workers] for i in range(workers)]
            jobs = [
                (str(frame.path), c, exposure.frame_type, exposure.exptime, params) for c in chunks
            ]
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                per_quadrant = {}
                for part in pool.map(_measure_quadrants, jobs):
                    per_quadrant.update(part)
        else:
            per_quadrant = _measure_open_frame(
                frame, names, exposure.frame_type, exposure.exptime, params, threads=2
            )
        return StageResult(metrics=list(summarise({n: per_quadrant[n] for n in names})))


def _measure_open_frame(
    frame: Le1Frame,
    names: list[str],
    frame_type: str,
    exptime: float | None,
    params: DetectorHealthParams,
    threads: int = 1,
) -> dict[str, dict[str, float]]:
    """Measure the named quadrants of an opened frame, reading them in file order.

    With threads=2, reading (numpy releases the GIL there) overlaps measuring; at most a
    few quadrants are held at once. Worker processes use one thread each: two processes
    with two threads each contend and lose more than they gain (measured).
    """

    def measure(quad: Quadrant) -> tuple[str, dict[str, float]]:
        return quad.extname, quadrant_health(
            quad.data,
            quad.geometry,
            frame_type=frame_type,
            gain_e_per_adu=quad.header.gain_e_per_adu,
            exptime_s=exptime,
            saturate_adu=quad.header.saturate_adu,
            params=params,
        )

    return dict(bounded_map(measure, frame.iter_quadrants(names), workers=threads, ahead=2))


def _measure_quadrants(
    job: tuple[str, list[str], str, float | None, DetectorHealthParams],
) -> dict[str, dict[str, float]]:
    """Worker-process entry: open the frame and measure a share of its quadrants."""
    path, names, frame_type, exptime, params = job
    with Le1Frame(path) as frame:
        return _measure_open_frame(frame, names, frame_type, exptime, params, threads=1)
