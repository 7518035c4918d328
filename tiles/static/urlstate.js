/* The map's state in the URL hash, so that a link reproduces the view:
     #map=<zoom>/<lat>/<lon>[/<bearing>[/<pitch>]]&layers=<name>,<name>&opacity=<name>:<0..1>,...
      &order=<name>,<name>&lang=en&compare=<mode>/<what>&divider=<0..1>
      &table=<name>&filter=<CQL2>&bbox=<w>,<s>,<e>,<n>&sortby=<[-]attribute>
   ``layers`` lists the layers switched on (absent: each layer's default); ``opacity`` the
   layers whose opacity was changed; ``order`` the data layers' drawing order, topmost first
   (absent: the style's own order); ``lang=en`` the English interface (absent: Chinese, the
   default; only "zh" and "en" are known). ``compare`` the compare view: <mode> is "slider" (one
   map at an earlier version), "swipe" (卷帘) or "side" (side by side), <what> "plan" (the plan
   layers against current land use) or <layer>/<left version>[/<right version>]; ``divider``
   where the swipe or the split lies (absent: the middle). ``table`` the layer whose attribute
   table is open, with its query: the CQL2 ``filter``, the ``bbox`` the table was limited to
   (the view when it was opened) and its ``sortby``. The bare MapLibre form "#<zoom>/<lat>/<lon>" of older
   links is still read. parse() never throws: a garbled part is dropped, the rest is kept.

   Plain script: window.geobaseUrlState in the page, module.exports under node. */
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.geobaseUrlState = factory();
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";
  const NAME = /^[A-Za-z0-9_.-]{1,63}$/;
  const LANGS = ["zh", "en"];
  const MODES = ["slider", "swipe", "side"];
  const SORT = /^-?[A-Za-z0-9_]{1,63}$/;
  const TABLE_KEYS = ["table", "filter", "bbox", "sortby"];
  const MAX_FILTER = 4000;  // a CQL2 text this long is not a planner's filter but a pasted accident
  const names = (value) => {  // the valid names of a comma list, each once, in their order
    const out = [];
    for (const s of value.split(",")) if (NAME.test(s) && !out.includes(s)) out.push(s);
    return out;
  };

  function parseView(text) {
    const n = String(text || "").split("/").map(Number);
    if (n.length < 3 || n.slice(0, 3).some((x) => !Number.isFinite(x))) return null;
    const [zoom, lat, lon] = n;
    if (zoom < 0 || zoom > 24 || Math.abs(lat) > 90 || Math.abs(lon) > 180) return null;
    const view = {zoom, center: [lon, lat], bearing: 0, pitch: 0};
    if (Number.isFinite(n[3])) view.bearing = n[3];
    if (Number.isFinite(n[4]) && n[4] >= 0 && n[4] <= 85) view.pitch = n[4];
    return view;
  }

  function parseCompare(text) {
    /* "side/land_use/1/2" → {mode, layer, left, right}; "swipe/plan" → {mode, plan: true}; null if garbled. */
    const p = String(text).split("/");
    const version = (s) => (/^[1-9][0-9]{0,8}$/.test(s || "") ? Number(s) : null);
    if (!MODES.includes(p[0])) return null;
    if (p[1] === "plan" && p.length === 2 && p[0] !== "slider") return {mode: p[0], plan: true};
    if (!NAME.test(p[1] || "") || p.length > 4) return null;
    const left = version(p[2]), right = p.length > 3 ? version(p[3]) : null;
    if (left == null || (p.length > 3 && right == null) || (p[0] !== "slider" && right == null)) return null;
    const out = {mode: p[0], layer: p[1], left};
    if (right != null) out.right = right;
    return out;
  }

  function parseBbox(text) {
    const b = String(text).split(",").map((s) => (s.trim() === "" ? NaN : Number(s)));
    if (b.length !== 4 || b.some((x) => !Number.isFinite(x))) return null;
    if (Math.abs(b[0]) > 180 || Math.abs(b[2]) > 180 || Math.abs(b[1]) > 90 || Math.abs(b[3]) > 90 || b[1] > b[3]) return null;
    return b;
  }

  function parseTable(pairs) {
    /* The attribute table's state from the hash's table/filter/bbox/sortby, or null: no table, or
       a part of its query garbled (the table is not opened on another query than the sender's). */
    if (!NAME.test(pairs.table || "")) return null;
    const table = {layer: pairs.table, filter: "", bbox: null, sortby: null};
    for (const key of ["filter", "bbox", "sortby"]) if (pairs[key] === undefined && key in pairs) return null;  // undecodable
    if (pairs.filter != null) { if (pairs.filter.length > MAX_FILTER) return null; table.filter = pairs.filter; }
    if (pairs.bbox != null) { table.bbox = parseBbox(pairs.bbox); if (!table.bbox) return null; }
    if (pairs.sortby != null) { if (!SORT.test(pairs.sortby)) return null; table.sortby = pairs.sortby; }
    return table;
  }

  function parse(hash) {
    /* {view: {zoom, center: [lon, lat], bearing, pitch} | null, layers: [names] | null,
        opacity: {name: 0..1}} from a location.hash (with or without '#'), plus order: [names]
        and lang: "zh" | "en", compare: {mode, plan: true} | {mode, layer, left[, right]},
        divider: 0..1 and table: {layer, filter, bbox, sortby} when the hash has them
        (absent keys: the defaults). */
    const text = String(hash || "").replace(/^#/, "");
    const state = {view: null, layers: null, opacity: {}};
    if (!text) return state;
    if (!text.includes("=")) {
      try { state.view = parseView(decodeURIComponent(text)); } catch (e) { /* garbled: no view */ }
      return state;
    }
    const tablePairs = {};
    for (const part of text.split("&")) {
      const i = part.indexOf("=");
      if (i < 0) continue;
      const key = part.slice(0, i);
      let value;
      try { value = decodeURIComponent(part.slice(i + 1)); } catch (e) { if (TABLE_KEYS.includes(key)) tablePairs[key] = undefined; continue; }
      if (key === "map") state.view = parseView(value);
      else if (key === "layers") state.layers = value ? value.split(",").filter((s) => NAME.test(s)) : [];
      else if (key === "order") state.order = names(value);
      else if (key === "lang" && LANGS.includes(value)) state.lang = value;
      else if (key === "compare") { const c = parseCompare(value); if (c) state.compare = c; }
      else if (key === "divider") {
        const x = value === "" ? NaN : Number(value);
        if (Number.isFinite(x) && x >= 0 && x <= 1) state.divider = x;
      } else if (TABLE_KEYS.includes(key)) tablePairs[key] = value;
      else if (key === "opacity") {
        for (const item of value.split(",")) {
          const [name, v] = item.split(":");
          const x = Number(v);
          if (NAME.test(name || "") && v !== "" && Number.isFinite(x) && x >= 0 && x <= 1) state.opacity[name] = x;
        }
      }
    }
    const table = parseTable(tablePairs);
    if (table) state.table = table;
    return state;
  }

  const round = (x, d) => { const f = Math.pow(10, d); return String(Math.round(x * f) / f); };

  function serialize(state) {
    /* The hash (with '#') for {view, layers, opacity, order, lang, compare, divider, table}; the
       inverse of parse() up to rounding: zoom to 2 decimals, lon/lat to 6 (~0.1 m), bearing/pitch
       to 1, opacity and divider to 2; the table's bbox is written as given (the query it made). */
    const parts = [];
    const v = state.view;
    if (v) {
      let s = [round(v.zoom, 2), round(v.center[1], 6), round(v.center[0], 6)].join("/");
      if (v.bearing || v.pitch) s += "/" + round(v.bearing || 0, 1);
      if (v.pitch) s += "/" + round(v.pitch, 1);
      parts.push("map=" + s);
    }
    if (state.layers) parts.push("layers=" + state.layers.filter((s) => NAME.test(s)).join(","));
    const op = Object.entries(state.opacity || {}).filter(([n, x]) => NAME.test(n) && x >= 0 && x <= 1);
    if (op.length) parts.push("opacity=" + op.map(([n, x]) => n + ":" + round(x, 2)).join(","));
    if (state.order && state.order.length) parts.push("order=" + names(state.order.join(",")).join(","));
    if (state.lang && state.lang !== "zh" && LANGS.includes(state.lang)) parts.push("lang=" + state.lang);
    const cmp = state.compare && serializeCompare(state.compare);
    if (cmp) {
      parts.push("compare=" + cmp);
      const d = state.divider;
      if (cmp.split("/")[0] !== "slider" && d != null && d >= 0 && d <= 1 && round(d, 2) !== "0.5") parts.push("divider=" + round(d, 2));
    }
    const t = state.table;
    if (t && NAME.test(t.layer || "")) {
      parts.push("table=" + t.layer);
      if (t.filter && t.filter.length <= MAX_FILTER) parts.push("filter=" + encodeURIComponent(t.filter));
      if (t.bbox && parseBbox(t.bbox.join(","))) parts.push("bbox=" + t.bbox.join(","));
      if (SORT.test(t.sortby || "")) parts.push("sortby=" + t.sortby);
    }
    return "#" + parts.join("&");
  }

  function serializeCompare(c) {
    /* The compare= value, or null when there is nothing to compare (checked like parse does). */
    const text = c.plan ? c.mode + "/plan" : [c.mode, c.layer, c.left].concat(c.right == null ? [] : [c.right]).join("/");
    return parseCompare(text) ? text : null;
  }

  return {parse, serialize};
});
