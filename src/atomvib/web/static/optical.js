// IR and Raman page of a molecule: the mode intensities are computed once on the server; every parameter change
// only asks for the spectrum broadened again. Raman is computed on the app's workers when the button asks for it.
"use strict";
(function () {
  const A = window.atomvib;
  const form = document.getElementById("optical-form");
  const key = form.dataset.key;
  const seq = { ir: 0, raman: 0 };
  let ramanPoll = null;

  function query(kind) {
    const q = new URLSearchParams({ kind: kind, fwhm: document.getElementById("fwhm").value || "10",
                                    shape: document.getElementById("shape").value });
    const xmin = document.getElementById("xmin").value, xmax = document.getElementById("xmax").value;
    if (xmin) q.set("xmin", xmin);
    if (xmax) q.set("xmax", xmax);
    const laser = document.getElementById("laser").value;
    if (kind === "raman" && laser) q.set("laser_nm", laser);
    return q.toString();
  }

  function strongest(modes, unit) {
    const top = modes.slice().sort((a, b) => b.intensity - a.intensity).slice(0, 3);
    return top.map(m => m.frequency_cm1.toFixed(0) + " cm⁻¹ (" + m.intensity.toPrecision(3) + " " + unit + ")").join(", ");
  }

  async function load(kind) {
    const status = document.getElementById(kind + "-status");
    const mine = ++seq[kind];
    status.dataset.state = "running";
    try {
      const r = await A.api("/api/results/" + key + "/optical?" + query(kind));
      if (mine !== seq[kind]) return;
      A.showError(null);
      status.dataset.state = r.state;
      const button = document.getElementById("raman-start");
      if (kind === "raman") button.hidden = true;
      if (r.state === "unavailable") {
        status.textContent = r.reason;
        document.getElementById(kind).hidden = true;
        return;
      }
      if (kind === "raman" && r.state !== "done") {
        document.getElementById("raman").hidden = true;
        if (r.state === "running") {
          status.textContent = "computing the polarizability derivatives with " + r.engine + " on the app's workers (" +
            r.engine_calls + " SCF runs), " + Math.round(r.elapsed || 0) + " s so far…";
          clearTimeout(ramanPoll);
          ramanPoll = setTimeout(() => load("raman"), 2000);
        } else {
          status.textContent = (r.state === "failed" ? "the Raman calculation failed: " + r.error + ". " : "") +
            "Raman activities need the polarizability derivatives: " + r.engine_calls + " SCF runs with " + r.engine +
            " on the app's workers, once.";
          button.hidden = false;
        }
        return;
      }
      await A.plot(kind, r.figure);
      status.textContent = (kind === "ir" ? "IR" : "Raman") + " intensities in " + r.unit + "; strongest: " +
        strongest(r.modes, r.unit) + " (broadened in " + r.ms.toFixed(0) + " ms)";
      status.dataset.ms = String(r.ms);
    } catch (e) {
      if (mine !== seq[kind]) return;
      status.dataset.state = "failed";
      status.textContent = "";
      A.showError(e.message);
    }
  }

  document.getElementById("raman-start").addEventListener("click", async () => {
    try {
      await A.api("/api/results/" + key + "/raman", { method: "POST" });
      load("raman");
    } catch (e) { A.showError(e.message); }
  });
  function update() { load("ir"); load("raman"); }
  form.addEventListener("change", update);
  form.addEventListener("submit", ev => { ev.preventDefault(); update(); });
  update();
})();
