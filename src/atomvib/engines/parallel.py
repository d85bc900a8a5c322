"""A persistent pool of worker processes for an MLIP engine's forces on CPU.

On CPU, 97–99 % of a phonon force stage is inside the model's forward/backward pass
(docs/benchmarks/phonons.md), and torch's intra-op threads do not scale perfectly: two processes
with one torch thread each evaluate two displaced cells at once, 9–19 % faster per cell than one
process with two threads on a 2-core CPU for CHGNet (4 % for SevenNet, whose fused kernels scale
well with threads; more where intra-op threads scale worse). That gain has to
pay for starting the workers, so the pool is for large jobs only. We use
:class:`concurrent.futures.ProcessPoolExecutor` with the ``spawn`` start method (fork is unsafe after torch has started its thread pools); what we add
is the engine bookkeeping: each worker builds the engine once from a picklable factory the engine
hands over (so this module imports no engine or registry module) and loads the model, the pool lives
on the engine object across calls (several structures in one CLI call reuse it), cells
go out one per task so progress is reported per finished cell and the order is restored by index, and
a failure inside a worker comes back as :class:`~atomvib.errors.EngineError` with its message.

This process computes too: with ``w`` lanes it starts ``w - 1`` workers and evaluates cells itself
(one torch thread) while they start up and run, taking cells from the end of the list while the
workers take them from the front. Its model is loaded already, so most of the ~3–4 s a cold worker
spends on spawn, torch import and model load is not lost (measured: a cold start still costs 2–3 s
against one process with all cores as threads).

When the pool is used (:func:`pool_size`): CPU device, ``ATOMVIB_WORKERS`` ≥ 2 (default: the cores
this process may use; ``1`` disables), not inside a daemonic process (Dask workers cannot have
children), and enough work to pay for loading the model in each worker.
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from ..errors import EngineError, InputError
from ..runtime import available_cores

#: a cold pool (model still to be loaded in each worker) needs at least this many cells per worker...
MIN_CELLS_PER_WORKER_COLD = 2
#: ...and this much work, in atoms × cells, unless the engine sets ``pool_min_cell_atoms``. The pool
#: competes with one process using all cores as torch threads: measured on 2 cores (144-atom cells),
#: two 1-thread lanes are only 9 % (SevenNet-0) to 19 % (CHGNet) faster per cell than one 2-thread
#: process, and a cold start costs 2–3 s, so it pays from ~40–50 cells of that size
MIN_ATOMS_COLD = 6000


def requested_workers() -> int:
    """Workers asked for: ``ATOMVIB_WORKERS`` if set, else the available cores."""
    env = os.environ.get("ATOMVIB_WORKERS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise InputError(
                f"ATOMVIB_WORKERS={env!r} is not an integer",
                fix="set it to e.g. 2, or 1 to disable worker processes",
            ) from None
    return available_cores()


def pool_size(
    n_cells: int, n_atoms: int, device: str = "cpu", warm: bool = False, min_cell_atoms: int | None = None
) -> int:
    """Lanes (this process and its workers) for ``n_cells`` cells of ``n_atoms`` atoms; 0 = evaluate serially.

    ``warm``: a pool with the model loaded already exists, so only the cell count matters.
    ``min_cell_atoms``: work (atoms × cells) that pays for a cold pool; default :data:`MIN_ATOMS_COLD`.
    """
    min_cell_atoms = MIN_ATOMS_COLD if min_cell_atoms is None else min_cell_atoms
    if not str(device).startswith("cpu"):
        return 0  # a GPU batches cells in one process instead
    if multiprocessing.current_process().daemon:
        return 0  # daemonic processes (Dask, multiprocessing.Pool workers) may not have children
    w = requested_workers()
    if w < 2:
        return 0
    if warm:
        return w if n_cells >= 2 else 0
    if n_cells < MIN_CELLS_PER_WORKER_COLD * w or n_cells * n_atoms < min_cell_atoms:
        return 0
    return w


# ---- worker side ------------------------------------------------------------------------------

# State of a worker process (never set in the parent): the engine its initializer built, or why that
# failed. One engine per worker process, for the life of the pool.
_worker_engine = None
_worker_error: str | None = None


def _init_worker(factory: Callable, threads: int) -> None:
    """Runs once in each worker: pin threads before torch is imported, then build the engine and load
    the model. The models' warnings would be printed once per worker: they are silenced here only."""
    global _worker_engine, _worker_error
    os.environ["ATOMVIB_THREADS"] = str(threads)
    os.environ["ATOMVIB_WORKERS"] = "1"  # a worker never starts a pool of its own
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            engine = factory()
            getattr(engine, "load", engine.calculator)()  # load now, in parallel with the other workers
        _worker_engine = engine
    except Exception as exc:  # reported with the first task: an initializer error would break the pool
        _worker_error = f"{type(exc).__name__}: {exc}"


