"""Plots: every function gives a Figure that saves as a PNG of the expected pixel size, also for
empty/NaN inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from astropy.table import Table
from PIL import Image

from viskom.le1.geometry import all_extnames
from viskom.measure.iq import iq_score
from viskom.measure.stars import find_visql_chimney
from viskom.present.focal import quadrant_rectangle, region_centre
from viskom.present.inputs import mission_day, mission_day_to_date, month_mission_days
from viskom.present.iq_plots import plot_iq_timeline, plot_psf_month_summary
from viskom.present.moment_maps import plot_moment_maps
from viskom.present.psf_plots import plot_flux_radius, plot_moments_vs_position, plot_star_stamps
from viskom.store.products import write_figure

SIZES = {
    "flux_radius": (800, 600),
    "moment_maps": (1200, 900),
    "moments_vs_position": (1400, 1400),
    "stamps": (1000, 1000),
    "timeline": (1400, 1400),
    "month_summary": (1100, 900),
}
TITLE = "C_20240713_032840_W_52167482  2024-07-13T03:28:40"


# ------------------------------------------------------------------------------------------
# synthetic inputs


def make_catalogue(seed: int = 1) -> dict[str, np.ndarray]:
    """Stars on a locus at r ~ 1.12 px (saturated ones on the 'smoke'), galaxies, cosmics."""
    rng = np.random.default_rng(seed)
    n_star, n_gal, n_cr = 800, 15000, 8000
    f_star = 10 ** rng.uniform(3.0, 7.0, n_star)
    r_star = 1.12 * (1 + 0.025 * rng.standard_normal(n_star))
    sat = f_star > 3e5
    r_star[sat] *= np.sqrt(f_star[sat] / 3e5)
    f_gal = 10 ** rng.normal(3.7, 0.45, n_gal)
    r_gal = 10 ** rng.normal(0.4, 0.2, n_gal)
    f_cr = 10 ** rng.uniform(3.0, 4.8, n_cr)
    r_cr = 10 ** rng.uniform(-0.2, 0.5, n_cr)
    r = np.concatenate([r_star, r_gal, r_cr])
    f = np.concatenate([f_star, f_gal, f_cr])
    b = np.concatenate(
        [rng.uniform(1.5, 2.0, n_star), rng.uniform(1.4, 4.0, n_gal), rng.uniform(0.5, 1.2, n_cr)]
    )
    n = r.size
    x = rng.uniform(-0.35, 0.35, n)
    y = rng.uniform(-0.38, 0.38, n)
    return {
        "extname": np.array(["3-4.G"] * n),
        "x_world": x,
        "y_world": y,
        "field_radius": np.hypot(x, y),
        "flux_auto": f,
        "fluxerr_auto": np.sqrt(f),
        "flux_radius": r,
        "a_image": b * rng.uniform(1.0, 2.0, n),
        "b_image": b,
        "theta_image": rng.uniform(-90, 90, n),
        "flags": np.where(f > 3e5, 4, 0),
        "peak": f / 10,
        "area": np.full(n, 20),
    }


def make_star_moments(seed: int = 2, per_quadrant: int = 8) -> dict[str, np.ndarray]:
    """Stars in every quadrant with smooth focal-plane patterns of R2, e, coma and trefoil."""
    rng = np.random.default_rng(seed)
    ext, xs, ys = [], [], []
    for name in all_extnames():
        x0, y0, w, h = quadrant_rectangle(name)
        k = rng.poisson(per_quadrant)
        ext += [name] * k
        xs.append(x0 + w * rng.uniform(0.05, 0.95, k))
        ys.append(y0 + h * rng.uniform(0.05, 0.95, k))
    x, y = np.concatenate(xs), np.concatenate(ys)
    n = x.size
    rad = np.hypot(x, y)

    def noise(s: float) -> np.ndarray:
        return s * rng.standard_normal(n)

    return {
        "extname": np.array(ext),
        "x_world": x,
        "y_world": y,
        "flux_auto": 10 ** rng.uniform(4.0, 5.4, n),
        "flux_radius": 1.12 + noise(0.03),
        "r2": 1.90 + 0.8 * rad**2 + 0.1 * x + noise(0.05),
        "e1": -0.02 + 0.25 * (x**2 - y**2) + noise(0.015),
        "e2": 0.005 + 0.5 * x * y + noise(0.015),
        "t1": -0.235 + 0.2 * rad**2 + noise(0.05),
        "t2": 0.03 + 0.1 * x + noise(0.05),
        "c1": 0.03 + 0.25 * x + noise(0.05),
        "c2": -0.02 + 0.25 * y + noise(0.05),
    }


def make_stamps(n: int = 100, seed: int = 3) -> np.ndarray:
    """(n, 29, 29) background-subtracted elliptical Gaussian stars with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-14:15, -14:15].astype(float)
    out = np.empty((n, 29, 29))
    for i in range(n):
        dx, dy = rng.uniform(-0.5, 0.5, 2)
        s1, s2 = rng.uniform(0.9, 1.2), rng.uniform(0.9, 1.2)
        amp = 10 ** rng.uniform(2.5, 4.0)
        core = np.exp(-0.5 * (((xx - dx) / s1) ** 2 + ((yy - dy) / s2) ** 2))
        halo = 0.02 * np.exp(-0.5 * ((xx - dx) ** 2 + (yy - dy) ** 2) / 4.0**2)
        out[i] = amp * (core + halo) + rng.normal(0, 5, (29, 29))
    return out


