// Job list: the app's jobs and every calculation of the store, polled every 2 s.
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
      const t = j.status === "running" && j.elapsed ? j.elapsed.toFixed(0) + " s so far" : (j.seconds ? j.seconds.toFixed(1) + " s" : "");
      tr.appendChild(A.text("td", t));
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
      tr.appendChild(A.text("td", c.seconds === null ? "" : A.fmt(c.seconds, 1)));
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
