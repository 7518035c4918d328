// Imagery on the one map: each imagery collection the caller may see (from /map/config
// "imagery") can be drawn UNDER the parcels and every other vector layer, as true colour or
// NDVI, either the latest mosaic or the mosaic as of a scene date (datetime=../date: the scenes
// up to that day, the latest on top). Off until chosen, so the map opens as before.
(function () {
  "use strict";
  const SOURCE = "imagery", LAYER = "imagery";

  function firstVectorLayer(map) {
    // the imagery goes below the first layer that draws features (fills, lines, symbols)
    const l = map.getStyle().layers.find((x) => !["background", "raster", "hillshade"].includes(x.type) && x.id !== LAYER);
    return l && l.id;
  }

  function tileUrl(entry, preset, date) {
    const url = entry.presets[preset];
    return date ? url + "?datetime=" + encodeURIComponent("../" + date) : url;
  }

  function show(map, config, choice, date) {
    if (map.getLayer(LAYER)) map.removeLayer(LAYER);
    if (map.getSource(SOURCE)) map.removeSource(SOURCE);
    if (!choice) return;
    const [collection, preset] = choice.split(":");
    const entry = config.imagery.find((e) => e.collection === collection);
    if (!entry || !entry.presets[preset]) return;
    map.addSource(SOURCE, {type: "raster", tiles: [tileUrl(entry, preset, date)], tileSize: 256,
                           bounds: entry.bbox, maxzoom: 20});
    map.addLayer({id: LAYER, type: "raster", source: SOURCE, paint: {"raster-resampling": "nearest"}}, firstVectorLayer(map));
  }

  function option(value, text) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = text;
    return o;
  }

  function attach(map, config) {
    const box = document.getElementById("imagery-list");
    const entries = config.imagery || [];
    const api = {choice: () => select && select.value, date: () => dates && dates.value};
    let select = null, dates = null;
    if (!box) return api;
    box.innerHTML = "";
    if (!entries.length) { box.textContent = "—"; return api; }
    select = document.createElement("select");
    select.id = "imagery-select";
    select.appendChild(option("", "影像关闭 Imagery off"));
    const names = {truecolor: "真彩色 true colour", ndvi: "植被指数 NDVI"};
    for (const e of entries) {
      for (const p of Object.keys(e.presets)) select.appendChild(option(e.collection + ":" + p, e.title + " · " + (names[p] || p)));
    }
    dates = document.createElement("select");
    dates.id = "imagery-date";
    const fillDates = () => {
      const e = entries.find((x) => select.value.startsWith(x.collection + ":"));
      dates.innerHTML = "";
      dates.appendChild(option("", "最新 latest"));
      for (const d of (e ? e.dates : []).slice().reverse()) dates.appendChild(option(d, d));
    };
    fillDates();
    select.addEventListener("change", () => { fillDates(); show(map, config, select.value, dates.value); });
    dates.addEventListener("change", () => show(map, config, select.value, dates.value));
    box.appendChild(select);
    box.appendChild(dates);
    return api;
  }

  window.geobaseImagery = {attach, show};
})();
