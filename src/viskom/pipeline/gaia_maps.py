"""The focal-plane figures of a period: FPA hexagon maps (with redraw avoidance), colour relations.

`fpa_map_tasks` lists the maps of a period, its Thursday-to-Thursday weeks and its days
(`iceplot_FPA_<name>_<exptime>.png`, VISQL-SPEC 8.10); `render_all` draws them serially or
on an executor (`pipeline.executors`) and keeps a map whose inputs have not changed since it
was drawn. `write_fpa_maps` and `write_colour_relations_fpa` are the drawing steps with their
output path: statistics from `measure.gaia_cells`, the figure from `present.gaia`, the PNG
written by `store.products.write_figure`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from viskom.measure.gaia_cells import HexGrid, fpa_cell_maps
from viskom.pipeline.gaia_io import ResidualStack
from viskom.store.atomic import write_text_atomic
from viskom.store.products import write_figure

log = logging.getLogger(__name__)


def write_fpa_maps(
    x: np.ndarray,
    y: np.ndarray,
    residual: np.ndarray,
    g_mag: np.ndarray,
    flux_adu: np.ndarray,
    path: Path,
    *,
    label: str,
    exptime: float,
    kind: str,
    n_exposures: int,
    grid: HexGrid | None = None,
) -> Path:
    """The six FPA maps of a period's stars (`present.gaia.plot_fpa_maps`) written to `path`.

    `residual` is VIS/Gaia over each exposure's own colour model (frat), binned and reduced
    per hexagon by `measure.gaia_cells.fpa_cell_maps`. Returns the path.
    """
    from viskom.present import gaia as present

    cells = fpa_cell_maps(x, y, residual, g_mag, flux_adu, grid)
    fig = present.plot_fpa_maps(
        cells, label=label, exptime=exptime, kind=kind, n_exposures=n_exposures
    )
    return write_figure(fig, path)


def write_colour_relations_fpa(
    ccd: np.ndarray,
    bp_rp: np.ndarray,
    ln_ratio: np.ndarray,
    g_mag: np.ndarray,
    fits: Mapping[str, Mapping[str, float]],
    path: Path,
    *,
    label: str,
    kind: str,
    exptime: float,
    **options: Any,
) -> Path:
    """The colour relation of each CCD (`present.gaia.plot_colour_relations_fpa`) at `path`.

    `options` (max_points, seed) go to the plot. Returns the path.
    """
    from viskom.present import gaia as present

    fig = present.plot_colour_relations_fpa(
        ccd, bp_rp, ln_ratio, g_mag, fits, label=label, kind=kind, exptime=exptime, **options
    )
    return write_figure(fig, path)


def fpa_map_tasks(
    stack: ResidualStack,
    rows: np.ndarray,
    row_day: np.ndarray,
    folder: Path,
    label: str,
    kind: str,
    exptime: float,
    days: np.ndarray,
    weeks: Sequence[tuple[date, date]],
) -> list[dict[str, Any]]:
    """Keyword arguments of `present.gaia.plot_fpa_maps` for the period, its weeks, its days.

    Only periods with stars; `rows` selects the usable stars of one exposure kind.
    """
    periods: list[tuple[str, str, np.datetime64, np.datetime64]] = []
    if days.size:
        periods.append((label, label, days.min(), days.max() + 1))
    periods += [
        (f"wk{a}_{b}", f"week {a} to {b}", np.datetime64(a, "D"), np.datetime64(b, "D"))
        for a, b in weeks
    ]
    periods += [(str(d), str(d), d, d + 1) for d in days]
    tasks = []
    for name, title, a, b in periods:
        sel = rows & (row_day >= a) & (row_day < b)
        if not sel.any():
            continue
        tasks.append(
            {
                "x": stack.x[sel],
                "y": stack.y[sel],
                "residual": stack.frat[sel],
                "g_mag": stack.g[sel],
                "flux_adu": stack.flux[sel],
                "path": folder / f"iceplot_FPA_{name}_{exptime:.2f}.png",
                "label": title,
                "exptime": exptime,
                "kind": kind,
                "n_exposures": int(np.unique(stack.exposure[sel]).size),
            }
        )
    return tasks


def render_fpa_map(task: Mapping[str, Any]) -> Path:
    """Draw and write one FPA map task (top level, so that a process pool can run it)."""
    return write_fpa_maps(**task)


#: Bump when the FPA map drawing changes: maps with unchanged inputs are otherwise not redrawn.
FPA_MAPS_VERSION = "1"
SIGNATURES_FILE = ".fpa_map_inputs.json"


def map_signature(task: Mapping[str, Any]) -> str:
    """A digest of an FPA map's inputs (the star arrays, labels and the drawing version)."""
    h = hashlib.sha1(usedforsecurity=False)
    for key in ("x", "y", "residual", "g_mag", "flux_adu"):
        h.update(np.ascontiguousarray(task[key], dtype=float).tobytes())
    h.update(
        f"{task['label']}|{task['exptime']}|{task['kind']}|{task['n_exposures']}|"
        f"{FPA_MAPS_VERSION}".encode()
    )
    return h.hexdigest()


def render_all(tasks: Sequence[Mapping[str, Any]], executor: Any | None) -> list[Path]:
    """Render tasks serially or on an executor (`pipeline.executors`); failures are logged.

    A map whose PNG exists and whose inputs have not changed since it was drawn (digest in a
    hidden JSON file of its folder) is kept as it is: a month's products are rewritten after
    every run, but only the maps of the days that got new exposures change.
    """
    by_folder: dict[Path, dict[str, str]] = {}
    todo, kept, signatures = [], [], {}
    for task in tasks:
        path = Path(task["path"])
        known = by_folder.setdefault(path.parent, _read_signatures(path.parent))
        sig = map_signature(task)
        signatures[path] = sig
        if path.exists() and known.get(path.name) == sig:
            kept.append(path)
        else:
            todo.append(task)
    if executor is None:
        results: Iterable[tuple[Mapping[str, Any], Any]] = ((t, _try_render(t)) for t in todo)
    else:
        results = executor.map_unordered(render_fpa_map, todo)
    written = []
    for task, res in results:
        if isinstance(res, BaseException):
            log.error("FPA map %s failed: %s", task["path"], res)
            by_folder[Path(task["path"]).parent].pop(Path(task["path"]).name, None)
        else:
            written.append(res)
            path = Path(task["path"])
            by_folder[path.parent][path.name] = signatures[path]
    for folder, known in by_folder.items():
        if todo:
            _write_signatures(folder, known)
    return sorted(written + kept)


def _read_signatures(folder: Path) -> dict[str, str]:
    try:
        data = json.loads((folder / SIGNATURES_FILE).read_text())
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_signatures(folder: Path, known: Mapping[str, str]) -> None:
    write_text_atomic(folder / SIGNATURES_FILE, json.dumps(dict(sorted(known.items())), indent=0))


def _try_render(task: Mapping[str, Any]) -> Path | Exception:
    try:
        return render_fpa_map(task)
    except Exception as err:  # one bad map must not stop the others
        return err
