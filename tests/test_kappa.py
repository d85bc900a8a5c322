"""Lattice thermal conductivity (atomvib kappa): fidelity to phono3py on the same DFT files, the engine path against
a plain phono3py loop, physical truths, round trips, refusals.

References: phono3py's own ``phono3py.load`` + ``run_thermal_conductivity`` on the same files, mesh and method (the
issue's bar: 1e-3 relative); phono3py's example README (Si-PBEsol, 11³ mesh, RTA: 109.1 W/m-K at 300 K); a plain
loop of phono3py displacements through ASE's EMT calculator one supercell at a time (what a user writes by hand).
"""

import json
import warnings

import h5py
import numpy as np
import pytest
from ase.build import bulk

import atomvib
from atomvib.anharmonic.conductivity import ThermalConductivity
from atomvib.cli.main import main
from atomvib.engines.ase_calc import EMTEngine
from atomvib.errors import InputError, ResourceError, UnstableError


@pytest.fixture
def p3ex(shared_data):
    d = shared_data / "phono3py-examples"
    if not d.is_dir():
        pytest.skip("phono3py-examples not present")
    return d


def _phono3py_kappa(yaml, mesh, temps, forces3=None, forces2=None, born=None, **kw):
    """κ (nT, 6) from phono3py itself, exactly as its documentation runs it."""
    import phono3py

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ph3 = phono3py.load(str(yaml), forces_fc3_filename=forces3 and str(forces3),
                            forces_fc2_filename=forces2 and str(forces2), born_filename=born and str(born),
                            log_level=0)
        ph3.mesh_numbers = mesh
        ph3.init_phph_interaction()
        ph3.run_thermal_conductivity(temperatures=temps, **kw)
    return np.array(ph3.thermal_conductivity.kappa[0])


@pytest.fixture(scope="module")
def si_dft(tmp_path_factory):
    from tests.conftest import SHARED_DATA

    d = SHARED_DATA / "phono3py-examples" / "Si-PBEsol"
    if not d.is_dir():
        pytest.skip("phono3py-examples not present")
    return d, atomvib.kappa(d / "phono3py_disp.yaml", forces=d / "FORCES_FC3", mesh=(11, 11, 11),
                            temperatures_k=(300.0, 600.0))


def test_si_dft_reproduces_phono3py_and_its_documented_value(si_dft):
    d, r = si_dft
    ref = _phono3py_kappa(d / "phono3py_disp.yaml", [11, 11, 11], [300.0, 600.0], forces3=d / "FORCES_FC3")
    np.testing.assert_allclose(r.kappa_w_per_mk, ref, rtol=1e-3, atol=1e-6)
    # phono3py's example README: 109.1 W/m-K at 300 K on this mesh (quoted to 4 digits)
    assert r.kappa_at(300.0)[0] == pytest.approx(109.1, abs=0.2)
    # cubic: isotropic, no off-diagonal part
    k = r.kappa_at(300.0)
    assert k[0] == pytest.approx(k[1], rel=1e-9) == pytest.approx(k[2], rel=1e-9)
    assert np.all(np.abs(k[3:]) < 1e-8 * k[0])
    # mode contributions sum to κ; Umklapp: κ falls with T (RTA ~1/T well above the Debye temperature, ~645 K)
    np.testing.assert_allclose(r.mode_kappa_w_per_mk.sum(axis=(1, 2)) / r.n_mesh_points, r.kappa_w_per_mk, rtol=1e-8)
    assert 0.4 < r.kappa_at(600.0)[0] / r.kappa_at(300.0)[0] < 0.6
    assert r.engine.name == "phono3py-files" and len(r.engine.model_sha256) == 64


