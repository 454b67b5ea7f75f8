"""Readers of VISQL's real tables (viskom.sources.visql) and their consistency."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from viskom.measure.iq import IQReference, iq_class, iq_score
from viskom.sources.visql import (
    iq_rows_from_visql,
    median_moments,
    read_gaia_instrument_catalogue,
    read_psfmoments_table,
    read_quadrant_gains,
    read_star_catalogue,
    read_star_moments,
)

DATA = Path(__file__).parent / "data" / "visql"
EXPOSURE = "C_20240713_032840_W_52167482.VIS.bin_01_01"
PSFMOMENTS = DATA / "psfmoments_202407.txt"
MOMCAT = DATA / f"{EXPOSURE}_stars2_mom.cat"
STARS2 = DATA / f"{EXPOSURE}_stars2.cat"
GAIA = DATA / f"{EXPOSURE}_stars2_gaia.cat.gz"
GAINS = DATA / "quadrant_relative_gains.txt"

# The exposure's row of psfmoments_202407.txt, as printed (%8.3f, then %8.4f).
ROW = {
    "r2": "1.985",
    "coma1": "0.0334",
    "coma2": "-0.0178",
    "e1": "-0.0215",
    "e2": "0.0078",
    "trefoil1": "-0.2300",
    "trefoil2": "0.0354",
}
MOMENT_KEYS = list(ROW)


@pytest.fixture(scope="module")
def month():
    return read_psfmoments_table(PSFMOMENTS)


@pytest.fixture(scope="module")
def momcat():
    return read_star_moments(MOMCAT)


def test_psfmoments_table_shape_and_columns(month) -> None:
    assert month.colnames == ["catalogue", "exposure", *MOMENT_KEYS, "placeholder"]
    assert len(month) == 1802  # VIS-REFERENCE 8: all 1802 exposures of the month table
    assert len(set(month["exposure"])) == 1802
    assert not month["placeholder"].any()
    pattern = re.compile(r"^C_202407\d\d_\d{6}_[A-Z]_[0-9A-F]{8}\.VIS\.bin_0[12]_01$")
    assert all(pattern.match(e) for e in month["exposure"])
    assert all(
        c == e + "_stars2_mom.cat"
        for c, e in zip(month["catalogue"], month["exposure"], strict=True)
    )


def test_psfmoments_ranges_are_sane(month) -> None:
    r2 = np.asarray(month["r2"])
    assert np.isfinite(r2).all()
    # VIS-REFERENCE 4: R2 ~ 1.92-1.99 px^2, e1 ~ -0.02, e2 ~ 0.005.
    assert 1.92 < np.median(r2) < 1.99
    assert np.median(month["e1"]) == pytest.approx(-0.02, abs=0.005)
    assert np.median(month["e2"]) == pytest.approx(0.005, abs=0.003)
    assert np.median(month["trefoil1"]) == pytest.approx(-0.235, abs=0.01)
    assert np.mean((r2 > 1.9) & (r2 < 2.1)) > 0.95
    assert r2.min() > 1.5 and r2.max() < 10
    for key in MOMENT_KEYS[1:]:
        assert np.abs(month[key]).max() < 1.0


def test_medians_of_real_catalogue_reproduce_its_month_row(month, momcat) -> None:
    medians = median_moments(momcat)
    assert medians["n_stars"] == 765
    row = month[month["exposure"] == EXPOSURE][0]
    for key, printed in ROW.items():
        fmt = "{:.3f}" if key == "r2" else "{:.4f}"
        assert fmt.format(medians[key]) == printed, key
        assert fmt.format(row[key]) == printed, key


def test_catalogue_columns_are_consistent_with_their_medians(momcat) -> None:
    """Without pixels we cannot re-measure; check the per-star columns instead."""
    r2, e1, e2 = (np.asarray(momcat[k]) for k in ("r2", "e1", "e2"))
    assert np.isfinite(r2).all() and (r2 > 0).all()
    assert (np.abs(e1) < 1).all() and (np.abs(e2) < 1).all()
    # The medians printed in the month table; the per-star robust scatter is that of noisy
    # single stars (R2 ~6%), so the median is known to ~1.25 sigma / sqrt(n).
    well_centred = (np.abs(momcat["dx"]) < 1) & (np.abs(momcat["dy"]) < 1)
    assert well_centred.mean() > 0.98
    for values, med, ndp, max_sigma in (
        (r2, 1.985, 3, 0.2),
        (e1, -0.0215, 4, 0.04),
        (e2, 0.0078, 4, 0.04),
    ):
        assert round(float(np.median(values)), ndp) == med
        sigma = 1.4826 * np.median(np.abs(values - np.median(values)))
        assert 0 < sigma < max_sigma
        # Dropping VISQL's wandering centroids (|DX| or |DY| >= 1 px) leaves the median alone.
        std_err = 1.2533 * sigma / np.sqrt(len(values))
        assert abs(np.median(values[well_centred]) - np.median(values)) < 2 * std_err
    # XIMAGE = istar + DX with istar an integer (VISQL-SPEC 5.5 step 8); DX up to 6 px.
    for pos, off in (("x_image", "dx"), ("y_image", "dy")):
        ipos = np.asarray(momcat[pos]) - np.asarray(momcat[off])
        np.testing.assert_allclose(ipos, np.round(ipos), atol=2e-4)
    assert np.abs(momcat["dx"]).max() == pytest.approx(2.3607)
    assert np.abs(momcat["dy"]).max() == pytest.approx(6.0007)
    # The Gaussian weight keeps ~82% of a VIS star's flux (a Gaussian PSF would give 84%).
    ratio = np.asarray(momcat["wtflux"]) / np.asarray(momcat["flux"])
    assert 0.75 < np.median(ratio) < 0.9 and np.mean(ratio < 1) > 0.99
    assert set(momcat["extname"]) <= {
        f"{r}-{c}.{q}" for r in range(1, 7) for c in range(1, 7) for q in "EFGH"
    }


def test_moment_catalogue_stars_come_from_the_star_catalogue(momcat) -> None:
    stars = read_star_catalogue(STARS2)
    assert len(stars) == 867
    assert stars.colnames[:5] == ["x_world", "y_world", "flux_auto", "fluxerr_auto", "flux_radius"]
    assert stars["number"].dtype.kind == "i" and stars["flags"].dtype.kind == "i"
    assert (np.asarray(stars["b_image"]) > 1.3).all()
    # mom.cat prints XWORLD/YWORLD to 6 decimals and FLUX to 6 significant digits.
    sx, sy, sf = (np.asarray(stars[k]) for k in ("x_world", "y_world", "flux_auto"))
    mx, my, mf = (np.asarray(momcat[k]) for k in ("x_world", "y_world", "flux"))
    same = (
        (np.abs(mx[:, None] - sx[None, :]) <= 6e-7)
        & (np.abs(my[:, None] - sy[None, :]) <= 6e-7)
        & (np.abs(mf[:, None] / sf[None, :] - 1) < 1e-5)
    )
    assert (same.sum(axis=1) == 1).all()


def test_month_row_score_by_hand(month) -> None:
    ref = IQReference()
    d = np.array([1.985 - ref.r2m, -0.0215 - ref.e1m])
    by_hand = (0.0078 - ref.e2m) ** 2 / ref.vare2 + d @ ref.inverse_covariance @ d
    assert by_hand == pytest.approx(23.777, abs=1e-3)
    rows = iq_rows_from_visql(PSFMOMENTS, ref)
    assert len(rows) == 1802
    (row,) = [r for r in rows if r["exposure"] == EXPOSURE]
    assert set(row) == {
        "exposure",
        "r2",
        "e1",
        "e2",
        "score",
        "coma1",
        "coma2",
        "trefoil1",
        "trefoil2",
    }
    assert row["score"] == pytest.approx(by_hand, rel=1e-9)
    assert row["coma1"] == 0.0334 and row["trefoil1"] == -0.23
    assert iq_class(row["score"]) == "ok"
    scores = np.array([r["score"] for r in rows])
    np.testing.assert_allclose(scores, iq_score(month["r2"], month["e1"], month["e2"]))
    assert np.mean(scores < 27) > 0.85


def test_gaia_instrument_catalogue() -> None:
    gaia = read_gaia_instrument_catalogue(GAIA)
    assert len(gaia) == 2615
    assert gaia.colnames == [
        "x_deg",
        "y_deg",
        "gmag",
        "gmag_err",
        "r",
        "a",
        "b",
        "pa",
        "source_id",
        "flg",
        "bp_rp",
    ]
    assert gaia["source_id"].dtype == np.int64
    assert gaia["source_id"][0] == 4731162731473066880  # exact: no float round-trip
    # align_Gaia_to_VISWCS.py's cuts.
    assert (np.abs(gaia["x_deg"]) < 0.4).all() and (np.abs(gaia["y_deg"]) < 0.4).all()
    assert (gaia["gmag"] < 21).all() and (gaia["gmag_err"] < 0.02).all()
    assert np.isfinite(gaia["bp_rp"]).all()


def test_quadrant_gains() -> None:
    gains = read_quadrant_gains(GAINS)
    assert len(gains) == 143
    assert "5-3.G" not in gains  # absent from VISQL's file
    assert gains["1-1.E"] == 1.0348555492
    assert gains["6-6.H"] == 1.0553634654
    values = np.array(list(gains.values()))
    assert values.min() > 0.8 and values.max() < 1.2
    assert values.mean() == pytest.approx(1.0, abs=0.01)


def test_gzip_is_read_transparently(tmp_path: Path, momcat) -> None:
    gz = tmp_path / "x_stars2_mom.cat.gz"
    with MOMCAT.open("rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    again = read_star_moments(gz)
    assert len(again) == len(momcat)
    assert (again["r2"] == momcat["r2"]).all()


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


HEADER = (
    "#|   catalogue   |      R2  |    COMA1 |  COMA 2 |    ELL 1 |   ELL 2 |   TREF 1 |  TREF 2 |\n"
)
GOOD = "| C_20240701_001045_W_52148000.VIS.bin_01_01_stars2_mom.cat | 1.978 | 0.0325 | -0.0242 |  -0.0236 |  0.0065 |  -0.2363 |  0.0251 |\n"  # noqa: E501
PLACEHOLDER = "| C_20240701_003150_W_52148082.VIS.bin_01_01_stars2_mom.cat |    9.900 |   0.9999 |   0.9999 |   0.9999 |   0.9999 |   0.9999 |   0.9999 |\n"  # noqa: E501


def test_placeholder_rows_kept_and_flagged(tmp_path: Path) -> None:
    p = _write(tmp_path, "psfmoments_202407.txt", HEADER + GOOD + "\n   \n" + PLACEHOLDER)
    table = read_psfmoments_table(p)
    assert len(table) == 2
    assert table["placeholder"].tolist() == [False, True]
    assert table["r2"][1] == 9.9
    rows = iq_rows_from_visql(p)
    assert np.isfinite(rows[0]["score"])
    assert np.isnan(rows[1]["score"]) and np.isnan(rows[1]["r2"])
    assert iq_class(rows[1]["score"]) == "rejected"


def test_whitespace_variants_and_no_header(tmp_path: Path) -> None:
    squeezed = GOOD.replace(" ", "")
    table = read_psfmoments_table(_write(tmp_path, "a.txt", squeezed))
    assert len(table) == 1 and table["r2"][0] == 1.978
    empty = read_psfmoments_table(_write(tmp_path, "b.txt", HEADER))
    assert len(empty) == 0 and "placeholder" in empty.colnames


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (GOOD.replace("1.978", "1.97x"), r"line 3: column 'r2': not a number"),
        (GOOD.replace("| 0.0325 ", ""), r"line 3: expected 8 fields, found 7"),
        (GOOD.lstrip("|"), r"line 3: expected a row"),
        ("| C_a b | 1 | 1 | 1 | 1 | 1 | 1 | 1 |\n", r"line 3: bad catalogue name"),
    ],
)
def test_psfmoments_malformed_lines_name_the_line(tmp_path: Path, body: str, match: str) -> None:
    p = _write(tmp_path, "bad.txt", HEADER + GOOD + body)
    with pytest.raises(ValueError, match=match):
        read_psfmoments_table(p)


def test_psfmoments_wrong_header(tmp_path: Path) -> None:
    p = _write(tmp_path, "bad.txt", HEADER.replace("COMA1", "SIZE") + GOOD)
    with pytest.raises(ValueError, match="line 1: unexpected header"):
        read_psfmoments_table(p)


def test_catalogue_readers_reject_malformed_input(tmp_path: Path) -> None:
    lines = MOMCAT.read_text().splitlines(keepends=True)
    short = _write(tmp_path, "m1.cat", "".join(lines[:5]) + " 1-1.E 0.1 0.2\n")
    with pytest.raises(ValueError, match="line 6: expected 19 columns, found 3"):
        read_star_moments(short)
    badnum = _write(tmp_path, "m2.cat", "".join(lines[:3]) + lines[3].replace("66154.5", "66x54.5"))
    with pytest.raises(ValueError, match="line 4: column"):
        read_star_moments(badnum)
    badhead = _write(tmp_path, "m3.cat", lines[0].replace("WTFLUX", "FLUX2") + lines[1])
    with pytest.raises(ValueError, match="header"):
        read_star_moments(badhead)
    badext = _write(tmp_path, "m4.cat", lines[0] + lines[1].replace("1-1.E", "7-1.E"))
    with pytest.raises(ValueError, match="bad extension name"):
        read_star_moments(badext)
    assert len(read_star_moments(_write(tmp_path, "m5.cat", lines[0]))) == 0

    cat_lines = STARS2.read_text().splitlines(keepends=True)
    ten = _write(tmp_path, "s.cat", cat_lines[0] + " ".join(cat_lines[1].split()[:10]) + "\n")
    with pytest.raises(ValueError, match="line 2: expected 11 columns, found 10"):
        read_star_catalogue(ten)
    frac_flag = cat_lines[0].rsplit(" ", 2)[0] + " 2.5 0.48\n"
    with pytest.raises(ValueError, match="line 1: column 'flags': not an integer"):
        read_star_catalogue(_write(tmp_path, "s2.cat", frac_flag))
    assert len(read_star_catalogue(_write(tmp_path, "s3.cat", ""))) == 0

    with pytest.raises(ValueError, match="line 1: expected a commented header"):
        read_gaia_instrument_catalogue(_write(tmp_path, "g.cat", "1 2 3\n"))
    with pytest.raises(ValueError, match="missing"):
        read_gaia_instrument_catalogue(_write(tmp_path, "g2.cat", "# RAV DECV G\n1 2 3\n"))

    gains = "# EXT relative_gain\n1-1.E 1.03\n"
    with pytest.raises(ValueError, match=r"line 3: duplicate extension 1-1\.E"):
        read_quadrant_gains(_write(tmp_path, "q1.txt", gains + "1-1.E 1.01\n"))
    with pytest.raises(ValueError, match="line 3: gain must be finite and > 0"):
        read_quadrant_gains(_write(tmp_path, "q2.txt", gains + "1-1.F -1\n"))
    with pytest.raises(ValueError, match="line 3: expected 'EXT gain'"):
        read_quadrant_gains(_write(tmp_path, "q3.txt", gains + "1-1.F\n"))
    with pytest.raises(ValueError, match="line 2: bad extension name"):
        read_quadrant_gains(_write(tmp_path, "q4.txt", "# x\n1-1.X 1.0\n"))
    binary = tmp_path / "q5.txt"
    binary.write_bytes(b"# x\n1-1.E 1.0\n\xff\xfe\n")
    with pytest.raises(ValueError, match="not UTF-8 text"):
        read_quadrant_gains(binary)
