"""Running a batch: inputs → structures → (structure, task) calculations on Dask → rows in the store.

Dask does the distribution (``LocalCluster`` on one machine, an existing scheduler, or
dask-jobqueue's ``SLURMCluster``), including moving a task to another worker when one dies. We add
the bookkeeping: canonical structure hashes so a crystal is computed once whatever its setting,
claiming rows so concurrent batches do not duplicate work, and recording every outcome (done or
failed with its message) as soon as it arrives, so an interrupted batch loses nothing finished.

The driver process is the only writer to the database: workers only compute and write result files.
That keeps SQLite safe (one process, WAL) and lets workers run where the database is not reachable.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import io
import json
import logging
import os
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import AtomvibError, InputError
from ..settings import PhononSettings
from .tasks import Chain, TaskContext, discover_tasks

# .json is left out on purpose: result directories are full of summary.json files
STRUCTURE_SUFFIXES = {
    ".cif",
    ".vasp",
    ".poscar",
    ".xyz",
    ".extxyz",
    ".traj",
    ".pdb",
    ".xsf",
    ".res",
    ".gen",
    ".mol",
}
STRUCTURE_NAMES = ("POSCAR", "CONTCAR")
THREAD_ENV = {
    "ATOMVIB_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


@dataclass(frozen=True, eq=False)
class BatchSummary:
    """Outcome of one batch run.

    Attributes
    ----------
    n_inputs : int
        Structures read (frames of multi-structure files count separately), plus unreadable files.
    n_structures : int
        Distinct structures after canonical hashing.
    n_duplicates : int
        Inputs that were the same crystal as an earlier input (recorded as extra sources).
    n_unreadable : int
    n_calculations : int
        Calculations of this batch (structures × tasks).
    already_done : int
        Calculations skipped because the database already had them (or another live run holds them).
    done, failed : int
        Calculations finished in this run.
    seconds : float
        Wall time of the whole run, s.
    db_url, results_dir : str
    """

    n_inputs: int
    n_structures: int
    n_duplicates: int
    n_unreadable: int
    n_calculations: int
    already_done: int
    done: int
    failed: int
    seconds: float
    db_url: str
    results_dir: str

    def describe(self) -> str:
        rate = (self.done + self.failed) / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"batch: {self.n_inputs} inputs → {self.n_structures} distinct structures "
            f"({self.n_duplicates} duplicates, {self.n_unreadable} unreadable), {self.n_calculations} calculations",
            f"  this run: {self.done} done, {self.failed} failed, {self.already_done} already in the database; "
            f"{self.seconds:.1f} s ({rate:.2f} calculations/s)",
            f"  database {self.db_url}; files under {self.results_dir}",
        ]
        if self.failed:
            lines.append(
                "  see the failures: atomvib db list --status failed"
                + ("" if "atomvib.db" in self.db_url else f" --db {self.db_url}")
            )
        return "\n".join(lines)


# -- inputs -----------------------------------------------------------------------------------------


def expand_inputs(inputs, exclude=()) -> list[str]:
    """Files from paths, directories (structure files inside, recursively) and glob patterns, in order.

    Files under any directory of ``exclude`` (the batch's own results) are skipped in directory scans.
    """
    files: list[str] = []
    exclude = [Path(e).resolve() for e in exclude]
    for inp in inputs:
        inp = str(inp)
        if any(c in inp for c in "*?["):
            matches = sorted(glob.glob(inp, recursive=True))
            if not matches:
                files.append(inp)  # recorded as unreadable: the user should see it matched nothing
            files += [m for m in matches if Path(m).is_file()]
        elif Path(inp).is_dir():
            for p in sorted(Path(inp).rglob("*")):
                if (
                    p.is_file()
                    and not p.name.startswith(".")
                    and not any(p.resolve().is_relative_to(e) for e in exclude)
                    and (p.suffix.lower() in STRUCTURE_SUFFIXES or p.name.startswith(STRUCTURE_NAMES))
                ):
                    files.append(str(p))
        else:
            files.append(inp)
    return list(dict.fromkeys(files))


def _extxyz(structure) -> str:
    from ase.io import write

    buf = io.StringIO()
    write(buf, structure.to_ase(), format="extxyz")
    return buf.getvalue()


def _sha(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def read_inputs(files: list[str], symprec: float):
    """Read every file; returns (structures {hash: first Structure}, records (one per input), unreadable [(path, message)])."""
    from ..store import canonical_hash
    from ..structure import read_structures

    structures, records, unreadable = {}, [], []
    for f in files:
        try:
            items = read_structures(f)
        except AtomvibError as exc:
            unreadable.append((f, str(exc)))
            continue
        for s in items:
            try:
                h = canonical_hash(s, symprec)
            except Exception as exc:  # spglib failure on a pathological cell
                unreadable.append((s.source, f"cannot analyse structure: {exc}"))
                continue
            first = h not in structures
            if first:
                structures[h] = s
            records.append(
                {
                    "hash": h,
                    "formula": s.formula,
                    "natoms": s.natoms,
                    "kind": s.kind,
                    "source": s.source,
                    "spacegroup": "" if s.is_molecule else s.spacegroup(symprec),
                    "extxyz": _extxyz(s) if first else "",
                }
            )
    return structures, records, unreadable


# -- worker side ------------------------------------------------------------------------------------


def _failed(task: str, error: str, seconds: float = 0.0) -> dict:
    return {"status": "failed", "error": error, "seconds": seconds, "task": task}


def load_upstream(task: str, result_dir: Path | None):
    """(structure handed on, loaded result or None) from the result directory of a finished ``task``.

    ``relax`` hands on ``relaxed.extxyz``; any other task its saved result's ``structure``
    (:func:`atomvib.load`, e.g. the phonons' relaxed primitive cell).
    """
    from ..results import load
    from ..structure import read_structure

    if result_dir is None:
        raise InputError(f"the finished {task} calculation has no result directory", fix="re-run with --retry-failed")
    if task == "relax":
        return read_structure(Path(result_dir) / "relaxed.extxyz"), None
    result = load(result_dir)
    structure = getattr(result, "structure", None)
    if structure is None:
        raise InputError(f"the {task} result in {result_dir} holds no structure", fix="put this task last in --tasks")
    return structure, result


def run_task(
    task: str, structure, engine: str, settings: PhononSettings, out_dir: str, checkpoint_dir: str | None = None
) -> dict:
    """Run one task in a worker; never raises for a computation failure (returns status failed).

    Library warnings from thousands of tasks would drown the progress bar: they are silenced for the
    task only (what matters, e.g. a speed-path fallback, is recorded in the result's EngineInfo).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _run_task(task, structure, engine, settings, out_dir, checkpoint_dir)


def _run_task(
    task: str, structure, engine: str, settings: PhononSettings, out_dir: str, checkpoint_dir: str | None = None
) -> dict:
    """The body of :func:`run_task`.

    ``structure`` is a Structure, or the outcome of the task before: the dict :func:`run_task` returned
    (computed in this batch), or ``{"status": "done", "task", "result_dir"}`` for one finished earlier,
    whose structure and result are then loaded from its directory.
    """
    for k, v in THREAD_ENV.items():
        os.environ.setdefault(k, v)
    from ..runtime import configure_threads

    configure_threads()
    t0 = time.perf_counter()
    upstream_dir = upstream_result = None
    if isinstance(structure, dict):
        up = structure
        if up.get("status") != "done":  # the upstream task failed or is held by another run
            return _failed(task, f"skipped: {up.get('task')} {up.get('reason') or 'failed'}")
        upstream_dir = Path(up["result_dir"]) if up.get("result_dir") else None
        structure = up.get("structure")
        if structure is None:  # finished in an earlier run: reuse its files
            try:
                structure, upstream_result = load_upstream(up.get("task"), upstream_dir)
            except AtomvibError as exc:
                return _failed(task, f"cannot reuse the finished {up.get('task')} result: {exc}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        spec = discover_tasks()[task]
        ctx = TaskContext(
            engine=engine,
            settings=settings,
            out_dir=out,
            upstream_dir=upstream_dir,
            upstream_result=upstream_result,
            checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else None,
        )
        res = spec.fn(structure, ctx)
    except AtomvibError as exc:
        return _failed(task, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)
    except Exception as exc:  # a bug or a library failure: keep the batch going, keep the traceback
        tb = traceback.format_exc(limit=3)
        return _failed(task, f"{type(exc).__name__}: {exc}\n{tb}", time.perf_counter() - t0)
    return {
        "status": "done",
        "task": task,
        "seconds": time.perf_counter() - t0,
        "structure": res.structure,
        "omega_max_thz": res.omega_max_thz,
        "has_imaginary": res.has_imaginary,
        "energy_ev": res.energy_ev,
        "summary": res.summary,
        "result_dir": str(out),
    }


# -- cluster ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmOptions:
    """dask-jobqueue SLURMCluster options (one Dask worker process per core, one thread each)."""

    queue: str | None = None
    account: str | None = None
    walltime: str = "01:00:00"
    cores: int = 4
    memory: str = "16GB"
    jobs: int = 1
    python: str | None = None

    def cluster_kwargs(self) -> dict:
        return {
            "queue": self.queue,
            "account": self.account,
            "walltime": self.walltime,
            "cores": self.cores,
            "processes": self.cores,
            "memory": self.memory,
            "python": self.python or sys.executable,
            "job_script_prologue": [f"export {k}={v}" for k, v in THREAD_ENV.items()],
        }

    def cluster(self):
        from dask_jobqueue import SLURMCluster

        return SLURMCluster(**self.cluster_kwargs())


def make_client(workers: int | None = None, scheduler: str | None = None, slurm: SlurmOptions | None = None):
    """A Dask client and what to close afterwards: a LocalCluster (default), an existing scheduler, or SLURM."""
    from distributed import Client, LocalCluster

    for k, v in THREAD_ENV.items():  # worker processes inherit the environment
        os.environ.setdefault(k, v)
    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except OSError as exc:
            raise InputError(
                f"cannot reach Dask scheduler {scheduler}: {exc}", fix="check the address (tcp://host:8786)"
            ) from None
    if slurm is not None:
        import importlib.util
        import shutil

        if importlib.util.find_spec("dask_jobqueue") is None:
            raise InputError("--slurm needs dask-jobqueue", fix="pip install dask-jobqueue")
        if shutil.which("sbatch") is None:
            raise InputError(
                "--slurm needs SLURM's sbatch, which is not on PATH here",
                fix="run the batch on a SLURM login node, or use --workers / --scheduler",
            )
        cluster = slurm.cluster()
        cluster.scale(jobs=slurm.jobs)
        return Client(cluster), cluster
    from ..runtime import available_cores

    if workers is not None and workers < 1:
        raise InputError(f"--workers {workers}: needs at least one worker", fix="give --workers 1 or more")
    n = workers or available_cores()
    cluster = LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
        worker_dashboard_address=None,
    )
    return Client(cluster), cluster


# -- driver -----------------------------------------------------------------------------------------


class _Bar:
    """tqdm bar over calculations with done/failed/running counts (tqdm gives rate and ETA).

    It ends on the final counts (``done 12, failed 0``), never on a stale ``running`` count.
    """

    def __init__(self, total: int, enabled: bool):
        self.done = self.failed = self.running = 0
        self.bar = None
        if enabled and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="batch", unit="calc", file=sys.stderr, dynamic_ncols=True)

    def _postfix(self) -> str:
        return f"done {self.done}, failed {self.failed}, running {self.running}"

    def update(self, status: str | None = None, running: int | None = None):
        if status == "done":
            self.done += 1
        elif status == "failed":
            self.failed += 1
        if status:
            self.running = max(0, self.running - 1)
        if running is not None:
            self.running = running
        if self.bar is not None:
            self.bar.set_postfix_str(self._postfix(), refresh=False)
            if status:
                self.bar.update(1)  # redraws with the new postfix
            else:
                self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.set_postfix_str(f"done {self.done}, failed {self.failed}", refresh=True)
            self.bar.close()


def _store_fields(res: dict) -> dict:
    return {k: res.get(k) for k in ("error", "seconds", "omega_max_thz", "has_imaginary", "energy_ev")} | {
        "error": res.get("error") or "",
        "result_dir": res.get("result_dir") or "",
        "summary_json": res.get("summary") or {},
    }


def _engine_identity(spec: str) -> tuple[str, str]:
    """(version, identity digest) of engine ``spec``: what determines its forces, kernel path included.

    The model is loaded here (the kernel path is decided at load), as :func:`atomvib.workflow.phonons`
    does for its force checkpoint, so a row's key and the checkpoint agree on the engine.
    """
    from ..engines import get_engine
    from ..engines.base import EngineInfo

    eng = get_engine(spec)
    try:
        from ..workflow import engine_identity
    except ImportError:  # pragma: no cover - workflow without engine identities
        engine_identity = None
    if engine_identity is not None:
        ident = engine_identity(eng)
    else:  # pragma: no cover
        info = eng.info if not isinstance(eng.info, dict) else EngineInfo.from_dict(eng.info)
        ident = info.identity() if hasattr(info, "identity") else info.to_dict()
    info = eng.info
    version = info.get("version", "") if isinstance(info, dict) else info.version
    return str(version), _sha(json.dumps(ident, sort_keys=True, default=str))


def run_batch(
    inputs,
    tasks=("phonons",),
    settings: PhononSettings | None = None,
    *,
    db=None,
    results_dir=None,
    workers: int | None = None,
    scheduler: str | None = None,
    slurm: SlurmOptions | None = None,
    client=None,
    retry_failed: bool = False,
    retries: int = 1,
    progress: bool = False,
) -> BatchSummary:
    """Run ``tasks`` on every structure of ``inputs`` and record everything in the store.

    Parameters
    ----------
    inputs : list of path or glob
        Structure files, directories, glob patterns; multi-structure files give one input per frame.
    tasks : sequence of str
        Task names in order (``relax``, ``phonons``, plug-ins); each feeds its structure to the next.
    settings : PhononSettings
        Engine and settings (the same as ``atomvib phonons``).
    db : str, optional
        SQLite path or SQLAlchemy URL (default ``atomvib.db``).
    results_dir : path, optional
        Where the result files go (default: ``<db stem>_results`` next to a SQLite file, else
        ``./atomvib_results``); must be visible to the workers.
    workers, scheduler, slurm, client
        Where to compute: N local worker processes (default: the available cores), an existing
        scheduler address, a SLURM cluster, or a ready :class:`distributed.Client`.
    retry_failed : bool
        Compute again calculations recorded as failed.
    retries : int
        Dask retries of a task that raised (a dead worker is retried by the scheduler anyway).
    progress : bool
        Progress bar on stderr.
    """
    from ..engines import default_engine_spec, get_engine
    from ..store import Store

    t_start = time.perf_counter()
    settings = settings or PhononSettings()
    specs = discover_tasks()
    tasks = [t.strip() for t in tasks if t.strip()]
    unknown = [t for t in tasks if t not in specs]
    if unknown or not tasks:
        raise InputError(
            f"unknown task(s) {', '.join(unknown) or '(none)'}", fix=f"choose from {', '.join(specs)}"
        )
    store = Store(db)
    if results_dir is None:
        results_dir = (
            Path(store.url.split("///", 1)[1]).with_suffix("").as_posix() + "_results"
            if store.is_sqlite
            else "atomvib_results"
        )
    results_dir = Path(results_dir).resolve()
    if results_dir.exists() and not results_dir.is_dir():
        raise InputError(f"--results {results_dir} is a file", fix="give a directory for the result files")

    files = expand_inputs(inputs, exclude=[results_dir])
    if not files:
        raise InputError("no inputs", fix="give structure files, directories or glob patterns")
    structures, records, unreadable = read_inputs(files, settings.symprec)
    store.add_structures(records)

    # plan: one calculation per (structure, task), keyed by what changes its output (see tasks.py)
    calcs, chains = [], {}
    default_spec = settings.engine
    identities: dict[str, tuple[str, str]] = {}
    needs_engine = any(specs[t].uses_engine for t in tasks)
    for h, s in structures.items():
        spec = default_spec or default_engine_spec(s.is_molecule)
        if needs_engine and spec not in identities:
            try:
                identities[spec] = _engine_identity(spec)
            except AtomvibError as exc:
                raise InputError(f"engine {spec}: {exc.problem}", fix=exc.fix or "see `atomvib engines`") from None
        version, engine_id = identities.get(spec, ("", ""))
        chain, state = [], Chain(structure=h)
        for i, t in enumerate(tasks):
            tset = dataclasses.replace(settings, engine=spec)
            if t != "relax" and "relax" in tasks[:i]:
                tset = dataclasses.replace(tset, relax=False)  # already relaxed upstream
            task_spec = specs[t]
            step = task_spec.step(tset, state, engine_id if task_spec.uses_engine else "")
            row_engine, row_version = task_spec.row_engine() if task_spec.row_engine else (spec, version)
            key = _sha(h, t, row_engine, row_version, step.digest)
            calcs.append(
                {
                    "key": key,
                    "structure_hash": h,
                    "task": t,
                    "engine": row_engine,
                    "engine_version": row_version,
                    "settings_digest": step.digest,
                    "settings_json": json.dumps(tset.to_dict()),
                    "source": s.source,
                }
            )
            ckpt = results_dir / "forces" / step.forces_id[:2] / step.forces_id if step.forces_id else None
            chain.append((t, key, tset, ckpt))
            state = step.chain
        chains[h] = chain
    spec0 = default_spec or "default"
    version0 = get_engine(default_spec).info.version if default_spec else ""
    for path, msg in unreadable:
        calcs.append(
            {
                "key": _sha("unreadable", path, spec0),
                "structure_hash": "file-" + _sha(path)[:11],
                "task": "read",
                "engine": spec0,
                "engine_version": version0,
                "settings_digest": "",
                "settings_json": "{}",
                "source": path,
                "status": "failed",
                "error": msg,
            }
        )
    store.plan(calcs)
    keys = [c["key"] for c in calcs if c["task"] != "read"]

    run_id = store.start_run(" ".join(map(str, sys.argv)))
    claimed = set(store.claim(keys, run_id, retry_failed))
    done = failed = 0
    bar = _Bar(len(claimed), progress)
    own_client, cluster = client is None, None
    try:
        if claimed:
            if own_client:
                client, cluster = make_client(workers, scheduler, slurm)
            futures = {}
            status = store.status_of(keys)
            result_dirs = store.result_dirs([k for k, st in status.items() if st == "done"])
            for h, chain in chains.items():
                upstream = structures[h]
                for t, key, tset, ckpt in chain:
                    if key in claimed:
                        out_dir = results_dir / key[:2] / key
                        fut = client.submit(
                            run_task,
                            t,
                            upstream,
                            tset.engine,
                            tset,
                            str(out_dir),
                            str(ckpt) if ckpt else None,
                            key=f"atomvib-{t}-{key}-{run_id}",
                            pure=False,
                            retries=retries,
                        )
                        futures[fut] = key
                        upstream = fut
                    elif status.get(key) == "done":
                        # finished earlier: the next task loads its structure and result from the files
                        upstream = {"status": "done", "task": t, "result_dir": result_dirs.get(key) or None}
                    else:  # failed, or held by another live run: what follows is skipped
                        reason = "failed" if status.get(key) == "failed" else "is being computed by another batch run"
                        upstream = {"status": status.get(key) or "missing", "task": t, "reason": reason}
            done, failed = _collect(client, futures, store, run_id, bar)
    finally:
        bar.close()
        store.end_run(run_id)  # anything still 'running' from this run goes back to pending
        if own_client and client is not None:
            client.close()
            if cluster is not None:
                cluster.close()
    return BatchSummary(
        n_inputs=len(records) + len(unreadable),
        n_structures=len(structures),
        n_duplicates=len(records) - len(structures),
        n_unreadable=len(unreadable),
        n_calculations=len(keys) + len(unreadable),
        already_done=len(keys) - len(claimed),
        done=done,
        failed=failed,
        seconds=time.perf_counter() - t_start,
        db_url=store.url,
        results_dir=str(results_dir),
    )


def _collect(client, futures: dict, store, run_id: str, bar: _Bar) -> tuple[int, int]:
    """Record results as they arrive; poll the scheduler for the running count and keep the run alive."""
    from distributed import as_completed

    done = failed = 0
    ac = as_completed(list(futures))
    last_beat = last_poll = time.monotonic()
    while not ac.is_empty():
        ready = ac.next_batch(block=False) if ac.has_ready() else []
        now = time.monotonic()
        if not ready:
            if now - last_poll > 1.0:
                try:
                    # 'processing' includes tasks queued on a worker: cap by its threads to count executing ones
                    nthreads = client.nthreads()
                    bar.update(
                        running=sum(min(len(v), nthreads.get(w, 1)) for w, v in client.processing().items())
                    )
                except Exception:  # scheduler momentarily unreachable: the count is cosmetic
                    pass
                last_poll = now
            if now - last_beat > 30.0:
                store.heartbeat(run_id)
                last_beat = now
            time.sleep(0.05)
            continue
        for fut in ready:
            key = futures[fut]
            try:
                res = fut.result()
            except Exception as exc:  # KilledWorker after too many deaths, or a pickling error
                res = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "seconds": None}
            status = res.get("status", "failed")
            store.finish(key, run_id, status, **_store_fields(res))
            done += status == "done"
            failed += status != "done"
            bar.update(status)
            fut.release()
    return done, failed