def test_si_dft_ignores_stray_files_in_the_working_directory(p3ex, tmp_path, monkeypatch):
    """phono3py.load would read ./fc3.hdf5, ./FORCES_FC3, ./BORN of the working directory; atomvib never does."""
    d = p3ex / "Si-PBEsol"
    for name in ("FORCES_FC3", "FORCES_FC2", "BORN", "fc3.hdf5", "fc2.hdf5"):
        (tmp_path / name).write_text("garbage\n")
    monkeypatch.chdir(tmp_path)
    r = atomvib.kappa(d / "phono3py_disp.yaml", forces=d / "FORCES_FC3", mesh=(5, 5, 5), temperatures_k=(300.0,))
    monkeypatch.chdir(d.parent)
    ref = _phono3py_kappa(d / "phono3py_disp.yaml", [5, 5, 5], [300.0], forces3=d / "FORCES_FC3")
    np.testing.assert_allclose(r.kappa_w_per_mk, ref, rtol=1e-3)
    assert r.force_constants.nac is None


def test_aln_with_nac_and_separate_fc2_reproduces_phono3py(p3ex):
    d = p3ex / "AlN-LDA"
    yaml, f3, f2, born = d / "phono3py_disp_dimfc2.yaml", d / "FORCES_FC3.xz", d / "FORCES_FC2", d / "BORN"
    r = atomvib.kappa(yaml, forces=f3, fc2_forces=f2, born=born, mesh=(6, 6, 4), temperatures_k=(300.0,))
    ref = _phono3py_kappa(yaml, [6, 6, 4], [300.0], forces3=f3, forces2=f2, born=born)
    np.testing.assert_allclose(r.kappa_w_per_mk, ref, rtol=1e-3, atol=1e-6)
    assert r.force_constants.nac is not None and r.force_constants.phonon_supercell_matrix is not None
    k = r.kappa_at(300.0)
    assert k[0] == pytest.approx(k[1], rel=1e-6) and k[2] != pytest.approx(k[0], rel=1e-3)  # hexagonal
    assert r.gruneisen is None  # fc2 on its own supercell: phono3py's Grüneisen formula needs one


def test_lbte_and_wigner_reproduce_phono3py(si_dft):
    d, r = si_dft
    fc = r.force_constants
    from atomvib.anharmonic.conductivity import conductivity
    from atomvib.settings import KappaSettings

    lbte = conductivity(fc, KappaSettings(method="lbte", mesh=(7, 7, 7), temperatures_k=(300.0,)))
    ref = _phono3py_kappa(d / "phono3py_disp.yaml", [7, 7, 7], [300.0], forces3=d / "FORCES_FC3", is_LBTE=True)
    np.testing.assert_allclose(lbte.kappa_w_per_mk, ref, rtol=1e-3, atol=1e-6)
    rta = conductivity(fc, KappaSettings(method="rta", mesh=(7, 7, 7), temperatures_k=(300.0,)))
    np.testing.assert_allclose(lbte.kappa_rta_w_per_mk, rta.kappa_w_per_mk, rtol=1e-6, atol=1e-9)
    assert lbte.kappa_at(300.0)[0] > rta.kappa_at(300.0)[0]  # full solution ≥ RTA for Si (normal processes)
    w = conductivity(fc, KappaSettings(method="wigner", mesh=(7, 7, 7), temperatures_k=(300.0,)))
    # Wigner: populations' κ_P is the RTA κ, coherences add a small positive κ_C in a simple crystal
    np.testing.assert_allclose(w.kappa_w_per_mk - w.kappa_coherent_w_per_mk, rta.kappa_w_per_mk, rtol=1e-6, atol=1e-9)
    assert 0 < w.kappa_coherent_w_per_mk[0, 0] < 0.05 * rta.kappa_w_per_mk[0, 0]


class CountingEMT(EMTEngine):
    def __init__(self):
        super().__init__()
        self.cells = 0

    def evaluate(self, atoms_list, progress=None):
        self.cells += len(atoms_list)
        return super().evaluate(atoms_list, progress)


