"""The metric registry: every number viskom records, with its unit, meaning and roll-up rule.

One entry per metric name. The runner refuses a metric a stage did not declare here, rolls
quadrant values up to CCDs and the focal plane by the entry's `aggregation` (`median` of the
quadrants that have a finite value, `sum` of them; `measured`: the stage measures every level
itself, e.g. a median over all stars of the focal plane, not a median of quadrant medians), and
the CLI, the README lists and the CSV headers take names and units from here.

Units of a metric value (`unit` below) are physical units; the *level* of a row is the focal
plane `FPA`, a CCD `R-C`, a 3x3 block `Bxxyy` or a quadrant `R-C.Q`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

ALL_TYPES = frozenset({"SCIENCE", "DARK", "BIAS", "FLAT", "CHARGE", "UNKNOWN"})
SCIENCE = frozenset({"SCIENCE"})
PARTICLES = frozenset({"SCIENCE", "DARK"})
CATALOGUED = frozenset({"SCIENCE", "FLAT", "DARK"})
AGGREGATIONS = ("median", "sum", "measured")
LEVELS = ("quadrant", "ccd", "block", "fpa")


@dataclass(frozen=True)
class Metric:
    """One registered metric: name, physical unit, description, stage, roll-up and scope."""

    name: str
    unit: str
    description: str
    stage: str
    aggregation: str  # median | sum | measured
    frame_types: frozenset[str]
    levels: tuple[str, ...] = ("quadrant", "ccd", "fpa")

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"{self.name}: aggregation {self.aggregation!r} not in {AGGREGATIONS}")
        if not self.levels or not set(self.levels) <= set(LEVELS):
            raise ValueError(f"{self.name}: levels {self.levels} not within {LEVELS}")

    @property
    def rolled_up(self) -> bool:
        """Whether the runner computes the CCD and FPA values from the quadrants."""
        return self.aggregation in ("median", "sum")


def level_of_unit(unit: str) -> str:
    """'fpa' for FPA, 'block' for a 3x3 block B1212, 'quadrant' for R-C.Q, else 'ccd'."""
    if unit == "FPA":
        return "fpa"
    if unit.startswith("B"):
        return "block"
    return "quadrant" if "." in unit else "ccd"


def _m(
    name: str,
    unit: str,
    description: str,
    stage: str,
    aggregation: str,
    frame_types: frozenset[str],
    levels: Iterable[str] = ("quadrant", "ccd", "fpa"),
) -> Metric:
    return Metric(name, unit, description, stage, aggregation, frame_types, tuple(levels))


FPA = ("fpa",)
QUAD = ("quadrant",)
ALL_LEVELS = ("quadrant", "ccd", "block", "fpa")

_ENTRIES = [
    # -- detector_health -------------------------------------------------------------------
    _m("bias_prescan_adu", "ADU", "serial prescan level (clipped mean, clipping-corrected)",
       "detector_health", "median", ALL_TYPES),
    _m("bias_overscan_adu", "ADU", "serial overscan level (clipped mean, clipping-corrected)",
       "detector_health", "median", ALL_TYPES),
    _m("bias_parallel_overscan_adu", "ADU", "parallel overscan level (clipped mean)",
       "detector_health", "median", ALL_TYPES),
    _m("read_noise_adu", "ADU", "robust sigma of the detrended serial overscan",
       "detector_health", "median", ALL_TYPES),
    _m("read_noise_e", "e-", "read noise in electrons (quadrant GAIN)",
       "detector_health", "median", ALL_TYPES),
    _m("image_level_adu", "ADU", "image median minus bias", "detector_health", "median",
       ALL_TYPES),
    _m("image_sigma_adu", "ADU", "robust sigma of the image", "detector_health", "median",
       ALL_TYPES),
    _m("hot_pixels", "pixels", "pixels above median + N robust sigma", "detector_health", "sum",
       ALL_TYPES),
    _m("saturated_pixels", "pixels", "pixels at or above SATURATE", "detector_health", "sum",
       ALL_TYPES),
    _m("geometry_mismatch", "flag", "1 when bias-only strips are not where the header says",
       "detector_health", "sum", ALL_TYPES),
    _m("dark_current_e_per_s", "e-/px/s", "dark current (image level over EXPTIME)",
       "detector_health", "median", frozenset({"DARK"})),
    _m("flat_level_e", "e-", "flat level in electrons", "detector_health", "median",
       frozenset({"FLAT"})),
    _m("flat_nonuniformity", "ratio", "robust rms / median of block means of the flat",
       "detector_health", "median", frozenset({"FLAT"})),
    _m("ci_level_adu", "ADU", "charge-injection level", "detector_health", "median",
       frozenset({"CHARGE"})),
    _m("ci_rows", "rows", "rows with injected charge", "detector_health", "sum",
       frozenset({"CHARGE"})),
    # -- catalogue ---------------------------------------------------------------------------
    _m("n_sources", "sources", "sources catalogued", "catalogue", "sum", CATALOGUED),
    _m("sky_background_adu", "ADU", "median local background of the sources", "catalogue",
       "measured", CATALOGUED, QUAD),
    # -- psf ---------------------------------------------------------------------------------
    *(
        _m(name, unit, text, "psf", "measured", SCIENCE, ("ccd", "fpa"))
        for name, unit, text in (
            ("psf_r2", "px2", "median R2 (Gaussian-weighted second moment) of the stars"),
            ("psf_e1", "", "median ellipticity e1 of the stars"),
            ("psf_e2", "", "median ellipticity e2 of the stars"),
            ("psf_coma1", "", "median coma 1 of the stars"),
            ("psf_coma2", "", "median coma 2 of the stars"),
            ("psf_trefoil1", "", "median trefoil 1 of the stars"),
            ("psf_trefoil2", "", "median trefoil 2 of the stars"),
            ("n_stars", "stars", "stars measured (no flag)"),
        )
    ),
    _m("iq_score", "", "VISQL's Mahalanobis distance of (R2, e1, e2) from the reference",
       "psf", "measured", SCIENCE, FPA),
    _m("n_star_candidates", "stars", "catalogue sources chosen as stars", "psf", "measured",
       SCIENCE, FPA),
    _m("psf_locus_found", "flag", "1 when a stellar locus was found", "psf", "measured",
       SCIENCE, FPA),
    _m("psf_locus_radius_px", "px", "FLUX_RADIUS of the stellar locus", "psf", "measured",
       SCIENCE, FPA),
    *(
        _m(f"n_rejected_{why}", "stars", f"stars rejected: {text}", "psf", "measured", SCIENCE,
           FPA)
        for why, text in (
            ("saturated", "a saturated pixel in the stamp"),
            ("blended", "a neighbour adds to the weighted flux"),
            ("cosmic_hit", "a particle hit in the core"),
            ("outlier", "R2/e1/e2 beyond 5 robust sigma"),
        )
    ),
    # -- events ------------------------------------------------------------------------------
    *(
        _m(name, unit, text, "events", "measured", PARTICLES)
        for name, unit, text in (
            ("cr_hits", "hits", "distinct particle hits"),
            ("cr_hits_per_cm2_s", "1/cm2/s", "hits per cm2 per s (EXPTIME + 36 s readout)"),
            ("cr_particles", "particles", "hits corrected for deposits that touch"),
            ("cr_particles_per_cm2_s", "1/cm2/s", "particles per cm2 per s"),
            ("cr_pixel_fraction", "fraction", "share of measured pixels in hits"),
            ("cr_tracks", "hits", "cosmic-ray hits that are not point deposits"),
            ("proton_events", "hits", "short 1e4-4e4 ADU tracks"),
            ("xray_candidates", "events", "point deposits of 400-1200 ADU"),
            ("xray_events", "events", "X-ray events net of near-vertical cosmic rays"),
            ("xray_events_err", "events", "error of xray_events (Poisson and baseline)"),
            ("xray_contamination", "fraction", "share of candidates expected from cosmic rays"),
            ("cat_xray", "sources", "VISQL catalogue class: X-ray"),
            ("cat_cosmics", "sources", "VISQL catalogue class: cosmic rays"),
            ("cat_protons", "sources", "VISQL catalogue class: protons"),
        )
    ),
    *(
        _m(name, unit, text, "events", "measured", PARTICLES, FPA)
        for name, unit, text in (
            ("xray_top10count", "sources", "VISQL: X-ray class count in the 10 densest cells"),
            ("proton_top10count", "sources", "VISQL: proton class count in the 10 densest cells"),
            ("diffusion_var_px2", "px2", "charge diffusion variance from the frame's tracks"),
            ("diffusion_tracks", "hits", "tracks the diffusion was measured on"),
            ("hot_pixels_masked", "pixels", "hot pixels masked (calibration map)"),
            ("psf_single_ratio_limit", "ratio", "single-pixel PSF limit of the hit detector"),
            ("psf_pair_ratio_limit", "ratio", "two-pixel PSF limit of the hit detector"),
            ("psf_limit_stars", "stars", "stars the PSF limits were measured on"),
            ("quadrants_skipped", "quadrants", "quadrants not measured"),
            ("xray_baseline_ratio", "ratio", "X-ray baseline: candidates per track"),
        )
    ),
    # -- gaia --------------------------------------------------------------------------------
    *(
        _m(name, "px", text, "gaia", "measured", SCIENCE)
        for name, text in (
            ("astrom_dx_pix", "Gaia minus VIS offset along x"),
            ("astrom_dy_pix", "Gaia minus VIS offset along y"),
        )
    ),
    _m("n_matched", "stars", "VIS stars matched to Gaia", "gaia", "measured", SCIENCE),
    *(
        _m(name, unit, text, "gaia", "measured", SCIENCE, FPA)
        for name, unit, text in (
            ("astrom_sigma_pix", "px", "residual sigma of the affine match"),
            ("astrom_ddx_dx", "px/0.75deg", "gradient of dx along x"),
            ("astrom_ddy_dx", "px/0.75deg", "gradient of dy along x"),
            ("astrom_ddx_dy", "px/0.75deg", "gradient of dx along y"),
            ("astrom_ddy_dy", "px/0.75deg", "gradient of dy along y"),
            ("n_gaia_stars", "stars", "Gaia stars in the field"),
            ("astrom_blind_solved", "flag", "1 when the pointing came from a blind solve"),
            ("astrom_blind_dra_arcsec", "arcsec", "blind solution minus header RA (cos dec)"),
            ("astrom_blind_ddec_arcsec", "arcsec", "blind solution minus header Dec"),
            ("astrom_blind_dpa_deg", "deg", "blind solution minus header PA"),
            ("astrom_blind_rms_pix", "px", "rms of the blind solution"),
            ("gaia_aperture_correction", "ratio", "aperture correction applied to FLUX_AUTO"),
            ("gaia_aperture_measured", "ratio", "aperture correction measured on the frame"),
            ("gaia_aperture_error", "ratio", "error of the measured aperture correction"),
            ("gaia_aperture_stars", "stars", "stars the aperture correction was measured on"),
        )
    ),
    *(
        _m(name, "ratio", text, "gaia", "measured", SCIENCE, ALL_LEVELS)
        for name, text in (
            ("vis_over_gaia_075", "VIS/Gaia flux at BP-RP 0.75"),
            ("vis_over_gaia_175", "VIS/Gaia flux at BP-RP 1.75"),
            ("vis_over_gaia_275", "VIS/Gaia flux at BP-RP 2.75"),
        )
    ),
    _m("gaia_colour_n_stars", "stars", "stars in the colour fit", "gaia", "measured", SCIENCE,
       ALL_LEVELS),
    *(
        _m(name, unit, text, "gaia", "measured", SCIENCE, ALL_LEVELS)
        for name, unit, text in (
            ("gaia_colour_c0", "ln", "colour fit ln(VIS/Gaia) constant"),
            ("gaia_colour_c1", "ln/mag", "colour fit linear term in BP-RP"),
            ("gaia_colour_c2", "ln/mag2", "colour fit quadratic term in BP-RP"),
            ("gaia_colour_rms", "ln", "rms of the colour fit"),
        )
    ),
    # -- mosaic_astrometry (VISQL's getastrom) -----------------------------------------------
    *(
        _m(name, unit, text, "mosaic_astrometry", "measured", SCIENCE, FPA)
        for name, unit, text in (
            ("mosaic_wcs_dra_arcsec", "arcsec", "mosaic solution minus header WCS at the "
             "centre, RA cos Dec"),
            ("mosaic_wcs_ddec_arcsec", "arcsec", "mosaic solution minus header WCS at the "
             "centre, Dec"),
            ("mosaic_wcs_drot_deg", "deg", "mosaic solution minus header WCS, rotation"),
            ("mosaic_wcs_scale_ratio", "ratio", "mosaic solution over header WCS, pixel scale"),
            ("mosaic_wcs_max_offset_arcsec", "arcsec", "largest offset of the two over the "
             "mosaic"),
            ("mosaic_wcs_rms_arcsec", "arcsec", "rms of the stars astrometry.net matched"),
            ("mosaic_wcs_stars", "stars", "stars astrometry.net matched on the mosaic"),
            ("mosaic_wcs_seconds", "s", "time of the blind solve (index and solve-field)"),
        )
    ),
    # -- space_weather -----------------------------------------------------------------------
    *(
        _m(name, unit, text, "space_weather", "measured", PARTICLES, FPA)
        for name, unit, text in (
            ("goes_xrsa_mean", "W/m2", "GOES XRS-A (0.05-0.4 nm) mean over the exposure"),
            ("goes_xrsa_max", "W/m2", "GOES XRS-A maximum over the exposure"),
            ("goes_xrsb_mean", "W/m2", "GOES XRS-B (0.1-0.8 nm) mean over the exposure"),
            ("goes_xrsb_max", "W/m2", "GOES XRS-B maximum over the exposure"),
            ("goes_protons_ge10mev", "pfu", "GOES >= 10 MeV proton flux over the exposure"),
        )
    ),
]  # fmt: skip

METRICS: dict[str, Metric] = {}
for _entry in _ENTRIES:
    if _entry.name in METRICS:
        raise ValueError(f"metric {_entry.name!r} registered twice")
    METRICS[_entry.name] = _entry
del _entry


def close_names(name: str, known: Iterable[str], n: int = 5) -> list[str]:
    """The registered names closest to `name` (difflib), then those containing it."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=n, cutoff=0.6)
    close += [k for k in known if name and name in k and k not in close]
    return close[:n]


