// Compare page: a measured spectrum against the result: overlay, residual, similarity, fit ± σ.
"use strict";
(function () {
  const A = window.atomvib;
  const form = document.getElementById("compare-form");
  const key = form.dataset.key;

  function row(table, name, value) {
    const tr = document.createElement("tr");
    tr.appendChild(A.text("th", name));
    tr.appendChild(A.text("td", value));
    table.appendChild(tr);
  }

  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    A.showError(null);
    const file = document.getElementById("measured").files[0];
    if (!file) { A.showError("choose a measured spectrum file first"); return; }
    const fd = new FormData();
    fd.append("file", file, file.name);
    fd.append("computed", document.getElementById("computed").value);
    fd.append("units", document.getElementById("units").value);
    const fit = Array.from(form.querySelectorAll("input[name=fit]:checked")).map(x => x.value);
    fd.append("fit", fit.length ? fit.join(",") : "none");
    fd.append("xmin", document.getElementById("xmin").value);
    fd.append("xmax", document.getElementById("xmax").value);
    const status = document.getElementById("compare-status");
    status.textContent = "comparing…";
    status.dataset.state = "running";
    try {
      const r = await A.api("/api/results/" + key + "/compare", { method: "POST", body: fd });
      await A.plot("compare-plot", r.figure);
      const d = r.result;
      const t = document.getElementById("fit-table");
      t.innerHTML = "";
      const s = d.similarity;
      row(t, "measured", d.measured + " (" + d.unit + ", " + d.range.map(x => A.fmt(x, 2)).join("–") + ")");
      row(t, "as computed", "cosine " + A.fmt(s.cosine) + ", pearson " + A.fmt(s.pearson) + ", SIS " + A.fmt(s.sis));
      if (d.fit) {
        const f = d.fit;
        for (const name of ["frequency_scale", "intensity_scale", "background", "background_slope", "broadening_sigma"]) {
          if (!f[name] || !f[name].fitted) continue;
          const tr = document.createElement("tr");
          tr.dataset.param = name;
          tr.appendChild(A.text("th", name));
          tr.appendChild(A.text("td", A.fmt(f[name].value, 4) + " ± " + A.fmt(f[name].std, 4) + (f[name].unit ? " " + f[name].unit : "")));
          t.appendChild(tr);
        }
        row(t, "χ²_red", A.fmt(f.chi2_red, 4));
        const sf = d.similarity_fitted;
        row(t, "after the fit", "cosine " + A.fmt(sf.cosine) + ", pearson " + A.fmt(sf.pearson) + ", SIS " + A.fmt(sf.sis));
      }
      for (const n of d.measured_notes || []) row(t, "note", n);
      t.hidden = false;
      status.textContent = "done";
      status.dataset.state = "done";
    } catch (e) {
      status.textContent = "";
      status.dataset.state = "failed";
      A.showError(e.message);
    }
  });
})();
