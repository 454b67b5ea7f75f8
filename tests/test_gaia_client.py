"""Gaia DR3 client: a fake VizieR and Gaia TAP on a local HTTP server, never the internet.

The fake VizieR answers astroquery's POST to /viz-bin/votable like VizieR does for I/355/gaiadr3
(VOTable 1.4 TABLEDATA with VizieR's FIELD attributes, empty cells for nulls, -out.max obeyed
with a QUERY_STATUS OVERFLOW when it truncates); the fake TAP answers /tap/sync with a BINARY2
VOTable of gaia_source columns. Both serve the same simulated sky.
"""

from __future__ import annotations

import http.server
import json
import logging
import re
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pytest
from astropy.table import MaskedColumn, Table

from viskom.sources.gaia import (
    GAIA_COLUMNS,
    TAP_COLUMNS,
    GaiaAnswerError,
    GaiaCache,
    GaiaClient,
    GaiaUnavailable,
    angular_separation_deg,
    julian_epoch,
    parse_vizier_votable,
    propagate_to_epoch,
)
from viskom.sources.simulator.catalogue import (
    gaia_like_catalogue,
    julian_year,
    propagate,
    read_gaia_catalogue,
    write_gaia_catalogue,
)

RA0, DEC0 = 56.2, -55.7  # VISQL's example field
#: Short enough for the hanging-service tests, long enough that the fake services' answers
#: (a VOTable written by astropy) do not time out on a loaded 2-core machine: at 0.2 s a TAP
#: answer once did, and the client's legitimate retry broke a count of calls.
FAST = {"timeout_s": 1.0, "retries": 1, "backoff_s": 0.0}

# VizieR's FIELD attributes of I/355/gaiadr3: datatype, width, precision, unit, ucd.
VIZIER_FIELDS = {
    "RA_ICRS": ("double", 15, 11, "deg", "pos.eq.ra;meta.main"),
    "DE_ICRS": ("double", 15, 11, "deg", "pos.eq.dec;meta.main"),
    "Source": ("long", 19, None, None, "meta.id;meta.main"),
    "Gmag": ("double", 9, 6, "mag", "phot.mag;em.opt"),
    "e_Gmag": ("double", 8, 6, "mag", "stat.error;phot.mag"),
    "FG": ("double", 16, 4, "e-/s", "phot.flux;em.opt"),
    "e_FG": ("double", 11, 4, "e-/s", "stat.error;phot.flux;em.opt"),
    "BPmag": ("double", 9, 6, "mag", "phot.mag;em.opt.B"),
    "RPmag": ("double", 9, 6, "mag", "phot.mag;em.opt.R"),
    "BP-RP": ("double", 9, 6, "mag", "phot.color;em.opt.B;em.opt.R"),
    "pmRA": ("double", 9, 3, "mas/yr", "pos.pm;pos.eq.ra"),
    "pmDE": ("double", 9, 3, "mas/yr", "pos.pm;pos.eq.dec"),
    "Plx": ("double", 9, 4, "mas", "pos.parallax.trig"),
    "RUWE": ("double", 7, 3, None, "stat.fit.goodness"),
}


def _sky() -> Table:
    """A sparse simulated sky (~260 stars/deg2) with Gaia's nulls: 2-parameter and no-colour."""
    sky = gaia_like_catalogue(RA0, DEC0, 1.6, seed=11, density_factor=0.06)
    rng = np.random.default_rng(5)
    two_param = rng.random(len(sky)) < 0.1
    no_colour = rng.random(len(sky)) < 0.05
    for name in ("pmRA", "pmDE", "Plx"):
        sky[name][two_param] = np.nan
    for name in ("BPmag", "RPmag", "BP-RP"):
        sky[name][no_colour] = np.nan
    return sky


def _in_cone(table: Table, ra: float, dec: float, r: float) -> np.ndarray:
    ra_t, dec_t = np.asarray(table["RA_ICRS"], float), np.asarray(table["DE_ICRS"], float)
    return angular_separation_deg(ra, dec, ra_t, dec_t) <= r


