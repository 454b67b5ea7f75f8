"""Optional blind astrometry of the focal-plane star list with astrometry.net (Debian 0.93).

What: when the header pointing is missing, or the Gaia match around it fails, the VIS stars
(instrument frame X, Y in degrees, as `le1.focalplane.sky_to_instrument` gives them) are
solved blind with astrometry.net's `solve-field` against index files built from the cached
Gaia table with `build-astrometry-index`. The answer is a pointing in VISQL's convention:
the sky position (RA, DEC) of the instrument-frame origin and the position angle PA, such
that `sky_to_instrument(ra, dec, RA, DEC, PA)` reproduces the star positions.

How, one module each: `index` builds the index files (`build_index`), `solve` runs the solver
on a star list (`solve_star_list`), `fit` fits VISQL's pointing to the solver's star
correspondences (`BlindSolution`), `tools` finds and runs the command-line tools.

All temporary files live in a temporary folder that is removed. A failing tool raises
`AstrometryNetError` with the tail of its stderr; an unsolved field, or one not solved
within the time limit, gives None and a logged reason.
"""

from viskom.sources.astrometry_net.fit import (
    DEFAULT_MAX_RMS_PIX,
    BlindSolution,
    remove_visql_distortion,
)
from viskom.sources.astrometry_net.index import (
    DEFAULT_SCALE_ARCMIN,
    build_index,
    default_index_id,
    preset_quad_range_arcmin,
    presets_for_scale,
)
from viskom.sources.astrometry_net.solve import (
    DEFAULT_BINNING,
    DEFAULT_MAX_STARS,
    SCALE_TOLERANCE,
    solve_star_list,
)
from viskom.sources.astrometry_net.tools import (
    APT_PACKAGE,
    BUILD_INDEX,
    SOLVE_FIELD,
    TOOLS,
    AstrometryNetError,
    tools_available,
)

__all__ = [
    "APT_PACKAGE",
    "BUILD_INDEX",
    "DEFAULT_BINNING",
    "DEFAULT_MAX_RMS_PIX",
    "DEFAULT_MAX_STARS",
    "DEFAULT_SCALE_ARCMIN",
    "SCALE_TOLERANCE",
    "SOLVE_FIELD",
    "TOOLS",
    "AstrometryNetError",
    "BlindSolution",
    "build_index",
    "default_index_id",
    "preset_quad_range_arcmin",
    "presets_for_scale",
    "remove_visql_distortion",
    "solve_star_list",
    "tools_available",
]
