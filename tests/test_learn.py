"""The learned DOS predictor: dataset layer, physics by construction, shipped model, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PETRETTO = DATA / "petretto-dfpt"
WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "atomvib" / "learn" / "weights"


def _need_petretto():
    if not (PETRETTO / "valid.jsonl.gz").exists():
        pytest.skip("shared Petretto data not available")


def _need_model():
    if not (WEIGHTS / "model.pt").exists():
        pytest.skip("shipped model not built")


def _si():
    from ase.build import bulk

    return bulk("Si", "diamond", a=5.43)


# ---- dataset layer ------------------------------------------------------------------------------


def test_bin_states_conserves_states_of_an_analytic_dos():
    from atomvib.learn.data import DosGrid

    # Debye DOS g = 9N ν²/ν_D³ on 0..ν_D (N = 2 atoms): 6 states, half of them below ν_D/2^(1/3)
    f = np.arange(-20.0, 700.0, 1.0)
    nu_d = 500.0
    g = np.where((f >= 0) & (f <= nu_d), 9 * 2 * f**2 / nu_d**3, 0.0)
    grid = DosGrid(10.0, 4000.0)
    b = grid.bin_states(f, g)
    assert b.sum() == pytest.approx(g.sum(), rel=1e-12)
    c = np.cumsum(b)
    k = int(round(nu_d / 2 ** (1 / 3) / 10.0))  # bin edge closest to the half-count frequency
    assert c[k - 1] == pytest.approx(3.0, abs=0.1)


def test_petretto_reader_normalisation_and_formula_units():
    _need_petretto()
    from atomvib.learn.data import read_petretto

    samples = read_petretto(PETRETTO / "valid.jsonl.gz", limit=15)
    for s in samples:
        n = s.structure.natoms
        assert s.states_per_bin.sum() == pytest.approx(3 * n, rel=1e-9)
        assert np.sum(s.dos_per_cm1) * (s.dos_freqs_cm1[1] - s.dos_freqs_cm1[0]) == pytest.approx(
            3 * n, rel=1e-9
        )
        assert s.formula_units >= 1 and n % s.formula_units == 0
    # Z is read from the CIF, not guessed: mp-2 style records state it explicitly
    import gzip

    first = json.loads(gzip.open(PETRETTO / "valid.jsonl.gz", "rt").readline())
    import re

    z = int(re.search(r"_cell_formula_units_Z\s+(\d+)", first["cif"]).group(1))
    assert samples[0].formula_units == z


def test_target_dos_reproduces_published_heat_capacity():
    """Physics check of the target: thermal_from_dos on the DFPT DOS gives Petretto's Cv(300 K) to 0.1 %."""
    _need_petretto()
    from atomvib.learn.data import read_petretto
    from atomvib.learn.metrics import AXIS_CM1, on_axis, thermal_300

    checked = 0
    for s in read_petretto(PETRETTO / "valid.jsonl.gz", limit=30):
        if not s.thermo:
            continue
        i = s.thermo["temperature_K"].index(300.0)
        t = thermal_300(AXIS_CM1, on_axis(s.dos_freqs_cm1, s.dos_per_cm1), s.formula_units)
        assert t["cv"] == pytest.approx(s.thermo["heat_capacity_cv_J_per_K"][i], rel=1e-3)
        assert t["s"] == pytest.approx(s.thermo["entropy_J_per_K"][i], rel=2e-3, abs=0.05)
        checked += 1
    assert checked >= 20


@pytest.fixture(scope="module")
def al_results(tmp_path_factory):
    """Two tiny `atomvib phonons` result directories (EMT Al and Cu)."""
    from ase.build import bulk

    import atomvib
    from atomvib.output import write_result

    root = tmp_path_factory.mktemp("results")
    out = {}
    for sym, a in (("Al", 4.05), ("Cu", 3.61)):
        r = atomvib.phonons(bulk(sym, "fcc", a=a), engine="emt", relax=False, mesh_density=20)
        d = root / sym
        d.mkdir()
        write_result(r, d, plot=False)
        out[sym] = r
    return root, out


