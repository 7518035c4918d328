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

  // the interface's words come from the one dictionary (i18n.js) and follow the language switch
  // (data-i18n); a collection's title is data, shown as the label of its group of presets
  const t = (key) => (window.geobaseI18n ? window.geobaseI18n.t(key) : key);

  function option(value, key) {
    const o = document.createElement("option");
    o.value = value;
    o.dataset.i18n = key;
    o.textContent = t(key);
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
    select.appendChild(option("", "imagery.off"));
    for (const e of entries) {
      const group = document.createElement("optgroup");
      group.label = e.title;
      for (const p of Object.keys(e.presets)) group.appendChild(option(e.collection + ":" + p, "imagery." + p));
      select.appendChild(group);
    }
    dates = document.createElement("select");
    dates.id = "imagery-date";
    const fillDates = () => {
      const e = entries.find((x) => select.value.startsWith(x.collection + ":"));
      dates.innerHTML = "";
      dates.appendChild(option("", "imagery.latest"));
      for (const d of (e ? e.dates : []).slice().reverse()) {
        const o = document.createElement("option");
        o.value = d;
        o.textContent = d;
        dates.appendChild(o);
      }
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
