"""Running a batch: inputs → structures → (structure, task) calculations on Dask → rows in the store.

Dask does the distribution (``LocalCluster`` on one machine, an existing scheduler, or
dask-jobqueue's ``SLURMCluster``), including moving a task to another worker when one dies. We add
the bookkeeping: canonical structure hashes so a crystal is computed once whatever its setting,
claiming rows so concurrent batches do not duplicate work, and recording every outcome (done or
failed with its message) as soon as it arrives, so an interrupted batch loses nothing finished.

The driver process is the only writer to the database: workers only compute and write result files.
That keeps SQLite safe (one process, WAL) and lets workers run where the database is not reachable.

Progress of a running calculation takes the same road: every counted stage a task opens (each
:meth:`atomvib.progress.Progress.bar`: the displaced cells' forces, relaxation steps) is also counted into
:data:`PROGRESS_FILE` in its result directory by the worker, at most once a second, and the driver copies
what changed into the row (``progress_*`` columns, :meth:`atomvib.store.Store.set_progress`) at most once a
second, so any process reading the store (``atomvib serve``'s job list) sees done / total and an ETA.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import io
import json
import logging
import os
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import AtomvibError, InputError
from ..settings import PhononSettings
from .tasks import Chain, TaskContext, _mkdir, discover_tasks

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
#: written by the worker next to a finished result: the row the driver records (see _finished_on_disk)
ROW_FILE = ".batch_row.json"
#: written by the worker while a task runs: its counted stage (the driver copies it into the row); removed at the end
PROGRESS_FILE = ".batch_progress.json"
#: at most one progress report per this many seconds (worker → file, and driver → store)
PROGRESS_EVERY_S = 1.0
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
        Calculations skipped because the database already had them.
    done, failed : int
        Calculations finished in this run.
    seconds : float
        Wall time of the whole run, s.
    db_url, results_dir : str
        The database (its password masked) and the directory of the result files.
    by_other_run : int
        Calculations another live batch run held at the start and finished while this one waited.
    recovered : int
        Of ``done``: results a run that could not record them (killed, database disk full) had left on
        disk, recorded by this run without computing them again.
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
    by_other_run: int = 0
    recovered: int = 0

    def describe(self) -> str:
        rate = (self.done + self.failed) / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"batch: {self.n_inputs} inputs → {self.n_structures} distinct structures "
            f"({self.n_duplicates} duplicates, {self.n_unreadable} unreadable), {self.n_calculations} calculations",
            f"  this run: {self.done} done, {self.failed} failed, {self.already_done} already in the database"
            + (f", {self.by_other_run} finished by another run" if self.by_other_run else "")
            + f"; {self.seconds:.1f} s ({rate:.2f} calculations/s)",
            f"  database {self.db_url}; files under {self.results_dir}",
        ]
        if self.recovered:
            lines.insert(
                2,
                f"  {self.recovered} of the done were finished by an earlier run that could not record them: "
                "recorded from their files, not computed again",
            )
        if self.failed or self.n_unreadable:
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
    task: str, structure, engine: str, settings: PhononSettings, out_dir: str, checkpoint_dir: str | None = None,
    options=None,
) -> dict:
    """Run one task in a worker; never raises for a computation failure (returns status failed).

    Library warnings from thousands of tasks would drown the progress bar: they are silenced for the
    task only (what matters, e.g. a speed-path fallback, is recorded in the result's EngineInfo).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _run_task(task, structure, engine, settings, out_dir, checkpoint_dir, options)


def _run_task(
    task: str, structure, engine: str, settings: PhononSettings, out_dir: str, checkpoint_dir: str | None = None,
    options=None,
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
        _mkdir(out)
        spec = discover_tasks()[task]
        ctx = TaskContext(
            engine=engine,
            settings=settings,
            out_dir=out,
            upstream_dir=upstream_dir,
            upstream_result=upstream_result,
            checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else None,
            options=options if options is not None else spec.default_options(),
        )
        with reporting_progress(out):
            res = spec.fn(structure, ctx)
    except AtomvibError as exc:
        return _failed(task, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)
    except Exception as exc:  # a bug or a library failure: keep the batch going, keep the traceback
        tb = traceback.format_exc(limit=3)
        return _failed(task, f"{type(exc).__name__}: {exc}\n{tb}", time.perf_counter() - t0)
    done = {
        "status": "done",
        "task": task,
        "seconds": time.perf_counter() - t0,
        "structure": res.structure,
        "omega_max_thz": res.omega_max_thz,
        "has_imaginary": res.has_imaginary,
        "energy_ev": res.energy_ev,
        "kappa_300k_w_per_mk": res.kappa_300k_w_per_mk,
        "thermal_expansion_300k_per_k": res.thermal_expansion_300k_per_k,
        "summary": res.summary,
        "result_dir": str(out),
    }
    _write_row_file(out, done)
    return done


# -- progress of a running task (worker side) ---------------------------------------------------------



class ProgressReport:
    """The counted stages of one running task, written to ``out_dir/PROGRESS_FILE`` at most every ``every`` s.

    A report holds the stage last counted: its description, unit, done, total, the ETA from the rate since its
    first count (a resumed stage starts from its checkpoint's count, not from zero) and the Unix time.
    """

    def __init__(self, out_dir, every: float = PROGRESS_EVERY_S):
        self.path = Path(out_dir) / PROGRESS_FILE
        self.every = float(every)
        self.lock = threading.Lock()
        self.last_write = -1e300
        self.dirty = False
        self.state: dict | None = None

    def wrap(self, bar, total, desc: str, unit: str):
        """A bar that counts into this report as well as into ``bar``."""
        return _CountedBar(bar, self, total, desc, unit)

    def _update(self, stage: _CountedBar, force: bool = False) -> None:
        now = time.monotonic()
        with self.lock:
            eta = None
            if stage.first is not None and stage.total:
                n0, t0 = stage.first
                rate = (stage.done - n0) / (now - t0) if now > t0 else 0.0
                if rate > 0:
                    eta = max(0.0, (stage.total - stage.done) / rate)
            self.state = {"stage": stage.desc, "unit": stage.unit, "done": stage.done,
                          "total": stage.total, "eta_s": eta, "updated": time.time()}
            self.dirty = True
            if not force and now - self.last_write < self.every:
                return
            self.last_write = now
            self.dirty = False
            state = dict(self.state)
        tmp = self.path.with_name(f".{PROGRESS_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(json.dumps(state))
            tmp.replace(self.path)
        except OSError:  # cosmetic: a full disk or a vanished directory must not fail the task
            tmp.unlink(missing_ok=True)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class _CountedBar:
    """A :class:`atomvib.progress._Bar` that also counts into a :class:`ProgressReport`."""

    def __init__(self, bar, report: ProgressReport, total, desc: str, unit: str):
        self.bar, self.report = bar, report
        self.total = int(total) if total is not None else None
        self.desc, self.unit = str(desc).strip(), str(unit)
        self.done = 0
        self.first = None  # (count, monotonic time) of the first call: the rate is measured from there
        report._update(self, force=report.state is None)

    def __call__(self, n: int = 1, **postfix):
        self.bar(n, **postfix)
        self.done += int(n)
        if self.first is None:
            self.first = (self.done, time.monotonic())
        self.report._update(self)

    def close(self):
        self.bar.close()

    def __getattr__(self, name):  # anything else a caller asks of its bar
        return getattr(self.bar, name)


@contextlib.contextmanager
def reporting_progress(out_dir, every: float = PROGRESS_EVERY_S):
    """While the block runs in this thread, the counted stages it opens are reported to ``out_dir/PROGRESS_FILE``
    (removed at the end)."""
    from ..progress import bar_listener

    report = ProgressReport(out_dir, every)
    try:
        with bar_listener(report.wrap):
            yield report
    finally:
        report.remove()


def read_progress(out_dir) -> dict | None:
    """The progress a worker last wrote for the task of ``out_dir`` (None when there is none)."""
    try:
        d = json.loads((Path(out_dir) / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


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


def make_client(
    workers: int | None = None,
    scheduler: str | None = None,
    slurm: SlurmOptions | None = None,
    quiet: bool = False,
):
    """A Dask client and what to close afterwards: a LocalCluster (default), an existing scheduler, or SLURM.

    The worker processes of the LocalCluster ignore SIGINT: a Ctrl-C in the terminal reaches the whole
    process group, and the driver, not each worker, handles it (it gives the rows back and closes the
    cluster) — otherwise every worker prints a ``KeyboardInterrupt``/``CancelledError`` traceback."""
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
    with _sigint_ignored():  # spawned workers inherit SIG_IGN; restarted ones get it from the plugin
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.CRITICAL if quiet else logging.ERROR,
            worker_dashboard_address=None,
            # the scheduler's HTTP server (health, metrics; no dashboard) runs anyway: on a free local port,
            # not 8787 (taken by any other cluster: "UserWarning: Port 8787 is already in use")
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        )
    client = Client(cluster)
    try:
        from ._plugins import IgnoreSigint

        client.register_plugin(IgnoreSigint(), name="atomvib-ignore-sigint")
    except Exception:  # cosmetic: a worker restarted later may print a traceback on Ctrl-C
        pass
    return client, cluster


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT ignored in this process while the block runs (main thread only; elsewhere a no-op)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


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

    def add(self, n: int) -> None:
        """``n`` more calculations to do (rows taken up from a run that died)."""
        if n and self.bar is not None:
            self.bar.total += n
            self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.set_postfix_str(f"done {self.done}, failed {self.failed}", refresh=True)
            self.bar.close()


def _store_fields(res: dict) -> dict:
    return {k: res.get(k) for k in ("error", "seconds", "omega_max_thz", "has_imaginary", "energy_ev",
                                    "kappa_300k_w_per_mk", "thermal_expansion_300k_per_k")} | {
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
    quiet: bool = False,
    command: str | None = None,
    task_options: dict | None = None,
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
    quiet : bool
        Keep Dask's own log lines (a worker that died, ...) off stderr while the batch runs.
    task_options : dict, optional
        Settings of the tasks that take their own (task name → settings object: ``md`` and ``tdep`` take an
        :class:`~atomvib.dynamics.settings.MDSettings`); they enter the task's digest and its database row.

    Raises
    ------
    StoreError
        The database failed under the batch (disk full, I/O error, lost server): the batch stops; what
        was recorded stays, rows this run held are given back, results finished but not recorded are kept
        on disk and recorded (not computed again) by the next run. Exit code 1 in the CLI.
    """
    from ..engines import default_engine_spec, get_engine
    from ..store import Store
    from ..store.db import StoreError

    t_start = time.perf_counter()
    settings = settings or PhononSettings()
    specs = discover_tasks()
    task_options = dict(task_options or {})
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
            opts = task_options.get(t) if task_spec.options_type is not None else None
            step = task_spec.step(tset, state, engine_id if task_spec.uses_engine else "", opts)
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
                    "settings_json": json.dumps(
                        {**tset.to_dict(), **({"task_options": opts.to_dict()} if opts is not None else {})}),
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
    results_existed = results_dir.exists()

    # stored with any password masked; the CLI passes its own command line (sys.argv is the host program's
    # when atomvib.cli.main.main is called in-process)
    run_id = store.start_run(command or " ".join(map(str, sys.argv)))
    own_client, cluster = client is None, None
    drv = None
    failure: AtomvibError | None = None
    bar = _Bar(0, False)

    def new_client():
        nonlocal client, cluster
        if own_client:
            client, cluster = make_client(workers, scheduler, slurm, quiet=quiet)
        return client

    try:
        with _quiet_dask_logs(quiet):
            try:
                claimed = store.claim(keys, run_id, retry_failed)
                drv = _Driver(store, run_id, results_dir, chains, structures, keys, claimed, retries, new_client,
                              task_options)
                if drv.held:
                    print(drv.waiting_message(), file=sys.stderr, flush=True)
                drv.bar = bar = _Bar(len(drv.claimed), progress)
                drv.run()
            except StoreError as exc:  # the database failed under the batch: stop, say what is kept
                failure = exc
            finally:
                bar.close()
                if drv is not None:
                    drv.cancel()
                if own_client and client is not None:
                    client.close()
                    if cluster is not None:
                        cluster.close()
    finally:
        try:
            store.end_run(run_id)  # anything still 'running' from this run goes back to pending
            gave_back = True
        except AtomvibError as exc:  # the database cannot be written at all (disk full)
            gave_back = False
            failure = failure or exc
        if drv is not None:
            _prune_empty(drv.dirs(), results_dir if not results_existed else None)
        store.close()  # no pooled connection (nor a lock of a failed transaction) outlives the run
    if failure is not None:
        raise _stopped(failure, drv, gave_back) from failure
    return BatchSummary(
        n_inputs=len(records) + len(unreadable),
        n_structures=len(structures),
        n_duplicates=len(records) - len(structures),
        n_unreadable=len(unreadable),
        n_calculations=len(keys) + len(unreadable),
        already_done=len(keys) - drv.claimed_at_start - drv.held_at_start,
        done=drv.done,
        failed=drv.failed,
        seconds=time.perf_counter() - t_start,
        db_url=store.url,
        results_dir=str(results_dir),
        by_other_run=drv.by_other,
        recovered=drv.recovered,
    )


def _pause(seconds: float) -> None:
    """The driver's wait between polls (a seam for tests: Ctrl-C arrives here)."""
    time.sleep(seconds)


#: seconds between looks at rows that another run holds
WAIT_POLL_S = 2.0


class _Driver:
    """One run's chains: submits what it claimed, records results as they arrive, and waits for the rows
    another live run holds (taking them up if that run dies or gives them back)."""

    def __init__(self, store, run_id, results_dir, chains, structures, keys, claimed, retries, new_client,
                 task_options=None):
        self.store, self.run_id, self.results_dir = store, run_id, Path(results_dir)
        self.task_options = dict(task_options or {})
        self.chains, self.retries, self.new_client = chains, retries, new_client
        self.client = self.ac = None
        self.bar = _Bar(0, False)
        self.claimed = set(claimed)
        self.claimed_at_start = len(self.claimed)
        self.status = store.status_of(keys)
        self.result_dirs = store.result_dirs([k for k, st in self.status.items() if st == "done"])
        self.held = {k for k in keys if k not in self.claimed and self.status.get(k) == "running"}
        self.held_at_start = len(self.held)
        self.futures: dict = {}  # future → key, until recorded
        self.submitted: dict[str, tuple[Path, Path | None]] = {}  # key → (result dir, checkpoint dir)
        self.dask_keys: dict[str, str] = {}  # Dask task key → calculation key, until recorded
        self.progress_seen: dict[str, int] = {}  # key → mtime (ns) of the progress file last copied
        self.done = self.failed = self.recovered = self.by_other = 0
        self.unrecorded = 0  # finished results that could not be recorded (the database failed)
        # per structure: [hash, index of the next task, what the next task starts from]
        self.cursors = [[h, 0, structures[h]] for h in chains]

    def waiting_message(self) -> str:
        who = []
        for r in self.store.holders(sorted(self.held), self.run_id):
            desc = f"run {r['run_id']}"
            if "host" in r:
                desc += f" on {r['host']}, pid {r['pid']}"
            who.append(desc)
        n = len(self.held)
        return (
            f"batch: waiting for {n} calculation{'s' if n != 1 else ''} held by another batch run "
            f"({'; '.join(who) or 'unknown run'}); this run computes the rest meanwhile"
        )

    def _submit(self, t, key, tset, ckpt, upstream, out_dir):
        if self.client is None:
            self.client = self.new_client()
        fut = self.client.submit(
            run_task,
            t,
            upstream,
            tset.engine,
            tset,
            str(out_dir),
            str(ckpt) if ckpt else None,
            self.task_options.get(t),
            key=f"atomvib-{t}-{key}-{self.run_id}",
            pure=False,
            retries=self.retries,
        )
        self.futures[fut] = key
        self.submitted[key] = (out_dir, ckpt)
        self.dask_keys[str(fut.key)] = key
        if self.ac is None:
            from distributed import as_completed

            self.ac = as_completed([fut])
        else:
            self.ac.add(fut)
        return fut

    def _advance(self, cur) -> bool:
        """Submit the chain of ``cur`` as far as it goes; False when it waits on a row another run holds."""
        chain = self.chains[cur[0]]
        while cur[1] < len(chain):
            t, key, tset, ckpt = chain[cur[1]]
            out_dir = self.results_dir / key[:2] / key
            if key in self.claimed:
                fields = _finished_on_disk(out_dir, key)
                if fields is not None:  # a run that could not record it finished it: record, do not recompute
                    self.store.finish(key, self.run_id, "done", **fields)
                    self.done += 1
                    self.recovered += 1
                    self.bar.update("done")
                    cur[2] = {"status": "done", "task": t, "result_dir": str(out_dir)}
                else:
                    cur[2] = self._submit(t, key, tset, ckpt, cur[2], out_dir)
            elif self.status.get(key) == "done":
                # finished earlier: the next task loads its structure and result from the files
                cur[2] = {"status": "done", "task": t, "result_dir": self.result_dirs.get(key) or None}
            elif key in self.held:
                return False  # another live run computes it: the rest of this chain waits
            else:  # failed: what follows is skipped
                cur[2] = {"status": self.status.get(key) or "missing", "task": t, "reason": "failed"}
            cur[1] += 1
        return True

    def _look_at_held(self) -> None:
        """Take up held rows whose run died or gave them back; note those the other run finished."""
        self.store.reset_stale()
        keys = sorted(self.held)
        new = set(self.store.claim(keys, self.run_id))  # pending again (never 'failed' just now elsewhere)
        st = self.store.status_of(keys)
        elsewhere = {k for k in keys if k not in new and st.get(k) in ("done", "failed")}
        self.status.update(st)
        self.result_dirs.update(self.store.result_dirs([k for k in elsewhere if st[k] == "done"]))
        self.claimed |= new
        self.by_other += len(elsewhere)
        self.held -= new | elsewhere
        self.bar.add(len(new))

    def _copy_progress(self, processing: dict) -> None:
        """Copy what changed in the progress files of this run's executing tasks into their rows (one write)."""
        reports = {}
        for tasks in processing.values():
            for dk in tasks:
                key = self.dask_keys.get(str(dk))
                if key is None or key not in self.submitted:
                    continue
                path = self.submitted[key][0] / PROGRESS_FILE
                try:
                    mtime = path.stat().st_mtime_ns
                except OSError:
                    continue
                if self.progress_seen.get(key) == mtime:
                    continue
                report = read_progress(path.parent)
                if report is not None:
                    self.progress_seen[key] = mtime
                    reports[key] = report
        if reports:
            try:
                self.store.set_progress(self.run_id, reports)
            except AtomvibError:  # progress is cosmetic: a failing database stops the batch at the next record
                pass

    def _record(self, fut) -> None:
        key = self.futures.pop(fut)
        self.dask_keys.pop(str(fut.key), None)
        self.progress_seen.pop(key, None)
        try:
            res = fut.result()
        except Exception as exc:  # KilledWorker after too many deaths, or a pickling error
            res = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "seconds": None}
        status = res.get("status", "failed")
        try:
            self.store.finish(key, self.run_id, status, **_store_fields(res))
        except AtomvibError:
            self.unrecorded += status == "done"
            raise
        self.done += status == "done"
        self.failed += status != "done"
        self.bar.update(status)
        fut.release()

    def run(self) -> None:
        blocked = [c for c in self.cursors if not self._advance(c)]
        last_beat = last_poll = last_look = time.monotonic()
        while self.futures or blocked or self.held:
            ready = self.ac.next_batch(block=False) if self.ac is not None and self.ac.has_ready() else []
            for fut in ready:
                self._record(fut)
            if ready:
                continue
            now = time.monotonic()
            if self.futures and now - last_poll > PROGRESS_EVERY_S:
                try:
                    # 'processing' includes tasks queued on a worker: cap by its threads to count executing ones
                    nthreads = self.client.nthreads()
                    processing = self.client.processing()
                    self.bar.update(running=sum(min(len(v), nthreads.get(w, 1)) for w, v in processing.items()))
                    self._copy_progress(processing)
                except Exception:  # scheduler momentarily unreachable: the count is cosmetic
                    pass
                last_poll = now
            if now - last_beat > 30.0:
                self.store.heartbeat(self.run_id)
                last_beat = now
            if (blocked or self.held) and now - last_look > WAIT_POLL_S:
                self._look_at_held()
                blocked = [c for c in blocked if not self._advance(c)]
                last_look = now
            _pause(0.05)

    def cancel(self) -> None:
        """Drop what is still queued or running (Ctrl-C, a failed database); their rows go back to pending."""
        if self.futures and self.client is not None:
            try:
                self.client.cancel(list(self.futures))
            except Exception:  # the scheduler is already gone
                pass
        self.futures.clear()

    def dirs(self) -> list[Path]:
        """The directories this run's submitted calculations may have created (result and checkpoint)."""
        out = []
        for out_dir, ckpt in self.submitted.values():
            out += [out_dir, out_dir.parent]
            if ckpt is not None:
                out += [Path(ckpt), Path(ckpt).parent, Path(ckpt).parent.parent]
        return out


def _stopped(exc: AtomvibError, drv, gave_back: bool) -> AtomvibError:
    """The one-line error of a batch stopped by its database: what is recorded, kept on disk, left."""
    if drv is None:
        return exc
    left = len(drv.claimed) - drv.done - drv.failed - drv.unrecorded
    parts = [f"{drv.done + drv.failed} result{'s' if drv.done + drv.failed != 1 else ''} recorded"]
    if drv.unrecorded:
        parts.append(f"{drv.unrecorded} finished but kept on disk only (the next run records it)")
    if left:
        parts.append(
            f"{left} not finished ({'given back' if gave_back else 'the next run takes them up'})"
        )
    problem = f"{exc.problem}; batch stopped: {', '.join(parts)}"
    fix = (exc.fix or "run the same command again") + "; what is recorded or kept on disk is not computed again"
    err = type(exc)(problem, fix=fix)
    return err


def _finished_on_disk(out_dir: Path, key: str) -> dict | None:
    """The row fields of a calculation a worker finished in ``out_dir`` (its :data:`ROW_FILE`), or None.

    Only for the same key, status done, and the same atomvib version that wrote it."""
    from ..store.db import _atomvib_version

    try:
        d = json.loads((out_dir / ROW_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict) or d.get("key") != key or d.get("status") != "done":
        return None
    if d.get("atomvib_version") != _atomvib_version():
        return None
    fields = dict(d.get("fields") or {})
    fields["result_dir"] = str(out_dir)
    if d.get("host"):
        fields["host"] = d["host"]
    return fields


def _write_row_file(out: Path, res: dict) -> None:
    """Worker side: what the driver records for this result, next to the result (atomically).

    If the driver cannot record it (database disk full, driver killed), the next run records it from here
    instead of computing it again."""
    import platform

    from ..store.db import _atomvib_version

    row = {
        "key": out.name,
        "task": res.get("task"),
        "status": "done",
        "atomvib_version": _atomvib_version(),
        "host": platform.node(),
        "fields": _store_fields(res),
    }
    tmp = out / f".{ROW_FILE}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(row, default=str))
        tmp.replace(out / ROW_FILE)
    except OSError:  # a full disk: the result is recorded by the driver, or computed again
        tmp.unlink(missing_ok=True)


def _prune_empty(dirs, top: Path | None) -> None:
    """Remove the directories among ``dirs`` (then ``top``) that are empty: a failed calculation leaves none."""
    for d in sorted(set(dirs), key=lambda p: len(p.parts), reverse=True) + ([top] if top else []):
        try:
            if [p.name for p in d.iterdir()] == [PROGRESS_FILE]:  # left by a worker that was killed mid-task
                (d / PROGRESS_FILE).unlink()
            d.rmdir()  # only ever removes an empty directory
        except OSError:
            pass


@contextlib.contextmanager
def _quiet_dask_logs(quiet: bool):
    """With ``quiet``, Dask's own log lines (``Task ... marked as failed because 4 workers died``) are not
    printed while the batch runs; the levels are put back afterwards. The outcome is in the database."""
    if not quiet:
        yield
        return
    names = ["distributed", "tornado", "bokeh"]
    names += [n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] in ("distributed", "tornado")]
    saved = []
    for name in dict.fromkeys(names):
        lg = logging.getLogger(name)
        saved.append((lg, lg.level))
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)
