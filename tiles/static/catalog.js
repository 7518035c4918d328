/* The catalog page: search box, facets, result list, a map of the records' extents (MapLibre,
   no base map: offline), and one record's page with its download links. Chinese by default,
   English with lang=en in the URL. Reads /catalog/items and /catalog/items/{id} (JSON). */
(function () {
  "use strict";
  const WORDS = {
    "heading": ["数据资源目录", "Data catalog"], "search": ["搜索", "Search"],
    "search.placeholder": ["名称、关键词、标签", "Name, keyword, tag"], "csv": ["导出 CSV", "Export CSV"],
    "lang.switch": ["English", "中文"], "found": ["条记录", "records"],
    "facet.theme": ["主题", "Theme"], "facet.class": ["数据分类", "Class"], "facet.level": ["层级", "Level"],
    "facet.grade": ["数据分级", "Grade"], "facet.openness": ["开放类型", "Openness"],
    "facet.department": ["责任部门", "Department"], "facet.tag": ["标签", "Tag"],
    "downloads": ["下载与服务", "Downloads and services"], "back": ["返回目录", "Back to the catalog"],
    "department": ["责任部门", "Department"], "contact": ["联系方式", "Contact"], "licence": ["许可", "Licence"],
    "updated": ["更新时间", "Updated"], "frequency": ["更新频率", "Update frequency"], "extent": ["空间范围", "Extent"],
    "interval": ["时间范围", "Time"], "lineage": ["数据沿革", "Lineage"], "quality": ["质量", "Quality"],
    "status": ["现状", "Status"], "planning": ["规划", "Planning"], "management": ["管理", "Management"],
    "socioeconomic": ["社会经济", "Socio-economic"], "national": ["国家", "National"], "provincial": ["省", "Provincial"],
    "municipal": ["市", "Municipal"], "county": ["县", "County"], "general": ["一般数据", "General"],
    "important": ["重要数据", "Important"], "core": ["核心数据", "Core"], "open": ["无条件开放", "Open"],
    "conditional": ["有条件开放", "Conditional"], "closed": ["不予开放", "Closed"],
  };
  const params = new URLSearchParams(location.search);
  let lang = params.get("lang") === "en" ? "en" : "zh";
  const t = (k) => (WORDS[k] ? WORDS[k][lang === "en" ? 1 : 0] : k);
  const FACETS = ["theme", "class", "level", "grade", "openness", "department", "tag"];
  const chosen = {};
  FACETS.forEach((f) => { chosen[f] = new Set((params.get(f) || "").split(",").filter(Boolean)); });
  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");
  const el = (id) => document.getElementById(id);

  function translate() {
    document.documentElement.lang = lang;
    document.querySelectorAll("[data-i18n]").forEach((n) => { n.textContent = t(n.dataset.i18n); });
    document.querySelectorAll("[data-i18n-placeholder]").forEach((n) => { n.placeholder = t(n.dataset.i18nPlaceholder); });
    document.title = t("heading") + " · geobase";
  }

  const map = new maplibregl.Map({
    container: "map", attributionControl: false, center: [110, 30], zoom: 3,
    style: { version: 8, sources: {}, layers: [{ id: "bg", type: "background", paint: { "background-color": "#f4f4f0" } }] },
  });
  const mapReady = new Promise((ok) => map.on("load", ok));
  window.geobaseCatalog = { map, state: { records: [] } };

  async function showExtents(features) {
    await mapReady;
    const fc = { type: "FeatureCollection", features: features.filter((f) => f.geometry) };
    if (map.getSource("extents")) map.getSource("extents").setData(fc);
    else {
      map.addSource("extents", { type: "geojson", data: fc });
      map.addLayer({ id: "extents-fill", type: "fill", source: "extents", paint: { "fill-color": "#3366cc", "fill-opacity": 0.15 } });
      map.addLayer({ id: "extents-line", type: "line", source: "extents", paint: { "line-color": "#3366cc", "line-width": 1.5 } });
    }
    const boxes = fc.features.map((f) => f.geometry.coordinates[0]);
    if (boxes.length) {
      const xs = boxes.flat().map((p) => p[0]), ys = boxes.flat().map((p) => p[1]);
      map.fitBounds([[Math.min(...xs), Math.min(...ys)], [Math.max(...xs), Math.max(...ys)]], { padding: 30, duration: 0 });
    }
    window.geobaseCatalog.state.shown = fc.features.map((f) => f.id);
  }

  function query() {
    const p = new URLSearchParams();
    const q = el("q").value.trim();
    if (q) p.set("q", q);
    FACETS.forEach((f) => { if (chosen[f].size) p.set(f, [...chosen[f]].join(",")); });
    p.set("limit", "100");
    p.set("lang", lang);
    return p;
  }

  function renderFacets(facets) {
    const nav = el("facets");
    nav.innerHTML = "";
    FACETS.forEach((f) => {
      const values = Object.entries(facets[f] || {}).filter(([v]) => v);
      if (!values.length && !chosen[f].size) return;
      const h = document.createElement("h3");
      h.textContent = t("facet." + f);
      nav.appendChild(h);
      values.sort((a, b) => b[1] - a[1]).forEach(([v, n]) => {
        const lab = document.createElement("label");
        lab.innerHTML = `<input type="checkbox" data-facet="${esc(f)}" value="${esc(v)}"> ${esc(t(v))} (${n})`;
        const box = lab.querySelector("input");
        box.checked = chosen[f].has(v);
        box.addEventListener("change", () => { box.checked ? chosen[f].add(v) : chosen[f].delete(v); search(); });
        nav.appendChild(lab);
      });
    });
  }

  async function search() {
    el("record").hidden = true;
    el("list").hidden = false;
    const p = query();
    history.replaceState(null, "", "/catalog?" + p.toString());
    el("csv").href = "/catalog/items?f=csv&" + p.toString().replace(/&?lang=\w+/, "");
    const res = await fetch("/catalog/items?" + p.toString(), { headers: { Accept: "application/geo+json" } });
    const doc = await res.json();
    window.geobaseCatalog.state.records = doc.features.map((f) => f.id);
    el("count").textContent = `${doc.numberMatched} ${t("found")}`;
    el("list").innerHTML = doc.features.map((f) => {
      const p = f.properties;
      return `<article data-id="${esc(f.id)}"><a href="/catalog/items/${encodeURIComponent(f.id)}?f=html&lang=${lang}" class="open">${esc(p.title)}</a>
        <div class="meta"><span class="badge">${esc(t(p.dataClass))}</span><span class="badge">${esc(t(p.level))}</span>
        <span class="badge">${esc(t(p.grade))}</span><span class="badge">${esc(t(p.openness))}</span>
        ${esc((p.contacts[0] || {}).organization || "")}</div><p>${esc((p.description || "").slice(0, 200))}</p></article>`;
    }).join("");
    el("list").querySelectorAll("a.open").forEach((a) => a.addEventListener("click", (ev) => {
      ev.preventDefault(); history.pushState(null, "", a.href); showRecord(a.closest("article").dataset.id);
    }));
    renderFacets(doc.facets);
    await showExtents(doc.features);
  }

  async function showRecord(id) {
    const res = await fetch(`/catalog/items/${encodeURIComponent(id)}?lang=${lang}`, { headers: { Accept: "application/geo+json" } });
    const sec = el("record");
    el("list").hidden = true;
    sec.hidden = false;
    if (!res.ok) { sec.innerHTML = `<p>${res.status}</p>`; return; }
    const f = await res.json();
    const p = f.properties;
    const contact = p.contacts[0] || {};
    const links = f.links.filter((l) => l.rel === "enclosure" || l.rel === "service");
    sec.innerHTML = `<p><a href="/catalog?lang=${lang}" id="back">${t("back")}</a></p><h2>${esc(p.title)}</h2>
      <p>${esc(p.description)}</p><dl>
      <dt>${t("department")}</dt><dd>${esc(contact.organization)}</dd>
      <dt>${t("contact")}</dt><dd>${esc(((contact.emails || [])[0] || {}).value || "")}</dd>
      <dt>${t("licence")}</dt><dd>${esc(p.license)}</dd><dt>${t("frequency")}</dt><dd>${esc(p.updateFrequency)}</dd>
      <dt>${t("facet.grade")}</dt><dd>${esc(t(p.grade))}</dd><dt>${t("facet.openness")}</dt><dd>${esc(t(p.openness))}</dd>
      <dt>${t("interval")}</dt><dd>${esc(((f.time || {}).interval || []).join(" / "))}</dd>
      <dt>${t("updated")}</dt><dd>${esc(p.updated)}</dd></dl>
      <h3>${t("downloads")}</h3><ul id="downloads">${links.map((l) =>
        `<li><a href="${esc(l.href)}">${esc(l.title)}</a> <span class="meta">${esc(l.type)}</span></li>`).join("")}</ul>
      <h3>${t("lineage")}</h3><ul>${(p.lineage || []).map((v) =>
        `<li>v${esc(v.version)} · ${esc(v.created_at)} · ${esc(v.source || "")} · ${esc(v.rows)}</li>`).join("")}</ul>`;
    sec.querySelector("#back").addEventListener("click", (ev) => { ev.preventDefault(); search(); });
    await showExtents([f]);
  }

  el("go").addEventListener("click", search);
  el("q").addEventListener("keydown", (ev) => { if (ev.key === "Enter") search(); });
  el("lang").addEventListener("click", () => {
    lang = lang === "en" ? "zh" : "en";
    translate();
    const m = location.pathname.match(/^\/(?:collections\/)?catalog\/items\/([^/]+)$/);
    m ? showRecord(decodeURIComponent(m[1])) : search();
  });
  el("q").value = params.get("q") || "";
  translate();
  const m = location.pathname.match(/^\/(?:collections\/)?catalog\/items\/([^/]+)$/);
  if (m) showRecord(decodeURIComponent(m[1])); else search();
})();
