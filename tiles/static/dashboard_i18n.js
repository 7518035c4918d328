/* The dashboard's words in Chinese (the default) and English, like the map's i18n.js: one
   dictionary, elements named by data-i18n / data-i18n-placeholder; indicator and division names
   come from the server (name_zh / name_en, the township layer's names). The choice is the URL's
   lang=en, so a shared link opens in the sender's language.
   Plain script: window.geobaseDashboardI18n in the page, module.exports under node. */
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.geobaseDashboardI18n = factory();
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";
  const LANGS = ["zh", "en"];
  const WORDS = {
    "title": ["规划实施监测 · geobase", "Plan monitoring · geobase"],
    "heading": ["国土空间规划实施监测", "Spatial plan implementation monitoring"],
    "indicator": ["指标", "Indicator"],
    "division": ["行政区", "Division"],
    "key.placeholder": ["API 密钥", "API key"],
    "key.use": ["使用", "Use"],
    "key.set": ["已设置密钥", "Key set"],
    "key.public": ["公开身份", "Public"],
    "lang.switch": ["English", "中文"],
    "map.link": ["一张图", "One map"],
    "map.title": ["分乡镇专题图", "By township"],
    "chart.title": ["指标变化", "Over versions"],
    "chart.target": ["目标", "Target"],
    "chart.none": ["尚无数值", "No values yet"],
    "chart.note": ["横轴：引起变化的图层版本；虚线：规划目标", "Across: the layer version that changed it; dashed: the planning target"],
    "warnings.title": ["预警", "Warnings"],
    "w.level": ["级别", "Level"],
    "w.indicator": ["指标", "Indicator"],
    "w.division": ["行政区", "Division"],
    "w.value": ["现值 / 目标", "Value / target"],
    "w.cause": ["引起的版本", "Caused by"],
    "w.parcels": ["变化图斑", "Parcels"],
    "w.ack": ["确认", "Acknowledge"],
    "w.acked": ["已确认", "Acknowledged"],
    "w.none": ["没有未解除的预警", "No open warnings"],
    "w.target_import": ["目标导入", "target import"],
    "level.red": ["红色", "Red"],
    "level.yellow": ["黄色", "Yellow"],
    "legend.none": ["无数值", "No value"],
    "status.loading": ["加载中…", "Loading…"],
    "status.ready": ["就绪", "Ready"],
    "status.failed": ["失败：", "Failed: "],
    "status.need_key": ["确认预警需要分析员及以上的密钥", "Acknowledging needs an analyst key"],
    "county": ["全县", "County"],
  };
  function pick(lang) { return LANGS.includes(lang) ? lang : "zh"; }
  function t(key, lang) {
    const w = WORDS[key];
    return w ? w[LANGS.indexOf(pick(lang))] : key;
  }
  function apply(doc, lang) {
    doc.documentElement.lang = pick(lang);
    doc.title = t("title", lang);
    doc.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n, lang); });
    doc.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder, lang); });
    const sw = doc.getElementById("lang-switch");
    if (sw) sw.textContent = t("lang.switch", lang);
  }
  return {LANGS, WORDS, t, apply, pick};
});
