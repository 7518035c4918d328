/* Compare versions of a layer (issue 21 item 4).
   - Time slider: the chosen layer drawn as it was in a version, from the server's versioned
     vector tiles (/tiles/{layer}/{z}/{x}/{y}.mvt?version=N: the rows current in version N).
     The layer's own style layers are copied onto that source; today's are hidden meanwhile.
   - Swipe (卷帘): a second map over the first, camera-locked, clipped to the right of a divider:
     left the slider's version, right the version picked for the right side.
   - The parcels the change feed (/collections/{id}/changes?from=&to=) lists between the two
     versions shown are outlined on both maps.
   window.geobaseCompare.attach(map, config, {getJSON, authHeaders}) once the style has loaded;
   window.geobaseCompareState tells tests what is shown and when it is drawn. */
(function () {
  "use strict";
  const SRC = "compare-version", CHANGES = "compare-changes", PREFIX = "compare:";
  const HIGHLIGHT = "#ff00aa";
  const state = {layer: null, version: null, right: null, swipe: false, position: 0.5, changes: 0, busy: 0, error: null};
  window.geobaseCompareState = state;
  let main = null, overlay = null, ctx = null, versions = {};
  const $ = (id) => document.getElementById(id);

  const tileUrl = (name, v) => location.origin + "/tiles/" + encodeURIComponent(name) + "/{z}/{x}/{y}.mvt?version=" + v;
  const dataLayers = (map, name) => map.getStyle().layers.filter((l) => l.source === "onemap" && l.metadata &&
    l.metadata["geobase:layer"] === name && !l.metadata["geobase:label"]);
  const current = (name) => { const vs = versions[name] || []; return vs.length ? vs[vs.length - 1].version : null; };

  function showVersion(map, name, version) {
    /* Draw `name` from `version`'s tiles (null: today's layer again). */
    for (const l of map.getStyle().layers) if (l.id.startsWith(PREFIX)) map.removeLayer(l.id);
    if (map.getSource(SRC)) map.removeSource(SRC);
    const originals = dataLayers(map, name);
    map.__compareHidden = map.__compareHidden || {};
    for (const [id, vis] of Object.entries(map.__compareHidden)) if (map.getLayer(id)) map.setLayoutProperty(id, "visibility", vis);
    map.__compareHidden = {};
    if (version == null) return;
    const one = map.getStyle().sources.onemap || {};
    map.addSource(SRC, {type: "vector", tiles: [tileUrl(name, version)], minzoom: one.minzoom || 0, maxzoom: one.maxzoom || 22});
    for (const l of originals) {
      const vis = map.getLayoutProperty(l.id, "visibility") || "visible";
      const copy = Object.assign({}, l, {id: PREFIX + l.id, source: SRC, layout: Object.assign({}, l.layout, {visibility: vis})});
      map.addLayer(copy, l.id);
      map.__compareHidden[l.id] = vis;
      map.setLayoutProperty(l.id, "visibility", "none");
    }
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

  async function changesBetween(name, a, b) {
    const lo = Math.min(a, b), hi = Math.max(a, b);
    if (lo === hi) return {type: "FeatureCollection", features: []};
    return ctx.getJSON("/collections/" + encodeURIComponent(name) + "/changes?from=" + lo + "&to=" + hi + "&limit=1000");
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

  function openOverlay() {
    const box = main.getContainer();
    const div = document.createElement("div");
    div.id = "compare-map";
    const cs = getComputedStyle(box);
    div.style.cssText = "position:absolute;pointer-events:none;left:" + cs.left + ";right:" + cs.right + ";top:" + cs.top + ";bottom:" + cs.bottom;
    const line = document.createElement("div");
    line.id = "compare-divider";
    line.style.cssText = "position:absolute;top:0;bottom:0;width:3px;background:#fff;box-shadow:0 0 3px #000;z-index:5;" +
      "pointer-events:auto;cursor:ew-resize;touch-action:none";
    line.title = "拖动卷帘 Drag the swipe";
    line.addEventListener("pointerdown", (e) => {  // drag the divider itself (mouse, pen or finger)
      line.setPointerCapture(e.pointerId);
      const move = (ev) => {
        const r = box.getBoundingClientRect();
        state.position = Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width));
        $("compare-position").value = String(Math.round(state.position * 100));
        placeDivider();
      };
      const up = () => { line.removeEventListener("pointermove", move); line.removeEventListener("pointerup", up); };
      line.addEventListener("pointermove", move);
      line.addEventListener("pointerup", up);
    });
    box.parentNode.insertBefore(div, box.nextSibling);
    const c = main.getCenter();
    overlay = new maplibregl.Map({container: div, style: cleanStyle(main), interactive: false, attributionControl: false,
                                  localIdeographFontFamily: window.geobaseLabels && window.geobaseLabels.CJK_FONTS,
                                  center: c, zoom: main.getZoom(), bearing: main.getBearing(), pitch: main.getPitch(),
                                  transformRequest: (url) => (url.startsWith(location.origin) ? {url, headers: ctx.authHeaders({})} : {url})});
    div.appendChild(line);
    window.geobaseCompareMap = overlay;
    const sync = () => overlay && overlay.jumpTo({center: main.getCenter(), zoom: main.getZoom(), bearing: main.getBearing(), pitch: main.getPitch()});
    main.on("move", sync);
    main.on("resize", () => overlay && overlay.resize());
    return new Promise((resolve) => overlay.once("load", resolve));
  }

  function closeOverlay() {
    if (!overlay) return;
    overlay.remove();
    overlay = null;
    window.geobaseCompareMap = null;
    const div = $("compare-map");
    if (div) div.remove();
  }

  function placeDivider() {
    if (!overlay) return;
    const pct = (state.position * 100).toFixed(2) + "%";
    $("compare-map").style.clipPath = "inset(0 0 0 " + pct + ")";
    $("compare-divider").style.left = pct;
  }

  async function update() {
    /* Bring both maps in line with the controls: left/main version, swipe, right version, changes. */
    const name = state.layer;
    if (!name) return;
    state.busy += 1;
    try {
      const now = current(name);
      const left = state.version, right = state.right == null ? now : state.right;
      showVersion(main, name, left === now && !state.swipe ? null : left);
      if (state.swipe && !overlay) await openOverlay();
      if (!state.swipe) closeOverlay();
      if (overlay) { showVersion(overlay, name, right); placeDivider(); }
      const other = state.swipe ? right : now;
      const data = await changesBetween(name, left, other);
      state.changes = data.features.length;
      showChanges(main, data);
      if (overlay) showChanges(overlay, data);
      const label = (v) => { const i = (versions[name] || []).find((x) => x.version === v); return "v" + v + (i && i.created ? " · " + i.created.slice(0, 10) : ""); };
      $("compare-info").textContent = (state.swipe ? "左 Left " + label(left) + " | 右 Right " + label(right) : label(left) +
        (left === now ? " (当前 current)" : "")) + " · " + state.changes + " 处变化 changes" +
        (data.numberMatched > state.changes ? " (of " + data.numberMatched + ", the first outlined)" : "");
      state.error = null;
    } catch (err) {
      state.error = String(err.message || err);
      $("compare-info").textContent = "对比失败 compare failed: " + state.error;
    } finally {
      state.busy -= 1;
    }
  }

  function fill(select, name) {
    select.innerHTML = "";
    for (const v of versions[name] || []) {
      const o = document.createElement("option");
      o.value = String(v.version);
      o.textContent = "v" + v.version + (v.created ? " · " + v.created.slice(0, 10) : "");
      select.appendChild(o);
    }
  }

  function attach(map, config, context) {
    main = map; ctx = context;
    const layers = config.departments.flatMap((d) => d.layers).filter((l) => l.kind === "vector" && (l.versions || []).length > 1);
    const box = $("compare");
    if (!box) return;
    if (!layers.length) { box.insertAdjacentHTML("beforeend", '<p class="hint">没有多版本的图层 No layer with more than one version.</p>'); return; }
    for (const l of layers) versions[l.name] = l.versions;
    box.insertAdjacentHTML("beforeend",
      '<label>图层 Layer <select id="compare-layer"></select></label>' +
      '<div><label for="compare-slider">时间 Version</label> <input id="compare-slider" type="range" step="1"></div>' +
      '<div><label><input id="compare-swipe" type="checkbox"> 卷帘 Swipe</label> ' +
      '<label>右侧 Right <select id="compare-right"></select></label></div>' +
      '<div><label for="compare-position">位置 Position</label> <input id="compare-position" type="range" min="0" max="100" value="50" disabled></div>' +
      '<p class="hint" id="compare-info" aria-live="polite"></p>');
    const sel = $("compare-layer"), slider = $("compare-slider"), right = $("compare-right"), swipe = $("compare-swipe"), pos = $("compare-position");
    for (const l of layers) {
      const o = document.createElement("option");
      o.value = l.name; o.textContent = l.title.zh + " " + l.name;
      sel.appendChild(o);
    }
    const chooseLayer = () => {
      if (state.layer && state.layer !== sel.value) { showVersion(main, state.layer, null); if (overlay) showVersion(overlay, state.layer, null); }
      state.layer = sel.value;
      const vs = versions[state.layer];
      slider.min = "0"; slider.max = String(vs.length - 1); slider.value = slider.max;
      state.version = vs[vs.length - 1].version;
      fill(right, state.layer); right.value = String(state.version); state.right = state.version;
      return update();
    };
    sel.addEventListener("change", chooseLayer);
    slider.addEventListener("input", () => { state.version = versions[state.layer][Number(slider.value)].version; update(); });
    right.addEventListener("change", () => { state.right = Number(right.value); update(); });
    swipe.addEventListener("change", () => { state.swipe = swipe.checked; pos.disabled = !swipe.checked; update(); });
    pos.addEventListener("input", () => { state.position = Number(pos.value) / 100; placeDivider(); });
    state.layer = null;
    chooseLayer();
  }

  window.geobaseCompare = {attach};
})();
