/* The map page in Chinese (the default) or English: one dictionary for the panel's headings,
   buttons, hints and the messages of the modules that ask t(key); layer and department names
   come from the layer specs (title.zh / title.en, name.zh / name.en in /map/config). The choice
   lives in the URL state (lang=en), so a shared link opens in the sender's language.

   Plain script: window.geobaseI18n in the page, module.exports under node.
   In the page: geobaseI18n.attach(config, lang, onChange) once the layer panel is built. */
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.geobaseI18n = factory();
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";
  const LANGS = ["zh", "en"];

  // key: [zh, en]; the keys also name the page's elements in TARGETS.
  const WORDS = {
    "title": ["一张图 · geobase", "One map · geobase"],
    "heading": ["自然资源一张图", "Natural resources ·"],
    "find": ["查找", "Find"],
    "find.placeholder": ["图斑编号、行政区、村名、地名或坐标", "Parcel number, division, village, place or coordinates"],
    "find.go": ["查找", "Find"],
    "layers": ["图层", "Layers"],
    "imagery": ["影像", "Imagery"],
    "imagery.off": ["不显示影像", "No imagery"],
    "imagery.truecolor": ["真彩色", "True colour"],
    "imagery.ndvi": ["植被指数", "Vegetation index (NDVI)"],
    "imagery.default": ["默认", "Default"],
    "imagery.latest": ["最新", "Latest"],
    "legend": ["图例", "Legend"],
    "access": ["访问", "Access"],
    "access.key": ["API 密钥（部门）", "API key (department)"],
    "access.use": ["使用", "Use"],
    "access.public": ["公开", "Public"],
    "access.viewing": ["当前身份：", "Viewing as: "],
    "measure": ["量测", "Measure"],
    "measure.line": ["测距", "Distance"],
    "measure.area": ["测面", "Area"],
    "finish": ["完成", "Finish"],
    "clear": ["清除", "Clear"],
    "measure.hint": ["CGCS2000 椭球面 · 1 亩 = 10000/15 m²", "CGCS2000 ellipsoid · 1 mu = 10000/15 m²"],
    "site": ["选址分析", "Site check"],
    "site.draw": ["绘制红线", "Draw polygon"],
    "site.finish": ["完成并分析", "Finish & check"],
    "site.hint": ["单击地图添加顶点，双击或点“完成并分析”闭合并提交。", "Click to add vertices, double-click or “Finish & check” to close and send."],
    "lang.switch": ["English", "中文"],
    "lang.label": ["切换为英文界面", "Switch to the Chinese interface"],
    "export": ["导出 PNG", "Export PNG"],
    "export.label": ["将当前地图导出为 PNG 图片", "Export the current map view as a PNG image"],
    "export.done": ["已导出 PNG", "PNG exported"],
    "export.failed": ["导出失败", "Export failed"],
    "order.up": ["上移（绘于上层）", "Move up (draw above)"],
    "order.down": ["下移（绘于下层）", "Move down (draw below)"],
    "zoom.layer": ["缩放至图层", "Zoom to layer extent"],
    "opacity": ["透明度", "Opacity"],
    // ---- messages of map.js, search.js, measure.js, labels.js (status line, results, hints) ----
    "compare": ["对比", "Compare"],
    "table": ["属性表", "Attribute table"],
    "status.loading": ["加载中…", "Loading…"],
    "status.ready": ["就绪", "Ready"],
    "status.failed": ["加载失败：", "Failed: "],
    "status.tile_error": ["瓦片错误：", "Tile error: "],
    "status.labels_failed": ["注记加载失败：", "Labels failed: "],
    "status.identify_failed": ["查询失败：", "Identify failed: "],
    "status.highlight_failed": ["高亮失败：", "Highlight failed: "],
    "legend.more": ["… 另有 {n} 类", "… {n} more"],
    "access.key_set": ["已设置密钥：", "Key set: "],
    "access.public_state": ["公开（无密钥）", "public (no key)"],
    "find.none": ["无结果", "No results"],
    "find.hit": ["结果", "Result"],
    "measure.distance": ["距离：", "Distance: "],
    "measure.area_is": ["面积：", "Area: "],
    "measure.perimeter": ["周长", "perimeter"],
    "measure.click": ["在地图上单击添加点（键盘：方向键平移地图，空格在中心十字处添加点，退格撤销，回车完成，Esc 取消）",
                      "Click on the map to add points (keyboard: arrow keys pan the map, Space adds a point at the centre cross, Backspace undoes, Enter finishes, Esc cancels)"],
    "site.click": ["在地图上单击添加顶点（键盘：方向键平移地图，空格在中心十字处添加顶点，退格撤销，回车完成并分析，Esc 取消）",
                   "Click on the map to add vertices (keyboard: arrow keys pan the map, Space adds a vertex at the centre cross, Backspace undoes, Enter finishes and checks, Esc cancels)"],
    "site.need3": ["请至少绘制三个顶点。", "Draw at least three vertices."],
    "site.checking": ["分析中…", "Checking…"],
    "site.unavailable": ["本服务器未提供选址分析（404）。", "The site-check analysis is not available on this server (404)."],
    "site.failed": ["选址分析失败：", "Site check failed: "],
    "site.done": ["选址分析完成。", "Site check done."],
    "coords": ["坐标", "Coordinates"],
    "coords.placeholder": ["经度 纬度，如 118.1 29.1", "lon lat, e.g. 118.1 29.1"],
    "coords.add": ["添加点", "Add point"],
    "coords.bad": ["请输入“经度 纬度”两个数", "Enter two numbers: lon lat"],
    "panel.toggle": ["图层与工具", "Layers & tools"],
    "panel.show": ["显示面板", "Show the panel"],
    "panel.hide": ["隐藏面板", "Hide the panel"],
    "dept.up": ["部门上移", "Move department up"],
    "dept.down": ["部门下移", "Move department down"],
    "brand": ["geobase", "one map"],
    // ---- compare.js, comparemap.js: the compare section and its divider ----
    "compare.layer": ["图层", "Layer"],
    "compare.version": ["时间", "Version"],
    "compare.swipe": ["卷帘", "Swipe"],
    "compare.side": ["并排", "Side by side"],
    "compare.right": ["右侧", "Right"],
    "compare.position": ["位置", "Position"],
    "compare.versions": ["两个版本", "Two versions"],
    "compare.plan": ["规划与现状", "Plan vs current"],
    "compare.nothing": ["没有可对比的图层：没有多于一个版本的图层，也没有规划图层。", "Nothing to compare: no layer with more than one version, no plan layers."],
    "compare.choose": ["选择卷帘或并排", "Choose swipe or side by side"],
    "compare.left_is": ["左：", "Left: "],
    "compare.right_is": ["右：", "Right: "],
    "compare.plan_side": ["规划", "plan"],
    "compare.current_side": ["现状", "current"],
    "compare.now": ["（当前）", " (current)"],
    "compare.changes": ["{n} 处变化", "{n} changes"],
    "compare.first": ["（共 {n} 处，勾出前若干处）", " (of {n}, the first outlined)"],
    "compare.failed": ["对比失败：", "Compare failed: "],
    "compare.drag_swipe": ["拖动卷帘", "Drag the swipe"],
    "compare.drag_divider": ["拖动分隔线", "Drag the divider"],
    // ---- table.js and the attribute-table section ----
    "table.layer": ["图层", "Layer"],
    "table.filter": ["CQL2 筛选", "CQL2 filter"],
    "table.filter_example": ["CQL2 筛选，如 dlbm = '0101'", "CQL2 filter, e.g. dlbm = '0101'"],
    "table.inview": ["仅视图范围", "In view only"],
    "table.open": ["打开", "Open"],
    "table.hint": ["点击地图查询各可见图层的要素。", "Click the map to identify features of every visible layer."],
    "table.prev": ["上一页", "Prev"],
    "table.next": ["下一页", "Next"],
    "table.export": ["导出：", "Export:"],
    "table.close": ["关闭", "Close"],
    "table.total": ["共 {n} 条 · ", "{n} rows · "],
    "table.none": ["无结果", "No rows"],
    "table.failed": ["查询失败：", "Query failed: "],
    "table.sort": ["排序：", "Sort by "],
    "table.id": ["标识", "id"],
    // ---- edit.js: editing for an editor's key ----
    "edit": ["编辑", "Edit"],
    "edit.layer": ["编辑图层", "Layer to edit"],
    "edit.start": ["开始编辑", "Start editing"],
    "edit.started": ["编辑中：单击图斑选择。", "Editing: click a parcel to select it."],
    "edit.hint": ["单击图斑选择；Shift+单击再选一个（合并）。", "Click a parcel to select it; Shift+click adds one (to merge)."],
    "edit.apply": ["应用修改", "Apply change"],
    "edit.vertices": ["移动顶点", "Move vertices"],
    "edit.moved": ["顶点已移动：点“应用修改”暂存。", "Vertex moved: “Apply change” stages it."],
    "edit.split": ["分割", "Split"],
    "edit.split_draw": ["在地图上单击画分割线，然后点“完成分割”。", "Click on the map to draw the cutting line, then “Finish split”."],
    "edit.split_finish": ["完成分割", "Finish split"],
    "edit.split_done": ["已分割为：", "Split into: "],
    "edit.merge": ["合并所选", "Merge selected"],
    "edit.merge_need2": ["请用 Shift+单击至少选择两个相邻图斑。", "Select at least two adjacent parcels (Shift+click)."],
    "edit.merge_done": ["已合并为：", "Merged into: "],
    "edit.conflict": ["冲突：该要素已被他人修改，您的修改未保存。请重新加载后再编辑。", "Conflict: someone else changed this feature; your change was not saved. Reload it and edit again."],
    "edit.reload": ["重新加载", "Reload"],
    "edit.reloaded": ["已重新加载当前状态：", "Reloaded the current state: "],
    "edit.check": ["检查", "Check"],
    "edit.check_ok": ["检查通过，可以提交。", "Checks passed: ready to commit."],
    "edit.check_failed": ["检查未通过：", "Check failed: "],
    "edit.refused": ["操作被拒绝：", "Refused: "],
    "edit.staged": ["已暂存：", "Staged: "],
    "edit.changes": ["本次编辑 {n} 处修改", "{n} changes in this session"],
    "edit.message": ["修改原因（提交说明）", "Why (commit message)"],
    "edit.commit": ["提交", "Commit"],
    "edit.committed": ["已提交为新版本", "Committed as version"],
    "edit.discard": ["放弃", "Discard"],
    "edit.discarded": ["已放弃本次编辑。", "Edit session discarded."],
  };

  // [CSS selector, key, what to set: "text" | "placeholder" | "aria" | "title" | "lead" (first text node)]
  const TARGETS = [
    ["h1", "heading", "lead"], ["#find h2", "find", "text"], ["#search-input", "find.placeholder", "placeholder"],
    ["#search-input", "find", "aria"], ["#search-form button[type=submit]", "find.go", "text"],
    ["#layers h2", "layers", "text"], ["#imagery h2", "imagery", "text"], ["#legend h2", "legend", "text"], ["#access h2", "access", "text"],
    ["#key-input", "access.key", "placeholder"], ["#key-form button[type=submit]", "access.use", "text"],
    ["#key-clear", "access.public", "text"], ["#access .hint", "access.viewing", "lead"],
    ["#measure h2", "measure", "text"], ["#measure-line", "measure.line", "text"], ["#measure-area", "measure.area", "text"],
    ["#measure-finish", "finish", "text"], ["#measure-clear", "clear", "text"], ["#measure .hint", "measure.hint", "text"],
    ["#tools h2", "site", "text"], ["#draw-btn", "site.draw", "text"], ["#finish-btn", "site.finish", "text"],
    ["#clear-btn", "clear", "text"], ["#tools .hint", "site.hint", "text"],
    ["#lang-switch", "lang.switch", "text"], ["#lang-switch", "lang.label", "aria"],
    ["#export-png", "export", "text"], ["#export-png", "export.label", "title"],
    ["#compare h2", "compare", "text"], ["#attr-table h2", "table", "text"], ["h1 small", "brand", "text"],
  ];

  let current = "zh";
  const t = (key, lang) => { const w = WORDS[key]; return w ? w[LANGS.indexOf(lang || current)] : key; };

  function setLead(el, text) {
    const first = el.firstChild;
    if (first && first.nodeType === 3) first.nodeValue = text + (el.childNodes.length > 1 ? " " : "");
    else el.insertBefore(el.ownerDocument.createTextNode(text + " "), first);
  }

  function applyPage(doc) {
    doc.documentElement.lang = current;
    doc.title = t("title");
    for (const [sel, key, what] of TARGETS) {
      const el = doc.querySelector(sel);
      if (!el) continue;
      if (what === "text") el.textContent = t(key);
      else if (what === "placeholder") el.placeholder = t(key);
      else if (what === "aria") el.setAttribute("aria-label", t(key));
      else if (what === "title") el.title = t(key);
      else setLead(el, t(key));
    }
    for (const el of doc.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
    // texts the modules wrote with say() or marked in the page: data-i18n (text), -placeholder, -aria
    for (const el of doc.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n).replace("{n}", el.dataset.n || "");
    for (const el of doc.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
    for (const el of doc.querySelectorAll("[data-i18n-aria]")) el.setAttribute("aria-label", t(el.dataset.i18nAria));
  }

  function say(el, key, tail, n) {
    /* el's text: the words of ``key`` (kept in the chosen language on every switch) and a
       ``tail`` that is data, not words (a number, a name, a server's message). */
    const span = el.ownerDocument.createElement("span");
    span.dataset.i18n = key;
    if (n != null) span.dataset.n = String(n);
    span.textContent = t(key).replace("{n}", n == null ? "" : String(n));
    el.textContent = "";
    el.appendChild(span);
    if (tail) el.appendChild(el.ownerDocument.createTextNode(tail));
    return el;
  }

  function applyLayers(doc, config) {
    /* Department headings, layer titles and the per-layer controls' names in the chosen language. */
    const heads = doc.querySelectorAll("#layer-list h3");
    config.departments.forEach((d, i) => { if (heads[i]) heads[i].textContent = d.name[current] || d.name.zh; });
    for (const d of config.departments) {
      for (const l of d.layers) {
        const title = l.title[current] || l.title.zh;
        const label = doc.querySelector('label[for="toggle-' + l.name + '"]');
        if (label) setLead(label, title);
        const slider = doc.getElementById("opacity-" + l.name);
        if (slider) { slider.title = t("opacity"); slider.setAttribute("aria-label", t("opacity") + ": " + title); }
        const row = label && label.parentElement;
        for (const b of row ? row.querySelectorAll("button:not(.order)") : []) {
          b.title = t("zoom.layer"); b.setAttribute("aria-label", t("zoom.layer") + ": " + title);
        }
        for (const dir of ["up", "down"]) {
          const b = doc.getElementById(dir + "-" + l.name);
          if (b) b.setAttribute("aria-label", t("order." + dir) + ": " + title);
        }
      }
    }
  }

  function applyLegend(doc, legend) {
    /* The legend's layer titles and class names (GET /legend carries both languages). */
    const boxes = doc.querySelectorAll("#legend-list .legend-layer");
    legend.layers.forEach((e, i) => {
      const box = boxes[i];
      if (!box) return;
      const h = box.querySelector("h3");
      if (h) h.textContent = e.title[current] || e.title.zh;
      const items = box.querySelectorAll("li");
      e.classes.slice(0, items.length).forEach((c, k) => {
        const last = items[k].lastChild;
        if (last && last.nodeType === 3) last.nodeValue = (last.previousSibling && last.previousSibling.className === "code" ? " " : c.code + " ") + (c[current] || c.zh);
      });
    });
  }

  function attach(config, lang, onChange, legend) {
    /* Apply ``lang`` (default Chinese) to the page and wire the switch button; returns
       {lang(), set(lang)}; onChange() after every switch (the URL state writes lang=).
       ``legend`` (GET /legend, optional): its titles and class names follow the language. */
    const doc = document;
    const set = (l) => {
      current = LANGS.includes(l) ? l : "zh";
      applyPage(doc);
      applyLayers(doc, config);
      if (legend) applyLegend(doc, legend);
      doc.dispatchEvent(new CustomEvent("geobase:lang", {detail: current}));  // modules redraw their own texts
    };
    set(lang);
    const btn = doc.getElementById("lang-switch");
    if (btn) btn.addEventListener("click", () => { set(current === "zh" ? "en" : "zh"); onChange(); });
    return {lang: () => current, set: (l) => { set(l); onChange(); }};
  }

  return {attach, t, say, LANGS, WORDS, TARGETS, lang: () => current};
});
