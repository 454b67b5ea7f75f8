"""The dashboard: a static site under `<data root>/site`, kept up to date by `viskom run` and
`viskom watch`, rebuilt by `viskom site`.

Pages: `index.html` (now: open alerts, the last day, key tiles, failures, the latest mosaic),
`exposures/<name>.html`, `trends/<metric>.html` (+ `trends/data/<metric>.js`), `calendar.html`
and `days/<date>.html`, `spaceweather.html`, `gaia.html`. An update asks the store what was
measured since the last build (`site/.manifest.json` keeps each exposure's stamp: its last
stage run and registration), refreshes the metric cache (`site_data`) for those exposures
only, and writes a page only when what it shows changed (a digest of its inputs). Links are
relative; images come from the product tree beside the site (`../products/...`); no page
holds an absolute path, a database URL or a credential.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from viskom.metrics import METRICS
from viskom.pipeline.site_common import LEVEL, Redactor, epoch_ms, iso, num, src
from viskom.pipeline.site_data import UNITS, MetricCache
from viskom.pipeline.site_exposure import exposure_page, metric_status
from viskom.pipeline.site_pages import calendar_pages, panel_pages, trend_pages
from viskom.store.atomic import write_text_atomic

log = logging.getLogger(__name__)

SITE_VERSION = "1"  # bump when pages change shape: the next update rebuilds them all
KEY_METRICS = (
    ("read_noise_e", "Read noise"),
    ("bias_overscan_adu", "Bias"),
    ("dark_current_e_per_s", "Dark current"),
    ("iq_score", "IQ score"),
    ("psf_r2", "PSF R2"),
    ("cr_particles_per_cm2_s", "Cosmic-ray rate"),
    ("xray_events", "X-ray events"),
    ("vis_over_gaia_075", "VIS/G at BP-RP 0.75"),
)
FRAME_TYPES = ("SCIENCE", "DARK", "BIAS", "FLAT", "CHARGE", "UNKNOWN")


@dataclass
class SiteReport:
    """What a build wrote: pages (written / unchanged), data files, seconds, the index."""

    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    data_files: int = 0
    exposures_updated: int = 0
    seconds: float = 0.0
    index: Path | None = None
    error: str | None = None

    def line(self) -> str:
        """One line for the run's output."""
        if self.error is not None:
            return f"site: not updated: {self.error}"
        return (
            f"site: {len(self.written)} page(s) written, {self.unchanged} unchanged, "
            f"{self.data_files} data file(s), {self.exposures_updated} exposure(s) new "
            f"or changed, {self.seconds:.1f} s"
        )


SITE_CLAIM, SITE_STAGE = "site", "site"


def update_site(settings: Any, store: Any) -> SiteReport | None:
    """After a run: bring the dashboard up to date when `[site] update` (None when off).
    One run at a time writes it (a claim; a busy one is left to the run that holds it); a
    failure is logged and reported, never fatal."""
    from viskom.pipeline.failures import describe_failure
    from viskom.pipeline.leases import holding, new_token

    if not settings.site.update:
        return None
    try:
        with holding(store, SITE_CLAIM, SITE_STAGE, new_token(),
                     lease_s=settings.run.lease_s, wait_s=30.0) as got:  # fmt: skip
            if not got:
                return SiteReport(error="another run was writing the dashboard; left to it")
            return build_site(settings, store)
    except Exception as exc:  # the dashboard never undoes a run's measurements
        log.warning("dashboard update failed", exc_info=exc)
        return SiteReport(error=describe_failure(exc)[1])


