"""Import once, fork many (`pipeline.preload`): what the stages declare in `Stage.imports`
exists, a preload imports it and warms it once, and a module that cannot be imported is
left for the stage to fail on, never stopping the run."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

from viskom.pipeline import preload as pre
from viskom.stages import STAGES


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_every_declared_import_is_a_module(stage):
    for name in stage.imports:
        assert importlib.util.find_spec(name) is not None, f"{stage.name}: no module {name}"


def test_the_runner_imports_come_first_and_each_once():
    names = pre.stage_imports(["catalogue", "events"])
    assert names[: len(pre.RUNNER_IMPORTS)] == list(pre.RUNNER_IMPORTS)
    assert len(names) == len(set(names))
    assert "viskom.measure.hit_kernels" in names


def test_a_preload_imports_warms_once_and_survives_a_missing_module(tmp_path, monkeypatch):
    (tmp_path / "viskom_test_warm.py").write_text(
        textwrap.dedent(
            """
            CALLS = []
            def warm_up():
                CALLS.append(1)
            """
        )
    )
    (tmp_path / "viskom_test_broken.py").write_text("raise RuntimeError('no such library')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(pre, "_DONE", set())
    loaded = pre.preload(["viskom_test_broken", "viskom_test_warm", "viskom_test_warm"])
    assert loaded == ["viskom_test_warm"]
    module = sys.modules["viskom_test_warm"]
    assert module.CALLS == [1]
    assert pre.preload(["viskom_test_warm"]) == []
    assert module.CALLS == [1]  # warmed once per process


def test_the_numba_warm_up_starts_the_compiler_target_in_the_parent(tmp_path):
    """After the warm-up a forked child calls a cached kernel without starting numba's
    target itself: the child imports no numba module (starting it imports ~100). The kernels
    are cached first in a cache of the test's own (a new checkout has none: a child that
    compiles would import more)."""
    code = textwrap.dedent(
        """
        import os, sys
        import numpy as np
        from viskom.pipeline.preload import preload
        if "--cache" in sys.argv:  # compile both kernels into the cache, nothing else
            from viskom.measure.hit_kernels import true_pixels
            from viskom.measure.sky_kernels import warm_up
            warm_up()
            true_pixels(np.zeros((3, 3), bool))
            sys.exit(0)
        if "--cold" not in sys.argv:
            preload(["viskom.measure.sky_kernels", "viskom.measure.hit_kernels"])
        from viskom.measure.hit_kernels import true_pixels
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            before = set(sys.modules)
            true_pixels(np.zeros((3, 3), bool))
            new = [m for m in set(sys.modules) - before if m.startswith("numba")]
            os.write(w, str(len(new)).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        print(int(os.read(r, 64)))
        """
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}

    def child_imports(*flags: str) -> int:
        run = [sys.executable, "-c", code, *flags]
        done = subprocess.run(run, capture_output=True, text=True, check=True, env=env)
        return int(done.stdout or 0)

    child_imports("--cache")
    assert child_imports() == 0
    assert child_imports("--cold") > 20  # what the warm-up spares each child


def _slow_pid(seconds: float) -> int:
    import os
    import time

    time.sleep(seconds)
    return os.getpid()


def test_a_local_pool_calls_meanwhile_once_while_its_processes_work():
    from viskom.pipeline.executors import ProcessExecutor, SerialExecutor

    calls = []

    def meanwhile():
        calls.append(os.getpid())

    ex = ProcessExecutor(2)
    results = ex.map_unordered(_slow_pid, [0.2, 0.2, 0.2], meanwhile=meanwhile)
    first = next(results)
    assert calls == [os.getpid()]  # in this process, before the first task was back
    pids = {pid for _, pid in [first, *results]}
    assert calls == [os.getpid()]  # once
    assert pids and os.getpid() not in pids  # the tasks ran elsewhere
    assert list(SerialExecutor().map_unordered(_slow_pid, [0.0], meanwhile=meanwhile))
    assert calls == [os.getpid()]  # nothing runs elsewhere: nothing to do meanwhile
