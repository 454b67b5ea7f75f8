"""Benchmark: detector-health stage on a full-size simulated frame vs reading it once.

Usage: python benchmarks/bench_detector_health.py [--frame FILE] [--repeat 3]

Without --frame, a full-size science frame (1.28 GB) is simulated into a temporary folder
(kept under benchmarks/.cache/ for later runs; never committed). The baseline is the time
to read all 144 quadrants once with the same reader, measured in the same run, with the
page cache warm for both. Peak memory is the maximum resident set size of a fresh
process that runs only the stage (and, for reference, of one that only imports viskom),
read from /proc/self/status (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

CACHE = Path(__file__).parent / ".cache"

_CHILD = r"""
import json, resource, sys, time
from viskom.le1.frame import Le1Frame
from viskom.config import Settings
from viskom.pipeline.runner import run_one
from viskom.stages import ExposureInfo
from viskom.stages.detector_health import DetectorHealth
path, mode, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
if mode == "stage":
    with Le1Frame(path) as frame:
        info = ExposureInfo(0, "bench", path, "SCIENCE", 560.52, "/tmp", workers)
        result = run_one(DetectorHealth(), frame, info, Settings())
    n = len(result.metrics)
else:
    n = 0
dt = time.perf_counter() - t0
# VmHWM (peak resident set of this process image); ru_maxrss would include the parent's
# RSS inherited through fork+exec.
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # largest worker
print(json.dumps({"seconds": dt, "rows": n, "maxrss_mb": int(hwm) / 1024, "worker_mb": kids}))
"""


def full_frame() -> Path:
    from viskom.sources.simulator import SimConfig, simulate_frame

    CACHE.mkdir(exist_ok=True)
    existing = sorted(CACHE.glob("EUC_LE1_VIS-*.fits"))
    if existing:
        return existing[0]
    print("simulating a full-size science frame (once) ...", flush=True)
    t0 = time.perf_counter()
    frame = simulate_frame(
        CACHE,
        "science",
        seed=7,
        date_obs=datetime(2024, 7, 13, 3, 28, 40, tzinfo=UTC),
        config=SimConfig(geometry="full"),
    )
    print(f"  simulated in {time.perf_counter() - t0:.1f} s: {frame.path}", flush=True)
    return frame.path


def read_all_quadrants(path: Path) -> float:
    from viskom.le1.frame import Le1Frame

    t0 = time.perf_counter()
    total = 0
    with Le1Frame(path) as frame:
        for quad in frame.iter_quadrants():
            total += int(quad.data[0, 0])  # the data are read; touch them
    return time.perf_counter() - t0


def run_stage(path: Path, quadrant_workers: int = 1) -> float:
    from viskom.config import Settings
    from viskom.le1.frame import Le1Frame
    from viskom.pipeline.runner import run_one
    from viskom.stages import ExposureInfo
    from viskom.stages.detector_health import DetectorHealth

    t0 = time.perf_counter()
    with Le1Frame(path) as frame:
        info = ExposureInfo(0, "bench", str(path), "SCIENCE", 560.52, "/tmp", quadrant_workers)
        run_one(DetectorHealth(), frame, info, Settings())
    return time.perf_counter() - t0


def child(path: Path, mode: str, workers: int = 1) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), mode, str(workers)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frame", type=Path, help="an existing full-size LE1 frame")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    path = args.frame or full_frame()
    size_gb = path.stat().st_size / 1e9
    read_all_quadrants(path)  # warm the page cache
    reads, one, two = [], [], []
    for _ in range(args.repeat):
        reads.append(read_all_quadrants(path))
        one.append(run_stage(path, 1))
        two.append(run_stage(path, 2))
    t_read = statistics.median(reads)
    t_one, t_two = statistics.median(one), statistics.median(two)
    mem1, mem2 = child(path, "stage", 1), child(path, "stage", 2)
    base = child(path, "import")
    print(f"frame: {path.name} ({size_gb:.2f} GB)")
    print(f"read all 144 quadrants once:          {t_read:.2f} s (median of {args.repeat})")
    print(f"detector_health, 1 process:           {t_one:.2f} s  ratio {t_one / t_read:.2f}")
    print(
        f"detector_health, 2 processes:         {t_two:.2f} s  ratio {t_two / t_read:.2f}"
        "  (target < 3)"
    )
    print(
        f"peak RSS: 1 process {mem1['maxrss_mb']:.0f} MB; 2 processes: parent "
        f"{mem2['maxrss_mb']:.0f} MB, largest worker {mem2['worker_mb']:.0f} MB "
        f"(import-only process: {base['maxrss_mb']:.0f} MB; target < 1024 MB)"
    )


if __name__ == "__main__":
    main()
