"""Engine provenance (EngineInfo) and the guards around the speed paths (engines/guards.py).

The SevenNet tests load the real SevenNet-0 model shipped in the ``sevenn`` wheel (~1 s per load) and
compare forces on an 8-atom rattled NaCl cell against sevenn's own calculator (the stock code): the
fallbacks must give those forces (same model code; float32, summation order of a different edge list:
1e-4 eV/Å, as in tests/test_engine_speedpaths.py).
"""

from __future__ import annotations

import ast
import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from atomvib.engines import Engine, EngineInfo, SpeedPathFallback, clear_engine_cache, get_engine, guards
from atomvib.engines.registry import ENGINE_CACHE

TOL_EV_A = 1e-4
ENGINES_DIR = Path(__file__).resolve().parents[1] / "src" / "atomvib" / "engines"


# ------------------------------------------------------------------------------------ EngineInfo


def _fake_version(monkeypatch, dist: str, version: str) -> None:
    """Make the guards see ``version`` installed for ``dist`` (every other package as it is)."""
    real = guards.installed_version
    monkeypatch.setattr(guards, "installed_version", lambda d: version if d == dist else real(d))


def test_engine_info_round_trip_identity_and_describe():
    info = EngineInfo(
        "sevennet", "0.13.0", spec="sevennet:7net-0", model="SevenNet_0__11Jul2024", model_sha256="ab" * 32,
        packages={"torch": "2.13.0", "e3nn": "0.6.0"}, kernel_path="fused", settings={"dtype": "float32"},
    )  # fmt: skip
    d = info.to_dict()
    assert EngineInfo.from_dict(d) == info
    assert set(info.identity()) == {
        "name", "spec", "version", "model", "model_sha256", "packages", "kernel_path", "settings",
    }  # fmt: skip
    assert info.describe() == "sevennet 0.13.0 (SevenNet_0__11Jul2024, fused kernels)"
    # results written before provenance was typed: name/version/model/settings only
    old = EngineInfo.from_dict({"name": "xtb", "version": "0.8.0", "model": "GFN2-xTB", "settings": {}})
    assert (old.name, old.model, old.spec, old.kernel_path, old.packages) == ("xtb", "GFN2-xTB", "", "", {})
    assert EngineInfo("emt", "3.29.0").describe() == "emt 3.29.0"


@pytest.mark.parametrize(
    "spec,canonical",
    [("emt", "emt"), ("lj", "lj"), ("lj:3.4,0.0104", "lj:3.4,0.0104"), ("xtb", "xtb:gfn2"),
     ("xtb:GFN1-xTB", "xtb:gfn1"), ("pyscf:hf/sto-3g", "pyscf:hf/sto-3g")],
)  # fmt: skip
def test_spec_recreates_the_engine(spec, canonical):
    if spec.startswith(("xtb", "pyscf")):
        pytest.importorskip({"x": "tblite", "p": "pyscf"}[spec[0]])
    engine = get_engine(spec)
    info = engine.info
    assert info.spec == canonical
    again = get_engine(info.spec)
    assert again is engine  # one engine per canonical spec
    assert again.info.identity() == info.identity()


def test_xtb_spec_tells_gfn1_from_gfn2():
    pytest.importorskip("tblite")
    gfn1, gfn2 = get_engine("xtb:gfn1").info, get_engine("xtb").info
    assert (gfn1.model, gfn2.model) == ("GFN1-xTB", "GFN2-xTB")
    assert get_engine(gfn1.spec).method == "GFN1-xTB"


def test_clear_engine_cache():
    a = get_engine("emt")
    clear_engine_cache()
    assert not ENGINE_CACHE
    assert get_engine("emt") is not a


def test_engine_has_no_forces_method():
    assert not hasattr(Engine, "forces")


# ------------------------------------------------------------------------------------ structure