def _vizier_votable(rows: Table, columns: list[str], query: str, truncated_at: int | None) -> bytes:
    fields = []
    for name in columns:
        dtype, width, prec, unit, ucd = VIZIER_FIELDS[name]
        attrs = f'name="{name}" ucd="{ucd}" datatype="{dtype}" width="{width}"'
        attrs += f' precision="{prec}"' if prec is not None else ""
        attrs += f' unit="{unit}"' if unit else ""
        fields.append(f"    <FIELD {attrs}>\n      <DESCRIPTION>{name}</DESCRIPTION>\n    </FIELD>")
    lines = []
    for row in rows:
        cells = []
        for name in columns:
            value = row[name]
            prec = VIZIER_FIELDS[name][2]
            if prec is None:
                cells.append(f"<TD>{int(value)}</TD>")
            elif np.isfinite(value):
                cells.append(f"<TD>{value:.{prec}f}</TD>")
            else:
                cells.append("<TD></TD>")
        lines.append("<TR>" + "".join(cells) + "</TR>")
    status = ""
    if truncated_at is not None:
        status = (
            f'<INFO name="Warning" value="truncated result (maxtup={truncated_at})"/>\n'
            f'<INFO name="QUERY_STATUS" value="OVERFLOW">truncated result (maxtup={truncated_at})'
            "</INFO>\n"
        )
    doc = f"""<?xml version="1.0" encoding="UTF-8"?>
<VOTABLE version="1.4" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xmlns="http://www.ivoa.net/xml/VOTable/v1.3"
  xsi:schemaLocation="http://www.ivoa.net/xml/VOTable/v1.3 http://www.ivoa.net/xml/VOTable/v1.3">
 <DESCRIPTION>
   VizieR Astronomical Server vizier.cds.unistra.fr
    Date: 2025-01-01T00:00:00 [V7.4.5]
   In this version, NULL integer columns are written as an empty string
   &lt;TD&gt;&lt;/TD&gt;, explicitely possible from VOTable-1.3
 </DESCRIPTION>
<INFO ID="VERSION" name="votable-version" value="1.99+ (14-Oct-2013)"/>
<INFO ID="Ref" name="-ref" value="VOTx12345"/>
<INFO name="-out.form" value="mini"/>
<INFO name="MaxTuples" value="50000" />
<INFO name="queryParameters" value="{len(query.splitlines())}">
{query}
</INFO>
<RESOURCE ID="yCat_1355" name="I/355">
  <DESCRIPTION>Gaia DR3 Part 1. Main source (Gaia Collaboration, 2022)</DESCRIPTION>
  <COOSYS ID="H_2016.000" system="ICRS" epoch="2016.000"/>
  <TABLE ID="I_355_gaiadr3" name="I/355/gaiadr3">
    <DESCRIPTION>Gaia DR3 source catalog (1811709771 sources)</DESCRIPTION>
{chr(10).join(fields)}
<DATA><TABLEDATA>
{chr(10).join(lines)}
</TABLEDATA></DATA>
</TABLE>
<INFO name="matches" value="{len(rows)}">matching records</INFO>
{status}</RESOURCE>
</VOTABLE>
"""
    return doc.encode()


def _tap_votable(rows: Table, columns: list[str]) -> bytes:
    from astropy.io.votable import from_table
    from astropy.io.votable.tree import Info

    by_tap = {tap: viz for viz, tap in TAP_COLUMNS.items()}
    out = Table()
    for name in columns:
        data = np.asarray(rows[by_tap[name]])
        if data.dtype.kind == "f":
            out[name] = MaskedColumn(data, mask=~np.isfinite(data))
        else:
            out[name] = data
    vot = from_table(out)
    vot.resources[0].type = "results"
    vot.resources[0].infos.append(Info(name="QUERY_STATUS", value="OK"))
    buf = BytesIO()
    vot.to_xml(buf, tabledata_format="binary2")
    return buf.getvalue()


