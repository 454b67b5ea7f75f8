"""IQ score and reference (viskom.measure.iq) against VISQL-SPEC 7.4."""

from __future__ import annotations

import numpy as np
import pytest

from viskom.measure.iq import IQ_OK, IQ_REJECT, IQReference, fit_reference, iq_class, iq_score

VISQL_CINV = np.array([[4350.709, 11478.742], [11478.742, 52565.884]])


def test_default_reference_is_visqls() -> None:
    ref = IQReference()
    assert ref.name == "VISQL 2023-09-20..23"
    assert ref.r2m == 1.9233812949640285
    assert ref.vare2 == 5.332022152062523e-06
    np.testing.assert_allclose(ref.inverse_covariance, VISQL_CINV, rtol=1e-4)
    # Derived numbers quoted in the spec.
    assert ref.sigma_r2 == pytest.approx(0.02329, abs=1e-5)
    assert ref.sigma_e1 == pytest.approx(0.00670, abs=1e-5)
    assert ref.sigma_e2 == pytest.approx(0.00231, abs=1e-5)
    assert ref.corr_r2_e1 == pytest.approx(-0.759, abs=1e-3)


def test_score_of_reference_point_is_zero() -> None:
    ref = IQReference()
    assert float(iq_score(ref.r2m, ref.e1m, ref.e2m)) == 0.0


def test_score_hand_computed() -> None:
    """The 2024-07-13 03:28:40 exposure's row: R2 1.985, e1 -0.0215, e2 0.0078."""
    d_r2 = 1.985 - 1.9233812949640285
    d_e1 = -0.0215 - -0.023129496402877696
    d_e2 = 0.0078 - 0.002733812949640288
    by_hand = (
        d_e2**2 / 5.332022152062523e-06
        + 4350.709 * d_r2**2
        + 2 * 11478.742 * d_r2 * d_e1
        + 52565.884 * d_e1**2
    )
    # 4.8136 (e2) + 16.5191 (R2) + 2.3051 (cross) + 0.1396 (e1) = 23.7774
    assert by_hand == pytest.approx(23.777, abs=2e-3)
    assert float(iq_score(1.985, -0.0215, 0.0078)) == pytest.approx(by_hand, rel=1e-6)


def test_score_is_vectorised_and_nan_safe() -> None:
    r2 = np.array([1.92, 1.95, 2.1, np.nan])
    e1 = np.array([-0.023, -0.02, -0.05, -0.02])
    e2 = np.array([0.003, 0.0, 0.01, 0.0])
    s = iq_score(r2, e1, e2)
    assert s.shape == (4,)
    for i in range(3):
        assert s[i] == pytest.approx(float(iq_score(r2[i], e1[i], e2[i])))
    assert np.isnan(s[3])
    # Broadcasting: one e2 for all.
    np.testing.assert_allclose(iq_score(r2[:3], e1[:3], 0.0), iq_score(r2[:3], e1[:3], [0, 0, 0]))


def test_class_thresholds() -> None:
    assert IQ_OK == 27.0 and IQ_REJECT == 1000.0
    assert iq_class(0.0) == "ok"
    assert iq_class(26.999) == "ok"
    assert iq_class(27.0) == "degraded"
    assert iq_class(1000.0) == "degraded"
    assert iq_class(1000.001) == "rejected"
    assert iq_class(float("nan")) == "rejected"
    got = iq_class(np.array([1.0, 50.0, 5e3, np.nan]))
    assert got.tolist() == ["ok", "degraded", "rejected", "rejected"]


def test_visql_placeholder_row_is_rejected() -> None:
    """medianmoments.py's placeholder (R2 9.9, 0.9999) gets a huge score, as in VISQL."""
    assert iq_class(iq_score(9.9, 0.9999, 0.9999)) == "rejected"


def test_from_mapping_round_trip_and_validation() -> None:
    ref = IQReference()
    assert IQReference.from_mapping(ref.to_mapping()) == ref
    cfg = {
        "label": "2024-03 after decontamination",
        "r2m": "1.95",
        "e1m": -0.02,
        "e2m": 0.004,
        "cov00": 4e-4,
        "cov01": -1e-4,
        "cov11": 5e-5,
        "vare2": 6e-6,
    }
    new = IQReference.from_mapping(cfg)
    assert new.name == "2024-03 after decontamination" and new.r2m == 1.95
    assert float(iq_score(1.95, -0.02, 0.004, new)) == 0.0

    with pytest.raises(ValueError, match="positive definite"):
        IQReference.from_mapping({**cfg, "cov01": -2e-4})  # |corr| > 1
    with pytest.raises(ValueError, match="positive definite"):
        IQReference.from_mapping({**cfg, "cov00": -4e-4})
    with pytest.raises(ValueError, match="vare2"):
        IQReference.from_mapping({**cfg, "vare2": 0.0})
    with pytest.raises(ValueError, match="missing keys"):
        IQReference.from_mapping({k: v for k, v in cfg.items() if k != "cov11"})
    with pytest.raises(ValueError, match="unknown keys"):
        IQReference.from_mapping({**cfg, "cov10": 1.0})
    with pytest.raises(ValueError, match="must be a number"):
        IQReference.from_mapping({**cfg, "e1m": "abc"})
    with pytest.raises(ValueError, match="finite"):
        IQReference(r2m=float("nan"))


def test_fit_reference_recovers_truth_despite_outliers() -> None:
    truth = IQReference()
    rng = np.random.default_rng(42)
    n = 4000
    r2e1 = rng.multivariate_normal([truth.r2m, truth.e1m], truth.covariance, n)
    e2 = rng.normal(truth.e2m, truth.sigma_e2, n)
    # 3% bad exposures (defocus, tracking) and VISQL placeholders.
    bad = rng.choice(n, 120, replace=False)
    r2e1[bad, 0] += rng.uniform(0.1, 0.5, bad.size)
    e2[bad[:40]] += 0.05
    r2 = np.concatenate([r2e1[:, 0], [9.9, 9.9, np.nan]])
    e1 = np.concatenate([r2e1[:, 1], [0.9999, 0.9999, 0.0]])
    e2 = np.concatenate([e2, [0.9999, 0.9999, 0.0]])
    fit = fit_reference(r2, e1, e2, name="synthetic")
    assert fit.name == "synthetic"
    assert fit.r2m == pytest.approx(truth.r2m, abs=3 * truth.sigma_r2 / np.sqrt(n))
    assert fit.e1m == pytest.approx(truth.e1m, abs=3 * truth.sigma_e1 / np.sqrt(n))
    assert fit.e2m == pytest.approx(truth.e2m, abs=3 * truth.sigma_e2 / np.sqrt(n))
    assert fit.sigma_r2 == pytest.approx(truth.sigma_r2, rel=0.06)
    assert fit.sigma_e1 == pytest.approx(truth.sigma_e1, rel=0.06)
    assert fit.sigma_e2 == pytest.approx(truth.sigma_e2, rel=0.06)
    assert fit.corr_r2_e1 == pytest.approx(truth.corr_r2_e1, abs=0.03)


def test_fit_reference_needs_data() -> None:
    with pytest.raises(ValueError, match="need 10"):
        fit_reference([1.9] * 5, [-0.02] * 5, [0.0] * 5)