def test_results_dir_reader(al_results):
    from atomvib.learn.data import read_results_dir
    from atomvib.learn.metrics import AXIS_CM1, thermal_300

    root, res = al_results
    samples = {s.id: s for s in read_results_dir(root)}
    assert set(samples) == {"Al", "Cu"}
    for sym, s in samples.items():
        assert s.states_per_bin.sum() == pytest.approx(3 * s.structure.natoms, rel=1e-9)
        # the DOS read back gives the workflow's own Cv(300 K) (per mole of cell)
        cv_workflow = res[sym].thermal_.at(300.0)["heat_capacity_J_per_K_per_mol"]
        cv_read = thermal_300(AXIS_CM1, np.interp(AXIS_CM1, s.dos_freqs_cm1, s.dos_per_cm1, right=0), 1)["cv"]
        assert cv_read == pytest.approx(cv_workflow, rel=5e-3)


# ---- model physics ------------------------------------------------------------------------------


def _net_and_structure():
    import torch

    from atomvib.learn.model import DosNet

    torch.manual_seed(0)
    net = DosNet(400, hidden="16x0e + 4x1o", ninteractions=2, nscalars_out=16)
    rng = np.random.default_rng(1)
    cell = np.array([[4.0, 0.3, 0.0], [0.2, 4.5, 0.1], [0.0, 0.4, 5.0]])
    frac = rng.random((5, 3))
    return net, _struct([8, 8, 12, 14, 8], frac @ cell, cell)


def _struct(numbers, positions, cell):
    from ase import Atoms

    from atomvib.structure import Structure

    return Structure.from_ase(Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True))


def _run(net, s):
    from atomvib.learn.data import build_graph
    from atomvib.learn.model import collate

    return net(collate([build_graph(s)])).detach().numpy()[0]


def test_dos_is_invariant_under_rotation_translation_permutation():
    from scipy.spatial.transform import Rotation

    net, s = _net_and_structure()
    ref = _run(net, s)
    rot = Rotation.from_euler("zyx", [0.7, -1.1, 2.3]).as_matrix()
    perm = np.array([3, 0, 4, 1, 2])
    moved = _struct(s.numbers[perm], (s.positions[perm] + [0.3, -1.2, 2.0]) @ rot.T, s.cell @ rot.T)
    assert np.max(np.abs(_run(net, moved) - ref)) < 1e-5
    # inversion (improper rotation) too: the readout sees only scalars
    inv = _struct(s.numbers, -s.positions, -s.cell)
    assert np.max(np.abs(_run(net, inv) - ref)) < 1e-5


def test_normalisation_and_non_negativity_by_construction():
    net, s = _net_and_structure()
    out = _run(net, s)  # untrained weights: the constraint does not depend on training
    assert np.all(out >= 0)
    assert out.sum() == pytest.approx(3 * s.natoms, rel=1e-5)


# ---- shipped model ------------------------------------------------------------------------------


