"""The dashboard's trend, calendar, day, space-weather and Gaia pages (see `pipeline.site`)."""

from __future__ import annotations

import calendar as cal
from collections import Counter, defaultdict
from datetime import UTC, date
from typing import Any

import numpy as np

from viskom.metrics import METRICS
from viskom.pipeline.site_common import epoch_ms, iso, src, worst

FRAME_TYPES = ("SCIENCE", "DARK", "BIAS", "FLAT", "CHARGE", "UNKNOWN")
#: the frame types' colours in trend.js
TYPE_COLOURS = (
    ("SCIENCE", "#2e7d32"),
    ("DARK", "#6a1b9a"),
    ("BIAS", "#1565c0"),
    ("FLAT", "#ef6c00"),
    ("CHARGE", "#c62828"),
    ("UNKNOWN", "#757575"),
)
TREND_PAGE_VERSION = "7"  # the trend pages' HTML shape (their data live in data/*.js)


def trend_pages(writer: Any, pages: Any, ctx: Any, alerts: list[dict], settings: Any) -> None:
    """trends/index.html and one page per metric with values (data in trends/data/)."""
    from viskom.present.site import trend_components

    groups: dict[str, list[dict]] = defaultdict(list)
    shared: list[str] = []
    for name in sorted(METRICS):  # every registered metric: one with no values says so
        entry = METRICS[name]
        groups[entry.stage].append(
            {
                "name": name,
                "unit": entry.unit,
                "levels": ", ".join(entry.levels),
                "frame_types": ", ".join(sorted(entry.frame_types)),
                "description": entry.description,
            }
        )
        units = [u for u, col in _units_with_values(ctx, name)]
        fixed = settings.alerts.fixed_band(name)
        described = [_band_text(b) for b in ctx.bands if b.metric == name]
        band_text = "band: " + "; ".join(described) if described else "no alert band"
        mine = [a for a in alerts if a["metric"] == name]
        inputs = {
            "v": TREND_PAGE_VERSION,
            "units": units,
            "fixed": fixed,
            "band": band_text,
            "alerts": mine,
        }
        rel = f"trends/{name}.html"

        def render(name=name, entry=entry, band_text=band_text, mine=mine, rel=rel) -> str:
            if not shared:  # one Bokeh layout for every trend page of this build
                shared.extend(trend_components(FRAME_TYPES))
            meta = {
                "name": name,
                "unit": entry.unit,
                "description": entry.description,
                "stage": entry.stage,
                "frame_types": ", ".join(sorted(entry.frame_types)),
            }
            return pages.render("trend.html", rel, colours=TYPE_COLOURS, title=name,
                                here="Trends", metric=meta, band_text=band_text, alerts=mine,
                                script=shared[0], div=shared[1])  # fmt: skip

        writer.page(rel, inputs, render)
    groups_list = sorted(groups.items())
    writer.page(
        "trends/index.html",
        groups_list,
        lambda: pages.render(
            "trends_index.html",
            "trends/index.html",
            title="Trends",
            here="Trends",
            groups=groups_list,
        ),
    )


def _band_text(b: Any) -> str:
    """One alert band in words: 'high 4.5 (quadrant)', 'learned 14 d, alarm at 5 sigma'."""
    parts = []
    if b.low is not None:
        parts.append(f"low {b.low:g}")
    if b.high is not None:
        parts.append(f"high {b.high:g}")
    if b.learned:
        parts.append(
            f"learned over {b.days:g} d, warning at {b.k_warning:g} and alarm at "
            f"{b.k_alarm:g} robust sigma (floor {b.floor:g})"
        )
    where = b.level + (", " + "/".join(b.frame_types) if b.frame_types else "")
    return " ".join(parts) + f" ({where})"


def _units_with_values(ctx: Any, metric: str) -> list[tuple[str, int]]:
    from viskom.pipeline.site_data import UNITS

    arr = ctx.cache.arrays.get(metric)
    if arr is None:
        return []
    have = np.isfinite(arr).any(axis=0)
    return [(u, i) for i, u in enumerate(UNITS) if have[i]]


def exposure_status(ctx: Any, name: str) -> str:
    """An exposure's worst status as its page showed it (failed when a stage failed)."""
    if name in ctx.status:
        return ctx.status[name]
    runs = ctx.runs.get(name, {})
    return "failed" if any(r.status == "failed" for r in runs.values()) else "ok"