@pytest.fixture(scope="module")
def cu_emt(tmp_path_factory):
    ck = tmp_path_factory.mktemp("cu_kappa")
    eng = CountingEMT()
    r = atomvib.kappa(bulk("Cu", "fcc", a=3.6), engine=eng, relax=False, mesh=(8, 8, 8),
                      temperatures_k=(300.0, 600.0), checkpoint_dir=ck)
    return r, eng, ck


def test_engine_path_matches_a_plain_phono3py_loop(cu_emt):
    """Same displacements through ASE's EMT calculator one supercell at a time, phono3py's own fc3 and κ."""
    from ase.calculators.emt import EMT
    from phono3py import Phono3py
    from phonopy.structure.atoms import PhonopyAtoms

    r, _, _ = cu_emt
    prim = r.force_constants.unitcell
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ph3 = Phono3py(PhonopyAtoms(numbers=prim.numbers, cell=prim.cell, positions=prim.positions),
                       supercell_matrix=r.force_constants.supercell_matrix, primitive_matrix="auto", log_level=0)
        ph3.generate_displacements(distance=0.03)
        forces = []
        for sc in ph3.supercells_with_displacements:
            from ase import Atoms

            a = Atoms(numbers=sc.numbers, positions=sc.positions, cell=sc.cell, pbc=True)
            a.calc = EMT()
            forces.append(a.get_forces())
        ph3.forces = np.array(forces)
        ph3.produce_fc3()
        ph3.mesh_numbers = [8, 8, 8]
        ph3.init_phph_interaction()
        ph3.run_thermal_conductivity(temperatures=[300.0, 600.0])
    np.testing.assert_allclose(r.kappa_w_per_mk[:, :3], ph3.thermal_conductivity.kappa[0][:, :3], rtol=2e-3)


def test_physical_truths_on_cu(cu_emt):
    r, _, _ = cu_emt
    k300, k600 = r.kappa_at(300.0), r.kappa_at(600.0)
    assert k300[0] == pytest.approx(k300[2], rel=1e-9) and np.all(np.abs(k300[3:]) < 1e-8 * k300[0])
    # above the Debye temperature (EMT Cu ~ 300 K) three-phonon scattering gives κ ∝ 1/T within ~15 %
    assert 0.42 < k600[0] / k300[0] < 0.58
    # mode Grüneisen parameters: fcc Cu's thermodynamic γ is 2.0 (experiment); EMT gives the same sign and size
    g = np.nanmean(np.where(np.isfinite(r.gruneisen), r.gruneisen, np.nan))
    assert 1.5 < g < 3.0
    # lifetimes and mean free paths follow from Γ and v: τ = 1/(4πΓ), Λ = |v|τ
    m = r.gamma_thz > 1e-6
    np.testing.assert_allclose(r.lifetimes_ps[m], 1 / (4 * np.pi * r.gamma_thz[m]))
    assert not r.has_negative_linewidths
    f, cum = r.cumulative_kappa("frequency", 300.0)
    assert np.all(np.diff(f) >= 0) and cum[-1] == pytest.approx(np.mean(k300[:3]), rel=1e-8)


def test_rerun_with_another_mesh_computes_no_displaced_cell(cu_emt):
    r, first, ck = cu_emt
    assert first.cells == r.n_displacements + 1  # the displaced cells and the perfect one (residual forces)
    again = CountingEMT()
    r2 = atomvib.kappa(bulk("Cu", "fcc", a=3.6), engine=again, relax=False, mesh=(6, 6, 6),
                       temperatures_k=(300.0,), checkpoint_dir=ck)
    assert again.cells == 1  # only the perfect supercell; every displaced cell from the checkpoint
    np.testing.assert_allclose(r2.force_constants.fc3, r.force_constants.fc3)


