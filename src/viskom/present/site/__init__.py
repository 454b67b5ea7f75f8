"""The dashboard's pages: Jinja2 templates (every value escaped) and Bokeh plots.

Pages are rendered from plain data (dicts and lists the pipeline gathered from the store);
nothing here reads the database or the product tree. Bokeh's JavaScript is copied into the
site's `static/` once per build (no CDN: the site works with no internet, from `file://` or
any web server); a trend page's data live in `trends/data/<metric>.js`, so that a new
exposure rewrites small data files, not every page.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
BOKEH_JS = ("bokeh.min.js", "bokeh-widgets.min.js")
NAV = (
    ("index.html", "Now"),
    ("calendar.html", "Calendar"),
    ("trends/index.html", "Trends"),
    ("spaceweather.html", "Space weather"),
    ("gaia.html", "Gaia photometry"),
)


def bokeh_files() -> tuple[str, ...]:
    """The names of Bokeh's scripts in `static/` (versioned: a new Bokeh, new files)."""
    import bokeh

    return tuple(
        f"{Path(n).stem.removesuffix('.min')}-{bokeh.__version__}.min.js" for n in BOKEH_JS
    )


def copy_static(site: Path) -> list[Path]:
    """Copy the CSS, trend.js and Bokeh's JavaScript into `site/static` where missing or
    changed (once per build); returns what was written."""
    import bokeh

    source = Path(bokeh.__file__).parent / "server" / "static" / "js"
    target = site / "static"
    target.mkdir(parents=True, exist_ok=True)
    pairs = [(STATIC / n, target / n) for n in ("site.css", "trend.js", "favicon.svg")]
    pairs += [(source / n, target / v) for n, v in zip(BOKEH_JS, bokeh_files(), strict=True)]
    written = []
    for src, dst in pairs:
        if (
            not dst.exists()
            or dst.stat().st_size != src.stat().st_size
            or (dst.read_bytes() != src.read_bytes())
        ):
            shutil.copyfile(src, dst)
            written.append(dst)
    return written


