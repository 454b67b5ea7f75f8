"""The stage contract, the metric registry, the roll-up and the products table.

Every stage declares what it reads, needs and writes; the runner refuses what a stage was
not declared to return, rolls quadrants up by the registry's rules, writes the products and
records each file (path relative to the data root, size, SHA-256) in the products table.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from viskom.cli import app
from viskom.config import Settings, load_settings, render_default_config
from viskom.le1.frame import Le1Frame
from viskom.metrics import METRICS, level_of_unit
from viskom.pipeline.executors import SerialExecutor
from viskom.pipeline.register import ingest
from viskom.pipeline.resources import CALIBRATIONS, EXTERNAL_INPUTS
from viskom.pipeline.runner import run_one, run_pipeline
from viskom.pipeline.stage_io import ContractError, check_metrics, roll_up
from viskom.sources.simulator import SimConfig, simulate_frame
from viskom.stages import STAGES, ExposureInfo, ProductSpec, Stage, StageInputs, StageResult
from viskom.stages.catalogue import Catalogue
from viskom.stages.detector_health import DetectorHealth
from viskom.store import Store

T0 = datetime(2024, 7, 13, 2, 0, 0, tzinfo=UTC)
runner = CliRunner()


# -- declarations ---------------------------------------------------------------------------


def test_every_stage_declares_a_complete_contract() -> None:
    names = [s.name for s in STAGES]
    assert len(set(names)) == len(names)
    for i, stage in enumerate(STAGES):
        earlier = set(names[:i])
        assert set(stage.upstream) <= earlier, f"{stage.name} runs before a stage it reads"
        assert set(stage.needs) <= set(stage.upstream)
        for wanted in stage.inputs:  # the product exists in the declaration of its stage
            producer = STAGES[names.index(wanted.stage)]
            assert producer.product_spec(wanted.kind)
        assert set(stage.calibrations) <= set(CALIBRATIONS)
        assert set(stage.external) <= set(EXTERNAL_INPUTS)
        if stage.config_section is not None:
            section = getattr(Settings(), stage.config_section)
            for key in stage.config_keys or ():
                assert key in type(section).model_fields, (stage.name, key)
        assert stage.frame_types and stage.version
        assert stage.metrics or stage.products, f"{stage.name} declares nothing it makes"


def test_registry_entries_are_consistent() -> None:
    stages = {s.name: s for s in STAGES}
    for m in METRICS.values():
        assert m.stage in stages, m.name
        assert m.frame_types <= stages[m.stage].frame_types | {"UNKNOWN"}, m.name
        assert m.unit is not None and m.description, m.name
        if m.rolled_up:
            assert "quadrant" in m.levels and "fpa" in m.levels, m.name


def test_level_of_unit() -> None:
    assert [level_of_unit(u) for u in ("FPA", "B1212", "3-4", "3-4.E")] == [
        "fpa",
        "block",
        "ccd",
        "quadrant",
    ]


# -- the runner's checks and roll-up ------------------------------------------------------


def test_unregistered_or_foreign_metrics_are_refused() -> None:
    health = DetectorHealth()
    check_metrics(health, [("1-1.E", "read_noise_e", 4.0)])
    with pytest.raises(ContractError, match=r"unregistered metric.*did you mean: read_noise_e"):
        check_metrics(health, [("1-1.E", "read_nose_e", 4.0)])
    with pytest.raises(ContractError, match="registry gives to psf"):
        check_metrics(health, [("FPA", "psf_r2", 2.0)])
    with pytest.raises(ContractError, match="the runner rolls it up"):
        check_metrics(health, [("FPA", "read_noise_e", 4.0)])  # roll-up: quadrants only
    with pytest.raises(ContractError, match="allows ccd, fpa"):
        check_metrics(next(s for s in STAGES if s.name == "psf"), [("1-1.E", "psf_r2", 2.0)])


def test_roll_up_median_and_sum_skip_missing_values() -> None:
    rows = [
        ("1-1.E", "read_noise_e", 4.0),
        ("1-1.F", "read_noise_e", 6.0),
        ("1-1.G", "read_noise_e", math.nan),
        ("2-1.E", "read_noise_e", 5.0),
        ("1-1.E", "hot_pixels", 3.0),
        ("2-1.H", "hot_pixels", 4.0),
        ("1-1.E", "sky_background_adu", 9.0),  # measured per quadrant only: no roll-up
    ]
    out = {(u, m): v for u, m, v in roll_up(rows)}
    assert out[("1-1", "read_noise_e")] == 5.0  # median of 4 and 6 (NaN left out)
    assert out[("2-1", "read_noise_e")] == 5.0
    assert out[("FPA", "read_noise_e")] == 5.0  # median of 4, 6, 5
    assert out[("FPA", "hot_pixels")] == 7.0 and out[("1-1", "hot_pixels")] == 3.0
    assert ("FPA", "sky_background_adu") not in out
    only_nan = {(u, m): v for u, m, v in roll_up([("1-1.E", "read_noise_e", math.nan)])}
    assert math.isnan(only_nan[("FPA", "read_noise_e")])


class _Bogus(Stage):
    """A monitor that writes a metric nobody registered, and a product it did not declare."""

    name = "detector_health"  # borrow a registered name: the metric check is by registry
    version = "1"
    frame_types = frozenset({"SCIENCE"})
    products = (ProductSpec("notes", "json", "a note"),)

    def __init__(self, metrics: list, products: dict) -> None:
        self._metrics, self._products = metrics, products

    def run(self, frame: Le1Frame, inputs: StageInputs, config: Mapping[str, Any]) -> StageResult:
        return StageResult(metrics=list(self._metrics), products=dict(self._products))


def _info(sim: Any, root: Path) -> ExposureInfo:
    return ExposureInfo(0, sim.name, str(sim.path), "SCIENCE", 560.52, str(root / "products"),
                        date_obs=T0.isoformat(), data_root=str(root))  # fmt: skip


@pytest.fixture(scope="module")
def science(tmp_path_factory) -> Any:
    out = tmp_path_factory.mktemp("contract")
    return simulate_frame(out, "science", seed=41, date_obs=T0, config=SimConfig(geometry="small"))


def test_run_one_refuses_what_was_not_declared(science, tmp_path) -> None:
    info = _info(science, tmp_path)
    with Le1Frame(science.path) as frame:
        with pytest.raises(ContractError, match="unregistered metric: unknown metric 'bogus'"):
            run_one(_Bogus([("FPA", "bogus", 1.0)], {}), frame, info, Settings())
        with pytest.raises(ContractError, match="does not declare a product 'extra'"):
            run_one(_Bogus([], {"extra": {"a": 1}}), frame, info, Settings())
        result = run_one(_Bogus([], {"notes": {"a": 1.5}}), frame, info, Settings())
    (written,) = result.written
    path = tmp_path / written.path
    assert written.kind == "notes" and path == info.product("notes", "json")
    assert written.size_bytes == path.stat().st_size
    assert written.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_stage_products_are_replaced_not_left_stale(science, tmp_path) -> None:
    info = _info(science, tmp_path)
    with Le1Frame(science.path) as frame:
        run_one(_Bogus([], {"notes": {"a": 1}}), frame, info, Settings())
        assert info.product("notes", "json").exists()
        run_one(_Bogus([], {}), frame, info, Settings())  # this run writes nothing
    assert not info.product("notes", "json").exists()


# -- the products table through the runner -----------------------------------------------


def test_products_table_records_every_file(science, tmp_path, store_url) -> None:
    settings = Settings(data_root=tmp_path / "data", database_url=store_url)
    stages = (DetectorHealth(), Catalogue())
    with Store(store_url) as store:
        ingest(store, [science.path])
        summary = run_pipeline(store, settings, SerialExecutor(), stages=stages, workers=1)
        assert summary.stages_ok == 2 and summary.stages_failed == 0
        recorded = {(p.exposure, p.stage, p.kind): p for p in store.products()}
        assert set(recorded) == {(science.name, "catalogue", "catalogue"),
                                 (science.name, "catalogue", "sky"),
                                 (science.name, "detector_health", "health")}  # fmt: skip
        product = recorded[(science.name, "catalogue", "catalogue")]
        path = settings.data_path / product.path
        assert not Path(product.path).is_absolute() and path.is_file()
        assert product.size_bytes == path.stat().st_size
        assert product.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        # Forced again: the row is replaced, not added.
        run_pipeline(store, settings, SerialExecutor(), stages=stages, workers=1, force=True)
        assert len(store.products()) == 3
        assert [p.kind for p in store.products(stages=["detector_health"])] == ["health"]
        # rolled up by the runner: CCD and FPA medians of the quadrants
        rows = store.metrics(metrics=["read_noise_adu"])
        quads = [r.value for r in rows if "." in r.unit]
        fpa = [r.value for r in rows if r.unit == "FPA"]
        assert fpa == [pytest.approx(float(np.median(quads)))]
        # The raw file goes: the stages fail without running, and leave no older file behind.
        frame = Path(science.path)
        hidden = frame.with_name(frame.name + ".hidden")
        frame.rename(hidden)
        try:
            summary = run_pipeline(
                store, settings, SerialExecutor(), stages=stages, workers=1, force=True
            )
        finally:
            hidden.rename(frame)
        assert summary.stages_failed == 2 and "cannot open frame" in summary.failures[0][2]
        assert not path.exists() and store.products() == []


# -- one source of defaults -----------------------------------------------------------------


def test_the_written_template_is_the_settings_model(tmp_path, monkeypatch) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("VISKOM_")]:
        monkeypatch.delenv(key)
    text = render_default_config()
    (tmp_path / "viskom.toml").write_text(text)
    loaded = load_settings(tmp_path / "viskom.toml")
    defaults = Settings(config_file=tmp_path / "viskom.toml")
    assert loaded.model_dump() == defaults.model_dump()
    for name, field in Settings.model_fields.items():
        if name == "config_file":
            continue
        assert f"{name} =" in text or f"[{name}]" in text, name
        sub = getattr(field.annotation, "model_fields", {})
        for key in sub:
            assert f"\n{key} =" in text or f"# {key} =" in text, (name, key)
    assert "online = false" in text  # as the model says (the old template said true)


# -- the CLI says what it knows ---------------------------------------------------------------


def test_cli_unknown_names_list_the_close_ones(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["init", "."]).exit_code == 0
    result = runner.invoke(app, ["metrics", "--metric", "read_nose_e"])
    assert result.exit_code == 2 and "did you mean: read_noise_e" in result.output
    result = runner.invoke(app, ["metrics", "--unit", "3-4.Z"])
    assert result.exit_code == 2 and "unknown unit '3-4.Z'" in result.output
    assert "3-4.E" in result.output
    result = runner.invoke(app, ["metrics", "--exposure", "EUC_NOPE"])
    assert result.exit_code == 2 and "unknown exposure 'EUC_NOPE'" in result.output
    result = runner.invoke(app, ["metrics", "--format", "xml"])
    assert result.exit_code != 0 and "csv, json, table" in result.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("viskom ")


def test_metrics_list_comes_from_the_registry() -> None:
    result = runner.invoke(app, ["metrics", "--list", "--format", "csv"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("metric,unit,stage,aggregation")
    assert len(lines) == 1 + len(METRICS)
    assert any(line.startswith("read_noise_e,e-,detector_health,median") for line in lines)


def test_measurement_defaults_agree_with_the_settings() -> None:
    """The measure/ parameter dataclasses (usable without settings) and the settings sections
    share defaults; a key in both must have the same default."""
    from dataclasses import asdict

    from viskom.measure.cosmics import HitParams
    from viskom.measure.detector import DetectorHealthParams

    settings = Settings()
    for params, section in ((DetectorHealthParams, settings.detector_health),
                            (HitParams, settings.events)):  # fmt: skip
        defaults, configured = asdict(params()), section.model_dump()
        shared = set(defaults) & set(configured)
        assert shared, params.__name__
        assert {k: defaults[k] for k in shared} == {k: configured[k] for k in shared}


def test_metrics_page_is_generated_from_the_registry() -> None:
    from viskom.metrics import markdown_table

    page = Path(__file__).resolve().parents[1] / "docs" / "METRICS.md"
    assert page.read_text() == markdown_table(), (
        "docs/METRICS.md is out of date: python -c 'from viskom.metrics import markdown_table; "
        'open("docs/METRICS.md", "w").write(markdown_table())\''
    )


def test_readme_names_only_registered_metrics() -> None:
    """Every metric-like name the README quotes (`read_noise_e`, `cr_hits`...) is registered."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    prefixes = ("bias_", "read_noise", "image_", "hot_pixels", "saturated_", "dark_current",
                "flat_", "ci_", "n_", "psf_", "iq_score", "cr_", "xray_", "proton_", "cat_",
                "goes_", "astrom_", "gaia_aperture", "gaia_colour", "vis_over_gaia")  # fmt: skip
    quoted = set(re.findall(r"`([a-z][a-z0-9_]+)`", readme))
    inputs = set(CALIBRATIONS) | set(EXTERNAL_INPUTS)  # also quoted, not metrics
    named = {q for q in quoted if q.startswith(prefixes)} - inputs
    assert len(named) > 40
    assert named <= set(METRICS), sorted(named - set(METRICS))
