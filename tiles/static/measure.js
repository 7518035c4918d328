/* Measuring on the map: distance and area on the CGCS2000 ellipsoid (geodesic.js), shown in
   m / km and m² / ha / 亩 (mu in English). Click to add points, double-click or 完成 to finish;
   from the keyboard (drawkeys.js) Space adds the point under the centre cross, Enter finishes,
   Escape cancels; a typed "lon lat" adds a point exactly.
   window.geobaseMeasureUI.attach(map) after the map's style has loaded; while measuring, the
   map's other click tools (identify, site drawing) stand aside (active()). */
(function () {
  "use strict";
  const G = window.geobaseGeodesic;
  const SRC = "measure";
  const state = {mode: null, coords: [], length_m: null, area_m2: null, done: false};
  window.geobaseMeasure = state;
  let map = null;
  const I = () => window.geobaseI18n;
  const mu = (text) => (I().lang() === "en" ? text.replace(/亩/g, "mu") : text);

  function data() {
    const c = state.coords, features = c.map((p) => ({type: "Feature", properties: {}, geometry: {type: "Point", coordinates: p}}));
    if (state.mode === "area" && c.length >= 3) features.push({type: "Feature", properties: {}, geometry: {type: "Polygon", coordinates: [c.concat([c[0]])]}});
    else if (c.length >= 2) features.push({type: "Feature", properties: {}, geometry: {type: "LineString", coordinates: c}});
    return {type: "FeatureCollection", features};
  }

  function show() {
    map.getSource(SRC).setData(data());
    const out = document.getElementById("measure-result");
    const c = state.coords;
    state.length_m = state.area_m2 = null;
    if (state.mode === "line" && c.length >= 2) {
      state.length_m = G.length(c);
      I().say(out, "measure.distance", G.formatLength(state.length_m));
    } else if (state.mode === "area" && c.length >= 3) {
      state.area_m2 = G.area(c);
      I().say(out, "measure.area_is", mu(G.formatArea(state.area_m2)) + " — " + I().t("measure.perimeter") + " " +
        G.formatLength(G.length(c.concat([c[0]]))));
    } else if (state.mode) {
      I().say(out, "measure.click");
    } else {
      out.textContent = "";
    }
  }

  function start(mode) {
    window.geobaseDrawKeys.began(tool);
    state.active = true; state.mode = mode; state.coords = []; state.done = false;
    map.getCanvas().style.cursor = "crosshair";
    show();
  }

  function stop() {  // the shape and numbers stay on screen; no more clicks are taken
    state.active = false; state.done = true;
    map.getCanvas().style.cursor = "";
  }

  function clear() {
    state.active = false; state.mode = null; state.coords = []; state.done = false;
    map.getCanvas().style.cursor = "";
    show();
  }

  const tool = {
    name: "measure",
    active: () => !!state.active,
    start: () => start(state.mode || "line"),
    add(p) { state.coords.push([p[0], p[1]]); show(); },
    undo() { state.coords.pop(); show(); },
    finish: stop,
    cancel: clear,
    pause: stop,
  };

  function attach(m) {
    map = m;
    map.addSource(SRC, {type: "geojson", data: data()});
    map.addLayer({id: "measure-fill", type: "fill", source: SRC, filter: ["==", "$type", "Polygon"], paint: {"fill-color": "#ff8c00", "fill-opacity": 0.2}});
    map.addLayer({id: "measure-line", type: "line", source: SRC, filter: ["!=", "$type", "Point"], paint: {"line-color": "#ff8c00", "line-width": 2, "line-dasharray": [2, 1]}});
    map.addLayer({id: "measure-pts", type: "circle", source: SRC, filter: ["==", "$type", "Point"], paint: {"circle-color": "#ff8c00", "circle-radius": 4}});
    const on = (id, fn) => document.getElementById(id).addEventListener("click", fn);
    const keys = () => window.geobaseDrawKeys.focusMap();
    on("measure-line", () => { start("line"); keys(); });
    on("measure-area", () => { start("area"); keys(); });
    on("measure-finish", stop);
    on("measure-clear", clear);
    map.on("click", (e) => { if (state.active) tool.add([e.lngLat.lng, e.lngLat.lat]); });
    map.on("dblclick", (e) => { if (state.active) { e.preventDefault(); stop(); } });
    document.addEventListener("geobase:lang", () => { if (state.mode) show(); });
    window.geobaseDrawKeys.register(tool);
  }

  window.geobaseMeasureUI = {attach, active: () => !!state.active};
})();
