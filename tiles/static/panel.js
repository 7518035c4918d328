/* The side panel on a narrow screen (a tablet upright, below 900 px wide): it collapses behind a
   toggle button and the map fills the screen; the button opens it over the map. Starting a
   tool that takes points on the map (measure, site check) or choosing a search result closes
   it again, so the map is free for the finger. On a wide screen the panel is always there and
   the button is hidden (map.css). window.geobasePanel.attach() once the page is built. */
(function () {
  "use strict";
  const NARROW = "(max-width: 900px)";
  const state = {open: false};
  window.geobasePanelState = state;

  function set(open) {
    state.open = open;
    document.body.classList.toggle("panel-open", open);
    const btn = document.getElementById("panel-toggle");
    btn.setAttribute("aria-expanded", String(open));
    btn.dataset.i18nAria = open ? "panel.hide" : "panel.show";
    if (window.geobaseI18n) btn.setAttribute("aria-label", window.geobaseI18n.t(btn.dataset.i18nAria));
    const panel = document.getElementById("panel");
    if (window.matchMedia(NARROW).matches) panel.inert = !open; else panel.inert = false;
  }

  function attach() {
    const btn = document.getElementById("panel-toggle");
    btn.addEventListener("click", () => {
      set(!state.open);
      if (state.open) { const first = document.querySelector("#panel input, #panel button"); if (first) first.focus(); }
    });
    const closeOnNarrow = () => { if (window.matchMedia(NARROW).matches && state.open) set(false); };
    for (const id of ["measure-line", "measure-area", "draw-btn"]) document.getElementById(id).addEventListener("click", closeOnNarrow);
    document.getElementById("search-results").addEventListener("click", (e) => { if (e.target.closest("button")) closeOnNarrow(); });
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && state.open && window.matchMedia(NARROW).matches) { set(false); btn.focus(); }
    });
    window.matchMedia(NARROW).addEventListener("change", () => set(false));
    set(false);
  }

  window.geobasePanel = {attach, set, state};
})();
