"""The dashboard in a real browser (Debian's chromium, driven by Selenium): every page loads
without a JavaScript error, the Bokeh plots draw, links resolve, an injected out-of-band read
noise is an alarm on Now, on its exposure's page and on the trend; pages escape what files
say and hold no local path or database URL; incremental updates write only what changed.

Screenshots of the main pages go to `test-artifacts/site/` (or $VISKOM_TEST_ARTIFACTS).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import numpy as np
import pytest
from astropy.io import fits

from viskom.config import Settings
from viskom.pipeline.register import ingest
from viskom.pipeline.service import run_pending
from viskom.pipeline.site import build_site, site_dir
from viskom.pipeline.site_server import make_server
from viskom.sources.simulator import SimConfig, simulate_frame
from viskom.store import Store

T0 = datetime(2024, 7, 13, 1, 0, 0, tzinfo=UTC)
NOISY = "2-3.F"  # the quadrant whose read noise is made far too high
ARTIFACTS = Path(os.environ.get("VISKOM_TEST_ARTIFACTS", Path(__file__).parents[1] /
                 "test-artifacts")) / "site"  # fmt: skip
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
#: headless, and none of chromium's own calls home (this machine's network is closed)
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1100")  # fmt: skip
need_browser = pytest.mark.skipif(
    not (CHROMIUM and DRIVER) and not os.environ.get("VISKOM_REQUIRE_BROWSER"),
    reason="Debian's chromium and chromium-driver are needed (apt-get install chromium "
    "chromium-driver)",
)


def _add_noise(path: Path, extname: str, sigma_adu: float) -> None:
    """Make one quadrant's read noise far larger: Gaussian noise on all its pixels."""
    with fits.open(path, mode="update") as hdul:
        hdu = hdul[extname]
        rng = np.random.default_rng(5)
        data = hdu.data.astype(np.float64) + rng.normal(0.0, sigma_adu, hdu.data.shape)
        hdu.data = np.clip(np.round(data), 0, 65535).astype(np.uint16)


def _with_hostile_header(path: Path) -> None:
    """A header string that HTML must not run (IMG_T2 comes from the file)."""
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["IMG_T2"] = "<script>x</script>"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """Four small frames measured (two bias, one with a noisy quadrant; a dark; a science
    frame), their alerts evaluated and the site built."""
    root = tmp_path_factory.mktemp("site")
    raw = root / "raw"
    small = SimConfig(geometry="small")
    frames = []
    for i, kind in enumerate(("bias", "dark", "science", "bias")):
        sim = simulate_frame(raw, kind, seed=300 + i, date_obs=T0.replace(minute=10 * i),
                             config=small, exposure_index=i + 1)  # fmt: skip
        frames.append(sim)
    _add_noise(frames[3].path, NOISY, 12.0)
    _with_hostile_header(frames[1].path)
    settings = Settings(data_root=root / "data", raw_dir=raw, executor="serial", workers=1)
    with Store(settings.db_url) as store:
        ingest(store, [f.path for f in frames])
        done = run_pending(settings, store=store)  # measures, evaluates alerts, builds the site
    assert done.site is not None and done.site.error is None, done.site
    return {"settings": settings, "frames": frames, "report": done.site, "noisy": frames[3].name,
            "raw": raw}  # fmt: skip


def test_pages_are_written_and_an_update_writes_only_what_changed(project) -> None:
    settings = project["settings"]
    site = site_dir(settings)
    report = project["report"]
    assert (site / "index.html").exists() and report.written
    for f in project["frames"]:
        assert (site / "exposures" / f"{f.name}.html").exists()
    assert (site / "trends" / "read_noise_e.html").exists()
    assert (site / "trends" / "data" / "read_noise_e.js").exists()
    assert any((site / "static").glob("bokeh-*.min.js"))
    with Store(settings.db_url) as store:
        again = build_site(settings, store)
    assert again.written == [] and again.data_files == 0 and again.exposures_updated == 0


