/* What each map of the compare view draws (for compare.js): a layer from the versioned vector
   tiles of one of its versions (/tiles/{layer}/{z}/{x}/{y}.mvt?version=N, the layer's own style
   layers copied onto that source, today's hidden meanwhile), one side of plan vs current (its
   layers shown, the other side's hidden), and the change feed's parcels outlined. Every layer
   this hides is remembered on the map (map.__compareHidden: id → the user's visibility), so
   reset() gives the user's map back and cleanStyle() the user's style for a second map.
   window.geobaseCompareLayers = {reset, showVersion, showSide, showChanges, cleanStyle, HIGHLIGHT}. */
(function () {
  "use strict";
  const SRC = "compare-version", CHANGES = "compare-changes", PREFIX = "compare:";
  const HIGHLIGHT = "#ff00aa";

  const tileUrl = (name, v) => location.origin + "/tiles/" + encodeURIComponent(name) + "/{z}/{x}/{y}.mvt?version=" + v;
  const dataLayers = (map, name) => map.getStyle().layers.filter((l) => l.source === "onemap" && l.metadata &&
    l.metadata["geobase:layer"] === name && !l.metadata["geobase:label"]);
  function setVisibility(map, id, vis) {
    /* Show or hide a style layer for the comparison, remembering what the user had. */
    if (!(id in map.__compareHidden)) map.__compareHidden[id] = map.getLayoutProperty(id, "visibility") || "visible";
    map.setLayoutProperty(id, "visibility", vis);
  }

  function reset(map) {
    /* The map as the user set it: no version source, every layer's own visibility back. */
    for (const l of map.getStyle().layers) if (l.id.startsWith(PREFIX)) map.removeLayer(l.id);
    if (map.getSource(SRC)) map.removeSource(SRC);
    for (const [id, vis] of Object.entries(map.__compareHidden || {})) if (map.getLayer(id)) map.setLayoutProperty(id, "visibility", vis);
    map.__compareHidden = {};
  }

  function showVersion(map, name, version) {
    /* Draw `name` from `version`'s tiles (null: today's layer again). */
    reset(map);
    if (version == null) return;
    const one = map.getStyle().sources.onemap || {};
    map.addSource(SRC, {type: "vector", tiles: [tileUrl(name, version)], minzoom: one.minzoom || 0, maxzoom: one.maxzoom || 22});
    for (const l of dataLayers(map, name)) {
      const vis = map.getLayoutProperty(l.id, "visibility") || "visible";
      map.addLayer(Object.assign({}, l, {id: PREFIX + l.id, source: SRC, layout: Object.assign({}, l.layout, {visibility: vis})}), l.id);
      setVisibility(map, l.id, "none");
    }
  }

  function showSide(map, on, off) {
    /* One side of plan vs current: the layers named in `on` shown, those in `off` hidden. */
    reset(map);
    for (const n of on) for (const l of dataLayers(map, n)) setVisibility(map, l.id, "visible");
    for (const n of off) for (const l of dataLayers(map, n)) setVisibility(map, l.id, "none");
  }

  function showChanges(map, data) {
    if (!map.getSource(CHANGES)) {
      map.addSource(CHANGES, {type: "geojson", data});
      map.addLayer({id: CHANGES, type: "line", source: CHANGES, paint: {"line-color": HIGHLIGHT, "line-width": 2.5}});
    } else {
      map.getSource(CHANGES).setData(data);
      map.moveLayer(CHANGES);
    }
  }

  function cleanStyle(map) {
    /* The main map's style as the user set it (layers switched, opacity), without this module's parts. */
    const style = JSON.parse(JSON.stringify(map.getStyle()));
    const hidden = map.__compareHidden || {};
    style.layers = style.layers.filter((l) => !l.id.startsWith(PREFIX) && l.id !== CHANGES);
    for (const l of style.layers) if (hidden[l.id]) l.layout = Object.assign({}, l.layout, {visibility: hidden[l.id]});
    delete style.sources[SRC];
    delete style.sources[CHANGES];
    return style;
  }

  window.geobaseCompareLayers = {reset, showVersion, showSide, showChanges, cleanStyle, HIGHLIGHT};
})();