def test_round_trip_and_files(cu_emt, tmp_path):
    r, _, _ = cu_emt
    r.save(tmp_path / "k")
    back = atomvib.load(tmp_path / "k")
    assert isinstance(back, ThermalConductivity) and back == r
    s = json.loads((tmp_path / "k" / "summary.json").read_text())
    assert s["kind"] == "kappa" and s["kappa_average_W_per_mK"] == pytest.approx(np.mean(r.kappa_at(300.0)[:3]))
    with h5py.File(tmp_path / "k" / "kappa-phono3py.hdf5") as h:
        np.testing.assert_allclose(h["kappa"][:], r.kappa_w_per_mk)
        np.testing.assert_allclose(h["mode_kappa"][:].sum(axis=(1, 2)) / h["weight"][:].sum(), r.kappa_w_per_mk,
                                   rtol=1e-8)
        assert h["gamma"].shape == r.gamma_thz.shape and list(h["mesh"][:]) == [8, 8, 8]
    table = np.loadtxt(tmp_path / "k" / "kappa.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(table[:, 1:7], r.kappa_w_per_mk, rtol=1e-6)


def test_refusals_name_the_problem_and_the_fix(cu_emt, tmp_path):
    from ase import Atoms

    r, _, _ = cu_emt
    with pytest.raises(InputError, match="molecule"):
        atomvib.kappa(Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]), engine="emt")
    with pytest.raises(UnstableError, match="imaginary") as e:  # bcc Cu is dynamically unstable with EMT
        atomvib.kappa(bulk("Cu", "bcc", a=2.87), engine="emt", relax=False, mesh=(4, 4, 4), temperatures_k=(300.0,))
    assert "--allow-imaginary" in e.value.fix
    with pytest.raises(ResourceError, match="--max-hours") as e:
        atomvib.kappa(bulk("Cu", "fcc", a=3.6), engine="emt", relax=False, max_force_hours=1e-9)
    assert "symfc" in e.value.fix and "cutoff-pair" in e.value.fix
    from atomvib.anharmonic.conductivity import conductivity
    from atomvib.settings import KappaSettings

    with pytest.raises(ResourceError, match="collision matrix") as e:
        conductivity(r.force_constants, KappaSettings(method="lbte", mesh=(12, 12, 12), max_memory_gb=1e-3))
    assert "--mesh" in e.value.fix
    with pytest.raises(InputError, match="phono3py_disp.yaml"):
        atomvib.kappa(bulk("Cu", "fcc", a=3.6), engine="emt", forces=tmp_path / "FORCES_FC3")
    with pytest.raises(InputError, match="method"):
        KappaSettings(method="bte")


