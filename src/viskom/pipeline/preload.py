"""Import once, fork many: the heavy modules the stages import, loaded before forking.

A frame's stages run in forked processes (`worker._run_side_by_side`), and the pixel-bound
ones fork quadrant workers of their own. Each process that imports matplotlib, astropy.wcs,
xarray or numba and loads numba's compiler target from its on-disk cache pays 0.3-0.7 s per
package: about 24 CPU-s of a full frame's quick look went to imports (PYTHONPROFILEIMPORTTIME
over one run, 2026-12-07). Imported in the parent before the fork, they cost nothing more in
the children (copy-on-write). `Stage.imports` names them per stage.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterable

log = logging.getLogger(__name__)

#: Modules preloaded in this process (and so in its forked children)
_DONE: set[str] = set()


def preload(modules: Iterable[str]) -> list[str]:
    """Import `modules` not yet preloaded in this process, and call each one's `warm_up()` if
    it has one; the names that were not imported before. A module that fails to import is
    left to fail where it is used (the stage records why), so a preload never stops a run."""
    loaded = []
    for name in dict.fromkeys(modules):
        if name in _DONE:
            continue
        _DONE.add(name)
        fresh = name not in sys.modules
        try:
            module = importlib.import_module(name)
            warm_up = getattr(module, "warm_up", None)
            if callable(warm_up):
                warm_up()
        except Exception as exc:  # an optional dependency missing, a cache unreadable
            log.debug("preload of %s failed: %s", name, exc)
            continue
        if fresh:
            loaded.append(name)
    return loaded


#: What every stage process imports on its first product read or write (`store.products`:
#: pyarrow's Parquet reader imports its dataset layer then)
RUNNER_IMPORTS = ("pyarrow.dataset",)


#: What the run imports after its stages (the month products: matplotlib and the trend
#: plots, 0.9 s), imported while the stages run so the month products' processes inherit it
AFTER_STAGES_IMPORTS = ("viskom.pipeline.aggregate",)


def stage_imports(stage_names: Iterable[str]) -> list[str]:
    """The modules the named stages declare in `Stage.imports`, after the runner's own
    (`RUNNER_IMPORTS`), each once."""
    from viskom.stages import get_stage

    names = [m for name in stage_names for m in get_stage(name).imports]
    return list(dict.fromkeys([*RUNNER_IMPORTS, *names]))
