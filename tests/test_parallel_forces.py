"""Worker-pool forces (engines/parallel.py): identical to the serial path, in order, errors surfaced.

The pool splits cells between this process and its workers, so every comparison covers both.

Cells of different compositions and sizes, rattled by 0.05 Å so that no cell can reuse another's
neighbour graph: the pool and the serial path then run the same arithmetic on one torch thread, and
their float32 forces agree to round-off (1e-6 eV/Å).
"""

from __future__ import annotations

import functools
import multiprocessing
import os

import numpy as np
import pytest
from ase.build import bulk

from atomvib.engines import parallel
from atomvib.errors import EngineError, InputError


def _cells():
    specs = [
        ("Si", "diamond", 5.43, (2, 1, 1)),
        ("NaCl", "rocksalt", 5.64, (1, 1, 2)),
        ("Cu", "fcc", 3.61, (2, 2, 1)),
        ("MgO", "rocksalt", 4.21, (1, 1, 1)),
        ("Al", "fcc", 4.05, (1, 2, 1)),
        ("C", "diamond", 3.57, (1, 1, 1)),
    ]
    out = []
    for k, (formula, kind, a, rep) in enumerate(specs):
        atoms = bulk(formula, kind, a=a, cubic=True).repeat(rep)
        atoms.rattle(0.05, seed=k)
        out.append(atoms)
    return out


@pytest.fixture(scope="module")
def chgnet_pooled():
    """A CHGNet engine whose evaluate went through a 2-worker pool, with serial and pooled results."""
    pytest.importorskip("chgnet")
    from atomvib.engines.mlip import CHGNetEngine

    mp = pytest.MonkeyPatch()
    engine = CHGNetEngine()
    cells = _cells()
    try:
        mp.setenv("ATOMVIB_WORKERS", "1")
        serial = engine.evaluate(cells)
        assert engine._pool is None
        mp.setenv("ATOMVIB_WORKERS", "2")
        mp.setattr(engine, "pool_min_cell_atoms", 0, raising=False)  # these test cells are small
        ticks, here = [], []
        own = engine._evaluate_here

        def counted(atoms_list, *a, **k):
            here.extend(len(x) for x in atoms_list)
            return own(atoms_list, *a, **k)

        mp.setattr(engine, "_evaluate_here", counted)
        pooled = engine.evaluate(cells, progress=ticks.append)
        mp.setattr(engine, "_evaluate_here", own)
        # both lanes worked: this process took cells from the end, the worker from the front
        assert 0 < len(here) < len(cells) and here[0] == len(cells[-1])
        yield engine, cells, serial, pooled, ticks
    finally:
        engine.close_pool()
        mp.undo()


def test_pool_forces_equal_serial_in_order(chgnet_pooled):
    engine, cells, serial, pooled, ticks = chgnet_pooled
    assert engine._pool is not None and engine._pool.workers == 1  # + this process: 2 lanes
    assert ticks == [1] * len(cells)  # one progress tick per finished cell
    assert len(pooled) == len(cells)
    for atoms, s, p in zip(cells, serial, pooled):
        assert p.forces.shape == (len(atoms), 3)  # sizes differ per cell: a shuffled order would show
        np.testing.assert_allclose(p.forces, s.forces, rtol=0, atol=1e-6)
        assert p.energy == pytest.approx(s.energy, abs=1e-6 * len(atoms))
    # the cells are physically different: energies per atom differ, so equality above is not vacuous
    per_atom = [p.energy / len(a) for a, p in zip(cells, pooled)]
    assert len({round(e, 3) for e in per_atom}) == len(cells)


def test_worker_error_is_engine_error_and_pool_survives(chgnet_pooled):
    engine, cells, serial, _, _ = chgnet_pooled
    bad = cells[0].copy()
    bad.numbers[0] = 118  # CHGNet's embedding covers Z = 1..94
    with pytest.raises(EngineError, match=r"structure 2( in a worker process)?: RuntimeError"):
        engine.evaluate([cells[3], cells[4], bad, cells[5]])
    again = engine.evaluate(cells[:2])  # warm pool: still there, still right
    assert engine._pool.alive
    np.testing.assert_allclose(again[1].forces, serial[1].forces, rtol=0, atol=1e-6)