def test_pages_hold_no_local_path_url_or_raw_markup(project) -> None:
    settings = project["settings"]
    site = site_dir(settings)
    root = str(settings.data_path)
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert root not in text and "sqlite://" not in text and "postgresql" not in text, page
        assert "<script>x</script>" not in text, page  # escaped
    hostile = (site / "exposures" / f"{project['frames'][1].name}.html").read_text()
    assert "&lt;script&gt;x&lt;/script&gt;" in hostile


@pytest.fixture(scope="module")
def served(project):
    server = make_server(project["settings"].data_path, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}"
    server.shutdown()
    server.server_close()


def test_the_server_shows_only_the_dashboard(served, project) -> None:
    import requests

    assert requests.get(served + "/site/index.html", timeout=5).status_code == 200
    for private in ("/viskom.db", "/raw/", "/site/../viskom.db", "/goes/", "/site/.manifest.json"):
        assert requests.get(served + private, timeout=5).status_code == 404, private
    first = requests.get(served + "/", timeout=5, allow_redirects=False)
    assert first.status_code == 302 and first.headers["Location"].endswith("/site/index.html")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        if os.environ.get("VISKOM_REQUIRE_BROWSER"):
            pytest.fail("VISKOM_REQUIRE_BROWSER is set but chromium/chromedriver are missing")
        pytest.skip("chromium and chromedriver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for flag in FLAGS:
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


#: JavaScript: whether a canvas of the page (Bokeh draws inside nested shadow roots) has
#: pixels of the frame-type colours of trend.js (BIAS blue, DARK purple, SCIENCE green).
CANVAS_HAS_POINTS = """
    const found = [];
    (function walk(root) {
        for (const el of root.querySelectorAll('*')) {
            if (el.tagName === 'CANVAS') found.push(el);
            if (el.shadowRoot) walk(el.shadowRoot);
        }
    })(document);
    const want = [[21, 101, 192], [106, 27, 154], [46, 125, 50]];
    let hits = 0;
    for (const cv of found) {
        if (!cv.width || !cv.height) continue;
        const px = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
        for (let i = 0; i < px.length; i += 4) {
            if (px[i + 3] < 200) continue;
            if (want.some(w => Math.abs(px[i] - w[0]) + Math.abs(px[i + 1] - w[1])
                           + Math.abs(px[i + 2] - w[2]) < 40)) hits += 1;
        }
    }
    return hits > 20 ? hits : null;"""


def _errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _wait(driver, script: str, timeout: float = 10.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    return driver.execute_script(script)


@need_browser
def test_every_page_loads_links_resolve_and_plots_draw(browser, served) -> None:
    import requests

    start = served + "/site/index.html"
    todo, seen, broken = [start], set(), []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        browser.get(url)
        assert _errors(browser) == [], (url, _errors(browser))
        for href in browser.execute_script(
            "return [...document.querySelectorAll('a[href], img[src], script[src], link[href]')]"
            ".map(e => e.href || e.src)"
        ):
            target = urljoin(url, href).split("#")[0]
            if urlsplit(target).netloc != urlsplit(served).netloc:
                continue
            if target.endswith(".html") and "/site/" in target:
                todo.append(target)
            elif target not in seen:
                seen.add(target)
                if requests.head(target, timeout=5).status_code != 200:
                    broken.append((url, target))
    assert broken == []
    pages = [u for u in seen if u.endswith(".html")]
    assert len(pages) >= 10
    # a trend draws its points on a canvas that is not blank
    browser.get(served + "/site/trends/read_noise_e.html")
    note = _wait(
        browser,
        "const d = Bokeh.documents[0]; const n = d && d.get_model_by_name('note');"
        " return n && n.text.includes('points') ? n.text : null",
    )
    assert note and int(note.split()[0]) >= 4
    drawn = _wait(browser, CANVAS_HAS_POINTS)
    assert drawn
    for name in ("index", "calendar", "spaceweather", "gaia"):
        browser.get(f"{served}/site/{name}.html")
        time.sleep(0.3)
        browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    browser.get(served + "/site/trends/read_noise_e.html")
    time.sleep(0.5)
    browser.save_screenshot(str(ARTIFACTS / "trend_read_noise_e.png"))


@need_browser
def test_the_noisy_quadrant_is_an_alarm_everywhere(browser, served, project) -> None:
    noisy = project["noisy"]
    browser.get(served + "/site/index.html")
    now = browser.find_element("tag name", "main").text
    assert "read_noise_e" in now and NOISY in now and "alarm" in now
    tile = browser.execute_script(
        "return [...document.querySelectorAll('a.tile')]"
        ".find(t => t.href.endsWith('read_noise_e.html')).className"
    )
    assert "alarm" in tile
    browser.get(f"{served}/site/exposures/{noisy}.html")
    page = browser.find_element("tag name", "main").text
    assert re.search(r"alarm\s+open\s+read_noise_e", page) and NOISY in page
    browser.save_screenshot(str(ARTIFACTS / "exposure_noisy.png"))
    browser.get(served + "/site/trends/read_noise_e.html")
    table = browser.find_element("tag name", "main").text
    assert NOISY in table and noisy in table
    marked = _wait(browser, f"""
        const d = Bokeh.documents[0]; const u = d && d.get_model_by_name('unit');
        if (!u) return null; u.value = '{NOISY}';
        const s = d.get_model_by_name('points');
        return s.data.alert.includes('alarm') ? s.data.alert : null;""")  # fmt: skip
    assert marked and "alarm" in list(marked)


def test_a_new_exposure_rewrites_its_pages_not_the_site(project) -> None:
    settings = project["settings"]
    sim = simulate_frame(project["raw"], "bias", seed=399, date_obs=T0.replace(hour=3),
                         config=SimConfig(geometry="small"), exposure_index=9)  # fmt: skip
    with Store(settings.db_url) as store:
        ingest(store, [sim.path])
        done = run_pending(settings, store=store)
    report = done.site
    assert report.exposures_updated == 1 and f"exposures/{sim.name}.html" in report.written
    assert "index.html" in report.written and "calendar.html" in report.written
    trend_pages = [
        p for p in report.written if p.startswith("trends/") and p != "trends/index.html"
    ]
    assert len(trend_pages) < 20, trend_pages  # the data files changed, not the pages
    assert report.data_files >= 10


def test_metric_cache_replaces_appends_and_forgets(tmp_path) -> None:
    from viskom.pipeline.site_data import COLUMN, MetricCache
    from viskom.store import MetricValue

    class FakeStore:
        def __init__(self, rows):
            self.rows = rows

        def metrics(self, *, exposures):
            return [r for r in self.rows if r.exposure in exposures]

    rows = [MetricValue("A", "FPA", "m", 1.0), MetricValue("A", "2-3.F", "m", 5.0),
            MetricValue("B", "FPA", "m", 2.0), MetricValue("B", "FPA", "n", 7.0)]  # fmt: skip
    cache = MetricCache(tmp_path)
    assert cache.update(FakeStore(rows), ["A", "B"]) == {"m", "n"}
    cache.save()
    again = MetricCache.load(tmp_path)
    assert again.names == ["A", "B"] and again.arrays["m"][0, COLUMN["2-3.F"]] == 5.0
    rows[0] = MetricValue("A", "FPA", "m", 3.0)  # A measured again: its row is replaced
    del rows[1]
    assert again.update(FakeStore(rows), ["A"]) == {"m"}
    assert again.arrays["m"][0, COLUMN["FPA"]] == 3.0
    assert np.isnan(again.arrays["m"][0, COLUMN["2-3.F"]])
    again.forget(["A"])
    assert again.names == ["B"] and again.arrays["n"][0, COLUMN["FPA"]] == 7.0


def test_redactor_takes_local_paths_out() -> None:
    from viskom.pipeline.site_common import Redactor

    redact = Redactor(("data", Path("/srv/vis/data")), ("raw", Path("/mnt/raw")))
    assert redact("cache /srv/vis/data/goes/ncei missing") == "cache data/goes/ncei missing"
    assert redact("cannot read /mnt/raw/x.fits") == "cannot read raw/x.fits"
    assert redact("at /opt/other/place/file.py:12") == "at …/file.py:12"
    assert redact(None) == "" and redact("3/4 quadrants") == "3/4 quadrants"
