"""The dashboard's exposure pages (see `pipeline.site`): header, alerts, mosaic, zooms,
every plot the stages made, the metrics with their bands, the provenance of each stage."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from viskom.metrics import METRICS
from viskom.pipeline.site_common import LEVEL, iso, num, src


def metric_status(metric: str, alerts: list[dict[str, Any]], name: str | None = None) -> str:
    levels = [
        a["level"]
        for a in alerts
        if a["metric"] == metric
        and a["state"] == "open"
        and (name is None or a["exposure"] == name)
    ]
    return max(levels, key=lambda x: LEVEL.get(x, 0)) if levels else ""


_HEADER_FIELDS = (
    ("DATE-OBS", "date_obs"),
    ("frame type", "frame_type"),
    ("EXPTIME [s]", "exptime"),
    ("RA [deg]", "ra"),
    ("DEC [deg]", "dec"),
    ("PA [deg]", "pa"),
    ("OBS_ID", "obs_id"),
    ("dither", "dither"),
    ("IMG_CAT", "img_cat"),
    ("IMG_T1", "img_t1"),
    ("IMG_T2", "img_t2"),
    ("OBSMODE", "obs_mode"),
    ("quadrants", "n_quadrants"),
    ("state", "state"),
    ("size [bytes]", "size_bytes"),
)


def _header_value(value: Any) -> Any:
    """A header value as the page shows it: times in UTC, angles to 1e-5 deg."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, float):
        return f"{value:.5f}".rstrip("0").rstrip(".")
    return value


def exposure_page(writer, pages, ctx, e, prev, nxt, alerts, settings) -> None:
    rel = f"exposures/{e.name}.html"
    header = [
        (k, _header_value(getattr(e, a))) for k, a in _HEADER_FIELDS if getattr(e, a) is not None
    ]
    warnings = [ctx.redact(str(w.get("message", w))) for w in (e.header_warnings or [])]
    products = sorted(ctx.products.get(e.name, []), key=lambda p: (p.stage, p.kind))
    pngs = [p for p in products if p.path.endswith(".png")]
    mosaic = next((src("../", p.path) for p in pngs if p.kind == "mosaic"), None)
    zooms = [
        {"kind": p.kind, "src": src("../", p.path)} for p in pngs if p.kind.startswith("zoom_")
    ]
    plots = [
        {"kind": p.kind, "stage": p.stage, "src": src("../", p.path)}
        for p in pngs
        if p.kind != "mosaic" and not p.kind.startswith("zoom_")
    ]
    row = ctx.cache.names.index(e.name) if e.name in ctx.cache.names else None
    metrics = []
    for name in sorted(ctx.cache.arrays) if row is not None else ():
        values = ctx.cache.arrays[name][row]
        if not np.isfinite(values).any():
            continue
        entry = METRICS.get(name)
        quads = values[1 + 36 :]
        finite = quads[np.isfinite(quads)]
        fixed = settings.alerts.fixed_band(name, e.frame_type)
        status = metric_status(name, alerts, e.name)
        if not status and fixed:
            check = finite if finite.size else values[:1]
            bad = ((fixed[0] is not None) & (check < (fixed[0] if fixed[0] is not None else 0))) | (
                (fixed[1] is not None) & (check > (fixed[1] if fixed[1] is not None else 0))
            )
            status = "alarm" if np.any(bad) else "ok"
        metrics.append(
            {
                "name": name,
                "unit": entry.unit if entry else "",
                "description": entry.description if entry else "",
                "fpa": num(float(values[0])),
                "lo": num(float(finite.min())) if finite.size else "",
                "hi": num(float(finite.max())) if finite.size else "",
                "band": "" if not fixed else f"{num(fixed[0])} .. {num(fixed[1])}",
                "status": status,
            }
        )
    runs = [
        {
            "stage": s,
            "status": r.status,
            "stage_version": r.stage_version,
            "config_hash": r.config_hash,
            "software_version": r.software_version,
            "finished": iso(r.finished_at),
            "duration": num(r.duration_s, 3),
            "host": r.host or "",
            "error": ctx.redact(r.error),
        }
        for s, r in sorted(ctx.runs.get(e.name, {}).items())
    ]
    mine = [a for a in alerts if a["exposure"] == e.name]
    outcomes = [
        {"stage": o.stage, "code": o.code, "unit": o.unit, "message": ctx.redact(o.message)}
        for o in ctx.outcomes.get(e.name, [])
    ]
    worst = max(
        [a["level"] for a in mine if a["state"] == "open"]
        + [m["status"] for m in metrics if m["status"]],
        key=lambda x: LEVEL.get(x, 0),
        default="ok",
    )
    if any(r["status"] == "failed" for r in runs):
        worst = "failed" if worst != "alarm" else worst
    day = e.date_obs.astimezone(UTC).date().isoformat() if e.date_obs else None
    context = {
        "title": e.name,
        "here": "",
        "e": {"name": e.name},
        "header": header,
        "warnings": warnings,
        "alerts": mine,
        "outcomes": outcomes,
        "mosaic": mosaic,
        "zooms": zooms,
        "plots": plots,
        "metrics": metrics,
        "runs": runs,
        "prev": prev,
        "next": nxt,
        "day": day,
        "status": worst,
    }
    ctx.status[e.name] = worst
    writer.page(rel, context, lambda: pages.render("exposure.html", rel, **context))