class FakeServices:
    """Fake VizieR (/viz-bin/votable) and Gaia TAP (/tap/sync) serving one simulated sky."""

    def __init__(self, sky: Table) -> None:
        self.sky = sky
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.reset()
        handler = self._handler()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def reset(self) -> None:
        self.vizier_mode = "ok"  # ok | 500 | timeout | overflow | garbage
        self.tap_mode = "ok"  # ok | 500 | timeout
        self.hits: Counter[str] = Counter()
        self.vizier_payloads: list[dict[str, str]] = []
        self.tap_queries: list[str] = []

    def client(self, cache_dir: Path, **kw) -> GaiaClient:
        options = {**FAST, **kw}
        return GaiaClient(
            cache_dir, vizier_server=self.base_url, tap_url=self.base_url + "/tap", **options
        )

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    # -- answers ------------------------------------------------------------------------

    def vizier(self, body: str) -> tuple[int, bytes]:
        payload = {}
        for line in body.splitlines():
            key, _, value = line.partition("=")
            payload[key] = value
        self.vizier_payloads.append(payload)
        if payload.get("-source") != "I/355/gaiadr3":
            return 200, b'<?xml version="1.0"?><VOTABLE><INFO name="Error" value="cat"/></VOTABLE>'
        m = re.fullmatch(r"([0-9.]+)([+-][0-9.]+)", payload.get("-c", ""))
        radius = {"-c.rd": 1.0, "-c.rm": 1 / 60, "-c.rs": 1 / 3600}
        unit = next(k for k in radius if k in payload)
        r = float(payload[unit]) * radius[unit]
        ra, dec = float(m.group(1)), float(m.group(2))
        columns = payload.get("-out", "").split(",")
        if any(c not in VIZIER_FIELDS for c in columns):
            return 200, b'<?xml version="1.0"?><VOTABLE><INFO name="Error" value="col"/></VOTABLE>'
        rows = self.sky[_in_cone(self.sky, ra, dec, r)]
        out_max = payload.get("-out.max", "50")
        limit = None if out_max == "unlimited" else int(out_max)
        if self.vizier_mode == "overflow":
            limit = 50
        truncated = limit if limit is not None and len(rows) > limit else None
        if truncated is not None:
            rows = rows[:truncated]
        return 200, _vizier_votable(rows, columns, body, truncated)

    def tap(self, body: str) -> tuple[int, bytes]:
        form = {k: v[0] for k, v in parse_qs(body).items()}
        query = form.get("QUERY", "")
        self.tap_queries.append(query)
        assert form.get("REQUEST") == "doQuery" and form.get("LANG") == "ADQL"
        m = re.search(
            r"SELECT (.*) FROM gaiadr3\.gaia_source WHERE 1 = CONTAINS\(POINT\('ICRS', ra, dec\), "
            r"CIRCLE\('ICRS', ([-0-9.]+), ([-0-9.]+), ([0-9.]+)\)\)",
            query,
        )
        if m is None:
            return 400, b"<VOTABLE><INFO name='QUERY_STATUS' value='ERROR'>bad</INFO></VOTABLE>"
        columns = [c.strip() for c in m.group(1).split(",")]
        ra, dec, r = (float(m.group(i)) for i in (2, 3, 4))
        return 200, _tap_votable(self.sky[_in_cone(self.sky, ra, dec, r)], columns)

    def _handler(self):
        services = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                name = {"/viz-bin/votable": "vizier", "/tap/sync": "tap"}.get(self.path)
                if name is None:
                    self.send_error(404)
                    return
                with services.lock:
                    services.hits[name] += 1
                mode = services.vizier_mode if name == "vizier" else services.tap_mode
                if mode == "timeout":
                    services.release.wait(3.0)
                    return
                if mode == "500":
                    self.send_error(500, "Internal Server Error")
                    return
                if mode == "garbage":
                    status, content = 200, b"<html>maintenance</html>"
                else:
                    status, content = getattr(services, name)(body)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        return Handler


@pytest.fixture(scope="module")
def sky() -> Table:
    return _sky()


@pytest.fixture(scope="module")
def _server(sky):
    services = FakeServices(sky)
    yield services
    services.close()


@pytest.fixture
def fake(_server, monkeypatch) -> FakeServices:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    _server.reset()
    return _server


def _sources(table: Table) -> set[int]:
    return set(np.asarray(table["Source"]).tolist())


def _parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# -- proper motions ------------------------------------------------------------------------