def site_dir(settings: Any) -> Path:
    """The site's folder: `<data root>/site`."""
    return Path(settings.data_path) / "site"


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class _Writer:
    """Writes pages whose inputs changed; remembers their digests in the manifest."""

    def __init__(self, site: Path, digests: dict[str, str], report: SiteReport) -> None:
        self.site, self.digests, self.report = site, digests, report
        self.seen: set[str] = set()

    def page(self, rel: str, inputs: Any, render: Any) -> None:
        """Write `rel` with `render()` unless `inputs` are those of the last build."""
        self.seen.add(rel)
        digest = _digest(inputs)
        if self.digests.get(rel) == digest and (self.site / rel).exists():
            self.report.unchanged += 1
            return
        write_text_atomic(self.site / rel, render())
        self.digests[rel] = digest
        self.report.written.append(rel)


def build_site(settings: Any, store: Any, *, full: bool = False) -> SiteReport:
    """Bring the site up to date with the store (everything again with `full`)."""
    from viskom.present.site import Pages, copy_static

    t0 = time.perf_counter()
    site = site_dir(settings)
    report = SiteReport(index=site / "index.html")
    manifest_path = site / ".manifest.json"
    manifest: dict[str, Any] = {}
    if not full and manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = {}
    if manifest.get("version") != SITE_VERSION:
        manifest = {}
    copy_static(site)
    ctx = _gather(settings, store, site, manifest.get("stamps", {}), full or not manifest)
    ctx.bands = list(settings.alerts.bands)
    ctx.fixed_bands = {m: settings.alerts.fixed_band(m) for m in METRICS}
    bands_digest = _digest([b.model_dump(mode="json") for b in ctx.bands])
    if manifest.get("bands") != bands_digest:  # the data files carry the bands: all again
        ctx.changed_metrics |= set(METRICS)
    ctx.redact = Redactor(
        ("data", settings.data_path), ("raw", settings.raw_path), ("config", settings.base_dir)
    )
    report.exposures_updated = len(ctx.changed)
    pages = Pages(built=iso(datetime.now(UTC)) + " UTC")
    writer = _Writer(site, manifest.get("pages", {}) if manifest else {}, report)
    report.data_files = _write_trend_data(site, ctx)
    _write_pages(writer, pages, ctx, settings)
    for rel in set(writer.digests) - writer.seen:  # pages of exposures no longer here
        (site / rel).unlink(missing_ok=True)
        writer.digests.pop(rel, None)
    write_text_atomic(
        manifest_path,
        json.dumps(
            {
                "version": SITE_VERSION,
                "stamps": ctx.stamps,
                "pages": writer.digests,
                "bands": bands_digest,
            }
        ),
    )
    report.seconds = time.perf_counter() - t0
    return report


@dataclass
class _Context:
    """What the pages are made of, gathered from the store once per build."""

    exposures: list[Any]
    by_name: dict[str, Any]
    runs: dict[str, dict[str, Any]]
    stamps: dict[str, str]
    changed: list[str]
    cache: MetricCache
    changed_metrics: set[str]
    order: np.ndarray  # cache rows in DATE-OBS order
    products: dict[str, list[Any]]
    period_products: list[Any]
    alerts: list[Any]
    outcomes: dict[str, list[Any]]
    failures: list[tuple[str, Any]]
    bands: list[Any]
    status: dict[str, str] = field(default_factory=dict)  # exposure -> worst status
    redact: Any = None  # takes local paths out of texts shown
    fixed_bands: dict[str, Any] = field(default_factory=dict)  # metric -> fixed (low, high)


