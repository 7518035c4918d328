/* The attribute table: the features of one layer in the view or matching a CQL2 filter typed
   by the planner, asked of the items API (filter=, bbox=, sortby=, paged with the answer's
   next link, with the caller's key); code-list names instead of raw codes; a click on a column
   sorts on the server, a click on a row highlights the feature and zooms to it; CSV and
   GeoPackage links export the same query through the API. The open table and its query live in
   the link (urlstate.js: table=, filter=, bbox=, sortby=), so a shared link opens the same rows.
   window.geobaseTable.attach(map, ctx) after the map's style has loaded returns
   {urlState(), apply(urlState.table)}; ctx.onChange() after the table opens, sorts or closes. */
(function () {
  "use strict";
  const PAGE = 50;
  const HIT = "table-hit";
  const state = {layer: null, query: null, sortby: null, url: null, rows: [], features: [], pages: [], next: null,
                 matched: null, selected: null, exports: {}, error: null, done: 0};
  window.geobaseTableState = state;
  let ctx = null;
  const $ = (id) => document.getElementById(id);
  const I = () => window.geobaseI18n;

  function params(extra) {
    /* The query (filter, view, order) as URL parameters; the same for a page and an export. */
    const q = new URLSearchParams();
    if (state.query.filter) q.set("filter", state.query.filter);
    if (state.query.bbox) q.set("bbox", state.query.bbox.map((v) => v.toFixed(8)).join(","));
    if (state.sortby) q.set("sortby", state.sortby);
    for (const [k, v] of Object.entries(extra)) q.set(k, v);
    return q.toString();
  }

  const itemsUrl = (extra) => "/collections/" + encodeURIComponent(state.layer) + "/items?" + params(extra);

  function bboxOf(geometry) {
    const b = [Infinity, Infinity, -Infinity, -Infinity];
    const walk = (c) => {
      if (typeof c[0] === "number") { b[0] = Math.min(b[0], c[0]); b[1] = Math.min(b[1], c[1]); b[2] = Math.max(b[2], c[0]); b[3] = Math.max(b[3], c[1]); }
      else for (const x of c) walk(x);
    };
    if (geometry && geometry.coordinates) walk(geometry.coordinates);
    return b;
  }

  function select(map, i) {
    const f = state.features[i];
    state.selected = f.id;
    for (const tr of $("table-grid").querySelectorAll("tr[data-i]")) tr.classList.toggle("selected", tr.dataset.i === String(i));
    map.getSource(HIT).setData({type: "FeatureCollection", features: f.geometry ? [f] : []});
    const b = bboxOf(f.geometry);
    if (!isFinite(b[0])) return;
    if (b[0] === b[2] && b[1] === b[3]) map.jumpTo({center: [b[0], b[1]], zoom: Math.max(map.getZoom(), 15)});
    else map.fitBounds([[b[0], b[1]], [b[2], b[3]]], {padding: {top: 40, left: 40, right: 40, bottom: 40 + $("table-panel").offsetHeight},
                                                   maxZoom: 17, duration: 0});  // clear of the table over the map
  }

  function render(map, cols) {
    const grid = $("table-grid");
    grid.innerHTML = "";
    const head = grid.createTHead().insertRow();
    for (const c of [{key: "id", title: null}].concat(cols)) {  // the id's heading is a word: words() writes it
      const th = document.createElement("th");
      const arrow = state.sortby === c.key ? " ▲" : state.sortby === "-" + c.key ? " ▼" : "";
      th.textContent = c.title == null ? "" : c.title + arrow;
      th.dataset.key = c.key;
      th.dataset.arrow = arrow;
      th.tabIndex = 0;
      const sort = () => { state.sortby = state.sortby === c.key ? "-" + c.key : c.key; load(map, null).catch(fail); };
      th.addEventListener("click", sort);
      th.addEventListener("keydown", (e) => { if (e.key === "Enter") sort(); });
      head.appendChild(th);
    }
    const body = grid.createTBody();
    state.rows.forEach((row, i) => {
      const tr = body.insertRow();
      tr.dataset.i = String(i);
      tr.tabIndex = 0;
      for (const v of row.shown) tr.insertCell().textContent = v;
      tr.addEventListener("click", () => select(map, i));
      tr.addEventListener("keydown", (e) => { if (e.key === "Enter") select(map, i); });
    });
    words();
    $("table-prev").disabled = !state.pages.length;
    $("table-next").disabled = !state.next;
    $("table-csv").href = state.exports.csv;
    $("table-gpkg").href = state.exports.gpkg;
  }

  function words() {
    /* The table's own words in the chosen language (again on every switch): the count line or
       the failure, the id column's heading and the headings' sort hint; the rows are data. */
    const t = I().t, from = state.pages.length * PAGE;
    $("table-info").textContent = state.error != null ? t("table.failed") + state.error :
      (state.matched == null ? "" : t("table.total").replace("{n}", String(state.matched))) +
      (state.rows.length ? (from + 1) + "–" + (from + state.rows.length) : t("table.none"));
    for (const th of $("table-grid").querySelectorAll("th")) {
      th.title = t("table.sort") + th.dataset.key;
      if (th.dataset.key === "id" && th.cellIndex === 0) th.textContent = t("table.id") + th.dataset.arrow;
    }
  }

  async function page(url) {
    /* One answer of the items API; a refusal (a CQL2 typo, an attribute not queryable) is
       thrown with the API's own description, which the planner needs to correct the filter. */
    const r = await fetch(url, {headers: ctx.authHeaders({Accept: "application/geo+json"})});
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.description || "HTTP " + r.status);
    return body;
  }

  async function load(map, url) {
    /* One page: the first of the query when url is null, else the API's own next link. */
    if (url == null) { state.pages = []; url = itemsUrl({limit: String(PAGE), numberMatched: "true"}); }
    const A = window.geobaseAttributes;
    const [doc, body] = await Promise.all([A.schema(state.layer, ctx.getJSON), page(url)]);
    const cols = A.columns(doc);
    state.url = url;
    state.error = null;
    state.features = body.features || [];
    state.matched = body.numberMatched == null ? null : body.numberMatched;
    state.rows = state.features.map((f) => ({id: f.id, values: f.properties,
      shown: [String(f.id)].concat(cols.map((c) => A.display(c.prop, (f.properties || {})[c.key])))}));
    const next = (body.links || []).find((l) => l.rel === "next");
    state.next = next ? next.href : null;
    state.exports = {csv: itemsUrl({f: "csv", bom: "true"}), gpkg: itemsUrl({f: "gpkg"})};
    $("table-panel").hidden = false;
    render(map, cols);
    state.done += 1;
    ctx.onChange();
  }

  function fail(err) {
    state.error = err.message;
    state.rows = []; state.features = [];
    $("table-grid").innerHTML = "";
    $("table-panel").hidden = false;
    words();
    state.done += 1;
    ctx.onChange();
  }

  async function download(e) {
    /* An export with the caller's key: a plain link cannot send the Authorization header, so
       with a key the file is fetched here and handed to the browser. */
    const a = e.currentTarget;
    if (!ctx.hasKey()) return;  // public: the link itself is the download
    e.preventDefault();
    const r = await fetch(a.href, {headers: ctx.authHeaders({})});
    if (!r.ok) { fail(new Error("export: HTTP " + r.status)); return; }
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await r.blob());
    link.download = state.layer + (a.id === "table-csv" ? ".csv" : ".gpkg");
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

  function urlState() {
    /* The open table's query for the link, null when the table is closed. */
    if ($("table-panel").hidden || !state.layer || !state.query) return null;
    return {layer: state.layer, filter: state.query.filter, bbox: state.query.bbox, sortby: state.sortby};
  }

  function open(map, query) {
    /* Ask the items API for a layer's rows: {layer, filter, bbox | null, sortby | null}. */
    state.layer = query.layer; state.sortby = query.sortby || null; state.selected = null;
    state.query = {filter: query.filter || "", bbox: query.bbox};
    $("table-layer").value = query.layer;
    $("table-filter").value = state.query.filter;
    $("table-inview").checked = !!query.bbox;
    return load(map, null).catch(fail);
  }

  function attach(map, context) {
    ctx = Object.assign({onChange: () => {}}, context);
    map.addSource(HIT, {type: "geojson", data: {type: "FeatureCollection", features: []}});
    map.addLayer({id: HIT + "-fill", type: "fill", source: HIT, filter: ["==", "$type", "Polygon"], paint: {"fill-color": "#ffd600", "fill-opacity": 0.4}});
    map.addLayer({id: HIT + "-line", type: "line", source: HIT, filter: ["!=", "$type", "Point"], paint: {"line-color": "#ff6d00", "line-width": 3}});
    map.addLayer({id: HIT + "-point", type: "circle", source: HIT, filter: ["==", "$type", "Point"], paint: {"circle-color": "#ffd600", "circle-radius": 7}});
    const pick = $("table-layer");
    for (const l of ctx.config.departments.flatMap((d) => d.layers).filter((l) => l.kind === "vector")) {
      const o = document.createElement("option");
      o.value = l.name; o.dataset.zh = l.title.zh; o.dataset.en = l.title.en || l.title.zh;
      o.textContent = o.dataset[I().lang()];
      pick.appendChild(o);
    }
    document.addEventListener("geobase:lang", () => {
      for (const o of pick.options) o.textContent = o.dataset[I().lang()];
      if (!$("table-panel").hidden) words();
    });
    $("table-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const b = map.getBounds();
      const bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((v) => Number(v.toFixed(8)));  // as the query sends it
      open(map, {layer: pick.value, filter: $("table-filter").value.trim(), bbox: $("table-inview").checked ? bbox : null});
    });
    $("table-next").addEventListener("click", () => { state.pages.push(state.url); load(map, state.next).catch(fail); });
    $("table-prev").addEventListener("click", () => { if (state.pages.length) load(map, state.pages.pop()).catch(fail); });
    $("table-close").addEventListener("click", () => {
      $("table-panel").hidden = true;
      map.getSource(HIT).setData({type: "FeatureCollection", features: []});
      ctx.onChange();
    });
    for (const id of ["table-csv", "table-gpkg"]) $(id).addEventListener("click", (e) => { download(e).catch(fail); });
    const known = (name) => [...pick.options].some((o) => o.value === name);
    return {urlState, apply: (t) => (t && known(t.layer) ? open(map, t) : Promise.resolve())};
  }

  window.geobaseTable = {attach};
})();
