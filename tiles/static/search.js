/* The map's search box: asks GET /search (parcel numbers, divisions, villages, places,
   coordinates), lists the results, and on a click zooms to one and highlights it — the
   feature(s) read from the items API of this server, with the caller's key. Results are named
   in the interface's language (layer titles from the hits; values are data and stay as they are).
   window.geobaseSearchUI.attach(map, ctx) after the map's style has loaded. */
(function () {
  "use strict";
  const HIT = "search-hit";
  const state = {results: [], selected: null, highlighted: 0, error: null};
  const I = () => window.geobaseI18n;
  window.geobaseSearchState = state;

  function addLayers(map) {
    map.addSource(HIT, {type: "geojson", data: {type: "FeatureCollection", features: []}});
    map.addLayer({id: HIT + "-fill", type: "fill", source: HIT, filter: ["==", "$type", "Polygon"],
                  paint: {"fill-color": "#00e5ff", "fill-opacity": 0.35}});
    map.addLayer({id: HIT + "-line", type: "line", source: HIT, filter: ["!=", "$type", "Point"],
                  paint: {"line-color": "#00b8d4", "line-width": 3}});
    map.addLayer({id: HIT + "-point", type: "circle", source: HIT, filter: ["==", "$type", "Point"],
                  paint: {"circle-color": "#00e5ff", "circle-radius": 7, "circle-stroke-color": "#006064", "circle-stroke-width": 2}});
  }

  async function featuresOf(hit, ctx) {
    if (hit.kind === "position") return [{type: "Feature", properties: {}, geometry: {type: "Point", coordinates: hit.point}}];
    const base = "/collections/" + encodeURIComponent(hit.layer) + "/items";
    if (hit.id != null) return [await ctx.getJSON(base + "/" + encodeURIComponent(hit.id))];
    const body = await ctx.getJSON(base + "?limit=1000&filter=" + encodeURIComponent(hit.filter));
    return body.features || [];
  }

  async function select(map, ctx, hit) {
    state.selected = hit;
    state.highlighted = 0;
    const b = hit.bbox;
    if (b[0] === b[2] && b[1] === b[3]) map.jumpTo({center: [b[0], b[1]], zoom: Math.max(map.getZoom(), 15)});
    else map.fitBounds([[b[0], b[1]], [b[2], b[3]]], {padding: 60, maxZoom: 17, duration: 0});
    try {
      const features = await featuresOf(hit, ctx);
      map.getSource(HIT).setData({type: "FeatureCollection", features});
      state.highlighted = features.length;
    } catch (err) {
      state.error = err.message;
      ctx.status("status.highlight_failed", err.message);
    }
  }

  function label(hit) {
    /* The server's label is Chinese; in English the layer's English title and the hit's data. */
    if (I().lang() === "zh" || hit.kind === "position" || !hit.title) return hit.label;
    if (hit.kind === "group") return hit.value + " · " + hit.title.en + " (" + hit.count + ")";
    const extra = String(hit.label).split(" · ").slice(1).join(" · ");
    return hit.title.en + " " + hit.value + (extra ? " · " + extra : "");
  }

  function render(map, ctx) {
    const list = document.getElementById("search-results");
    list.innerHTML = "";
    if (!state.results.length) {
      const li = document.createElement("li");
      li.className = "hint";
      if (state.error) li.textContent = state.error;  // the server's own words (its API speaks English)
      else I().say(li, "find.none");
      list.appendChild(li);
      return;
    }
    state.results.forEach((hit, i) => {
      const li = document.createElement("li");
      const btn = document.createElement("button");
      btn.type = "button";
      btn.className = "search-hit";
      btn.id = "search-hit-" + i;
      btn.textContent = label(hit);
      btn.addEventListener("click", () => {
        for (const b of list.querySelectorAll("button")) b.classList.toggle("selected", b === btn);
        select(map, ctx, hit);
      });
      li.appendChild(btn);
      list.appendChild(li);
    });
  }

  async function run(map, ctx, q) {
    state.results = []; state.error = null; state.selected = null;
    const r = await fetch("/search?q=" + encodeURIComponent(q), {headers: ctx.authHeaders({Accept: "application/json"})});
    const body = await r.json().catch(() => ({}));
    if (!r.ok) state.error = body.description || "HTTP " + r.status;
    else state.results = body.results || [];
    render(map, ctx);
    state.done = (state.done || 0) + 1;
  }

  function attach(map, ctx) {
    addLayers(map);
    const form = document.getElementById("search-form"), input = document.getElementById("search-input");
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const q = input.value.trim();
      if (q) run(map, ctx, q).catch((err) => { state.error = err.message; render(map, ctx); });
    });
    document.addEventListener("geobase:lang", () => state.results.forEach((hit, i) => {
      const b = document.getElementById("search-hit-" + i);
      if (b) b.textContent = label(hit);
    }));
  }

  window.geobaseSearchUI = {attach};
})();