def test_engine_that_cannot_load_in_worker():
    pytest.importorskip("chgnet")
    from atomvib.engines.mlip import CHGNetEngine

    factory = functools.partial(CHGNetEngine, "/nonexistent/model.pth.tar")
    pool = parallel.WorkerPool(factory, 2, name="chgnet:/nonexistent/model.pth.tar")
    try:
        with pytest.raises(EngineError, match="loading the engine failed: EngineUnavailable"):
            pool.evaluate(_cells()[:2])
    finally:
        pool.close()
    assert not pool.alive


def test_dead_worker_is_engine_error_not_a_hang():
    # the worker's engine factory is os.abort: the process dies while loading
    pool = parallel.WorkerPool(os.abort, 2, name="abort")
    with pytest.raises(EngineError, match="died"):
        pool.evaluate(_cells()[:2])
    assert not pool.alive


def _pool_size_in_child(queue):
    queue.put(parallel.pool_size(100, 1000))


def test_pool_size_rules(monkeypatch):
    monkeypatch.setattr(parallel, "available_cores", lambda: 2)
    monkeypatch.setattr(parallel, "MIN_ATOMS_COLD", 800)
    monkeypatch.delenv("ATOMVIB_WORKERS", raising=False)
    assert parallel.pool_size(100, 1000) == 2  # default: the available cores
    assert parallel.pool_size(100, 1000, device="cuda:0") == 0
    assert parallel.pool_size(3, 1000) == 0  # cold pool, fewer than 2 cells per worker
    assert parallel.pool_size(8, 10) == 0  # cold pool, too little work to pay for loading the model
    assert parallel.pool_size(3, 10, warm=True) == 2
    monkeypatch.setenv("ATOMVIB_WORKERS", "1")
    assert parallel.pool_size(100, 1000) == 0
    monkeypatch.setenv("ATOMVIB_WORKERS", "two")
    with pytest.raises(InputError, match="ATOMVIB_WORKERS"):
        parallel.pool_size(100, 1000)
    # a daemonic process (a Dask worker) may not start children
    monkeypatch.setenv("ATOMVIB_WORKERS", "2")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_pool_size_in_child, args=(queue,), daemon=True)
    child.start()
    assert queue.get(timeout=30) == 0
    child.join()


def _phonon_cells(n):
    """The first ``n`` displaced 144-atom supercells of PNO (Cc, mp-36066, the benchmark's case)."""
    import gzip
    import json
    import warnings
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "petretto-dfpt" / "valid.jsonl.gz"
    if not path.is_file():
        pytest.skip("reference data ../shared/data/petretto-dfpt not present")
    from pymatgen.core import Structure as PmgStructure
    from pymatgen.io.ase import AseAtomsAdaptor

    from atomvib.harmonic.displacements import plan_displacements
    from atomvib.settings import PhononSettings
    from atomvib.structure import Structure

    with gzip.open(path, "rt") as fh:
        row = next(r for r in map(json.loads, fh) if r["material_id"] == "mp-36066")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atoms = AseAtomsAdaptor.get_atoms(PmgStructure.from_str(row["cif"], fmt="cif"))
    return plan_displacements(Structure.from_ase(atoms), PhononSettings(relax=False)).supercells()[:n]


def test_pool_reuses_the_serial_reference_graph(chgnet_pooled, monkeypatch):
    """Phonon input: displaced copies of one supercell, where CHGNet reuses the first cell's graph
    (bonds that cross a cutoff by 0.01 Å change forces by ~1e-5 eV/Å). Each worker takes its reference
    graph from the same first cell as the serial path, so the forces are the serial ones."""
    engine = chgnet_pooled[0]
    cells = _phonon_cells(6)
    monkeypatch.setenv("ATOMVIB_WORKERS", "1")
    engine._ref = None
    serial = engine.evaluate(cells)
    monkeypatch.setenv("ATOMVIB_WORKERS", "2")
    pooled = engine.evaluate(cells)
    assert engine._pool.alive
    for s, p in zip(serial, pooled):
        np.testing.assert_allclose(p.forces, s.forces, rtol=0, atol=1e-6)
