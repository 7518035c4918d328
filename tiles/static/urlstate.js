/* The map's state in the URL hash, so that a link reproduces the view:
     #map=<zoom>/<lat>/<lon>[/<bearing>[/<pitch>]]&layers=<name>,<name>&opacity=<name>:<0..1>,...
      &order=<name>,<name>&lang=en
   ``layers`` lists the layers switched on (absent: each layer's default); ``opacity`` the
   layers whose opacity was changed; ``order`` the data layers' drawing order, topmost first
   (absent: the style's own order); ``lang=en`` the English interface (absent: Chinese, the
   default; only "zh" and "en" are known). The bare MapLibre form "#<zoom>/<lat>/<lon>" of older
   links is still read. parse() never throws: a garbled part is dropped, the rest is kept.

   Plain script: window.geobaseUrlState in the page, module.exports under node. */
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.geobaseUrlState = factory();
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";
  const NAME = /^[A-Za-z0-9_.-]{1,63}$/;
  const LANGS = ["zh", "en"];
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

  function parse(hash) {
    /* {view: {zoom, center: [lon, lat], bearing, pitch} | null, layers: [names] | null,
        opacity: {name: 0..1}} from a location.hash (with or without '#'), plus order: [names]
        and lang: "zh" | "en" when the hash has them (absent keys: the defaults). */
    const text = String(hash || "").replace(/^#/, "");
    const state = {view: null, layers: null, opacity: {}};
    if (!text) return state;
    if (!text.includes("=")) { state.view = parseView(decodeURIComponent(text)); return state; }
    for (const part of text.split("&")) {
      const i = part.indexOf("=");
      if (i < 0) continue;
      const key = part.slice(0, i);
      let value;
      try { value = decodeURIComponent(part.slice(i + 1)); } catch (e) { continue; }
      if (key === "map") state.view = parseView(value);
      else if (key === "layers") state.layers = value ? value.split(",").filter((s) => NAME.test(s)) : [];
      else if (key === "order") state.order = names(value);
      else if (key === "lang" && LANGS.includes(value)) state.lang = value;
      else if (key === "opacity") {
        for (const item of value.split(",")) {
          const [name, v] = item.split(":");
          const x = Number(v);
          if (NAME.test(name || "") && v !== "" && Number.isFinite(x) && x >= 0 && x <= 1) state.opacity[name] = x;
        }
      }
    }
    return state;
  }

  const round = (x, d) => { const f = Math.pow(10, d); return String(Math.round(x * f) / f); };

  function serialize(state) {
    /* The hash (with '#') for {view, layers, opacity, order, lang}; the inverse of parse() up to rounding:
       zoom to 2 decimals, lon/lat to 6 (~0.1 m), bearing/pitch to 1, opacity to 2. */
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
    return "#" + parts.join("&");
  }

  return {parse, serialize};
});