def _gather(
    settings: Any, store: Any, site: Path, stamps: dict[str, str], everything: bool
) -> _Context:
    exposures = store.list_exposures()
    by_name = {e.name: e for e in exposures}
    by_id = {e.id: e for e in exposures}
    runs: dict[str, dict[str, Any]] = defaultdict(dict)
    for (exposure_id, stage), run in store.stage_runs().items():
        if exposure_id in by_id:
            runs[by_id[exposure_id].name][stage] = run
    new_stamps = {}
    for e in exposures:
        finished = [r.finished_at or r.started_at for r in runs[e.name].values()]
        latest = max([t for t in finished if t] + [e.updated_at or e.ingested_at], default=None)
        new_stamps[e.name] = iso(latest) + f"|{len(runs[e.name])}"
    changed = [n for n in new_stamps if everything or stamps.get(n) != new_stamps[n]]
    cache = MetricCache(site / ".cache") if everything else MetricCache.load(site / ".cache")
    cache.forget([n for n in cache.names if n not in by_name])
    measured = [n for n in changed if runs[n]]
    changed_metrics = cache.update(store, measured)
    cache.save(changed_metrics)
    times = np.array([epoch_ms(by_name[n].date_obs) for n in cache.names], float)
    order = np.argsort(times, kind="stable")
    products: dict[str, list[Any]] = defaultdict(list)
    period_products = []
    for p in store.products():
        if p.exposure is None:
            period_products.append(p)
        else:
            products[p.exposure].append(p)
    outcomes: dict[str, list[Any]] = defaultdict(list)
    for o in store.quality_outcomes():
        outcomes[o.exposure].append(o)
    alerts = list(store.alerts()) if hasattr(store, "alerts") else []
    return _Context(
        exposures,
        by_name,
        dict(runs),
        new_stamps,
        changed,
        cache,
        changed_metrics,
        order,
        products,
        period_products,
        alerts,
        outcomes,
        store.failed_stage_runs(),
        [],
    )


# -- trend data --------------------------------------------------------------------------


def _write_trend_data(site: Path, ctx: _Context) -> int:
    """`trends/data/exposures.js` and one `<metric>.js` per changed metric; returns how many
    files were written."""
    from viskom.present.site import b64

    folder = site / "trends" / "data"
    folder.mkdir(parents=True, exist_ok=True)
    names = [ctx.cache.names[i] for i in ctx.order]
    exposures = {
        "names": names,
        "types": [ctx.by_name[n].frame_type or "UNKNOWN" for n in names],
        "t": b64(np.array([epoch_ms(ctx.by_name[n].date_obs) for n in names]), np.float64),
    }
    written = 0
    target = folder / "exposures.js"
    text = "window.VISKOM_EXPOSURES = " + json.dumps(exposures) + ";\n"
    if not target.exists() or target.read_text() != text:
        write_text_atomic(target, text)
        written += 1
    alerts_by_metric: dict[str, dict[str, str]] = defaultdict(dict)
    for a in ctx.alerts:
        if a.kind == "band" and a.exposure:
            key = f"{a.exposure}|{a.unit}"
            old = alerts_by_metric[a.metric].get(key, "ok")
            if LEVEL.get(a.level, 0) >= LEVEL.get(old, 0):
                alerts_by_metric[a.metric][key] = a.level
    for metric in sorted(
        ctx.changed_metrics | {m for m in METRICS if not (folder / f"{m}.js").exists()}
    ):
        arr = ctx.cache.arrays.get(metric)
        if arr is None:  # registered, never measured: an empty series
            arr = np.full((len(names), len(UNITS)), np.nan, np.float32)
        values = arr[ctx.order]
        entry = METRICS.get(metric)
        fixed = ctx.fixed_bands.get(metric)
        used = [i for i in range(len(UNITS)) if np.isfinite(values[:, i]).any()]
        payload = {
            "metric": metric,
            "n": len(names),
            "units": [UNITS[i] for i in used],
            "values": b64(values[:, used].T.ravel(), np.float32),
            "alerts": alerts_by_metric.get(metric, {}),
            "band": _learned_band(metric, values[:, 0], ctx, names),
            "low": fixed[0] if fixed else None,
            "high": fixed[1] if fixed else None,
            "label": f"{metric} [{entry.unit}]" if entry and entry.unit else metric,
        }
        write_text_atomic(
            folder / f"{metric}.js", "window.VISKOM_TREND = " + json.dumps(payload) + ";\n"
        )
        written += 1
    return written


