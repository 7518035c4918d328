/* What a feature's attributes are called and what its codes mean, for the identify list and
   the attribute table: read from GET /collections/{id}/schema (per caller: masked attributes
   are not in it, nor in the features), cached per layer for the page's life.
   window.geobaseAttributes = {schema, columns, display, titleOf}. */
(function () {
  "use strict";
  const cache = new Map();

  function schema(name, getJSON) {
    /* The layer's Part 5 schema, fetched once (the promise is cached, so concurrent callers
       share one request). */
    if (!cache.has(name)) {
      const p = getJSON("/collections/" + encodeURIComponent(name) + "/schema");
      p.catch(() => cache.delete(name));  // a failed fetch is retried next time
      cache.set(name, p);
    }
    return cache.get(name);
  }

  function titleOf(prop, key) {
    /* The Chinese title when the schema has one, else the attribute's own name. */
    return (prop && prop["x-title"] && prop["x-title"].zh) || key;
  }

  function columns(doc) {
    /* The schema's properties in their declared order, without the id and the geometry
       (which the table and the list show in their own way). */
    const props = (doc && doc.properties) || {};
    return Object.entries(props)
      .filter(([, p]) => p["x-ogc-role"] !== "id" && p["x-ogc-role"] !== "primary-geometry")
      .sort(([, a], [, b]) => (a["x-ogc-propertySeq"] ?? 1e9) - (b["x-ogc-propertySeq"] ?? 1e9))
      .map(([key, p]) => ({key, title: titleOf(p, key), prop: p}));
  }

  function display(prop, value) {
    /* A value as a planner reads it: a code with its code-list name ("0101 水田"), numbers
       rounded to two decimals, nothing for null. An unknown code is shown raw, never hidden. */
    if (value == null) return "";
    const names = prop && prop["x-ogc-codelistTitles"];
    if (names && Object.prototype.hasOwnProperty.call(names, String(value))) {
      return String(value) + " " + String(names[String(value)]).split(" / ")[0];
    }
    if (typeof value === "number" && !Number.isInteger(value)) return String(Math.round(value * 100) / 100);
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  const api = {schema, columns, display, titleOf};
  if (typeof module !== "undefined" && module.exports) module.exports = api;  // node: tested there
  else window.geobaseAttributes = api;
})();
