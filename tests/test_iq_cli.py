"""`viskom iq`: VISQL's real July 2024 month table scored with the same columns as ours."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from typer.testing import CliRunner

from viskom.cli import app

DATA = Path(__file__).parent / "data" / "visql"
runner = CliRunner()


def test_score_visql_month_table() -> None:
    result = runner.invoke(
        app, ["iq", "--from-visql", str(DATA / "psfmoments_202407.txt"), "--format", "csv"]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert list(rows[0]) == [
        "exposure", "r2", "e1", "e2", "score", "coma1", "coma2", "trefoil1", "trefoil2"
    ]  # fmt: skip
    assert len(rows) == 1802
    row = next(r for r in rows if r["exposure"] == "C_20240713_032840_W_52167482.VIS.bin_01_01")
    assert float(row["r2"]) == pytest.approx(1.985)
    assert float(row["e1"]) == pytest.approx(-0.0215)
    # Hand computation with VISQL's reference (VISQL-SPEC 7.4): 23.777
    assert float(row["score"]) == pytest.approx(23.777, abs=1e-3)
    table = runner.invoke(app, ["iq", "--from-visql", str(DATA / "psfmoments_202407.txt")])
    assert table.exit_code == 0 and "1802 exposures" in table.output


def test_iq_needs_one_source(tmp_path) -> None:
    result = runner.invoke(app, ["iq"])
    assert result.exit_code != 0
    bad = tmp_path / "psfmoments_bad.txt"
    bad.write_text("#| catalogue | R2 |\n| x | not-a-number |\n")
    result = runner.invoke(app, ["iq", "--from-visql", str(bad)])
    assert result.exit_code == 2 and "error" in result.output
