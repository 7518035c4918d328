/* Place names on the map from our own layers (no external basemap: the map works on an offline
   intranet): township, village and lake names at one point each, from GET /search/labels (the
   layers and fields this caller may read), and river names along the rivers' own tiles. Names are Chinese, drawn by the browser's own CJK font through
   MapLibre's localIdeographFontFamily, so no CJK glyph files are fetched. The style still has
   to name a glyph URL for text; it points at this server and is asked only for characters
   outside the CJK ranges, which these labels do not use (the browser test checks that no glyph
   request is made). MapLibre's collision detection keeps labels from overlapping.
   window.geobaseLabels.attach(map) after the style loaded, before the layer switcher is built
   (each label layer belongs to its data layer, so switching a layer off hides its names). */
(function () {
  "use strict";
  const FONT = ["Noto Sans Regular"];
  const CJK_FONTS = "'Noto Sans CJK SC', 'Noto Sans SC', 'WenQuanYi Micro Hei', 'Microsoft YaHei', 'PingFang SC', sans-serif";
  const HALO = {"text-color": "#222", "text-halo-color": "rgba(255,255,255,0.9)", "text-halo-width": 1.5};
  const WATER = Object.assign({}, HALO, {"text-color": "#0b4f8a"});
  const POINTS = "labels";
  const state = {loaded: false, count: 0};

  // [style layer id, data layer, kind or null (vector tiles), minzoom, text size, paint, extra layout]
  const LABELS = [
    ["label-township", "admin_divisions", "township", 8, 15, HALO, {"symbol-sort-key": 0}],
    ["label-village", "land_use", "village", 12, 12, HALO, {}],
    ["label-water", "water_areas", "water", 11, 12, WATER, {}],
    ["label-river", "rivers", null, 11, 12, WATER, {"symbol-placement": "line", "symbol-spacing": 400}],
  ];

  function attach(map, ctx) {
    const style = map.getStyle();
    const dataLayer = (name) => style.layers.find((x) => x.metadata && x.metadata["geobase:layer"] === name && x.source);
    map.setGlyphs(location.origin + "/map/static/glyphs/{fontstack}/{range}.pbf");
    map.addSource(POINTS, {type: "geojson", data: {type: "FeatureCollection", features: []}});
    for (const [id, name, kind, minzoom, size, paint, extra] of LABELS) {
      const data = dataLayer(name);
      if (!data) continue;  // the caller does not see this layer
      const source = kind ? {source: POINTS, filter: ["==", ["get", "kind"], kind]}
                          : {source: data.source, "source-layer": data["source-layer"], filter: ["has", "name"]};
      map.addLayer(Object.assign(source, {
        id, type: "symbol", minzoom,
        layout: Object.assign({"text-field": ["get", "name"], "text-font": FONT, "text-size": size}, extra),
        paint, metadata: {"geobase:layer": name, "geobase:department": data.metadata["geobase:department"], "geobase:label": true},
      }));
    }
    ctx.getJSON("/search/labels").then((fc) => {
      map.getSource(POINTS).setData(fc);
      state.count = fc.features.length;
      state.loaded = true;
    }).catch((err) => ctx.status("labels failed: " + err.message));
  }

  window.geobaseLabels = {attach, state, CJK_FONTS};
})();