def test_shipped_model_predicts_silicon():
    _need_model()
    from atomvib.learn import predict

    (r,) = predict(_si())
    w = r.frequencies_cm1[1] - r.frequencies_cm1[0]
    assert np.all(np.isfinite(r.dos)) and np.all(r.dos >= 0) and np.all(r.dos_std >= 0)
    assert r.dos.sum() * w == pytest.approx(6.0, rel=1e-5)
    assert r.in_distribution
    # DFT Si: optical modes end at ~520 cm^-1 (Raman line); nothing above ~560 cm^-1
    cum = np.cumsum(r.dos) * w
    assert cum[r.frequencies_cm1 < 600].max() > 0.95 * 6  # the smooth model tail holds the rest
    # Dulong–Petit limit at high T, and Cv(300 K) of Si per mole of 2-atom cell ≈ 2 × 19.8 J/K/mol
    k = int(np.argmin(np.abs(r.temperatures_k - 300)))
    assert r.heat_capacity_j_per_k_per_mol[k] == pytest.approx(2 * 19.8, rel=0.06)
    assert r.heat_capacity_j_per_k_per_mol[-1] < 6 * 8.314462618
    # the fast linear-kernel thermal path equals thermal_from_dos on the predicted DOS
    from atomvib import units
    from atomvib.harmonic.thermal import thermal_from_dos

    th = thermal_from_dos(
        units.convert_frequency(r.frequencies_cm1, "cm-1", "THz"), r.dos * units.THZ_TO_CM1, r.temperatures_k
    )
    np.testing.assert_allclose(
        r.heat_capacity_j_per_k_per_mol, th.heat_capacity_j_per_k_per_mol, rtol=1e-9, atol=1e-9
    )
    np.testing.assert_allclose(r.entropy_j_per_k_per_mol, th.entropy_j_per_k_per_mol, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(r.free_energy_kj_per_mol, th.free_energy_kj_per_mol, rtol=1e-9, atol=1e-9)


def test_molecule_and_unseen_element_are_refused():
    _need_model()
    from ase import Atoms
    from ase.build import molecule

    from atomvib.errors import InputError
    from atomvib.learn import load_model, predict

    with pytest.raises(InputError, match="molecule"):
        predict(molecule("H2O"))
    unseen = min(set(range(1, 95)) - load_model().elements)
    with pytest.raises(InputError, match="never seen"):
        predict(Atoms(numbers=[unseen], positions=[[0, 0, 0]], cell=np.eye(3) * 3.0, pbc=True))


def test_shipped_model_valid_metrics_match_model_card():
    _need_model()
    _need_petretto()
    from atomvib.learn import load_model
    from atomvib.learn.data import read_petretto
    from atomvib.learn.metrics import evaluate, summarise

    card = json.loads((WEIGHTS / "metrics.json").read_text())["valid"]
    samples = read_petretto(PETRETTO / "valid.jsonl.gz")
    m = summarise(evaluate(load_model().predict([s.structure for s in samples]), samples))
    assert m["n"] == card["n"] == 141
    for key in (
        "wasserstein_cm1_mean",
        "cv300_mae_J_per_K_per_mol_fu",
        "s300_mae_J_per_K_per_mol_fu",
        "mse51_mean",
    ):
        assert m[key] == pytest.approx(card[key], rel=1e-3), key
    assert m["target_check_cv300_max_rel_err"] < 0.01


# ---- CLI ----------------------------------------------------------------------------------------


def test_cli_predict_batch_with_a_bad_input(tmp_path, capsys):
    _need_model()
    from ase.build import molecule
    from ase.io import write

    from atomvib.cli.main import main

    write(tmp_path / "si.cif", _si())
    write(tmp_path / "water.xyz", molecule("H2O"))
    out = tmp_path / "p.jsonl"
    rc = main(["predict", str(tmp_path / "water.xyz"), str(tmp_path / "si.cif"), "--out", str(out)])
    assert rc == 2
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert "error" in lines[0] and "molecule" in lines[0]["error"]
    si = lines[1]
    assert si["formula"] == "Si" and si["formula_units"] == 2 and si["in_distribution"] is True
    f = np.asarray(si["frequencies_cm1"])
    assert np.sum(si["dos"]) * (f[1] - f[0]) == pytest.approx(6.0, rel=1e-5)
    th = si["thermal"]
    assert len(th["heat_capacity_J_per_K_per_mol_std"]) == len(th["temperature_K"])
    assert "water.xyz" in capsys.readouterr().err


def test_cli_predict_sensitive_flag_names_an_unseen_contact(tmp_path):
    """SnTe (rock salt, a thermoelectric): Sn and Te are both in training, but never in contact with each other.
    The standard flag lets it through; ``--ood sensitive`` flags it and names the contact. The prediction itself
    (DOS, Cv and its interval) does not depend on the flag."""
    _need_model()
    from ase.build import bulk
    from ase.io import write

    from atomvib.cli.main import main

    write(tmp_path / "snte.cif", bulk("SnTe", "rocksalt", a=6.32))
    lines = {}
    for ood in ("standard", "sensitive"):
        out = tmp_path / f"{ood}.jsonl"
        assert main(["predict", str(tmp_path / "snte.cif"), "--out", str(out), "--ood", ood, "-q"]) == 0
        (lines[ood],) = (json.loads(x) for x in out.read_text().splitlines())
        assert lines[ood]["ood_flag"] == ood
    assert lines["standard"]["in_distribution"] is True and lines["standard"]["ood_reason"] == ""
    assert lines["sensitive"]["in_distribution"] is False
    assert lines["sensitive"]["ood_reason"] == "unusual bonding: Sn–Te contacts (in no training crystal) on 100 % of the sites"
    for key in ("dos", "dos_std"):
        assert lines["sensitive"][key] == lines["standard"][key]
    assert lines["sensitive"]["thermal"] == lines["standard"]["thermal"]


def test_cli_train_on_own_results_then_predict(al_results, tmp_path):
    from atomvib.cli.main import main

    root, _ = al_results
    rc = main(
        ["train", "--data", str(root), "--out", str(tmp_path / "m"), "--members", "2", "--epochs", "2", "-q"]
    )
    assert rc == 0 and (tmp_path / "m" / "model.pt").exists()
    from ase.build import bulk
    from ase.io import write

    # every 10th result is held out as valid: Al (first) validates, Cu trains, so Al is "unseen"
    write(tmp_path / "cu.cif", bulk("Cu", "fcc", a=3.61))
    write(tmp_path / "al.cif", bulk("Al", "fcc", a=4.05))
    out = tmp_path / "p.jsonl"
    rc = main(
        [
            "predict",
            str(tmp_path / "cu.cif"),
            str(tmp_path / "al.cif"),
            "--model",
            str(tmp_path / "m"),
            "--out",
            str(out),
            "-q",
        ]
    )
    assert rc == 2
    cu, al = (json.loads(x) for x in out.read_text().splitlines())
    f = np.asarray(cu["frequencies_cm1"])
    assert np.sum(cu["dos"]) * (f[1] - f[0]) == pytest.approx(3.0, rel=1e-5)
    assert "never seen" in al["error"]
    # the sensitive flag needs the training counts of the shipped calibration file: one error, nothing written
    rc = main(["predict", str(tmp_path / "cu.cif"), "--model", str(tmp_path / "m"), "--out", str(tmp_path / "s.jsonl"),
               "--ood", "sensitive", "-q"])
    assert rc == 2 and not (tmp_path / "s.jsonl").exists()


def test_fused_kernels_give_the_same_dos_and_gradients():
    """engines/fused_tp.py in the interactions (what the shipped predictor runs) = e3nn + index_add."""
    import copy

    import torch

    from atomvib.engines import fused_tp
    from atomvib.engines.graph_rewrite import optimise_model
    from atomvib.learn.data import build_graph
    from atomvib.learn.model import collate

    if not fused_tp.HAVE_NUMBA:
        pytest.skip("numba not installed")
    net, s = _net_and_structure()
    fast = copy.deepcopy(net)
    assert optimise_model(fast)["fused"] == 2  # both interactions
    batch = collate([build_graph(s)])
    out = [m(batch) for m in (net, fast)]
    # float32 sums of O(1) terms: 1e-5 relative to the largest bin, with margin over round-off
    assert torch.allclose(out[0], out[1], rtol=0, atol=1e-5 * float(out[0].detach().abs().max()))
    weights = torch.linspace(-1.0, 1.0, out[0].shape[1])
    grads = [torch.autograd.grad((o * weights).sum(), list(m.parameters())) for o, m in zip(out, (net, fast))]
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=0, atol=1e-5 * max(float(a.abs().max()), 1e-6))
