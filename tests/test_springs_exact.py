"""Exact tests: a harmonic toy engine with known force constants must give the analytic frequencies."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

import atomvib
from atomvib import units
from atomvib.engines.springs import SpringEngine
from atomvib.harmonic.molecule import normal_modes
from atomvib.harmonic.thermal import thermal_from_modes

A = 3.6  # fcc lattice constant, Å
K = 1.3  # spring constant, eV/Å²
MASS = 63.546  # Cu, amu


def fcc_analytic_thz(q_frac_prim, cell_prim):
    """Nearest-neighbour central springs on fcc: D(q) = (k/m) Σ_δ (1 - cos q·δ) δ̂δ̂ᵀ."""
    a = A
    deltas = np.array([[s1 * a / 2, s2 * a / 2, 0] for s1 in (1, -1) for s2 in (1, -1)], float)
    deltas = np.concatenate([np.roll(deltas, r, axis=1) for r in range(3)])
    recip = 2 * np.pi * np.linalg.inv(cell_prim).T  # rows b_i with 2π
    q = np.asarray(q_frac_prim) @ recip
    d = np.zeros((3, 3))
    for dl in deltas:
        u = dl / np.linalg.norm(dl)
        d += (1 - np.cos(q @ dl)) * np.outer(u, u)
    w2 = np.linalg.eigvalsh(K / MASS * d)
    return np.sort(np.sqrt(np.clip(w2, 0, None)) * units.EV_A2_AMU_TO_THZ)


@pytest.fixture(scope="module")
def fcc_result():
    atoms = bulk("Cu", "fcc", a=A)
    r0 = A / np.sqrt(2)
    engine = SpringEngine(k=K, r0=r0, cutoff=0.5 * (r0 + A))
    return atomvib.phonons(atoms, engine=engine, relax=False, mesh_density=40, min_supercell_length_a=7.0)


def test_fcc_springs_match_analytic_dispersion(fcc_result):
    ph = fcc_result.to_phonopy()
    cell = ph.primitive.cell
    qs = np.array([[0.5, 0.0, 0.5], [0.5, 0.5, 0.5], [0.1, 0.2, 0.3], [0.375, 0.375, 0.75], [0.05, 0.0, 0.0]])
    ph.run_qpoints(qs)
    numeric = np.sort(ph.qpoints.frequencies, axis=1)
    for q, f in zip(qs, numeric):
        # finite displacements of 0.01 Å on exact springs: error O(δ²/r0²) ~ 1e-5 relative
        assert np.allclose(f, fcc_analytic_thz(q, cell), rtol=1e-4, atol=1e-4)


def test_fcc_springs_acoustic_sum_rule_and_no_instability(fcc_result):
    ph = fcc_result.to_phonopy()
    ph.run_qpoints([[0, 0, 0]])
    assert np.allclose(ph.qpoints.frequencies, 0.0, atol=1e-5)
    assert not fcc_result.has_imaginary
    # the highest frequency of the model is at X (q = (0.5, 0, 0.5) primitive): 2√(2k/m) in angular units
    omega_x = 2 * np.sqrt(2 * K / MASS) * units.EV_A2_AMU_TO_THZ
    assert fcc_result.omega_max_thz == pytest.approx(omega_x, rel=1e-3)


def test_fcc_springs_thermal_limits(fcc_result):
    temps = [1.0, 300.0, 5000.0]
    th = fcc_result.thermal(temps)
    # the same mesh with the analytic frequencies
    ph = fcc_result.to_phonopy()
    ph.run_mesh(list(fcc_result.mesh), is_mesh_symmetry=False)
    exact = np.array([fcc_analytic_thz(q, ph.primitive.cell) for q in ph.mesh.qpoints])
    ref = thermal_from_modes(exact, None, temps)
    assert np.allclose(th.heat_capacity_j_per_k_per_mol, ref.heat_capacity_j_per_k_per_mol, rtol=1e-4, atol=1e-6)
    assert np.allclose(th.entropy_j_per_k_per_mol, ref.entropy_j_per_k_per_mol, rtol=1e-4, atol=1e-6)
    r_gas = 8.314462618
    # classical limit Cv → 3R per atom; at 5000 K the quantum correction −⟨x²⟩/12 (x = hν/kT ≤ 0.06)
    # and the skipped Γ acoustic modes (3 of 3·nq) are each below 4e-4
    assert th.heat_capacity_j_per_k_per_mol[2] == pytest.approx(3 * r_gas, rel=1e-3)
    assert th.heat_capacity_j_per_k_per_mol[0] < 1e-3  # Debye T³ regime
    dos = fcc_result.dos()
    integral = np.trapezoid(dos.total, dos.frequencies_thz)
    assert integral == pytest.approx(3.0, rel=2e-3)  # 3 modes per atom
    assert np.allclose(dos.total, sum(dos.partial.values()))


def test_diatomic_spring_molecule_exact():
    r0 = 1.2
    atoms = Atoms("N2", positions=[[0, 0, 0], [0, 0, r0]])
    engine = SpringEngine(k=K, r0=r0, cutoff=2.0)
    r = atomvib.phonons(atoms, engine=engine, relax=False, displacement_a=1e-3)
    mu = 14.007 / 2
    expected_cm1 = np.sqrt(K / mu) * units.EV_A2_AMU_TO_THZ * units.THZ_TO_CM1
    assert r.is_linear and len(r.frequencies_cm1) == 1  # 3N − 5 modes; translations/rotations projected out
    assert r.frequencies_cm1[0] == pytest.approx(expected_cm1, rel=1e-6)
    assert r.zero_point_energy_ev == pytest.approx(0.5 * units.H_EV_S * 1e12 * expected_cm1 / units.THZ_TO_CM1, rel=1e-6)
    mode = r.modes[0]
    assert np.allclose(mode[:, :2], 0, atol=1e-8) and mode[0, 2] == pytest.approx(-mode[1, 2])  # stretch along z


def test_projection_removes_rigid_motions_of_nonlinear_molecule():
    # water-shaped spring triangle: exactly 3N − 6 = 3 vibrations, all real
    atoms = Atoms("H2O", positions=[[0.76, 0.59, 0], [-0.76, 0.59, 0], [0, 0, 0]])
    engine = SpringEngine(k=K, r0=0.96, cutoff=1.7)
    r = atomvib.phonons(atoms, engine=engine, relax=False, displacement_a=1e-3)
    assert len(r.frequencies_cm1) == 3 and np.all(r.frequencies_cm1 > 0)
    # the same Hessian rotated must give the same frequencies (rotational invariance of the projection)
    rot = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    big = np.kron(np.eye(3), rot)
    s_rot = r.structure.with_positions(r.structure.positions @ rot.T)
    f_rot, _ = normal_modes(s_rot, big @ r.hessian @ big.T)
    assert np.allclose(f_rot, r.frequencies_cm1, rtol=1e-8)
