/* Moving a polygon's vertices on the map. MapLibre GL JS has no editing of its own; this is a
   small one: the vertices of one geometry drawn as circles from a GeoJSON source, a vertex
   dragged with the mouse (or a finger) and the polygon redrawn as it moves. A ring's closing
   vertex is its first one: both move together, so the ring stays closed.

   Plain script: window.geobaseVertexEdit in the page, module.exports under node (the geometry
   functions handles() and moved() are tested there).
   In the page: const v = geobaseVertexEdit.start(map, geometry, onChange); v.geometry(); v.stop(). */
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.geobaseVertexEdit = factory();
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";
  const SRC = "edit-vertices", LAYER = "edit-vertices", SHAPE = "edit-shape";

  function rings(geometry) {
    /* [polygon index, ring index, ring] of a Polygon or MultiPolygon. */
    const polys = geometry.type === "Polygon" ? [geometry.coordinates] : geometry.coordinates;
    const out = [];
    polys.forEach((poly, p) => poly.forEach((ring, r) => out.push([p, r, ring])));
    return out;
  }

  function handles(geometry) {
    /* One handle per distinct vertex (a ring's closing vertex is not a handle of its own). */
    const out = [];
    for (const [p, r, ring] of rings(geometry)) {
      for (let i = 0; i < ring.length - 1; i++) out.push({path: [p, r, i], coord: ring[i]});
    }
    return out;
  }

  function moved(geometry, path, coord) {
    /* A copy of ``geometry`` with the vertex at ``path`` at ``coord`` (a ring stays closed). */
    const copy = JSON.parse(JSON.stringify(geometry));
    const polys = copy.type === "Polygon" ? [copy.coordinates] : copy.coordinates;
    const ring = polys[path[0]][path[1]];
    ring[path[2]] = coord.slice();
    if (path[2] === 0) ring[ring.length - 1] = coord.slice();
    return copy;
  }

  function collection(geometry) {
    return {type: "FeatureCollection", features: handles(geometry).map((h, i) => ({
      type: "Feature", id: i, properties: {i}, geometry: {type: "Point", coordinates: h.coord}}))};
  }

  function start(map, geometry, onChange) {
    /* Show the handles of ``geometry`` and let them be dragged; onChange(geometry) after each drop. */
    let current = geometry, dragging = null;
    const shape = () => ({type: "Feature", properties: {}, geometry: current});
    map.addSource(SRC, {type: "geojson", data: collection(current)});
    map.addSource(SHAPE, {type: "geojson", data: shape()});
    map.addLayer({id: SHAPE, type: "line", source: SHAPE, paint: {"line-color": "#ff6d00", "line-width": 2, "line-dasharray": [2, 1]}});
    map.addLayer({id: LAYER, type: "circle", source: SRC, paint: {"circle-radius": 6, "circle-color": "#ffffff",
                  "circle-stroke-color": "#ff6d00", "circle-stroke-width": 2}});
    const hs = () => handles(current);
    const down = (e) => {
      const hit = map.queryRenderedFeatures(e.point, {layers: [LAYER]})[0];
      if (!hit) return;
      e.preventDefault();
      dragging = hs()[hit.properties.i].path;
      map.dragPan.disable();
    };
    const move = (e) => {
      if (!dragging) return;
      current = moved(current, dragging, [e.lngLat.lng, e.lngLat.lat]);
      map.getSource(SHAPE).setData(shape());
      map.getSource(SRC).setData(collection(current));
    };
    const up = () => {
      if (!dragging) return;
      dragging = null;
      map.dragPan.enable();
      onChange(current);
    };
    map.on("mousedown", LAYER, down); map.on("touchstart", LAYER, down);
    map.on("mousemove", move); map.on("touchmove", move);
    map.on("mouseup", up); map.on("touchend", up);
    return {
      geometry: () => current,
      stop() {
        map.off("mousedown", LAYER, down); map.off("touchstart", LAYER, down);
        map.off("mousemove", move); map.off("touchmove", move); map.off("mouseup", up); map.off("touchend", up);
        for (const id of [LAYER, SHAPE]) if (map.getLayer(id)) map.removeLayer(id);
        for (const id of [SRC, SHAPE]) if (map.getSource(id)) map.removeSource(id);
        map.dragPan.enable();
        return current;
      },
    };
  }

  return {handles, moved, start};
});