def test_propagate_to_epoch_agrees_with_the_simulator():
    rng = np.random.default_rng(1)
    n = 2000
    ra = rng.uniform(0, 360, n)
    dec = rng.uniform(-85, 85, n)
    pmra, pmde = rng.normal(0, 50, n), rng.normal(0, 50, n)
    for years in (-16.0, 0.0, 9.87, 25.0):
        a_ra, a_dec = propagate_to_epoch(ra, dec, pmra, pmde, years)
        b_ra, b_dec = propagate(ra, dec, pmra, pmde, years)
        dra = (a_ra - b_ra + 180.0) % 360.0 - 180.0
        assert np.max(np.abs(dra)) < 1e-9 and np.max(np.abs(a_dec - b_dec)) < 1e-9


def test_propagate_nan_proper_motion_is_no_motion():
    ra, dec = np.array([10.0, 359.9999999]), np.array([-30.0, 0.0])
    new_ra, new_dec = propagate_to_epoch(ra, dec, [np.nan, 1e3], [np.nan, 0.0], 10.0)
    assert new_ra[0] == 10.0 and new_dec[0] == -30.0
    assert new_ra[1] == pytest.approx(1e4 / 3.6e6 - 1e-7, abs=1e-12)  # wrapped past 360


def test_julian_epoch_against_astropy():
    """An independent oracle (astropy's Julian year of the UTC instant), not the simulator's
    copy of the same formula."""
    from astropy.time import Time

    for t in (datetime(2026, 3, 1, 6, 30), datetime(2016, 1, 1), datetime(2000, 1, 1, 12)):
        want = Time(t.replace(tzinfo=UTC), scale="utc").jyear
        assert julian_epoch(t) == pytest.approx(want, abs=1e-9)  # 1e-9 yr = 0.03 s
        assert julian_epoch(t.replace(tzinfo=UTC)) == pytest.approx(want, abs=1e-9)
    assert julian_epoch(Time("2024-07-13T00:00:00", scale="utc")) == pytest.approx(
        Time("2024-07-13T00:00:00", scale="utc").jyear
    )
    assert julian_epoch(2025.5) == 2025.5


# -- tiles ---------------------------------------------------------------------------------


def test_tiles_for_cone_holds_every_point_of_the_cone(tmp_path):
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    cache = GaiaCache(tmp_path)
    rng = np.random.default_rng(3)
    cones = [(0.1, 0.0, 0.6), (359.95, 89.95, 0.3), (180.0, -89.99, 0.2), (45.0, 41.8, 0.001)]
    cones += [
        (rng.uniform(0, 360), rng.uniform(-89, 89), rng.uniform(0.01, 1.0)) for _ in range(20)
    ]
    for ra, dec, r in cones:
        tiles = set(cache.tiles_for_cone(ra, dec, r))
        theta = rng.uniform(0, 2 * np.pi, 1500)
        rr = np.r_[np.full(750, r), r * np.sqrt(rng.uniform(0, 1, 750))]
        pts = SkyCoord(ra * u.deg, dec * u.deg).directional_offset_by(theta * u.rad, rr * u.deg)
        assert set(cache.tile_of(pts.ra.deg, pts.dec.deg).tolist()) <= tiles, (ra, dec, r)
    assert 3 <= len(cache.tiles_for_cone(RA0, DEC0, 0.6)) <= 9


# -- online: fetch, cache, serve ---------------------------------------------------------------


