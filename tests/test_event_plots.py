"""Event and space-weather plots, event classes, the rate fit, movie frames and MP4 encoding."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from viskom.measure.cosmics import catalogue_classes, top10count
from viskom.measure.spaceweather import fit_rate_relation
from viskom.present.event_maps import (
    NBINS_200PX,
    NBINS_250PX,
    exposure_factor,
    plot_event_map,
    plot_rf_diagram,
)
from viskom.present.goes_panel import plot_goes_panel
from viskom.present.hit_histograms import FOCAL_PLANE_PIXELS, plot_hit_histograms
from viskom.present.movie import compose_frame, encode_mp4, ffmpeg_executable
from viskom.present.rates import plot_rate_correlation
from viskom.store.products import write_figure

TITLE = "C_20240713_032840_W_52167482.VIS.bin_01_01"
T_OBS = np.datetime64("2024-07-13T03:28:40", "us")


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def no_leftovers(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".tmp" in p.name]


# ------------------------------------------------------------------------------------------
# synthetic inputs


def make_catalogue(seed: int = 5, n: int = 40000) -> dict[str, np.ndarray]:
    """Point-like cosmics and extended sources over the focal plane, plus an X-ray hot spot."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.35, 0.35, n)
    y = rng.uniform(-0.39, 0.39, n)
    r = np.concatenate([10 ** rng.normal(-0.15, 0.1, n // 2), 10 ** rng.normal(0.2, 0.2, n // 2)])
    f = np.concatenate([10 ** rng.normal(3.0, 0.35, n // 2), 10 ** rng.normal(3.4, 0.5, n // 2)])
    m = 2000
    x = np.r_[x, rng.normal(-0.07, 0.01, m)]
    y = np.r_[y, rng.uniform(-0.1, 0.3, m)]
    r = np.r_[r, rng.uniform(0.5, 0.85, m)]
    f = np.r_[f, rng.uniform(420, 1150, m)]
    return {"x_world": x, "y_world": y, "flux_radius": r, "flux_auto": f}


def make_goes(seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-minute XRS series over 40 h around T_OBS with an M flare 9 h later and a data gap."""
    rng = np.random.default_rng(seed)
    t = T_OBS - np.timedelta64(20, "h") + np.arange(40 * 60) * np.timedelta64(60, "s")
    h = (t - T_OBS) / np.timedelta64(1, "h")
    b = 3e-7 * (1 + 60 * np.exp(-0.5 * ((h - 9) / 0.3) ** 2) + 0.3 * rng.random(t.size))
    a = b / 10
    b[(h > 3) & (h < 4)] = np.nan
    return t, a, b


# ------------------------------------------------------------------------------------------
# event classes, top10count, expfactor


def test_catalogue_classes_on_hand_made_table():
    flux = [500, 400, 401, 1199, 1200, 2999, 3000, -5, 1e4, 10001, 39999, 4e4, 800, np.nan, 800]
    rad = [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.9, 0.5, np.nan]
    cls = catalogue_classes(flux, rad)
    assert set(cls) == {"xray", "cosmics", "protons"}
    assert cls["xray"].tolist() == [1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert cls["cosmics"].tolist() == [1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    assert cls["protons"].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    assert all(m.dtype == bool for m in cls.values())
    empty = catalogue_classes([], [])
    assert all(m.size == 0 for m in empty.values())
    with pytest.raises(ValueError, match="differ in length"):
        catalogue_classes([1, 2], [0.5])


def test_bin_counts_are_visqls():
    assert NBINS_250PX == 115
    assert NBINS_200PX == 144


def test_top10count_on_known_histograms():
    # 10 x 10 bins of 0.08 deg; bin k (row-major) gets k events -> 10th highest 90, median 49.5
    centres = -0.4 + 0.08 * (np.arange(10) + 0.5)
    xs, ys = [], []
    for k in range(100):
        xs += [centres[k // 10]] * k
        ys += [centres[k % 10]] * k
    assert top10count(xs, ys, nbins=10) == pytest.approx(90 - 49.5)
    # VISQL's 115 bins: 12 hot bins of 50 events each, the rest empty -> 50 - 0
    c = -0.4 + (0.8 / 115) * (np.arange(115) + 0.5)
    x = np.repeat(c[10:22], 50)
    y = np.repeat(np.full(12, c[60]), 50)
    extra = ([5.0, np.nan, 0.0], [0.0, 0.1, np.nan])  # off the map or NaN: ignored
    assert top10count(np.r_[x, extra[0]], np.r_[y, extra[1]]) == pytest.approx(50.0)
    assert top10count([], []) == 0.0


def test_exposure_factor():
    assert exposure_factor(560.52) == pytest.approx((560.52 + 36) / 560)
    assert exposure_factor(89.52, readout_s=72) == pytest.approx((89.52 + 36) / 560)
    assert exposure_factor(None) == pytest.approx((90 + 36) / 560)  # VISQL's fallback
    assert exposure_factor(float("nan")) == pytest.approx((90 + 36) / 560)


# ------------------------------------------------------------------------------------------
# robust rate fit


def test_fit_rate_relation_recovers_linear_relation_despite_outliers():
    rng = np.random.default_rng(11)
    n = 300
    flux = 10 ** rng.uniform(-7.5, -5.0, n)
    true_a, true_b = 5.0, 3.0e6
    rate = true_a + true_b * flux + rng.normal(0, 1.0, n)
    bad = rng.choice(n, 30, replace=False)
    rate[bad] += rng.uniform(40, 120, bad.size)  # e.g. exposures hit by a proton storm
    rate[:3] = np.nan
    fit = fit_rate_relation(flux, rate)
    assert fit["model"] == "linear"
    assert fit["n_total"] == n - 3
    assert fit["n_clipped"] >= 30
    assert fit["n"] == fit["n_total"] - fit["n_clipped"]
    assert abs(fit["slope"] - true_b) < 4 * fit["slope_err"]
    assert abs(fit["intercept"] - true_a) < 4 * fit["intercept_err"]
    assert fit["slope_err"] < 0.05 * true_b
    assert fit["r"] > 0.9 and fit["rho"] > 0.5
    assert fit["scatter"] == pytest.approx(1.0, rel=0.25)
    # plain least squares would be pulled far off by the outliers
    ols = np.polyfit(flux[3:], rate[3:], 1)
    assert abs(ols[1] - true_a) > 5 * fit["intercept_err"]


def test_fit_rate_relation_loglog():
    rng = np.random.default_rng(12)
    n = 200
    flux = 10 ** rng.uniform(-8.0, -5.0, n)
    rate = 10 ** (4.0 + 0.6 * np.log10(flux) + rng.normal(0, 0.05, n))
    rate[:15] *= 30.0
    rate[15] = 0.0  # not usable in log-log
    fit = fit_rate_relation(flux, rate, model="loglog")
    assert fit["n_total"] == n - 1
    assert abs(fit["slope"] - 0.6) < 4 * fit["slope_err"]
    assert abs(fit["intercept"] - 4.0) < 4 * fit["intercept_err"]
    assert fit["n_clipped"] >= 14


def test_fit_rate_relation_degenerate_inputs():
    fit = fit_rate_relation([1e-6, 2e-6], [1.0, 2.0])
    assert fit["n"] == 0 and np.isnan(fit["slope"]) and np.isnan(fit["r"])
    fit = fit_rate_relation([1e-6] * 5, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert np.isnan(fit["slope"])
    exact = fit_rate_relation([1.0, 2.0, 3.0, 4.0], [3.0, 5.0, 7.0, 9.0])
    assert exact["slope"] == pytest.approx(2.0) and exact["intercept"] == pytest.approx(1.0)
    assert exact["n"] == 4
    with pytest.raises(ValueError, match="model"):
        fit_rate_relation([1, 2, 3], [1, 2, 3], model="cubic")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# plots: pixel size, also for empty / NaN inputs


@pytest.mark.parametrize("kind", ["xray", "cosmics", "protons"])
def test_event_maps(tmp_path: Path, kind: str):
    cat = make_catalogue()
    sel = catalogue_classes(cat["flux_auto"], cat["flux_radius"])[kind]
    assert sel.sum() > 0
    out = write_figure(
        plot_event_map(cat["x_world"][sel], cat["y_world"][sel], kind, 560.52, TITLE),
        tmp_path / f"{kind}.png",
    )
    assert out == tmp_path / f"{kind}.png"
    assert png_size(out) == (640, 480)
    assert no_leftovers(tmp_path)


def test_event_map_empty_and_nan(tmp_path: Path):
    out = write_figure(plot_event_map([], [], "xray", None, TITLE), tmp_path / "empty.png")
    assert png_size(out) == (640, 480)
    nan = np.full(5, np.nan)
    out = write_figure(plot_event_map(nan, nan, "protons", 89.52, TITLE), tmp_path / "nan.png")
    assert png_size(out) == (640, 480)
    with pytest.raises(ValueError, match="kind"):
        write_figure(plot_event_map([], [], "neutrinos", 1.0, TITLE), tmp_path / "x.png")  # type: ignore[arg-type]


def test_rf_diagram(tmp_path: Path):
    cat = make_catalogue()
    out = write_figure(
        plot_rf_diagram(cat["flux_radius"], cat["flux_auto"], TITLE), tmp_path / "rf.png"
    )
    assert png_size(out) == (640, 480)
    assert png_size(write_figure(plot_rf_diagram([], [], TITLE), tmp_path / "e.png")) == (640, 480)
    nan = [np.nan, -1.0]
    assert png_size(write_figure(plot_rf_diagram(nan, nan, TITLE), tmp_path / "n.png")) == (
        640,
        480,
    )


def test_hit_histograms(tmp_path: Path):
    rng = np.random.default_rng(3)
    n = 5000
    kind = rng.choice(["cosmic", "xray", "proton", "other"], n, p=[0.85, 0.1, 0.04, 0.01])
    npix = np.where(kind == "cosmic", rng.integers(2, 60, n), rng.integers(1, 6, n))
    length = np.where(kind == "cosmic", np.abs(rng.standard_cauchy(n)) * 3.3, 0.0)
    charge = np.select(
        [kind == "cosmic", kind == "xray"],
        [10 ** rng.normal(3.1, 0.2, n), rng.uniform(400, 1200, n)],
        10 ** rng.uniform(4, 4.6, n),
    )
    out = write_figure(
        plot_hit_histograms(npix, length, charge, kind, 560.52, TITLE, area_px=4096 * 4132),
        tmp_path / "hits.png",
    )
    assert png_size(out) == (1500, 500)
    out = write_figure(plot_hit_histograms([], [], [], [], None, TITLE), tmp_path / "empty.png")
    assert png_size(out) == (1500, 500)
    nan = np.full(3, np.nan)
    out = write_figure(
        plot_hit_histograms(nan, nan, nan, ["xray"] * 3, 89.52, TITLE), tmp_path / "nan.png"
    )
    assert png_size(out) == (1500, 500)
    assert FOCAL_PLANE_PIXELS == 36 * 4096 * 4132
    with pytest.raises(ValueError, match="same length"):
        write_figure(
            plot_hit_histograms([1], [1, 2], [1], ["xray"], 1.0, TITLE), tmp_path / "bad.png"
        )


def test_goes_panel(tmp_path: Path):
    t, a, b = make_goes()
    out = write_figure(
        plot_goes_panel(t, a, b, datetime(2024, 7, 13, 3, 28, 40), 560.52, TITLE),
        tmp_path / "g.png",
    )
    assert png_size(out) == (640, 480)
    # X-class flare (y range widens), aware t_obs, protons on a second axis
    pt = t[::5]
    pf = 0.3 + 50 * np.exp(-(((pt - T_OBS) / np.timedelta64(1, "h") - 6) ** 2) / 8)
    out = write_figure(
        plot_goes_panel(
            t,
            a,
            b * 50,
            datetime(2024, 7, 13, 3, 28, 40, tzinfo=UTC),
            89.52,
            TITLE,
            proton_time=pt,
            proton_flux=pf,
        ),
        tmp_path / "gp.png",
    )
    assert png_size(out) == (640, 480)


def test_goes_panel_without_data(tmp_path: Path):
    out = write_figure(
        plot_goes_panel(None, None, None, T_OBS, 560.52, TITLE), tmp_path / "none.png"
    )
    assert png_size(out) == (640, 480)
    t, a, b = make_goes()
    far = T_OBS + np.timedelta64(5, "D")  # data exist, but not within +-12 h
    out = write_figure(
        plot_goes_panel(t, a, b, far, 560.52, TITLE, proton_flux=[]), tmp_path / "far.png"
    )
    assert png_size(out) == (640, 480)
    out = write_figure(plot_goes_panel(t, a, b, None, None, TITLE), tmp_path / "not.png")
    assert png_size(out) == (640, 480)
    nan = np.full(t.size, np.nan)
    out = write_figure(
        plot_goes_panel(t, nan, nan, "2024-07-13T03:28:40", 560.52, TITLE), tmp_path / "n.png"
    )
    assert png_size(out) == (640, 480)


def test_rate_correlation(tmp_path: Path):
    rng = np.random.default_rng(4)
    flux = 10 ** rng.uniform(-7.5, -5, 120)
    rate = 5 + 3e6 * flux + rng.normal(0, 1, 120)
    rate[:6] += 80
    groups = np.where(np.arange(120) % 4 == 0, "dark", "science")
    fit = fit_rate_relation(flux, rate)
    args = ("GOES XRS-B flux [W/m²]", "X-ray events per 1000 s", "July 2024")
    out = write_figure(
        plot_rate_correlation(flux, rate, *args, fit=fit, labels=groups), tmp_path / "c.png"
    )
    assert png_size(out) == (800, 600)
    fit_log = fit_rate_relation(flux, rate, model="loglog")
    out = write_figure(plot_rate_correlation(flux, rate, *args, fit=fit_log), tmp_path / "cl.png")
    assert png_size(out) == (800, 600)
    hand = {"slope": 2e6, "intercept": 4.0, "model": "linear", "r": 0.8, "n": 120}
    out = write_figure(plot_rate_correlation(flux, rate, *args, fit=hand), tmp_path / "ch.png")
    assert png_size(out) == (800, 600)
    out = write_figure(plot_rate_correlation([], [], *args), tmp_path / "e.png")
    assert png_size(out) == (800, 600)
    out = write_figure(
        plot_rate_correlation([0.0, -1.0], [1.0, np.nan], *args, fit=fit), tmp_path / "z.png"
    )
    assert png_size(out) == (800, 600)


# ------------------------------------------------------------------------------------------
# movie frames and MP4


def write_png(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def test_compose_frame_sizes(tmp_path: Path):
    panels = [
        write_png(tmp_path / "a.png", (640, 480), (255, 0, 0)),
        write_png(tmp_path / "b.png", (800, 600), (0, 255, 0)),
        write_png(tmp_path / "c.png", (301, 241), (0, 0, 255)),
    ]
    out = compose_frame(panels, tmp_path / "frame.png")
    w_c = round(301 * 480 / 241)
    expected = 640 + 640 + w_c
    assert png_size(out) == (expected + expected % 2, 480)
    with Image.open(out) as im:
        assert im.getpixel((10, 10))[:3] == (255, 0, 0)
        assert im.getpixel((700, 240))[:3] == (0, 255, 0)
    out = compose_frame(panels[:1], tmp_path / "odd.png", height_px=241)
    w, h = png_size(out)
    assert w % 2 == 0 and h == 242
    assert no_leftovers(tmp_path)
    with pytest.raises(ValueError):
        compose_frame([], tmp_path / "none.png")


def _have_ffmpeg() -> bool:
    try:
        ffmpeg_executable()
    except RuntimeError:
        return False
    return True


needs_ffmpeg = pytest.mark.skipif(not _have_ffmpeg(), reason="no ffmpeg (PATH or imageio-ffmpeg)")


@needs_ffmpeg
@pytest.mark.parametrize("progress", [False, True])
def test_encode_mp4(tmp_path: Path, progress: bool):
    frames = [
        write_png(tmp_path / f"f{i}.png", (64, 48), (40 * i, 255 - 40 * i, 128)) for i in range(5)
    ]
    frames.append(write_png(tmp_path / "odd.png", (50, 31), (0, 0, 0)))  # padded to 64 x 48
    out_dir = tmp_path / "movies"
    out = encode_mp4(frames, out_dir / "movie.mp4", fps=4, progress=progress)
    assert out == out_dir / "movie.mp4"
    data = out.read_bytes()
    assert data[4:8] == b"ftyp" and len(data) > 1000
    assert no_leftovers(out_dir)
    exe = ffmpeg_executable()
    subprocess.run([exe, "-v", "error", "-i", str(out), "-f", "null", "-"], check=True)
    ffprobe = shutil.which("ffprobe")
    if ffprobe:
        probe = subprocess.run(
            [ffprobe, "-v", "error", "-select_streams", "v:0", "-count_frames",
             "-show_entries", "stream=codec_name,width,height,pix_fmt,nb_read_frames",
             "-of", "default=noprint_wrappers=1", str(out)],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        fields = dict(line.split("=", 1) for line in probe.split())
        assert fields["codec_name"] == "h264"
        assert fields["pix_fmt"] == "yuv420p"
        assert (int(fields["width"]), int(fields["height"])) == (64, 48)
        assert int(fields["nb_read_frames"]) == 6


def test_encode_mp4_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(ValueError, match="no frames"):
        encode_mp4([], tmp_path / "m.mp4")
    with pytest.raises(FileNotFoundError):
        encode_mp4([tmp_path / "missing.png"], tmp_path / "m.mp4")
    frame = write_png(tmp_path / "f.png", (16, 16), (9, 9, 9))
    fake = tmp_path / "fake-ffmpeg"
    fake.write_text("#!/bin/sh\necho 'line one' >&2\necho 'boom: cannot encode' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr("viskom.present.movie.ffmpeg_executable", lambda: str(fake))
    for progress in (False, True):
        with pytest.raises(RuntimeError, match="boom: cannot encode") as err:
            encode_mp4([frame], tmp_path / "out" / "m.mp4", progress=progress)
        assert "exit status 3" in str(err.value)
    assert not (tmp_path / "out" / "m.mp4").exists()
    assert no_leftovers(tmp_path / "out")


def test_ffmpeg_executable_fallbacks(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("viskom.present.movie.shutil.which", lambda name: "/opt/bin/ffmpeg")
    assert ffmpeg_executable() == "/opt/bin/ffmpeg"
    monkeypatch.setattr("viskom.present.movie.shutil.which", lambda name: None)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails
    with pytest.raises(RuntimeError, match="imageio-ffmpeg"):
        ffmpeg_executable()
    fake = type(sys)("imageio_ffmpeg")
    fake.get_ffmpeg_exe = lambda: "/wheel/ffmpeg"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", fake)
    assert ffmpeg_executable() == "/wheel/ffmpeg"


# ------------------------------------------------------------------------------------------
# fit for a talk: a real exposure title fits the 640 px panels, no rainbow colour maps

from plot_checks import LONG_TITLE, outside_the_figure, rainbow_maps  # noqa: E402


def test_outside_check_sees_a_plain_long_title():
    fig = plot_event_map([], [], "xray", 560.52, "t")
    fig.suptitle(LONG_TITLE + "  560.52 s", fontsize=10.5)  # as before: cut off at 640 px
    assert outside_the_figure(fig)


@pytest.mark.parametrize(
    "make",
    [
        lambda cat, sel: plot_event_map(
            cat["x_world"][sel["xray"]], cat["y_world"][sel["xray"]], "xray", 560.52, LONG_TITLE
        ),
        lambda cat, sel: plot_event_map([], [], "protons", None, LONG_TITLE),
        lambda cat, sel: plot_rf_diagram(cat["flux_radius"], cat["flux_auto"], LONG_TITLE),
        lambda cat, sel: plot_goes_panel(*make_goes(), T_OBS, 560.52, LONG_TITLE, proton_flux=[]),
        lambda cat, sel: plot_hit_histograms([3], [2.0], [800.0], ["xray"], 89.52, LONG_TITLE),
        lambda cat, sel: plot_rate_correlation(
            np.full(5, 0.3),
            np.arange(5.0),
            "protons [pfu]",
            "hits / cm² / s",
            LONG_TITLE,
            fit=fit_rate_relation(np.full(5, 0.3), np.arange(5.0)),
        ),
    ],
    ids=["cosmiX", "protons_empty", "rf", "goes", "hits", "rates_one_flux"],
)
def test_talk_ready(make):
    cat = make_catalogue(n=4000)
    fig = make(cat, catalogue_classes(cat["flux_auto"], cat["flux_radius"]))
    assert outside_the_figure(fig) == []
    assert rainbow_maps(fig) == []


def test_rate_axis_spans_a_decade_for_one_flux():
    fig = plot_rate_correlation(np.full(5, 0.3), np.arange(5.0), "x", "y", "t")
    lo, hi = fig.axes[0].get_xlim()
    assert hi / lo >= 10 and lo < 0.3 < hi
