/* Compare (issue 21 item 4): two versions of a layer, or the plan against current land use.
   - Time slider: the chosen layer drawn as it was in a version, from the server's versioned
     vector tiles (comparelayers.js draws them).
   - Swipe (卷帘) or side by side (并排): a second map (comparemap.js) beside or over the first:
     left the slider's version, right the version picked for the right side.
   - Plan vs current (规划与现状): left the plan layers (those of the planning department: the
     planning zones, and the three control lines for those who may see them), right the current
     land use (the 地类图斑 survey); each side hides the other side's layers.
   - The parcels the change feed (/collections/{id}/changes?from=&to=) lists between the two
     versions shown are outlined on both maps.
   window.geobaseCompare.attach(map, config, {getJSON, authHeaders, onChange}) once the style has
   loaded returns {urlState(), apply(urlState)} for the link (urlstate.js: compare=, divider=);
   window.geobaseCompareState tells tests what is shown and when it is drawn. */
(function () {
  "use strict";
  const PLAN_DEPARTMENT = "planning", CURRENT_LAYERS = ["land_use"];
  const NO_CHANGES = {type: "FeatureCollection", features: []};
  const state = {what: "versions", mode: "none", layer: null, version: null, right: null, position: 0.5,
                 plan: [], current: [], changes: 0, busy: 0, error: null};
  window.geobaseCompareState = state;
  let main = null, ctx = null, versions = {}, titles = {}, queue = Promise.resolve();
  let info = () => "";  // the info line's words, written again on every language switch
  const $ = (id) => document.getElementById(id);
  const t = (key) => window.geobaseI18n.t(key);
  const title = (name) => { const ti = titles[name] || {}; return ti[window.geobaseI18n.lang()] || ti.zh || name; };
  const say = (fn) => { info = fn; $("compare-info").textContent = fn(); };
  const view = () => window.geobaseCompareView;
  const twin = () => state.mode === "swipe" || state.mode === "side";

  const current = (name) => { const vs = versions[name] || []; return vs.length ? vs[vs.length - 1].version : null; };
  const rightVersion = () => (state.right == null ? current(state.layer) : state.right);
  const {reset, showVersion, showSide, showChanges, cleanStyle} = window.geobaseCompareLayers;

  async function changesBetween(name, a, b) {
    const lo = Math.min(a, b), hi = Math.max(a, b);
    if (lo === hi) return NO_CHANGES;
    return ctx.getJSON("/collections/" + encodeURIComponent(name) + "/changes?from=" + lo + "&to=" + hi + "&limit=1000");
  }

  function openSecond() {
    return view().open(main, state.mode, cleanStyle(main), {
      position: state.position, localIdeographFontFamily: window.geobaseLabels && window.geobaseLabels.CJK_FONTS,
      transformRequest: (url) => (url.startsWith(location.origin) ? {url, headers: ctx.authHeaders({})} : {url}),
      onDivider: (p, done) => { state.position = p; $("compare-position").value = String(Math.round(p * 100)); if (done) ctx.onChange(); },
    });
  }

  function mirror() {
    /* The layer panel changed (a layer switched, its opacity, the order): the drawing follows.
       A layer this module hides keeps the panel's choice for when it is shown again; the second
       map takes the first's style by setStyle's diff; then this module's parts are drawn again. */
    const hidden = main.__compareHidden || {};
    for (const id of Object.keys(hidden)) {
      const l = main.getLayer(id), box = l && l.metadata && $("toggle-" + l.metadata["geobase:layer"]);
      if (box) hidden[id] = box.checked ? "visible" : "none";
    }
    const second = view().map();
    if (second) { second.setStyle(cleanStyle(main), {diff: true}); second.__compareHidden = {}; }
    update();
  }

  const label = (v) => { const i = (versions[state.layer] || []).find((x) => x.version === v); return "v" + v + (i && i.created ? " · " + i.created.slice(0, 10) : ""); };

  async function draw() {
    /* Bring both maps in line with the controls: which comparison, versions, layout, changes. */
    if (view().mode() !== (twin() ? state.mode : null)) view().close();
    if (twin() && !view().map()) await openSecond();
    const second = view().map();
    let data = NO_CHANGES;
    if (state.what === "plan") {
      if (!second) { reset(main); say(() => t("compare.choose")); return; }
      showSide(main, state.plan, state.current);
      showSide(second, state.current, state.plan);
      const names = (list) => list.map(title).join(", ");
      say(() => t("compare.left_is") + t("compare.plan_side") + " (" + names(state.plan) + ") | " +
        t("compare.right_is") + t("compare.current_side") + " (" + names(state.current) + ")");
    } else if (state.layer) {
      const name = state.layer, now = current(name), left = state.version, right = rightVersion();
      showVersion(main, name, left === now && !second ? null : left);
      if (second) showVersion(second, name, right);
      data = await changesBetween(name, left, second ? right : now);
      const shown = data.features.length, matched = data.numberMatched;
      say(() => (second ? t("compare.left_is") + label(left) + " | " + t("compare.right_is") + label(right) :
        label(left) + (left === now ? t("compare.now") : "")) + " · " + t("compare.changes").replace("{n}", String(shown)) +
        (matched > shown ? t("compare.first").replace("{n}", String(matched)) : ""));
    }
    state.changes = data.features.length;
    showChanges(main, data);
    if (second) { showChanges(second, data); view().place(state.position); }
  }

  function update() {
    /* Queue a redraw: one at a time, each reading the controls' state when its turn comes. */
    state.busy += 1;
    queue = queue.then(draw).then(() => { state.error = null; }, (err) => {
      state.error = String(err.message || err);
      const error = state.error;
      say(() => t("compare.failed") + error);
    }).finally(() => { state.busy -= 1; if (ctx.onChange) ctx.onChange(); });
    return queue;
  }

  function option(select, value, text, disabled, key) {
    /* An option; with `key` its text is that word, kept in the chosen language (data-i18n). */
    const o = document.createElement("option");
    o.value = value; o.textContent = key ? t(key) : text; o.disabled = !!disabled;
    if (key) o.dataset.i18n = key;
    select.appendChild(o);
  }

  // The words are marked data-i18n: the language switch writes them again (i18n.js).
  const word = (key) => '<span data-i18n="' + key + '">' + t(key) + '</span>';
  const controls = () =>
    '<label>' + word("compare") + ' <select id="compare-what"></select></label>' +
    '<div><label>' + word("compare.layer") + ' <select id="compare-layer"></select></label></div>' +
    '<div><label for="compare-slider">' + word("compare.version") + '</label> <input id="compare-slider" type="range" step="1"></div>' +
    '<div><label><input type="checkbox" id="compare-swipe"> ' + word("compare.swipe") + '</label> ' +  // neither ticked: one map
    '<label><input type="checkbox" id="compare-side"> ' + word("compare.side") + '</label></div>' +
    '<div><label>' + word("compare.right") + ' <select id="compare-right"></select></label></div>' +
    '<div><label for="compare-position">' + word("compare.position") + '</label> <input id="compare-position" type="range" min="0" max="100" value="50" disabled></div>' +
    '<p class="hint" id="compare-info" aria-live="polite"></p>';

  function syncControls() {
    /* The controls as the state says (after a choice, or a link's state applied). */
    const vs = versions[state.layer] || [];
    const byVersions = state.what === "versions";
    $("compare-what").value = state.what;
    if (state.layer) $("compare-layer").value = state.layer;
    $("compare-slider").value = String(Math.max(0, vs.findIndex((v) => v.version === state.version)));
    $("compare-right").value = String(rightVersion());
    for (const m of ["swipe", "side"]) $("compare-" + m).checked = state.mode === m;
    for (const id of ["compare-layer", "compare-slider"]) $(id).disabled = !byVersions || !state.layer;
    $("compare-right").disabled = !byVersions || !state.layer || !twin();
    $("compare-position").disabled = !twin();
    $("compare-position").value = String(Math.round(state.position * 100));
  }

  function chooseLayer(name) {
    state.layer = name;
    const vs = versions[name] || [];
    const right = $("compare-right");
    right.innerHTML = "";
    for (const v of vs) option(right, String(v.version), label(v.version));
    $("compare-slider").min = "0"; $("compare-slider").max = String(Math.max(0, vs.length - 1));
    state.version = current(name); state.right = state.version;
  }

  function urlState() {
    /* What the link keeps: compare= (mode and what) and divider= (urlstate.js parses them). */
    if (state.what === "plan") return twin() ? {compare: {mode: state.mode, plan: true}, divider: state.position} : {};
    if (!state.layer) return {};
    if (!twin()) return state.version === current(state.layer) ? {} : {compare: {mode: "slider", layer: state.layer, left: state.version}};
    return {compare: {mode: state.mode, layer: state.layer, left: state.version, right: rightVersion()}, divider: state.position};
  }

  function apply(url) {
    /* A link's compare state; what the page cannot show (a layer or version unknown here) is left as it is. */
    const c = url && url.compare;
    if (url && url.divider != null) state.position = url.divider;
    if (c && c.plan && state.plan.length && state.current.length) { state.what = "plan"; state.mode = c.mode; }
    else if (c && versions[c.layer]) {
      const has = (v) => versions[c.layer].some((x) => x.version === v);
      state.what = "versions";
      chooseLayer(c.layer);
      if (has(c.left)) state.version = c.left;
      if (c.right != null && has(c.right)) state.right = c.right;
      state.mode = c.mode === "slider" ? "none" : c.mode;
    }
    syncControls();
    return update();
  }

  function attach(map, config, context) {
    main = map; ctx = Object.assign({onChange: () => {}}, context);
    const all = config.departments.flatMap((d) => d.layers.map((l) => Object.assign({department: d.code}, l))).filter((l) => l.kind === "vector");
    const layers = all.filter((l) => (l.versions || []).length > 1);
    state.plan = all.filter((l) => l.department === PLAN_DEPARTMENT).map((l) => l.name);
    state.current = all.filter((l) => CURRENT_LAYERS.includes(l.name)).map((l) => l.name);
    const planOk = state.plan.length > 0 && state.current.length > 0;
    const box = $("compare");
    const none = {urlState: () => ({}), apply: () => Promise.resolve()};
    if (!box) return none;
    if (!layers.length && !planOk) { box.insertAdjacentHTML("beforeend", '<p class="hint">' + word("compare.nothing") + '</p>'); return none; }
    for (const l of layers) versions[l.name] = l.versions;
    for (const l of all) titles[l.name] = l.title;
    box.insertAdjacentHTML("beforeend", controls());
    option($("compare-what"), "versions", null, !layers.length, "compare.versions");
    option($("compare-what"), "plan", null, !planOk, "compare.plan");
    for (const l of layers) option($("compare-layer"), l.name, title(l.name));
    document.addEventListener("geobase:lang", () => {  // the layers' titles and the info line in the new language
      for (const o of $("compare-layer").options) o.textContent = title(o.value);
      $("compare-info").textContent = info();
    });
    if (!layers.length) state.what = "plan";
    if (layers.length) chooseLayer(layers[0].name);
    $("compare-what").addEventListener("change", (e) => {
      state.what = e.target.value;
      if (state.what === "plan" && !twin()) state.mode = "side";
      syncControls(); update();
    });
    $("compare-layer").addEventListener("change", (e) => { reset(main); chooseLayer(e.target.value); syncControls(); update(); });
    $("compare-slider").addEventListener("input", (e) => { state.version = versions[state.layer][Number(e.target.value)].version; update(); });
    $("compare-right").addEventListener("change", (e) => { state.right = Number(e.target.value); update(); });
    for (const m of ["swipe", "side"]) $("compare-" + m).addEventListener("change", (e) => { state.mode = e.target.checked ? m : "none"; syncControls(); update(); });
    const panel = $("layer-list");  // its own handlers run first: the events bubble up to here
    const which = {change: "input[type=checkbox]", input: "input[type=range]", click: "button"};  // as the panel's own handlers listen
    let timer = null;  // a dragged opacity slider redraws once it rests, not at every step
    const later = () => {
      if (timer) clearTimeout(timer); else state.busy += 1;  // busy while a redraw is pending
      timer = setTimeout(() => { timer = null; state.busy -= 1; mirror(); }, 150);
    };
    if (panel) for (const [ev, sel] of Object.entries(which)) panel.addEventListener(ev, (e) => { if (e.target.matches(sel)) later(); });
    $("compare-position").addEventListener("input", (e) => { state.position = Number(e.target.value) / 100; view().place(state.position); ctx.onChange(); });
    syncControls();
    return {urlState, apply};
  }

  window.geobaseCompare = {attach};
})();
