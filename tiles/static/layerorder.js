/* Layer order: "up"/"down" buttons on each row of the layer panel move a layer above or below its
   neighbour of the same department (the two swap places), in the panel and in the map's
   drawing order. The order is
   one list of the data layers, topmost first (labels, highlights and drawings stay above all
   data layers); the URL state keeps it (order=) so a link reproduces it.
   window.geobaseLayerOrder.attach(map, config, onChange) after the layer switcher is built;
   it returns {order(): [names] | null (null: the style's own order), apply([names])}. */
(function () {
  "use strict";
  const isData = (l) => l.metadata && l.metadata["geobase:layer"] && !l.metadata["geobase:label"];

  function styleOrder(map) {
    /* The data layers' names as the style draws them, topmost first. */
    const out = [];
    for (const l of map.getStyle().layers.filter(isData).reverse()) {
      const n = l.metadata["geobase:layer"];
      if (!out.includes(n)) out.push(n);
    }
    return out;
  }

  function restack(map, order) {
    /* Draw the data layers in ``order`` (topmost first), keeping each layer's own style layers
       in their relative order, all below the first non-data layer above them. */
    const layers = map.getStyle().layers;
    let last = -1;
    layers.forEach((l, i) => { if (isData(l)) last = i; });
    const anchor = last >= 0 && last + 1 < layers.length ? layers[last + 1].id : undefined;
    for (const name of order.slice().reverse()) {
      for (const l of layers) if (isData(l) && l.metadata["geobase:layer"] === name) map.moveLayer(l.id, anchor);
    }
  }

  function attach(map, config, onChange) {
    const deptOf = {};
    for (const d of config.departments) for (const l of d.layers) deptOf[l.name] = d.code;
    const initial = styleOrder(map);
    let order = initial.slice();
    const t = (key) => (window.geobaseI18n ? window.geobaseI18n.t(key) : key);
    const rowOf = (name) => { const cb = document.getElementById("toggle-" + name); return cb && cb.parentElement; };
    const sliderOf = (name) => document.getElementById("opacity-" + name);

    function neighbour(name, step) {  // the next layer of the same department in ``order``
      const i = order.indexOf(name);
      for (let j = i + step; j >= 0 && j < order.length; j += step) if (deptOf[order[j]] === deptOf[name]) return order[j];
      return null;
    }

    const headOf = {};  // each department's heading in the panel: its rows follow it
    for (const d of config.departments) {
      const first = d.layers.map((l) => rowOf(l.name)).find(Boolean);
      if (first) headOf[d.code] = first.previousElementSibling;
    }

    function syncPanel() {
      /* Each department's rows (with their opacity sliders) right after its heading, in ``order``. */
      for (const d of config.departments) {
        let after = headOf[d.code];
        if (!after) continue;
        for (const n of order.filter((x) => deptOf[x] === d.code && rowOf(x))) {
          const row = rowOf(n); const sl = sliderOf(n);
          after.after(row); if (sl) row.after(sl);
          after = sl || row;
        }
      }
      for (const n of order) {
        const up = document.getElementById("up-" + n); const down = document.getElementById("down-" + n);
        if (up) up.disabled = !neighbour(n, -1);
        if (down) down.disabled = !neighbour(n, 1);
      }
    }

    function move(name, step) {
      const other = neighbour(name, step);
      if (!other) return;
      const i = order.indexOf(name), j = order.indexOf(other);  // swap: layers between stay put,
      order[i] = other; order[j] = name;                         // so up then down is the identity
      restack(map, order);
      syncPanel();
      const btn = document.getElementById((step < 0 ? "up-" : "down-") + name);
      (btn && !btn.disabled ? btn : document.getElementById((step < 0 ? "down-" : "up-") + name)).focus();
      onChange();
    }

    for (const name of order) {
      const row = rowOf(name);
      if (!row) continue;
      for (const [dir, step, glyph] of [["up", -1, "↑"], ["down", 1, "↓"]]) {
        const b = document.createElement("button");
        b.type = "button"; b.id = dir + "-" + name; b.className = "order order-" + dir; b.textContent = glyph;
        b.dataset.i18nTitle = dir === "up" ? "order.up" : "order.down";
        b.title = t(b.dataset.i18nTitle);
        b.addEventListener("click", () => move(name, step));
        row.appendChild(b);
      }
    }
    syncPanel();
    return {
      order: () => (order.join(",") === initial.join(",") ? null : order.slice()),
      apply(names) {
        if (!names || !names.length) return;
        const known = names.filter((n) => initial.includes(n));
        order = known.concat(initial.filter((n) => !known.includes(n)));
        restack(map, order);
        syncPanel();
      },
      current: () => order.slice(),
    };
  }

  window.geobaseLayerOrder = {attach, styleOrder};
})();
