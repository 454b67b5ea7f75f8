"""Benchmark: the images stage (mosaic PNG + FITS, nine zooms, the hottest-quadrant zoom) on
a full-size simulated frame, against reading its 144 quadrants once.

Usage: python benchmarks/bench_images.py [--frame FILE] [--repeat 3]

Without --frame, a full-size science frame (1.28 GB) is simulated once into
benchmarks/.cache/ (never committed). The baseline is reading all 144 quadrants once with
the same reader, in the same run, page cache warm for both (issue 15's target: the stage in
<= 2x that time, <= 300 MB peak). Peak memory is VmHWM of a fresh process that runs only the
stage (its quadrant workers' largest too), and of one that only imports viskom.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_detector_health import full_frame, read_all_quadrants

_CHILD = r"""
import json, resource, sys, time
path, mode, workers, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
from viskom.config import Settings
from viskom.le1.frame import Le1Frame
from viskom.pipeline.worker import run_one
from viskom.stages import ExposureInfo
from viskom.stages.images import Images
t0 = time.perf_counter()
n = 0
if mode == "stage":
    settings = Settings(data_root=out)
    with Le1Frame(path) as frame:
        info = ExposureInfo(0, "bench", path, "SCIENCE", 560.52, str(settings.products_path),
                            workers, date_obs="2024-07-13T03:28:40", data_root=out)
        result = run_one(Images(), frame, info, settings)
    n = len(result.written)
dt = time.perf_counter() - t0
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"seconds": dt, "files": n, "maxrss_mb": int(hwm) / 1024, "worker_mb": kids}))
"""


def run_images(path: Path, workers: int) -> tuple[float, int]:
    """Seconds of the images stage on `path` with `workers` quadrant workers, and the files."""
    from viskom.config import Settings
    from viskom.le1.frame import Le1Frame
    from viskom.pipeline.worker import run_one
    from viskom.stages import ExposureInfo
    from viskom.stages.images import Images

    with tempfile.TemporaryDirectory() as out:
        settings = Settings(data_root=out)
        t0 = time.perf_counter()
        with Le1Frame(path) as frame:
            info = ExposureInfo(0, "bench", str(path), "SCIENCE", 560.52,
                                str(settings.products_path), workers,
                                date_obs="2024-07-13T03:28:40", data_root=out)  # fmt: skip
            result = run_one(Images(), frame, info, settings)
        return time.perf_counter() - t0, len(result.written)


def child(path: Path, mode: str, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path), mode, str(workers), out],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frame", type=Path, help="an existing full-size LE1 frame")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    path = args.frame or full_frame()
    read_all_quadrants(path)  # warm the page cache
    reads, runs = [], []
    files = 0
    for _ in range(args.repeat):
        reads.append(read_all_quadrants(path))
        dt, files = run_images(path, 2)  # as a run gives it: 2 quadrant workers
        runs.append(dt)
    t_read, t_run = statistics.median(reads), statistics.median(runs)
    mem = child(path, "stage", 2)
    base = child(path, "import", 1)
    print(f"frame: {path.name} ({path.stat().st_size / 1e9:.2f} GB)")
    print(f"read all 144 quadrants once: {t_read:.2f} s (median of {args.repeat})")
    print(f"images stage: {t_run:.2f} s (median of {args.repeat}; {files} files; one process "
          "and a read-ahead thread)")  # fmt: skip
    print(
        f"peak RSS: {mem['maxrss_mb']:.0f} MB, largest worker {mem['worker_mb']:.0f} MB "
        f"(import-only: {base['maxrss_mb']:.0f} MB; target <= 300 MB)"
    )
    print(f"ratio: {t_run / t_read:.2f}  (target <= 2)")


if __name__ == "__main__":
    main()
