"""The gaia stage on simulated science frames, against the simulator's injected truth.

Truth: the pointing error (pixels; Gaia minus VIS = minus the error), the colour relation
ln(F_VIS/F_G) = c0 + c1 c + c2 c^2 with total VIS fluxes, and the relative quadrant gains.
The simulator's Gaia-like cone stands in for the Gaia cache (seeded, offline).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from viskom.config import Settings
from viskom.le1.frame import Le1Frame
from viskom.pipeline.runner import run_one
from viskom.sources.gaia import GaiaCache, GaiaUnavailable
from viskom.sources.simulator import SimConfig, read_gaia_catalogue, simulate_frame
from viskom.sources.simulator.instrument import write_relative_gains
from viskom.stages import ExposureInfo
from viskom.stages.catalogue import Catalogue
from viskom.stages.gaia import GaiaPhotometry
from viskom.stages.psf import PsfMoments
from viskom.store.products import read_table

T0 = datetime(2024, 7, 13, 5, 0, 0, tzinfo=UTC)
N_FRAMES = 3


def _settings(tmp, gains) -> Settings:
    return Settings(
        data_root=tmp / "data",
        gaia={"online": False, "gains_file": gains, "cache_dir": tmp / "gaia"},
    )


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict:
    """Three small science frames (3 fields, dense stars, short and nominal), all stages run."""
    out = tmp_path_factory.mktemp("gaia")
    cfg = SimConfig(geometry="small", star_density_factor=60.0, pointing_error_pix=3.0)
    gains = write_relative_gains(out / "gains.txt", cfg)
    settings = _settings(out, gains)
    cache = GaiaCache(settings.gaia_cache_path)
    frames = []
    for i in range(N_FRAMES):
        exptime = 89.52 if i == 2 else 560.52
        sim = simulate_frame(
            out,
            "science",
            seed=700 + i,
            date_obs=T0.replace(hour=5 + i),
            exptime=exptime,
            config=cfg,
            obs_id=2700 + i,
            pointing=(56.25 + 3 * i, -55.7 + i, 46.2 + 30 * i),
        )
        truth = json.loads(sim.truth_path.read_text())
        table = read_gaia_catalogue(out / truth["gaia_catalogue"])
        meta = table.meta
        cache.seed_from_catalogue(table, meta["ra0"], meta["dec0"], meta["radius_deg"])
        info = ExposureInfo(
            0, sim.name, str(sim.path), "SCIENCE", exptime, str(settings.products_path),
            date_obs=T0.replace(hour=5 + i).isoformat(),
        )  # fmt: skip
        with Le1Frame(sim.path) as frame:
            run_one(Catalogue(), frame, info, settings)
            run_one(PsfMoments(), frame, info, settings)
            result = run_one(GaiaPhotometry(), frame, info, settings)
        metrics = {(u, m): v for u, m, v in result.metrics}
        frames.append({"sim": sim, "info": info, "truth": truth, "metrics": metrics,
                       "products": result.written})  # fmt: skip
    return {"frames": frames, "settings": settings, "out": out}


def test_offsets_recover_the_injected_pointing_error(measured):
    """Gaia minus VIS = minus the injected error, within 0.1 px (the issue's bound)."""
    for f in measured["frames"]:
        err = f["truth"]["pointing_error_pix"]
        m = f["metrics"]
        assert m[("FPA", "astrom_dx_pix")] == pytest.approx(-err["dx"], abs=0.1)
        assert m[("FPA", "astrom_dy_pix")] == pytest.approx(-err["dy"], abs=0.1)
        assert m[("FPA", "astrom_sigma_pix")] < 0.2  # centroid noise only
        for k in ("astrom_ddx_dx", "astrom_ddy_dx", "astrom_ddx_dy", "astrom_ddy_dy"):
            assert abs(m[("FPA", k)]) < 0.3  # no gradient injected
        assert m[("FPA", "n_matched")] >= 40


def test_zero_point_and_colour_terms(measured):
    """Zero point within 0.5% and colour terms within 0.01 of the injected relation.

    All frames' star tables stacked (a single small frame has ~40 stars with G < 19.5);
    every frame's own fit must also be within 3 standard errors: its intercept c0 (at BP-RP 0,
    extrapolated below the bluest star at ~0.4) has one of 0.009 on a ~95-star frame
    (measured), so 0.03, and VIS/G at the pivot colour 1.75, the trended figure, within 1 %.
    """
    rows = []
    for f in measured["frames"]:
        s = read_table(f["info"].product("gaia_stars", "parquet"))
        rows.append(s)
        p = f["truth"]["photometry"]
        m = f["metrics"]
        assert m[("FPA", "gaia_colour_c0")] == pytest.approx(p["c0"], abs=0.03)
        assert m[("FPA", "gaia_colour_c1")] == pytest.approx(p["c1"], abs=0.05)
        fitted = sum(m[("FPA", f"gaia_colour_c{k}")] * 1.75**k for k in range(3))
        assert np.exp(fitted) == pytest.approx(
            np.exp(p["c0"] + p["c1"] * 1.75 + p["c2"] * 3.0625), rel=0.01
        )
        assert 1.0 < m[("FPA", "gaia_aperture_correction")] < 1.05
    from viskom.measure.gaia import fit_colour_relation

    used = np.concatenate([r["colour_used"] for r in rows])
    c = np.concatenate([r["bp_rp"] for r in rows])[used]
    y = np.concatenate([r["ln_ratio"] for r in rows])[used]
    fit = fit_colour_relation(c, y)
    p = measured["frames"][0]["truth"]["photometry"]
    assert fit.n_fit >= 100
    truth = np.exp(p["c0"] + p["c1"] * 1.75 + p["c2"] * 1.75**2)
    assert fit.ratio_at()[1] == pytest.approx(truth, rel=0.005)
    assert fit.c0 == pytest.approx(p["c0"], abs=0.01)
    assert fit.c1 == pytest.approx(p["c1"], abs=0.01)
    assert fit.c2 == pytest.approx(p["c2"], abs=0.01)


def test_products_and_units(measured):
    f = measured["frames"][0]
    names = {Path(p.path).name for p in f["products"]}
    assert any(n.endswith("_gaia_dxdy.png") for n in names)
    assert any(n.endswith("_gaia_colour.png") for n in names)
    summary = json.loads(f["info"].product("gaia", "json").read_text())
    assert summary["gains_source"].endswith("gains.txt")
    assert len(summary["vis_over_gaia"]) == 3
    units = {u for u, _ in f["metrics"]}
    assert "FPA" in units and any(u.startswith("B") for u in units)
    assert any(len(u) == 3 for u in units) and any(len(u) == 5 for u in units)


def test_offline_without_the_field_says_what_is_missing(measured, tmp_path):
    f = measured["frames"][0]
    settings = Settings(data_root=tmp_path, gaia={"online": False, "cache_dir": tmp_path / "g"})
    with Le1Frame(f["sim"].path) as frame, pytest.raises(GaiaUnavailable, match="tile"):
        run_one(GaiaPhotometry(), frame, f["info"], settings)


def test_missing_pointing_is_a_clear_error(measured, tmp_path):
    f = measured["frames"][0]
    bad = _with_header(f["sim"].path, tmp_path / f["sim"].path.name, RA=None)
    info = ExposureInfo(**{**f["info"].__dict__, "path": str(bad)})
    with Le1Frame(bad) as frame, pytest.raises(ValueError, match="RA, DEC, PA"):
        run_one(GaiaPhotometry(), frame, info, measured["settings"])


def test_gaia_cli_cone_and_seed(measured, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from viskom.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VISKOM_CONFIG", raising=False)
    monkeypatch.setenv("VISKOM_GAIA__CACHE_DIR", str(tmp_path / "cache"))
    runner = CliRunner()
    f = measured["frames"][0]
    gaia_file = measured["out"] / f["truth"]["gaia_catalogue"]
    out = runner.invoke(app, ["gaia", "seed", str(gaia_file), str(tmp_path / "nope.parquet")])
    assert out.exit_code == 2 and "tiles" in out.output and "nope.parquet" in out.output
    ra, dec, _pa = (f["truth"]["pointing"][k] for k in ("ra", "dec", "pa"))
    csv_path = tmp_path / "cone.csv"
    out = runner.invoke(
        app, ["gaia", "cone", "--ra", str(ra), "--dec", str(dec), "--radius", "0.3",
              "--offline", "--epoch", "2024-07-13", "--output", str(csv_path)],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "Gaia DR3 stars within 0.3 deg" in out.output
    assert csv_path.read_text().splitlines()[0].startswith("RA_ICRS,DE_ICRS,Source")
    out = runner.invoke(app, ["gaia", "cone", "--ra", "200", "--dec", "-10", "--offline"])
    assert out.exit_code == 2 and "not in the cache" in out.output


def test_relative_gains_from_the_latest_flat(store, tmp_path):
    """Without a gains table, VISQL's mean(level) / level from the newest measured FLAT."""
    from datetime import timedelta

    from viskom.pipeline.calibration import resolve_relative_gains, update_relative_gains
    from viskom.store.records import ExposureRecord, StageRun

    settings = Settings(data_root=tmp_path)
    assert resolve_relative_gains(settings) == ({}, "none (all 1)")
    path, note = update_relative_gains(store, settings)
    assert path is None and "no measured flat" in note
    levels = [{"1-1.E": 1000.0, "1-1.F": 1100.0, "1-2.E": 900.0, "1-2.F": 1000.0},
              {"1-1.E": 2000.0, "1-1.F": 2000.0, "1-2.E": 2500.0, "1-2.F": 1500.0}]  # fmt: skip
    for i, lv in enumerate(levels):
        exp, _ = store.register_exposure(
            ExposureRecord(
                name=f"flat{i}",
                path=f"/x/flat{i}.fits",
                state="registered",
                frame_type="FLAT",
                date_obs=T0 + timedelta(hours=i),
            )
        )
        run = StageRun(
            exposure_id=exp.id, stage="detector_health", stage_version="1", config_hash="c",
            software_version="0", status="ok", error=None, started_at=T0, duration_s=1.0,
        )  # fmt: skip
        store.record_stage_run(run, [(u, "image_level_adu", v) for u, v in lv.items()])
    path, note = update_relative_gains(store, settings)
    assert "flat1" in note
    gains, source = resolve_relative_gains(settings)
    assert source == str(path)
    assert gains["1-2.E"] == pytest.approx(2000.0 / 2500.0)
    assert gains["1-2.F"] == pytest.approx(2000.0 / 1500.0)
    assert "up to date" in update_relative_gains(store, settings)[1]
    # a configured table wins; a broken one is reported, and the stage refuses to run
    bad = tmp_path / "bad.txt"
    bad.write_text("1-1.E zero\n")
    broken = Settings(data_root=tmp_path, gaia={"gains_file": bad})
    gains, source = resolve_relative_gains(broken)
    assert gains == {} and source.startswith("error:")


def _with_header(src, dst, **cards):
    from astropy.io import fits

    with fits.open(src) as hdul:
        for key, value in cards.items():
            if value is None:
                del hdul[0].header[key]
            else:
                hdul[0].header[key] = value
        hdul.writeto(dst)
    return dst


@pytest.mark.skipif(
    __import__("viskom.sources.astrometry_net", fromlist=["x"]).tools_available() is not None,
    reason="astrometry.net (solve-field, build-astrometry-index) not installed",
)
@pytest.mark.parametrize("pa_card", ["wrong", "missing"])
def test_blind_solve_when_the_header_pointing_fails(measured, tmp_path, pa_card):
    """A PA 25 deg off (or none): the match is no better than chance, astrometry.net solves.

    The small test geometry samples ~1% of the focal plane, too little for quads, so the star
    list is the field's 1500 brightest Gaia stars as the focal plane sees them (true pointing + the
    injected offset + 0.2 px noise); the stage reads only the header from the frame.
    """
    from viskom.measure.gaia import gaia_flux, gaia_instrument_frame
    from viskom.sources.gaia import GaiaClient
    from viskom.store.products import write_table

    f = measured["frames"][0]
    truth = f["truth"]
    ra, dec, true_pa = (truth["pointing"][k] for k in ("ra", "dec", "pa"))
    settings = Settings(
        data_root=tmp_path / "data",
        gaia={**measured["settings"].gaia.model_dump(), "aperture_radius_px": 0.0},
    )
    when = datetime.fromisoformat(f["info"].date_obs)
    gaia = GaiaClient(settings.gaia_cache_path, online=False).cone(ra, dec, 0.55, epoch=when)
    x, y, keep = gaia_instrument_frame(
        gaia["ra_epoch"], gaia["dec_epoch"], gaia["Gmag"], gaia["e_FG"], gaia["FG"],
        gaia["BP-RP"], (ra, dec, true_pa),
    )  # fmt: skip
    rng = np.random.default_rng(5)
    g = np.asarray(gaia["Gmag"], float)
    sel = np.flatnonzero(keep & (np.abs(x) < 0.35) & (np.abs(y) < 0.38))
    sel = sel[np.argsort(g[sel])[:1500]]  # the brightest, as VIS sees them
    err = truth["pointing_error_pix"]
    stars = {
        "extname": np.full(sel.size, "3-3.E"),
        "x_world": x[sel] + (err["dx"] + rng.normal(0, 0.2, sel.size)) / 36000,
        "y_world": y[sel] + (err["dy"] + rng.normal(0, 0.2, sel.size)) / 36000,
        "flux_auto": gaia_flux(g[sel]) * 560.52 / 89.52,
    }
    bad = _with_header(
        f["sim"].path, tmp_path / f["sim"].path.name,
        PA=None if pa_card == "missing" else true_pa + 25,
    )  # fmt: skip
    info = ExposureInfo(**{**f["info"].__dict__, "path": str(bad),
                           "products_dir": str(settings.products_path)})  # fmt: skip
    write_table(stars, info.product("stars", "parquet"))
    with Le1Frame(bad) as frame:
        result = run_one(GaiaPhotometry(), frame, info, settings)
    m = {(u, k): v for u, k, v in result.metrics}
    assert m[("FPA", "astrom_blind_solved")] == 1.0
    assert m[("FPA", "n_matched")] >= 0.95 * sel.size
    # the solved pointing absorbs the injected pointing error: residual offsets ~ 0
    assert abs(m[("FPA", "astrom_dx_pix")]) < 0.1 and abs(m[("FPA", "astrom_dy_pix")]) < 0.1
    assert m[("FPA", "astrom_sigma_pix")] < 0.3
    summary = json.loads(info.product("gaia", "json").read_text())
    solved_pa = summary["blind_solution"]["pa_deg"]
    assert (solved_pa - true_pa + 180) % 360 - 180 == pytest.approx(0.0, abs=0.01)
    if pa_card == "wrong":
        assert m[("FPA", "astrom_blind_dpa_deg")] == pytest.approx(-25.0, abs=0.01)


def test_failed_match_without_tools_is_a_clear_error(measured, tmp_path, monkeypatch):
    import viskom.sources.astrometry_net as anet

    monkeypatch.setattr(anet, "tools_available", lambda: "solve-field not found (apt-get ...)")
    f = measured["frames"][0]
    bad = _with_header(f["sim"].path, tmp_path / f["sim"].path.name, PA=None)
    info = ExposureInfo(**{**f["info"].__dict__, "path": str(bad)})
    with Le1Frame(bad) as frame, pytest.raises(ValueError, match=r"no PA.*blind solve not poss"):
        run_one(GaiaPhotometry(), frame, info, measured["settings"])