def test_cli_dft_files_and_mismatched_forces(p3ex, tmp_path, capsys):
    d = p3ex / "Si-PBEsol"
    out = tmp_path / "si"
    assert main(["kappa", str(d / "phono3py_disp.yaml"), "--forces", str(d / "FORCES_FC3"), "--mesh", "5", "5", "5",
                 "--temperatures", "300", "--out", str(out), "--no-plot"]) == 0
    assert "κ at 300 K" in capsys.readouterr().out
    back = atomvib.load(out)
    assert back.mesh == (5, 5, 5) and (out / "kappa.csv").is_file() and (out / "kappa-phono3py.hdf5").is_file()
    # FORCES_FC2 of AlN (another crystal's cells) given as Si's FORCES_FC3: one line, exit 2
    code = main(["kappa", str(d / "phono3py_disp.yaml"), "--forces", str(p3ex / "AlN-LDA" / "FORCES_FC2"),
                 "--out", str(tmp_path / "bad"), "--mesh", "5", "5", "5"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("atomvib ")]
    assert code == 2 and len(err) == 1 and "FORCES_FC3" in err[0]
    assert "Traceback" not in err[0]


def test_untested_phono3py_falls_back_to_its_public_api(si_dft, monkeypatch):
    """Outside the tested phono3py versions fc2/fc3 come from the public produce_fc3 (one warning), and κ stays
    within the issue's 1e-3 of the load helper's."""
    from atomvib.engines import guards
    from atomvib.engines.guards import SpeedPathFallback

    d, r = si_dft
    monkeypatch.setitem(guards.TESTED_VERSIONS, "phono3py-load-helper", {"phono3py": ("0.1", "0.2")})
    with pytest.warns(SpeedPathFallback, match="phono3py"):
        fb = atomvib.kappa(d / "phono3py_disp.yaml", forces=d / "FORCES_FC3", mesh=(11, 11, 11),
                           temperatures_k=(300.0, 600.0))
    np.testing.assert_allclose(fb.kappa_w_per_mk[:, :3], r.kappa_w_per_mk[:, :3], rtol=1e-3)


def test_phono3py_params_yaml_with_forces_inside(p3ex, tmp_path):
    """phono3py_params.yaml (displacements and forces in one file, as phono3py writes it) gives the same κ."""
    import phono3py

    d = p3ex / "Si-PBEsol"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ph3 = phono3py.load(str(d / "phono3py_disp.yaml"), forces_fc3_filename=str(d / "FORCES_FC3"),
                            produce_fc=False, log_level=0)
        ph3.save(str(tmp_path / "phono3py_params.yaml"))
    r = atomvib.kappa(tmp_path / "phono3py_params.yaml", mesh=(5, 5, 5), temperatures_k=(300.0,))
    ref = _phono3py_kappa(d / "phono3py_disp.yaml", [5, 5, 5], [300.0], forces3=d / "FORCES_FC3")
    np.testing.assert_allclose(r.kappa_w_per_mk, ref, rtol=1e-3, atol=1e-6)


def test_small_displacement_gives_the_same_kappa():
    """Bug: phono3py ran with atomvib's 1e-3 Å symmetry tolerance, which took a 0.01 Å displacement in a 10 Å
    supercell for invariant under operations that move it: EMT Cu's κ came out 73 instead of 12.6 W/m-K (Si with
    SevenNet 75 % low). EMT is smooth and double precision: 0.01 and 0.03 Å must agree to a few per cent."""
    k = [atomvib.kappa(bulk("Cu", "fcc", a=3.6), engine="emt", relax=False, mesh=(8, 8, 8), temperatures_k=(300.0,),
                       displacement_a=d).kappa_at(300.0)[0] for d in (0.01, 0.03)]
    assert k[0] == pytest.approx(k[1], rel=0.03)


def test_isotope_scattering_enters_kappa_and_the_lifetimes(si_dft):
    """Natural-isotope scattering lowers Si's κ by ~6 % (phono3py, 19³: 124.4 → 117.3); the lifetimes include it,
    so each mode's κ_xx is C·|v|²/3·τ with that τ (cubic: v_x² averaged over the q-point's star is |v|²/3; one
    constant factor for all modes)."""
    from atomvib.anharmonic.conductivity import conductivity
    from atomvib.settings import KappaSettings

    _, r = si_dft
    iso = conductivity(r.force_constants, KappaSettings(mesh=(11, 11, 11), temperatures_k=(300.0,), isotope=True))
    assert 0.90 < iso.kappa_at(300.0)[0] / r.kappa_at(300.0)[0] < 0.97
    assert iso.gamma_isotope_thz.shape == iso.frequencies_thz.shape and np.all(iso.gamma_isotope_thz >= 0)
    c, tau = iso.mode_heat_capacities_ev_per_k[0], iso.lifetimes_ps[0]
    v2 = (iso.group_velocities_thz_a**2).sum(axis=-1) / 3.0
    m = (c > 1e-3 * c.max()) & (v2 > 1e-2 * v2.max()) & np.isfinite(tau)
    with np.errstate(invalid="ignore"):  # τ = inf (Γ = 0) at Γ's acoustic modes, masked out
        ratio = iso.mode_kappa_w_per_mk[0, ..., 0][m] / (iso.weights[:, None] * c * v2 * tau)[m]
    np.testing.assert_allclose(ratio, np.median(ratio), rtol=0.05)
