// New calculation: upload or example → structure facts + 3D view → predictor preview → submit a job.
"use strict";
(function () {
  const A = window.atomvib;
  let current = null;

  function showStructure(s) {
    current = s;
    document.getElementById("structure-card").hidden = false;
    document.getElementById("submit-card").hidden = false;
    document.getElementById("s-name").textContent = s.name;
    document.getElementById("s-formula").textContent = s.formula;
    document.getElementById("s-spacegroup").textContent = s.spacegroup || "—";
    document.getElementById("s-natoms").textContent = s.natoms;
    document.getElementById("s-kind").textContent = s.kind;
    document.getElementById("s-cell").textContent = s.cell_lengths_a ? s.cell_lengths_a.map(x => x.toFixed(3)).join(", ") : "—";
    A.viewer("viewer", s.view);
    if (s.kind === "molecule" && document.getElementById("engine").value.startsWith("sevennet")) {
      document.getElementById("engine").value = "xtb";
    }
    preview(s.id);
  }

  async function preview(id) {
    const status = document.getElementById("preview-status");
    status.textContent = "predicting…";
    status.dataset.state = "running";
    const t0 = performance.now();
    try {
      const p = await A.api("/api/structures/" + id + "/preview");
      if (!current || current.id !== id) return;
      A.plot("preview-dos", p.figures.dos);
      A.plot("preview-cv", p.figures.cv);
      const ms = performance.now() - t0;
      let msg = "C_v(300 K) = " + p.cv_300k[0].toFixed(2) + " ± " + p.cv_300k[1].toFixed(2) + " J/K/mol " + p.basis +
        "; predicted in " + p.predict_ms.toFixed(0) + " ms (" + ms.toFixed(0) + " ms in the browser)";
      if (!p.in_distribution) msg += ". Out of the training distribution: " + p.ood_reason + " — trust the calculation, not the preview.";
      status.textContent = msg;
      status.dataset.state = "done";
      status.dataset.ms = String(Math.round(ms));
    } catch (e) {
      status.textContent = "no preview: " + e.message;
      status.dataset.state = "failed";
      document.getElementById("preview-dos").hidden = true;
      document.getElementById("preview-cv").hidden = true;
    }
  }

  async function upload(file) {
    A.showError(null);
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      showStructure(await A.api("/api/structures", { method: "POST", body: form }));
    } catch (e) {
      current = null;
      document.getElementById("structure-card").hidden = true;
      document.getElementById("submit-card").hidden = true;
      A.showError(e.message);
    }
  }

  async function example(name) {
    A.showError(null);
    try {
      showStructure(await A.api("/api/structures/example", { method: "POST", json: { name: name } }));
    } catch (e) { A.showError(e.message); }
  }

  document.getElementById("file").addEventListener("change", ev => {
    if (ev.target.files.length) upload(ev.target.files[0]);
  });
  const drop = document.getElementById("drop");
  ["dragenter", "dragover"].forEach(t => drop.addEventListener(t, ev => { ev.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach(t => drop.addEventListener(t, ev => { ev.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", ev => { if (ev.dataTransfer.files.length) upload(ev.dataTransfer.files[0]); });
  document.querySelectorAll("button.example").forEach(b => b.addEventListener("click", () => example(b.dataset.name)));

  document.getElementById("job-form").addEventListener("submit", async ev => {
    ev.preventDefault();
    if (!current) return;
    A.showError(null);
    const btn = document.getElementById("submit");
    btn.disabled = true;
    try {
      await A.api("/api/jobs", { method: "POST", json: {
        upload: current.id,
        engine: document.getElementById("engine").value.trim(),
        relax: document.getElementById("relax").checked,
        min_length: parseFloat(document.getElementById("min-length").value),
      } });
      window.location.href = "/jobs";
    } catch (e) {
      A.showError(e.message);
    } finally { btn.disabled = false; }
  });
})();
