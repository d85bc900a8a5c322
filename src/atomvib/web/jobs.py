"""Calculations started in the app: ordinary batch runs, one structure each, recorded in the store.

Choice (first version): a small pool of threads in the app process, each taking a job off a queue and calling
:func:`atomvib.batch.run_batch` for its one uploaded file with the ``phonons`` task. The forces are computed by
Dask workers of one client the app keeps (a ``LocalCluster`` of ``workers`` processes made on first use, or the
``--scheduler`` given): a calculation never runs in the web server's process, a worker that dies is retried or
recorded as failed by the batch layer, and the result is the same row, in the same store, with the same files,
as ``atomvib batch FILE --tasks phonons`` would make; ``atomvib db list`` shows it. The thread only waits on
Dask and writes the row (the batch driver is the store's only writer).

A job file ``DATA/jobs/<id>.json`` keeps what the app needs besides the row: the user's file name, the settings,
and an error that happened before a row existed (an engine that is not installed). The row is found again by
exactly what keys it: structure hash, task, engine spec and the settings as the batch records them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import secrets
import threading
import time
from pathlib import Path

from ..errors import AtomvibError
from ..settings import PhononSettings
from .files import ID_RE, Upload, one_line

log = logging.getLogger("atomvib.web")

TASK = "phonons"


class JobManager:
    """Queue, run and look up the app's calculations.

    Parameters
    ----------
    data_dir : Path
        ``jobs/`` and (by default) the result files ``results/`` live here.
    db : str
        Store URL or SQLite path (the same value ``atomvib db --db`` takes).
    workers : int, optional
        Local Dask worker processes (default 1); ignored with ``scheduler``.
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``).
    parallel : int
        Jobs driven at the same time (threads; each drives one batch run).
    """

    def __init__(self, data_dir, db: str, *, workers: int | None = 1, scheduler: str | None = None,
                 parallel: int = 1, results_dir=None):
        from ..store import Store

        self.data_dir = Path(data_dir)
        self.dir = self.data_dir / "jobs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db = db
        self.results_dir = Path(results_dir) if results_dir else self.data_dir / "results"
        self.workers, self.scheduler = workers, scheduler
        self.store = Store(db)  # created here: a database that cannot be opened fails at start, in one line
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._client = self._cluster = None
        self._threads: list[threading.Thread] = []
        self._parallel = max(1, int(parallel))
        self._closed = False
        self._requeue_unfinished()

    # -- jobs -----------------------------------------------------------------------------------
    def _path(self, job_id: str) -> Path:
        if not ID_RE.match(job_id or ""):
            raise KeyError(job_id)
        return self.dir / f"{job_id}.json"

    def _write(self, job: dict) -> None:
        p = self._path(job["id"])
        tmp = p.with_name(f".{job['id']}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(job))
        tmp.replace(p)

    def _read(self, job_id: str) -> dict:
        return json.loads(self._path(job_id).read_text())

    def submit(self, upload: Upload, structure, settings: PhononSettings) -> dict:
        """Queue the phonons of ``upload``; returns the job record."""
        from ..engines import default_engine_spec
        from ..store import canonical_hash

        spec = settings.engine or default_engine_spec(structure.is_molecule)
        tset = dataclasses.replace(settings, engine=spec)
        job = {
            "id": secrets.token_hex(16),
            "created": time.time(),
            "name": upload.name,
            "upload": upload.id,
            "path": str(upload.path),
            "formula": structure.formula,
            "natoms": structure.natoms,
            "kind": structure.kind,
            "structure_hash": canonical_hash(structure, settings.symprec),
            "engine": spec,
            "settings": settings.to_dict(),
            # exactly what the batch records (runner.run_batch: json.dumps(tset.to_dict())): finds the row
            "settings_json": json.dumps(tset.to_dict()),
            "state": "queued",
            "error": "",
        }
        self._write(job)
        self._start_threads()
        self._queue.put(job["id"])
        return job

    def _requeue_unfinished(self) -> None:
        """Jobs a previous app process queued or was running go back on the queue (the batch resumes them)."""
        pending = []
        for p in sorted(self.dir.glob("*.json")):
            try:
                job = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if job.get("state") in ("queued", "running") and ID_RE.match(job.get("id", "")):
                pending.append((job.get("created", 0), job["id"]))
        for _, jid in sorted(pending):
            self._queue.put(jid)
        if pending:
            self._start_threads()

    def _start_threads(self) -> None:
        with self._lock:
            while len(self._threads) < self._parallel:
                t = threading.Thread(target=self._work, name=f"atomvib-web-job-{len(self._threads)}", daemon=True)
                t.start()
                self._threads.append(t)

    def _work(self) -> None:
        while not self._closed:
            try:
                job_id = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if job_id is None:
                break
            try:
                self._run(job_id)
            except Exception:  # never let a job take the worker thread (and the app's jobs) down
                log.exception("job %s", job_id)
            finally:
                self._queue.task_done()

    def _run(self, job_id: str) -> None:
        from ..batch import run_batch

        job = self._read(job_id)
        job["state"], job["started"] = "running", time.time()
        self._write(job)
        settings = PhononSettings(**_settings_kwargs(job["settings"]))
        try:
            summary = run_batch([job["path"]], tasks=[TASK], settings=settings, db=self.db,
                                results_dir=self.results_dir, client=self.client(), quiet=True,
                                command=f"atomvib serve: job {job_id} ({job['name']})")
            job["state"] = "finished"
            job["batch"] = {"done": summary.done, "failed": summary.failed, "already_done": summary.already_done}
        except AtomvibError as exc:
            job["state"], job["error"] = "failed", one_line(exc, Path(job["path"]), job["name"])
        except Exception as exc:  # a bug or a lost cluster: the job fails in words, the app keeps serving
            log.exception("job %s failed", job_id)
            job["state"], job["error"] = "failed", f"{type(exc).__name__}: {one_line(exc)}"
            self._drop_client()
        job["ended"] = time.time()
        self._write(job)

    # -- Dask -------------------------------------------------------------------------------------
    def client(self):
        """The app's Dask client, made on first use (a LocalCluster of ``workers`` processes or ``scheduler``)."""
        with self._lock:
            if self._client is None:
                from ..batch import make_client

                self._client, self._cluster = make_client(self.workers, self.scheduler, quiet=True)
            return self._client

    def _drop_client(self) -> None:
        with self._lock:
            client, cluster, self._client, self._cluster = self._client, self._cluster, None, None
        for x in (client, cluster):
            try:
                if x is not None:
                    x.close()
            except Exception:  # already gone
                pass

    def close(self) -> None:
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        self._drop_client()
        self.store.close()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until no job is queued or running (tests, shutdown); False on timeout."""
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.1)
        return False

    # -- views ------------------------------------------------------------------------------------
    def _row(self, job: dict):
        from sqlalchemy import select
        from sqlalchemy.orm import Session

        from ..store.models import CalculationRow

        q = (select(CalculationRow)
             .where(CalculationRow.structure_hash == job["structure_hash"], CalculationRow.task == TASK,
                    CalculationRow.engine == job["engine"], CalculationRow.settings_json == job["settings_json"])
             .order_by(CalculationRow.created.desc()))
        with Session(self.store.engine) as s:
            row = s.scalars(q).first()
            if row is not None:
                s.expunge(row)
            return row

    def view(self, job_id: str) -> dict:
        """The job as the pages show it: status from the store row when there is one."""
        job = self._read(job_id)
        out = {k: job.get(k) for k in ("id", "name", "formula", "natoms", "kind", "engine", "created", "error")}
        out["settings"] = {k: job["settings"].get(k) for k in ("relax", "min_supercell_length_a")}
        row = None
        if job.get("state") != "queued":
            try:
                row = self._row(job)
            except AtomvibError as exc:
                out["error"] = out["error"] or str(exc)
        if job.get("state") == "failed" or row is None:
            out["status"] = {"queued": "queued", "running": "starting"}.get(job.get("state"), "failed")
            if out["status"] == "failed" and not out["error"]:
                out["error"] = "the batch run recorded no calculation"
            out["key"] = None
        else:
            out["status"], out["key"], out["error"] = row.status, row.key, row.error or ""
            out["seconds"] = row.seconds
            out["started"] = row.started
            if row.status == "running" and row.started:
                out["elapsed"] = time.time() - row.started
            if row.status == "pending" and job.get("state") == "finished":
                out["status"] = "pending"
        out["error"] = (out["error"] or "").splitlines()[0] if out["error"] else ""
        return out

    def list(self, limit: int = 200) -> list[dict]:
        jobs = []
        for p in self.dir.glob("*.json"):
            try:
                jobs.append((p.stat().st_mtime, p.stem))
            except OSError:
                continue
        out = []
        for _, jid in sorted(jobs, reverse=True)[:limit]:
            try:
                out.append(self.view(jid))
            except (OSError, ValueError, KeyError):
                continue
        out.sort(key=lambda j: j.get("created") or 0, reverse=True)
        return out


def _settings_kwargs(d: dict) -> dict:
    """PhononSettings keyword arguments from its ``to_dict()`` (lists back to tuples)."""
    fields = {f.name for f in dataclasses.fields(PhononSettings)}
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields}