def _engine_imports() -> dict[str, set[str]]:
    """engines module -> engines modules it imports, at module or function level."""
    graph = {}
    for path in ENGINES_DIR.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split(".")[0])
                else:
                    deps.update(a.name for a in node.names)
        graph[path.stem] = deps - {path.stem}
    return graph


def test_no_import_cycles_among_engine_modules():
    graph = _engine_imports()
    state: dict[str, int] = {}

    def visit(m, trail):
        if state.get(m) == 1:
            raise AssertionError(f"import cycle: {' -> '.join(trail + [m])}")
        if state.get(m) == 2:
            return
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            visit(d, trail + [m])
        state[m] = 2

    for m in sorted(graph):
        visit(m, [])
    assert "registry" not in graph["parallel"] and "mlip" not in graph["parallel"]


def test_no_global_warning_filters_in_engines():
    """``warnings.simplefilter``/``filterwarnings`` only inside ``with warnings.catch_warnings()``."""
    for path in ENGINES_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        guarded = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.With) and any(
                isinstance(i.context_expr, ast.Call)
                and getattr(i.context_expr.func, "attr", "") == "catch_warnings"
                for i in node.items
            ):
                guarded.update(id(n) for n in ast.walk(node))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", "") in ("simplefilter", "filterwarnings")
                and id(node) not in guarded
            ):
                raise AssertionError(f"{path.name}:{node.lineno} installs a global warnings filter")


# ------------------------------------------------------------------------------------ version table


def test_version_problems(monkeypatch):
    assert guards._release("2.13.0+cpu") == (2, 13, 0)
    assert guards._release("0.14.0rc1") == (0, 14, 0)
    _fake_version(monkeypatch, "e3nn", "0.7.0")
    problems = guards.version_problems("rewritten")
    assert len(problems) == 1 and problems[0].startswith("e3nn 0.7.0 is outside the tested range")


# ------------------------------------------------------------------------------------ SevenNet guards


@pytest.fixture(scope="module")
def nacl():
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.fixture(scope="module")
def stock_forces(nacl):
    pytest.importorskip("sevenn")
    from sevenn.calculator import SevenNetCalculator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calc = SevenNetCalculator("7net-0", device="cpu")
    a = nacl.copy()
    a.calc = calc
    forces = np.array(a.get_forces())
    assert np.abs(forces).max() > 0.05  # not a check on vanishing forces
    return forces