def test_first_query_fetches_then_the_cache_serves(fake, sky, tmp_path):
    client = fake.client(tmp_path / "cache")
    ra, dec, r = RA0 + 0.1, DEC0 + 0.05, 0.45
    table = client.cone(ra, dec, r)
    tiles = client.cache.tiles_for_cone(ra, dec, r)
    assert fake.hits["vizier"] == len(tiles) and fake.hits["tap"] == 0
    assert table.colnames == list(GAIA_COLUMNS)
    assert _sources(table) == set(np.asarray(sky["Source"][_in_cone(sky, ra, dec, r)]).tolist())
    assert table.meta["origins"] == ["vizier"] and table.meta["epoch"] == 2016.0
    assert str(table["RA_ICRS"].unit) == "deg" and str(table["pmRA"].unit) == "mas / yr"
    # Values round-trip through VizieR's text format, nulls included.
    truth = sky[np.isin(sky["Source"], table["Source"])]
    truth.sort("Source")
    got = table.copy()
    got.sort("Source")
    assert np.allclose(got["RA_ICRS"], truth["RA_ICRS"], atol=1e-10, rtol=0)
    assert np.allclose(got["Gmag"], truth["Gmag"], atol=1e-6, rtol=0)
    for name in ("pmRA", "Plx", "BP-RP"):
        assert np.array_equal(np.isnan(got[name]), np.isnan(np.asarray(truth[name], float)))
    # What astroquery sent: the catalogue, the columns by name, no row limit.
    payload = fake.vizier_payloads[0]
    assert payload["-source"] == "I/355/gaiadr3"
    assert payload["-out"].split(",") == list(GAIA_COLUMNS)
    assert payload["-out.max"] == "unlimited"
    # Cache layout: one parquet file per tile, no temporary files left.
    files = _parquet_files(tmp_path / "cache")
    assert [p.relative_to(tmp_path / "cache").as_posix() for p in files] == sorted(
        f"hpx64/{pix}.parquet" for pix in tiles
    )
    tile = read_gaia_catalogue(files[0])  # the simulator's reader reads tiles
    assert tile.meta["coverage"] == {"kind": "full"} and tile.meta["hpx_nside"] == 64

    before = dict(fake.hits)
    again = client.cone(ra, dec, r)
    inner = client.cone(ra + 0.1, dec - 0.1, 0.2)
    other_client = fake.client(tmp_path / "cache", online=False)
    assert len(other_client.cone(ra, dec, r)) == len(table)
    assert dict(fake.hits) == before
    assert _sources(again) == _sources(table)
    assert _sources(inner) == set(
        np.asarray(sky["Source"][_in_cone(sky, ra + 0.1, dec - 0.1, 0.2)]).tolist()
    )
    assert client.missing_tiles(ra, dec, r) == []

    # A fresh cache goes to the service again (astroquery's own cache is not used).
    fake.client(tmp_path / "fresh").cone(ra, dec, r)
    assert fake.hits["vizier"] == 2 * len(tiles)


def test_tile_with_more_than_50_rows_comes_back_complete(fake, sky, tmp_path):
    client = fake.client(tmp_path)
    pix = int(client.cache.tile_of(RA0, DEC0))
    client.cone(RA0, DEC0, 0.01)
    tile = client.cache.read_tile(pix)
    in_tile = client.cache.tile_of(sky["RA_ICRS"], sky["DE_ICRS"]) == pix
    assert in_tile.sum() > 50
    assert len(tile.table) == in_tile.sum()
    assert _sources(tile.table) == set(np.asarray(sky["Source"][in_tile]).tolist())
    assert tile.coverage.is_full and tile.origin == "vizier"


def test_an_empty_area_is_a_valid_cached_result(fake, tmp_path):
    client = fake.client(tmp_path)
    table = client.cone(200.0, 30.0, 0.3)
    assert len(table) == 0 and table.colnames == list(GAIA_COLUMNS)
    hits = fake.hits["vizier"]
    assert hits > 0
    assert len(client.cone(200.0, 30.0, 0.3)) == 0
    assert fake.hits["vizier"] == hits


def test_epoch_adds_propagated_positions(fake, tmp_path):
    client = fake.client(tmp_path)
    when = datetime(2026, 5, 17, 3, 0, tzinfo=UTC)
    table = client.cone(RA0, DEC0, 0.3, epoch=when)
    years = julian_year(when) - 2016.0
    ra, dec = propagate(
        table["RA_ICRS"], table["DE_ICRS"],
        np.nan_to_num(table["pmRA"]), np.nan_to_num(table["pmDE"]), years,
    )  # fmt: skip
    assert np.allclose(table["ra_epoch"], ra, atol=1e-9, rtol=0)
    assert np.allclose(table["dec_epoch"], dec, atol=1e-9, rtol=0)
    still = np.isnan(table["pmRA"])
    assert still.any() and np.all(table["ra_epoch"][still] == table["RA_ICRS"][still])
    moved = np.degrees(
        np.hypot((ra - table["RA_ICRS"]) * np.cos(np.radians(dec)), dec - table["DE_ICRS"])
    )
    assert np.nanmax(moved) * 3.6e6 > 100  # some stars move by > 1 VIS pixel (0.1")
    by_year = client.cone(RA0, DEC0, 0.3, epoch=julian_year(when))
    assert np.allclose(by_year["ra_epoch"], table["ra_epoch"], atol=1e-12, rtol=0)
    assert "ra_epoch" not in client.cone(RA0, DEC0, 0.3).colnames


