// Job list: the app's jobs and every calculation of the store, polled every 2 s (fetch, no page reload); a running
// job shows its progress from the store (displacements done / total, ETA) as a bar.
"use strict";
(function () {
  const A = window.atomvib;

  function when(t) {
    if (!t) return "";
    const d = typeof t === "number" ? new Date(t * 1000) : new Date(t);
    return d.toLocaleString();
  }

  function resultCell(tr, key, status, error) {
    const td = document.createElement("td");
    if (status === "done" && key) {
      const a = A.text("a", "open result");
      a.href = "/results/" + key;
      a.className = "result-link";
      td.appendChild(a);
    } else if (error) {
      td.appendChild(A.text("span", error, "error-text"));
    }
    tr.appendChild(td);
  }

  function duration(s) {
    if (s === null || s === undefined) return "";
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + String(s % 60).padStart(2, "0") + " s";
    return Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " min";
  }

  // "forces 3 / 12 displaced cells, about 40 s left" with a bar; a relaxation counts its steps (no ETA: the
  // step count is a limit, not a total)
  function progressCell(p, elapsed) {
    const td = document.createElement("td");
    td.className = "progress-cell";
    const words = [];
    if (p && p.total) {
      const bar = document.createElement("progress");
      bar.max = p.total;
      bar.value = p.done || 0;
      td.appendChild(bar);
      const what = p.unit === "calc" ? "displacements" : (p.unit === "step" ? "relaxation steps (at most)" : p.unit);
      words.push((p.done || 0) + " / " + p.total + " " + what);
      if (p.unit === "calc" && p.eta_s !== null && p.eta_s !== undefined) words.push("ETA " + duration(p.eta_s));
    } else if (p && p.stage) {
      words.push(p.stage);
    }
    if (elapsed) words.push(duration(elapsed) + " so far");
    const span = A.text("span", words.join(", "), "progress-text");
    if (p && p.stage) span.title = p.stage;
    td.appendChild(span);
    if (p) {
      td.dataset.done = String(p.done === null || p.done === undefined ? "" : p.done);
      td.dataset.total = String(p.total === null || p.total === undefined ? "" : p.total);
    }
    return td;
  }

  function renderJobs(jobs) {
    const body = document.querySelector("#jobs tbody");
    body.innerHTML = "";
    if (!jobs.length) {
      const tr = document.createElement("tr");
      const td = A.text("td", "no jobs yet: start one on the New calculation page");
      td.colSpan = 7;
      tr.appendChild(td);
      body.appendChild(tr);
    }
    for (const j of jobs) {
      const tr = document.createElement("tr");
      tr.dataset.job = j.id;
      tr.dataset.status = j.status;
      if (j.key) tr.dataset.key = j.key;
      tr.appendChild(A.text("td", when(j.created)));
      tr.appendChild(A.text("td", j.name));
      tr.appendChild(A.text("td", j.formula + " (" + j.natoms + " atoms)"));
      tr.appendChild(A.text("td", j.engine));
      tr.appendChild(A.text("td", j.status, "status " + j.status));
      if (j.status === "running") {
        tr.appendChild(progressCell(j.progress, j.elapsed));
      } else {
        tr.appendChild(A.text("td", j.seconds ? j.seconds.toFixed(1) + " s" : ""));
      }
      resultCell(tr, j.key, j.status, j.error);
      body.appendChild(tr);
    }
  }

  function renderCalcs(rows) {
    const body = document.querySelector("#calcs tbody");
    body.innerHTML = "";
    for (const c of rows) {
      const tr = document.createElement("tr");
      tr.dataset.key = c.key;
      tr.appendChild(A.text("td", when(c.finished)));
      tr.appendChild(A.text("td", c.formula || c.source));
      tr.appendChild(A.text("td", c.task));
      tr.appendChild(A.text("td", c.engine));
      tr.appendChild(A.text("td", c.status, "status " + c.status));
      tr.appendChild(A.text("td", c.omega_max_thz === null ? "" : A.fmt(c.omega_max_thz, 2)));
      tr.appendChild(A.text("td", c.has_imaginary === null ? "" : (c.has_imaginary ? "yes" : "no")));
      if (c.status === "running" && c.progress) tr.appendChild(progressCell(c.progress, null));
      else tr.appendChild(A.text("td", c.seconds === null ? "" : A.fmt(c.seconds, 1)));
      resultCell(tr, c.task === "phonons" ? c.key : null, c.status, c.error);
      body.appendChild(tr);
    }
  }

  async function refresh() {
    try {
      const [j, c] = await Promise.all([A.api("/api/jobs"), A.api("/api/calculations")]);
      renderJobs(j.jobs);
      renderCalcs(c.calculations);
      A.showError(null);
    } catch (e) { A.showError(e.message); }
  }
  refresh();
  setInterval(refresh, 2000);
})();
