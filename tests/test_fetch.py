"""`viskom fetch` against a local EAS-like archive: the metadata query, the downloads with
HTTP Basic credentials from the environment, the registration of what arrived."""

from __future__ import annotations

import gzip
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
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
        records = store.fetched_files()
    assert [(r.name, r.archive, r.state) for r in records] == [(n, "eas", "fetched") for n in
                                                               sorted(names)]  # fmt: skip
    for r in records:  # the SHA-256 of the bytes as served, and nothing secret kept
        assert r.sha256 == hashlib.sha256(archive._file(r.name)).hexdigest()
        assert r.size_bytes == len(archive._file(r.name)) and r.fetched_at is not None
        assert "n0t-printed" not in repr(r) and "vis:" not in r.url
    served = {n: archive.bytes_sent(n) for n in names}
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "2 already here" in again.output
    assert {n: archive.bytes_sent(n) for n in names} == served  # nothing asked again
    status = runner.invoke(app, ["status", "--config", str(cfg)])
    assert "fetched from the archive: 2 file(s)" in status.output
    assert "2 registered, 0 measured by every stage" in status.output


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


@pytest.fixture
def public(archive, tmp_path_factory, monkeypatch):
    """ESA's science archive: a TAP job lists two frames, served gzipped under .fits names."""
    out = tmp_path_factory.mktemp("sas")
    names = []
    for i in range(2):
        path = simulate_frame(out, "dark", seed=70 + i, date_obs=T0.replace(minute=10 + i),
                              config=SimConfig(geometry="small")).path  # fmt: skip
        archive.add_file(path.name, gzip.compress(path.read_bytes(), compresslevel=1))
        names.append(path.name)
    archive.tap_rows = [
        {"file_name": n, "observation_id": 2371, "obs_time_utc": f"2024-07-17T03:1{i}:00"}
        for i, n in enumerate([*names, names[0]])
    ]
    for key in list(os.environ):
        if key.startswith("VISKOM_") and not key.startswith(("VISKOM_TEST_", "VISKOM_REQUIRE_")):
            monkeypatch.delenv(key)
    cfg = write_default_config(tmp_path_factory.mktemp("proj") / "p")
    monkeypatch.setenv("VISKOM_ARCHIVE__KIND", "public")
    monkeypatch.setenv("VISKOM_ARCHIVE__PUBLIC_URL", archive.url + "/")
    monkeypatch.setenv("VISKOM_ARCHIVE__MIN_FREE_GB", "0")
    monkeypatch.setenv("VISKOM_ARCHIVE__TIMEOUT_S", "5")
    return cfg, names