# -- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["500", "timeout", "garbage"])
def test_vizier_failing_falls_back_to_tap_and_is_not_hammered(fake, sky, tmp_path, mode):
    fake.vizier_mode = mode
    client = fake.client(tmp_path)
    ra, dec, r = RA0, DEC0, 0.45
    tiles = client.cache.tiles_for_cone(ra, dec, r)
    table = client.cone(ra, dec, r)
    assert fake.hits["vizier"] == client.retries + 1  # then the breaker stays open
    assert fake.hits["tap"] == len(tiles)
    assert "vizier" in client.services_down
    assert table.meta["origins"] == ["tap"]
    assert _sources(table) == set(np.asarray(sky["Source"][_in_cone(sky, ra, dec, r)]).tolist())
    got = table.copy()
    got.sort("Source")
    truth = sky[np.isin(sky["Source"], got["Source"])]
    truth.sort("Source")
    assert np.allclose(got["e_Gmag"], truth["e_Gmag"], rtol=2e-3)  # 1.0857 e_FG / FG
    assert "gaiadr3.gaia_source" in fake.tap_queries[0]
    assert client.cache.read_tile(tiles[0]).origin == "tap"


def test_truncated_vizier_answer_is_not_cached(fake, sky, tmp_path):
    fake.vizier_mode = "overflow"  # VizieR cuts at 50 rows with QUERY_STATUS OVERFLOW
    client = fake.client(tmp_path)
    tiles = client.cache.tiles_for_cone(RA0, DEC0, 0.3)
    table = client.cone(RA0, DEC0, 0.3)
    assert fake.hits["vizier"] == len(tiles)  # tried per tile: VizieR is up, the tile too big
    assert fake.hits["tap"] == len(tiles)
    assert "vizier" not in client.services_down
    assert _sources(table) == set(np.asarray(sky["Source"][_in_cone(sky, RA0, DEC0, 0.3)]).tolist())


def test_both_services_failing_is_a_clear_error_and_writes_nothing(fake, tmp_path):
    fake.vizier_mode = "500"
    fake.tap_mode = "timeout"
    client = fake.client(tmp_path)
    with pytest.raises(GaiaUnavailable) as err:
        client.cone(RA0, DEC0, 0.3)
    text = str(err.value)
    assert "could not be fetched" in text and "HTTP 500" in text and "vizier" in text
    assert "tap" in text and ("timed out" in text or "Timeout" in text)
    for pix in client.cache.tiles_for_cone(RA0, DEC0, 0.3):
        assert str(pix) in text
    assert _parquet_files(tmp_path) == []
    hits = dict(fake.hits)
    with pytest.raises(GaiaUnavailable, match="not tried again"):
        client.cone(RA0, DEC0, 0.3)
    assert dict(fake.hits) == hits  # circuit breaker: no more calls


