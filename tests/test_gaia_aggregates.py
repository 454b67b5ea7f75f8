"""Gaia photometry aggregates and the ice trend, against a synthetic truth.

A small synthetic store: SCIENCE exposures (long 560.52 s, short 89.52 s, and one of another
exposure time) between mid-March and mid-April 2024, their FPA/block/CCD metrics and residual
tables built from one truth: ln(VIS/Gaia) = quadratic in BP-RP + per-CCD offset + per-quadrant
offset + an ice term that declines linearly with time (faster for blue stars) + noise, with a
few per cent of outliers. The aggregates must give that truth back.
"""

from __future__ import annotations

import csv
import logging
import math
import struct
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest

from viskom.config import Settings
from viskom.le1.geometry import all_ccds, all_extnames
from viskom.measure.gaia_cells import HexGrid, clipped_cell_stats
from viskom.measure.gaia_colour import COLOURS, fit_colour_relation, unit_members
from viskom.measure.gaia_ice import exposure_kind, good_mask, selfcal_mask
from viskom.measure.gaia_stack import (
    BLOCKS,
    CCDS,
    QUADRANTS,
    grouped_colour_fits,
    stacked_fits,
    unit_levels,
)
from viskom.measure.photometry import gaia_flux
from viskom.pipeline import gaia_maps as present_gaia  # the drawing steps the tests replace
from viskom.pipeline.gaia_io import read_residuals, residual_path
from viskom.pipeline.gaia_maps import render_fpa_map
from viskom.pipeline.gaia_period import thursday_weeks, write_gaia_period_products
from viskom.pipeline.gaia_timeline import write_ice_timeline
from viskom.present.focal import quadrant_rectangle
from viskom.store import Store
from viskom.store.products import write_table
from viskom.store.records import ExposureRecord, StageRun

# ---------------------------------------------------------------------------------------------
# The truth

BASE = (-0.27, 0.36, -0.07)  # ln(VIS/Gaia) = c0 + c1 c + c2 c^2: ~0.89 / 1.13 / 1.26
ICE_PER_DAY = 0.004  # ln loss per day at BP-RP 0 ...
ICE_COLOUR = -0.25  # ... times (1 + ICE_COLOUR * c / 2.75): blue stars lose more
T_ICE0 = datetime(2024, 3, 10, tzinfo=UTC)
NOISE = 0.02
OUTLIERS = 0.03
N_ROWS = 400
SELFCAL = (268.75, 65.3)

RNG_TRUTH = np.random.default_rng(42)
CCD_OFFSET = dict(zip(all_ccds(), RNG_TRUTH.uniform(-0.05, 0.05, 36), strict=True))
QUAD_OFFSET = dict(zip(all_extnames(), RNG_TRUTH.normal(0.0, 0.01, 144), strict=True))


def ice(t: datetime | np.ndarray, colour: float | np.ndarray) -> np.ndarray:
    """The injected ice term ln(VIS/Gaia) at time t and BP-RP."""
    days = (np.asarray(t, "datetime64[us]") - np.datetime64("2024-03-10T00:00")) / np.timedelta64(
        1, "D"
    )
    return -ICE_PER_DAY * days * (1.0 + ICE_COLOUR * np.asarray(colour) / 2.75)


def base_ln(colour: np.ndarray | float) -> np.ndarray:
    c = np.asarray(colour, float)
    return BASE[0] + BASE[1] * c + BASE[2] * c**2


def naive(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None)


@dataclass
class World:
    store: Store
    settings: Settings
    folder: Path
    timeline: Path
    period: list[Path]
    timeline_paths: list[Path]
    exposures: dict[str, dict]
    stars: dict[str, dict[str, np.ndarray]]
    maps: list[dict]


