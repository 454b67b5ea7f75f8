"""Image-quality (IQ) score of an exposure from its median PSF moments (VISQL-SPEC 7.4).

The score is a squared Mahalanobis distance in (R2, e1, e2) from a reference point:

    score = (e2 - e2m)^2 / vare2 + [dR2, de1] C^-1 [dR2, de1]^T,   C = [[cov00, cov01],
                                                                       [cov01, cov11]],

with (R2, e1) correlated and e2 independent. VISQL's reference was calibrated on
2023-09-20..23; `IQReference.from_mapping` loads another one from configuration and
`fit_reference` derives one from a calibration period.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from math import isfinite, sqrt
from typing import Any, overload

import numpy as np

from viskom.measure.robust import MAD_TO_SIGMA

IQ_OK = 27.0  # score below this: nominal image quality (VISQL highlights these)
IQ_REJECT = 1000.0  # score above this: exposure rejected downstream (VISQL getmomcats)

_NUMERIC_FIELDS = ("r2m", "e1m", "e2m", "cov00", "cov01", "cov11", "vare2")


@dataclass(frozen=True)
class IQReference:
    """Reference PSF moments and their scatter; defaults are VISQL's adopted constants."""

    r2m: float = 1.9233812949640285
    e1m: float = -0.023129496402877696
    e2m: float = 0.002733812949640288
    cov00: float = 0.0005422666041080192
    cov01: float = -0.00011841403399019925
    cov11: float = 4.4881659889479756e-05
    vare2: float = 5.332022152062523e-06
    name: str = "VISQL 2023-09-20..23"

    def __post_init__(self) -> None:
        for key in _NUMERIC_FIELDS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
                raise ValueError(
                    f"IQ reference {self.name!r}: {key} must be a number, got {value!r}"
                )
            if not isfinite(float(value)):
                raise ValueError(f"IQ reference {self.name!r}: {key} must be finite, got {value}")
        det = self.cov00 * self.cov11 - self.cov01 * self.cov01
        if not (self.cov00 > 0 and self.cov11 > 0 and det > 0):
            raise ValueError(
                f"IQ reference {self.name!r}: (R2, e1) covariance [[{self.cov00}, {self.cov01}], "
                f"[{self.cov01}, {self.cov11}]] is not positive definite (determinant {det:.3g})"
            )
        if not self.vare2 > 0:
            raise ValueError(f"IQ reference {self.name!r}: vare2 must be > 0, got {self.vare2}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> IQReference:
        """Build a reference from configuration: all of r2m..vare2, optional name (or label)."""
        data = dict(mapping)
        if "label" in data and "name" not in data:
            data["name"] = data.pop("label")
        unknown = sorted(set(data) - {*_NUMERIC_FIELDS, "name"})
        if unknown:
            raise ValueError(f"IQ reference: unknown keys {unknown}; expected {_NUMERIC_FIELDS}")
        missing = [k for k in _NUMERIC_FIELDS if k not in data]
        if missing:
            raise ValueError(f"IQ reference: missing keys {missing}")
        values: dict[str, Any] = {"name": str(data.get("name", "configured IQ reference"))}
        for key in _NUMERIC_FIELDS:
            try:
                values[key] = float(data[key])
            except (TypeError, ValueError):
                raise ValueError(
                    f"IQ reference {values['name']!r}: {key} must be a number, got {data[key]!r}"
                ) from None
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        """The reference as a plain dict (for configuration files and provenance records)."""
        return asdict(self)

    @property
    def covariance(self) -> np.ndarray:
        """The 2x2 (R2, e1) covariance matrix C."""
        return np.array([[self.cov00, self.cov01], [self.cov01, self.cov11]])

    @property
    def inverse_covariance(self) -> np.ndarray:
        """C^-1, the (R2, e1) part of the score's metric."""
        return np.linalg.inv(self.covariance)

    @property
    def sigma_r2(self) -> float:
        """Reference scatter of R2 (sqrt cov00)."""
        return sqrt(self.cov00)

    @property
    def sigma_e1(self) -> float:
        """Reference scatter of e1 (sqrt cov11)."""
        return sqrt(self.cov11)

    @property
    def sigma_e2(self) -> float:
        """Reference scatter of e2 (sqrt vare2)."""
        return sqrt(self.vare2)

    @property
    def corr_r2_e1(self) -> float:
        """Correlation coefficient of R2 and e1."""
        return self.cov01 / sqrt(self.cov00 * self.cov11)


def iq_score(
    r2: np.ndarray | float,
    e1: np.ndarray | float,
    e2: np.ndarray | float,
    reference: IQReference | None = None,
) -> np.ndarray:
    """VISQL's IQ score (Mahalanobis distance squared from the reference), vectorised.

    Inputs broadcast against each other; NaN inputs give NaN.
    """
    ref = reference if reference is not None else IQReference()
    d_r2 = np.asarray(r2, dtype=float) - ref.r2m
    d_e1 = np.asarray(e1, dtype=float) - ref.e1m
    d_e2 = np.asarray(e2, dtype=float) - ref.e2m
    ci = ref.inverse_covariance
    return (
        d_e2 * d_e2 / ref.vare2
        + ci[0, 0] * d_r2 * d_r2
        + 2.0 * ci[0, 1] * d_r2 * d_e1
        + ci[1, 1] * d_e1 * d_e1
    )


@overload
def iq_class(score: float, *, ok: float = ..., reject: float = ...) -> str: ...
@overload
def iq_class(score: np.ndarray, *, ok: float = ..., reject: float = ...) -> np.ndarray: ...
def iq_class(
    score: float | np.ndarray, *, ok: float = IQ_OK, reject: float = IQ_REJECT
) -> str | np.ndarray:
    """'ok' (score < ok), 'degraded' (ok..reject) or 'rejected' (> reject or NaN)."""
    s = np.asarray(score, dtype=float)
    cls = np.where(s < ok, "ok", np.where(s <= reject, "degraded", "rejected"))
    return str(cls) if cls.ndim == 0 else cls


def fit_reference(
    r2: np.ndarray,
    e1: np.ndarray,
    e2: np.ndarray,
    *,
    nsig: float = 2.5,
    max_iter: int = 20,
    min_points: int = 10,
    name: str = "fitted IQ reference",
) -> IQReference:
    """Derive a new reference from the exposures of a calibration period.

    Method: start from the median and 1.4826*MAD of each quantity and keep exposures within
    5 robust sigma of it. Then iterate: means and covariance of (R2, e1) and variance of e2
    from the kept exposures, corrected for the truncation of the clip (a 3-D Gaussian cut at
    chi^2 < c keeps variance fraction P(chi2_5 < c) / P(chi2_3 < c)); keep exposures whose
    score under this reference is below c = 3 nsig^2 (VISQL's own clip, 18.75 for nsig=2.5);
    stop when the kept set no longer changes. Non-finite rows are ignored. Raises ValueError
    if fewer than `min_points` exposures remain.
    """
    data = np.column_stack([np.asarray(v, dtype=float).ravel() for v in (r2, e1, e2)])
    data = data[np.isfinite(data).all(axis=1)]
    if len(data) < min_points:
        raise ValueError(f"fit_reference: {len(data)} finite exposures, need {min_points}")
    med = np.median(data, axis=0)
    # 1.4826 x MAD, as VISQL (astropy's mad_std uses 1.482602..., which could move the seed clip)
    from astropy.stats import median_absolute_deviation  # not at import: `viskom status`
    from scipy.stats import chi2

    mad = MAD_TO_SIGMA * median_absolute_deviation(data, axis=0)
    mad = np.where(mad > 0, mad, np.finfo(float).tiny)
    keep = (np.abs(data - med) <= 5.0 * mad).all(axis=1)
    cut = 3.0 * nsig * nsig
    shrink = chi2.cdf(cut, 5) / chi2.cdf(cut, 3)
    ref: IQReference | None = None
    for _ in range(max_iter):
        if keep.sum() < min_points:
            raise ValueError(
                f"fit_reference: only {int(keep.sum())} exposures left after clipping, "
                f"need {min_points}"
            )
        sub = data[keep]
        mean = sub.mean(axis=0)
        cov = np.cov(sub[:, :2], rowvar=False) / shrink
        ref = IQReference(
            r2m=float(mean[0]),
            e1m=float(mean[1]),
            e2m=float(mean[2]),
            cov00=float(cov[0, 0]),
            cov01=float(cov[0, 1]),
            cov11=float(cov[1, 1]),
            vare2=float(np.var(sub[:, 2], ddof=1) / shrink),
            name=name,
        )
        new_keep = iq_score(data[:, 0], data[:, 1], data[:, 2], ref) < cut
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    assert ref is not None
    return ref