def _load(engine):
    """Load ``engine``; the SpeedPathFallback warnings it issued."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        engine.load()
    return [w for w in seen if issubclass(w.category, SpeedPathFallback)]


def _patched_convolutions(engine):
    convs = [m for m in engine.calculator().model.modules() if type(m).__name__ == "IrrepsConvolution"]
    assert convs
    return [m for m in convs if "forward" in m.__dict__ or hasattr(m, "_uvu_plan")]


def test_normal_path_records_fused_kernels(nacl, stock_forces):
    from atomvib.engines import fused_tp
    from atomvib.engines.mlip import SevenNetEngine

    engine = SevenNetEngine()
    assert engine.info.kernel_path == ""  # decided at load
    assert _load(engine) == []
    info = engine.info
    assert info.kernel_path == ("fused" if fused_tp.HAVE_NUMBA else "rewritten")
    assert {"torch", "e3nn", "sevenn"} <= set(info.packages)
    from sevenn.util import pretrained_name_to_path

    weights = Path(pretrained_name_to_path("7net-0")).read_bytes()
    assert info.model_sha256 == hashlib.sha256(weights).hexdigest()
    assert info.spec == "sevennet:7net-0"
    assert info.describe() == f"sevennet {info.version} (SevenNet_0__11Jul2024, {info.kernel_path} kernels)"
    assert np.abs(engine.evaluate([nacl])[0].forces - stock_forces).max() < TOL_EV_A
    # the spec recreates it, and worker processes (engines/parallel.py) get the same code path
    assert get_engine(info.spec).spec == info.spec
    worker = engine._worker_factory()()
    assert (worker.spec, worker.rewrite_graphs, worker.fused_kernels) == (info.spec, True, fused_tp.HAVE_NUMBA)


def test_untested_version_falls_back_to_stock(monkeypatch, nacl, stock_forces):
    from atomvib.engines.mlip import SevenNetEngine

    _fake_version(monkeypatch, "e3nn", "0.7.0")
    engine = SevenNetEngine()
    fallbacks = _load(engine)
    assert len(fallbacks) == 1 and "e3nn 0.7.0" in str(fallbacks[0].message)
    assert engine.info.kernel_path == "stock"
    assert _patched_convolutions(engine) == []  # SevenNet's own code
    assert engine._worker_factory()().rewrite_graphs is False  # workers run the stock code too
    assert np.abs(engine.evaluate([nacl])[0].forces - stock_forces).max() < TOL_EV_A


def test_untested_numba_keeps_the_rewrite(monkeypatch, nacl, stock_forces):
    from atomvib.engines import fused_tp
    from atomvib.engines.mlip import SevenNetEngine

    if not fused_tp.HAVE_NUMBA:
        pytest.skip("numba not installed")
    _fake_version(monkeypatch, "numba", "0.99.0")
    engine = SevenNetEngine()
    fallbacks = _load(engine)
    assert len(fallbacks) == 1 and "numba 0.99.0" in str(fallbacks[0].message)
    assert engine.info.kernel_path == "rewritten"
    assert np.abs(engine.evaluate([nacl])[0].forces - stock_forces).max() < TOL_EV_A


def test_disagreeing_fast_path_falls_back_to_stock(monkeypatch, nacl, stock_forces):
    """The fast path computes something else (here: features scaled by 1 %): caught by the probe."""
    from atomvib.engines import graph_rewrite
    from atomvib.engines.mlip import SevenNetEngine

    for name in ("_sevennet_fused_forward", "_sevennet_convolution_forward"):
        real = getattr(graph_rewrite, name)

        def perturbed(self, data, _real=real):
            data = _real(self, data)
            data[self.key_x] = data[self.key_x] * 1.01
            return data

        monkeypatch.setattr(graph_rewrite, name, perturbed)
    engine = SevenNetEngine()
    fallbacks = _load(engine)
    assert len(fallbacks) == 1 and "max |ΔF|" in str(fallbacks[0].message)
    assert engine.info.kernel_path == "stock"
    assert _patched_convolutions(engine) == []  # a fresh stock model, not the patched one
    assert np.abs(engine.evaluate([nacl])[0].forces - stock_forces).max() < TOL_EV_A


# ------------------------------------------------------------------------------------ CHGNet guard


def test_chgnet_untested_version_rebuilds_graphs(monkeypatch):
    pytest.importorskip("chgnet")
    from atomvib.engines.mlip import CHGNetEngine

    cells = [bulk("NaCl", "rocksalt", a=5.64, cubic=True)]
    cells[0].rattle(0.03, seed=1)
    moved = cells[0].copy()
    moved.positions[0, 0] += 0.01
    cells.append(moved)
    reference = CHGNetEngine()
    assert _load(reference) == [] and reference.info.settings["graph_reuse"] is True
    _fake_version(monkeypatch, "chgnet", "0.5.0")
    engine = CHGNetEngine()
    fallbacks = _load(engine)
    assert len(fallbacks) == 1 and "chgnet 0.5.0" in str(fallbacks[0].message)
    assert engine.info.settings["graph_reuse"] is False and engine.info.kernel_path == "stock"
    worker = engine._worker_factory()()
    assert (worker.spec, worker.reuse_graphs) == ("chgnet:0.3.0", False)
    assert reference.info.model_sha256 == engine.info.model_sha256 != ""
    assert reference._worker_factory()().spec == "chgnet:0.3.0"  # the bundled name, not its file
    evs = engine.evaluate(cells)
    assert engine._ref is None  # no reference graph kept: each cell's graph is CHGNet's own
    for ev, ref in zip(evs, reference.evaluate(cells)):
        assert np.abs(ev.forces - ref.forces).max() < 1e-5  # graph reuse vs fresh graph (0.01 Å step)


def test_dos_predictor_untested_version_keeps_stock_kernels(monkeypatch):
    """The predictor's interactions use the same rewritten/fused kernels: same guard, same fallback."""
    import warnings

    from ase.build import bulk

    from atomvib.learn.predictor import DEFAULT_MODEL, Predictor, load_model
    from atomvib.structure import Structure

    fast = load_model()
    assert fast.kernel_path in ("fused", "rewritten")
    _fake_version(monkeypatch, "e3nn", "0.7.0")
    import torch

    blob = torch.load(DEFAULT_MODEL, map_location="cpu", weights_only=False)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        slow = Predictor(blob, str(DEFAULT_MODEL))
    fallbacks = [w for w in rec if issubclass(w.category, guards.SpeedPathFallback)]
    assert len(fallbacks) == 1 and "e3nn 0.7.0" in str(fallbacks[0].message)
    assert slow.kernel_path == "stock"
    s = Structure.from_ase(bulk("NaCl", "rocksalt", a=5.64))
    a, b = fast.predict([s])[0], slow.predict([s])[0]
    np.testing.assert_allclose(a.dos, b.dos, rtol=1e-4, atol=1e-6 * a.dos.max())