def _evaluate_one(index: int, atoms, ref=None):
    """(index, Evaluation, None) or (index, None, error message): exceptions are returned, not raised,
    so that the message arrives intact whatever the exception's constructor takes.

    ``ref``: the first cell of the call; an engine that reuses neighbour graphs (``prime_graph``) takes
    its reference graph from it, as the serial path would, so that pool and serial forces are identical.
    """
    if _worker_error is not None:
        return index, None, f"loading the engine failed: {_worker_error}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prime = getattr(_worker_engine, "prime_graph", None)
            if prime is not None and ref is not None:
                prime(ref)
            return index, _worker_engine.evaluate([atoms])[0], None
    except Exception as exc:
        return index, None, f"{type(exc).__name__}: {exc}"


# ---- parent side ------------------------------------------------------------------------------


class WorkerPool:
    """``workers`` spawned processes, each holding the engine ``factory()`` builds (a picklable callable,
    e.g. ``functools.partial(SomeEngine, model)``) with ``threads`` torch thread(s); ``name`` (the
    engine's spec) is for messages. Closed by :meth:`close`, or at interpreter exit."""

    def __init__(self, factory: Callable, workers: int, threads: int = 1, name: str = "engine"):
        self.name, self.workers, self.threads = name, workers, threads
        self._executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(factory, threads),
        )
        self._finalizer = weakref.finalize(self, _shutdown, self._executor)

    @property
    def alive(self) -> bool:
        return self._finalizer.alive

    def evaluate(
        self,
        atoms_list: Sequence,
        progress: Callable[[int], None] | None = None,
        local: Callable | None = None,
    ) -> list:
        """Evaluations of ``atoms_list`` (ase.Atoms), in order; ``progress(1)`` per finished cell.

        ``local(atoms) -> Evaluation``: this process evaluates cells too (from the end of the list),
        between checks on the workers, which always have cells queued.

        Raises
        ------
        EngineError
            If a cell fails (a worker's message is kept) or a worker dies.
        """
        if not self.alive:
            raise EngineError(f"the worker pool of '{self.name}' is closed")
        out: list = [None] * len(atoms_list)
        todo = deque(range(len(atoms_list)))
        ref = atoms_list[0] if atoms_list else None
        pending: set = set()
        depth = 2 * self.workers  # queued per worker, so that none idles while this process computes

        def fail(i, err, where):
            for f in pending:
                f.cancel()
            raise EngineError(
                f"engine '{self.name}' failed on structure {i}{where}: {err}",
                fix="check that structure; ATOMVIB_WORKERS=1 runs it in this process for a full traceback",
            )

        def collect(timeout):
            done, rest = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
            pending.intersection_update(rest)
            for fut in done:
                i, ev, err = fut.result()
                if err is not None:
                    fail(i, err, " in a worker process")
                out[i] = ev
                if progress:
                    progress(1)

        try:
            while todo or pending:
                while todo and len(pending) < depth:
                    i = todo.popleft()
                    pending.add(self._executor.submit(_evaluate_one, i, atoms_list[i], ref))
                if local is not None and todo:
                    i = todo.pop()
                    try:
                        out[i] = local(atoms_list[i])
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except Exception as exc:
                        fail(i, f"{type(exc).__name__}: {exc}", "")
                    if progress:
                        progress(1)
                    if pending:
                        collect(0)
                else:
                    collect(None)
        except BrokenProcessPool as exc:
            self.close()
            raise EngineError(
                f"a worker process of engine '{self.name}' died ({exc})",
                fix="it was probably out of memory: set ATOMVIB_WORKERS=1 (or fewer workers)",
            ) from None
        except EngineError:  # one bad cell: the workers are fine and stay for the next call
            raise
        except BaseException:  # KeyboardInterrupt: do not leave workers computing
            self.close()
            raise
        return out

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        self._finalizer()


def _shutdown(executor: ProcessPoolExecutor) -> None:
    executor.shutdown(wait=True, cancel_futures=True)


def share_cells(pool: WorkerPool, atoms_list: Sequence, progress=None, local: Callable | None = None,
                prime: Callable | None = None) -> list:
    """Evaluations of ``atoms_list`` by ``pool``'s workers and this process together, in order.

    ``local(atoms_list) -> [Evaluation]``: this process's own evaluation (one torch thread while the
    workers run); ``prime(atoms)``: make ``atoms`` (the first cell) the reference for neighbour-graph
    reuse before each local cell, as the workers do, so that pooled and serial forces are identical.
    """
    if local is None:
        return pool.evaluate(atoms_list, progress)
    import torch

    ref = atoms_list[0]

    def here(atoms):
        if prime is not None:
            prime(ref)  # the serial path's reference graph, as in the workers
        return local([atoms])[0]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the other cores run the workers
    try:
        return pool.evaluate(atoms_list, progress, local=here)
    finally:
        torch.set_num_threads(threads)
