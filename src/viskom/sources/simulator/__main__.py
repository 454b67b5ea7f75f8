"""Make simulated frames by hand and time them.

python -m viskom.sources.simulator OUTDIR [--kind science] [--count 1] [--geometry small]
    [--seed 1] [--start 2024-07-01T00:10:45] [--gzip] [--naming archive] [--defect NAME]
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path

from viskom.sources.simulator import DEFECTS, FRAME_KINDS, SimConfig, simulate_set


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m viskom.sources.simulator")
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--kind", choices=FRAME_KINDS, default="science")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--geometry", choices=("small", "full"), default="small")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", default="2024-07-01T00:10:45")
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--naming", choices=("archive", "iws"), default="archive")
    parser.add_argument("--defect", choices=DEFECTS, default=None)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    cfg = SimConfig(
        geometry=args.geometry, gzip=args.gzip, naming=args.naming, workers=args.workers
    )
    t0 = time.perf_counter()
    frames = simulate_set(
        args.outdir,
        args.kind,
        args.count,
        seed=args.seed,
        start=datetime.fromisoformat(args.start),
        config=cfg,
        defect=args.defect,
    )
    elapsed = time.perf_counter() - t0
    for frame in frames:
        print(frame.path)
    print(f"{len(frames)} {args.geometry} {args.kind} frame(s) in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