def test_a_failure_is_shared_so_the_next_exposures_fail_fast(fake, tmp_path):
    """Issue 17: the client each exposure's stage makes (any worker process) reads the
    services that failed from the shared file: one failed probe per run, not timeouts and
    retries per exposure. After `retry_after_s` the service is asked again."""
    fake.vizier_mode = "timeout"
    fake.tap_mode = "500"
    shared = tmp_path / "cache" / "unreachable.json"
    first = fake.client(tmp_path / "cache", unreachable_file=shared, retry_after_s=600.0)
    t0 = time.perf_counter()
    with pytest.raises(GaiaUnavailable):
        first.cone(RA0, DEC0, 0.3)
    waited = time.perf_counter() - t0
    hits = dict(fake.hits)
    assert hits["vizier"] >= 1 and hits["tap"] >= 1
    assert set(json.loads(shared.read_text())) == {"vizier", "tap"}
    for _ in range(5):  # five more exposures, each with a new client
        client = fake.client(tmp_path / "cache", unreachable_file=shared, retry_after_s=600.0)
        t0 = time.perf_counter()
        with pytest.raises(GaiaUnavailable, match=r"failed at .* UTC; tried again in"):
            client.cone(RA0, DEC0, 0.3)
        assert time.perf_counter() - t0 < min(0.5, waited / 2)
    assert dict(fake.hits) == hits  # nobody asked the services again
    fake.vizier_mode = fake.tap_mode = "ok"
    again = fake.client(tmp_path / "cache", unreachable_file=shared, retry_after_s=0.0)
    assert len(again.cone(RA0, DEC0, 0.3)) > 0  # the cooldown is over: asked, and answered


def test_corrupt_tile_is_refetched_with_a_warning(fake, sky, tmp_path, caplog):
    client = fake.client(tmp_path)
    table = client.cone(RA0, DEC0, 0.3)
    pix = client.cache.tiles_for_cone(RA0, DEC0, 0.3)[0]
    path = client.cache.tile_path(pix)
    path.write_bytes(b"PAR1 this is not a parquet file")
    hits = fake.hits["vizier"]
    with caplog.at_level(logging.WARNING, logger="viskom.sources.gaia"):
        again = client.cone(RA0, DEC0, 0.3)
    assert any(
        str(path) in rec.getMessage() and "unreadable" in rec.getMessage() for rec in caplog.records
    )
    assert fake.hits["vizier"] == hits + 1
    assert _sources(again) == _sources(table)
    assert client.cache.read_tile(pix) is not None


def test_foreign_tile_file_is_treated_as_missing(fake, tmp_path, caplog):
    client = fake.client(tmp_path, online=False)
    pix = client.cache.tiles_for_cone(RA0, DEC0, 0.1)[0]
    path = client.cache.tile_path(pix)
    write_gaia_catalogue(gaia_like_catalogue(RA0, DEC0, 0.1, seed=1), path)  # no tile metadata
    with caplog.at_level(logging.WARNING, logger="viskom.sources.gaia"):
        assert pix in client.missing_tiles(RA0, DEC0, 0.1)
    assert "unreadable" in caplog.text


# -- offline and seeding ---------------------------------------------------------------------


def test_offline_with_an_empty_cache_names_the_missing_tiles(fake, tmp_path):
    client = fake.client(tmp_path, online=False)
    with pytest.raises(GaiaUnavailable) as err:
        client.cone(RA0, DEC0, 0.6)
    assert isinstance(err.value, RuntimeError)
    text = str(err.value)
    missing = client.missing_tiles(RA0, DEC0, 0.6)
    assert missing == client.cache.tiles_for_cone(RA0, DEC0, 0.6)
    assert all(str(p) in text for p in missing)
    assert "offline" in text and "online=True" in text and "seed_from_catalogue" in text
    assert "56.20000" in text and "-55.70000" in text
    assert sum(fake.hits.values()) == 0


def test_offline_after_seeding_from_a_simulated_cone(fake, tmp_path):
    path = write_gaia_catalogue(
        gaia_like_catalogue(RA0, DEC0, 0.6, seed=7, density_factor=0.3),
        tmp_path / "gaia_00001.parquet",
    )
    catalogue = read_gaia_catalogue(path)
    meta = catalogue.meta
    client = fake.client(tmp_path / "cache", online=False)
    written = client.cache.seed_from_catalogue(
        catalogue, meta["ra0"], meta["dec0"], meta["radius_deg"]
    )
    assert written == client.cache.tiles_for_cone(RA0, DEC0, 0.6)

    ra, dec, r = RA0 + 0.2, DEC0 - 0.1, 0.35  # inside the seeded cone
    assert client.missing_tiles(ra, dec, r) == []
    table = client.cone(ra, dec, r, epoch=2026.0)
    assert _sources(table) == set(
        np.asarray(catalogue["Source"][_in_cone(catalogue, ra, dec, r)]).tolist()
    )
    assert table.meta["origins"] == [f"seed: {catalogue.meta['catalogue']}"]
    assert len(client.cone(RA0, DEC0, 0.6)) == len(catalogue)

    for outside in ((RA0, DEC0, 0.7), (RA0 + 1.2, DEC0, 0.2), (RA0 + 0.9, DEC0, 0.3)):
        with pytest.raises(GaiaUnavailable, match="offline"):
            client.cone(*outside)
    assert sum(fake.hits.values()) == 0

    # seed_from_file does the same from the file's own metadata.
    other = GaiaCache(tmp_path / "cache2")
    assert other.seed_from_file(path) == written
    assert other.missing_tiles(ra, dec, r) == []