def make_month(seed: int = 4, n: int = 300) -> dict[str, np.ndarray]:
    """~300 exposures over July 2024: long/short pairs, a calibration block, a few outliers."""
    rng = np.random.default_rng(seed)
    start = datetime(2024, 7, 1, 0, 10, tzinfo=UTC)
    hours = np.sort(rng.uniform(0, 30.9 * 24, n))
    dates = [start + timedelta(hours=float(h)) for h in hours]
    exptime = np.where(np.arange(n) % 3 == 0, 89.52, 560.52)
    exptime[(hours > 250) & (hours < 262)] = 240.0
    r2 = rng.normal(1.978, 0.008, n)
    e1 = rng.normal(-0.022, 0.004, n)
    e2 = rng.normal(0.006, 0.002, n)
    t1 = rng.normal(-0.235, 0.004, n)
    t2 = rng.normal(0.03, 0.004, n)
    bad = rng.choice(n, 6, replace=False)
    r2[bad[:3]] += [0.4, 0.15, -0.5]
    e1[bad[2:5]] += [0.1, -0.2, 0.05]
    t1[bad[4:]] += [0.2, -0.1]
    return {
        "exposure": np.array([f"C_{d:%Y%m%d_%H%M%S}_W_{i:08x}" for i, d in enumerate(dates)]),
        "date_obs": np.array([d.isoformat() for d in dates]),
        "exptime": exptime,
        "r2": r2,
        "e1": e1,
        "e2": e2,
        "score": iq_score(r2, e1, e2),
        "coma1": rng.normal(0.033, 0.004, n),
        "coma2": rng.normal(-0.02, 0.005, n),
        "trefoil1": t1,
        "trefoil2": t2,
    }


