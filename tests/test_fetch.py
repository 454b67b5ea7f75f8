"""`viskom fetch` against a local EAS-like archive: the metadata query, the downloads with
HTTP Basic credentials from the environment, the registration of what arrived."""

from __future__ import annotations

import gzip
import os
from datetime import UTC, datetime
from urllib.parse import unquote

import pytest
from typer.testing import CliRunner

import archive_server
from viskom.cli import app
from viskom.config import load_settings, write_default_config
from viskom.sources.archive.eas import ArchiveAnswerError, parse_listing, query_url
from viskom.sources.simulator import SimConfig, simulate_frame
from viskom.store import Store

archive = archive_server.archive
T0 = datetime(2024, 7, 17, 3, 0, 0, tzinfo=UTC)
HEADER = '"Header.ProductId.LimitedString","Data.InputRawFiles.RawFile"\n'


@pytest.fixture
def served(archive, tmp_path_factory, monkeypatch):
    """Two small frames in the archive, listed (one twice) by its metadata service."""
    out = tmp_path_factory.mktemp("eas")
    rows = []
    names = []
    for i in range(2):
        path = simulate_frame(out, "bias", seed=60 + i, date_obs=T0.replace(minute=i),
                              config=SimConfig(geometry="small")).path  # fmt: skip
        name = path.name + ".gz"
        archive.add_file(name, gzip.compress(path.read_bytes(), compresslevel=1))
        product = path.name.removesuffix(".fits") + "_EUCLIDSOC"
        rows.append(f'"{product}","{i:04d}.bin"\n')
        names.append(name)
    archive.query_csv = HEADER + "".join(rows) + rows[0]
    archive.require_auth = ("vis", "n0t-printed")
    for key in list(os.environ):
        if key.startswith("VISKOM_") and not key.startswith(("VISKOM_TEST_", "VISKOM_REQUIRE_")):
            monkeypatch.delenv(key)
    cfg = write_default_config(tmp_path_factory.mktemp("proj") / "p")
    monkeypatch.setenv("VISKOM_ARCHIVE__KIND", "eas")
    monkeypatch.setenv("VISKOM_ARCHIVE__METADATA_URL", archive.url + "/REST")
    monkeypatch.setenv("VISKOM_ARCHIVE__FILES_URL", archive.url + "/files")
    monkeypatch.setenv("VISKOM_ARCHIVE__MIN_FREE_GB", "0")
    monkeypatch.setenv("HOME", str(out))  # no ~/.netrc of this machine
    return cfg, names


def test_fetch_lists_downloads_and_registers(served, archive, monkeypatch) -> None:
    cfg, names = served
    monkeypatch.setenv("EUCLID_ARCHIVE_USER", "vis")
    monkeypatch.setenv("EUCLID_ARCHIVE_PASSWORD", "n0t-printed")
    runner = CliRunner()
    args = ["fetch", "--config", str(cfg), "--start", "2024-07-01", "--end", "2024-07-20"]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "listed 2 frame(s)" in done.output and "2 new" in done.output
    assert "n0t-printed" not in done.output
    query = unquote(next(p for _m, p, _h in archive.requests if p.startswith("/REST")))
    assert "class_name=DpdVisRawFrame" in query and "Header.CreationDate>dt(2024,7,1)" in query
    assert "Header.CreationDate<dt(2024,7,20)" in query
    settings = load_settings(cfg)
    assert sorted(p.name for p in settings.raw_path.iterdir()) == sorted(names)
    with Store(settings.db_url) as store:
        assert len(store.list_exposures(state="registered")) == 2
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "2 already here" in again.output


def test_refused_credentials_are_said_once_and_not_shown(served) -> None:
    cfg, _names = served
    os.environ.pop("EUCLID_ARCHIVE_USER", None)
    done = CliRunner().invoke(app, ["fetch", "--config", str(cfg), "--start", "2024-07-01"])
    assert done.exit_code == 2 and "refused the credentials" in done.output
    assert "n0t-printed" not in done.output


def test_no_archive_configured(tmp_path, monkeypatch) -> None:
    for key in list(os.environ):
        if key.startswith("VISKOM_") and not key.startswith(("VISKOM_TEST_", "VISKOM_REQUIRE_")):
            monkeypatch.delenv(key)
    cfg = write_default_config(tmp_path / "p")
    done = CliRunner().invoke(app, ["fetch", "--config", str(cfg)])
    assert done.exit_code == 2 and "no archive configured" in done.output


def test_listing_parsing() -> None:
    files = parse_listing(HEADER + '"EUC_LE1_VIS-1_EUCLIDSOC","a.bin"\n', "https://h/")
    assert [(f.name, f.url) for f in files] == [
        ("EUC_LE1_VIS-1.fits.gz", "https://h/EUC_LE1_VIS-1.fits.gz")
    ]
    with pytest.raises(ArchiveAnswerError, match="not the archive's CSV"):
        parse_listing("<html>maintenance</html>", "https://h")
    url = query_url("https://eas/REST", T0, T0.replace(day=20))
    assert url.startswith("https://eas/REST?class_name=DpdVisRawFrame&")
    assert "Header.ManualValidationStatus!=INVALID" in url
