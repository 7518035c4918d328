/* The editing API as the map's editor uses it (OGC API - Features Part 4 on this server): an edit
   session opened on the first change, each change sent with the feature's ETag (If-Match) and
   the session (Edit-Session), the session checked, committed with a message or discarded; and
   the layer's change stream (Server-Sent Events, read with fetch so the API key goes with it,
   resumed with Last-Event-ID). Every answer is {ok, status, body, etag}; a refused one carries
   the server's JSON error (412 conflict, 422 check failed with the check and the feature).
   window.geobaseEditApi = {client(layer, authHeaders), stream(layer, authHeaders, onVersion)}. */
(function () {
  "use strict";
  const enc = encodeURIComponent;

  async function call(method, url, headers, body) {
    const init = {method, headers: Object.assign({Accept: "application/json"}, headers)};
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = init.headers["Content-Type"] || "application/json";
    }
    const r = await fetch(url, init);
    let parsed = null;
    try { parsed = await r.json(); } catch (e) { parsed = null; }
    return {ok: r.ok, status: r.status, body: parsed, etag: r.headers.get("ETag")};
  }

  function client(layer, authHeaders) {
    /* One layer's editing calls; the session is opened when the first change needs it. */
    const base = "/collections/" + enc(layer);
    let session = null;
    const auth = (h) => authHeaders(h || {});
    async function ensureSession() {
      if (session) return {ok: true, id: session};
      const r = await call("POST", base + "/sessions", auth());
      if (r.ok) session = r.body.id;
      return Object.assign(r, {id: session});
    }
    async function change(method, path, etag, body) {
      const s = await ensureSession();
      if (!s.ok) return s;
      const h = {"Edit-Session": session};
      if (etag) h["If-Match"] = etag;
      if (method === "PATCH") h["Content-Type"] = "application/merge-patch+json";
      return call(method, base + "/items/" + path, auth(h), body);
    }
    return {
      session: () => session,
      async feature(id) { return call("GET", base + "/items/" + enc(id), auth({Accept: "application/geo+json"})); },
      async at(bbox) {
        return call("GET", base + "/items?limit=5&bbox=" + bbox.map((v) => v.toFixed(9)).join(","), auth({Accept: "application/geo+json"}));
      },
      patch: (id, etag, body) => change("PATCH", enc(id), etag, body),
      split: (id, etag, line, ids) => change("POST", enc(id) + "/split", etag, {line, ids}),
      merge: (id, etags, others) => change("POST", enc(id) + "/merge", etags.join(", "), {with: others}),
      async check() { return session ? call("POST", base + "/sessions/" + session + "/check", auth()) : {ok: true, status: 200, body: {ok: true, changes: 0}}; },
      async commit(message) {
        const r = await call("POST", base + "/sessions/" + session + "/commit", auth(), {message});
        if (r.ok) session = null;
        return r;
      },
      async discard() {
        if (!session) return {ok: true, status: 200, body: {changes: 0}};
        const r = await call("DELETE", base + "/sessions/" + session, auth());
        session = null;  // gone or refused: either way this page starts a new one
        return r;
      },
    };
  }

  function stream(layer, authHeaders, onVersion) {
    /* Read /collections/{layer}/changes/stream for as long as the page wants it (the server ends
       a stream every ~50 s: read again from the last event). Returns {stop()}. */
    const ctl = new AbortController();
    let last = null, stopped = false;
    async function once() {
      const h = authHeaders({Accept: "text/event-stream"});
      if (last != null) h["Last-Event-ID"] = String(last);
      const r = await fetch("/collections/" + enc(layer) + "/changes/stream", {headers: h, signal: ctl.signal});
      if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
      const reader = r.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) return;
        buf += dec.decode(value, {stream: true});
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
          let id = null, data = null;
          for (const line of block.split("\n")) {
            if (line.startsWith("id: ")) id = Number(line.slice(4));
            else if (line.startsWith("data: ")) data = line.slice(6);
          }
          if (id != null && data) { last = id; onVersion(JSON.parse(data)); }
        }
      }
    }
    (async () => {
      while (!stopped) {
        try { await once(); } catch (e) { if (stopped) return; }
        await new Promise((ok) => setTimeout(ok, 1000));
      }
    })();
    return {stop() { stopped = true; ctl.abort(); }};
  }

  window.geobaseEditApi = {client, stream};
})();
