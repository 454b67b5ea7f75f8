"""What the quick-look catalogue depth changes: the demo's focal-plane metrics at both depths.

Runs `viskom demo` twice with the working tree, once with `catalogue_depth = "full"` (VISQL's
1.5 sigma catalogue) and once with "quicklook" (`VISKOM_CATALOGUE_DEPTH`), and prints, per
focal-plane metric measured at both depths, the median over the exposures of the change
(relative where the full depth's value is not near zero, else absolute) and the worst
exposure's, plus the metrics one depth has and the other has not. The README's "What the
quick-look depth changes" is this table (and bench_quicklook.py's for the full-size frame).

    python benchmarks/compare_depths.py [--keep /tmp/depths]
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from compare_demo_metrics import metrics_table, run_demo

REPO = Path(__file__).resolve().parents[1]

#: Metrics printed first, in this order: the ones an instrument scientist follows.
FOLLOWED = (
    "n_sources", "n_stars", "psf_r2", "psf_e1", "psf_e2", "iq_score", "cr_hits",
    "xray_candidates", "proton_events", "vis_over_gaia_175", "gaia_aperture_correction",
    "gaia_colour_c0", "n_matched",
)  # fmt: skip


def changes(full: dict, quick: dict) -> list[str]:
    """One line per focal-plane metric: the median and worst change over the exposures."""
    per_metric: dict[str, list[tuple[float, float]]] = {}
    for (exposure, unit, metric), value in full.items():
        other = quick.get((exposure, unit, metric))
        if unit != "FPA" or value is None or other is None:
            continue
        if not (math.isfinite(value) and math.isfinite(other)):
            continue
        per_metric.setdefault(metric, []).append((value, other))
    lines = []
    order = [m for m in FOLLOWED if m in per_metric] + sorted(set(per_metric) - set(FOLLOWED))
    for metric in order:
        pairs = np.array(per_metric[metric])
        scale = np.abs(pairs[:, 0])
        relative = bool(np.all(scale > 1e-3))
        delta = pairs[:, 1] - pairs[:, 0]
        if relative:
            delta = 100.0 * delta / scale
        worst = delta[np.argmax(np.abs(delta))]
        unit = " %" if relative else ""
        lines.append(
            f"{metric:28s} median {np.median(delta):+.4g}{unit}  worst {worst:+.4g}{unit}"
            f"  ({len(pairs)} exposures)"
        )
    fpa_full = {k[2] for k in full if k[1] == "FPA"}
    fpa_quick = {k[2] for k in quick if k[1] == "FPA"}
    if fpa_full - fpa_quick:
        lines.append(f"full depth only: {', '.join(sorted(fpa_full - fpa_quick))}")
    if fpa_quick - fpa_full:
        lines.append(f"quicklook only: {', '.join(sorted(fpa_quick - fpa_full))}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="keep both demo folders under this folder")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="viskom-depths-"))
    work.mkdir(parents=True, exist_ok=True)
    seconds = {
        depth: run_demo(REPO / "src", work / depth, {"VISKOM_CATALOGUE_DEPTH": depth})
        for depth in ("full", "quicklook")
    }
    full = metrics_table(work / "full" / "data" / "viskom.db")
    quick = metrics_table(work / "quicklook" / "data" / "viskom.db")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"demo: full depth {seconds['full']:.0f} s, quicklook {seconds['quicklook']:.0f} s")
    print("\n".join(changes(full, quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
