"""The SevenNet models bundled in the ``sevenn`` wheel: SevenNet-0, SevenNet-l3i5 and SevenNet-MF-0 with its two
heads (``modal`` PBE and R2SCAN).

Each goes through atomvib's fast paths (hand-built graph reused across displaced cells, fused CPU kernels,
batched forward passes) and must give the forces of sevenn's own ASE calculator for the same model and head
to 1e-4 eV/Å (float32 round-off bound, see tests/test_engine_speedpaths.py) on tiny cells.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase.build import bulk

pytest.importorskip("sevenn")

from atomvib.engines import get_engine  # noqa: E402
from atomvib.engines.mlip import SevenNetEngine, parse_sevennet_model  # noqa: E402
from atomvib.errors import EngineError  # noqa: E402

TOL_EV_A = 1e-4

#: spec → (sevenn's pretrained name, modal); the MF-0 spec without a head gets the PBE head
BUNDLED = {
    "sevennet:7net-0": ("7net-0", None),
    "sevennet:7net-l3i5": ("7net-l3i5", None),
    "sevennet:7net-mf-0": ("7net-mf-0", "PBE"),
    "sevennet:7net-mf-0:r2scan": ("7net-mf-0", "R2SCAN"),
}


def _cells():
    """A rattled 8-atom rock-salt cell (non-zero forces), a 0.01 Å-displaced copy (graph reuse), and a rattled
    2-atom Si cell (another element pair, a fresh graph)."""
    rng = np.random.default_rng(3)
    base = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    base.positions += rng.normal(0.0, 0.04, base.positions.shape)
    moved = base.copy()
    moved.positions[0] += [0.01, 0.0, 0.0]
    si = bulk("Si", "diamond", a=5.43)
    si.positions += rng.normal(0.0, 0.04, si.positions.shape)
    return [base, moved, si]


@pytest.fixture(scope="module")
def cells():
    return _cells()


@pytest.fixture(scope="module", params=list(BUNDLED))
def bundled(request, cells):
    """(engine, stock forces and energies of the cells from sevenn's SevenNetCalculator)."""
    from sevenn.calculator import SevenNetCalculator

    name, modal = BUNDLED[request.param]
    engine = get_engine(request.param).load()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calc = SevenNetCalculator(name, device="cpu", modal=modal)
    ref = []
    for c in cells:
        a = c.copy()
        a.calc = calc
        ref.append((float(a.get_potential_energy()), np.array(a.get_forces())))
    return request.param, engine, ref


def test_fast_path_matches_stock_calculator(bundled, cells):
    spec, engine, ref = bundled
    engine._verlet = None
    evs = engine.evaluate(cells)
    assert max(np.abs(f).max() for _, f in ref) > 0.05  # not a check on vanishing forces
    for ev, (e_ref, f_ref) in zip(evs, ref):
        assert np.abs(ev.forces - f_ref).max() < TOL_EV_A, spec
        assert ev.energy == pytest.approx(e_ref, abs=1e-4 * max(1.0, abs(e_ref)))


def test_batched_path_matches_stock_calculator(bundled, cells):
    """Several cells per forward pass (the CUDA path; here on CPU): each head reaches every cell of a batch."""
    spec, engine, ref = bundled
    engine._verlet = None
    evs = engine.evaluate(cells, batch_size=3)
    for ev, (_, f_ref) in zip(evs, ref):
        assert np.abs(ev.forces - f_ref).max() < TOL_EV_A, spec


def test_kernel_path_and_provenance(bundled):
    from atomvib.engines import fused_tp

    spec, engine, _ = bundled
    info = engine.info
    assert info.kernel_path == ("fused" if fused_tp.HAVE_NUMBA else "rewritten")
    assert info.model_sha256 and len(info.model_sha256) == 64
    name, modal = BUNDLED[spec]
    assert info.settings.get("head") == modal
    # the recorded spec recreates the same engine (same model and head)
    assert get_engine(info.spec) is engine
    if modal:
        assert info.spec == f"sevennet:{name}:{modal.lower()}"
        assert modal in info.describe()


def test_heads_differ_and_are_separate_engines():
    pbe, r2scan = get_engine("sevennet:7net-mf-0"), get_engine("sevennet:7net-mf-0:r2scan")
    assert pbe is get_engine("sevennet:7net-mf-0:PBE") and pbe is not r2scan
    assert pbe.info.identity() != r2scan.info.identity()  # checkpoints and caches keep them apart
    cell = _cells()[0]
    f_pbe = pbe.evaluate([cell])[0].forces
    f_r2 = r2scan.evaluate([cell])[0].forces
    assert np.abs(f_pbe - f_r2).max() > 1e-3


def test_worker_factory_keeps_the_head():
    engine = get_engine("sevennet:7net-mf-0:r2scan")
    worker = engine._worker_factory()()
    assert isinstance(worker, SevenNetEngine) and worker.head == "R2SCAN" and worker.spec == engine.spec


def test_spec_parsing(tmp_path):
    assert parse_sevennet_model(None) == ("7net-0", None)
    assert parse_sevennet_model("7net-mf-0:r2scan") == ("7net-mf-0", "r2scan")
    assert parse_sevennet_model("7net-l3i5") == ("7net-l3i5", None)
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"")
    assert parse_sevennet_model(f"{ckpt}:pbe") == (str(ckpt), "pbe")
    assert parse_sevennet_model(str(ckpt)) == (str(ckpt), None)
    assert parse_sevennet_model("no-such-model:x") == ("no-such-model:x", None)


def test_unknown_or_needless_head_is_refused():
    with pytest.raises(EngineError, match="r2scan"):
        SevenNetEngine("7net-mf-0:hse")
    with pytest.raises(EngineError, match="single head"):
        SevenNetEngine("7net-l3i5:pbe")


def test_engines_listing_names_the_bundled_models():
    from atomvib.engines.registry import list_engines

    rows = {r["name"]: r for r in list_engines()}
    for spec in ("sevennet", "sevennet:7net-l3i5", "sevennet:7net-mf-0"):
        assert spec in rows and rows[spec]["usable"], spec
    assert ":r2scan" in rows["sevennet:7net-mf-0"]["description"]
