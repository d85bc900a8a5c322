// Spectra page: INS of a saved result, recomputed (from the saved force constants) on every parameter change.
"use strict";
(function () {
  const A = window.atomvib;
  const form = document.getElementById("ins-form");
  const key = form.dataset.key;
  const direct = ["arcs", "sequoia", "maps", "mari", "merlin", "generic"];
  let seq = 0;

  async function update() {
    const inst = document.getElementById("instrument").value;
    const isDirect = direct.includes(inst);
    form.querySelectorAll(".direct").forEach(e => { e.hidden = !isDirect; });
    form.querySelectorAll(".indirect").forEach(e => { e.hidden = isDirect; });
    const q = new URLSearchParams({ instrument: inst, order: document.getElementById("order").value,
                                    temperature: document.getElementById("temperature").value });
    if (isDirect) q.set("ei", document.getElementById("ei").value);
    else q.set("bank", document.getElementById("bank").value);
    const emax = document.getElementById("emax").value;
    if (emax) q.set("emax", emax);
    const status = document.getElementById("ins-status");
    const mine = ++seq;
    status.textContent = "computing…";
    status.dataset.state = "running";
    try {
      const r = await A.api("/api/results/" + key + "/ins?" + q.toString());
      if (mine !== seq) return;
      A.showError(null);
      await A.plot("ins", r.figure);
      status.textContent = r.instrument.toUpperCase() + " on a " + r.mesh.join("×") + " mesh in " + r.ms.toFixed(0) + " ms" +
        (r.strongest_peak_mev ? "; strongest peak at " + r.strongest_peak_mev.toFixed(1) + " meV" : "");
      status.dataset.state = "done";
    } catch (e) {
      if (mine !== seq) return;
      status.textContent = "";
      status.dataset.state = "failed";
      A.showError(e.message);
    }
  }
  form.addEventListener("change", update);
  form.addEventListener("submit", ev => { ev.preventDefault(); update(); });
  update();
})();