def unknown_message(kind: str, name: str, known: Iterable[str]) -> str:
    """'unknown metric 'read_nose_e'; did you mean: read_noise_e, read_noise_adu?'"""
    close = close_names(name, known)
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    return f"unknown {kind} {name!r}{hint}"


def metrics_of_stage(stage: str) -> tuple[str, ...]:
    """Names of the metrics a stage writes, in registry order."""
    return tuple(m.name for m in METRICS.values() if m.stage == stage)


def markdown_table() -> str:
    """The registry as the Markdown page docs/METRICS.md (a test keeps that file current)."""
    lines = [
        "# viskom metrics",
        "",
        "Generated from the metric registry (`src/viskom/metrics.py`; `viskom metrics --list`).",
        "Levels: `fpa` the focal plane `FPA`, `block` a 3x3 block `Bxxyy`, `ccd` a CCD `R-C`,",
        "`quadrant` a quadrant `R-C.Q`. Roll-up `median`/`sum`: the runner computes CCD and FPA",
        "values from the quadrants; `measured`: the stage measures each level itself.",
    ]
    header = "| metric | unit | roll-up | levels | frame types | meaning |"
    stage = None
    for m in METRICS.values():
        if m.stage != stage:
            stage = m.stage
            lines += ["", f"## {stage}", "", header, "|---|---|---|---|---|---|"]
        types = "all" if m.frame_types == ALL_TYPES else ", ".join(sorted(m.frame_types))
        lines.append(
            f"| `{m.name}` | {m.unit or '-'} | {m.aggregation} | {', '.join(m.levels)} | "
            f"{types} | {m.description} |"
        )
    return "\n".join(lines) + "\n"
