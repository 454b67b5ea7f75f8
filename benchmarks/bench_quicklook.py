"""Benchmark: a full frame's quick look (`viskom run`, every stage) against source-extractor.

Usage: python benchmarks/bench_quicklook.py [--frame FILE] [--workers 2] [--no-astroscrappy]
       [--cold] [--stages] [--depth both] [--keep DIR]

A full-size simulated science frame (144 quadrants, 1.28 GB; seed 7, shared with the other
benchmarks, cached in benchmarks/.cache/, never committed) is measured in the same run by:

1. `source-extractor` with VISQL's settings (`sources.sextractor.run_sextractor`, VISQL's
   first cataloguing step), the baseline;
2. `viskom run` in a fresh project (SQLite, offline: the simulator's Gaia cone and a quiet
   simulated GOES day in the caches), every stage on the frame, as the CLI runs it, once
   with `catalogue_depth = "full"` (VISQL's 1.5 sigma catalogue) and once with "quicklook"
   (`--depth` to run one), and the focal-plane numbers of the two compared.

Before the timed runs, `viskom run` on a small simulated frame (256 x 256 pixel quadrants) in
another fresh project, at each catalogue depth to be timed: the warm-up. On a new install (or
after a change to their source) the compiled kernels (`measure.hit_kernels`,
`measure.sky_kernels`: numba, `cache=True`) are compiled by the first run that calls them and
kept on disk for every later run; a monitor that measures a frame every 10 minutes pays that
once, so the timed runs measure the steady state. The warm-up's time is printed (with
`--cold`, no warm-up: the first-run figure).

Each runs in its own child process; peak memory is the largest resident set of the child's
process tree (ru_maxrss of its waited-for children: the largest single worker). Printed:
both times, `ratio: X` (viskom / source-extractor, of the last depth run: the figure to
follow over time; issue 17's target is <= 0.1), peak memory, each stage's time as the
store recorded it and the run's timeline (start-up, stages, alerts, month products, site);
`--stages`: each stage again alone (wall, CPU, cores busy, memory).
Then, on four full-size quadrants, astroscrappy (L.A.Cosmic) against the events stage's hit
detector (bench_cosmics' comparison, timing only). Times are wall-clock on this machine;
compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_detector_health import CACHE, full_frame

_CHILD = r"""
import json, resource, subprocess, sys, time
t0, started = time.perf_counter(), time.time()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
dt = time.perf_counter() - t0
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"seconds": dt, "code": done.returncode, "peak_mb": kids, "started": started,
                  "out": done.stdout[-3000:], "err": done.stderr[-3000:]}))
"""

_SEX = r"""
import sys, time
from viskom.sources.sextractor import run_sextractor
t0 = time.perf_counter()
cat = run_sextractor(sys.argv[1], visql_params_only=True)
print(f"{len(next(iter(cat.values())))} sources in {time.perf_counter() - t0:.1f} s")
"""


def _viskom() -> list[str]:
    script = Path(sys.executable).with_name("viskom")
    return [str(script)] if script.exists() else [sys.executable, "-m", "viskom"]


def _env(depth: str = "full") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISKOM_")}
    env.update(VISKOM_GAIA__ONLINE="false", VISKOM_GOES__ONLINE="false")
    env["VISKOM_CATALOGUE_DEPTH"] = depth
    return env


def timed(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run `cmd` under a child that reports its wall time and its tree's peak memory."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *cmd], capture_output=True, text=True, env=env,
        check=True,
    )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["code"]:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result['out']}\n{result['err']}")
    return result


def project(root: Path, frame: Path) -> Path:
    """A fresh viskom project holding the frame, with the simulator's Gaia cone seeded."""
    from viskom.config import load_settings, write_default_config

    cfg = write_default_config(root / "project")
    raw = load_settings(cfg).raw_path
    raw.mkdir(parents=True, exist_ok=True)
    os.link(frame, raw / frame.name) if _same_device(frame, raw) else shutil.copy2(frame, raw)
    settings = load_settings(cfg)
    from datetime import date, timedelta

    from viskom.sources.simulator.spaceweather import flare_day, write_goes_cache

    day = date(2024, 7, 13)  # the frame's day (seed 7), and the day before for the 24 h panels
    for d in (day - timedelta(days=1), day):
        write_goes_cache(settings.goes_cache_path, *flare_day(d, seed=7))
    env = _env()
    for cmd in (["ingest", str(raw)], ["gaia", "seed", *map(str, CACHE.glob("gaia_*.parquet"))]):
        subprocess.run([*_viskom(), *cmd, "--config", str(cfg)], check=True, env=env,
                       capture_output=True)  # fmt: skip
    return cfg


