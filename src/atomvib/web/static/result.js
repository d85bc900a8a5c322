// Result page: dispersion with DOS (total and partial, toggled) beside it, thermal properties, structure, downloads;
// a committee's mean with its 90 % band; a molecule's normal modes (click to animate).
"use strict";
(function () {
  const A = window.atomvib;
  const key = document.getElementById("result").dataset.key;

  function fact(table, name, value) {
    const tr = document.createElement("tr");
    tr.appendChild(A.text("th", name));
    tr.appendChild(A.text("td", value));
    table.appendChild(tr);
  }

  async function load() {
    const status = document.getElementById("status");
    const t0 = performance.now();
    let r;
    try {
      r = await A.api("/api/results/" + key);
    } catch (e) {
      status.textContent = "";
      A.showError(e.message);
      return;
    }
    document.getElementById("title").textContent = r.formula + " — " + r.engine;
    const facts = document.getElementById("facts");
    fact(facts, "formula", r.formula);
    fact(facts, "engine", r.engine);
    fact(facts, "atoms (analysed cell)", r.natoms);
    if (r.kind === "committee") {
      const pm = (x) => A.fmt(x.mean, 2) + " ± " + A.fmt(x.std, 2);
      fact(facts, "committee", r.engines.join(", "));
      fact(facts, "space group", r.spacegroup);
      fact(facts, "ω_max", A.fmt(r.omega_max_thz, 3) + " ± " + A.fmt(r.omega_max_std_thz, 3) + " THz (members " +
           r.omega_max_members_thz.map(x => x.toFixed(3)).join(", ") + ")");
      fact(facts, "σ", r.calibration.calibrated ? "members' spread × calibrated scale (band: mean ± 1.645 σ, 90 %)" :
           "members' spread, uncalibrated for this set of engines (band: mean ± 1.645 σ)");
      const th = r.thermal && r.thermal.per_formula_unit ? r.thermal.per_formula_unit : r.thermal;
      if (th && th.temperature_K !== undefined && th.entropy_J_per_K_per_mol) {
        fact(facts, "at " + th.temperature_K + " K", "S " + pm(th.entropy_J_per_K_per_mol) + " J/K/mol, Cv " +
             pm(th.heat_capacity_J_per_K_per_mol) + " J/K/mol, F " + pm(th.free_energy_kJ_per_mol) + " kJ/mol " +
             (th.basis || ""));
      }
      if (r.has_imaginary) {
        const w = document.getElementById("instability");
        w.textContent = "Imaginary modes in " + r.imaginary_members.join(", ") + ".";
        w.hidden = false;
      }
      await A.plot("dispersion", r.figures.dispersion);
      await A.plot("thermal", r.figures.thermal);
      document.getElementById("dispersion").dataset.branches = String(r.figures.dispersion.n_branches);
      document.getElementById("hover-q").textContent = "the band around each branch and the DOS is the committee's " +
        "90 % interval (mean ± 1.645 σ); each member's DOS is in the legend";
      document.getElementById("mode-label").hidden = true;
    } else if (r.kind === "crystal") {
      fact(facts, "space group", r.spacegroup);
      fact(facts, "ω_max", A.fmt(r.omega_max_thz, 3) + " THz");
      fact(facts, "lowest frequency", A.fmt(r.min_frequency_thz, 3) + " THz");
      fact(facts, "q-mesh", r.mesh.join("×"));
      fact(facts, "displacements", r.n_displacements);
      const th = r.thermal && r.thermal.per_formula_unit ? r.thermal.per_formula_unit : r.thermal;
      if (th && th.temperature_K !== undefined) {
        fact(facts, "at " + th.temperature_K + " K", "S " + A.fmt(th.entropy_J_per_K_per_mol, 2) + " J/K/mol, Cv " +
             A.fmt(th.heat_capacity_J_per_K_per_mol, 2) + " J/K/mol, F " + A.fmt(th.free_energy_kJ_per_mol, 3) +
             " kJ/mol " + (th.basis || ""));
      }
      if (r.has_imaginary) {
        const w = document.getElementById("instability");
        w.textContent = "Dynamically unstable: " + r.instability + " (red points in the dispersion).";
        w.hidden = false;
      }
      const disp = r.figures.dispersion;
      await A.plot("dispersion", disp);
      await A.plot("thermal", r.figures.thermal);
      const el = document.getElementById("dispersion");
      el.dataset.branches = String(disp.n_branches);
      el.on("plotly_click", ev => {
        const p = ev.points[0];
        const meta = p.data.meta || {};
        if (meta.kind !== "branch" || p.customdata === undefined || p.customdata === null) return;
        showMode(p.customdata, meta.band);
      });
      el.on("plotly_hover", ev => {
        const p = ev.points[0];
        if (p.customdata === undefined || p.customdata === null) return;
        const q = disp.qpoints[p.customdata];
        document.getElementById("hover-q").textContent =
          "q = (" + q.map(x => x.toFixed(3)).join(", ") + ")  ν = " + p.y.toFixed(3) + " THz";
      });
    } else {
      document.getElementById("dispersion").hidden = true;
      document.getElementById("thermal").hidden = true;
      document.getElementById("hover-q").hidden = true;
      document.getElementById("svg").parentElement.hidden = true;
      fact(facts, "normal modes", r.modes.length + (r.linear ? " (linear molecule)" : ""));
      fact(facts, "zero-point energy", A.fmt(r.zero_point_energy_ev, 4) + " eV");
      fact(facts, "displaced geometries", r.n_displacements);
      if (r.has_imaginary) {
        const w = document.getElementById("instability");
        w.textContent = "Imaginary modes (negative frequencies, in red): the geometry is not a minimum.";
        w.hidden = false;
      }
      await A.plot("modes", r.figures.modes);
      document.getElementById("modes").on("plotly_click", ev => {
        const meta = ev.points[0].data.meta || {};
        if (meta.kind === "mode") showNormalMode(meta.mode);
      });
      document.getElementById("molecule-modes").hidden = false;
      document.getElementById("ir-note").textContent = r.ir_available ?
        "IR intensities from the dipole derivatives the calculation stored. Click a mode to animate it." :
        r.ir_reason + ". Click a mode to animate it.";
      const body = document.querySelector("#modes-table tbody");
      for (const m of r.modes) {
        const tr = document.createElement("tr");
        tr.dataset.mode = String(m.index);
        tr.appendChild(A.text("td", m.index + 1));
        tr.appendChild(A.text("td", A.fmt(m.frequency_cm1, 1), m.frequency_cm1 < 0 ? "error-text" : ""));
        tr.appendChild(A.text("td", m.ir_km_per_mol === null ? "" : m.ir_km_per_mol.toPrecision(3)));
        const td = document.createElement("td");
        const b = A.text("button", "animate");
        b.type = "button";
        b.className = "example";
        b.addEventListener("click", () => showNormalMode(m.index));
        td.appendChild(b);
        tr.appendChild(td);
        body.appendChild(tr);
      }
      document.getElementById("mode-label").textContent = "click a mode to animate it here";
    }
    A.viewer("viewer", r.view);
    const ul = document.getElementById("downloads");
    for (const name of r.downloads) {
      const li = document.createElement("li");
      const a = A.text("a", name);
      a.href = "/results/" + key + "/files/" + name;
      a.setAttribute("download", "");
      li.appendChild(a);
      ul.appendChild(li);
    }
    const ms = performance.now() - t0;
    status.textContent = "plots drawn in " + ms.toFixed(0) + " ms (server " + r.build_ms.toFixed(0) + " ms)";
    status.dataset.ms = String(Math.round(ms));
    status.dataset.state = "done";
  }

  // a mode of the band path, animated in the 3D view (clicking a band point)
  async function showMode(q, band) {
    const label = document.getElementById("mode-label");
    try {
      const m = await A.api("/api/results/" + key + "/mode?q=" + q + "&band=" + band);
      const v = A.viewer("viewer", { format: "xyz", text: m.xyz, cell: true });
      if (v) {
        v.getModel().vibrate(12, 1, true);
        v.animate({ loop: "backAndForth", interval: 60 });
      }
      label.textContent = "mode: branch " + (m.band + 1) + " at q = (" + m.qpoint.join(", ") + "), ν = " +
        m.frequency_thz.toFixed(3) + " THz (" + m.supercell + "×" + m.supercell + "×" + m.supercell + " cells)";
      label.dataset.band = String(m.band);
    } catch (e) { A.showError(e.message); }
  }
  window.atomvibShowMode = showMode;

  // a normal mode of a molecule, animated in the 3D view (clicking a stick or a row of the table)
  async function showNormalMode(index) {
    const label = document.getElementById("mode-label");
    try {
      const m = await A.api("/api/results/" + key + "/normal-mode?index=" + index);
      const v = A.viewer("viewer", { format: "xyz", text: m.xyz });
      if (v) {
        v.getModel().vibrate(12, 1, true);
        v.animate({ loop: "backAndForth", interval: 60 });
      }
      label.textContent = "mode " + (m.index + 1) + ": " + m.frequency_cm1.toFixed(1) + " cm⁻¹";
      label.dataset.mode = String(m.index);
      document.querySelectorAll("#modes-table tbody tr").forEach(tr => {
        tr.classList.toggle("on", tr.dataset.mode === String(m.index));
      });
    } catch (e) { A.showError(e.message); }
  }
  window.atomvibShowNormalMode = showNormalMode;

  document.getElementById("svg").addEventListener("click", () => {
    Plotly.downloadImage(document.getElementById("dispersion"), { format: "svg", filename: "dispersion_" + key });
  });
  load();
})();
