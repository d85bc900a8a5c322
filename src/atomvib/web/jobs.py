"""Calculations started in the app: ordinary batch runs, one structure each, recorded in the store.

Choice (first version): a small pool of threads in the app process, each taking a job off a queue and calling
:func:`atomvib.batch.run_batch` for its one uploaded file with the ``phonons`` task. The forces are computed by
Dask workers of one client the app keeps (a ``LocalCluster`` of ``workers`` processes made on first use, or the
``--scheduler`` given): a calculation never runs in the web server's process, a worker that dies is retried or
recorded as failed by the batch layer, and the result is the same row, in the same store, with the same files,
as ``atomvib batch FILE --tasks phonons`` would make; ``atomvib db list`` shows it. The thread only waits on
Dask and writes the row (the batch driver is the store's only writer).

A job file ``DATA/jobs/<id>.json`` keeps what the app needs besides the row: the user's file name, the settings,
its owner (the user's name with ``--users``; never a token), the row's key once the run ended, and an error that
happened before a row existed (an engine that is not installed). The row is found again by exactly what keys it:
structure hash, task, engine spec and the settings as the batch records them.

With users (``per_user``), a user sees only their own jobs, and a calculation's key only when one of their jobs
led to it (:meth:`JobManager.may_read`); everything else answers as if it did not exist. Progress while a job
runs (displacements done, total, ETA) comes from the row, which the batch driver updates (at most once a second)
from what the worker reports: any app process on the same store shows it.
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
    per_user : bool
        Jobs belong to the user who submitted them (see the module docstring).
    """

    def __init__(self, data_dir, db: str, *, workers: int | None = 1, scheduler: str | None = None,
                 parallel: int = 1, results_dir=None, per_user: bool = False):
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
        self.per_user = bool(per_user)
        self._keys: dict[str, str] = {}  # job id → calculation key, once known
        self._readable: dict[str | None, set] = {}  # owner → keys of their jobs (grows; rescanned on a miss)
        self._raman_runs: dict[str, tuple] = {}  # key → (Dask future, start time) of a Raman calculation
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

    def submit(self, upload: Upload, structure, settings: PhononSettings, owner: str | None = None) -> dict:
        """Queue the phonons of ``upload`` for ``owner`` (a user name, or None without users); returns the job."""
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
            "owner": owner,
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
            try:
                row = self._row(job)
            except AtomvibError:
                row = None
            if row is not None:
                job["key"] = row.key
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

    def _visible(self, job: dict, owner: str | None) -> bool:
        return not self.per_user or (owner is not None and job.get("owner") == owner)

    def view(self, job_id: str, owner: str | None = None) -> dict:
        """The job as the pages show it: status (and progress while it runs) from the store row when there is one.

        KeyError for an unknown job, and with users for another user's job."""
        job = self._read(job_id)
        if not self._visible(job, owner):
            raise KeyError(job_id)
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
            self._keys[job["id"]] = row.key
            out["seconds"] = row.seconds
            out["started"] = row.started
            if row.status == "running" and row.started:
                out["elapsed"] = time.time() - row.started
                out["progress"] = progress_view(row)
            if row.status == "pending" and job.get("state") == "finished":
                out["status"] = "pending"
        out["error"] = (out["error"] or "").splitlines()[0] if out["error"] else ""
        return out

    def list(self, limit: int = 200, owner: str | None = None) -> list[dict]:
        """The newest ``limit`` jobs (of ``owner`` with users), newest first."""
        jobs = []
        for p in self.dir.glob("*.json"):
            try:
                jobs.append((p.stat().st_mtime, p.stem))
            except OSError:
                continue
        out = []
        for _, jid in sorted(jobs, reverse=True):
            if len(out) >= limit:
                break
            try:
                out.append(self.view(jid, owner))
            except (OSError, ValueError, KeyError):
                continue
        out.sort(key=lambda j: j.get("created") or 0, reverse=True)
        return out

    def keys_of(self, owner: str | None) -> set[str]:
        """Keys of the calculations that ``owner``'s jobs led to (every job's, without users)."""
        keys = set()
        for p in self.dir.glob("*.json"):
            try:
                job = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(job, dict) or not self._visible(job, owner) or not ID_RE.match(str(job.get("id", ""))):
                continue
            key = job.get("key") or self._keys.get(job["id"])
            if key is None and job.get("state") in ("running", "finished"):
                try:
                    row = self._row(job)
                except (AtomvibError, KeyError):
                    row = None
                if row is not None:
                    key = self._keys[job["id"]] = row.key
            if key:
                keys.add(key)
        return keys

    # -- derived results (Raman) ----------------------------------------------------------------
    def derived(self, key: str, name: str) -> Path:
        """Where the app keeps what it computed from calculation ``key`` (``DATA/derived/<key>/<name>``)."""
        from .files import KEY_RE

        if not KEY_RE.match(key or ""):
            raise KeyError(key)
        return self.data_dir / "derived" / key / name

    def raman(self, key: str, stamp: int) -> dict:
        """State of the Raman derivatives of ``key``: ``{"state": "done" | "running" | "failed" | "none", ...}``."""
        path = self.derived(key, RAMAN_FILE)
        if path.is_file():
            try:
                import numpy as np

                with np.load(path) as z:
                    if int(z["stamp"]) == stamp:
                        return {"state": "done", "path": str(path), "seconds": float(z["seconds"])}
            except (OSError, ValueError, KeyError):
                pass
        with self._lock:
            run = self._raman_runs.get(key)
        if run is None:
            return {"state": "none"}
        fut, started = run
        if fut.status == "pending":
            return {"state": "running", "elapsed": time.time() - started}
        try:
            out = fut.result(timeout=0) if fut.status == "finished" else {"error": f"the task {fut.status}"}
        except Exception as exc:  # a worker that died several times
            out = {"error": f"{type(exc).__name__}: {one_line(exc)}"}
        if out.get("ok") and path.is_file():
            with self._lock:
                self._raman_runs.pop(key, None)
            return self.raman(key, stamp)
        return {"state": "failed", "error": out.get("error") or "the Raman calculation left no file"}

    def start_raman(self, key: str, result_dir: str, spec: str, stamp: int) -> dict:
        """Start the Raman derivatives of ``key`` on the app's Dask workers (once; again after a failure)."""
        state = self.raman(key, stamp)
        if state["state"] in ("done", "running"):
            return state
        fut = self.client().submit(compute_raman_derivatives, result_dir, str(self.derived(key, RAMAN_FILE)), spec,
                                   stamp, key=f"atomvib-raman-{key}-{secrets.token_hex(4)}", pure=False, retries=1)
        with self._lock:
            self._raman_runs[key] = (fut, time.time())
        return {"state": "running", "elapsed": 0.0}

    def may_read(self, key: str, owner: str | None) -> bool:
        """Whether ``owner`` may see calculation ``key``: always without users; with users only when one of the
        owner's jobs led to it."""
        if not self.per_user:
            return True
        if owner is None:
            return False
        if key in self._readable.get(owner, ()):
            return True
        keys = self.keys_of(owner)
        self._readable[owner] = keys
        return key in keys


