"""Between the runner and a stage: hand its declared inputs in, check and write what it returns.

`run_stage` is the one way a stage runs (in a worker, in a test, in a benchmark): the stage's
earlier products are removed (a run that writes nothing leaves nothing stale) and its input
products are read, then handed in with the calibrations and external-input clients the
runner prepared (`runner.execute_call`, `pipeline.resources`); after `Stage.run` the metrics
are checked against the registry
(`viskom.metrics`: registered, declared by this stage, at a level the metric has), rolled up
from quadrants to CCDs and the focal plane where the registry says `median` or `sum`, and the
product payloads are written into the exposure's folder of the product tree, each recorded
with its path relative to the data root, size and SHA-256.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from viskom.le1.frame import Le1Frame
from viskom.le1.geometry import parse_extname
from viskom.metrics import METRICS, level_of_unit
from viskom.pipeline.register import sha256_of
from viskom.stages.base import ExposureInfo, Stage, StageInputs, StageResult
from viskom.store.atomic import write_bytes_atomic
from viskom.store.products import (
    LazyTable,
    write_arrays,
    write_figure,
    write_fits,
    write_json,
    write_table,
)


class ContractError(RuntimeError):
    """A stage returned something its declaration does not allow (an unregistered metric,
    an undeclared product, a payload of the wrong kind)."""


@dataclass(frozen=True)
class WrittenProduct:
    """A file the runner wrote for a stage: kind, path relative to the data root, size, hash."""

    kind: str
    path: str
    size_bytes: int
    sha256: str


def read_product(path: Path, ext: str) -> Any:
    """A product file as a stage receives it: columns, a mapping, arrays (npz); a FITS
    product as its path (the tools that read it, solve-field or ds9, want the file)."""
    if ext == "fits":
        return path
    if ext == "parquet":  # columns read when first used: memory (a catalogue has 20)
        return LazyTable(path)
    if ext == "json":
        return json.loads(path.read_text())
    if ext == "npz":
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    raise ValueError(f"{path}: products of format {ext!r} are not read back")


def product_ext(stage_name: str, kind: str) -> str:
    """The file format of a product, from the declaration of the stage that writes it."""
    from viskom.stages import get_stage

    return get_stage(stage_name).product_spec(kind).ext


def gather_inputs(
    stage: Stage,
    exposure: ExposureInfo,
    calibrations: Mapping[str, Any] | None = None,
    external: Mapping[str, Any] | None = None,
) -> StageInputs:
    """The stage's input products read from the exposure's folder (FileNotFoundError naming
    the stage that makes a missing one), with the loaded calibrations and external inputs."""
    products: dict[str, Any] = {}
    for wanted in stage.inputs:
        ext = product_ext(wanted.stage, wanted.kind)
        path = exposure.product(wanted.kind, ext)
        if not path.exists():
            if wanted.optional:
                products[wanted.kind] = None
                continue
            raise FileNotFoundError(
                f"no {wanted.kind} product at {path}: run the {wanted.stage} stage first"
            )
        products[wanted.kind] = read_product(path, ext)
    return StageInputs(exposure, products, dict(calibrations or {}), dict(external or {}))


def remove_products(stage: Stage, exposure: ExposureInfo) -> None:
    """Delete the stage's products of an earlier run on this exposure (every member of a
    declared family too)."""
    for spec in stage.products:
        if not spec.family:
            exposure.product(spec.kind, spec.ext).unlink(missing_ok=True)
            continue
        folder = exposure.product_folder
        for path in folder.glob(f"{exposure.name}_{spec.kind}.{spec.ext}"):
            if spec.covers(path.name[len(exposure.name) + 1 : -len(spec.ext) - 1]):
                path.unlink(missing_ok=True)


def check_metrics(stage: Stage, rows: Iterable[tuple[str, str, float]]) -> None:
    """ContractError unless every row is a registered metric of this stage at a level the
    registry allows (roll-up metrics at quadrant level only: the runner rolls them up)."""
    for unit, name, _value in rows:
        metric = METRICS.get(name)
        if metric is None:
            from viskom.metrics import unknown_message

            raise ContractError(
                f"stage {stage.name} wrote an unregistered metric: "
                f"{unknown_message('metric', name, METRICS)} (register it in viskom.metrics)"
            )
        if metric.stage != stage.name:
            raise ContractError(
                f"stage {stage.name} wrote {name}, which the registry gives to {metric.stage}"
            )
        level = level_of_unit(unit)
        allowed = ("quadrant",) if metric.rolled_up else metric.levels
        if level not in allowed:
            raise ContractError(
                f"stage {stage.name} wrote {name} for {unit} ({level}); the registry allows "
                f"{', '.join(allowed)}" + (" (the runner rolls it up)" if metric.rolled_up else "")
            )


def roll_up(rows: list[tuple[str, str, float]]) -> list[tuple[str, str, float]]:
    """The rows plus CCD and FPA values of every roll-up metric (registry `median`: median
    of the quadrants with a finite value, `sum`: their sum; NaN when none is finite)."""
    by_ccd: dict[tuple[str, str], list[float]] = {}
    fpa: dict[str, list[float]] = {}
    for unit, name, value in rows:
        metric = METRICS[name]
        if not metric.rolled_up or level_of_unit(unit) != "quadrant":
            continue
        by_ccd.setdefault((parse_extname(unit).ccd, name), []).append(value)
        fpa.setdefault(name, []).append(value)
    out = list(rows)
    for (ccd, name), values in sorted(by_ccd.items()):
        out.append((ccd, name, _combine(METRICS[name].aggregation, values)))
    for name, values in fpa.items():
        out.append(("FPA", name, _combine(METRICS[name].aggregation, values)))
    return out


def _combine(aggregation: str, values: list[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return float("nan")
    return float(arr.sum()) if aggregation == "sum" else float(np.median(arr))


def write_products(
    stage: Stage, exposure: ExposureInfo, payloads: Mapping[str, Any]
) -> list[WrittenProduct]:
    """Write each payload in its declared format; the records, paths relative to the root."""
    written = []
    root = Path(exposure.root)
    for kind, payload in payloads.items():
        try:
            spec = stage.product_spec(kind)
        except KeyError as exc:
            raise ContractError(str(exc)) from None
        path = exposure.product(kind, spec.ext)
        if spec.ext == "parquet":
            write_table(payload, path)
        elif spec.ext == "json":
            write_json(payload, path)
        elif spec.ext == "npz":
            write_arrays(payload, path)
        elif spec.ext == "png":
            if isinstance(payload, bytes | bytearray):
                if not bytes(payload[:8]) == b"\x89PNG\r\n\x1a\n":
                    raise ContractError(f"stage {stage.name}: product {kind} is not PNG bytes")
                write_bytes_atomic(path, bytes(payload))
            elif hasattr(payload, "savefig"):
                write_figure(payload, path)
            else:
                raise ContractError(f"stage {stage.name}: product {kind} is not a Figure")
        elif spec.ext == "fits":
            if not hasattr(payload, "writeto"):
                raise ContractError(f"stage {stage.name}: product {kind} is not an HDU")
            write_fits(payload, path)
        try:
            relative = path.resolve().relative_to(root.resolve())
        except ValueError:
            raise ContractError(f"{path} is outside the data root {root}") from None
        written.append(
            WrittenProduct(kind, relative.as_posix(), path.stat().st_size, sha256_of(path))
        )
    return written


def run_stage(
    stage: Stage,
    frame: Le1Frame | None,
    exposure: ExposureInfo,
    config: Mapping[str, Any],
    *,
    calibrations: Mapping[str, Any] | None = None,
    external: Mapping[str, Any] | None = None,
) -> StageResult:
    """Run one stage on one opened frame the way the runner does: stale products removed,
    inputs handed in, metrics checked and rolled up, products written (`result.written`)."""
    remove_products(stage, exposure)
    inputs = gather_inputs(stage, exposure, calibrations, external)
    result = stage.run(frame, inputs, config)
    check_metrics(stage, result.metrics)
    result.metrics = roll_up([(u, m, float(v)) for u, m, v in result.metrics])
    result.written = write_products(stage, exposure, result.products)
    result.products = {}  # payloads (figures, tables) are not sent back to the runner
    return result