def _learned_band(metric: str, fpa: np.ndarray, ctx: _Context, names: list[str]) -> Any:
    """The alarm band of a learned `[alerts]` band over the focal-plane series, as the alert
    evaluation learns it (`measure.bands.learned_band` of the same frame type and exposure
    time over the band's days, the point itself left out), or None without such a band."""
    from viskom.measure.bands import learned_band

    band = next((b for b in ctx.bands if b.metric == metric and b.learned), None)
    if band is None:
        return None
    t = np.array([epoch_ms(ctx.by_name[n].date_obs) for n in names])
    kinds = np.array([ctx.by_name[n].frame_type or "" for n in names])
    exptime = np.array([round(ctx.by_name[n].exptime or 0.0, 1) for n in names])
    window = band.days * 86400000.0
    lower: list[float | None] = []
    upper: list[float | None] = []
    for i in range(len(names)):
        sel = (t < t[i]) & (t >= t[i] - window) & (kinds == kinds[i]) & (exptime == exptime[i])
        learned = learned_band(fpa[sel], band.k_warning, band.k_alarm, band.floor,
                               band.min_points)  # fmt: skip
        lower.append(None if learned is None else learned.low)
        upper.append(None if learned is None else learned.high)
    return {"lower": lower, "upper": upper}


# -- pages --------------------------------------------------------------------------------


def _write_pages(writer: _Writer, pages: Any, ctx: _Context, settings: Any) -> None:
    alerts = [_alert_view(a, ctx.redact) for a in ctx.alerts]
    _now_page(writer, pages, ctx, alerts, settings)
    names_sorted = sorted(
        ctx.exposures, key=lambda e: (e.date_obs or datetime.min.replace(tzinfo=UTC), e.name)
    )
    for i, e in enumerate(names_sorted):
        if e.state != "registered":
            continue
        prev = names_sorted[i - 1].name if i > 0 else None
        nxt = names_sorted[i + 1].name if i + 1 < len(names_sorted) else None
        exposure_page(writer, pages, ctx, e, prev, nxt, alerts, settings)
    trend_pages(writer, pages, ctx, alerts, settings)
    calendar_pages(writer, pages, ctx)
    panel_pages(writer, pages, ctx)


def _alert_view(a: Any, redact: Any) -> dict[str, Any]:
    band = [x for x in (a.low, a.high) if x is not None]
    band_text = (
        f"{num(a.low)} .. {num(a.high)}"
        if len(band) == 2
        else (
            f"<= {num(a.high)}"
            if a.high is not None
            else (f">= {num(a.low)}" if a.low is not None else "")
        )
    )
    ack = f"{a.acknowledged_by or 'yes'} {iso(a.acknowledged_at)}" if a.acknowledged_at else ""
    return {
        "id": a.id,
        "kind": a.kind,
        "metric": a.metric,
        "unit": a.unit,
        "frame_type": a.frame_type,
        "level": a.level,
        "state": a.state,
        "value": a.value,
        "value_text": num(a.value),
        "band_text": band_text,
        "exposure": a.exposure,
        "first_seen": iso(a.first_seen),
        "last_seen": iso(a.last_seen),
        "message": redact(a.message),
        "ack": ack,
    }


