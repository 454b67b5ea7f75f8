"""GOES from NCEI's daily archive: a fake NCEI tree on a local HTTP server, never the internet."""

from __future__ import annotations

import csv
import http.server
import io
import os
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from viskom.cli import app
from viskom.sources.goes import (
    GoesClient,
    GoesFileError,
    GoesUnavailableError,
    days_covering,
    ncei_filename,
    parse_index_names,
    read_sgps,
    read_xrs,
    swpc_proton_series,
)
from viskom.sources.simulator.goes_files import write_sgps_netcdf, write_xrs_netcdf

runner = CliRunner()
DAY = date(2024, 7, 13)
XRS = "xrsf-l2-avg1m_science"
SGPS = "sgps-l2-avg5m"


def _minutes(day: date, step_s: int = 60) -> np.ndarray:
    start = np.datetime64(day.isoformat(), "ms")
    return start + np.arange(0, 86400, step_s).astype("timedelta64[s]")


def _xrs_bytes(tmp_path: Path, day: date, xrsb: float, satellite: str = "g16", **kw) -> bytes:
    t = _minutes(day, 1 if kw.get("product") == "flx1s" else 60)
    path = write_xrs_netcdf(
        tmp_path / f"w{time.monotonic_ns()}.nc",
        t,
        np.full(t.size, 1e-8),
        np.full(t.size, xrsb),
        satellite,
        **kw,
    )
    return path.read_bytes()


