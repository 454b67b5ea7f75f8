"""The pipeline on a real Dask cluster (a LocalCluster of worker processes): the same metrics
and products as in one process, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from viskom.config import Settings
from viskom.pipeline.executors import DaskExecutor, SerialExecutor, make_executor
from viskom.pipeline.register import ingest
from viskom.pipeline.runner import run_pipeline
from viskom.sources.simulator import SimConfig, simulate_frame
from viskom.stages.catalogue import Catalogue
from viskom.stages.detector_health import DetectorHealth
from viskom.store import Store

T0 = datetime(2024, 7, 13, 3, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    out = tmp_path_factory.mktemp("dask")
    cfg = SimConfig(geometry="small")
    return [
        simulate_frame(out, kind, seed=900 + i, date_obs=T0.replace(minute=i), config=cfg).path
        for i, kind in enumerate(("science", "dark", "bias"))
    ]


def _run(store_url: str, root, frames, executor) -> tuple[dict, list, object]:
    settings = Settings(data_root=root, database_url=store_url)
    with Store(store_url) as store:
        ingest(store, frames)
        summary = run_pipeline(
            store, settings, executor, stages=(DetectorHealth(), Catalogue()), workers=2
        )
        metrics = {(m.exposure, m.unit, m.metric): m.value for m in store.metrics()}
        products = sorted((p.exposure, p.kind, p.sha256) for p in store.products())
    return metrics, products, summary


def test_dask_local_cluster_gives_the_same_results(frames, tmp_path, store_url) -> None:
    executor = DaskExecutor(workers=2)
    try:
        dask_metrics, dask_products, summary = _run(store_url, tmp_path / "dask", frames, executor)
    finally:
        executor.close()
    assert (summary.stages_ok, summary.stages_failed) == (5, 0), summary.failures
    serial_url = f"sqlite:///{tmp_path / 'serial' / 'viskom.db'}"
    serial_metrics, serial_products, _ = _run(serial_url, tmp_path / "serial", frames,
                                              SerialExecutor())  # fmt: skip
    assert dask_metrics == serial_metrics and len(dask_metrics) > 1000
    # 2 catalogues and their 2 sky meshes, 3 health tables
    assert dask_products == serial_products and len(dask_products) == 7


def test_make_executor_knows_dask() -> None:
    executor = make_executor("dask", 3, "tcp://scheduler:8786")
    assert isinstance(executor, DaskExecutor) and executor.scheduler == "tcp://scheduler:8786"
    assert executor.nested_pools is False
    with pytest.raises(ValueError, match="process', 'serial' or 'dask'"):
        make_executor("spark", 2)


def test_a_worker_killed_during_the_run_does_not_stop_it(frames, tmp_path, store_url) -> None:
    """SIGKILL of the Dask worker that holds an exposure's claim, mid-stage: Dask hands the
    task to a live worker, which takes the claim back (same owner token) and finishes; the
    metrics are those of a serial run."""
    import os
    import signal
    import threading
    import time

    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        with Store(store_url) as watcher:
            while not stop.is_set() and not killed:
                for claim in watcher.held_claims():
                    if claim.key.startswith("exposure:") and claim.pid not in (None, os.getpid()):
                        os.kill(claim.pid, signal.SIGKILL)
                        killed.append(claim.pid)
                        break
                time.sleep(0.01)

    thread = threading.Thread(target=killer, daemon=True)
    with Store(store_url):  # the schema exists before the killer looks
        pass
    thread.start()
    executor = DaskExecutor(workers=2)
    try:
        dask_metrics, _products, summary = _run(store_url, tmp_path / "dask", frames, executor)
    finally:
        stop.set()
        thread.join(5)
        executor.close()
    assert killed, "no worker was caught holding a claim"
    assert summary.stages_failed == 0, summary.failures
    with Store(store_url) as store:  # the retried task may find a stage recorded already
        runs = store.stage_runs()
        assert len(runs) == 5 and {r.status for r in runs.values()} == {"ok"}
    serial_url = f"sqlite:///{tmp_path / 'serial' / 'viskom.db'}"
    serial_metrics, _, _ = _run(serial_url, tmp_path / "serial", frames, SerialExecutor())
    assert dask_metrics == serial_metrics
    with Store(store_url) as store:
        assert store.held_claims() == []
