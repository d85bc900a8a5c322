// Shared helpers of the atomvib pages: requests to the app's API, one-line errors, the 3D viewer.
"use strict";

window.atomvib = (function () {
  function showError(msg) {
    const el = document.getElementById("error");
    if (!el) return;
    if (!msg) { el.hidden = true; el.textContent = ""; return; }
    el.textContent = msg;           // text, never HTML: messages may quote a file name
    el.hidden = false;
  }

  // fetch JSON; a state-changing request carries X-Atomvib (the app refuses it otherwise)
  async function api(url, opts) {
    opts = opts || {};
    const headers = Object.assign({}, opts.headers || {});
    if (opts.method && opts.method !== "GET") headers["X-Atomvib"] = "1";
    if (opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(opts.json);
    }
    const resp = await fetch(url, { method: opts.method || "GET", headers: headers, body: opts.body,
                                    credentials: "same-origin" });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) {
      const msg = (data && data.error) ? data.error : ("request failed: HTTP " + resp.status);
      const err = new Error(msg);
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  function plot(id, fig) {
    const el = document.getElementById(id);
    el.hidden = false;
    return Plotly.react(el, fig.data, fig.layout, fig.config || { responsive: true, displaylogo: false });
  }

  // a structure in 3Dmol.js: ball and stick, with the unit cell of a crystal
  function viewer(id, view) {
    const el = document.getElementById(id);
    if (!el || typeof $3Dmol === "undefined") return null;
    el.innerHTML = "";
    try {
      const v = $3Dmol.createViewer(el, { backgroundColor: "white" });
      const m = v.addModel(view.text, view.format);
      v.setStyle({}, { sphere: { scale: 0.3 }, stick: { radius: 0.15 } });
      if (view.format === "cif" || view.cell) { try { v.addUnitCell(m); } catch (e) { /* no cell */ } }
      v.zoomTo();
      v.render();
      return v;
    } catch (e) {  // no WebGL in this browser: the facts and plots still work
      el.textContent = "the 3D view needs WebGL, which this browser does not offer";
      return null;
    }
  }

  function fmt(x, digits) {
    if (x === null || x === undefined || Number.isNaN(x)) return "";
    return Number(x).toFixed(digits === undefined ? 3 : digits);
  }

  function text(tag, content, cls) {
    const el = document.createElement(tag);
    if (content !== undefined && content !== null) el.textContent = String(content);
    if (cls) el.className = cls;
    return el;
  }

  return { showError: showError, api: api, plot: plot, viewer: viewer, fmt: fmt, text: text };
})();