def _quadrant_positions(ext: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    x, y = np.empty(ext.size), np.empty(ext.size)
    for name in np.unique(ext):
        sel = ext == name
        x0, y0, w, h = quadrant_rectangle(str(name))
        x[sel] = x0 + w * rng.uniform(0.02, 0.98, sel.sum())
        y[sel] = y0 + h * rng.uniform(0.02, 0.98, sel.sum())
    return x, y


def make_stars(t: datetime, exptime: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One exposure's residual table (the gaia stage's columns) from the truth."""
    n = N_ROWS
    ext = np.array(all_extnames())[rng.integers(0, 144, n)]
    x, y = _quadrant_positions(ext, rng)
    g = rng.uniform(15.0, 20.3, n)
    c = rng.uniform(0.5, 3.0, n)
    off = np.array([CCD_OFFSET[e[:3]] + QUAD_OFFSET[e] for e in ext])
    ln_true = base_ln(c) + off + ice(naive(t), c)
    noise = rng.normal(0.0, NOISE, n) + np.where(rng.random(n) < OUTLIERS, 0.6, 0.0)
    gf = gaia_flux(g)
    gain = rng.uniform(0.97, 1.03, n)
    vis = gf * np.exp(ln_true + noise)
    kept = rng.random(n) < 0.95
    model = np.exp(base_ln(c) + ice(naive(t), c))
    return {
        "extname": ext,
        "x_world": x,
        "y_world": y,
        "source_id": rng.integers(0, 2**62, n),
        "flux": vis * exptime / 89.52 / gain,
        "exptime": np.full(n, exptime),
        "gain": gain,
        "g_mag": g,
        "bp_rp": c,
        "vis_flux": vis,
        "gaia_flux": gf,
        "ln_ratio": np.log(vis / gf),
        "frat_model": model,
        "frat": vis / gf / model,
        "astrom_kept": kept,
        "colour_used": kept & (g < 19.5),
    }


def exposure_metrics(t: datetime, sigma_pix: float) -> list[tuple[str, str, float]]:
    """The gaia stage's metric rows from the truth (FPA, blocks, diagonal CCDs)."""
    rows: list[tuple[str, str, float]] = []
    ln = base_ln(np.array(COLOURS)) + ice(naive(t), np.array(COLOURS))
    ln_fit = np.polyfit(COLOURS, ln, 2)[::-1]
    for k, m in enumerate(("vis_over_gaia_075", "vis_over_gaia_175", "vis_over_gaia_275")):
        rows.append(("FPA", m, float(np.exp(ln[k]))))
    rows += [
        ("FPA", "gaia_colour_c0", float(ln_fit[0])),
        ("FPA", "gaia_colour_c1", float(ln_fit[1])),
        ("FPA", "gaia_colour_c2", float(ln_fit[2])),
        ("FPA", "gaia_colour_rms", NOISE),
        ("FPA", "gaia_colour_n_stars", 300.0),
        ("FPA", "astrom_sigma_pix", sigma_pix),
        ("FPA", "astrom_dx_pix", 1.5),
        ("FPA", "astrom_dy_pix", -2.5),
        ("FPA", "astrom_ddx_dx", 0.1),
        ("FPA", "astrom_ddy_dx", 0.2),
        ("FPA", "astrom_ddx_dy", 0.3),
        ("FPA", "astrom_ddy_dy", 0.4),
        ("FPA", "n_matched", 380.0),
    ]
    for b in BLOCKS:
        for k, m in enumerate(("vis_over_gaia_075", "vis_over_gaia_175", "vis_over_gaia_275")):
            rows.append((b, m, float(np.exp(ln[k] + 0.01 * BLOCKS.index(b)))))
        rows.append((b, "gaia_colour_n_stars", 40.0))
    for n in range(1, 7):
        for ccd in {f"{n}-{n}", f"{n}-{7 - n}"}:
            rows.append((ccd, "vis_over_gaia_175", float(np.exp(ln[1] + CCD_OFFSET[ccd]))))
    return rows


# (day, [(hour, exptime, selfcal)]); reference period 2024-03-14..22 by default.
SCHEDULE = {
    date(2024, 3, 15): [(1, 560.52, True), (3, 560.52, False), (5, 89.52, False)],
    date(2024, 3, 18): [(2, 560.52, False), (4, 560.52, True), (6, 89.52, False)],
    date(2024, 3, 21): [(2, 560.52, False), (4, 89.52, True), (6, 89.52, False)],
    date(2024, 4, 2): [(1, 560.52, False), (3, 560.52, False), (5, 89.52, False)],
    date(2024, 4, 3): [(h, 560.52, h == 1) for h in range(1, 13, 2)] + [(14, 89.5, False)],
    date(2024, 4, 9): [(2, 561.0, False), (4, 560.52, False), (6, 89.52, True), (8, 300.0, False)],
}


def _register(store: Store, name: str, t: datetime, exptime: float, selfcal: bool):
    ra, dec = (SELFCAL[0] + 0.3, SELFCAL[1] - 0.1) if selfcal else (56.2, -55.7)
    exposure, _ = store.register_exposure(
        ExposureRecord(
            name=name, path=f"/raw/{name}.fits", state="registered", frame_type="SCIENCE",
            date_obs=t, exptime=exptime, ra=ra, dec=dec, pa=46.2,
        )
    )  # fmt: skip
    return exposure


def _run(exposure_id: int) -> StageRun:
    return StageRun(
        exposure_id=exposure_id, stage="gaia", stage_version="1", config_hash="c" * 64,
        software_version="test", status="ok",
    )  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("gaiaagg")
    settings = Settings(data_root=root, products_dir=root / "products")
    store = Store(f"sqlite:///{root / 'viskom.db'}")
    rng = np.random.default_rng(7)
    exposures: dict[str, dict] = {}
    stars: dict[str, dict[str, np.ndarray]] = {}
    for day, plan in SCHEDULE.items():
        for hour, exptime, sc in plan:
            t = datetime(day.year, day.month, day.day, hour, 10, tzinfo=UTC)
            name = f"EUC_LE1_VIS-{len(exposures):05d}-1-W_{t:%Y%m%dT%H%M%S}.000000Z_01_01_01.00"
            e = _register(store, name, t, exptime, sc)
            sigma = 12.0 if (day, hour) == (date(2024, 4, 2), 3) else 0.8
            store.record_stage_run(_run(e.id), exposure_metrics(t, sigma))
            tab = make_stars(t, exptime, rng)
            write_table(tab, residual_path(settings.products_path, name, t))
            exposures[name] = {"t": t, "exptime": exptime, "selfcal": sc, "sigma": sigma}
            stars[name] = tab
    # Failure modes: a corrupt table, a missing table, an exposure with NULL metrics.
    t = datetime(2024, 4, 3, 20, 0, tzinfo=UTC)
    bad = _register(store, "corrupt", t, 560.52, False)
    store.record_stage_run(_run(bad.id), exposure_metrics(t, 0.8))
    path = residual_path(settings.products_path, "corrupt", t)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PAR1" + struct.pack("<i", 7) + b"garbage")
    t = datetime(2024, 4, 3, 21, 0, tzinfo=UTC)
    lost = _register(store, "no_table", t, 560.52, False)
    store.record_stage_run(_run(lost.id), exposure_metrics(t, 0.8))
    t = datetime(2024, 4, 3, 22, 0, tzinfo=UTC)
    nan = _register(store, "nan_metrics", t, 560.52, False)
    store.record_stage_run(_run(nan.id), [("FPA", "vis_over_gaia_175", math.nan)])

    folder = root / "products" / "months" / "2024-04"
    maps: list[dict] = []
    with pytest.MonkeyPatch.context() as mp:  # maps are drawn for real in one test only
        mp.setattr(present_gaia, "write_fpa_maps", fake_map(maps))
        period = write_gaia_period_products(
            store, settings, datetime(2024, 4, 1, tzinfo=UTC), datetime(2024, 5, 1, tzinfo=UTC),
            folder, "2024-04",
        )  # fmt: skip
    timeline = root / "products" / "timeline"
    tl = write_ice_timeline(store, settings, timeline)
    yield World(store, settings, folder, timeline, period, tl, exposures, stars, maps)
    store.close()


def fake_map(calls: list[dict]):
    """Stand-in for write_fpa_maps (about 1 s per figure): records the task, writes a stub."""

    def plot(**task):
        calls.append(task)
        task["path"].write_bytes(b"stub")
        return task["path"]

    return plot


def fake_colour_plot(*args, **kwargs) -> Path:
    args[5].write_bytes(b"stub")
    return args[5]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


# ---------------------------------------------------------------------------------------------
# Pure helpers


def test_exposure_kind_and_selfcal() -> None:
    assert exposure_kind(560.52) == "long" and exposure_kind(561.4) == "long"
    assert exposure_kind(89.52) == "short" and exposure_kind(88.6) == "short"
    assert exposure_kind(562.0) is None and exposure_kind(300.0) is None
    assert exposure_kind(None) is None and exposure_kind(math.nan) is None
    ra = np.array([268.75, 269.1, 268.75, 269.2, 268.75, None], dtype=float)
    dec = np.array([65.3, 65.3, 65.49, 65.3, 65.1, 65.3])
    # (dRA/2)^2 + dDec^2 < 0.04: 0.35 deg in RA is in, 0.45 is out; 0.19 in Dec in, 0.2 out.
    assert selfcal_mask(ra, dec, 268.75, 65.3).tolist() == [True, True, True, False, False, False]
    # RA wraps at 0/360.
    assert selfcal_mask(359.9, 0.0, 0.1, 0.0) and not selfcal_mask(180.0, 0.0, 0.1, 0.0)


def test_good_mask_is_visqls_cut() -> None:
    curv = np.array([-0.1, -0.1, -0.2, -0.01, -0.1, np.nan])
    sigma = np.array([1.0, 11.0, 1.0, 1.0, np.nan, 1.0])
    assert good_mask(curv, sigma).tolist() == [True, False, False, False, True, False]


def test_thursday_weeks() -> None:
    weeks = thursday_weeks(datetime(2024, 7, 1, tzinfo=UTC), datetime(2024, 8, 1, tzinfo=UTC))
    assert [w[0] for w in weeks] == [date(2024, 7, d) for d in (4, 11, 18, 25)]
    assert all((b - a).days == 7 and a.weekday() == 3 for a, b in weeks)
    assert weeks[-1][1] == date(2024, 8, 1)


def test_grouped_fits_equal_fit_colour_relation() -> None:
    """The vectorised fitter is fit_colour_relation(refits=4), group by group."""
    rng = np.random.default_rng(3)
    n_groups = 25
    sizes = rng.integers(0, 400, n_groups)
    sizes[:3] = (0, 5, 10)  # empty, too few, just enough
    group = np.repeat(np.arange(n_groups), sizes)
    c = rng.uniform(0.3, 3.2, group.size)
    y = -0.3 + 0.35 * c - 0.06 * c**2 + rng.normal(0, 0.02, group.size)
    y += np.where(rng.random(group.size) < 0.05, rng.normal(0.3, 0.3, group.size), 0.0)
    c[rng.random(group.size) < 0.01] = np.nan
    perm = rng.permutation(group.size)
    group, c, y = group[perm], c[perm], y[perm]
    fits = grouped_colour_fits(group, c, y, n_groups, refits=4)
    for k in range(n_groups):
        sel = group == k
        ref = fit_colour_relation(c[sel], y[sel], refits=4)
        assert fits.n_total[k] == ref.n_total
        assert fits.n_fit[k] == ref.n_fit, k
        if ref.n_terms == 0:
            assert np.isnan(fits.c0[k]) and np.isnan(fits.rms[k])
            continue
        np.testing.assert_allclose(
            [fits.c0[k], fits.c1[k], fits.c2[k], fits.rms[k]],
            [ref.c0, ref.c1, ref.c2, ref.rms],
            rtol=1e-7,
            atol=1e-9,
        )
        np.testing.assert_allclose(fits.colour_fit(k).ratio_at(), ref.ratio_at(), rtol=1e-8)
        np.testing.assert_allclose(fits.ratios()[k], ref.ratio_at(), rtol=1e-8)


def test_unit_codes_match_unit_members() -> None:
    """Blocks, CCDs and quadrants of the vectorised path are measure.gaia's units."""
    ext = np.array([*all_extnames(), "9-9.Z", "1-1.E"])
    expected = unit_members(ext)
    got: dict[str, set[int]] = {}
    for _, names, code in unit_levels(
        np.array([QUADRANTS.index(e) if e in QUADRANTS else -1 for e in ext])
    ):
        for i, k in enumerate(code):
            if k >= 0:
                got.setdefault(names[k], set()).add(i)
    assert set(got) == set(expected)
    for unit, idx in expected.items():
        assert got[unit] == set(idx.tolist()), unit
    assert len(BLOCKS) == 9 and BLOCKS[0] == "B1212" and BLOCKS[-1] == "B5656"


def test_hex_grid_matches_matplotlib_hexbin() -> None:
    """Cell assignment and clipped means agree with matplotlib's hexbin on the same lattice."""
    from matplotlib.figure import Figure

    rng = np.random.default_rng(5)
    grid = HexGrid()
    x, y = rng.uniform(-0.39, 0.39, 20000), rng.uniform(-0.44, 0.44, 20000)
    cell = grid.cells(x, y)
    cx, cy = grid.centres()
    # Every point is nearest to its own cell centre (regular hexagons on equal axes).
    d_own = np.hypot(x - cx[cell], y - cy[cell])
    assert np.all(d_own <= grid.size / math.sqrt(3) + 1e-12)
    ax = Figure().subplots()
    # matplotlib's lattice: gridsize (nx, ny) over the same extent gives the same cells.
    poly = ax.hexbin(x, y, gridsize=(grid.nx, grid.ny), extent=(
        grid.extent[0], grid.extent[0] + grid.nx * grid.sx,
        grid.extent[2], grid.extent[2] + grid.ny * grid.sy), mincnt=1)  # fmt: skip
    counts = np.bincount(cell, minlength=grid.n_cells)
    occupied = np.flatnonzero(counts)
    assert sorted(poly.get_array().astype(int).tolist()) == sorted(counts[occupied].tolist())
    # Clipped statistics: one cell with an outlier.
    z = np.r_[np.full(50, 1.0) + rng.normal(0, 0.01, 50), 5.0]
    mean, sigma, n = clipped_cell_stats(np.zeros(51, int), z, 1)
    assert n[0] == 50 and abs(mean[0] - 1.0) < 0.005 and 0.005 < sigma[0] < 0.015


# ---------------------------------------------------------------------------------------------
# Period products


def test_period_files_exist_and_pngs_are_real(world: World) -> None:
    names = {p.name for p in world.period}
    for kind in ("long", "short"):
        assert f"vis_over_gaia_2024-04_{kind}.csv" in names
        assert f"vis_over_gaia_3x3_2024-04_{kind}.csv" in names
        assert f"vis_over_gaia_2024-04-03_ccd_{kind}.csv" in names
    assert "vis_over_gaia_2024-04-09_ccd_short.csv" in names
    for kind in ("LONG", "SHORT"):
        assert f"visgaiacolour_{kind}_2024-04.csv" in names
        assert f"VISGaia_FPA_{kind}_2024-04.png" in names
    for exptime in ("560.52", "89.52"):
        assert f"iceplot_FPA_2024-04_{exptime}.png" in names
        assert f"iceplot_FPA_2024-04-03_{exptime}.png" in names
        assert f"iceplot_FPA_wk2024-04-04_2024-04-11_{exptime}.png" in names
    # Only days and weeks with data; nothing from March; the 300 s exposure is ignored.
    assert not any("2024-03" in n for n in names)
    assert not any("_300" in n for n in names)
    assert "iceplot_FPA_wk2024-04-11_2024-04-18_560.52.png" not in names
    for p in world.period:
        assert p.is_file() and p.parent == world.folder
    for kind in ("LONG", "SHORT"):
        png = world.folder / f"VISGaia_FPA_{kind}_2024-04.png"
        assert png_size(png) == (2400, 2000) and png.stat().st_size > 100_000


def test_fpa_maps_cover_the_right_stars_and_draw(world: World) -> None:
    tasks = {t["path"].name: t for t in world.maps}
    day = tasks["iceplot_FPA_2024-04-03_560.52.png"]
    longs = [
        n
        for n, e in world.exposures.items()
        if e["t"].date() == date(2024, 4, 3) and exposure_kind(e["exptime"]) == "long"
    ]
    assert day["n_exposures"] == len(longs) and day["kind"] == "long"
    assert day["x"].size == sum(int(world.stars[n]["colour_used"].sum()) for n in longs)
    assert abs(np.median(day["residual"]) - 1.0) < 0.01  # frat: the exposure's own model out
    month = tasks["iceplot_FPA_2024-04_560.52.png"]
    week = tasks["iceplot_FPA_wk2024-04-04_2024-04-11_560.52.png"]
    assert month["x"].size > day["x"].size > 0 and 0 < week["x"].size < month["x"].size
    assert week["label"] == "week 2024-04-04 to 2024-04-11"
    path = render_fpa_map(day)
    assert png_size(path) == (1300, 800) and path.stat().st_size > 100_000


def test_exposure_table_long_short_selfcal_good(world: World) -> None:
    long = read_csv(world.folder / "vis_over_gaia_2024-04_long.csv")
    short = read_csv(world.folder / "vis_over_gaia_2024-04_short.csv")
    april = {n: e for n, e in world.exposures.items() if e["t"].month == 4}
    want_long = {n for n, e in april.items() if exposure_kind(e["exptime"]) == "long"}
    want_short = {n for n, e in april.items() if exposure_kind(e["exptime"]) == "short"}
    # 'corrupt' and 'no_table' have metrics (the table is only needed for the stacks);
    # 'nan_metrics' has none usable and is left out.
    assert {r["exposure"] for r in long} == want_long | {"corrupt", "no_table"}
    assert {r["exposure"] for r in short} == want_short
    for r in long + short:
        e = world.exposures.get(r["exposure"])
        if e is None:
            continue
        assert (r["selfcal"] == "True") == e["selfcal"]
        assert (r["good"] == "True") == (e["sigma"] < 10), r["exposure"]
        ln = base_ln(np.array(COLOURS)) + ice(naive(e["t"]), np.array(COLOURS))
        got = [float(r[k]) for k in ("r075", "r175", "r275")]
        np.testing.assert_allclose(got, np.exp(ln), rtol=1e-9)
        assert math.isclose(float(r["curvature"]), got[0] + got[2] - 2 * got[1], rel_tol=1e-9)
        assert r["date_obs"].startswith(e["t"].strftime("%Y-%m-%dT%H:%M"))
    blocks = read_csv(world.folder / "vis_over_gaia_3x3_2024-04_long.csv")
    assert len(blocks) == 9 * len(want_long | {"corrupt", "no_table"})
    assert {r["block"] for r in blocks} == set(BLOCKS)


def test_daily_stack_recovers_ccd_and_quadrant_offsets(world: World) -> None:
    """Day 2024-04-03: six long exposures stacked; each CCD's VIS/Gaia carries its offset."""
    rows = {r["unit"]: r for r in read_csv(world.folder / "vis_over_gaia_2024-04-03_ccd_long.csv")}
    assert list(rows)[:10] == ["FPA", *BLOCKS]
    assert len(rows) == 1 + 9 + 36 + 144
    day = [n for n, e in world.exposures.items() if e["t"].date() == date(2024, 4, 3)]
    day = [n for n in day if exposure_kind(world.exposures[n]["exptime"]) == "long"]
    assert len(day) == 6
    # Expected ln VIS/Gaia(1.75) of each CCD: base + its stars' mean offset + the day's ice.
    t_mean = (
        naive(world.exposures[day[0]]["t"])
        + (naive(world.exposures[day[-1]]["t"]) - naive(world.exposures[day[0]]["t"])) / 2
    )
    truth = base_ln(1.75) + ice(t_mean, 1.75)
    err, clipped = [], 0
    for ccd in CCDS:
        off = []
        for n in day:
            s = world.stars[n]
            sel = s["colour_used"] & np.char.startswith(s["extname"].astype(str), ccd + ".")
            off += [CCD_OFFSET[ccd] + QUAD_OFFSET[e] for e in s["extname"][sel]]
        r = rows[ccd]
        assert int(r["n_total"]) == len(off)
        assert 0.9 * len(off) < int(r["n_fit"]) <= len(off)
        clipped += len(off) - int(r["n_fit"])
        err.append(math.log(float(r["r175"])) - (truth + np.mean(off)))
    err = np.array(err)
    assert clipped > 0.5 * OUTLIERS * N_ROWS * len(day) * 0.8  # the outliers were clipped
    # Per-CCD statistical error ~ 0.02 / sqrt(~70) = 0.0025 (more for the curve at 1.75).
    assert np.abs(err).max() < 0.012, err
    assert abs(err.mean()) < 0.004
    injected = np.array([CCD_OFFSET[c] for c in CCDS])
    got = np.array([math.log(float(rows[c]["r175"])) for c in CCDS])
    assert np.corrcoef(injected, got)[0, 1] > 0.97
    # Quadrants: VIS/Gaia differences inside a CCD follow the injected quadrant offsets.
    q_inj = np.array([QUAD_OFFSET[q] + CCD_OFFSET[q[:3]] for q in QUADRANTS])
    q_got = np.array([float(rows[q]["r175"] or "nan") for q in QUADRANTS])
    fitted = np.isfinite(q_got)  # a quadrant needs 10 stars: ~14 per quadrant on this day
    assert fitted.sum() > 100
    assert all(int(rows[q]["n_total"]) < 10 for q in np.array(QUADRANTS)[~fitted])
    d = np.log(q_got[fitted]) - q_inj[fitted]
    d -= np.median(d)
    # ~14 stars each: error ~0.02 / sqrt(14) = 0.005; with so few stars VISQL's clipping
    # lets the odd outlier (+0.6) through, hence a robust width and a 90 % bound.
    assert 1.4826 * np.median(np.abs(d)) < 0.012
    assert np.mean(np.abs(d) < 0.03) > 0.9
    assert 1.4826 * np.median(np.abs(q_inj - np.median(q_inj))) > 0.025  # vs the injected spread
    # FPA stack: outliers clipped; the scatter is the noise and the unit offsets.
    all_off = [CCD_OFFSET[e[:3]] + QUAD_OFFSET[e] for n in day for e in world.stars[n]["extname"]]
    assert abs(float(rows["FPA"]["rms"]) - math.hypot(NOISE, np.std(all_off))) < 0.003


def test_monthly_colour_table_recovers_the_colour_relation(world: World) -> None:
    rows = read_csv(world.folder / "visgaiacolour_LONG_2024-04.csv")
    assert [r["unit"] for r in rows[:6]] == ["FPA", "1-1", "1-1.E", "1-1.F", "1-1.G", "1-1.H"]
    assert len(rows) == 1 + 36 + 144
    fpa = rows[0]
    # The stacked FPA curve: base + mean offset + mean ice (colour-dependent, so c1 shifts).
    c = np.array([0.75, 1.75, 2.75])
    longs = [n for n, e in world.exposures.items()
             if e["t"].month == 4 and exposure_kind(e["exptime"]) == "long"]  # fmt: skip
    mean_ice = np.mean([ice(naive(world.exposures[n]["t"]), c) for n in longs], axis=0)
    mean_off = np.mean(list(CCD_OFFSET.values())) + np.mean(list(QUAD_OFFSET.values()))
    expect = base_ln(c) + mean_ice + mean_off
    got = np.log([float(fpa[k]) for k in ("r075", "r175", "r275")])
    np.testing.assert_allclose(got, expect, atol=0.006)
    # n_fit <= n_total; corrupt and missing tables left out, the rest all in.
    n_expected = sum(int(world.stars[n]["colour_used"].sum()) for n in longs)
    assert int(fpa["n_total"]) == n_expected


def test_period_without_data_writes_nothing(world: World, tmp_path: Path) -> None:
    out = write_gaia_period_products(
        world.store, world.settings, datetime(2023, 1, 1, tzinfo=UTC),
        datetime(2023, 2, 1, tzinfo=UTC), tmp_path / "m", "2023-01",
    )  # fmt: skip
    assert out == []
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_missing_and_corrupt_tables_are_logged_and_skipped(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    items = [
        (n, residual_path(world.settings.products_path, n, t))
        for n, t in (
            ("corrupt", datetime(2024, 4, 3, 20, 0, tzinfo=UTC)),
            ("no_table", datetime(2024, 4, 3, 21, 0, tzinfo=UTC)),
        )
    ]
    name = next(iter(world.exposures))
    items.append(
        (name, residual_path(world.settings.products_path, name, world.exposures[name]["t"]))
    )
    with caplog.at_level(logging.INFO, logger="viskom.pipeline"):
        stack = read_residuals(items)
    assert stack.names == [name] and stack.n_rows == N_ROWS
    assert stack.missing == ["no_table"] and stack.unreadable == ["corrupt"]
    assert any("corrupt" in r.message and r.levelname == "WARNING" for r in caplog.records)
    assert np.all(stack.quadrant >= 0)
    assert [QUADRANTS[q] for q in stack.quadrant[:5]] == world.stars[name]["extname"][:5].tolist()


def test_stacked_fits_tolerate_empty_and_unknown_units() -> None:
    q = np.array([-1] * 30 + [0] * 5)
    c = np.linspace(0.5, 3, 35)
    y = 0.1 * c
    rows = stacked_fits(q, c, y)["0"]
    by = {r["unit"]: r for r in rows}
    assert by["FPA"]["n_total"] == 35 and abs(by["FPA"]["c1"] - 0.1) < 1e-9
    assert by["1-1.E"]["n_total"] == 5 and math.isnan(by["1-1.E"]["c0"])
    assert by["6-6"]["n_total"] == 0 and math.isnan(by["6-6"]["r175"])
    assert stacked_fits(np.zeros(0, int), np.zeros(0), np.zeros(0))["0"][0]["n_total"] == 0


# ---------------------------------------------------------------------------------------------
# The ice timeline


def test_timeline_recovers_the_ice_trend(world: World) -> None:
    names = {p.name for p in world.timeline_paths}
    assert names == {
        f"{stem}_{kind}.{ext}"
        for kind in ("long", "short")
        for stem, ext in (("iceplot", "png"), ("ice_timeline", "csv"), ("iceplot_diag", "png"),
                          ("ice_diag", "csv"))
    }  # fmt: skip
    c = np.array(COLOURS)
    for kind in ("long", "short"):
        rows = read_csv(world.timeline / f"ice_timeline_{kind}.csv")
        mine = {n: e for n, e in world.exposures.items() if exposure_kind(e["exptime"]) == kind}
        assert {r["exposure"] for r in rows} >= set(mine)
        assert all(exposure_kind(float(r["exptime"])) == kind for r in rows)
        ref = [
            n
            for n, e in mine.items()
            if date(2024, 3, 14) <= e["t"].date() <= date(2024, 3, 22) and e["sigma"] < 10
        ]
        assert {r["exposure"] for r in rows if r["reference"] == "True"} == set(ref)
        ref_ice = np.mean([ice(naive(mine[n]["t"]), c) for n in ref], axis=0)
        for r in rows:
            if r["exposure"] not in mine:
                continue
            want = ice(naive(mine[r["exposure"]]["t"]), c) - ref_ice
            got = [float(r[f"rel_{k}"]) for k in ("075", "175", "275")]
            np.testing.assert_allclose(got, want, atol=1e-9)
            assert (r["selfcal"] == "True") == mine[r["exposure"]]["selfcal"]
        # The trend: a month after the reference, blue stars lost more than red ones.
        late = [r for r in rows if r["date_obs"] >= "2024-04-09"]
        assert late and all(float(r["rel_075"]) < float(r["rel_275"]) < -0.05 for r in late)
    png = world.timeline / "iceplot_long.png"
    assert png_size(png) == (1100, 750) and png.stat().st_size > 30_000


def test_diag_timeline_is_relative_per_ccd(world: World) -> None:
    rows = read_csv(world.timeline / "ice_diag_long.csv")
    assert {r["ccd"] for r in rows} == {f"{n}-{n}" for n in range(1, 7)} | {
        f"{n}-{7 - n}" for n in range(1, 7)
    }
    by_day: dict[str, list[float]] = {}
    for r in rows:
        by_day.setdefault(r["day"], []).append(float(r["rel_175"]))
    # The CCD offsets cancel: all 12 CCDs agree on each day, 1 in the reference period.
    for day, vals in by_day.items():
        assert np.ptp(vals) < 1e-9, day
    assert abs(np.mean(by_day["2024-03-18"]) - 1.0) < 0.01
    assert by_day["2024-04-09"][0] < by_day["2024-04-02"][0] < 1.0
    png = world.timeline / "iceplot_diag_long.png"
    assert png_size(png) == (1100, 900) and png.stat().st_size > 30_000


def test_timeline_without_reference_is_absolute(world: World, tmp_path: Path) -> None:
    settings = Settings(
        data_root=world.settings.data_root,
        products_dir=world.settings.products_path,
        gaia={"reference_start": date(2023, 1, 1), "reference_end": date(2023, 1, 5)},
    )
    paths = write_ice_timeline(world.store, settings, tmp_path)
    rows = read_csv(tmp_path / "ice_timeline_long.csv")
    assert rows and all(r["rel_175"] == "" and r["ln_r175"] != "" for r in rows)
    assert (tmp_path / "iceplot_long.png") in paths


def test_empty_store_writes_nothing(tmp_path: Path) -> None:
    settings = Settings(data_root=tmp_path, products_dir=tmp_path / "products")
    with Store(f"sqlite:///{tmp_path / 'empty.db'}") as store:
        assert write_ice_timeline(store, settings, tmp_path / "t") == []
        assert (
            write_gaia_period_products(
                store,
                settings,
                datetime(2024, 4, 1, tzinfo=UTC),
                datetime(2024, 5, 1, tzinfo=UTC),
                tmp_path / "m",
                "2024-04",
            )
            == []
        )
    assert not (tmp_path / "t").exists()


def test_week_maps_reach_past_the_month(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The week starting on Thursday 2024-03-28 includes April data (read past March)."""
    calls: list[dict] = []
    monkeypatch.setattr(present_gaia, "write_fpa_maps", fake_map(calls))
    monkeypatch.setattr(present_gaia, "write_colour_relations_fpa", fake_colour_plot)
    out = write_gaia_period_products(
        world.store, world.settings, datetime(2024, 3, 1, tzinfo=UTC),
        datetime(2024, 4, 1, tzinfo=UTC), tmp_path, "2024-03",
    )  # fmt: skip
    names = {p.name for p in out}
    week = next(c for c in calls if c["path"].name.startswith("iceplot_FPA_wk2024-03-28"))
    assert week["n_exposures"] == 2 + 6  # long exposures of 2 and 3 April
    assert "iceplot_FPA_wk2024-03-28_2024-04-04_560.52.png" in names
    assert "vis_over_gaia_2024-04-02_ccd_long.csv" not in names
    assert "iceplot_FPA_2024-04-02_560.52.png" not in names
    assert {"iceplot_FPA_2024-03-15_560.52.png", "VISGaia_FPA_SHORT_2024-03.png"} <= names
    rows = read_csv(tmp_path / "vis_over_gaia_2024-03_long.csv")
    assert all(r["date_obs"].startswith("2024-03") for r in rows)


def test_maps_are_redrawn_only_when_their_stars_change(world: World, tmp_path: Path) -> None:
    """A month's products are rewritten after every run; unchanged maps are not redrawn."""
    calls: list[dict] = []
    folder = tmp_path / "2024-04"
    since, until = datetime(2024, 4, 1, tzinfo=UTC), datetime(2024, 5, 1, tzinfo=UTC)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(present_gaia, "write_fpa_maps", fake_map(calls))
        mp.setattr(present_gaia, "write_colour_relations_fpa", fake_colour_plot)
        first = write_gaia_period_products(world.store, world.settings, since, until, folder, "x")
        n_first = len(calls)
        again = write_gaia_period_products(world.store, world.settings, since, until, folder, "x")
        assert len(calls) == n_first > 0  # nothing redrawn
        assert sorted(p.name for p in again) == sorted(p.name for p in first)
        # one day's stars change: that day's map and the month's are redrawn, not the others
        # (2024-04-03 is a Wednesday: its Thursday-to-Thursday week belongs to March)
        day = "iceplot_FPA_2024-04-03_560.52.png"
        name = next(
            n for n, e in world.exposures.items()
            if e["t"].date() == date(2024, 4, 3) and exposure_kind(e["exptime"]) == "long"
        )  # fmt: skip
        t = world.exposures[name]["t"]
        path = residual_path(world.settings.products_path, name, t)
        saved = path.read_bytes()
        try:
            tab = dict(world.stars[name])
            tab["frat"] = np.asarray(tab["frat"]) * 1.01
            write_table(tab, path)
            write_gaia_period_products(world.store, world.settings, since, until, folder, "x")
        finally:
            path.write_bytes(saved)
        redrawn = {c["path"].name for c in calls[n_first:]}
        assert day in redrawn and "iceplot_FPA_x_560.52.png" in redrawn
        assert not any(n.startswith("iceplot_FPA_wk") for n in redrawn)
        assert not any("2024-04-02" in n for n in redrawn)


def test_month_products_drawn_side_by_side_are_the_same_files(world: World) -> None:
    """With two workers the month products are drawn in two forked processes (each with
    its own store connection): the same files, byte for byte, as on one core."""
    import hashlib

    from viskom.pipeline.aggregate import update_month_products

    def digests(paths: list[Path]) -> dict[str, str]:
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}

    one = digests(update_month_products(
        world.store, world.settings.model_copy(update={"workers": 1}), ["2024-04"]
    ))  # fmt: skip
    two = digests(update_month_products(
        world.store, world.settings.model_copy(update={"workers": 2}), ["2024-04"]
    ))  # fmt: skip
    assert two == one
    assert any(p.endswith(".png") for p in one) and any(p.endswith(".csv") for p in one)
    assert any("gaia" in p for p in one) and len(one) >= 8