def calendar_pages(writer: Any, pages: Any, ctx: Any) -> None:
    """calendar.html (every month with frames) and days/<date>.html."""
    by_day: dict[date, list[Any]] = defaultdict(list)
    for e in ctx.exposures:
        if e.date_obs is not None:
            by_day[e.date_obs.astimezone(UTC).date()].append(e)
    days = sorted(by_day)
    cells: dict[date, dict] = {}
    for d in days:
        kinds = Counter(e.frame_type or "UNKNOWN" for e in by_day[d])
        statuses = [exposure_status(ctx, e.name) for e in by_day[d] if e.state == "registered"]
        invalid = sum(1 for e in by_day[d] if e.state != "registered")
        status = worst(statuses)
        text = ", ".join(f"{n} {s}" for s, n in sorted(Counter(statuses).items()) if s != "ok")
        cells[d] = {
            "date": d.isoformat(),
            "day": d.day,
            "total": len(by_day[d]),
            "kinds": " ".join(f"{k[:3]}:{n}" for k, n in sorted(kinds.items())),
            "status": status,
            "status_text": text + (f", {invalid} not registered" if invalid else ""),
        }
    months = []
    for year, month in sorted({(d.year, d.month) for d in days}, reverse=True):
        weeks = []
        for week in cal.Calendar().monthdatescalendar(year, month):
            weeks.append([cells.get(d) if d.month == month else None for d in week])
        months.append((f"{year}-{month:02d}", weeks))
    writer.page(
        "calendar.html",
        months,
        lambda: pages.render(
            "calendar.html", "calendar.html", title="Calendar", here="Calendar", months=months
        ),
    )
    for i, d in enumerate(days):
        rows = []
        for e in sorted(by_day[d], key=lambda e: e.date_obs):
            mosaic = next(
                (p.path for p in ctx.products.get(e.name, []) if p.kind == "mosaic"), None
            )
            rows.append(
                {
                    "time": iso(e.date_obs)[11:],
                    "name": e.name,
                    "frame_type": e.frame_type or "",
                    "exptime": e.exptime,
                    "state": e.state,
                    "reason": ctx.redact(e.reason),
                    "status": exposure_status(ctx, e.name) if e.state == "registered" else "",
                    "page": e.state == "registered",
                    "mosaic": src("../", mosaic) if mosaic else None,
                }
            )
        rel = f"days/{d.isoformat()}.html"
        prev = days[i - 1].isoformat() if i else None
        nxt = days[i + 1].isoformat() if i + 1 < len(days) else None
        inputs = {"rows": rows, "prev": prev, "next": nxt}
        writer.page(
            rel,
            inputs,
            lambda rel=rel, d=d, rows=rows, prev=prev, nxt=nxt: pages.render(
                "day.html",
                rel,
                title=d.isoformat(),
                here="Calendar",
                day=d.isoformat(),
                rows=rows,
                prev=prev,
                next=nxt,
            ),
        )


def _series(ctx: Any, metric: str, *, positive: bool = False) -> dict[str, Any] | None:
    arr = ctx.cache.arrays.get(metric)
    if arr is None:
        return None
    names = [ctx.cache.names[i] for i in ctx.order]
    y = arr[ctx.order, 0].astype(float)
    keep = np.isfinite(y) & ((y > 0) if positive else True)
    if not keep.any():
        return None
    t = np.array([epoch_ms(ctx.by_name[n].date_obs) for n in names])[keep]
    return {
        "t": t.astype("datetime64[ms]"),
        "y": y[keep],
        "name": [n for n, k in zip(names, keep, strict=True) if k],
    }


def _period_figures(ctx: Any, pattern: str, label: str) -> list[dict]:
    found = [p for p in ctx.period_products if pattern in p.kind or pattern in p.path]
    return [
        {
            "src": src("", p.path),
            "caption": f"{label} {p.period or ''}: {p.path.rsplit('/', 1)[-1]}",
        }
        for p in sorted(found, key=lambda p: p.path, reverse=True)
    ]


def panel_pages(writer: Any, pages: Any, ctx: Any) -> None:
    """spaceweather.html and gaia.html: time series of the focal plane, and the month
    products (pictures, movies)."""
    from viskom.present.site import panel_components

    specs = {
        "spaceweather.html": (
            "Space weather",
            "GOES X-ray and proton fluxes beside the VIS "
            "particle rates, per exposure (click a point to open it).",
            [
                ("goes_xrsb_max", "GOES XRS-B 0.1-0.8 nm, max during the exposure", "W/m2", True),
                ("goes_protons_ge10mev", "GOES protons >= 10 MeV", "pfu", True),
                ("xray_events", "VIS X-ray events (net of cosmic rays)", "events", False),
                ("cr_particles_per_cm2_s", "VIS cosmic-ray particle rate", "/cm2/s", False),
            ],
            [
                ("X-ray events against GOES", "xray_vs_goes"),
                ("Cosmic rays against protons", "cr_vs_protons"),
            ],
        ),
        "gaia.html": (
            "Gaia photometry",
            "VIS over Gaia G at three BP-RP colours: its drift "
            "with time measures throughput lost to ice.",
            [
                ("vis_over_gaia_075", "VIS/G at BP-RP = 0.75", "ratio", False),
                ("vis_over_gaia_175", "VIS/G at BP-RP = 1.75", "ratio", False),
                ("vis_over_gaia_275", "VIS/G at BP-RP = 2.75", "ratio", False),
            ],
            [
                ("The ice trend", "ice"),
                ("Colour relations per CCD", "VISGaia"),
                ("Focal-plane maps", "iceplot_FPA"),
            ],
        ),
    }
    colours = ("#1565c0", "#6a1b9a", "#2e7d32", "#c62828")
    for rel, (title, intro, series, pictures) in specs.items():
        panels = []
        for (metric, label, unit, log), colour in zip(series, colours, strict=False):
            s = _series(ctx, metric, positive=log)
            if s is not None:
                panels.append({"title": label, "unit": unit, "log": log, "colour": colour, **s})
        figures = [(heading, _period_figures(ctx, key, heading)) for heading, key in pictures]
        movies = []
        if rel == "spaceweather.html":
            movies = [
                (src("", p.path), p.path.rsplit("/", 1)[-1])
                for p in ctx.period_products
                if p.path.endswith(".mp4")
            ]
        digest_of = {
            "series": [(p["title"], p["y"].tolist(), p["name"]) for p in panels],
            "figures": figures,
            "movies": movies,
        }

        def render(
            rel=rel, title=title, intro=intro, panels=panels, figures=figures, movies=movies
        ) -> str:
            script, div = panel_components(panels)
            return pages.render(
                "panels.html",
                rel,
                title=title,
                here=title,
                intro=intro,
                script=script,
                div=div,
                figures=figures,
                lists=[("Movies", movies)] if rel == "spaceweather.html" else [],
            )

        writer.page(rel, digest_of, render)
