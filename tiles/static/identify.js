/* Identify: a click on the map lists the features there from every visible vector layer,
   asked of the features API (GET /collections/{id}/items?bbox=…, a few pixels around the
   click, with the caller's key), with attribute titles and code-list names from the layer's
   schema. Masked attributes never appear: the API leaves them out of both.
   window.geobaseIdentify.attach(map, ctx); window.geobaseIdentify.at(map, e) on a click. */
(function () {
  "use strict";
  const TOLERANCE_PX = 4;
  const PER_LAYER = 20;
  const state = {results: [], errors: [], done: 0};
  window.geobaseIdentifyState = state;
  let ctx = null;
  let popup = null;
  let clicks = 0;

  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

  function bboxAround(map, point) {
    const a = map.unproject([point.x - TOLERANCE_PX, point.y + TOLERANCE_PX]);
    const b = map.unproject([point.x + TOLERANCE_PX, point.y - TOLERANCE_PX]);
    return [Math.min(a.lng, b.lng), Math.min(a.lat, b.lat), Math.max(a.lng, b.lng), Math.max(a.lat, b.lat)];
  }

  async function layerHits(layer, bbox) {
    const A = window.geobaseAttributes;
    const url = "/collections/" + encodeURIComponent(layer.name) + "/items?limit=" + PER_LAYER +
      "&bbox=" + bbox.map((v) => v.toFixed(8)).join(",");
    const [doc, body] = await Promise.all([A.schema(layer.name, ctx.getJSON), ctx.getJSON(url)]);
    const cols = A.columns(doc);
    return (body.features || []).map((f) => ({
      layer: layer.name, layerTitle: layer.title.zh, id: f.id,
      attributes: cols.filter((c) => c.key in (f.properties || {}))
        .map((c) => ({key: c.key, title: c.title, value: f.properties[c.key], shown: A.display(c.prop, f.properties[c.key])})),
    }));
  }

  function render(map, lngLat) {
    let html = "";
    for (const r of state.results) {
      html += '<div class="identify-hit"><b>' + esc(r.layerTitle) + "</b> <span class=\"meta\">" + esc(r.id) + "</span><table>" +
        r.attributes.map((a) => "<tr><td>" + esc(a.title) + "</td><td>" + esc(a.shown) + "</td></tr>").join("") + "</table></div>";
    }
    for (const e of state.errors) html += '<p class="error">' + esc(e) + "</p>";
    if (!html) html = '<p class="hint">此处无要素 Nothing here</p>';
    if (popup) popup.remove();
    popup = new maplibregl.Popup({maxWidth: "340px", className: "identify-popup"}).setLngLat(lngLat)
      .setHTML('<div id="identify-list">' + html + "</div>").addTo(map);
  }

  async function at(map, e) {
    /* Everything at the clicked point, layer by layer in the switcher's order. A newer click
       wins: an older answer arriving late is dropped. */
    const mine = ++clicks;
    const bbox = bboxAround(map, e.point);
    const visible = new Set(ctx.visible());
    const layers = ctx.config.departments.flatMap((d) => d.layers)
      .filter((l) => l.kind === "vector" && visible.has(l.name));
    const answers = await Promise.allSettled(layers.map((l) => layerHits(l, bbox)));
    if (mine !== clicks) return;
    state.results = []; state.errors = [];
    answers.forEach((a, i) => {
      if (a.status === "fulfilled") state.results.push(...a.value);
      else state.errors.push(layers[i].title.zh + ": " + a.reason.message);
    });
    render(map, e.lngLat);
    state.done += 1;
  }

  function attach(map, context) {
    ctx = context;
  }

  window.geobaseIdentify = {attach, at};
})();
