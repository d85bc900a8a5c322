"""Learned Born charges and ε∞ (atomvib.learn.born) and their use for the LO–TO splitting (``--born predicted``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NACL = DATA / "phonopy-examples" / "NaCl"
SLICE = Path(__file__).parent / "data" / "born_valid_slice.json"
#: LO–TO splitting error for NaCl with the shipped model: measured +10.0 % (docs/born.md). The reference BORN is
#: VASP's, not the training DFT (Petretto's PBEsol NaCl: Z* 1.094 vs 1.087, ε∞ 2.57 vs 2.44, −4 % in Z*²/ε∞), so
#: half of that margin again is reference difference, not model error
LO_TO_TOL_PCT = 15.0


def _random_structures(n=3, seed=0):
    from ase import Atoms

    from atomvib.structure import Structure

    rng = np.random.default_rng(seed)
    out = []
    for _k in range(n):
        nat = int(rng.integers(2, 6))
        cell = np.diag(rng.uniform(3.5, 5.0, 3)) + rng.normal(0, 0.3, (3, 3))
        frac = rng.uniform(0, 1, (nat, 3))
        nums = rng.choice([3, 8, 11, 12, 17, 13, 9], nat)
        out.append(Structure.from_ase(Atoms(numbers=nums, scaled_positions=frac, cell=cell, pbc=True)))
    return out


@pytest.fixture(scope="module")
def net():
    import torch

    from atomvib.learn.born import make_net

    torch.manual_seed(0)
    m = make_net(hidden="8x0e + 4x1o + 4x1e + 4x2e", ninteractions=2)
    m.eval()
    return m


def _run(net, structures):
    import torch

    from atomvib.learn.data import build_graph
    from atomvib.learn.model import collate

    with torch.no_grad():
        z, e = net(collate([build_graph(s) for s in structures]))
    return z.double().numpy(), e.double().numpy()


def test_sum_rule_exact_on_random_structures(net):
    structures = _random_structures(4)
    z, _ = _run(net, structures)
    off = np.cumsum([0] + [s.natoms for s in structures])
    for i in range(len(structures)):
        zi = z[off[i]:off[i + 1]]
        assert np.abs(zi).max() > 1e-3  # not trivially zero
        assert np.abs(zi.sum(0)).max() < 1e-5


def test_rotation_equivariance_and_positive_definite(net):
    from scipy.spatial.transform import Rotation

    from atomvib.structure import Structure

    (s,) = _random_structures(1, seed=3)
    rot = Rotation.random(random_state=7).as_matrix()
    at = s.to_ase()
    at.set_cell(at.cell.array @ rot.T, scale_atoms=True)
    z1, e1 = _run(net, [s])
    z2, e2 = _run(net, [Structure.from_ase(at)])
    assert np.allclose(np.einsum("ab,jbc,dc->jad", rot, z1, rot), z2, atol=1e-4)
    assert np.allclose(rot @ e1[0] @ rot.T, e2[0], atol=1e-4)
    for e in (e1[0], e2[0]):
        assert np.allclose(e, e.T, atol=1e-6)
        assert np.linalg.eigvalsh(e).min() > 1.0


def test_symmetrize_site_symmetry_and_sum_rule():
    from ase.build import bulk

    from atomvib.learn.born import symmetrize
    from atomvib.structure import Structure

    s = Structure.from_ase(bulk("NaCl", "rocksalt", a=5.6))
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, 3, 3))
    z -= z.mean(0)
    e = np.eye(3) * 3 + np.diag([0.3, -0.1, 0.2])
    zs, es = symmetrize(s, z, e)
    for t in zs:  # cubic sites: isotropic
        assert np.allclose(t, np.trace(t) / 3 * np.eye(3), atol=1e-10)
    assert np.allclose(es, np.trace(e) / 3 * np.eye(3))
    assert np.abs(zs.sum(0)).max() < 1e-12


def test_polar_rule():
    from ase.build import bulk

    from atomvib.learn.born import is_polar_candidate
    from atomvib.structure import Structure

    assert is_polar_candidate(Structure.from_ase(bulk("NaCl", "rocksalt", a=5.6)))[0]
    assert not is_polar_candidate(Structure.from_ase(bulk("Si", "diamond", a=5.43)))[0]
    assert not is_polar_candidate(Structure.from_ase(bulk("NiAl", "cesiumchloride", a=2.88)))[0]


@pytest.fixture(scope="module")
def shipped():
    from atomvib.learn.born import DEFAULT_BORN_MODEL, load_born_model

    if not DEFAULT_BORN_MODEL.exists():
        pytest.skip("shipped Born model not available")
    return load_born_model()


def test_shipped_model_small_and_valid_slice_mae(shipped):
    from atomvib.learn.born import DEFAULT_BORN_MODEL, symmetrize
    from atomvib.structure import Structure

    assert DEFAULT_BORN_MODEL.stat().st_size < 2e6
    assert len(shipped.nets) >= 2
    d = json.loads(SLICE.read_text())
    structures = [Structure(numbers=np.array(r["numbers"]), positions=np.array(r["positions"]),
                            cell=np.array(r["cell"]), pbc=(True, True, True),
                            masses=np.array(r["masses"])) for r in d["records"]]
    raw = shipped.raw(structures)
    err_z, err_e = [], []
    for s, r, (z, e) in zip(structures, d["records"], raw):
        zs, es = symmetrize(s, z.mean(0), e.mean(0))
        assert np.abs(zs.sum(0)).max() < 1e-5
        err_z.append(np.abs(zs - np.array(r["born"])).ravel())
        err_e.append(np.abs(es - np.array(r["eps"])).ravel())
    mae_z, mae_e = np.concatenate(err_z).mean(), np.concatenate(err_e).mean()
    assert mae_z == pytest.approx(d["expected_born_mae_e"], abs=2e-3)
    assert mae_e == pytest.approx(d["expected_eps_mae"], abs=1e-2)
    assert mae_z < d["baseline_born_mae_e"]  # beats the per-element-mean baseline on the same slice


@pytest.fixture(scope="module")
def nacl_fc():
    if not (NACL / "FORCE_SETS").exists():
        pytest.skip("shared reference data not available")
    from atomvib.settings import PhononSettings
    from atomvib.workflow import read_phonopy_files

    fc, _ = read_phonopy_files(NACL / "phonopy_disp.yaml", NACL / "FORCE_SETS", NACL / "BORN", PhononSettings())
    return fc


def _lo_to_split(fc):
    ph0 = dataclasses.replace(fc, nac=None).phonopy()
    ph0.run_qpoints([[0, 0, 0]])
    ph = fc.phonopy()
    ph.run_qpoints([[0, 0, 0]], nac_q_direction=[1, 0, 0])
    return float((np.sort(ph.qpoints.frequencies[0]) - np.sort(ph0.qpoints.frequencies[0])).max())


def test_born_none_gives_no_nac():
    if not (NACL / "FORCE_SETS").exists():
        pytest.skip("shared reference data not available")
    import atomvib

    r = atomvib.phonons(NACL / "phonopy_disp.yaml", forces=NACL / "FORCE_SETS", born="none", mesh_density=10)
    assert r.force_constants.nac is None
    assert r.summary()["nac"] is False
    # auto with DFT forces: no prediction either (a BORN file from the same DFT is expected)
    r = atomvib.phonons(NACL / "phonopy_disp.yaml", forces=NACL / "FORCE_SETS", born="auto", mesh_density=10)
    assert r.force_constants.nac is None


def test_born_predicted_nacl_lo_to(nacl_fc, shipped, tmp_path):
    import atomvib
    from atomvib.spectra.ir import crystal_ir

    r = atomvib.phonons(NACL / "phonopy_disp.yaml", forces=NACL / "FORCE_SETS", born="predicted", mesh_density=10)
    assert r.force_constants.nac is not None
    nac = r.summary()["nac"]
    assert isinstance(nac, str) and nac.startswith("predicted (model atomvib-born")
    rec = r.engine.settings["born"]
    assert rec["source"] == "predicted" and len(rec["model_sha256"]) == 64 and rec["n_members"] >= 2
    assert np.abs(np.array(rec["born"]).sum(0)).max() < 1e-6
    split_dft, split_pred = _lo_to_split(nacl_fc), _lo_to_split(r.force_constants)
    assert abs(split_pred - split_dft) / split_dft * 100 < LO_TO_TOL_PCT
    ir = crystal_ir(r)
    assert "intensities_std" in ir.details and ir.details["intensities_std"].shape == ir.intensities.shape
    assert "predicted" in ir.source["born_charges"]
    # the provenance survives save/load
    r.save(tmp_path / "r")
    back = atomvib.load(tmp_path / "r")
    assert back.engine.settings["born"]["model_sha256"] == rec["model_sha256"]
    assert back.force_constants.nac is not None
