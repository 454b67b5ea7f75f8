"""Benchmark: the dashboard of a month of 1000 exposures (metrics only, no pixels).

Usage: python benchmarks/bench_site.py [--exposures 1000] [--keep DIR]

Builds a store (SQLite) with 1000 exposures over 30 days (science, dark, bias, flat), each
with detector-health metrics for its 144 quadrants (rolled up to CCDs and the focal plane as
the runner does), PSF metrics per CCD for science frames and particle metrics, then times:
the full site build; an incremental update after one new exposure (target <= 5 s); the
largest page (the trend page of a quadrant metric with its data files) in headless chromium
from a local server: its bytes and the time to load it and draw its points (target <= 2 s).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

T0 = datetime(2024, 7, 1, tzinfo=UTC)
KINDS = ("SCIENCE",) * 6 + ("DARK", "BIAS", "FLAT")


def _rows(rng: np.random.Generator, kind: str, quadrant_offsets: np.ndarray) -> dict:
    """Metric rows by stage for one exposure: realistic levels and scatter."""
    from viskom.le1.geometry import all_ccds, all_extnames
    from viskom.pipeline.stage_io import roll_up

    quads = all_extnames()
    noise = 4.15 + quadrant_offsets * 0.1 + rng.normal(0, 0.01, 144)
    bias = 2700 + quadrant_offsets * 60 + rng.normal(0, 0.3, 144)
    health = []
    for q, b, n in zip(quads, bias, noise, strict=True):
        health += [(q, "bias_overscan_adu", float(b)), (q, "bias_prescan_adu", float(b + 0.2)),
                   (q, "read_noise_e", float(n)), (q, "read_noise_adu", float(n / 3.4)),
                   (q, "image_level_adu", float(rng.normal(30, 3))),
                   (q, "hot_pixels", float(rng.poisson(40)))]  # fmt: skip
    if kind == "DARK":
        health += [(q, "dark_current_e_per_s", float(rng.normal(6e-4, 5e-5))) for q in quads]
    rows = {"detector_health": roll_up(health)}
    if kind == "SCIENCE":
        psf = [(c, m, float(rng.normal(v, s))) for c in [*all_ccds(), "FPA"]
               for m, v, s in (("psf_r2", 1.95, 0.02), ("psf_e1", -0.02, 0.005),
                               ("psf_e2", 0.005, 0.005))]  # fmt: skip
        psf.append(("FPA", "iq_score", float(abs(rng.normal(10, 5)))))
        rows["psf"] = psf
        rows["gaia"] = [("FPA", "vis_over_gaia_075", float(rng.normal(0.89, 0.003)))]
    if kind in ("SCIENCE", "DARK"):
        hits = roll_up([(q, "cr_hits", float(rng.poisson(300))) for q in quads])
        rows["events"] = [
            *hits,
            ("FPA", "cr_particles_per_cm2_s", float(rng.normal(3.0, 0.3))),
            ("FPA", "xray_events", float(abs(rng.normal(100, 30)))),
        ]
    return rows


def add_exposure(store, i: int, when: datetime, kind: str, rng, offsets) -> str:
    """Register exposure `i` and record its stage runs."""
    from viskom.store import ExposureRecord, StageRun

    name = f"EUC_LE1_VIS-{2400 + i // 6:05d}-{i % 6 + 1}-W_{when:%Y%m%dT%H%M%S}.000000Z_01_01_01.00"
    exp = store.register_exposure(ExposureRecord(
        name=name, path=f"/archive/{name}.fits", state="registered", frame_type=kind,
        checksum=f"{i:064x}", date_obs=when, exptime=560.52 if kind != "BIAS" else 0.0,
        ra=56.2, dec=-55.7, pa=46.2, n_quadrants=144))[0]  # fmt: skip
    for stage, rows in _rows(rng, kind, offsets).items():
        run = StageRun(exp.id, stage, "1", "c" * 16, "0.1.0", "ok", None, when, 1.0,
                       finished_at=when + timedelta(seconds=30))  # fmt: skip
        store.record_stage_run(run, rows)
    return name


def build_store(root: Path, n: int) -> object:
    from viskom.config import Settings
    from viskom.store import Store

    settings = Settings(data_root=root / "data", alerts={"enabled": False})
    rng = np.random.default_rng(1)
    offsets = rng.normal(0, 1, 144)
    step = timedelta(days=30) / n
    t0 = time.perf_counter()
    with Store(settings.db_url) as store:
        for i in range(n):
            add_exposure(store, i, T0 + i * step, KINDS[i % len(KINDS)], rng, offsets)
    print(f"store: {n} exposures recorded in {time.perf_counter() - t0:.1f} s")
    return settings


def page_load(settings, page: str) -> tuple[float, int]:
    """Seconds to load `page` and draw its trend in headless chromium, and its bytes
    (the page, its scripts and data files)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    from viskom.pipeline.site_server import make_server

    server = make_server(settings.data_path, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    options = Options()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"):  # fmt: skip
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        url = f"http://{host}:{port}/site/{page}"
        driver.get(f"http://{host}:{port}/site/index.html")  # start the browser
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})  # cold
        times = []
        for _ in range(3):
            driver.execute_script("window.location = 'about:blank'")
            t0 = time.perf_counter()
            driver.get(url)
            while not driver.execute_script(
                "const d = window.Bokeh && Bokeh.documents[0]; const n = d && "
                "d.get_model_by_name('note'); return n && n.text.includes('points');"
            ):
                time.sleep(0.01)
            times.append(time.perf_counter() - t0)
        size = driver.execute_script(
            "return performance.getEntriesByType('resource').reduce((a, r) => a + "
            "r.decodedBodySize, 0) + performance.getEntriesByType('navigation')[0].decodedBodySize"
        )
    finally:
        driver.quit()
        server.shutdown()
    return min(times), int(size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exposures", type=int, default=1000)
    ap.add_argument("--keep", type=Path, help="build here and keep it (default: a temp dir)")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-site-"))
    try:
        from viskom.pipeline.site import build_site
        from viskom.store import Store

        settings = build_store(root, args.exposures)
        with Store(settings.db_url) as store:
            t0 = time.perf_counter()
            full = build_site(settings, store, full=True)
            t_full = time.perf_counter() - t0
            rng = np.random.default_rng(2)
            add_exposure(store, args.exposures, T0 + timedelta(days=30, minutes=5), "BIAS",
                         rng, np.random.default_rng(1).normal(0, 1, 144))  # fmt: skip
            t0 = time.perf_counter()
            incr = build_site(settings, store)
            t_incr = time.perf_counter() - t0
        site = settings.data_path / "site"
        data = sorted((site / "trends" / "data").glob("*.js"), key=lambda p: p.stat().st_size)
        biggest = data[-1].stem
        t_load, size = page_load(settings, f"trends/{biggest}.html")
        print(f"full build:   {t_full:.1f} s ({full.line()})")
        print(f"incremental:  {t_incr:.2f} s after one new exposure (target <= 5 s): {incr.line()}")
        print(f"largest page: trends/{biggest}.html, {size / 1e6:.2f} MB with its scripts and "
              f"data; loaded and drawn in {t_load:.2f} s (target <= 2 s)")  # fmt: skip
        print(f"ratio: {t_incr / 5.0:.2f} (incremental update / 5 s target)")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