class FakeNcei:
    """NCEI-like tree: folders answer an Apache index of the files below them, else 404."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.slow: dict[str, float] = {}  # path prefix -> seconds to wait before answering
        self.status: dict[str, int] = {}  # path prefix -> HTTP error to answer
        self.requests: list[str] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests.append(self.path)
                for prefix, delay in fake.slow.items():
                    if self.path.startswith(prefix):
                        time.sleep(delay)
                try:
                    code, body = fake.answer(self.path)
                    self.send_response(code)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, path: str) -> tuple[int, bytes]:
        for prefix, code in self.status.items():
            if path.startswith(prefix):
                return code, b"<html><body>Service Unavailable</body></html>"
        if path in self.files:
            return 200, self.files[path]
        if path.endswith("/"):
            names = sorted(p[len(path) :] for p in self.files if p.startswith(path))
            if names:
                links = "\n".join(
                    f'<tr><td><a href="{n}">{n}</a></td><td>2024-07-15 03:12</td><td>1.2M</td></tr>'
                    for n in names
                )
                html = (
                    "<html><head><title>Index of " + path + "</title></head><body>"
                    '<a href="?C=N;O=D">Name</a> <a href="?C=M;O=A">Last modified</a>'
                    '<a href="/platforms/solar-space-observing-satellites/">Parent Directory</a>'
                    f"<table>{links}</table></body></html>"
                )
                return 200, html.encode()
        return 404, b"<html><body>404 Not Found</body></html>"

    def put(self, product_folder: str, sat: int, day: date, version: str, body: bytes) -> str:
        name = ncei_filename(product_folder.split("_")[0], sat, day, version)
        folder = f"/goes{sat:02d}/l2/data/{product_folder}/{day:%Y}/{day:%m}/"
        self.files[folder + name] = body
        return name

    def client(self, cache: Path, **kw) -> GoesClient:
        kw.setdefault("timeout_s", 5)
        kw.setdefault("retries", 1)
        kw.setdefault("backoff_s", 0)
        return GoesClient(
            cache, archive_bases=[(1, 99, self.base + "goes{sat:02d}/l2/data/")], **kw
        )


@pytest.fixture
def ncei():
    fake = FakeNcei()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_highest_version_is_chosen_cached_and_never_fetched_again(ncei, tmp_path) -> None:
    ncei.put(XRS, 16, DAY, "2-9-0", _xrs_bytes(tmp_path, DAY, 1e-7))
    newest = ncei.put(XRS, 16, DAY, "2-10-0", _xrs_bytes(tmp_path, DAY, 2e-7))  # 10 > 9
    ncei.put(XRS, 16, DAY + timedelta(days=1), "3-0-0", _xrs_bytes(tmp_path, DAY, 9e-7))
    client = ncei.client(tmp_path / "cache")
    s = client.xrs_day(DAY, satellite=16)
    assert s.satellite == "g16" and s.source == newest
    assert np.allclose(s.xrsb_flux, 2e-7) and len(s.time) == 1440
    assert str(s.time[0]) == "2024-07-13T00:00:00.000"
    cached = tmp_path / "cache" / "ncei" / "xrsf-l2-avg1m" / "g16" / "2024" / "07" / newest
    assert cached.is_file() and client.cache_path_for("avg1m", 16, DAY, newest) == cached
    assert [p.name for p in cached.parent.iterdir()] == [newest]  # no temporary file left
    assert len(ncei.requests) == 2  # the month folder, then the file
    # a new client on the same cache: no network at all, by satellite or by preference
    again = ncei.client(tmp_path / "cache")
    assert np.allclose(again.xrs_day(DAY).xrsb_flux, 2e-7)
    assert np.allclose(again.xrs_day(DAY, satellite="g16").xrsb_flux, 2e-7)
    assert len(ncei.requests) == 2
    assert again.cached_days("avg1m") == [DAY] and again.cached_days("sgps") == []


def test_a_day_missing_for_one_satellite_comes_from_the_next(ncei, tmp_path) -> None:
    aug1, jul20 = date(2024, 8, 1), date(2024, 7, 20)
    # GOES-16: no 2024/08 folder at all (404), and 2024/07 without the 20th
    ncei.put(XRS, 16, DAY, "2-2-0", _xrs_bytes(tmp_path, DAY, 1e-7))
    ncei.put(XRS, 18, aug1, "2-2-0", _xrs_bytes(tmp_path, aug1, 3e-7, "g18"))
    ncei.put(XRS, 18, jul20, "2-2-0", _xrs_bytes(tmp_path, jul20, 4e-7, "g18"))
    client = ncei.client(tmp_path / "cache")
    assert client.preferred_satellites(aug1) == (16, 18, 17)
    s = client.xrs_day(aug1)
    assert s.satellite == "g18" and np.allclose(s.xrsb_flux, 3e-7)
    assert client.xrs_day(jul20).satellite == "g18"
    n = len(ncei.requests)
    assert ncei.client(tmp_path / "cache").xrs_day(aug1).satellite == "g18"
    assert len(ncei.requests) == n  # cached for g18: GOES-16 is not asked again
    with pytest.raises(GoesUnavailableError, match=r"2024-08-02 .*g16: not in the archive.*g17"):
        client.xrs_day(date(2024, 8, 2))
    # never hard-coded: GOES-19 first from 2025-04-07
    assert client.preferred_satellites(date(2025, 4, 7))[0] == 19
    assert client.preferred_satellites(date(2025, 4, 6))[0] == 16
    assert client.preferred_satellites(date(2015, 6, 1))[0] == 15


def test_a_broken_download_is_never_cached(ncei, tmp_path) -> None:
    good = _xrs_bytes(tmp_path, DAY, 1e-7)
    name = ncei.put(XRS, 16, DAY, "2-2-0", good[: len(good) // 3])  # truncated file
    client = ncei.client(tmp_path / "cache")
    with pytest.raises(GoesUnavailableError, match=r"g16: downloaded file unusable, not cached"):
        client.xrs_day(DAY, satellite=16)
    folder = client.cache_path_for("avg1m", 16, DAY, name).parent
    assert not folder.exists() or list(folder.iterdir()) == []
    assert client.cached_days("avg1m") == []
    n = len(ncei.requests)
    with pytest.raises(GoesUnavailableError, match="unusable"):
        client.xrs_day(DAY, satellite=16)  # not cached: asked again
    assert len(ncei.requests) > n
    # by preference, the next satellite stands in
    ncei.put(XRS, 18, DAY, "2-2-0", _xrs_bytes(tmp_path, DAY, 5e-7, "g18"))
    assert client.xrs_day(DAY).satellite == "g18"


def test_timeouts_then_the_circuit_breaker(ncei, tmp_path) -> None:
    ncei.slow["/goes16/"] = 1.5
    cache = tmp_path / "cache"
    prefilled = DAY - timedelta(days=1)
    client = ncei.client(cache, timeout_s=0.25, retries=1, backoff_s=0)
    write_xrs_netcdf(
        client.cache_path_for(
            "avg1m", 16, prefilled, ncei_filename("avg1m", 16, prefilled, "2-2-0")
        ),
        _minutes(prefilled),
        np.full(1440, 1e-8),
        np.full(1440, 6e-7),
        "g16",
    )
    t0 = time.monotonic()
    with pytest.raises(GoesUnavailableError, match=r"g16: service unreachable .*Timeout"):
        client.xrs_day(DAY, satellite=16)
    assert time.monotonic() - t0 < 1.2 and len(ncei.requests) == 2  # two attempts, then gave up
    # the breaker: no more waiting for the network, straight to the cache or a clear error
    t0 = time.monotonic()
    with pytest.raises(GoesUnavailableError, match=r"unreachable earlier, not tried again"):
        client.xrs_day(DAY + timedelta(days=1), satellite=16)
    assert np.allclose(client.xrs_day(prefilled, satellite=16).xrsb_flux, 6e-7)
    series, missing = client.xrs_range(datetime(2024, 7, 12), datetime(2024, 7, 14))
    assert len(series.time) == 1440 and len(missing) == 1 and "unreachable" in missing[0]
    assert time.monotonic() - t0 < 0.5 and len(ncei.requests) == 2


def test_server_errors_trip_the_breaker_and_a_broken_cached_file_is_replaced(
    ncei, tmp_path
) -> None:
    ncei.status["/goes16/"] = 503
    client = ncei.client(tmp_path / "cache", retries=2)
    with pytest.raises(GoesUnavailableError, match=r"g16: service unreachable \(HTTP 503"):
        client.xrs_day(DAY, satellite=16)
    assert len(ncei.requests) == 3  # retried, then given up
    with pytest.raises(GoesUnavailableError, match="not tried again"):
        client.xrs_day(DAY, satellite=16)
    assert len(ncei.requests) == 3
    # another client; the service is back; a broken copy in the cache is not used
    del ncei.status["/goes16/"]
    name = ncei.put(XRS, 16, DAY, "2-2-0", _xrs_bytes(tmp_path, DAY, 7e-7))
    broken = ncei.client(tmp_path / "cache").cache_path_for("avg1m", 16, DAY, name)
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"half a file")
    s = ncei.client(tmp_path / "cache").xrs_day(DAY, satellite=16)
    assert np.allclose(s.xrsb_flux, 7e-7) and read_xrs(broken).satellite == "g16"


def test_offline_works_from_the_cache_and_names_the_missing_days(ncei, tmp_path) -> None:
    cache = tmp_path / "cache"
    client = ncei.client(cache, offline=True)
    path = client.cache_path_for("avg1m", 18, DAY, ncei_filename("avg1m", "g18", DAY, "v2-2-0"))
    write_xrs_netcdf(path, _minutes(DAY), np.full(1440, 1e-8), np.full(1440, 2e-6), "g18")
    series, missing = client.xrs_range(datetime(2024, 7, 12, 12), datetime(2024, 7, 14, 6))
    assert len(series.time) == 1440 and series.satellite == "g18"
    assert str(series.time[0]) == "2024-07-13T00:00:00.000"
    assert len(missing) == 2
    assert "missing for 2024-07-12 (offline, not cached: g16, g18, g17" in missing[0]
    assert "2024-07-14" in missing[1] and "XRS avg1m" in missing[1]
    with pytest.raises(GoesUnavailableError, match=r"SGPS protons avg5m missing for 2024-07-13 "):
        client.protons_day(DAY, satellite=18)
    with pytest.raises(GoesUnavailableError, match=r"offline, not cached: g16;"):
        client.xrs_day(DAY, satellite=16)
    assert ncei.requests == []


def test_xrs_range_across_a_day_boundary(ncei, tmp_path) -> None:
    nxt = DAY + timedelta(days=1)
    ncei.put(XRS, 16, DAY, "2-2-0", _xrs_bytes(tmp_path, DAY, 1e-7))
    ncei.put(XRS, 16, nxt, "2-2-0", _xrs_bytes(tmp_path, nxt, 2e-7))
    client = ncei.client(tmp_path / "cache")
    start = datetime(2024, 7, 13, 23, 0, tzinfo=UTC)
    series, missing = client.xrs_range(start, start + timedelta(hours=2))
    assert missing == [] and len(series.time) == 120
    assert str(series.time[0]) == "2024-07-13T23:00:00.000"
    assert str(series.time[-1]) == "2024-07-14T00:59:00.000"
    assert np.all(np.diff(series.time).astype(int) == 60_000)
    assert np.allclose(series.xrsb_flux[:60], 1e-7) and np.allclose(series.xrsb_flux[60:], 2e-7)
    assert days_covering(start, start + timedelta(hours=1)) == [DAY]  # the end is excluded
    with pytest.raises(ValueError, match="not after"):
        client.xrs_range(start, start)


def test_a_growing_day_is_fetched_again_only_after_an_hour(ncei, tmp_path) -> None:
    today = datetime.now(UTC).date()
    client = ncei.client(tmp_path / "cache")
    old = client.cache_path_for("avg1m", 16, today, ncei_filename("avg1m", 16, today, "1-0-0"))
    write_xrs_netcdf(old, _minutes(today)[:60], np.full(60, 1e-8), np.full(60, 1e-7), "g16")
    ncei.put(XRS, 16, today, "1-0-0", _xrs_bytes(tmp_path, today, 3e-7))
    assert np.allclose(client.xrs_day(today, 16).xrsb_flux, 1e-7)  # fresh: the cached copy
    assert ncei.requests == []
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    s = client.xrs_day(today, 16)
    assert len(s.time) == 1440 and np.allclose(s.xrsb_flux, 3e-7) and len(ncei.requests) == 2
    # a past day fetched after it ended is final, however old the copy
    past = date(2024, 1, 2)
    p = client.cache_path_for("avg1m", 16, past, ncei_filename("avg1m", 16, past, "1-0-0"))
    write_xrs_netcdf(p, _minutes(past)[:5], np.full(5, 1e-8), np.full(5, 1e-7), "g16")
    last_year = datetime(2024, 3, 1, tzinfo=UTC).timestamp()
    os.utime(p, (last_year, last_year))
    assert len(client.xrs_day(past, 16).time) == 5 and len(ncei.requests) == 2


def test_one_second_product_and_reprocessed_goes15_through_their_urls(ncei, tmp_path) -> None:
    ncei.put(
        "xrsf-l2-flx1s_science", 16, DAY, "2-2-0", _xrs_bytes(tmp_path, DAY, 1e-7, product="flx1s")
    )
    client = ncei.client(tmp_path / "cache")
    s = client.xrs_day(DAY, 16, product="flx1s")
    assert len(s.time) == 86400 and np.all(np.diff(s.time).astype(int) == 1000)
    assert client.cached_days("flx1s") == [DAY] and client.cached_days("avg1m") == []
    assert read_xrs(client.cached_file("flx1s", 16, DAY)).source.startswith("sci_xrsf-l2-flx1s")
    # GOES 13-15: another base URL (configurable per satellite range), other flag meanings
    day15 = date(2016, 3, 1)
    g15 = read_xrs(_goes15_style(tmp_path / "g15.nc", day15))
    assert g15.satellite == "g15" and str(g15.time[1]) == "2016-03-01T00:01:00.000"
    body = (tmp_path / "g15.nc").read_bytes()
    ncei.files[f"/reprocessed/goes15/{XRS}/2016/03/{ncei_filename('avg1m', 15, day15)}"] = body
    bases = [
        (16, 99, ncei.base + "goes{sat:02d}/l2/data/"),
        (1, 15, ncei.base + "reprocessed/goes{sat}/"),
    ]
    client = GoesClient(tmp_path / "cache", archive_bases=bases, retries=0, backoff_s=0)
    s = client.xrs_day(day15)  # preference before 2017: 15, 13, 14
    assert s.satellite == "g15"
    assert np.isfinite(s.xrsb_flux).tolist() == [True, False, False, False, True]
    assert client.archive_folder_url("avg1m", 18, DAY).endswith(f"/goes18/l2/data/{XRS}/2024/07/")


def _goes15_style(path: Path, day: date) -> Path:
    """A reprocessed GOES-15 avg1m file as NOAA writes it (v1-0-0): one-element array attributes,
    uint16 flags whose good_data is flag & 7 == 0, electron-correction bits that are not bad,
    epoch 2000-01-01 12:00; written with plain h5py (no dimension scales)."""
    epoch = datetime(2000, 1, 1, 12, tzinfo=UTC)
    start = (datetime(day.year, day.month, day.day, tzinfo=UTC) - epoch).total_seconds()
    with h5py.File(path, "w") as fh:
        fh.attrs["platform"] = np.bytes_(b"g15")
        t = fh.create_dataset("time", data=start + 60.0 * np.arange(5))
        t.attrs["units"] = np.bytes_(b"seconds since 2000-01-01 12:00:00")
        t.attrs["_FillValue"] = np.array([-9999.0])
        for band in ("xrsa", "xrsb"):
            v = fh.create_dataset(f"{band}_flux", data=np.full(5, 2e-7, np.float32))
            v.attrs["_FillValue"] = np.array([-9999.0], np.float32)
            v.attrs["valid_min"] = np.array([1e-9], np.float32)
            v.attrs["valid_max"] = np.array([0.2], np.float32)
            # good, bad_data, eclipsed_by_earth, temperature_recovery, electron_correction_invalid
            f = fh.create_dataset(f"{band}_flag", data=np.array([0, 1, 2, 4, 16], np.uint16))
            f.attrs["_FillValue"] = np.array([255], np.uint16)
            f.attrs["flag_meanings"] = np.bytes_(
                b"good_data bad_data eclipsed_by_earth temperature_recovery "
                b"electron_correction_valid electron_correction_invalid "
                b"electron_correction_interp electron_correction_decay"
            )
            f.attrs["flag_masks"] = np.array([7, 1, 2, 4, 120, 120, 120, 120], np.uint16)
            f.attrs["flag_values"] = np.array([0, 1, 2, 4, 8, 16, 32, 64], np.uint16)
            x = fh.create_dataset(f"{band}_flag_excluded", data=np.full(5, 64, np.uint16))
            x.attrs["_FillValue"] = np.array([65535], np.uint16)
            num = fh.create_dataset(f"{band}_num", data=np.full(5, 30, np.uint8))
            num.attrs["_FillValue"] = np.array([255], np.uint8)
    return path


def _sgps_by_hand(path: Path, *, time_name: str = "time") -> Path:
    """Three channels (5-8, 8-12, 12-20 MeV), two units, three times: the integral by hand."""
    fill = np.float32(-1e31)
    diff = np.array(
        [
            [[9.0, 1.0, 0.5], [9.0, fill, 0.5]],  # unit 1 has a bad channel above 10 MeV
            [[fill, 2.0, 0.5], [9.0, 4.0, 1.0]],  # a bad channel below 10 MeV does not matter
            [[9.0, 2.0, 0.5], [9.0, 2.0, 0.5]],  # unit 0: no valid sample; unit 1: P11 fill
        ],
        dtype=np.float32,
    )
    with h5py.File(path, "w") as fh:
        fh.attrs["platform"] = "g18"
        t = fh.create_dataset(time_name, data=np.array([0.0, 300.0, 600.0]))
        t.attrs["units"] = "seconds since 2000-01-01 12:00:00"
        v = fh.create_dataset("AvgDiffProtonFlux", data=diff)
        v.attrs["_FillValue"] = fill
        v.attrs["units"] = "protons/(cm^2 sr keV s)"
        valid = np.full(diff.shape, 300, np.uint32)
        valid[2, 0, 2] = 0
        fh.create_dataset("DiffValidL1bSamplesInAvg", data=valid)
        for name, kev in (("Lower", [5000, 8000, 12000]), ("Upper", [8000, 12000, 20000])):
            e = fh.create_dataset(f"DiffProton{name}Energy", data=np.array([kev, kev], np.float32))
            e.attrs["units"] = "keV"
        p11 = fh.create_dataset("AvgIntProtonFlux", data=np.array([[1.5, 1.5]] * 2 + [[1.5, fill]]))
        p11.attrs["_FillValue"] = fill
    return path


def test_sgps_integral_by_hand(tmp_path) -> None:
    s = read_sgps(_sgps_by_hand(tmp_path / "a.nc"))
    # t0: unit 0 only: 1.0 * (12000 - 10000) + 0.5 * 8000 + 1.5
    # t1: mean of 2.0 * 2000 + 4000 + 1.5 and 4.0 * 2000 + 8000 + 1.5
    assert s.flux_ge10mev[:2].tolist() == pytest.approx([6001.5, (8001.5 + 16001.5) / 2])
    assert np.isnan(s.flux_ge10mev[2]) and s.satellite == "g18"
    assert str(s.time[1]) == "2000-01-01T12:05:00.000"
    old = read_sgps(_sgps_by_hand(tmp_path / "b.nc", time_name="L2_SciData_TimeStamp"))
    assert old.flux_ge10mev[:2].tolist() == pytest.approx(s.flux_ge10mev[:2].tolist())
    xrs = write_xrs_netcdf(tmp_path / "x.nc", _minutes(DAY)[:3], np.full(3, 1e-8), np.full(3, 1e-7))
    with pytest.raises(GoesFileError, match="AvgDiffProtonFlux"):
        read_sgps(xrs)


def test_sgps_written_and_read_back(ncei, tmp_path) -> None:
    t = _minutes(DAY, 300)
    flux = np.geomspace(0.1, 2e4, t.size)
    flux[[5, 6]] = np.nan
    path = write_sgps_netcdf(tmp_path / "s.nc", t, flux, satellite=18)
    assert path.stat().st_size < 200_000
    s = read_sgps(path)
    assert len(s.time) == 288 and s.satellite == "g18"
    assert np.isnan(s.flux_ge10mev).tolist() == np.isnan(flux).tolist()
    good = np.isfinite(flux)
    assert s.flux_ge10mev[good] == pytest.approx(flux[good], rel=1e-5)
    with h5py.File(path) as fh:
        assert fh["AvgDiffProtonFlux"].shape == (288, 2, 13)
        assert fh["DiffProtonLowerEnergy"].attrs["units"] == "keV"
    # through the client: protons_day, protons_range, cached once
    ncei.put(SGPS, 18, DAY, "3-0-1", path.read_bytes())
    ncei.put(SGPS, 18, DAY, "3-0-0", b"older version, never read")
    client = ncei.client(tmp_path / "cache")
    day = client.protons_day(DAY)  # 16 has no SGPS folder here: 404, then 18
    assert day.satellite == "g18" and day.source.endswith("_v3-0-1.nc")
    series, missing = client.protons_range(datetime(2024, 7, 13, 1), datetime(2024, 7, 13, 2))
    assert missing == [] and len(series.time) == 12
    assert series.flux_ge10mev == pytest.approx(flux[12:24], rel=1e-5)
    assert client.cached_days("sgps") == [DAY]


def test_swpc_protons_as_a_series() -> None:
    text = b"""[
     {"time_tag": "2024-07-13T03:25:00Z", "satellite": 18, "flux": 0.31, "energy": ">=10 MeV"},
     {"time_tag": "2024-07-13T03:25:00Z", "satellite": 18, "flux": 1.2, "energy": ">=1 MeV"},
     {"time_tag": "2024-07-13T03:20:00Z", "satellite": 18, "flux": null, "energy": ">=10 MeV"}
    ]"""
    s = swpc_proton_series(text)
    assert s.satellite == "g18" and s.source == "integral-protons-7-day.json"
    assert str(s.time[0]).startswith("2024-07-13T03:20") and np.isnan(s.flux_ge10mev[0])
    assert s.flux_ge10mev[1] == pytest.approx(0.31)


def test_index_parsing() -> None:
    html = (
        '<a href="?C=N;O=D">Name</a><a href="/platforms/">Parent Directory</a>'
        "<a href='sci_xrsf-l2-avg1m_g16_d20240713_v2-2-0.nc'>x</a>"
        '<a href="https://h/p/sci_xrsf-l2-avg1m_g16_d20240714_v2-2-0.nc">y</a>'
    )
    names = parse_index_names(html)
    assert "sci_xrsf-l2-avg1m_g16_d20240713_v2-2-0.nc" in names
    assert "sci_xrsf-l2-avg1m_g16_d20240714_v2-2-0.nc" in names


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_cli_window_from_a_prefilled_cache(tmp_path) -> None:
    cache = tmp_path / "goes"
    client = GoesClient(cache, offline=True)
    b = np.full(1440, 1e-6)
    b[10] = np.nan
    write_xrs_netcdf(
        client.cache_path_for("avg1m", 16, DAY, ncei_filename("avg1m", 16, DAY, "2-2-0")),
        _minutes(DAY),
        np.full(1440, 1e-8),
        b,
        "g16",
    )
    args = ["goes", "show", "--start", "2024-07-13T00:00", "--end", "2024-07-14T00:00"]
    result = runner.invoke(app, [*args, "--offline", "--cache", str(cache)])
    assert result.exit_code == 0, result.output
    rows = _rows(result.stdout)
    assert list(rows[0]) == ["time", "xrsa_flux", "xrsb_flux"] and len(rows) == 1440
    assert rows[0]["time"] == "2024-07-13T00:00:00Z" and rows[10]["xrsb_flux"] == ""
    assert float(rows[0]["xrsb_flux"]) == pytest.approx(1e-6) and result.stderr == ""
    # half the window is not cached: said on stderr, the rest printed
    args = ["goes", "show", "--start", "2024-07-13T12:00", "--end", "2024-07-14T12:00"]
    result = runner.invoke(app, [*args, "--offline", "--cache", str(cache)])
    assert result.exit_code == 0 and len(_rows(result.stdout)) == 720
    assert "missing for 2024-07-14 (offline, not cached" in result.stderr
    # nothing at all: exit 2
    args = ["goes", "show", "--start", "2024-07-20T00:00", "--end", "2024-07-20T06:00"]
    result = runner.invoke(app, [*args, "--offline", "--cache", str(cache)])
    assert result.exit_code == 2 and "no GOES data" in result.stderr
    # the cache folder from the settings: data_root/goes
    (tmp_path / "viskom.toml").write_text('data_root = "."\n')
    args = ["goes", "show", "--start", "2024-07-13T00:00", "--end", "2024-07-13T01:00"]
    result = runner.invoke(app, [*args, "--offline", "-c", str(tmp_path / "viskom.toml")])
    assert result.exit_code == 0 and len(_rows(result.stdout)) == 60


def test_cli_protons_and_argument_errors(tmp_path) -> None:
    cache = tmp_path / "goes"
    client = GoesClient(cache, offline=True)
    name = ncei_filename("sgps", 18, DAY, "3-0-1")
    flux = np.linspace(1, 288, 288)
    path = write_sgps_netcdf(client.cache_path_for("sgps", 18, DAY, name), _minutes(DAY, 300), flux)
    result = runner.invoke(app, ["goes", "protons", str(path)])
    assert result.exit_code == 0, result.output
    rows = _rows(result.stdout)
    assert list(rows[0]) == ["time", "flux_ge10mev"] and len(rows) == 288
    assert float(rows[3]["flux_ge10mev"]) == pytest.approx(4.0, rel=1e-5)
    args = ["--start", "2024-07-13T00:00", "--end", "2024-07-13T01:00", "--offline"]
    result = runner.invoke(app, ["goes", "protons", *args, "--cache", str(cache)])
    assert result.exit_code == 0 and len(_rows(result.stdout)) == 12
    assert rows[0]["time"] == "2024-07-13T00:00:00Z"
    for argv, message in (
        (["goes", "show", str(path), "--start", "2024-07-13"], "not both"),
        (["goes", "protons"], "give a FILE"),
        (["goes", "show", "--start", "2024-07-13"], "both --start and --end"),
        (["goes", "show", "--start", "2024-07-14", "--end", "2024-07-13"], "not after"),
    ):
        result = runner.invoke(app, [*argv, "--cache", str(cache)])
        assert result.exit_code == 2 and message in result.stderr, (argv, result.output)
    result = runner.invoke(app, ["goes", "show", str(path)])  # an SGPS file is not XRS
    assert result.exit_code == 2 and "xrsa_flux" in result.stderr