# -- Raman of a molecule: engine calls on the app's Dask workers, kept under DATA/derived ----------------------

RAMAN_FILE = "raman_dalpha.npz"
#: engines whose polarizability the Raman code computes (finite fields): :func:`atomvib.spectra.raman._dipole_in_field`
RAMAN_ENGINES = ("xtb", "pyscf")


def raman_engine(result) -> tuple[str | None, str]:
    """(engine spec, "") that computes the Raman activities of a molecule result, or (None, why not) in words."""
    from .policy import web_engine_spec

    info = result.engine
    name = getattr(info, "name", None) or (info.get("name") if isinstance(info, dict) else "") or "unknown"
    spec = getattr(info, "spec", None) or (info.get("spec") if isinstance(info, dict) else "") or name
    if name not in RAMAN_ENGINES:
        return None, (f"engine {name} gives no polarizability, so no Raman activities (xtb and pyscf do: run the "
                      "molecule with one of them)")
    try:
        web_engine_spec(spec)
    except AtomvibError:
        return None, f"engine {spec} is not one the web app runs; use `atomvib raman DIR` on the command line"
    return spec, ""


def compute_raman_derivatives(result_dir: str, out_path: str, spec: str, stamp: int) -> dict:
    """Dask task: polarizability derivatives ∂α/∂x (N, 3, 3, 3) Å² of the molecule saved in ``result_dir``, by the
    engine ``spec`` (36N SCF runs), written to ``out_path`` (npz with the stamp of the result it belongs to).

    Returns ``{"ok": True}`` or ``{"error": one line}``; never raises for a computation failure."""
    import os
    import warnings

    import numpy as np

    from ..batch.runner import THREAD_ENV

    for k, v in THREAD_ENV.items():
        os.environ.setdefault(k, v)
    from ..runtime import configure_threads

    configure_threads()
    try:
        from ..engines import get_engine
        from ..results import load
        from ..spectra.raman import FIELD_V_PER_A, polarizability_derivatives

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = load(result_dir)
            t0 = time.perf_counter()
            d = polarizability_derivatives(res.structure, get_engine(spec), 0.01, FIELD_V_PER_A)
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, dalpha=d, stamp=np.int64(stamp), step_a=0.01, field_v_per_a=FIELD_V_PER_A, engine=spec,
                 seconds=time.perf_counter() - t0)
        tmp.replace(out)
        return {"ok": True}
    except AtomvibError as exc:
        return {"error": one_line(exc)}
    except Exception as exc:  # a library failure: the page says so, the app keeps serving
        return {"error": f"{type(exc).__name__}: {one_line(exc)}"}


def progress_view(row) -> dict | None:
    """What the job list shows of a running row's progress: stage, done, total, ETA (s from now), age (s)."""
    if row.progress_updated is None:
        return None
    now = time.time()
    age = max(0.0, now - row.progress_updated)
    eta = None if row.progress_eta_s is None else max(0.0, row.progress_eta_s - age)
    return {"stage": row.progress_stage or "", "done": row.progress_done, "total": row.progress_total,
            "unit": row.progress_unit or "", "eta_s": eta, "age_s": age}


def _settings_kwargs(d: dict) -> dict:
    """PhononSettings keyword arguments from its ``to_dict()`` (lists back to tuples)."""
    fields = {f.name for f in dataclasses.fields(PhononSettings)}
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields}
