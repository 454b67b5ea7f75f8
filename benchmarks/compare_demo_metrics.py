"""Behaviour check of a refactoring: the demo's metrics table before and after, cell by cell.

Runs `viskom demo` with the code of a base git revision (a temporary worktree, on this
environment's Python and packages) and with the working tree, reads both databases'
metric tables (exposure, unit, metric, value) and prints every row missing, added or
different, grouped by metric. Exit status 0 when the two tables are identical (values
compared exactly, NaN equal to NaN), 1 otherwise.

    python benchmarks/compare_demo_metrics.py --base 532178b
    python benchmarks/compare_demo_metrics.py --base HEAD~3 --keep /tmp/cmp   # keep demos
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_demo(src: Path, folder: Path, settings: dict[str, str] | None = None) -> float:
    """`viskom demo folder` with the package in `src` first on the path, no `VISKOM_*`
    variable but `settings`; seconds taken."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISKOM_")}
    env.update(PYTHONPATH=str(src), **(settings or {}))
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", "from viskom.cli import app; app()", "demo", str(folder)],
        env=env, cwd=folder.parent, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"the demo with {src} failed (exit {done.returncode})")
    return time.perf_counter() - t0


def metrics_table(db: Path) -> dict[tuple[str, str, str], float | None]:
    """(exposure, unit, metric) -> value of a demo database."""
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT e.name, m.unit, m.metric, m.value FROM metrics m "
            "JOIN exposures e ON e.id = m.exposure_id"
        ).fetchall()
    return {(e, u, m): v for e, u, m, v in rows}


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


def compare(before: dict, after: dict) -> list[str]:
    """Lines describing every difference, grouped by metric (empty: identical)."""
    lines = []
    missing = sorted(set(before) - set(after))
    added = sorted(set(after) - set(before))
    changed = sorted(k for k in set(before) & set(after) if not _same(before[k], after[k]))
    for label, keys in (("missing after", missing), ("new after", added), ("changed", changed)):
        for metric, n in sorted(Counter(k[2] for k in keys).items()):
            example = next(k for k in keys if k[2] == metric)
            detail = ""
            if label == "changed":
                detail = f" e.g. {example[1]}: {before[example]!r} -> {after[example]!r}"
            lines.append(f"{label}: {metric} x{n}{detail}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--keep", type=Path, help="keep both demo folders under this folder")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="viskom-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    tree = work / "base-tree"
    if not tree.exists():
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), args.base],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        t_base = run_demo(tree / "src", work / "demo-base")
        t_now = run_demo(REPO / "src", work / "demo-now")
    finally:
        if args.keep is None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)])
    before = metrics_table(work / "demo-base" / "data" / "viskom.db")
    after = metrics_table(work / "demo-now" / "data" / "viskom.db")
    lines = compare(before, after)
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"base {args.base}: {len(before)} metric rows, demo {t_base:.0f} s")
    print(f"working tree: {len(after)} metric rows, demo {t_now:.0f} s ({t_now / t_base:.2f}x)")
    print("\n".join(lines) if lines else "identical: every (exposure, unit, metric, value)")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
