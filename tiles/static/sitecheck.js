/* Site check (选址分析): draw a red-line polygon on the map and send it to the site-check
   analysis of this server (POST, with the caller's key); its answer is shown as tables.
   Vertices come from clicks, from the keyboard (drawkeys.js: the cross at the map's centre,
   Space, Enter, Escape) or typed coordinates; double-click, Enter or "Finish" closes and sends.
   window.geobaseSiteCheck.attach(map, ctx) after the style loaded; ctx: {authHeaders, config}.
   The tool interface (active, add, undo, finish, cancel) is what drawkeys.js drives. */
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const say = (el, key, tail) => window.geobaseI18n.say(el, key, tail);
  const state = {active: false, coords: [], sending: false, done: 0, status: null};
  let map = null, ctx = null;

  function data() {
    const c = state.coords;
    const features = c.map((p) => ({type: "Feature", geometry: {type: "Point", coordinates: p}, properties: {}}));
    if (c.length >= 3) features.push({type: "Feature", properties: {}, geometry: {type: "Polygon", coordinates: [c.concat([c[0]])]}});
    else if (c.length === 2) features.push({type: "Feature", properties: {}, geometry: {type: "LineString", coordinates: c}});
    return {type: "FeatureCollection", features};
  }

  function redraw() {
    map.getSource("draw").setData(data());
    $("finish-btn").disabled = !state.active || state.coords.length < 3;
  }

  function renderResult(body) {
    const parts = [];
    const table = (rows) => {
      if (!rows.length || typeof rows[0] !== "object") return "<p>" + esc(JSON.stringify(rows)) + "</p>";
      const cols = Object.keys(rows[0]).filter((k) => typeof rows[0][k] !== "object").slice(0, 6);
      return "<table><tr>" + cols.map((c) => "<th>" + esc(c) + "</th>").join("") + "</tr>" +
        rows.slice(0, 30).map((r) => "<tr>" + cols.map((c) => "<td>" + esc(typeof r[c] === "number" ? Math.round(r[c] * 100) / 100 : r[c]) + "</td>").join("") + "</tr>").join("") + "</table>";
    };
    for (const [k, v] of Object.entries(body)) {
      if (Array.isArray(v)) parts.push("<h3>" + esc(k) + "</h3>" + table(v));
      else if (v && typeof v === "object") parts.push("<h3>" + esc(k) + "</h3><pre>" + esc(JSON.stringify(v, null, 1).slice(0, 1500)) + "</pre>");
      else parts.push("<div><b>" + esc(k) + "</b>: " + esc(v) + "</div>");
    }
    return parts.join("");
  }

  function message(cls, key, tail) {  // the first line of #site-result: translated words + data
    const out = $("site-result");
    out.innerHTML = "";
    const p = document.createElement("p");
    p.className = cls;
    out.appendChild(say(p, key, tail));
    return out;
  }

  async function send() {
    const c = state.coords;
    if (c.length < 3) { message("error", "site.need3"); return; }
    state.sending = true; state.status = null;
    message("hint", "site.checking");
    const geometry = {type: "Polygon", coordinates: [c.concat([c[0]])]};
    try {
      const r = await fetch(ctx.config.site_check, {method: "POST", body: JSON.stringify({geometry}),
        headers: ctx.authHeaders({"Content-Type": "application/json", Accept: "application/json"})});
      state.status = r.status;
      const body = await r.json().catch(() => ({}));
      if (r.status === 404) message("error", "site.unavailable");
      else if (!r.ok) message("error", "site.failed", "HTTP " + r.status + " " + (body.description || ""));
      else message("ok", "site.done").insertAdjacentHTML("beforeend", renderResult(body));
    } catch (err) {
      message("error", "site.failed", err.message);
    } finally {
      state.sending = false; state.done += 1;
    }
  }

  const tool = {
    name: "site",
    active: () => state.active,
    add(lngLat) { state.coords.push([lngLat[0], lngLat[1]]); redraw(); },
    undo() { state.coords.pop(); redraw(); },
    finish() {
      if (!state.active || state.coords.length < 3) return;
      state.active = false; $("draw-btn").disabled = false; map.getCanvas().style.cursor = "";
      redraw(); send();
    },
    cancel() {
      state.active = false; state.coords = []; redraw();
      $("draw-btn").disabled = false; map.getCanvas().style.cursor = ""; $("site-result").textContent = "";
    },
    pause() { tool.cancel(); },
    start() {
      window.geobaseDrawKeys.began(tool);
      state.active = true; state.coords = []; redraw();
      $("draw-btn").disabled = true; map.getCanvas().style.cursor = "crosshair";
      message("hint", "site.click");
    },
  };

  function attach(m, c) {
    map = m; ctx = c;
    map.addSource("draw", {type: "geojson", data: data()});
    map.addLayer({id: "draw-fill", type: "fill", source: "draw", filter: ["==", "$type", "Polygon"], paint: {"fill-color": "#ff00ff", "fill-opacity": 0.15}});
    map.addLayer({id: "draw-line", type: "line", source: "draw", filter: ["!=", "$type", "Point"], paint: {"line-color": "#ff00ff", "line-width": 2}});
    map.addLayer({id: "draw-pts", type: "circle", source: "draw", filter: ["==", "$type", "Point"], paint: {"circle-color": "#ff00ff", "circle-radius": 4}});
    map.on("click", (e) => { if (state.active) tool.add([e.lngLat.lng, e.lngLat.lat]); });
    map.on("dblclick", (e) => { if (state.active && state.coords.length >= 3) { e.preventDefault(); tool.finish(); } });
    $("draw-btn").addEventListener("click", () => { tool.start(); window.geobaseDrawKeys.focusMap(); });
    $("finish-btn").addEventListener("click", tool.finish);
    $("clear-btn").addEventListener("click", tool.cancel);
    window.geobaseDrawKeys.register(tool);
  }

  window.geobaseSiteCheck = {attach, state, active: () => state.active};
})();
