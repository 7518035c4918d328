/* Place names and parcel codes on the map from our own layers (no external basemap: the map
   works on an offline intranet): township, village and lake names at one point each, from
   GET /search/labels (the layers and fields this caller may read), river names along the rivers'
   own tiles, canal names along the canals' banks, and from zoom 16 each land-use parcel's number (TBBH where the tiles carry it, else
   its BSM) from the parcels' own tiles. Chinese is drawn by the browser's own CJK font through
   MapLibre's localIdeographFontFamily, so no CJK glyph file is fetched; digits and Latin letters
   come from this server's glyph set (GET /map/glyphs/..., built at setup by
   scripts/build_glyphs.py). MapLibre's collision detection keeps labels from overlapping.
   window.geobaseLabels.attach(map) after the style loaded, before the layer switcher is built
   (each label layer belongs to its data layer, so switching a layer off hides its names). */
(function () {
  "use strict";
  const FONT = ["DejaVu Sans Book"];  // the font stack scripts/build_glyphs.py builds
  const CJK_FONTS = "'Noto Sans CJK SC', 'Noto Sans SC', 'WenQuanYi Micro Hei', 'Microsoft YaHei', 'PingFang SC', sans-serif";
  const HALO = {"text-color": "#222", "text-halo-color": "rgba(255,255,255,0.9)", "text-halo-width": 1.5};
  const WATER = Object.assign({}, HALO, {"text-color": "#0b4f8a"});
  const PARCEL = {"text-color": "#3a3a3a", "text-halo-color": "rgba(255,255,255,0.85)", "text-halo-width": 1.2};
  const PARCEL_CODE = ["coalesce", ["get", "tbbh"], ["get", "bsm"]];
  const POINTS = "labels";
  const state = {loaded: false, count: 0};

  // [style layer id, data layer, kind or null (vector tiles), minzoom, text size, paint, extra layout,
  //  {text, filter} for a tile layer (default: its "name")]
  // Added bottom up: a later (higher) layer is placed first, so names win over parcel codes;
  // among parcels the larger is placed first.
  const LABELS = [
    ["label-parcel", "land_use", null, 16, 11, PARCEL, {"symbol-sort-key": ["-", 0, ["coalesce", ["get", "tbmj"], 0]]},
     {text: PARCEL_CODE, filter: ["any", ["has", "tbbh"], ["has", "bsm"]]}],
    ["label-township", "admin_divisions", "township", 8, 15, HALO, {"symbol-sort-key": 0}],
    ["label-village", "land_use", "village", 12, 12, HALO, {}],
    ["label-water", "water_areas", "water", 11, 12, WATER, {}],
    ["label-river", "rivers", null, 11, 12, WATER, {"symbol-placement": "line", "symbol-spacing": 400}],
    // a canal has no centre line of its own: its name runs along its banks, where the reader is
    ["label-canal", "water_areas", null, 13, 11, WATER, {"symbol-placement": "line", "symbol-spacing": 300},
     {filter: ["all", ["has", "name"], ["==", ["get", "kind"], "canal"]]}],
  ];

  function attach(map, ctx) {
    const style = map.getStyle();
    const dataLayer = (name) => style.layers.find((x) => x.metadata && x.metadata["geobase:layer"] === name && x.source);
    map.setGlyphs(location.origin + "/map/glyphs/{fontstack}/{range}.pbf");
    map.addSource(POINTS, {type: "geojson", data: {type: "FeatureCollection", features: []}});
    for (const [id, name, kind, minzoom, size, paint, extra, opts] of LABELS) {
      const {text, filter} = opts || {};
      const data = dataLayer(name);
      if (!data) continue;  // the caller does not see this layer
      const source = kind ? {source: POINTS, filter: ["==", ["get", "kind"], kind]}
                          : {source: data.source, "source-layer": data["source-layer"],
                             filter: filter || ["has", "name"]};
      map.addLayer(Object.assign(source, {
        id, type: "symbol", minzoom,
        layout: Object.assign({"text-field": text || ["get", "name"], "text-font": FONT, "text-size": size}, extra),
        paint, metadata: {"geobase:layer": name, "geobase:department": data.metadata["geobase:department"], "geobase:label": true},
      }));
    }
    ctx.getJSON("/search/labels").then((fc) => {
      map.getSource(POINTS).setData(fc);
      state.count = fc.features.length;
      state.loaded = true;
    }).catch((err) => ctx.status("status.labels_failed", err.message));
  }

  window.geobaseLabels = {attach, state, CJK_FONTS};
})();
