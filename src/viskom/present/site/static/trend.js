/* viskom trend pages: the data of a metric (window.VISKOM_TREND) over the exposures
   (window.VISKOM_EXPOSURES), decoded once, then shown for a unit, a frame type and a
   time step (exposure, day, week, month) chosen in the page. */
(function () {
  "use strict";
  function decode(b64, Kind) {
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Kind(bytes.buffer);
  }
  let cache = null;
  function data() {
    if (cache) return cache;
    const ex = window.VISKOM_EXPOSURES, tr = window.VISKOM_TREND;
    if (!ex || !tr) return null;
    cache = {
      names: ex.names, types: ex.types, t: decode(ex.t, Float64Array),
      units: tr.units, n: tr.n, values: decode(tr.values, Float32Array),
      alerts: tr.alerts || {}, band: tr.band || null,
      low: tr.low === undefined ? null : tr.low, high: tr.high === undefined ? null : tr.high,
      label: tr.label || tr.metric,
    };
    return cache;
  }
  const DAY = 86400000;
  function bucket(t, step) {
    if (step === "day") return Math.floor(t / DAY) * DAY + DAY / 2;
    if (step === "week") {
      const monday = Math.floor((t / DAY + 3) / 7) * 7 - 3;  // 1970-01-05 was a Monday
      return (monday + 3.5) * DAY;
    }
    const d = new Date(t);
    return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 15);
  }
  function median(a) {
    const s = a.slice().sort((x, y) => x - y), m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  }
  const COLOURS = {SCIENCE: "#2e7d32", DARK: "#6a1b9a", BIAS: "#1565c0", FLAT: "#ef6c00",
                   CHARGE: "#c62828", UNKNOWN: "#757575"};
  function update(a) {
    const d = data();
    if (!d) { a.note.text = "no data file: rebuild the site (viskom site)"; return; }
    const unit = a.unit.value, type = a.type.value, step = a.step.value;
    const col = d.units.indexOf(unit);
    const lo = d.low, hi = d.high;
    const out = {t: [], y: [], name: [], type: [], colour: [], line: [], url: [], alert: []};
    if (col >= 0) {
      const base = col * d.n;
      if (step === "exposure") {
        for (let i = 0; i < d.n; i++) {
          const v = d.values[base + i];
          if (!Number.isFinite(v) || (type !== "all" && d.types[i] !== type)) continue;
          const bad = (lo !== null && v < lo) || (hi !== null && v > hi);
          const key = d.names[i] + "|" + unit;
          out.t.push(d.t[i]); out.y.push(v); out.name.push(d.names[i]); out.type.push(d.types[i]);
          out.colour.push(COLOURS[d.types[i]] || "#757575");
          out.alert.push(d.alerts[key] || (bad ? "outside band" : ""));
          out.line.push(d.alerts[key] === "alarm" || bad ? "#d50000" :
                        (d.alerts[key] === "warning" ? "#ff9800" : "white"));
          out.url.push("../exposures/" + d.names[i] + ".html");
        }
      } else {
        const groups = new Map();
        for (let i = 0; i < d.n; i++) {
          const v = d.values[base + i];
          if (!Number.isFinite(v) || (type !== "all" && d.types[i] !== type)) continue;
          const b = bucket(d.t[i], step);
          if (!groups.has(b)) groups.set(b, {v: [], first: d.names[i], n: 0});
          const g = groups.get(b); g.v.push(v); g.n += 1;
        }
        for (const [b, g] of [...groups.entries()].sort((x, y) => x[0] - y[0])) {
          const v = median(g.v);
          const bad = (lo !== null && v < lo) || (hi !== null && v > hi);
          out.t.push(b); out.y.push(v); out.name.push(`median of ${g.n} (first: ${g.first})`);
          out.type.push(type); out.colour.push("#37474f"); out.alert.push(bad ? "outside band" : "");
          out.line.push(bad ? "#d50000" : "white");
          out.url.push("../days/" + new Date(b).toISOString().slice(0, 10) + ".html");
        }
      }
    }
    a.source.data = out;
    const band = {t: [], lower: [], upper: []};
    if (d.band && unit === "FPA" && step === "exposure") {
      for (let i = 0; i < d.n; i++) {
        const l = d.band.lower[i], u = d.band.upper[i];
        if (l === null || u === null || (type !== "all" && d.types[i] !== type)) continue;
        band.t.push(d.t[i]); band.lower.push(l); band.upper.push(u);
      }
    }
    a.band.data = band;
    a.note.text = out.t.length ? `${out.t.length} points · ${unit} · ${type} · per ${step}`
                               : `no ${unit} values` + (type !== "all" ? ` for ${type}` : "");
  }
  /* The first drawing: once Bokeh has built the page's document, find its models by name. */
  function start(tries) {
    const docs = window.Bokeh && window.Bokeh.documents;
    const doc = docs && docs.length ? docs[0] : null;
    const get = (name) => doc && doc.get_model_by_name(name);
    if (!doc || !get("points")) {
      if (tries < 400) setTimeout(() => start(tries + 1), 25);
      return;
    }
    const d = data();
    if (d) {  // the metric's own: its units, fixed band and axis label
      get("unit").options = d.units.length ? d.units : ["FPA"];
      get("yaxis").axis_label = d.label;
      const fixed = get("fixed");
      if (d.low !== null) fixed.bottom = d.low;  // unset edges stay "auto": the plot's edge
      if (d.high !== null) fixed.top = d.high;
      fixed.visible = d.low !== null || d.high !== null;
      for (const [name, value] of [["low_edge", d.low], ["high_edge", d.high]]) {
        const edge = get(name);
        if (value !== null) { edge.location = value; edge.visible = true; }
      }
    }
    update({unit: get("unit"), type: get("type"), step: get("step"), source: get("points"),
            band: get("band"), note: get("note")});
  }
  window.viskomTrend = {update: update};
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", () => start(0));
  } else {
    start(0);
  }
})();
