"""Settings: discovery order, environment overrides, clear errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from viskom.config import ConfigError, find_config_file, load_settings, write_default_config


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("VISKOM_"):
            monkeypatch.delenv(key)


def test_default_file_is_valid_and_found_from_subfolders(tmp_path, monkeypatch) -> None:
    cfg = write_default_config(tmp_path)
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert find_config_file() == cfg
    s = load_settings()
    assert s.config_file == cfg
    assert s.data_path == tmp_path / "data"
    assert s.db_url == f"sqlite:///{tmp_path / 'data' / 'viskom.db'}"
    assert s.raw_path == tmp_path / "data" / "raw"
    assert s.detector_health.hot_pixel_sigma == 10.0
    with pytest.raises(ConfigError, match="exists already"):
        write_default_config(tmp_path)


def test_explicit_then_env_then_search(tmp_path, monkeypatch) -> None:
    a = write_default_config(tmp_path / "a")
    b = write_default_config(tmp_path / "b")
    monkeypatch.chdir(tmp_path / "a")
    monkeypatch.setenv("VISKOM_CONFIG", str(b))
    assert find_config_file() == b
    assert find_config_file(a) == a


def test_environment_overrides_file(tmp_path, monkeypatch) -> None:
    cfg = tmp_path / "viskom.toml"
    cfg.write_text('workers = 3\ndata_root = "elsewhere"\n[detector_health]\nhot_pixel_sigma = 6\n')
    monkeypatch.setenv("VISKOM_WORKERS", "5")
    monkeypatch.setenv("VISKOM_DETECTOR_HEALTH__HOT_PIXEL_SIGMA", "8")
    s = load_settings(cfg)
    assert s.workers == 5
    assert s.detector_health.hot_pixel_sigma == 8.0
    assert s.data_path == tmp_path / "elsewhere"
    monkeypatch.setenv("VISKOM_DATABASE_URL", "postgresql+psycopg://u@h/db")
    assert load_settings(cfg).db_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    ("text", "env", "needle"),
    [
        ("workers = 0\n", {}, "workers: Input should be greater than or equal to 1"),
        ('executor = "threads"\n', {}, "executor"),
        ("wrokers = 2\n", {}, "wrokers: Extra inputs are not permitted"),
        ("[detector_health]\nhot_pixel_sigma = -1\n", {}, "detector_health.hot_pixel_sigma"),
        ('database_url = "viskom.db"\n', {}, "database_url"),
        ("workers = [\n", {}, "not valid TOML"),
        ("", {"VISKOM_WORKERS": "many"}, "workers"),
    ],
)
def test_invalid_settings_name_the_key(tmp_path, monkeypatch, text, env, needle) -> None:
    cfg = tmp_path / "viskom.toml"
    cfg.write_text(text)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert needle in str(info.value)
    assert str(cfg) in str(info.value)


def test_missing_config_says_what_to_do(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="viskom init"):
        load_settings()
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(Path(tmp_path / "nope.toml"))
