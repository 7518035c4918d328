/* Measuring on the map: distance and area on the CGCS2000 ellipsoid (geodesic.js), shown in
   m / km and m² / ha / 亩. Click to add points, double-click or 完成 to finish, Esc to stop.
   window.geobaseMeasureUI.attach(map) after the map's style has loaded; while measuring, the
   map's other click tools (popups, site drawing) stand aside (active()). */
(function () {
  "use strict";
  const G = window.geobaseGeodesic;
  const SRC = "measure";
  const state = {mode: null, coords: [], length_m: null, area_m2: null, done: false};
  window.geobaseMeasure = state;

  function data() {
    const c = state.coords, features = c.map((p) => ({type: "Feature", properties: {}, geometry: {type: "Point", coordinates: p}}));
    if (state.mode === "area" && c.length >= 3) features.push({type: "Feature", properties: {}, geometry: {type: "Polygon", coordinates: [c.concat([c[0]])]}});
    else if (c.length >= 2) features.push({type: "Feature", properties: {}, geometry: {type: "LineString", coordinates: c}});
    return {type: "FeatureCollection", features};
  }

  function show(map) {
    map.getSource(SRC).setData(data());
    const out = document.getElementById("measure-result");
    const c = state.coords;
    state.length_m = state.area_m2 = null;
    if (state.mode === "line" && c.length >= 2) {
      state.length_m = G.length(c);
      out.textContent = "距离 Distance: " + G.formatLength(state.length_m);
    } else if (state.mode === "area" && c.length >= 3) {
      state.area_m2 = G.area(c);
      out.textContent = "面积 Area: " + G.formatArea(state.area_m2) + " — 周长 perimeter " + G.formatLength(G.length(c.concat([c[0]])));
    } else if (state.mode) {
      out.textContent = "在地图上单击添加点 Click on the map to add points";
    }
  }

  function start(map, mode) {
    state.active = true; state.mode = mode; state.coords = []; state.done = false;
    map.getCanvas().style.cursor = "crosshair";
    show(map);
  }

  function stop(map) {  // the shape and numbers stay on screen; no more clicks are taken
    state.active = false; state.done = true;
    map.getCanvas().style.cursor = "";
  }

  function attach(map) {
    map.addSource(SRC, {type: "geojson", data: data()});
    map.addLayer({id: "measure-fill", type: "fill", source: SRC, filter: ["==", "$type", "Polygon"], paint: {"fill-color": "#ff8c00", "fill-opacity": 0.2}});
    map.addLayer({id: "measure-line", type: "line", source: SRC, filter: ["!=", "$type", "Point"], paint: {"line-color": "#ff8c00", "line-width": 2, "line-dasharray": [2, 1]}});
    map.addLayer({id: "measure-pts", type: "circle", source: SRC, filter: ["==", "$type", "Point"], paint: {"circle-color": "#ff8c00", "circle-radius": 4}});
    const on = (id, fn) => document.getElementById(id).addEventListener("click", fn);
    on("measure-line", () => start(map, "line"));
    on("measure-area", () => start(map, "area"));
    on("measure-finish", () => stop(map));
    on("measure-clear", () => { state.active = false; state.mode = null; state.coords = []; state.done = false; show(map);
                                document.getElementById("measure-result").textContent = ""; map.getCanvas().style.cursor = ""; });
    map.on("click", (e) => {
      if (!state.active) return;
      state.coords.push([e.lngLat.lng, e.lngLat.lat]);
      show(map);
    });
    map.on("dblclick", (e) => { if (state.active) { e.preventDefault(); stop(map); } });
    document.addEventListener("keydown", (e) => { if (e.key === "Escape" && state.active) stop(map); });
  }

  window.geobaseMeasureUI = {attach, active: () => !!state.active};
})();
