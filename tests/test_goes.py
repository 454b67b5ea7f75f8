"""GOES XRS files: the real GOES-16 one-minute file, and synthetic variants with every pitfall."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from viskom.cli import app
from viskom.sources.goes import GoesFileError, parse_time_units, read_xrs

REAL = Path(__file__).parent / "data" / "goes" / "sci_xrsf-l2-avg1m_g16_d20210101_truncated.nc"
runner = CliRunner()
GOESR_MEANINGS = (
    "good_data eclipse bad_data e_contam_significant e_correction_valid "
    "e_correction_invalid e_correction_interp e_correction_decay"
)


def test_real_goes16_file() -> None:
    s = read_xrs(REAL)
    assert s.satellite == "g16"
    assert len(s.time) == 100
    # seconds since 2000-01-01T12:00:00, leap seconds ignored: 662811600 s -> 22:20 UTC
    assert str(s.time[0]) == "2021-01-01T22:20:00.000"
    assert np.all(np.diff(s.time).astype(int) == 60_000)
    assert s.xrsa_flux[0] == pytest.approx(8.0505780e-09, rel=1e-6)
    # every flag of this file is good_data (XRS-A has e_contam_significant = 4, still good)
    assert np.isfinite(s.xrsa_flux).all() and np.isfinite(s.xrsb_flux).all()


def test_cli_show_csv() -> None:
    result = runner.invoke(app, ["goes", "show", str(REAL)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert list(rows[0]) == ["time", "xrsa_flux", "xrsb_flux"]
    assert len(rows) == 100
    assert rows[0]["time"] == "2021-01-01T22:20:00Z"
    assert float(rows[0]["xrsa_flux"]) == pytest.approx(8.0505780e-09, rel=1e-5)


def _write(path: Path, *, flags, meanings=GOESR_MEANINGS, masks=None, values=None, units=None):
    n = len(flags)
    with h5py.File(path, "w") as fh:
        fh.attrs["platform"] = "g18"
        t = fh.create_dataset("time", data=np.arange(n, dtype=np.float64))
        t.attrs["units"] = units or "seconds since 2000-01-01T12:00:00"
        for band in ("xrsa", "xrsb"):
            flux = np.full(n, 1e-7, dtype=np.float32)
            flux[0] = -9999.0
            v = fh.create_dataset(f"{band}_flux", data=flux)
            v.attrs["_FillValue"] = np.float32(-9999.0)
            v.attrs["valid_min"] = np.float32(1e-9)
            f = fh.create_dataset(f"{band}_flag", data=np.asarray(flags, dtype=np.uint8))
            if meanings is not None:
                f.attrs["flag_meanings"] = meanings
                f.attrs["flag_masks"] = np.asarray(
                    masks if masks is not None else [3, 1, 2, 4, 8, 8, 48, 48], np.uint8
                )
                f.attrs["flag_values"] = np.asarray(
                    values if values is not None else [0, 1, 2, 4, 0, 8, 16, 32], np.uint8
                )
            f.attrs["_FillValue"] = np.uint8(255)
    return path


def test_goes_r_flags_fill_and_epoch(tmp_path) -> None:
    # sample 0 fill; 1 good; 2 eclipse; 3 bad; 4 electron contamination (good); 5 flag fill
    s = read_xrs(_write(tmp_path / "a.nc", flags=[0, 0, 1, 2, 4, 255]))
    good = np.isfinite(s.xrsb_flux)
    assert good.tolist() == [False, True, False, False, True, False]
    assert str(s.time[0]) == "2000-01-01T12:00:00.000" and s.satellite == "g18"


def test_flags_without_good_data_meaning(tmp_path) -> None:
    # a reprocessed GOES 13-15 style flag: bits naming bad or missing data
    path = _write(
        tmp_path / "b.nc",
        flags=[0, 0, 1, 2, 4],
        meanings="data_ok bad_quality missing_data eclipse_period",
        masks=[7, 1, 2, 4],
        values=[0, 1, 2, 4],
        units="seconds since 1970-01-01 00:00:00 UTC",
    )
    s = read_xrs(path)
    assert np.isfinite(s.xrsa_flux).tolist() == [False, True, False, False, True]
    assert str(s.time[1]) == "1970-01-01T00:00:01.000"


def test_bad_files_are_clear_errors(tmp_path) -> None:
    junk = tmp_path / "junk.nc"
    junk.write_text("not netcdf")
    with pytest.raises(GoesFileError, match="not a netCDF-4"):
        read_xrs(junk)
    with h5py.File(tmp_path / "other.nc", "w") as fh:
        fh.create_dataset("time", data=np.zeros(2))
    with pytest.raises(GoesFileError, match="xrsa_flux"):
        read_xrs(tmp_path / "other.nc")
    result = runner.invoke(app, ["goes", "show", str(junk)])
    assert result.exit_code == 2 and "error" in result.output
    with pytest.raises(GoesFileError):
        parse_time_units("days after launch")


XRAYS = b"""[
 {"time_tag": "2024-07-13T03:28:00Z", "satellite": 16, "flux": 1.2e-08, "observed_flux": 1.3e-08,
  "electron_correction": 1e-09, "electron_contaminaton": false, "energy": "0.05-0.4nm"},
 {"time_tag": "2024-07-13T03:28:00Z", "satellite": 16, "flux": 3.4e-07, "observed_flux": 3.4e-07,
  "electron_correction": 0.0, "electron_contaminaton": false, "energy": "0.1-0.8nm"},
 {"time_tag": "2024-07-13T03:29:00Z", "satellite": 16, "flux": null, "energy": "0.05-0.4nm"},
 {"time_tag": "2024-07-13T03:29:00Z", "satellite": 16, "flux": 3.6e-07, "energy": "0.1-0.8nm"},
 {"time_tag": "not a time", "satellite": 16, "flux": 1.0, "energy": "0.1-0.8nm"}
]"""
PROTONS = b"""[
 {"time_tag": "2024-07-13T03:25:00Z", "satellite": 18, "flux": 0.31, "energy": ">=10 MeV"},
 {"time_tag": "2024-07-13T03:25:00Z", "satellite": 18, "flux": 1.2, "energy": ">=1 MeV"},
 {"time_tag": "2024-07-13T03:20:00Z", "satellite": 18, "flux": 0.29, "energy": ">=10 MeV"}
]"""
SOURCES = b'[{"satellite": 19, "instrument": "xrs"}, {"satellite": 18, "instrument": "seiss"}]'


def test_swpc_feeds_parse() -> None:
    from viskom.sources.goes import parse_swpc_protons, parse_swpc_xrays, primary_satellite

    s = parse_swpc_xrays(XRAYS)
    assert [str(t) for t in s.time] == ["2024-07-13T03:28:00.000", "2024-07-13T03:29:00.000"]
    assert s.xrsa_flux[0] == pytest.approx(1.2e-8) and np.isnan(s.xrsa_flux[1])
    assert s.xrsb_flux.tolist() == pytest.approx([3.4e-7, 3.6e-7])
    assert s.satellite == "g16"
    t, f = parse_swpc_protons(PROTONS)
    assert f.tolist() == pytest.approx([0.29, 0.31]) and str(t[0]).startswith("2024-07-13T03:20")
    assert primary_satellite(SOURCES) == 19  # never hard-coded
    with pytest.raises(GoesFileError, match="malformed JSON"):
        parse_swpc_xrays(b'[{"time_tag": ')
    with pytest.raises(GoesFileError, match="JSON array"):
        parse_swpc_xrays(b'{"error": "busy"}')


def test_client_caches_and_works_offline(tmp_path) -> None:
    import http.server
    import threading

    from viskom.sources.goes import GoesClient, GoesUnavailableError

    answers = {"/xrays-7-day.json": (200, XRAYS), "/instrument-sources.json": (200, b"{broken")}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code, body = answers.get(self.path, (404, b"not found"))
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        client = GoesClient(tmp_path / "cache", swpc_base=base, timeout_s=5, retries=1, backoff_s=0)
        got = client.fetch_swpc("xrays-7-day.json")
        assert not got.from_cache and got.content == XRAYS
        # the service now fails: the cached copy is served, and says so
        answers["/xrays-7-day.json"] = (500, b"oops")
        got = client.fetch_swpc("xrays-7-day.json")
        assert got.from_cache and "service failed" in got.note and got.content == XRAYS
        # a malformed answer is never cached
        with pytest.raises(GoesUnavailableError, match=r"instrument-sources\.json"):
            client.fetch_swpc("instrument-sources.json")
        offline = GoesClient(tmp_path / "cache", swpc_base=base, offline=True)
        assert offline.fetch_swpc("xrays-7-day.json").from_cache
        with pytest.raises(GoesUnavailableError, match="not in the cache"):
            offline.fetch_swpc("integral-protons-7-day.json")
    finally:
        server.shutdown()
        server.server_close()
