/* Export the current view as a PNG: the map's canvas as drawn, at its own pixel size. MapLibre
   clears its WebGL drawing buffer after each frame, so the picture is taken inside the next
   "render" event (the frame just drawn, before the buffer is handed back) rather than by
   keeping the buffer for every frame (preserveDrawingBuffer costs on every frame).
   window.geobaseExport.attach(map, {status}) wires the #export-png button; the file is
   downloaded as geobase-map-<zoom>-<lat>-<lon>.png. Labels are drawn with the browser's CJK
   font into the same canvas, so they are in the picture; the panel and popups are not. */
(function () {
  "use strict";
  const state = {count: 0, width: 0, height: 0, error: null};

  function capture(map) {
    /* A promise of the PNG data URL of the next frame. */
    return new Promise((resolve, reject) => {
      map.once("render", () => {
        try { resolve(map.getCanvas().toDataURL("image/png")); } catch (err) { reject(err); }
      });
      map.triggerRepaint();
    });
  }

  function attach(map, ctx) {
    const t = (k) => (window.geobaseI18n ? window.geobaseI18n.t(k) : k);
    const btn = document.getElementById("export-png");
    if (!btn) return;
    btn.addEventListener("click", async () => {
      try {
        const url = await capture(map);
        const c = map.getCenter();
        const a = document.createElement("a");
        a.href = url;
        a.download = "geobase-map-" + map.getZoom().toFixed(1) + "-" + c.lat.toFixed(4) + "-" + c.lng.toFixed(4) + ".png";
        document.body.appendChild(a);
        a.click();
        a.remove();
        Object.assign(state, {count: state.count + 1, width: map.getCanvas().width, height: map.getCanvas().height, error: null});
        if (ctx && ctx.status) ctx.status(t("export.done"));
      } catch (err) {
        state.error = err.message;
        if (ctx && ctx.status) ctx.status(t("export.failed") + ": " + err.message);
      }
    });
  }

  window.geobaseExport = {attach, capture, state};
})();