class Pages:
    """Renders the templates with the navigation, the build time and the page's depth."""

    def __init__(self, built: str) -> None:
        from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(["html"], default=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.built = built

    def render(self, template: str, rel_path: str, **context: Any) -> str:
        """The HTML of `template` for the page at `rel_path` (relative links from there)."""
        root = "../" * rel_path.count("/")
        return self.env.get_template(template).render(
            root=root, nav=NAV, built=self.built, bokeh_js=bokeh_files(), **context
        )


def b64(values: np.ndarray, dtype: Any) -> str:
    """Base64 of the array's bytes as `dtype` (little-endian): compact, decoded in the page."""
    return base64.b64encode(
        np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    ).decode()


def trend_components(frame_types: Sequence[str]) -> tuple[str, str]:
    """Bokeh (script, div) of a trend page, the same for every metric: trend.js configures
    it from the page's data files (the metric's units, fixed band and axis label) and fills
    it for the unit, frame type and time step chosen in the page; the fixed band shaded, the
    learned band of the focal plane drawn, alerts outlined; a hover names the exposure, a
    click opens its page. One rendering serves all the trend pages of a build."""
    from bokeh.embed import components
    from bokeh.layouts import column, row
    from bokeh.models import (
        Band,
        BoxAnnotation,
        ColumnDataSource,
        CustomJS,
        Div,
        HoverTool,
        OpenURL,
        Select,
        Span,
        TapTool,
    )
    from bokeh.plotting import figure

    source = ColumnDataSource(
        dict(t=[], y=[], name=[], type=[], colour=[], line=[], url=[], alert=[]),
        name="points",
    )
    band = ColumnDataSource(dict(t=[], lower=[], upper=[]), name="band")
    fig = figure(
        x_axis_type="datetime",
        height=430,
        sizing_mode="stretch_width",
        tools="pan,wheel_zoom,box_zoom,reset,save",
        toolbar_location="above",
    )
    orange = {"fill_color": "#ff9800", "line_color": "#ff9800"}
    fig.add_layout(Band(base="t", lower="lower", upper="upper", source=band, fill_alpha=0.18,
                        line_alpha=0.4, **orange))  # fmt: skip
    fig.add_layout(BoxAnnotation(fill_alpha=0.08, fill_color="green", visible=False,
                                 name="fixed"))  # fmt: skip
    red = {"line_color": "#c62828", "line_dash": "dashed", "line_width": 1.5}
    for name in ("low_edge", "high_edge"):
        fig.add_layout(Span(location=0, dimension="width", visible=False, name=name, **red))
    points = fig.scatter(
        "t", "y", source=source, size=9, fill_color="colour", line_color="line", line_width=1.6
    )
    tips = [("exposure", "@name"), ("UTC", "@t{%F %T}"), ("value", "@y{0.[0000]}"),
            ("type", "@type"), ("alert", "@alert")]  # fmt: skip
    fig.add_tools(HoverTool(renderers=[points], tooltips=tips, formatters={"@t": "datetime"}))
    fig.add_tools(TapTool(renderers=[points], callback=OpenURL(url="@url", same_tab=True)))
    fig.y_range.renderers = [points]  # the y range follows the points, not a band edge
    fig.yaxis[0].name = "yaxis"
    fig.xaxis.axis_label = "UTC (DATE-OBS)"
    unit = Select(title="unit", value="FPA", options=["FPA"], width=140, name="unit")
    kind = Select(
        title="frame type", value="all", options=["all", *frame_types], width=140, name="type"
    )
    step = Select(title="per", value="exposure", options=["exposure", "day", "week", "month"],
                  width=140, name="step")  # fmt: skip
    note = Div(text="loading ...", name="note")
    update = CustomJS(
        args=dict(unit=unit, type=kind, step=step, source=source, band=band, note=note),
        code="window.viskomTrend.update({unit, type, step, source, band, note});",
    )
    for widget in (unit, kind, step):
        widget.js_on_change("value", update)
    layout = column(row(unit, kind, step, note), fig, sizing_mode="stretch_width")
    return components(layout)  # trend.js fills the plot once Bokeh has made the page


def panel_components(panels: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """Bokeh (script, div) of stacked time series sharing their time axis; each panel:
    title, unit, t (datetime64), y, name (exposures), optionally log (bool)."""
    from bokeh.embed import components
    from bokeh.layouts import column
    from bokeh.models import ColumnDataSource, HoverTool, OpenURL, TapTool
    from bokeh.plotting import figure

    figures = []
    x_range = None
    for p in panels:
        src = ColumnDataSource(
            dict(t=p["t"], y=p["y"], name=p["name"], url=[f"exposures/{n}.html" for n in p["name"]])
        )
        fig = figure(
            x_axis_type="datetime",
            height=230,
            sizing_mode="stretch_width",
            title=p["title"],
            y_axis_type="log" if p.get("log") else "linear",
            tools="pan,wheel_zoom,box_zoom,reset,save",
            **({"x_range": x_range} if x_range is not None else {}),
        )
        x_range = fig.x_range
        r = fig.scatter("t", "y", source=src, size=6, color=p.get("colour", "#1565c0"))
        fig.yaxis.axis_label = p["unit"]
        fig.add_tools(
            HoverTool(
                renderers=[r],
                tooltips=[("exposure", "@name"), ("UTC", "@t{%F %T}"), ("value", "@y")],
                formatters={"@t": "datetime"},
            )
        )
        fig.add_tools(TapTool(renderers=[r], callback=OpenURL(url="@url", same_tab=True)))
        figures.append(fig)
    if not figures:
        return "", '<p class="muted">no data yet</p>'
    figures[-1].xaxis.axis_label = "UTC (DATE-OBS)"
    return components(column(*figures, sizing_mode="stretch_width"))
