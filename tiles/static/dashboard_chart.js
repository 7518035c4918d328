/* A small SVG line chart of one indicator's series with its target as a dashed line: drawn by
   our own code (no chart library to vendor); the y axis spans the values and the target.
   Plain script: window.geobaseChart in the page, module.exports under node (the scale is testable). */
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.geobaseChart = factory();
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";
  const W = 640, H = 300, L = 70, R = 20, T = 20, B = 50;
  const NS = "http://www.w3.org/2000/svg";

  // y range with a margin, covering the values and the target
  function range(values, target) {
    const all = values.concat(target == null ? [] : [target]).filter((v) => v != null && isFinite(v));
    if (!all.length) return [0, 1];
    let lo = Math.min(...all), hi = Math.max(...all);
    const pad = (hi - lo) * 0.1 || Math.abs(hi) * 0.05 || 1;
    return [lo - pad, hi + pad];
  }

  function scale(points, target) {
    const [lo, hi] = range(points.map((p) => p.value), target);
    const n = points.length;
    const x = (i) => (n <= 1 ? L + (W - L - R) / 2 : L + (i * (W - L - R)) / (n - 1));
    const y = (v) => T + ((hi - v) * (H - T - B)) / (hi - lo);
    return {x, y, lo, hi};
  }

  function el(svg, name, attrs, text) {
    const e = svg.ownerDocument.createElementNS(NS, name);
    Object.entries(attrs).forEach(([k, v]) => e.setAttribute(k, v));
    if (text != null) e.textContent = text;
    svg.appendChild(e);
    return e;
  }

  const fmt = (v) => (Math.abs(v) >= 1000 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(2) : v.toFixed(4));

  // points: [{label, value}], target: number|null; returns what was drawn (for tests and notes)
  function draw(svg, points, target, opts) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const o = opts || {};
    const s = scale(points, target);
    el(svg, "line", {class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B});
    el(svg, "line", {class: "axis", x1: L, y1: T, x2: L, y2: H - B});
    for (let k = 0; k <= 4; k++) {
      const v = s.lo + ((s.hi - s.lo) * k) / 4;
      el(svg, "text", {x: L - 6, y: s.y(v) + 4, "text-anchor": "end"}, fmt(v));
    }
    el(svg, "text", {x: 4, y: T - 6}, o.unit || "");
    const drawn = points.filter((p) => p.value != null);
    if (drawn.length) {
      el(svg, "polyline", {class: "series", points: points.map((p, i) => (p.value == null ? null : s.x(i) + "," + s.y(p.value)))
        .filter(Boolean).join(" ")});
      points.forEach((p, i) => {
        if (p.value == null) return;
        const c = el(svg, "circle", {class: "point", cx: s.x(i), cy: s.y(p.value), r: 4, "data-value": p.value});
        el(c, "title", {}, p.label + ": " + fmt(p.value));
        el(svg, "text", {x: s.x(i), y: H - B + 16, "text-anchor": "middle"}, p.label);
      });
    } else {
      el(svg, "text", {x: W / 2, y: H / 2, "text-anchor": "middle"}, o.empty || "");
    }
    let targetY = null;
    if (target != null && isFinite(target)) {
      targetY = s.y(target);
      el(svg, "line", {class: "target-line", x1: L, x2: W - R, y1: targetY, y2: targetY, "data-target": target});
      el(svg, "text", {x: W - R, y: targetY - 5, "text-anchor": "end", fill: "#c62828"}, (o.targetLabel || "target") + " " + fmt(target));
    }
    return {points: drawn.length, targetY, lo: s.lo, hi: s.hi};
  }

  return {draw, scale, range};
});
