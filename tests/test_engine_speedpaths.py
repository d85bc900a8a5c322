"""The MLIP engines' fast force paths give the forces of their plain ASE calculators.

atomvib's SevenNet and CHGNet engines call the model directly, reuse the perfect supercell's
neighbour graph for its displaced copies and can batch several cells per forward pass
(src/atomvib/engines/mlip.py). Each shortcut is checked here against the package's own ASE calculator
(a fresh graph, one cell per call, SevenNet without atomvib's e3nn kernel rewrite) on small rattled
cells. Both models compute in float32: forces of
~1 eV/Å carry ~1e-7 relative round-off, and summation order differs between the paths, so 1e-4 eV/Å is
a round-off bound with margin, 1e-5 eV/Å where only the graph is reused.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from atomvib.engines import get_engine

TOL_EV_A = 1e-4  # float32 round-off bound for forces of O(1) eV/Å (see module docstring)
REUSE_TOL_EV_A = 1e-5  # graph reuse vs a fresh graph, same model call


def _cells():
    """Perfect 16-atom NaCl cell, three 0.01 Å-displaced copies (phonon-like, wrapped into the cell),
    one rattled by 0.1 Å (beyond the reuse limits: must be rebuilt), one strained cell (new cell)."""
    rng = np.random.default_rng(7)
    base = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat((2, 1, 1))
    base.positions += rng.normal(0.0, 0.03, base.positions.shape)  # low symmetry: non-zero forces
    cells = [base.copy()]
    for _ in range(3):
        a = base.copy()
        d = rng.normal(size=(len(a), 3))
        a.positions += 0.01 * d / np.linalg.norm(d, axis=1, keepdims=True)
        a.wrap()  # phonopy's supercells are wrapped too: the fast path must undo the image jump
        cells.append(a)
    far = base.copy()
    far.positions += rng.normal(0.0, 0.1, far.positions.shape)
    cells.append(far)
    strained = base.copy()
    strained.set_cell(base.cell * 1.02, scale_atoms=True)
    cells.append(strained)
    return cells


def _stock_calculator(engine):
    """The package's own ASE calculator, without atomvib's kernel rewrite (engines/graph_rewrite.py)."""
    if engine.info.name == "sevennet":
        from sevenn.calculator import SevenNetCalculator

        # the engine's own checkpoint and head (all bundled SevenNet models: tests/test_bundled_engines.py)
        return SevenNetCalculator(engine._weights_file(), device="cpu", modal=engine.head)
    return engine.calculator()  # CHGNet: not rewritten


def _reference(engine, cells):
    calc = _stock_calculator(engine)
    out = []
    for c in cells:
        a = c.copy()
        a.calc = calc
        out.append((a.get_potential_energy(), np.array(a.get_forces())))
    return out


@pytest.fixture(scope="module", params=["sevennet", "chgnet"])
def engine(request):
    pytest.importorskip({"sevennet": "sevenn", "chgnet": "chgnet"}[request.param])
    eng = get_engine(request.param)
    eng.calculator()
    return eng


@pytest.fixture(scope="module")
def cells():
    return _cells()


@pytest.fixture(scope="module")
def reference(engine, cells):
    return _reference(engine, cells)


def _reset(engine):
    for attr in ("_verlet", "_ref"):
        if hasattr(engine, attr):
            setattr(engine, attr, None)


def test_fast_path_matches_ase_calculator(engine, cells, reference):
    _reset(engine)
    evs = engine.evaluate(cells)
    assert max(np.abs(reference[0][1]).max(), 0) > 0.05  # the check is not on vanishing forces
    for ev, (e_ref, f_ref) in zip(evs, reference):
        assert ev.forces.shape == f_ref.shape and ev.forces.dtype == np.float64
        assert np.abs(ev.forces - f_ref).max() < TOL_EV_A
        # float32 total energy of ~-50 eV: a few ulp
        assert ev.energy == pytest.approx(float(e_ref), abs=1e-4 * max(1.0, abs(float(e_ref))))


def test_graph_reuse_equals_fresh_graph(engine, cells):
    """Displaced copies evaluated with the perfect cell's graph == each evaluated cold."""
    _reset(engine)
    reused = engine.evaluate(cells[:4])
    cold = []
    for c in cells[:4]:
        _reset(engine)
        cold.append(engine.evaluate([c])[0])
    for r, c in zip(reused, cold):
        assert np.abs(r.forces - c.forces).max() < REUSE_TOL_EV_A


def test_cache_not_used_for_a_different_cell(engine, cells, reference):
    """After the perfect cell, a strained cell and a far-rattled one get their own graphs."""
    _reset(engine)
    evs = engine.evaluate([cells[0], cells[5], cells[0], cells[4]])
    for ev, i in zip(evs, [0, 5, 0, 4]):
        assert np.abs(ev.forces - reference[i][1]).max() < TOL_EV_A


def test_batched_equals_unbatched(engine, cells):
    """Several cells in one forward pass (the GPU path) give each cell's own forces."""
    _reset(engine)
    one = engine.evaluate(cells, batch_size=1)
    _reset(engine)
    batched = engine.evaluate(cells, batch_size=4)
    assert len(batched) == len(cells)
    for a, b in zip(one, batched):
        assert np.abs(a.forces - b.forces).max() < TOL_EV_A
        assert a.energy == pytest.approx(b.energy, abs=1e-4 * max(1.0, abs(a.energy)))


def test_progress_counts_every_cell(engine, cells):
    seen = []
    engine.evaluate(cells[:3], progress=seen.append, batch_size=2)
    assert sum(seen) == 3


def test_no_autograd_graph_outlives_a_call(engine, cells):
    """When the model is called for a cell, nothing of the previous call is alive (CHGNet's forces carry a
    create_graph=True graph: one left in a loop variable kept a whole call's graph, so each call's peak
    memory held two: 2.6 instead of 1.4 GB on a 256-atom cell)."""
    import gc

    import torch

    def graphs_alive():
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.grad_fn is not None)

    alive = []
    hook = engine.calculator().model.register_forward_pre_hook(lambda mod, args: alive.append(graphs_alive()))
    try:
        engine.evaluate(cells[:3], batch_size=1)
    finally:
        hook.remove()
    assert len(alive) == 3 and alive[1] == alive[0] and alive[2] == alive[0]
