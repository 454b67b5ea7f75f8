"""The images stage on frames with known patterns: a dark quadrant, a gradient along X over
one CCD, and a bright star at a known sky position. Where each lands in the mosaic is
checked against what the frame's own headers say (astropy's WCS of each extension, VISQL's
sky model inverted numerically), not against the mosaic code's own placement."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image
from scipy.optimize import least_squares

from viskom.config import Settings
from viskom.le1.focalplane import sky_to_instrument
from viskom.le1.frame import Le1Frame
from viskom.le1.geometry import quadrant_geometry
from viskom.pipeline.worker import run_one
from viskom.sources.simulator import SimConfig, simulate_frame
from viskom.stages import ExposureInfo
from viskom.stages.images import Images

T0 = datetime(2024, 7, 13, 4, 0, 0, tzinfo=UTC)
DARK_QUADRANT = "4-2.G"
GRADIENT_CCD = "2-5"  # a CCD of columns 4-6: its quadrants are turned by 180 degrees
STAR = ("3-3.E", 120.0, 140.0)  # quadrant, image-area column and row of the injected star
SLOPE_ADU_PER_ARCSEC = 2.0


def _instrument_xy(header: fits.Header, cols: np.ndarray, rows: np.ndarray) -> tuple:
    """Instrument-frame (X, Y) deg of array pixels, by astropy from the extension header."""
    keys = [k for k in header if k[:5] in ("CTYPE", "CRVAL", "CRPIX", "CUNIT") or k[:2] == "CD"]
    w = WCS(fits.Header([(k, header[k]) for k in keys]))
    X, Y = w.all_pix2world(cols, rows, 0)
    return (np.asarray(X) + 180.0) % 360.0 - 180.0, np.asarray(Y)


@pytest.fixture(scope="module")
def patterned(tmp_path_factory) -> dict:
    """A small flat frame with a dark quadrant, an X gradient over one CCD and a star."""
    out = tmp_path_factory.mktemp("images")
    sim = simulate_frame(out, "flat", seed=11, date_obs=T0, config=SimConfig(geometry="small"))
    path = out / "patterned.fits"
    shutil.copy(sim.path, path)
    with fits.open(path, mode="update") as hdul:
        hdr0 = hdul[0].header
        pointing = (hdr0["RA"], hdr0["DEC"], hdr0["PA"])
        for hdu in hdul[1:]:
            name = hdu.header["EXTNAME"]
            g = quadrant_geometry(name, hdu.header["NAXIS1"], hdu.header["NAXIS2"],
                                  hdu.header["PRESCANX"], hdu.header["OVRSCANX"],
                                  hdu.header["OVRSCANY"])  # fmt: skip
            data = hdu.data.astype(np.float64)
            bias = np.median(data[g.serial_overscan.slices])
            im = g.image
            if name == DARK_QUADRANT:
                data[im.slices] = bias
            if name.startswith(GRADIENT_CCD + "."):
                rows, cols = np.mgrid[im.row0 : im.row1, im.col0 : im.col1]
                X, _ = _instrument_xy(hdu.header, cols.ravel(), rows.ravel())
                data[im.slices] = (
                    bias + 3000 + SLOPE_ADU_PER_ARCSEC * 3600 * (X + 0.3).reshape(rows.shape)
                )
            if name == STAR[0]:
                rows, cols = np.mgrid[0 : data.shape[0], 0 : data.shape[1]]
                x0, y0 = im.col0 + STAR[1], im.row0 + STAR[2]
                data += 40000 * np.exp(-((cols - x0) ** 2 + (rows - y0) ** 2) / (2 * 2.0**2))
                star_xy = _instrument_xy(hdu.header, np.array([x0]), np.array([y0]))
            hdu.data = np.clip(np.round(data), 0, 65535).astype(np.uint16)
    # the star's sky position: VISQL's model (the frame's definition) inverted
    fit = least_squares(
        lambda p: np.concatenate(sky_to_instrument(p[:1], p[1:], *pointing)) - np.ravel(star_xy),
        x0=[pointing[0], pointing[1]], xtol=1e-14, ftol=1e-14,
    )  # fmt: skip
    return {"path": path, "out": out, "star_sky": fit.x, "name": sim.name}


def _run(patterned, tmp_path, **images) -> tuple:
    settings = Settings(data_root=tmp_path / "data", images=images)
    info = ExposureInfo(0, patterned["name"], str(patterned["path"]), "FLAT", 5.0,
                        str(settings.products_path), date_obs=T0.isoformat())  # fmt: skip
    with Le1Frame(patterned["path"]) as frame:
        result = run_one(Images(), frame, info, settings)
    files = {w.kind: settings.data_path / w.path for w in result.written}
    return result, files


def test_true_layout_places_patterns_and_the_star_by_the_headers(patterned, tmp_path) -> None:
    result, files = _run(patterned, tmp_path, layout="true", bin=25)
    assert result.status == "ok" and "mosaic" in files and "mosaic_image" in files
    with fits.open(files["mosaic_image"]) as hdul:
        image, header = hdul[0].data.astype(float), hdul[0].header
    w = WCS(header)
    assert w.has_celestial and header["BINNING"] == 25 and not header["COMPACT"]
    # the star: the mosaic's WCS puts its sky position within 1 mosaic pixel of its peak
    px, py = w.world_to_pixel_values(*patterned["star_sky"])
    r0, c0 = round(float(py)), round(float(px))
    window = image[r0 - 4 : r0 + 5, c0 - 4 : c0 + 5]
    peak_r, peak_c = np.unravel_index(np.nanargmax(window), window.shape)
    assert np.hypot(peak_c - 4 + c0 - px, peak_r - 4 + r0 - py) <= 1.0
    # every quadrant's cell: where the FITS WCS puts the sky position of its image centre
    with fits.open(patterned["path"]) as raw:
        pointing = (raw[0].header["RA"], raw[0].header["DEC"], raw[0].header["PA"])
        headers = {h.header["EXTNAME"]: h.header for h in raw[1:]}
    levels = {}
    for name, hdr in headers.items():
        g = quadrant_geometry(name, hdr["NAXIS1"], hdr["NAXIS2"], hdr["PRESCANX"],
                              hdr["OVRSCANX"], hdr["OVRSCANY"])  # fmt: skip
        im = g.image
        X, Y = _instrument_xy(hdr, np.array([(im.col0 + im.col1 - 1) / 2]),
                              np.array([(im.row0 + im.row1 - 1) / 2]))  # fmt: skip
        fit = least_squares(
            lambda p, X=X, Y=Y: np.concatenate(sky_to_instrument(p[:1], p[1:], *pointing))
            - np.concatenate([X, Y]),
            x0=[pointing[0], pointing[1]], xtol=1e-14, ftol=1e-14,
        )  # fmt: skip
        cx, cy = w.world_to_pixel_values(*fit.x)
        levels[name] = np.nanmedian(image[round(float(cy)) - 2 : round(float(cy)) + 3,
                                          round(float(cx)) - 2 : round(float(cx)) + 3])  # fmt: skip
    others = np.median([v for n, v in levels.items() if n != DARK_QUADRANT])
    assert others > 500 and abs(levels[DARK_QUADRANT]) < 0.02 * others  # the dark one, there
    # the gradient over the CCD rises along +X (mosaic columns) by the injected slope
    for q in "EFGH":
        hdr = headers[f"{GRADIENT_CCD}.{q}"]
        g = quadrant_geometry(hdr["EXTNAME"], hdr["NAXIS1"], hdr["NAXIS2"], hdr["PRESCANX"],
                              hdr["OVRSCANX"], hdr["OVRSCANY"])  # fmt: skip
        im = g.image
        X, Y = _instrument_xy(hdr, np.array([im.col0 + 40.0, im.col1 - 41.0]),
                              np.array([(im.row0 + im.row1) / 2] * 2))  # fmt: skip
        values = []
        for x_deg, y_deg in zip(X, Y, strict=True):
            fit = least_squares(
                lambda p, a=x_deg, b=y_deg: np.concatenate(
                    sky_to_instrument(p[:1], p[1:], *pointing)) - np.array([a, b]),
                x0=[pointing[0], pointing[1]], xtol=1e-14, ftol=1e-14,
            )  # fmt: skip
            cx, cy = w.world_to_pixel_values(*fit.x)
            values.append(image[round(float(cy)), round(float(cx))])
        expected = SLOPE_ADU_PER_ARCSEC * 3600 * (X[1] - X[0])
        assert values[1] - values[0] == pytest.approx(expected, rel=0.1)


def test_compact_layout_keeps_every_quadrant_in_focal_plane_order(patterned, tmp_path) -> None:
    _result, files = _run(patterned, tmp_path)  # small quadrants: compact by default
    with fits.open(files["mosaic_image"]) as hdul:
        image, header = hdul[0].data.astype(float), hdul[0].header
    assert header["COMPACT"] and not WCS(header).has_celestial  # no sky WCS then
    with fits.open(patterned["path"]) as raw:
        headers = {h.header["EXTNAME"]: h.header for h in raw[1:]}
    # cells: the regions of constant level between gaps; find each quadrant's by its centre
    centres = {}
    for name, hdr in headers.items():
        g = quadrant_geometry(name, hdr["NAXIS1"], hdr["NAXIS2"], hdr["PRESCANX"],
                              hdr["OVRSCANX"], hdr["OVRSCANY"])  # fmt: skip
        im = g.image
        X, Y = _instrument_xy(hdr, np.array([(im.col0 + im.col1) / 2]),
                              np.array([(im.row0 + im.row1) / 2]))  # fmt: skip
        centres[name] = (float(X[0]), float(Y[0]))
    # the 12 columns and 12 rows of cells hold the quadrants in instrument X and Y order
    finite = np.isfinite(image)
    col_runs = _runs(finite.any(axis=0))
    row_runs = _runs(finite.any(axis=1))
    assert len(col_runs) == 12 and len(row_runs) == 12
    xs = sorted({round(c[0], 3) for c in centres.values()})
    ys = sorted({round(c[1], 3) for c in centres.values()})
    assert len(xs) == 12 and len(ys) == 12
    for name, (X, Y) in centres.items():
        c0, c1 = col_runs[xs.index(round(X, 3))]
        r0, r1 = row_runs[ys.index(round(Y, 3))]
        level = np.nanmedian(image[r0:r1, c0:c1])
        if name == DARK_QUADRANT:
            assert abs(level) < 50
        else:
            assert level > 500, name
        if name.startswith(GRADIENT_CCD + "."):  # still rising along +X, inside the cell
            band = image[(r0 + r1) // 2, c0 + 2 : c1 - 2]
            assert np.polyfit(np.arange(band.size), band, 1)[0] > 0


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return list(zip(edges[::2], edges[1::2], strict=True))


def test_pictures_and_zooms(patterned, tmp_path) -> None:
    _result, files = _run(patterned, tmp_path)
    mosaic = Image.open(files["mosaic"])
    assert mosaic.mode == "RGB" and 900 < mosaic.width < 1400 and mosaic.height > mosaic.width
    grey = np.asarray(mosaic.convert("L"), float)
    assert grey.std() > 20  # structure, not a black or white square
    zooms = {k for k in files if k.startswith("zoom_")}
    assert {f"zoom_{n}" for n in ("ll", "cl", "tl", "lc", "cc", "tc", "lr", "cr", "tr")} <= zooms
    assert "zoom_hottest" in zooms
    for kind in zooms:
        picture = Image.open(files[kind])
        assert picture.width == 256 and picture.height == 256 + 26  # a quadrant, and a title


def test_missing_and_bad_quadrants_are_grey_cells_and_outcomes(patterned, tmp_path) -> None:
    bad = tmp_path / "bad.fits"
    with fits.open(patterned["path"]) as hdul:
        kept = [h for h in hdul if h.header.get("EXTNAME") != "1-1.E"]
        kept = fits.HDUList([h.copy() for h in kept])
    for h in kept[1:]:
        if h.header["EXTNAME"] == "6-6.H":
            h.header["PRESCANX"] = "many"
    kept.writeto(bad)
    patterned = {**patterned, "path": bad}
    result, files = _run(patterned, tmp_path)
    assert result.status == "ok" and "mosaic" in files
    codes = {(o.code, o.unit) for o in result.outcomes}
    assert ("missing_quadrant", "1-1.E") in codes and ("bad_header_value", "6-6.H") in codes
    picture = np.asarray(Image.open(files["mosaic"]), int)
    grey_cells = np.all(picture == 128, axis=2)
    assert grey_cells.sum() > 2 * 80 * 80  # two quadrant cells drawn mid-grey


def test_products_are_recorded_and_removed_with_the_family(patterned, tmp_path) -> None:
    result, files = _run(patterned, tmp_path)
    folder = next(iter(files.values())).parent
    stale = folder / f"{patterned['name']}_zoom_old.png"
    stale.write_bytes(b"x")
    _run(patterned, tmp_path, flagged_zooms=False)
    assert not stale.exists()  # a family member of an earlier run goes with the family
    assert all(w.sha256 and w.size_bytes > 0 for w in result.written)


def test_block_mean_against_loops() -> None:
    from viskom.measure.mosaic import block_mean

    rng = np.random.default_rng(2)
    for shape in [(2066, 64), (256, 256), (30, 47), (24, 50)]:
        data = rng.integers(0, 65535, size=shape).astype(np.uint16)
        for b in (1, 3, 25):
            want = [[data[i : i + b, j : j + b].mean() for j in range(0, shape[1], b)]
                    for i in range(0, shape[0], b)]  # fmt: skip
            assert np.allclose(block_mean(data, b), want, rtol=1e-6)
            assert np.allclose(block_mean(data[::-1, ::-1], b),
                               [[data[::-1, ::-1][i : i + b, j : j + b].mean()
                                 for j in range(0, shape[1], b)]
                                for i in range(0, shape[0], b)], rtol=1e-6)  # fmt: skip


def test_densest_cell_is_the_first_fullest_of_numpy_s_unique_cells():
    """The densest-cosmic-ray zoom's cell against np.unique(axis=1) of the (column, row)
    pairs, ties (small sets) and cells left of and below the origin included."""
    from viskom.measure.mosaic import densest_cell

    rng = np.random.default_rng(4)
    for n in (1, 2, 7, 50, 3000):
        for _ in range(20):
            px = rng.uniform(-300.0, 900.0, n)
            py = rng.uniform(-150.0, 500.0, n)
            ix, iy = (px // 100).astype(int), (py // 100).astype(int)
            cells, counts = np.unique(np.stack([ix, iy]), axis=1, return_counts=True)
            k = int(np.argmax(counts))
            assert densest_cell(px, py, 100) == (cells[0, k], cells[1, k], counts[k])
    assert densest_cell(np.zeros(0), np.zeros(0), 100) is None
    assert densest_cell(np.array([np.nan]), np.array([1.0]), 100) is None
    # points without a position (NaN) are left out, not counted in a cell of their own
    px, py = np.array([np.nan, 150.0, 160.0, 420.0]), np.array([5.0, 20.0, 30.0, np.inf])
    assert densest_cell(px, py, 100) == (1, 0, 2)
    # one far-flung point: counted without a counter for every cell in between
    px, py = np.array([1e12, 150.0, 160.0]), np.array([-1e12, 20.0, 30.0])
    assert densest_cell(px, py, 100) == (1, 0, 2)
