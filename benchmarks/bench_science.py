"""Benchmark: viskom's science stages (catalogue + stars + moments) vs VISQL's SExtractor step.

Usage: python benchmarks/bench_science.py [--frame FILE] [--workers 2]

On one full-size simulated science frame (simulated once into benchmarks/.cache/, never
committed), measures in the same run: the wall time and peak memory of viskom's catalogue
and psf stages using both cores, and the wall time of Debian's `source-extractor` with
VISQL's configuration on the same file (VISQL's cataloguing step alone). Prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_detector_health import full_frame

_CHILD = r"""
import json, resource, sys, time
from viskom.pipeline.runner import run_one
from viskom.config import Settings
from viskom.le1.frame import Le1Frame
from viskom.stages import ExposureInfo
from viskom.stages.catalogue import Catalogue
from viskom.stages.psf import PsfMoments
path, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = Settings()
info = ExposureInfo(0, "bench", path, "SCIENCE", 560.52, out, workers, "2024-07-13T03:28:40")
t0 = time.perf_counter()
with Le1Frame(path) as frame:
    run_one(Catalogue(), frame, info, s)
    t1 = time.perf_counter()
    res = run_one(PsfMoments(), frame, info, s)
t2 = time.perf_counter()
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
fpa = {m: v for u, m, v in res.metrics if u == "FPA"}
print(json.dumps({"catalogue_s": t1 - t0, "psf_s": t2 - t1, "parent_mb": int(hwm) / 1024,
                  "worker_mb": kids, "n_stars": fpa["n_stars"], "psf_r2": fpa["psf_r2"]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frame", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    path = args.frame or full_frame()
    from viskom.sources.sextractor import run_sextractor

    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path), tmp, str(args.workers)],
            check=True,
            capture_output=True,
            text=True,
        )
        ours = json.loads(out.stdout.strip().splitlines()[-1])
    t0 = time.perf_counter()
    sex = run_sextractor(path, visql_params_only=True)
    t_sex = time.perf_counter() - t0
    t_ours = ours["catalogue_s"] + ours["psf_s"]
    print(f"frame: {path.name} ({path.stat().st_size / 1e9:.2f} GB)")
    print(f"source-extractor (VISQL config, 1 core): {t_sex:7.1f} s, {len(sex['number'])} sources")
    print(
        f"viskom catalogue ({args.workers} processes):  {ours['catalogue_s']:7.1f} s\n"
        f"viskom stars + moments:             {ours['psf_s']:7.1f} s "
        f"({ours['n_stars']:.0f} stars, median R2 {ours['psf_r2']:.3f})"
    )
    print(f"ratio viskom / source-extractor:    {t_ours / t_sex:7.2f}  (target <= 0.5)")
    print(
        f"peak RSS: parent {ours['parent_mb']:.0f} MB, largest worker {ours['worker_mb']:.0f} MB"
        " (target < 1500 MB)"
    )


if __name__ == "__main__":
    main()