def test_public_archive_through_astroquery(public, archive) -> None:
    cfg, names = public
    args = ["fetch", "--config", str(cfg), "--start", "2024-07-17", "--end", "2024-07-18T00:00"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "listed 2 frame(s)" in done.output and "2 new" in done.output
    (query,) = archive.tap_queries  # one asynchronous job, asked for the window
    assert "FROM q1.raw_frame" in query and "instrument_name = 'VIS'" in query
    assert "obs_time_utc >= '2024-07-17T00:00:00'" in query
    assert "obs_time_utc < '2024-07-18T00:00:00'" in query
    posts = [p for m, p, _h in archive.requests if m == "POST"]
    assert posts == ["/tap-server/tap/async"]  # launch_job_async, not the 2000-row sync call
    gets = [unquote(p) for m, p, _h in archive.requests if p.startswith("/sas-dd/data")]
    assert all("RETRIEVAL_TYPE=FILE" in p and "RELEASE=sedm" in p for p in gets)
    settings = load_settings(cfg)
    # a gzip stream served under a .fits name is kept as it was served, named for what it is
    assert sorted(p.name for p in settings.raw_path.iterdir()) == sorted(n + ".gz" for n in names)
    with Store(settings.db_url) as store:
        assert len(store.list_exposures(state="registered")) == 2
        assert {r.name: r.archive for r in store.fetched_files()} == dict.fromkeys(names, "public")
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "2 already here" in again.output


def test_public_archive_failures_are_said(public, archive) -> None:
    cfg, _names = public
    args = ["fetch", "--config", str(cfg), "--start", "2024-07-17", "--end", "2024-07-18"]
    archive.fault("tap", archive_server.Fault("status", status=500))
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2 and "the archive's listing failed" in done.output
    archive.tap_phase = "ERROR"
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2 and "ended ERROR" in done.output
    archive.tap_phase, archive.tap_executing_polls = "COMPLETED", 10_000  # never finishes
    os.environ["VISKOM_ARCHIVE__TIMEOUT_S"] = "0.5"
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2 and "did not finish" in done.output


def test_watch_fetches_every_cycle(served, archive, monkeypatch) -> None:
    from viskom.pipeline.watch import Watcher

    cfg, names = served
    monkeypatch.setenv("EUCLID_ARCHIVE_USER", "vis")
    monkeypatch.setenv("EUCLID_ARCHIVE_PASSWORD", "n0t-printed")
    monkeypatch.setenv("VISKOM_ARCHIVE__DAYS", "100000")  # the window reaches back to 2024
    monkeypatch.setenv("VISKOM_ARCHIVE__RETRIES", "1")
    settings = load_settings(cfg)
    watcher = Watcher(settings, interval_s=1, settle_s=0)
    first = watcher.cycle()
    assert first.ok and first.fetch is not None, first.line()
    assert sorted(first.new) == sorted(n.removesuffix(".fits.gz") for n in names)
    assert "fetched 2 of 2 listed" in first.line() and first.run.summary.stages_failed == 0
    second = watcher.cycle()
    assert "fetched 0 of 2 listed" in second.line() and second.new == []
    archive.fault("query", archive_server.Fault("status", times=2, status=503))  # 2 tries
    third = watcher.cycle()  # the archive is down: said, and the cycle still runs
    assert third.ok and "fetch failed" in third.line() and "503" in third.line()
    # measured and older than move_after_days: moved to the second folder, verified, and
    # the archive's copies are not fetched again (the records follow the files)
    second_folder = cfg.parent / "second-disk"
    monkeypatch.setenv("VISKOM_ARCHIVE__MOVE_TO", str(second_folder))
    args = ["fetch", "--config", str(cfg), "--start", "2024-07-01", "--end", "2024-07-20"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "moved 2 measured raw file(s)" in done.output and "2 already here" in done.output
    settings = load_settings(cfg)
    assert sorted(p.name for p in second_folder.iterdir()) == sorted(names)
    assert not any(settings.raw_path.glob("*.fits.gz"))
    with Store(settings.db_url) as store:
        exposures = store.list_exposures()
        assert all(Path(e.path).parent == second_folder.resolve() for e in exposures)
        assert all(Path(r.path).parent == second_folder.resolve() for r in store.fetched_files())
        for e in exposures:
            assert hashlib.sha256(Path(e.path).read_bytes()).hexdigest() == e.checksum
    rerun = CliRunner().invoke(app, ["run", "--config", str(cfg)])
    assert rerun.exit_code == 0 and "0 stage runs ok" in rerun.output  # nothing to measure anew


def test_a_copy_that_differs_is_not_kept(tmp_path) -> None:
    from viskom.pipeline.housekeeping import copy_verified

    source = tmp_path / "a.fits"
    source.write_bytes(b"x" * 5000)
    good = hashlib.sha256(source.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="differs"):
        copy_verified(source, tmp_path / "second", "0" * 64)
    assert list((tmp_path / "second").iterdir()) == []  # no copy, no temporary left
    assert copy_verified(source, tmp_path / "second", good).read_bytes() == source.read_bytes()
    assert source.exists()  # the original goes only once the store points at the copy


def test_fetched_frames_are_not_hashed_again(served, archive, monkeypatch) -> None:
    """The download's SHA-256 (of the bytes as written) is the registered checksum: ingest
    does not read a just-fetched frame a second time to hash it."""
    import viskom.pipeline.register as register

    cfg, _names = served
    monkeypatch.setenv("EUCLID_ARCHIVE_USER", "vis")
    monkeypatch.setenv("EUCLID_ARCHIVE_PASSWORD", "n0t-printed")

    def no_second_read(path: Path, chunk: int = 1 << 22) -> str:
        raise AssertionError(f"{path} hashed again")

    monkeypatch.setattr(register, "sha256_of", no_second_read)
    args = ["fetch", "--config", str(cfg), "--start", "2024-07-01", "--end", "2024-07-20"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "2 new" in done.output
    settings = load_settings(cfg)
    with Store(settings.db_url) as store:
        exposures = store.list_exposures(state="registered")
    assert len(exposures) == 2
    for e in exposures:
        assert e.checksum == hashlib.sha256(Path(e.path).read_bytes()).hexdigest()


def test_a_known_checksum_of_a_changed_file_is_not_used(tmp_path) -> None:
    """A checksum handed to ingest holds only for the size and mtime it was taken at."""
    from viskom.pipeline.register import KnownChecksum, ingest

    path = simulate_frame(tmp_path / "raw", "bias", seed=64, date_obs=T0,
                          config=SimConfig(geometry="small")).path  # fmt: skip
    st = path.stat()
    true = hashlib.sha256(path.read_bytes()).hexdigest()
    key = str(path.resolve())
    with Store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        ingest(store, [path], checksums={key: KnownChecksum(st.st_size, st.st_mtime_ns, "f" * 64)})
        assert store.list_exposures()[0].checksum == "f" * 64  # trusted: the file is as it was
    with Store(f"sqlite:///{tmp_path / 'b.db'}") as store:
        stale = KnownChecksum(st.st_size, st.st_mtime_ns - 1, "f" * 64)
        ingest(store, [path], checksums={key: stale})
        assert store.list_exposures()[0].checksum == true  # touched since: hashed again