def warm_up(root: Path, workers: int, depth: str) -> float:
    """`viskom run` at catalogue depth `depth` on a small simulated frame (the full frame's
    day and pointing) in its own fresh project, so that the timed run at that depth finds the
    compiled kernels it calls on disk: its seconds."""
    from datetime import UTC, datetime

    from viskom.sources.simulator import SimConfig, simulate_frame

    frames = root / "warm-up-frame"
    small = next(iter(sorted(frames.glob("EUC_LE1_VIS-*.fits"))), None) or simulate_frame(
        frames, "science", seed=7,
        date_obs=datetime(2024, 7, 13, 3, 28, 40, tzinfo=UTC), config=SimConfig(),
    ).path  # fmt: skip
    cfg = project(root / f"warm-up-{depth}", small)
    run = timed([*_viskom(), "run", "--config", str(cfg), "--workers", str(workers)],
                env=_env(depth))  # fmt: skip
    return float(run["seconds"])


def run_phases(cfg: Path, started: float, seconds: float) -> list[tuple[str, float]]:
    """Where a run's wall time went, from the store's clocks (SQLite: this machine's): from
    the start to the first stage, the stages, then alerts, month products and site (each
    from its claim to the next one's), up to the run's end."""
    from viskom.config import load_settings
    from viskom.store import Store

    with Store(load_settings(cfg).db_url) as store:
        runs = list(store.stage_runs().values())
        claims = {k: store.claim_started(k) for k in ("alerts", "period", "site")}
    t0 = min(r.started_at for r in runs if r.started_at).timestamp()
    t1 = max(r.finished_at for r in runs if r.finished_at).timestamp()
    marks = [("start-up, calibrations, plan", started), ("stages", t0), ("stages to alerts", t1)]
    names = {"alerts": "alerts", "period": "month products", "site": "site, to the end"}
    marks += [(names[k], when.timestamp()) for k, when in claims.items()
              if when is not None and when.timestamp() >= t1]  # fmt: skip
    marks.sort(key=lambda m: m[1])
    ends = [m[1] for m in marks[1:]] + [started + seconds]
    return [(name, end - begin) for (name, begin), end in zip(marks, ends, strict=True)]


def _same_device(a: Path, folder: Path) -> bool:
    return a.stat().st_dev == folder.stat().st_dev


#: The numbers compared between the two catalogue depths (focal plane values).
COMPARED = ("n_sources", "n_stars", "psf_r2", "psf_e1", "psf_e2", "iq_score", "cr_hits",
            "xray_candidates", "n_matched", "astrom_sigma_pix", "vis_over_gaia_175",
            "gaia_aperture_correction")  # fmt: skip


def fpa_metrics(cfg: Path) -> dict[str, float]:
    """The focal-plane value of every metric of the project's one exposure."""
    from viskom.config import load_settings
    from viskom.store import Store

    with Store(load_settings(cfg).db_url) as store:
        rows = store.metrics(units=["FPA"])
    return {r.metric: r.value for r in rows if r.value is not None}


