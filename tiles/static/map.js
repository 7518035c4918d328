/* geobase one map: MapLibre page over this server's style, tiles, legend and analyses.
   Everything is fetched from this origin; nothing leaves the server. */
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  // the status line: a key of the interface's words (kept in the chosen language) and data, or
  // a message another module already put in words
  const status = (msg, tail) => {
    const I = window.geobaseI18n;
    if (I.WORDS[msg]) I.say($("status"), msg, tail); else $("status").textContent = msg + (tail ? " " + tail : "");
  };
  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  window.geobaseReady = false;

  // A department's API key, kept for this browser tab only (sessionStorage), sent with every
  // request to this server: config, style, tiles, legend, site check. Without one: the public.
  const KEY_STORE = "geobase.apiKey";
  const apiKey = () => sessionStorage.getItem(KEY_STORE) || "";
  const authHeaders = (h) => (apiKey() ? Object.assign({Authorization: "Bearer " + apiKey()}, h) : h);
  const sameOrigin = (url) => { try { return new URL(url, location.href).origin === location.origin; } catch (e) { return false; } };

  async function getJSON(url) {
    const r = await fetch(url, {headers: authHeaders({Accept: "application/json"})});
    if (!r.ok) throw new Error(url + ": HTTP " + r.status);
    return r.json();
  }

  function styleLayersOf(map, name) {
    return map.getStyle().layers.filter((l) => l.metadata && l.metadata["geobase:layer"] === name).map((l) => l.id);
  }

  const OPACITY_PROP = {fill: "fill-opacity", line: "line-opacity", circle: "circle-opacity", raster: "raster-opacity"};

  function buildSwitcher(map, config, onChange) {
    /* The layer list: a checkbox (visible) and an opacity slider per layer. Returns what the
       URL state needs: the layers switched on, the changed opacities, and setters for both. */
    const box = $("layer-list");
    box.innerHTML = "";
    const rows = {};
    for (const dept of config.departments) {
      const h = document.createElement("h3");
      h.textContent = dept.name.zh + " · " + dept.name.en;
      box.appendChild(h);
      for (const layer of dept.layers) {
        const row = document.createElement("div");
        row.className = "layer";
        const ids = styleLayersOf(map, layer.name);
        const base = {};  // each style layer's own opacity, which the slider scales
        for (const id of ids) {
          const prop = OPACITY_PROP[map.getLayer(id).type];
          const v = prop && map.getPaintProperty(id, prop);
          if (prop) base[id] = [prop, typeof v === "number" ? v : 1];
        }
        const cb = document.createElement("input");
        cb.type = "checkbox"; cb.checked = ids.length > 0; cb.disabled = ids.length === 0;
        cb.id = "toggle-" + layer.name;
        const setVisible = (on) => {
          cb.checked = on;
          for (const id of ids) map.setLayoutProperty(id, "visibility", on ? "visible" : "none");
        };
        cb.addEventListener("change", () => { setVisible(cb.checked); onChange(); });
        const label = document.createElement("label");
        label.htmlFor = cb.id;
        const updated = layer.updated ? layer.updated.slice(0, 10) : "—";
        label.innerHTML = esc(layer.title.zh) + ' <span class="meta">v' + esc(layer.version == null ? "–" : layer.version) +
          " · " + esc(updated) + "</span>";
        row.appendChild(cb); row.appendChild(label);
        if (layer.extent) {
          const zb = document.createElement("button");
          zb.type = "button"; zb.textContent = "⤢"; zb.title = "缩放至图层 Zoom to layer extent";
          zb.setAttribute("aria-label", zb.title + ": " + layer.title.zh);
          zb.addEventListener("click", () => map.fitBounds([[layer.extent[0], layer.extent[1]], [layer.extent[2], layer.extent[3]]], {padding: 20}));
          row.appendChild(zb);
        }
        const slider = document.createElement("input");
        slider.type = "range"; slider.min = "0"; slider.max = "100"; slider.value = "100";
        slider.id = "opacity-" + layer.name; slider.className = "opacity"; slider.disabled = ids.length === 0;
        slider.title = "透明度 Opacity"; slider.setAttribute("aria-label", "透明度 Opacity: " + layer.title.zh);
        const setOpacity = (x) => {
          slider.value = String(Math.round(x * 100));
          for (const [id, [prop, v]] of Object.entries(base)) map.setPaintProperty(id, prop, v * x);
        };
        slider.addEventListener("input", () => { setOpacity(Number(slider.value) / 100); onChange(); });
        box.appendChild(row);
        box.appendChild(slider);
        if (ids.length) rows[layer.name] = {cb, slider, setVisible, setOpacity};
      }
    }
    return {
      visible: () => Object.keys(rows).filter((n) => rows[n].cb.checked),
      opacity: () => Object.fromEntries(Object.entries(rows).filter(([, r]) => r.slider.value !== "100").map(([n, r]) => [n, Number(r.slider.value) / 100])),
      apply(state) {
        if (state.layers) for (const [n, r] of Object.entries(rows)) r.setVisible(state.layers.includes(n));
        for (const [n, x] of Object.entries(state.opacity || {})) if (rows[n]) rows[n].setOpacity(x);
      },
    };
  }

  function buildLegend(legend) {
    const box = $("legend-list");
    box.innerHTML = "";
    for (const e of legend.layers) {
      const div = document.createElement("div");
      div.className = "legend-layer";
      let html = "<h3>" + esc(e.title.zh) + " " + esc(e.title.en) + "</h3><ul>";
      const classes = e.classes.length ? e.classes : [{code: "", color: e.color, zh: "", en: ""}];
      for (const c of classes.slice(0, 40)) {
        const border = e.kind === "outline" || e.kind === "line" ? "border:2px solid " + esc(c.color) + ";background:none" : "background:" + esc(c.color);
        html += '<li><span class="swatch" style="' + border + '"></span>' + '<span class="code">' + esc(c.code) + "</span> " + esc(c.zh) + "</li>";
      }
      if (classes.length > 40) html += '<li class="more"><span data-i18n="legend.more" data-n="' + (classes.length - 40) + '"></span></li>';
      div.innerHTML = html + "</ul>";
      box.appendChild(div);
    }
  }

  function setupKeyForm() {
    const I = window.geobaseI18n;
    if (apiKey()) I.say($("key-state"), "access.key_set", apiKey().split("_").slice(0, 2).join("_") + "…");
    else I.say($("key-state"), "access.public_state");
    $("key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const v = $("key-input").value.trim();
      if (v) sessionStorage.setItem(KEY_STORE, v); else sessionStorage.removeItem(KEY_STORE);
      location.reload();  // config, style and tiles are per caller: start again with the new key
    });
    $("key-clear").addEventListener("click", () => { sessionStorage.removeItem(KEY_STORE); location.reload(); });
  }

  async function main() {
    status("status.loading");
    window.geobasePanel.attach();  // on a tablet: the panel behind a toggle, the map full screen
    setupKeyForm();
    const [config, legend] = await Promise.all([getJSON("/map/config"), getJSON("/legend")]);
    const start = window.geobaseUrlState.parse(location.hash);
    const view = start.view ? {center: start.view.center, zoom: start.view.zoom, bearing: start.view.bearing, pitch: start.view.pitch} : {};
    const map = new maplibregl.Map(Object.assign({container: "map", style: config.style, attributionControl: false,
                                     doubleClickZoom: false, localIdeographFontFamily: window.geobaseLabels.CJK_FONTS,
                                     transformRequest: (url) => (apiKey() && sameOrigin(url) ? {url, headers: authHeaders({})} : {url})}, view));
    window.geobaseMap = map;
    map.addControl(new maplibregl.NavigationControl(), "top-right");
    map.addControl(new maplibregl.ScaleControl({unit: "metric"}), "bottom-left");
    map.on("error", (e) => { console.warn("map error", e && e.error && e.error.message); status("status.tile_error", e && e.error && e.error.message); });
    let switcher = null, order = null, i18n = null, compare = null, table = null;
    const writeUrl = () => {  // the view, the layers on and their opacity: a link reproduces the map
      if (!switcher) return;
      const c = map.getCenter();
      const hash = window.geobaseUrlState.serialize(Object.assign({view: {zoom: map.getZoom(), center: [c.lng, c.lat], bearing: map.getBearing(), pitch: map.getPitch()},
                                                     layers: switcher.visible(), opacity: switcher.opacity(),
                                                     order: order && order.order(), lang: i18n && i18n.lang()},
                                                     compare ? compare.urlState() : {}, {table: table && table.urlState()}));
      history.replaceState(null, "", location.pathname + location.search + hash);
    };
    map.on("moveend", writeUrl);
    map.on("load", () => {
      window.geobaseLabels.attach(map, {getJSON, status});
      switcher = buildSwitcher(map, config, writeUrl);
      switcher.apply(start);
      order = window.geobaseLayerOrder.attach(map, config, writeUrl);
      order.apply(start.order);
      buildLegend(legend);
      i18n = window.geobaseI18n.attach(config, start.lang, writeUrl, legend);
      window.geobaseExport.attach(map, {status});
      window.geobaseImagery.attach(map, config);  // imagery under the parcels: true colour / NDVI, latest or a date
      window.geobaseSearchUI.attach(map, {getJSON, authHeaders, status});
      window.geobaseDrawKeys.attach(map);  // keyboard points for the measure and site-check tools
      window.geobaseMeasureUI.attach(map);
      compare = window.geobaseCompare.attach(map, config, {getJSON, authHeaders, onChange: writeUrl});  // time slider, swipe, side by side
      const tools = {getJSON, authHeaders, status, config, hasKey: () => !!apiKey(), visible: () => switcher.visible()};
      window.geobaseIdentify.attach(map, tools);
      table = window.geobaseTable.attach(map, Object.assign({onChange: writeUrl}, tools));
      window.geobaseSiteCheck.attach(map, tools);
      window.geobaseEdit.attach(map, tools);  // an editor's key: select, change, split, merge, commit
      // start at the data when the URL does not say where
      if (!start.view) {
        const exts = config.departments.flatMap((d) => d.layers).filter((l) => l.extent && l.kind === "vector").map((l) => l.extent);
        if (exts.length) {
          const b = [Math.min(...exts.map((e) => e[0])), Math.min(...exts.map((e) => e[1])), Math.max(...exts.map((e) => e[2])), Math.max(...exts.map((e) => e[3]))];
          map.fitBounds([[b[0], b[1]], [b[2], b[3]]], {padding: 20, duration: 0});
        }
      }
      compare.apply(start);
      table.apply(start.table);
      writeUrl();
      map.once("idle", () => { window.geobaseReady = true; status("status.ready"); });
    });
    map.on("click", (e) => {
      if (window.geobaseMeasureUI.active() || window.geobaseSiteCheck.active() || window.geobaseEdit.active()) return;  // the tools take the clicks
      window.geobaseIdentify.at(map, e).catch((err) => status("status.identify_failed", err.message));
    });
  }
  main().catch((err) => { status("status.failed", err.message); console.error(err); });
})();
