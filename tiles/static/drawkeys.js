/* Drawing from the keyboard, for the tools that take points on the map (measure.js,
   sitecheck.js): while a tool is active and the map has the focus, a cross marks the map's
   centre; the arrow keys pan the map under it (MapLibre's own keys, +/- zoom), Space adds a
   point at the cross, Backspace takes the last one back, Enter finishes, Escape cancels.
   A typed "lon lat" (a .coord-form in the tool's section) adds a point exactly.
   Tools register {name, active(), start(), add([lon, lat]), undo(), finish(), cancel(), pause()}
   and call began(tool) when they start: one tool takes points at a time, the others pause;
   window.geobaseDrawKeys.attach(map) after the style loaded, before the tools attach. */
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.geobaseDrawKeys = factory();
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";
  const tools = [];
  let map = null, cross = null;

  function parseLonLat(text) {
    /* "118.1 29.1", "118.1, 29.1" or "118.1,29.1" -> [lon, lat]; null unless two finite numbers
       in range (longitude -180..180, latitude -90..90). */
    const parts = String(text || "").trim().split(/[\s,;，]+/).filter(Boolean);
    if (parts.length !== 2 || !parts.every((p) => /^[-+]?(\d+\.?\d*|\.\d+)$/.test(p))) return null;
    const [lon, lat] = parts.map(Number);
    return Math.abs(lon) <= 180 && Math.abs(lat) <= 90 ? [lon, lat] : null;
  }

  const activeTool = () => tools.find((t) => t.active()) || null;

  function began(tool) {  // one tool at a time: a measurement stops, a drawing is dropped
    for (const t of tools) if (t !== tool && t.active()) t.pause();
  }

  function refresh() {
    if (cross) cross.hidden = !(activeTool() && document.activeElement === map.getCanvas());
  }

  function focusMap() {
    map.getCanvas().focus();
    refresh();
  }

  function onKey(e) {
    const tool = activeTool();
    if (!tool || e.altKey || e.ctrlKey || e.metaKey) return;
    const c = map.getCenter();
    const act = {" ": () => tool.add([c.lng, c.lat]), Enter: () => tool.finish(), Escape: () => tool.cancel(),
                 Backspace: () => tool.undo()}[e.key];
    if (!act) return;
    e.preventDefault();
    act();
    refresh();
  }

  function wireForm(form) {
    const tool = tools.find((t) => t.name === form.dataset.tool);
    const input = form.querySelector("input");
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const p = parseLonLat(input.value);
      const hint = form.querySelector(".coord-error");
      if (hint) { hint.hidden = !!p; }
      if (!p || !tool) return;
      if (!tool.active()) tool.start();
      tool.add(p);
      input.value = "";
      if (!map.getBounds().contains(p)) map.jumpTo({center: p});
    });
  }

  function attach(m) {
    map = m;
    cross = document.createElement("div");
    cross.id = "draw-cross";
    cross.hidden = true;
    cross.setAttribute("aria-hidden", "true");
    map.getContainer().appendChild(cross);
    const canvas = map.getCanvas();
    canvas.addEventListener("keydown", onKey);
    canvas.addEventListener("focus", refresh);
    canvas.addEventListener("blur", refresh);
    document.addEventListener("keydown", (e) => {  // Escape cancels from anywhere but a text field
      const tool = activeTool();
      if (e.key === "Escape" && tool && e.target !== canvas && !/^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName)) {
        tool.cancel(); refresh();
      }
    });
  }

  function register(tool) {
    tools.push(tool);
    for (const form of document.querySelectorAll('.coord-form[data-tool="' + tool.name + '"]')) wireForm(form);
  }

  return {attach, register, began, focusMap, refresh, parseLonLat, activeTool};
});
