/* The compare view's second map and its divider (issue 21 item 4), for compare.js:
   - "swipe" (卷帘): the second map lies over the first, clipped to the right of the divider; it
     follows the first map's camera and takes no input (the first map is panned through it).
   - "side" (side by side): the first map shrinks to the left of the divider, the second fills the
     right; both take input and each follows the other (same centre, zoom, bearing and pitch, each
     centred in its own pane), so panning one pans the other.
   The divider is dragged with mouse, pen or finger; `position` (0..1) is its place across the
   map's area. window.geobaseCompareView.open(main, mode, style, opts) → Promise of the second map
   (also window.geobaseCompareMap, which the tests watch), close(), place(position), mode(). */
(function () {
  "use strict";
  let main = null, second = null, mode = null, frame = null, position = 0.5, listeners = [];
  const $ = (id) => document.getElementById(id);

  const camera = (m) => ({center: m.getCenter(), zoom: m.getZoom(), bearing: m.getBearing(), pitch: m.getPitch()});
  const at = (p) => "calc(" + frame.left + " + (100% - " + frame.left + " - " + frame.right + ") * " + p + ")";

  let syncing = false;  // one flag for both directions: a followed move does not echo back
  const follow = (from, to) => () => {
    if (syncing || !second) return;
    syncing = true;
    try { to.jumpTo(camera(from)); } finally { syncing = false; }
  };

  function place(p) {
    /* Put the divider at `p` (0..1 across the map area): the swipe's clip, or the panes' split. */
    position = Math.min(1, Math.max(0, p));
    if (!second) return;
    const div = $("compare-map"), line = $("compare-divider");
    line.style.left = "calc(" + at(position) + " - 1px)";
    if (mode === "swipe") {
      div.style.clipPath = "inset(0 0 0 " + (position * 100).toFixed(2) + "%)";
    } else {
      main.getContainer().style.right = "calc(" + frame.right + " + (100% - " + frame.left + " - " + frame.right + ") * " + (1 - position) + ")";
      div.style.left = at(position);
      main.resize();
      second.resize();
      second.jumpTo(camera(main));
    }
  }

  function divider(box, onDivider) {
    const line = document.createElement("div");
    line.id = "compare-divider";
    line.style.cssText = "position:absolute;width:3px;background:#fff;box-shadow:0 0 3px #000;z-index:5;" +
      "pointer-events:auto;cursor:ew-resize;touch-action:none;top:" + frame.top + ";bottom:" + frame.bottom;
    line.dataset.i18nTitle = mode === "swipe" ? "compare.drag_swipe" : "compare.drag_divider";  // i18n.js rewrites it on a switch
    line.title = window.geobaseI18n.t(line.dataset.i18nTitle);
    line.addEventListener("pointerdown", (e) => {
      line.setPointerCapture(e.pointerId);
      const move = (ev) => {
        const r = box.parentNode.getBoundingClientRect();
        const left = r.left + parseFloat(frame.left), width = r.width - parseFloat(frame.left) - parseFloat(frame.right);
        place((ev.clientX - left) / width);
        onDivider(position, false);
      };
      const up = () => {
        line.removeEventListener("pointermove", move); line.removeEventListener("pointerup", up);
        onDivider(position, true);
      };
      line.addEventListener("pointermove", move);
      line.addEventListener("pointerup", up);
    });
    return line;
  }

  function open(map, how, style, opts) {
    /* The second map in `how` ("swipe" | "side") drawing `style`; opts: transformRequest,
       localIdeographFontFamily, position, onDivider(position, done). */
    if (second) close();
    main = map; mode = how;
    const box = main.getContainer();
    const cs = getComputedStyle(box);
    frame = {left: cs.left, right: cs.right, top: cs.top, bottom: cs.bottom, css: box.style.cssText};
    const div = document.createElement("div");
    div.id = "compare-map";
    div.className = "compare-" + how;
    div.style.cssText = "position:absolute;left:" + frame.left + ";right:" + frame.right + ";top:" + frame.top +
      ";bottom:" + frame.bottom + (how === "swipe" ? ";pointer-events:none" : "");
    box.parentNode.insertBefore(div, box.nextSibling);
    second = new maplibregl.Map(Object.assign({container: div, style, interactive: how === "side", attributionControl: false,
                                               transformRequest: opts.transformRequest, doubleClickZoom: false,
                                               localIdeographFontFamily: opts.localIdeographFontFamily}, camera(main)));
    box.parentNode.insertBefore(divider(box, opts.onDivider || (() => {})), div.nextSibling);
    window.geobaseCompareMap = second;
    listeners = [[main, "move", follow(main, second)], [main, "resize", () => second && second.resize()]];
    if (how === "side") listeners.push([second, "move", follow(second, main)]);
    for (const [m, ev, fn] of listeners) m.on(ev, fn);
    place(opts.position == null ? position : opts.position);
    return new Promise((resolve) => second.once("load", () => resolve(second)));
  }

  function close() {
    if (!second) return;
    for (const [m, ev, fn] of listeners) m.off(ev, fn);
    listeners = [];
    second.remove();
    second = null;
    window.geobaseCompareMap = null;
    for (const id of ["compare-map", "compare-divider"]) { const el = $(id); if (el) el.remove(); }
    main.getContainer().style.cssText = frame.css;
    main.resize();
    mode = null;
  }

  window.geobaseCompareView = {open, close, place, mode: () => mode, map: () => second};
})();
