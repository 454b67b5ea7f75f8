"""Speed of recording a focal plane of metrics, against a plain executemany of the same rows.

`Store.record_stage_run` replaces a stage's run, metrics, outcomes and products in one
transaction. Baseline, measured in the same run: SQLAlchemy Core `executemany` of the same
2592 rows (144 quadrants x 18 metrics) into a bare table of the same shape. Reported as the
ratio record / baseline, first insert and full replacement, on SQLite (and PostgreSQL when
VISKOM_TEST_POSTGRES_URL names a server).

    python benchmarks/bench_store.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, create_engine, delete

from viskom.store import ExposureRecord, StageRun, Store


def _rows() -> list[tuple[str, str, float]]:
    units = [f"{r}-{c}.{q}" for r in range(1, 7) for c in range(1, 7) for q in "EFGH"]
    return [(u, f"metric_{k:02d}", float(k) + 0.5) for u in units for k in range(18)]


def _baseline(url: str, rows: list[tuple[str, str, float]], repeat: int) -> float:
    engine = create_engine(url)
    meta = MetaData()
    table = Table(
        "bench_metrics", meta, Column("exposure_id", Integer), Column("unit", String(16)),
        Column("metric", String(64)), Column("stage", String(64)), Column("value", Float),
    )  # fmt: skip
    meta.drop_all(engine)
    meta.create_all(engine)
    values = [{"exposure_id": 1, "unit": u, "metric": m, "stage": "q", "value": v}
              for u, m, v in rows]  # fmt: skip
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        with engine.begin() as con:
            con.execute(delete(table))
            con.execute(table.insert(), values)
        times.append(time.perf_counter() - t0)
    meta.drop_all(engine)
    engine.dispose()
    return statistics.median(times)


def _record(url: str, rows: list[tuple[str, str, float]], repeat: int) -> float:
    with Store(url) as store:
        exposure, _ = store.register_exposure(
            ExposureRecord(name=f"EUC_BENCH_{time.time_ns()}", path="/x.fits", state="registered")
        )
        times = []
        for _ in range(repeat):
            run = StageRun(exposure.id, "quadrants", "1", "h", "bench", "ok",
                           started_at=datetime.now(UTC))  # fmt: skip
            t0 = time.perf_counter()
            store.record_stage_run(run, rows)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = _rows()
    urls = {"sqlite": f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"}
    if os.environ.get("VISKOM_TEST_POSTGRES_URL"):
        urls["postgresql"] = os.environ["VISKOM_TEST_POSTGRES_URL"]
    for name, url in urls.items():
        base = _baseline(url, rows, args.repeat)
        rec = _record(url, rows, args.repeat)
        print(f"{name}: {len(rows)} rows; executemany {base * 1e3:.1f} ms, record_stage_run "
              f"{rec * 1e3:.1f} ms = {rec / base:.2f}x the baseline")  # fmt: skip


if __name__ == "__main__":
    main()
