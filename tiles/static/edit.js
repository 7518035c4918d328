/* Editing in the map, for an editor's key: select a parcel (Shift+click adds one, for a merge),
   change its attributes (code lists as pickers, from the layer's schema), move its vertices
   (editvertex.js), split it by a drawn line, merge the selected adjacent parcels; every change
   goes into one edit session (editapi.js) whose check result (the server's 422 detail) is shown
   before the steward commits it with a message, or discards it. A feature someone else changed
   meanwhile answers 412: the conflict is said plainly, with a "reload" that fetches its current
   state. Each new version of the layer (ours or another editor's, from the change stream)
   reloads the map's tiles, so the changed area is redrawn without reloading the page.
   window.geobaseEdit.attach(map, tools); .active() while it takes the map's clicks. */
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const I = () => window.geobaseI18n;
  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const state = {layer: null, on: false, selected: [], conflict: false, check: null, versions: [], refreshed: 0,
                 committed: null, mode: null, line: [], error: null};
  window.geobaseEditState = state;
  let map = null, ctx = null, api = null, feed = null, vertices = null, movedGeometry = null, schemaDoc = null;

  function section() {
    const s = document.createElement("section");
    s.id = "edit";
    s.innerHTML = '<h2 data-i18n="edit">编辑</h2>' +
      '<select id="edit-layer" data-i18n-aria="edit.layer" aria-label="图层"></select> ' +
      '<button id="edit-start" type="button" data-i18n="edit.start">开始编辑</button>' +
      '<p class="hint" data-i18n="edit.hint">单击图斑选择；Shift+单击再选一个（合并）。</p>' +
      '<div id="edit-selection" aria-live="polite"></div><form id="edit-form"></form>' +
      '<div class="edit-tools"><button id="edit-vertices" type="button" data-i18n="edit.vertices">移动顶点</button> ' +
      '<button id="edit-split" type="button" data-i18n="edit.split">分割</button> ' +
      '<button id="edit-split-finish" type="button" data-i18n="edit.split_finish">完成分割</button> ' +
      '<button id="edit-merge" type="button" data-i18n="edit.merge">合并所选</button></div>' +
      '<div id="edit-conflict" class="error" hidden><span id="edit-conflict-text"></span> ' +
      '<button id="edit-reload" type="button" data-i18n="edit.reload">重新加载</button></div>' +
      '<div id="edit-result" aria-live="polite"></div>' +
      '<div class="edit-session"><span id="edit-changes"></span> <button id="edit-check" type="button" data-i18n="edit.check">检查</button><br>' +
      '<input id="edit-message" type="text" maxlength="500" data-i18n-placeholder="edit.message" data-i18n-aria="edit.message" placeholder="修改原因"> ' +
      '<button id="edit-commit" type="button" data-i18n="edit.commit">提交</button> ' +
      '<button id="edit-discard" type="button" data-i18n="edit.discard">放弃</button></div>';
    const access = $("access");
    access.parentNode.insertBefore(s, access);
    for (const el of s.querySelectorAll("[data-i18n]")) el.textContent = I().t(el.dataset.i18n);
    for (const el of s.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = I().t(el.dataset.i18nPlaceholder);
    for (const el of s.querySelectorAll("[data-i18n-aria]")) el.setAttribute("aria-label", I().t(el.dataset.i18nAria));
  }

  function result(key, tail) { I().say($("edit-result"), key, tail); }

  function refused(r) {
    /* Say why the server refused: 412 is a conflict (with its reload), 422 the failed check. */
    const b = r.body || {};
    if (r.status === 412) {
      state.conflict = true;
      I().say($("edit-conflict-text"), "edit.conflict", " " + (b.description || ""));
      $("edit-conflict").hidden = false;
      return;
    }
    if (r.status === 422) state.check = b;
    const where = b.details ? " [" + [b.details.check, b.details.field, b.details.feature].filter(Boolean).join(" · ") + "]" : "";
    result(r.status === 422 ? "edit.check_failed" : "edit.refused", " " + (b.description || "HTTP " + r.status) + where);
    state.error = b;
  }

  async function showCount() {
    const r = api && api.session() ? await fetch("/collections/" + encodeURIComponent(state.layer) + "/sessions/" + api.session(),
                                                  {headers: ctx.authHeaders({Accept: "application/json"})}) : null;
    const n = r && r.ok ? (await r.json()).changes.length : 0;
    I().say($("edit-changes"), "edit.changes", null, n);
  }

  function drawSelection() {
    const src = map.getSource("edit-selected");
    const data = {type: "FeatureCollection", features: state.selected.map((s) => ({type: "Feature", properties: {}, geometry: s.geometry}))};
    if (src) src.setData(data);
    else {
      map.addSource("edit-selected", {type: "geojson", data});
      map.addLayer({id: "edit-selected", type: "line", source: "edit-selected", paint: {"line-color": "#ff6d00", "line-width": 3}});
    }
    $("edit-selection").textContent = state.selected.map((s) => s.id).join(", ");
  }

  async function formFor(sel) {
    /* One input per editable attribute; a code list is a picker of its codes and names. */
    const A = window.geobaseAttributes;
    schemaDoc = await A.schema(state.layer, ctx.getJSON);
    const form = $("edit-form");
    let html = "";
    for (const c of A.columns(schemaDoc)) {
      if (c.prop.readOnly) continue;
      const v = sel.properties[c.key];
      const id = "edit-attr-" + c.key;
      html += '<label for="' + id + '">' + esc(c.title) + "</label> ";
      if (Array.isArray(c.prop.enum)) {
        const names = c.prop["x-ogc-codelistTitles"] || {};
        html += '<select id="' + id + '" data-key="' + esc(c.key) + '"><option value=""></option>' + c.prop.enum.map((code) =>
          '<option value="' + esc(code) + '"' + (String(v) === String(code) ? " selected" : "") + ">" + esc(code + " " + String(names[code] || "").split(" / ")[I().lang() === "en" ? 1 : 0] || code) + "</option>").join("") + "</select><br>";
      } else {
        html += '<input id="' + id + '" data-key="' + esc(c.key) + '" value="' + esc(v) + '"><br>';
      }
    }
    form.innerHTML = html + '<button id="edit-apply" type="submit" data-i18n="edit.apply">' + esc(I().t("edit.apply")) + "</button>";
  }

  function changedProps(sel) {
    const out = {};
    for (const el of $("edit-form").querySelectorAll("[data-key]")) {
      const key = el.dataset.key, prop = schemaDoc.properties[key] || {};
      let v = el.value === "" ? null : el.value;
      if (v != null && (prop.type === "number" || prop.type === "integer")) v = Number(v);
      const old = sel.properties[key] == null ? null : sel.properties[key];
      if (v !== old && String(v) !== String(old)) out[key] = v;
    }
    return out;
  }

  async function load(id, add) {
    const r = await api.feature(id);
    if (!r.ok) return refused(r);
    const sel = {id: r.body.id, etag: r.etag, properties: r.body.properties, geometry: r.body.geometry};
    state.selected = add ? state.selected.filter((s) => s.id !== sel.id).concat([sel]) : [sel];
    drawSelection();
    await formFor(state.selected[0]);
  }

  async function select(e) {
    const p = e.point, a = map.unproject([p.x - 1, p.y + 1]), b = map.unproject([p.x + 1, p.y - 1]);
    const r = await api.at([a.lng, a.lat, b.lng, b.lat]);
    if (!r.ok) return refused(r);
    const f = (r.body.features || [])[0];
    if (f) await load(f.id, e.originalEvent && e.originalEvent.shiftKey);
  }

  async function afterChange(r) {
    if (!r.ok) return refused(r), false;
    state.error = null; state.check = null;
    $("edit-conflict").hidden = true; state.conflict = false;
    await showCount();
    return true;
  }

  async function apply(ev) {
    ev.preventDefault();
    const sel = state.selected[0];
    if (!sel) return;
    const body = {properties: changedProps(sel)};
    if (movedGeometry) body.geometry = movedGeometry;
    const r = await api.patch(sel.id, sel.etag, body);
    if (await afterChange(r)) {
      sel.etag = r.etag; Object.assign(sel.properties, body.properties);
      if (movedGeometry) { sel.geometry = movedGeometry; movedGeometry = null; stopVertices(); }
      drawSelection();
      result("edit.staged", " " + sel.id);
    }
  }

  function stopVertices() {
    if (vertices) vertices.stop();
    vertices = null; movedGeometry = null;
    if (state.mode === "vertices") state.mode = null;
  }

  function toggleVertices() {
    const sel = state.selected[0];
    if (vertices) return stopVertices();
    if (!sel) return;
    state.mode = "vertices";
    vertices = window.geobaseVertexEdit.start(map, sel.geometry, (g) => { movedGeometry = g; result("edit.moved"); });
  }

  function drawLine() {
    const data = {type: "Feature", properties: {}, geometry: {type: "LineString", coordinates: state.line}};
    if (map.getSource("edit-line")) map.getSource("edit-line").setData(data);
    else {
      map.addSource("edit-line", {type: "geojson", data});
      map.addLayer({id: "edit-line", type: "line", source: "edit-line", paint: {"line-color": "#d50000", "line-width": 2}});
    }
  }

  async function finishSplit() {
    const sel = state.selected[0];
    state.mode = null;
    if (!sel || state.line.length < 2) return;
    const line = {type: "LineString", coordinates: state.line};
    let n = 2, r = null;
    for (let tries = 0; tries < 2; tries++) {  // the server says into how many pieces the line cuts
      r = await api.split(sel.id, sel.etag, line, Array.from({length: n}, (_, i) => sel.id + "-" + (i + 1)));
      const m = !r.ok && r.body && r.body.details && r.body.details.check === "split_pieces" && /into (\d+) pieces/.exec(r.body.description);
      if (!m) break;
      n = Number(m[1]);
    }
    state.line = []; drawLine();
    if (await afterChange(r)) {
      // the pieces are staged, not yet readable from the items API: shown from the split's answer
      const props = (id) => Object.fromEntries(Object.entries(sel.properties).map(([k, v]) => [k, v === sel.id ? id : v]));
      state.selected = r.body.pieces.map((p) => ({id: p.featureId, etag: p.etag, properties: props(p.featureId), geometry: p.geometry}));
      drawSelection();
      await formFor(state.selected[0]);
      result("edit.split_done", " " + r.body.pieces.map((p) => p.featureId).join(", "));
    }
  }

  async function merge() {
    if (state.selected.length < 2) return result("edit.merge_need2");
    const [first, ...others] = state.selected;
    const r = await api.merge(first.id, state.selected.map((s) => s.etag), others.map((s) => s.id));
    if (await afterChange(r)) {
      await load(first.id, false);
      result("edit.merge_done", " " + first.id);
    }
  }

  async function reload() {
    /* After a conflict: the features as they are now (new ETags); a session whose commit was
       refused is void (its base changed), so it is dropped and the edit starts again. */
    if (state.conflictAtCommit) { await api.discard(); state.conflictAtCommit = false; await showCount(); }
    const ids = state.selected.map((s) => s.id);
    state.selected = [];
    for (const id of ids) await load(id, true);
    $("edit-conflict").hidden = true; state.conflict = false;
    result("edit.reloaded", " " + ids.join(", "));
  }

  async function check() {
    const r = await api.check();
    if (r.ok) { state.check = r.body; result("edit.check_ok"); } else refused(r);
  }

  async function commit() {
    const r = await api.commit($("edit-message").value.trim());
    if (!r.ok) { state.conflictAtCommit = r.status === 412; return refused(r); }
    state.committed = r.body;
    result("edit.committed", " v" + r.body.version);
    await showCount();
    await refreshTiles();
  }

  async function discard() {
    await api.discard();
    stopVertices();
    state.selected = []; drawSelection(); $("edit-form").innerHTML = "";
    result("edit.discarded");
    await showCount();
  }

  async function refreshTiles() {
    /* The tiles' URLs carry the layers' version tag: the new one redraws the changed area. */
    const tj = await ctx.getJSON("/tiles/onemap.json");
    const src = map.getSource("onemap");
    if (src && tj.tiles && src.tiles && src.tiles[0] !== tj.tiles[0]) src.setTiles(tj.tiles);
    state.refreshed += 1;
  }

  function start() {
    state.layer = $("edit-layer").value;
    state.on = true;
    map.boxZoom.disable();  // Shift+click adds a parcel to the selection while editing, not a box zoom
    $("edit").classList.add("editing");
    api = window.geobaseEditApi.client(state.layer, ctx.authHeaders);
    if (feed) feed.stop();
    feed = window.geobaseEditApi.stream(state.layer, ctx.authHeaders, (v) => {
      state.versions.push(v.version);
      refreshTiles().catch(() => null);
    });
    result("edit.started");
    showCount();
  }

  function attach(m, tools) {
    map = m; ctx = tools;
    if (!ctx.hasKey()) return;  // editing needs an editor's key: the section is not shown without one
    section();
    const sel = $("edit-layer");
    for (const d of ctx.config.departments) for (const l of d.layers) {
      if (l.kind !== "vector") continue;
      const o = document.createElement("option");
      o.value = l.name; o.textContent = l.title.zh;
      sel.appendChild(o);
    }
    $("edit-start").addEventListener("click", start);
    $("edit-form").addEventListener("submit", apply);
    $("edit-vertices").addEventListener("click", toggleVertices);
    $("edit-split").addEventListener("click", () => { if (state.selected[0]) { state.mode = "split"; state.line = []; result("edit.split_draw"); } });
    $("edit-split-finish").addEventListener("click", finishSplit);
    $("edit-merge").addEventListener("click", merge);
    $("edit-reload").addEventListener("click", reload);
    $("edit-check").addEventListener("click", check);
    $("edit-commit").addEventListener("click", commit);
    $("edit-discard").addEventListener("click", discard);
    map.on("click", (e) => {
      if (!state.on) return;
      if (state.mode === "split") { state.line.push([e.lngLat.lng, e.lngLat.lat]); drawLine(); return; }
      if (state.mode !== "vertices") select(e).catch((err) => result("edit.refused", " " + err.message));
    });
  }

  window.geobaseEdit = {attach, active: () => state.on, state};
})();