def nan_like(table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Same columns and length, every float column NaN."""
    return {
        k: (np.full(len(v), np.nan) if np.asarray(v).dtype.kind == "f" else v)
        for k, v in table.items()
    }


def empty_like(table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[:0] for k, v in table.items()}


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def assert_png(path: Path, kind: str) -> None:
    assert path.exists()
    assert png_size(path) == SIZES[kind]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------
# mission time


def test_mission_day_epoch_and_july_2024() -> None:
    days = mission_day(
        [
            "2023-07-01T00:00:00",
            "2024-07-01T00:00:00Z",
            datetime(2024, 7, 13, 5, 28, 40, tzinfo=timezone(timedelta(hours=2))),
            np.datetime64("2024-07-31T12:00:00"),
            "not a date",
            None,
        ]
    )
    assert days[0] == 0.0
    assert days[1] == 366.0  # 2024 is a leap year
    assert days[2] == pytest.approx(366 + 12 + (3 * 3600 + 28 * 60 + 40) / 86400)
    assert days[3] == pytest.approx(396.5)
    assert np.isnan(days[4]) and np.isnan(days[5])
    assert month_mission_days("2024-07") == (366.0, 397.0)
    assert month_mission_days("202407") == (366.0, 397.0)
    assert month_mission_days("2023-07") == (0.0, 31.0)
    assert mission_day_to_date(366.5) == datetime(2024, 7, 1, 12)
    with pytest.raises(ValueError):
        month_mission_days("2024-13")


def test_month_table_days_fall_in_july() -> None:
    days = mission_day(make_month()["date_obs"])
    assert np.all((days >= 366.0) & (days < 397.0))


def test_region_centres_follow_readout_corners() -> None:
    # Columns 1-3: E bottom-left, G top-right; columns 4-6 rotated by 180 deg.
    e, g = region_centre("1-1.E"), region_centre("1-1.G")
    assert e is not None and g is not None
    assert e[0] < g[0] and e[1] < g[1]
    e4, g4 = region_centre("1-4.E"), region_centre("1-4.G")
    assert e4 is not None and g4 is not None
    assert e4[0] > g4[0] and e4[1] > g4[1]
    assert region_centre("3-4") is not None
    assert region_centre("junk") is None


# ------------------------------------------------------------------------------------------
# per-exposure plots


def test_flux_radius(tmp_path: Path) -> None:
    cat = make_catalogue()
    locus = find_visql_chimney(cat["flux_radius"], cat["flux_auto"], cat["b_image"])
    assert locus.found
    assert 1.0 < locus.rmin < 1.12 < locus.rmax < 1.3
    out = write_figure(plot_flux_radius(cat, locus, title=TITLE), tmp_path / "chimney.png")
    assert out == tmp_path / "chimney.png"
    assert_png(out, "flux_radius")


def test_flux_radius_no_locus_and_empty(tmp_path: Path) -> None:
    cat = make_catalogue()
    not_found = {"found": False, "reason": "no chimney: best count 0"}
    assert_png(
        write_figure(plot_flux_radius(cat, not_found, title=TITLE), tmp_path / "a.png"),
        "flux_radius",
    )
    empty = empty_like(cat)
    assert_png(
        write_figure(plot_flux_radius(empty, not_found, title=TITLE), tmp_path / "b.png"),
        "flux_radius",
    )
    assert_png(
        write_figure(plot_flux_radius({}, None, title=TITLE), tmp_path / "c.png"), "flux_radius"
    )
    nan = nan_like(cat)
    assert_png(
        write_figure(plot_flux_radius(nan, not_found, title=TITLE), tmp_path / "d.png"),
        "flux_radius",
    )


def test_flux_radius_pyarrow_and_astropy(tmp_path: Path) -> None:
    cat = make_catalogue()
    locus = find_visql_chimney(cat["flux_radius"], cat["flux_auto"], cat["b_image"])
    locus_map = {k: getattr(locus, k) for k in ("found", "reason", "rmin", "rmax", "fmin", "fmax")}
    out = write_figure(plot_flux_radius(pa.table(cat), locus_map, title=TITLE), tmp_path / "pa.png")
    assert_png(out, "flux_radius")
    out = write_figure(plot_flux_radius(Table(cat), locus, title=TITLE), tmp_path / "ap.png")
    assert_png(out, "flux_radius")


def test_missing_required_column_is_reported(tmp_path: Path) -> None:
    cat = make_catalogue()
    del cat["flux_radius"]
    with pytest.raises(KeyError, match="flux_radius"):
        write_figure(plot_flux_radius(cat, None, title=TITLE), tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("group", ["quadrant", "ccd"])
def test_moment_maps(tmp_path: Path, group: str) -> None:
    stars = make_star_moments()
    out = write_figure(plot_moment_maps(stars, title=TITLE, group=group), tmp_path / "map.png")  # type: ignore[arg-type]
    assert_png(out, "moment_maps")


def test_moment_maps_empty_and_nan(tmp_path: Path) -> None:
    stars = make_star_moments()
    for i, data in enumerate((empty_like(stars), nan_like(stars), {}, pa.table(stars).slice(0, 0))):
        assert_png(
            write_figure(plot_moment_maps(data, title=TITLE), tmp_path / f"{i}.png"), "moment_maps"
        )
    # Unknown extension names fall back to the stars' median positions.
    odd = dict(stars, extname=np.array(["CCD?"] * len(stars["r2"])))
    assert_png(
        write_figure(plot_moment_maps(odd, title=TITLE), tmp_path / "odd.png"), "moment_maps"
    )


def test_moments_vs_position_subsample_is_deterministic(tmp_path: Path) -> None:
    stars = make_star_moments(per_quadrant=20)  # ~2900 stars: more than the 2000 drawn
    assert len(stars["r2"]) > 2000
    a = write_figure(plot_moments_vs_position(stars, title=TITLE), tmp_path / "a.png")
    b = write_figure(plot_moments_vs_position(Table(stars), title=TITLE), tmp_path / "b.png")
    assert_png(a, "moments_vs_position")
    assert a.read_bytes() == b.read_bytes()


def test_moments_vs_position_empty_and_nan(tmp_path: Path) -> None:
    stars = make_star_moments()
    for i, data in enumerate((empty_like(stars), nan_like(stars), None)):
        out = write_figure(plot_moments_vs_position(data, title=TITLE), tmp_path / f"{i}.png")
        assert_png(out, "moments_vs_position")


def test_star_stamps(tmp_path: Path) -> None:
    stamps = make_stamps(130)
    r2 = np.linspace(1.8, 2.1, 130)
    labels = [f"{e} R2={r:.2f}" for e, r in zip(all_extnames()[:130], r2, strict=True)]
    out = write_figure(
        plot_star_stamps(stamps, labels=labels, title=TITLE), tmp_path / "stamps.png"
    )
    assert_png(out, "stamps")
    assert_png(
        write_figure(plot_star_stamps(stamps[:7], title=TITLE), tmp_path / "few.png"), "stamps"
    )


def test_star_stamps_empty_and_nan(tmp_path: Path) -> None:
    for i, data in enumerate(
        (np.zeros((0, 29, 29)), np.full((4, 29, 29), np.nan), None, np.zeros((3, 29, 29)))
    ):
        assert_png(
            write_figure(plot_star_stamps(data, title=TITLE), tmp_path / f"{i}.png"), "stamps"
        )


# ------------------------------------------------------------------------------------------
# monthly plots


def test_iq_timeline(tmp_path: Path) -> None:
    month = make_month()
    out = write_figure(plot_iq_timeline(month, month_label="2024-07"), tmp_path / "timeline.png")
    assert_png(out, "timeline")
    # datetime objects and a pyarrow timestamp column work as well
    as_dt = dict(month, date_obs=np.array([datetime.fromisoformat(d) for d in month["date_obs"]]))
    out = write_figure(
        plot_iq_timeline(pa.table(as_dt), month_label="2024-07"), tmp_path / "pa.png"
    )
    assert_png(out, "timeline")


def test_iq_timeline_empty_and_nan(tmp_path: Path) -> None:
    month = make_month()
    for i, data in enumerate((empty_like(month), nan_like(month), {}, None)):
        out = write_figure(plot_iq_timeline(data, month_label="2024-07"), tmp_path / f"{i}.png")
        assert_png(out, "timeline")
    # A month without any of the table's exposures
    out = write_figure(plot_iq_timeline(month, month_label="2024-08"), tmp_path / "aug.png")
    assert_png(out, "timeline")


def test_psf_month_summary(tmp_path: Path) -> None:
    month = make_month()
    out = write_figure(
        plot_psf_month_summary(month, month_label="2024-07"), tmp_path / "summary.png"
    )
    assert_png(out, "month_summary")
    no_score = {k: v for k, v in month.items() if k != "score"}  # score computed
    out = write_figure(
        plot_psf_month_summary(Table(no_score), month_label="2024-07"), tmp_path / "ns.png"
    )
    assert_png(out, "month_summary")


def test_psf_month_summary_empty_and_nan(tmp_path: Path) -> None:
    month = make_month()
    for i, data in enumerate((empty_like(month), nan_like(month), {})):
        out = write_figure(
            plot_psf_month_summary(data, month_label="2024-07"), tmp_path / f"{i}.png"
        )
        assert_png(out, "month_summary")


def test_png_replaced_atomically(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "stamps.png"
    write_figure(plot_star_stamps(make_stamps(4), title="first"), target)
    first = target.read_bytes()
    write_figure(plot_star_stamps(make_stamps(9), title="second"), target)
    assert target.read_bytes() != first
    assert sorted(p.name for p in target.parent.iterdir()) == ["stamps.png"]


def test_plot_in_worker_process(tmp_path: Path) -> None:
    # No pyplot state: a plot can be made in a fresh (spawned) worker process.
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        fig = pool.submit(plot_star_stamps, make_stamps(4), title="worker").result(timeout=120)
    out = write_figure(fig, tmp_path / "w.png")
    assert_png(out, "stamps")


# ------------------------------------------------------------------------------------------
# fit for a talk: titles and labels inside the figure, no rainbow maps, points on scale

from plot_checks import LONG_TITLE, outside_the_figure, rainbow_maps  # noqa: E402
from viskom.measure.gaia import PIX_PER_DEG, compare_with_gaia, gaia_flux  # noqa: E402
from viskom.present.astrometry import (  # noqa: E402
    ARROW_FRACTION,
    plot_gaia_dxdy,
    residual_arrow_scale,
)
from viskom.present.style import fit_text, new_figure, plot_style, text_width_px  # noqa: E402


def test_outside_check_catches_a_cut_title() -> None:
    with plot_style():
        fig = new_figure(640, 480)
        fig.add_subplot().plot([0, 1])
        fig.suptitle(LONG_TITLE + "  560.52 s", fontsize=10.5)  # plain: cut off at 640 px
    assert outside_the_figure(fig)


def test_fit_text_wraps_at_the_double_space_and_keeps_mathtext() -> None:
    with plot_style():
        fig = new_figure(640, 480)
        text, size = fit_text(fig, LONG_TITLE, 628, 10.5)
        assert text.split("\n") == LONG_TITLE.split("  ") and size == 10.5
        math = r"fit $(3.00 \pm 0.06)\times10^{6}$ x and more words to wrap at spaces here"
        text, size = fit_text(fig, math, 200, 10)
        assert all(line.count("$") % 2 == 0 for line in text.split("\n"))
        text, size = fit_text(fig, "x" * 45, 300, 10)  # one long word: smaller font
        assert size < 10 and text_width_px(fig, text, size) <= 300 * 1.01


@pytest.mark.parametrize(
    "make",
    [
        lambda: plot_flux_radius(make_catalogue(), None, title=LONG_TITLE + "  560.52 s"),
        lambda: plot_star_stamps(make_stamps(9), title=LONG_TITLE + "  560.52 s"),
        lambda: plot_moment_maps(make_star_moments(per_quadrant=2), title=LONG_TITLE),
        lambda: plot_iq_timeline(make_month(), month_label="2024-07"),
        lambda: plot_psf_month_summary({}, month_label="2024-07"),
    ],
    ids=["flux_radius", "stamps", "moment_maps", "iq_timeline", "psf_summary_empty"],
)
def test_texts_inside_the_figure_and_no_rainbow(make) -> None:  # type: ignore[no-untyped-def]
    fig = make()
    assert outside_the_figure(fig) == []
    assert rainbow_maps(fig) == []


def demo_like_month() -> dict[str, np.ndarray]:
    """Six exposures whose trefoil and coma lie far from VISQL's plot ranges (as in the demo)."""
    month = {k: np.asarray(v)[:6].copy() for k, v in make_month().items()}
    month["trefoil1"] = np.array([0.0008, 0.001, 0.0006, 0.0009, 0.0011, 0.0007])
    month["trefoil2"] = -month["trefoil1"]
    month["coma1"] = np.array([0.001, 0.0012, 0.0008, 0.0009, 0.0011, 0.001])
    month["coma2"] = -month["coma1"]
    return month


#: The IQ timeline's panels (top to bottom), their columns and VISQL's ranges (drawn as bands).
TIMELINE = (("r2", (1.7, 2.3)), ("e1", (-0.07, 0.07)), ("e2", (-0.07, 0.07)),
            ("trefoil1", (-0.3, -0.15)), ("trefoil2", (-0.05, 0.1)), ("score", None))  # fmt: skip


def drawn_offsets(ax) -> np.ndarray:  # type: ignore[no-untyped-def]
    """(n, 2) data positions of all scatter points of an axes."""
    offs = [np.asarray(c.get_offsets()) for c in ax.collections if len(c.get_offsets())]
    return np.concatenate(offs) if offs else np.zeros((0, 2))


def test_iq_timeline_axes_from_the_data_keep_every_point_on_scale() -> None:
    month = demo_like_month()
    fig = plot_iq_timeline(month, month_label="2024-07")
    for ax, (key, band) in zip(fig.axes, TIMELINE, strict=False):
        lo, hi = ax.get_ylim()
        values = month[key]
        assert np.all((values > lo) & (values < hi)), key  # VISQL's ranges had t1 off scale
        if band is not None:
            assert lo <= band[0] and band[1] <= hi, key  # the reference band is in view
        xy = drawn_offsets(ax)
        assert len(xy) == len(values), key  # nothing lost
        x0, x1 = ax.get_xlim()
        assert np.all((xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= lo) & (xy[:, 1] <= hi))
    # a real month with outliers: they sit at the edges, inside the limits, none is lost
    month = make_month()
    fig = plot_iq_timeline(month, month_label="2024-07")
    for ax, (key, _) in zip(fig.axes, TIMELINE, strict=False):
        lo, hi = ax.get_ylim()
        xy = drawn_offsets(ax)
        assert len(xy) == np.isfinite(month[key]).sum(), key
        assert np.all((xy[:, 1] >= lo) & (xy[:, 1] <= hi)), key
        inside = (month[key] > lo) & (month[key] < hi)
        assert inside.mean() > 0.97, key  # the ranges follow the data, not VISQL's


def test_psf_month_summary_axes_from_the_data() -> None:
    month = demo_like_month()
    fig = plot_psf_month_summary(month, month_label="2024-07")
    pairs = (("r2", "e1"), ("e1", "e2"), ("coma1", "coma2"), ("trefoil1", "trefoil2"))
    for ax, (xk, yk) in zip(fig.axes, pairs, strict=True):
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        assert np.all((month[xk] > x0) & (month[xk] < x1)), xk
        assert np.all((month[yk] > y0) & (month[yk] < y1)), yk
    assert outside_the_figure(fig) == []


def gaia_comparison(noise_pix: float, n: int = 300):  # type: ignore[no-untyped-def]
    """Matched stars with Gaia-VIS offsets of (-6.8, 5.3) px plus `noise_pix` residuals."""
    rng = np.random.default_rng(4)
    n_gaia = 3 * n
    xg, yg = rng.uniform(-0.39, 0.39, n_gaia), rng.uniform(-0.39, 0.39, n_gaia)
    pick = rng.choice(n_gaia, n, replace=False)
    xv = xg[pick] - (-6.8 + rng.normal(0, noise_pix, n)) / PIX_PER_DEG
    yv = yg[pick] - (5.3 + rng.normal(0, noise_pix, n)) / PIX_PER_DEG
    g, c = rng.uniform(15.0, 20.5, n_gaia), rng.uniform(0.5, 3.0, n_gaia)
    flux = gaia_flux(g[pick]) * np.exp(-0.38 + 0.4 * c[pick] - 0.065 * c[pick] ** 2) * 6.26
    ext = np.array(["3-4.G"] * n)
    return compare_with_gaia(ext, xv, yv, flux, xg, yg, g, c, exptime=560.52)


def test_residual_arrows_scale_with_the_data() -> None:
    rx, ry = np.full(10, 0.003), np.zeros(10)
    scale, p90 = residual_arrow_scale(rx, ry, 0.8)
    assert p90 == pytest.approx(0.003)
    assert p90 / scale == pytest.approx(ARROW_FRACTION * 0.8)  # 5% of the panel, however small
    assert residual_arrow_scale(np.zeros(3), np.zeros(3))[0] > 0  # no residual: still a scale
    drawn = {}
    for noise in (0.3, 0.003):
        fig = plot_gaia_dxdy(gaia_comparison(noise), title=LONG_TITLE + "  (560.52 s)")
        ax = fig.axes[2]  # the residual field
        (q,) = [c for c in ax.collections if type(c).__name__ == "Quiver"]
        mag = np.hypot(q.U, q.V)
        drawn[noise] = np.percentile(mag, 90) / q.scale  # arrow length of P90 [deg]
        assert drawn[noise] == pytest.approx(ARROW_FRACTION * 0.8, rel=0.05)
        assert ("tiny" in ax.get_title()) == (noise < 0.05)
        assert any("mas" in t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))
        assert outside_the_figure(fig) == []
        assert rainbow_maps(fig) == []
    assert drawn[0.3] == pytest.approx(drawn[0.003], rel=0.1)  # residuals 100x apart