def _now_page(writer, pages, ctx, alerts, settings) -> None:
    dated = [e for e in ctx.exposures if e.date_obs]
    day = max(e.date_obs for e in dated).astimezone(UTC).date() if dated else None
    today = [e for e in dated if e.date_obs.astimezone(UTC).date() == day]
    counts: dict[str, Counter] = defaultdict(Counter)
    for e in today:
        counts[e.frame_type or "UNKNOWN"][e.state] += 1
    states = sorted({s for c in counts.values() for s in c})
    tiles = []
    rows = {n: i for i, n in enumerate(ctx.cache.names)}
    latest_first = sorted(dated, key=lambda e: e.date_obs, reverse=True)
    for metric, label in KEY_METRICS:
        entry = METRICS.get(metric)
        arr = ctx.cache.arrays.get(metric)
        value, when, kind = None, "", ""
        if arr is not None:
            for e in latest_first:
                i = rows.get(e.name)
                if i is not None and np.isfinite(arr[i, 0]):
                    value, when, kind = float(arr[i, 0]), iso(e.date_obs), e.frame_type
                    break
        status = metric_status(metric, alerts) or ("ok" if value is not None else "")
        fixed = settings.alerts.fixed_band(metric, kind)
        if (
            value is not None
            and fixed
            and status == "ok"
            and (
                (fixed[0] is not None and value < fixed[0])
                or (fixed[1] is not None and value > fixed[1])
            )
        ):
            status = "alarm"
        tiles.append(
            {
                "metric": metric,
                "label": label,
                "unit": entry.unit if entry else "",
                "description": entry.description if entry else "",
                "value_text": num(value),
                "when": f"{kind} {when}".strip() or "no data",
                "status": status,
                "status_text": {"alarm": "open alarm", "warning": "open warning"}.get(status, ""),
            }
        )
    mosaic = None
    science_first = sorted(latest_first, key=lambda e: e.frame_type != "SCIENCE")  # stable
    for e in science_first:
        found = [p for p in ctx.products.get(e.name, []) if p.kind == "mosaic"]
        if found:
            mosaic = {
                "exposure": e.name,
                "frame_type": e.frame_type,
                "when": iso(e.date_obs),
                "src": src("", found[0].path),
            }
            break
    todays = {e.name for e in today}
    outcomes = [
        {
            "exposure": o.exposure,
            "stage": o.stage,
            "code": o.code,
            "unit": o.unit,
            "message": ctx.redact(o.message),
        }
        for n in sorted(todays)
        for o in ctx.outcomes.get(n, [])
    ]
    failures = [
        {
            "exposure": n,
            "stage": r.stage,
            "cls": r.failure_class or "",
            "error": ctx.redact(r.error),
        }
        for n, r in ctx.failures
    ]
    invalid = [
        {"name": e.name, "reason": ctx.redact(e.reason)}
        for e in ctx.exposures
        if e.state == "invalid"
    ]
    open_alerts = [a for a in alerts if a["state"] == "open"]
    groups = _alert_groups(open_alerts)
    open_alerts.sort(key=lambda a: (-LEVEL.get(a["level"], 0), a["last_seen"]), reverse=False)
    context = {
        "title": "Now",
        "here": "Now",
        "day": day.isoformat() if day else None,
        "day_counts": sorted((k, dict(v)) for k, v in counts.items()),
        "states": states,
        "tiles": tiles,
        "mosaic": mosaic,
        "outcomes": outcomes[:200],
        "failures": failures[:200],
        "invalid": invalid[:100],
        "open_alerts": open_alerts,
        "alert_groups_": groups,
        "n_alarms": sum(1 for a in open_alerts if a["level"] == "alarm"),
    }
    writer.page("index.html", context, lambda: pages.render("index.html", "index.html", **context))


def _alert_groups(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Open alerts by what and frame type (144 quadrants in alarm are one line): level,
    how many units (the first few named), the worst value, the latest exposure."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for a in alerts:
        groups[(a["kind"], a["metric"], a["frame_type"], a["level"])].append(a)
    out = []
    for (kind, metric, frame_type, level), members in groups.items():
        members.sort(key=lambda a: a["last_seen"], reverse=True)
        units = sorted({a["unit"] for a in members})
        worst = max(members, key=lambda a: abs(a.get("value") or 0.0))
        out.append(
            {
                "kind": kind,
                "metric": metric,
                "frame_type": frame_type,
                "level": level,
                "n": len(units),
                "units": ", ".join(units[:8]) + (" ..." if len(units) > 8 else ""),
                "worst": worst["value_text"],
                "band": members[0]["band_text"],
                "exposure": worst["exposure"],
                "message": worst["message"],
                "since": min(a["first_seen"] for a in members),
            }
        )
    out.sort(key=lambda g: (-LEVEL.get(g["level"], 0), g["metric"]))
    return out
