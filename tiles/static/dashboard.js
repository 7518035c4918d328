/* The indicator dashboard (/dashboard): a choropleth of the chosen indicator by township
   (MapLibre GL JS, served by this app from .vendor like the map; townships read as GeoJSON from
   /collections/admin_divisions/items), the chosen division's series over the layer versions
   with its target (dashboard_chart.js), and the open warnings with their acknowledgement.
   Everything comes from this server: /indicators, /indicators/{id}?division=, /warnings,
   POST /warnings/{id}/acknowledge. A department's key (sessionStorage, as on the map) shows the
   indicators over its internal layers and lets an analyst acknowledge. */
(function () {
  "use strict";
  const I = window.geobaseDashboardI18n, Chart = window.geobaseChart;
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const KEY_STORE = "geobase.apiKey";  // the map's: one key per tab for both pages
  const apiKey = () => sessionStorage.getItem(KEY_STORE) || "";
  const headers = (h) => (apiKey() ? Object.assign({Authorization: "Bearer " + apiKey()}, h || {}) : (h || {}));
  const params = new URLSearchParams(location.search);
  const RAMP = ["#fff5eb", "#fdd0a2", "#fd8d3c", "#d94801", "#7f2704"];
  const state = window.geobaseDashboard = {ready: false, lang: I.pick(params.get("lang")), indicator: params.get("indicator"),
                                           division: params.get("division"), overview: null, detail: null, chart: null,
                                           warnings: [], map: null, breaks: []};
  const t = (k) => I.t(k, state.lang);
  const say = (k, tail) => { $("status").textContent = t(k) + (tail ? " " + tail : ""); };

  async function getJSON(url, opts) {
    const r = await fetch(url, Object.assign({}, opts || {}, {headers: headers(Object.assign({Accept: "application/json"}, (opts || {}).headers))}));
    if (!r.ok) throw new Error(url + ": HTTP " + r.status + " " + (await r.text()).slice(0, 200));
    return r.json();
  }
  const name = (o) => (state.lang === "en" ? o.name_en : o.name_zh);
  const fmt = (v) => (v == null ? "–" : Math.abs(v) >= 100 ? v.toFixed(2) : v.toFixed(4));
  const current = () => (state.overview.indicators.find((i) => i.id === state.indicator) || state.overview.indicators[0]);

  function writeUrl() {
    const p = new URLSearchParams();
    if (state.lang !== "zh") p.set("lang", state.lang);
    if (state.indicator) p.set("indicator", state.indicator);
    if (state.division) p.set("division", state.division);
    history.replaceState(null, "", location.pathname + (p.toString() ? "?" + p : ""));
  }

  function fillSelects() {
    const ind = current();
    state.indicator = ind.id;
    $("indicator-select").innerHTML = state.overview.indicators.map((i) =>
      '<option value="' + esc(i.id) + '"' + (i.id === ind.id ? " selected" : "") + ">" + esc(name(i)) + " (" + esc(i.unit) + ")</option>").join("");
    const divs = ind.values;
    if (!divs.some((d) => d.division === state.division)) state.division = (divs.find((d) => d.level === "county") || divs[0] || {}).division;
    $("division-select").innerHTML = divs.map((d) => '<option value="' + esc(d.division) + '"' + (d.division === state.division ? " selected" : "") + ">"
      + esc(d.name) + " " + esc(d.division) + "</option>").join("");
    $("map-indicator").textContent = name(ind) + " (" + ind.unit + ")";
  }

  // quantile-ish breaks over the townships' values: a class per ramp colour
  function breaks(values) {
    const v = values.filter((x) => x != null).sort((a, b) => a - b);
    if (!v.length) return [];
    const out = [];
    for (let k = 1; k < RAMP.length; k++) out.push(v[Math.min(v.length - 1, Math.floor((k * v.length) / RAMP.length))]);
    return out;
  }

  function paintMap() {
    const ind = current(), map = state.map;
    const towns = ind.values.filter((d) => d.level === "township");
    const byCode = Object.fromEntries(towns.map((d) => [d.division, d]));
    const src = map.getSource("townships");
    const data = state.townships;
    data.features.forEach((f) => {
      const d = byCode[f.properties.xzqdm] || {};
      f.properties.value = d.value == null ? null : d.value;
      f.properties.warn = d.status || "";
      f.properties.selected = f.properties.xzqdm === state.division;
    });
    src.setData(data);
    state.breaks = breaks(towns.map((d) => d.value));
    const step = ["step", ["get", "value"], RAMP[0]];
    state.breaks.forEach((b, k) => step.push(b, RAMP[k + 1]));
    map.setPaintProperty("choropleth", "fill-color", ["case", ["==", ["get", "value"], null], "#cccccc", step]);
    const labels = [RAMP[0]].concat(state.breaks.map((b, k) => RAMP[k + 1]));
    $("map-legend").innerHTML = labels.map((c, k) => '<li><i style="background:' + c + '"></i>'
      + (k === 0 ? "< " + fmt(state.breaks[0]) : "≥ " + fmt(state.breaks[k - 1])) + "</li>").join("")
      + '<li><i style="background:#cccccc"></i>' + esc(t("legend.none")) + "</li>";
  }

  async function loadDetail() {
    const ind = current();
    state.detail = await getJSON("/indicators/" + encodeURIComponent(ind.id) + "?division=" + encodeURIComponent(state.division));
    const d = state.detail.divisions[0] || {series: [], target: null};
    const points = d.series.map((r) => ({label: r.cause ? r.cause.layer + " v" + r.cause.version : "v0", value: r.value}));
    $("chart-title").textContent = name(ind) + " · " + (d.name || "");
    state.chart = Chart.draw($("chart"), points, d.target, {unit: ind.unit, targetLabel: t("chart.target"), empty: t("chart.none")});
    $("chart-note").textContent = t("chart.note");
  }

  function warningRow(w) {
    const ind = state.overview.indicators.find((i) => i.id === w.indicator);
    const div = (ind ? ind.values : []).find((d) => d.division === w.division) || {name: w.division};
    const cause = w.cause ? esc(w.cause.layer) + " v" + esc(w.cause.version) : esc(t("w.target_import"));
    const parcels = (w.parcels || []).map((p) => esc(p.key) + " (" + esc(p.change) + " " + esc(p.class || "") + ")").join(", ");
    const ack = w.acknowledged_by
      ? '<span class="acked">' + esc(t("w.acked")) + " · " + esc(w.acknowledged_by) + "</span>"
      : '<button type="button" class="ack" data-id="' + w.id + '">' + esc(t("w.ack")) + "</button>";
    return '<tr data-warning="' + w.id + '"><td><span class="level ' + esc(w.level) + '">' + esc(t("level." + w.level)) + "</span></td><td>"
      + esc(state.lang === "en" ? w.name_en : w.name_zh) + "</td><td>" + esc(div.name) + " " + esc(w.division) + "</td><td>"
      + fmt(w.value) + " / " + fmt(w.target) + " " + esc(w.unit) + "</td><td>" + cause + "</td><td>" + (parcels || "–") + "</td><td>" + ack + "</td></tr>";
  }

  async function loadWarnings() {
    state.warnings = (await getJSON("/warnings?status=open")).warnings;
    $("warnings").querySelector("tbody").innerHTML = state.warnings.length ? state.warnings.map(warningRow).join("")
      : '<tr><td colspan="7">' + esc(t("w.none")) + "</td></tr>";
  }

  async function acknowledge(id) {
    if (!apiKey()) { say("status.need_key"); return; }
    const r = await fetch("/warnings/" + id + "/acknowledge", {method: "POST", headers: headers({Accept: "application/json"})});
    if (!r.ok) { say("status.failed", "HTTP " + r.status + " " + (await r.text()).slice(0, 160)); return; }
    await loadWarnings();
  }

  async function refresh() {
    fillSelects();
    paintMap();
    writeUrl();  // the link names the choice at once, not once the detail has arrived
    await loadDetail();
  }

  function keyState() {
    $("key-state").textContent = apiKey() ? t("key.set") + " " + apiKey().split("_").slice(0, 2).join("_") + "…" : t("key.public");
  }

  function wire() {
    $("indicator-select").addEventListener("change", (e) => { state.indicator = e.target.value; refresh(); });
    $("division-select").addEventListener("change", (e) => { state.division = e.target.value; refresh(); });
    $("lang-switch").addEventListener("click", () => {
      state.lang = state.lang === "zh" ? "en" : "zh";
      I.apply(document, state.lang); keyState(); refresh(); loadWarnings();
    });
    $("key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const v = $("key-input").value.trim();
      if (v) sessionStorage.setItem(KEY_STORE, v); else sessionStorage.removeItem(KEY_STORE);
      $("key-input").value = "";
      keyState(); start();
    });
    $("warnings").addEventListener("click", (e) => {
      const b = e.target.closest("button.ack");
      if (b) acknowledge(b.dataset.id);
    });
  }

  function makeMap(townships) {
    const map = new maplibregl.Map({container: "map", attributionControl: false, style: {version: 8, sources: {
      townships: {type: "geojson", data: townships}}, layers: [
      {id: "background", type: "background", paint: {"background-color": "#eef2f3"}},
      {id: "choropleth", type: "fill", source: "townships", paint: {"fill-color": "#cccccc", "fill-opacity": 1}},
      {id: "outline", type: "line", source: "townships", paint: {"line-color": ["case", ["==", ["get", "warn"], "red"], "#c62828",
        ["==", ["get", "warn"], "yellow"], "#e0a800", "#555555"], "line-width": ["case", ["get", "selected"], 3.5, ["!=", ["get", "warn"], ""], 2.5, 0.8]}}]}});
    map.on("click", "choropleth", (e) => {
      const f = e.features && e.features[0];
      if (f) { state.division = f.properties.xzqdm; refresh(); }
    });
    return map;
  }

  function bounds(fc) {
    let b = [180, 90, -180, -90];
    const walk = (c) => { if (typeof c[0] === "number") { b = [Math.min(b[0], c[0]), Math.min(b[1], c[1]), Math.max(b[2], c[0]), Math.max(b[3], c[1])]; } else c.forEach(walk); };
    fc.features.forEach((f) => walk(f.geometry.coordinates));
    return [[b[0], b[1]], [b[2], b[3]]];
  }

  async function start() {
    say("status.loading");
    try {
      state.overview = await getJSON("/indicators");
      if (!state.townships) {
        state.townships = await getJSON("/collections/admin_divisions/items?level=township&limit=1000",
                                        {headers: {Accept: "application/geo+json"}});
        state.map = makeMap(state.townships);
        await new Promise((resolve) => state.map.on("load", resolve));
        state.map.fitBounds(bounds(state.townships), {padding: 20, duration: 0});
      }
      await refresh();
      await loadWarnings();
      say("status.ready");
      state.ready = true;
    } catch (err) {
      say("status.failed", err.message);
      console.error(err);
    }
  }

  I.apply(document, state.lang);
  keyState();
  wire();
  start();
})();