def test_raman_with_untested_tblite_refuses_instead_of_guessing(monkeypatch):
    from ase.build import molecule

    import atomvib
    from atomvib.errors import EngineError
    from atomvib.spectra.raman import raman_spectrum

    w = atomvib.phonons(molecule("H2O"), engine="xtb")
    _fake_version(monkeypatch, "tblite", "0.9.1")
    with pytest.raises(EngineError, match="tblite 0.9.1 is outside the tested range"):
        raman_spectrum(w)


def test_phonopy_helper_untested_version_uses_the_public_api(monkeypatch):
    """Force constants through phonopy's public methods agree with phonopy.load's helper."""
    import warnings

    from conftest import SHARED_DATA

    d = SHARED_DATA / "phonopy-examples" / "NaCl"
    if not d.is_dir():
        pytest.skip("reference data ../shared/data not present")
    from atomvib.settings import PhononSettings
    from atomvib.workflow import read_phonopy_files

    ref, _ = read_phonopy_files(d / "phonopy_disp.yaml", d / "FORCE_SETS", None, PhononSettings())
    _fake_version(monkeypatch, "phonopy", "5.0.0")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        alt, _ = read_phonopy_files(d / "phonopy_disp.yaml", d / "FORCE_SETS", None, PhononSettings())
    assert sum(issubclass(w.category, guards.SpeedPathFallback) for w in rec) == 1
    a, b = ref.force_constants, alt.force_constants
    assert a.shape == b.shape
    np.testing.assert_allclose(b, a, atol=1e-6 * np.abs(a).max())


def test_coherent_wedge_untested_euphonic_uses_euphonics_own_average(monkeypatch):
    import warnings

    from ase.build import bulk

    import atomvib
    from atomvib.spectra.coherent import coherent_powder_map

    r = atomvib.phonons(bulk("Al", "fcc", a=4.05), engine="emt", relax=False, mesh_density=10)
    ebins = np.linspace(0.5, 40.0, 30)
    ref = coherent_powder_map(r, [2.5], ebins, dw_mesh=2, npts=300, symmetry=False).intensity
    _fake_version(monkeypatch, "euphonic", "2.2.0")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        got = coherent_powder_map(r, [2.5], ebins, dw_mesh=2, npts=300).intensity
    assert sum(issubclass(w.category, guards.SpeedPathFallback) for w in rec) == 1
    np.testing.assert_allclose(got, ref, rtol=1e-10)