def stage_times(cfg: Path) -> list[tuple[str, str, float]]:
    """(stage, status, seconds) of every stage run the store recorded, slowest first."""
    from viskom.config import load_settings
    from viskom.store import Store

    with Store(load_settings(cfg).db_url) as store:
        runs = store.stage_runs()
    rows = [(r.stage, r.status, r.duration_s or 0.0) for r in runs.values()]
    return sorted(rows, key=lambda r: -r[2])


_STAGE = r"""
import json, os, resource, sys, time
cfg, name, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
from viskom.config import load_settings
from viskom.le1.frame import Le1Frame
from viskom.pipeline.work import exposure_info
from viskom.pipeline.worker import run_one
from viskom.stages import get_stage
from viskom.store import Store
settings = load_settings(cfg)
with Store(settings.db_url) as store:
    exp = store.list_exposures()[0]
info = exposure_info(exp, settings, workers)
t0, c0 = time.perf_counter(), os.times()
with Le1Frame(exp.path) as frame:
    result = run_one(get_stage(name), frame, info, settings)
c1 = os.times()
cpu = (c1.user - c0.user) + (c1.system - c0.system) + (c1.children_user - c0.children_user) \
    + (c1.children_system - c0.children_system)
own = int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]) / 1024
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu": cpu, "own_mb": own,
                  "worker_mb": kids, "status": result.status}))
"""