def test_seeding_never_downgrades_a_full_tile(fake, tmp_path):
    client = fake.client(tmp_path)
    client.cone(RA0, DEC0, 0.05)
    full = client.cache.tiles_for_cone(RA0, DEC0, 0.05)
    before = {pix: client.cache.tile_path(pix).read_bytes() for pix in full}
    catalogue = gaia_like_catalogue(RA0, DEC0, 0.6, seed=9, density_factor=0.1)
    written = client.cache.seed_from_catalogue(catalogue, RA0, DEC0, 0.6)
    assert set(written).isdisjoint(full) and written
    assert all(client.cache.tile_path(pix).read_bytes() == before[pix] for pix in full)
    assert all(client.cache.read_tile(pix).coverage.kind == "cone" for pix in written)
    # A partly covered tile is fetched online (upgraded to full) when a cone leaves the seed.
    hits = fake.hits["vizier"]
    client.cone(RA0, DEC0, 0.65)
    assert fake.hits["vizier"] > hits
    assert all(client.cache.read_tile(p).coverage.is_full for p in written)


# -- parsing ---------------------------------------------------------------------------------


def test_vizier_answer_without_the_table_is_empty_and_errors_raise():
    head = b'<?xml version="1.0"?>\n<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">'
    empty = parse_vizier_votable(head + b'<INFO name="matches" value="0"/></VOTABLE>')
    assert len(empty) == 0 and empty.colnames == list(GAIA_COLUMNS)
    error = b'<INFO name="QUERY_STATUS" value="ERROR">boom</INFO></VOTABLE>'
    with pytest.raises(GaiaAnswerError, match="service error"):
        parse_vizier_votable(head + error)
    with pytest.raises(GaiaAnswerError, match="not a VOTable"):
        parse_vizier_votable(b"<html>Service unavailable</html>")


def test_bad_cones_are_rejected(tmp_path):
    client = GaiaClient(tmp_path, online=False)
    for args in ((10.0, 95.0, 0.1), (10.0, 0.0, 0.0), (np.nan, 0.0, 0.1), (0.0, 0.0, 50.0)):
        with pytest.raises(ValueError):
            client.cone(*args)


def test_shared_breaker_file(tmp_path, caplog):
    """The file-backed circuit breaker (`sources.http`): shared trips, expiry, bad files."""
    from viskom.sources.http import CircuitBreaker

    shared = tmp_path / "unreachable.json"
    a = CircuitBreaker(shared_file=shared, shared_cooldown_s=600.0)
    b = CircuitBreaker(shared_file=shared, shared_cooldown_s=600.0)
    assert b.reason("ncei") is None
    a.trip("ncei", "HTTP 503")
    assert "HTTP 503" in b.reason("ncei") and "ncei" in b.open
    assert CircuitBreaker(shared_file=shared, shared_cooldown_s=0.0).reason("ncei") is None
    assert a.reason("ncei") == "HTTP 503"  # its own memory, not the file
    shared.write_text("{not json")
    assert CircuitBreaker(shared_file=shared).open == {}
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    c = CircuitBreaker(shared_file=blocked / "unreachable.json")
    with caplog.at_level(logging.WARNING):
        c.trip("vizier", "timeout")
    assert c.reason("vizier") == "timeout" and "cannot record" in caplog.text
