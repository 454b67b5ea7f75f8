"""Scaling of `viskom run` with workers, and the file-landed-to-metrics latency of `watch`.

    python benchmarks/bench_scaling.py [--frames 8] [--latency | --latency-only] [--keep DIR]

1. Speedup: N small simulated frames (SCIENCE and DARK, every stage), measured from scratch
   in two fresh projects with `viskom run --workers 1` and `--workers 2` (a process pool),
   one after the other in the same run; prints both times and `speedup: X`.
2. `--latency`: a full-size science frame copied into the raw folder of a running
   `viskom watch --interval 5`; prints the seconds from the copy's end to its metrics in the
   store (`latency: X s`), and the watch cycle's own time.

Offline (Gaia, GOES): the stages that need them record their failure fast, as on a machine
without network. Times are wall-clock seconds on this machine; compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from viskom.config import load_settings, write_default_config
from viskom.sources.simulator import SimConfig, simulate_frame
from viskom.store import Store

T0 = datetime(2024, 7, 15, 1, 0, 0, tzinfo=UTC)


def _viskom() -> list[str]:
    script = Path(sys.executable).with_name("viskom")
    return [str(script)] if script.exists() else [sys.executable, "-m", "viskom"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISKOM_")}
    env.update(VISKOM_GAIA__ONLINE="false", VISKOM_GOES__ONLINE="false")
    return env


def _project(root: Path, name: str, frames: list[Path]) -> Path:
    cfg = write_default_config(root / name)
    raw = load_settings(cfg).raw_path
    raw.mkdir(parents=True, exist_ok=True)
    for f in frames:
        shutil.copy2(f, raw / f.name)
    subprocess.run([*_viskom(), "ingest", str(raw), "--config", str(cfg)], check=True,
                   env=_env(), capture_output=True)  # fmt: skip
    return cfg


def _timed_run(cfg: Path, workers: int) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(
        [*_viskom(), "run", "--config", str(cfg), "--workers", str(workers),
         "--executor", "process"],
        env=_env(), capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(done.stdout + done.stderr)
    print("   ", done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "")
    return seconds


def speedup(root: Path, n_frames: int) -> None:
    small = SimConfig(geometry="small")
    frames = [
        simulate_frame(root / "frames", "science" if i % 2 == 0 else "dark", seed=500 + i,
                       date_obs=T0 + timedelta(minutes=11 * i), config=small).path
        for i in range(n_frames)
    ]  # fmt: skip
    one = _project(root, "one", frames)
    two = _project(root, "two", frames)
    t1 = _timed_run(one, 1)
    t2 = _timed_run(two, 2)
    print(f"frames: {n_frames} small ({os.cpu_count()} CPUs)")
    print(f"workers 1: {t1:.1f} s")
    print(f"workers 2: {t2:.1f} s")
    print(f"speedup: {t1 / t2:.2f}")


def latency(root: Path) -> None:
    full = SimConfig(geometry="full")
    frame = simulate_frame(root / "full", "science", seed=42, date_obs=T0, config=full).path
    cfg = write_default_config(root / "watched")
    settings = load_settings(cfg)
    settings.raw_path.mkdir(parents=True, exist_ok=True)
    log = root / "watch.log"
    watch = subprocess.Popen(
        [*_viskom(), "watch", "--config", str(cfg), "--interval", "5", "--settle", "1",
         "--log-file", str(log)],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(8)  # the first (empty) cycle
        target = settings.raw_path / frame.name
        shutil.copy2(frame, target.with_suffix(".part"))
        os.replace(target.with_suffix(".part"), target)
        landed = time.perf_counter()
        name = frame.name.removesuffix(".fits")
        with Store(settings.db_url) as store:
            while True:
                if store.metrics(exposures=[name], metrics=["psf_r2"], units=["FPA"]):
                    runs = store.stage_runs()
                    if len(runs) >= 8 and not store.held_claims():  # every stage recorded
                        break
                if watch.poll() is not None:
                    raise SystemExit("watch stopped")
                time.sleep(0.5)
        seconds = time.perf_counter() - landed
    finally:
        watch.terminate()
        watch.wait(timeout=600)
    print(f"full-size frame: {frame.stat().st_size / 1e9:.2f} GB")
    print(f"latency: {seconds:.1f} s (file landed -> every stage recorded)")
    cycles = [line for line in log.read_text().splitlines() if "cycle" in line]
    print("\n".join(cycles[-2:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--latency", action="store_true", help="also the full-size latency")
    parser.add_argument("--latency-only", action="store_true", help="only the latency")
    parser.add_argument("--keep", type=Path, help="work here and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="viskom-scaling-"))
    try:
        if not args.latency_only:
            speedup(root, args.frames)
        if args.latency or args.latency_only:
            latency(root)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