def stage_profile(cfg: Path, workers: int, depth: str = "full") -> None:
    """Each stage again on the measured frame, alone in a fresh process (its inputs are the
    products of the run): wall time, CPU time (all its processes: wall x cores = all busy)
    and peak memory of the stage's process and of its quadrant workers."""
    from viskom.stages import STAGES

    print(f"per stage, alone ({workers} quadrant workers; cpu/wall = cores busy):")
    total = 0.0
    for stage in STAGES:
        if not stage.applies_to("SCIENCE"):
            continue
        done = subprocess.run(
            [sys.executable, "-c", _STAGE, str(cfg), stage.name, str(workers)],
            capture_output=True, text=True, env=_env(depth),
        )  # fmt: skip
        if done.returncode:
            print(f"  {stage.name:<18} failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        total += r["seconds"]
        print(f"  {stage.name:<18} {r['status']:<6} {r['seconds']:6.2f} s wall "
              f"{r['cpu']:6.2f} s cpu ({r['cpu'] / max(r['seconds'], 1e-9):.2f} cores) "
              f"peak {r['own_mb']:5.0f} MB, workers {r['worker_mb']:5.0f} MB")  # fmt: skip
    print(f"  sum of the stages alone: {total:.1f} s")


def astroscrappy_vs_events(frame: Path, n_quadrants: int = 4) -> None:
    """Hit finding on N full-size quadrants: astroscrappy against the events stage's detector."""
    try:
        import astroscrappy  # noqa: F401
    except ImportError:
        print("astroscrappy: not installed (pip install -e '.[bench]'), skipped")
        return
    from bench_cosmics import image_area, pick_quadrants, run_astroscrappy
    from viskom.le1.frame import Le1Frame
    from viskom.measure.catalogue import extract_sources
    from viskom.measure.cosmics import detect_hits
    from viskom.measure.hit_counts import star_guards

    t_ours = t_scrappy = 0.0
    with Le1Frame(frame) as f:
        names = pick_quadrants(list(f.extnames), n_quadrants)
        for name in names:
            quad = f.quadrant(name)
            image, bias = image_area(quad)
            gain = quad.header.gain_e_per_adu or 3.4
            read_noise = quad.header.read_noise_e or 4.2
            sat = None if quad.header.saturate_adu is None else quad.header.saturate_adu - bias
            t0 = time.perf_counter()
            cat = extract_sources(image.copy(), gain_e_per_adu=gain, saturation_adu=sat)
            cat["extname"] = np.full(len(cat["number"]), name)
            guard = star_guards(cat).get(name)
            obj = None if guard is None else (guard[0] - 1.0, guard[1] - 1.0, guard[2])
            detect_hits(image, gain_e_per_adu=gain, saturation_adu=sat, objects=obj)
            t_ours += time.perf_counter() - t0
            sat_e = np.inf if sat is None else sat * gain
            dt, _ = run_astroscrappy(image, gain, read_noise, sat_e, None, 5.0)
            t_scrappy += dt
    print(f"hits on {len(names)} full-size quadrants, one thread each:")
    print(f"  viskom events (catalogue + hits): {t_ours:.2f} s")
    print(f"  astroscrappy (sep sky + L.A.Cosmic): {t_scrappy:.2f} s")
    print(f"  events/astroscrappy: {t_ours / t_scrappy:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frame", type=Path, help="a full-size LE1 frame (default: simulated)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-astroscrappy", action="store_true")
    ap.add_argument("--stages", action="store_true", help="also each stage alone: cpu, memory")
    ap.add_argument("--depth", choices=["full", "quicklook", "both"], default="both",
                    help="catalogue_depth of the run(s); both: compare the numbers")  # fmt: skip
    ap.add_argument("--keep", type=Path, help="work here and keep the project")
    ap.add_argument("--cold", action="store_true",
                    help="no warm-up: the timed runs compile what a new install lacks")  # fmt: skip
    args = ap.parse_args()
    frame = args.frame or full_frame()
    print(f"frame: {frame.name} ({frame.stat().st_size / 1e9:.2f} GB), {os.cpu_count()} CPUs")
    root = args.keep or Path(tempfile.mkdtemp(prefix="viskom-quicklook-", dir=CACHE))
    try:
        sex = timed([sys.executable, "-c", _SEX, str(frame)])
        print(f"source-extractor (VISQL settings): {sex['seconds']:.1f} s, "
              f"peak {sex['peak_mb']:.0f} MB; {sex['out'].strip()}")  # fmt: skip
        depths = ["full", "quicklook"] if args.depth == "both" else [args.depth]
        for depth in [] if args.cold else depths:  # each depth calls kernels of its own
            print(f"warm-up: viskom run on a small frame, {depth} (compiles the kernels a new "
                  f"install lacks): {warm_up(root, args.workers, depth):.1f} s")  # fmt: skip
        values = {}
        for depth in depths:
            cfg = project(root / depth, frame)
            run = timed([*_viskom(), "run", "--config", str(cfg), "--workers",
                         str(args.workers)], env=_env(depth))  # fmt: skip
            print(f"viskom run (every stage, catalogue_depth = {depth}): {run['seconds']:.1f} s,"
                  f" peak {run['peak_mb']:.0f} MB per process")  # fmt: skip
            if depth == depths[-1]:
                print(f"ratio: {run['seconds'] / sex['seconds']:.3f}")
            else:
                print(f"ratio ({depth}): {run['seconds'] / sex['seconds']:.3f}")
            print("per stage (store):")
            for stage, status, seconds in stage_times(cfg):
                print(f"  {stage:<18} {status:<7} {seconds:6.2f} s")
            print("timeline of the run (store clocks):")
            for phase, seconds in run_phases(cfg, run["started"], run["seconds"]):
                print(f"  {phase:<30} {seconds:6.2f} s")
            values[depth] = fpa_metrics(cfg)
            if args.stages:
                stage_profile(cfg, args.workers, depth)
        if len(depths) == 2:
            full, quick = values["full"], values["quicklook"]
            print("focal-plane values, full -> quicklook catalogue:")
            for name in COMPARED:
                a, b = full.get(name), quick.get(name)
                change = f"{(b - a) / abs(a):+.2%}" if a and b is not None else ""
                print(f"  {name:<26} {a!s:>24} -> {b!s:<24} {change}")
        if not args.no_astroscrappy:
            astroscrappy_vs_events(frame)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
