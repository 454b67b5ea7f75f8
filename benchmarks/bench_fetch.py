"""Throughput and resume cost of viskom's downloader against plain curl (issue 14).

    python benchmarks/bench_fetch.py [--frames 6] [--connections 4] [--runs 2] [--level 1]

1. Six simulated full-size LE1 frames (.fits.gz, zlib `--level`), built once and cached in
   benchmarks/.cache/fetch/ (git-ignored; a second run reuses them), served from memory by
   the local archive server of the tests (tests/archive_server.py, Python, loopback).
2. Throughput: plain `curl --parallel --parallel-max N` of the six URLs, then viskom's
   `Downloader(connections=N).fetch`, each into a fresh folder, alternating `--runs` times;
   the best of each, in MB/s (compressed bytes as served), and `ratio: X` = viskom / curl
   (target >= 0.9). viskom verifies every file as it streams (SHA-256, gzip inflated, CRC
   checked), curl does not: `verify alone` is that check of the same six files from the page
   cache with N threads, no network. Each step's CPU seconds (this process, the server
   thread included, and curl) are printed too, with `cpu ratio`, and the CPU seconds other
   processes took meanwhile: a busy machine shows there, and spoils the wall times.
3. Resume: one file's GET breaks off at 2/5 of its bytes and the retries get 503 until the
   first fetch gives up, leaving a .part; a second fetch must cost only the missing bytes
   (`resume: sent X of Y bytes, missing Z: OK`).
4. Peak RSS of this process (the served files are held in memory).

Times are wall-clock seconds on this machine (CPU-bound on loopback); compare ratios. Linux
(/proc/stat, curl >= 7.66 for --parallel).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from viskom.sources.archive.downloads import Downloader, RemoteFile, verify
from viskom.sources.simulator import SimConfig, simulate_frame

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from archive_server import ArchiveServer, Fault

CACHE = Path(__file__).resolve().parent / ".cache" / "fetch"
T0 = datetime(2024, 7, 17, 3, 0, 0, tzinfo=UTC)
MB = 1e6


def build_frames(n: int, level: int) -> list[Path]:
    """The `n` gzipped full-size frames, simulated once (atomically moved into the cache)."""
    folder = CACHE / f"level{level}"
    scratch = folder / "sim"
    config = SimConfig(geometry="full", gzip=True, gzip_level=level)
    frames = []
    for i in range(n):
        date_obs = T0 + timedelta(minutes=5 * i)
        name = f"EUC_LE1_VIS-02371-1-W_{date_obs:%Y%m%dT%H%M%S.%f}Z_01_01_01.00.fits.gz"
        target = folder / name
        if not target.exists():
            t0 = time.perf_counter()
            sim = simulate_frame(scratch, "science", seed=7100 + i, date_obs=date_obs,
                                 obs_id=2371, config=config)  # fmt: skip
            os.replace(sim.path, target)
            print(f"built {name} in {time.perf_counter() - t0:.0f} s", flush=True)
        frames.append(target)
    return frames


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds used so far by this process and its children, and by the whole machine."""
    own = sum(getattr(resource.getrusage(who), f) for f in ("ru_utime", "ru_stime")
              for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))  # fmt: skip
    ticks = [int(v) for v in Path("/proc/stat").read_text().split()[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    return own, busy / os.sysconf("SC_CLK_TCK")


def timed(step: Callable[[], object]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this process + children, CPU seconds of other processes)."""
    own0, all0 = cpu_seconds()
    t0 = time.perf_counter()
    step()
    seconds = time.perf_counter() - t0
    own1, all1 = cpu_seconds()
    return seconds, own1 - own0, max(0.0, (all1 - all0) - (own1 - own0))


def run_curl(remotes: list[RemoteFile], folder: Path, connections: int) -> None:
    args = ["curl", "--parallel", "--parallel-max", str(connections), "--fail"]
    args += ["--no-progress-meter", "--show-error"]  # -s does not silence --parallel (7.88)
    for r in remotes:
        args += ["-o", str(folder / r.name), r.url]
    subprocess.run(args, check=True)
    for r in remotes:
        if (folder / r.name).stat().st_size != r.size:
            raise SystemExit(f"curl: {r.name} is not whole")


def run_viskom(remotes: list[RemoteFile], folder: Path, connections: int) -> None:
    report = Downloader(folder, connections=connections, timeout_s=60, retries=1,
                        backoff_s=0.05).fetch(remotes)  # fmt: skip
    if report.failed or len(report.new) != len(remotes):
        raise SystemExit(f"viskom: {report.line()} {report.failed}")


def verify_alone(remotes: list[RemoteFile], folder: Path, connections: int) -> None:
    """The downloader's check (SHA-256 + inflate) of files already on disk, no network."""
    with ThreadPoolExecutor(max_workers=connections) as pool:
        problems = list(pool.map(lambda r: verify(folder / r.name, r), remotes))
    if any(problems):
        raise SystemExit(f"verify: {problems}")


def throughput(remotes: list[RemoteFile], work: Path, n: int, runs: int) -> None:
    total = sum(r.size or 0 for r in remotes) / MB
    curl, viskom = [], []
    for _ in range(runs):
        curl.append(timed(lambda: run_curl(remotes, fresh(work / "curl"), n)))
        viskom.append(timed(lambda: run_viskom(remotes, fresh(work / "viskom"), n)))
        print(f"  run: curl {curl[-1][0]:.2f} s, viskom {viskom[-1][0]:.2f} s", flush=True)
        shutil.rmtree(work / "viskom")
    check = timed(lambda: verify_alone(remotes, work / "curl", n))
    shutil.rmtree(work / "curl")
    (c_s, c_cpu, _), (v_s, v_cpu, _) = min(curl), min(viskom)
    for label, (s, cpu, _), what in (
        ("curl:  ", (c_s, c_cpu, 0), f"best of {runs}, {n} connections, no verification"),
        ("viskom:", (v_s, v_cpu, 0), f"best of {runs}, {n} connections, SHA-256 + inflate"),
        ("verify alone:", check, f"{n} threads, files in the page cache, no network"),
    ):
        print(f"{label} {s:.2f} s, {total / s:.0f} MB/s, {cpu:.1f} CPU-s ({what})")
    other = sum(run[2] for run in (*curl, *viskom, check))
    print(f"other processes: {other:.1f} CPU-s during the timed runs (0 on a quiet machine)")
    print(f"ratio: {c_s / v_s:.2f} (viskom / curl throughput; target >= 0.9)")
    print(f"cpu ratio: {c_cpu / v_cpu:.2f} (CPU-s of the curl run / of the viskom run, "
          "server included in both)")  # fmt: skip


def resume(server: ArchiveServer, remote: RemoteFile, work: Path) -> None:
    size = remote.size or 0
    cut = size * 2 // 5
    server.fault(remote.name, Fault("cut", cut_at=cut))
    # the HTTP layer's retry (retries=1) and the adapter's retry of the resumed GET get 503
    server.fault(remote.name, Fault("status", times=2, status=503))
    folder = fresh(work / "resume")
    part = folder / (remote.name + ".part")
    n0 = len(server.requests)
    first = Downloader(folder, connections=1, retries=1, backoff_s=0.05).fetch([remote])
    held = part.stat().st_size if part.exists() else 0
    n1, sent0 = len(server.requests), server.bytes_sent(remote.name)
    second = Downloader(folder, connections=1, retries=1, backoff_s=0.05).fetch([remote])
    sent = server.bytes_sent(remote.name) - sent0
    n2 = len(server.requests)
    ok = (bool(first.failed) and held == cut and second.new == [remote.name]
          and sent == size - cut)  # fmt: skip
    print(f"resume: first fetch {'gave up' if first.failed else 'did not give up'} after "
          f"{n1 - n0} requests with {held} bytes in .part; second fetch {n2 - n1} request(s), "
          f"{second.seconds:.2f} s")  # fmt: skip
    print(f"resume: sent {sent} of {size} bytes, missing {size - cut}: {'OK' if ok else 'FAIL'}")
    shutil.rmtree(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--runs", type=int, default=2, help="alternating curl/viskom runs")
    parser.add_argument("--level", type=int, default=1, help="zlib level of the frames")
    args = parser.parse_args()
    frames = build_frames(args.frames, args.level)
    work = Path(tempfile.mkdtemp(prefix="viskom-fetch-"))
    try:
        with ArchiveServer() as server:
            remotes = [
                RemoteFile(f.name, server.add_file(f.name, f.read_bytes()), size=f.stat().st_size)
                for f in frames
            ]
            total = sum(r.size or 0 for r in remotes)
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
            print(f"frames: {len(remotes)} full-size .fits.gz (level {args.level}), "
                  f"{total / MB:.0f} MB served from memory; {os.cpu_count()} CPUs, "
                  f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
            throughput(remotes, work, args.connections, args.runs)
            resume(server, remotes[0], work)
        self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
        print(
            f"peak RSS: {self_rss:.0f} MB (server files loaded: {rss0:.0f} MB; "
            f"the rest of the run added {self_rss - rss0:.0f} MB)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
