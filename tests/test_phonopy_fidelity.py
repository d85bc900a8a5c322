"""DFT fidelity: on the same FORCE_SETS, atomvib reproduces phonopy's own numbers."""

import numpy as np
import phonopy
import pytest

import atomvib
from atomvib.harmonic.thermal import thermal_from_modes

CASES = {
    # name: (has BORN, phonopy's ω_max in THz from the data README)
    "NaCl": (True, 7.39),
    "MgO": (True, 19.96),
    "Al2O3": (True, 26.29),
    "CaTiO3": (False, None),
}


def _load_reference(d, born):
    return phonopy.load(
        str(d / "phonopy_disp.yaml"),
        force_sets_filename=str(d / "FORCE_SETS"),
        born_filename=str(d / "BORN") if born else None,
        is_nac=born,
        log_level=0,
    )


@pytest.mark.parametrize("name", list(CASES))
def test_reproduces_phonopy(phonopy_examples, name):
    has_born, readme_wmax = CASES[name]
    d = phonopy_examples / name
    r = atomvib.phonons(
        d / "phonopy_disp.yaml", forces=d / "FORCE_SETS", born=d / "BORN" if has_born else None, mesh_density=30
    )
    ref = _load_reference(d, has_born)
    ref.run_mesh(list(r.mesh), is_gamma_center=True)
    # phonopy's own advice (GammaAcousticWarning): keep the zero-frequency Γ acoustic modes out of the sums,
    # as atomvib does; otherwise each one adds k_B/nq of spurious classical heat capacity
    ref.run_thermal_properties(temperatures=[300.0], exclude_gamma_acoustic=True)
    cv_ref = ref.thermal_properties.thermal_properties[3][0]  # (T, F, S, Cv, E)
    cv = r.thermal([300.0]).heat_capacity_j_per_k_per_mol[0]
    assert cv == pytest.approx(cv_ref, rel=1e-4)
    # ω_max over the same mesh and the same band path (phonopy's seekpath path; NAC along the path at Γ)
    ref.auto_band_structure(npoints=51)
    band_max = max(np.max(f) for f in ref.get_band_structure_dict()["frequencies"])
    wmax_ref = max(ref.mesh.frequencies.max(), band_max)
    assert r.omega_max_thz == pytest.approx(wmax_ref, rel=1e-4)
    if readme_wmax:
        assert r.omega_max_thz == pytest.approx(readme_wmax, rel=5e-3)
    assert r.has_imaginary == (name == "CaTiO3")


def test_catio3_instability_reported(phonopy_examples):
    d = phonopy_examples / "CaTiO3"
    r = atomvib.phonons(d / "phonopy_disp.yaml", forces=d / "FORCE_SETS", mesh_density=20)
    assert r.has_imaginary and r.min_frequency_thz == pytest.approx(-5.9, abs=0.3)
    inst = r.instability
    assert inst.fraction_of_mesh > 0.0
    # cubic perovskite's strongest instability is the octahedral tilt at R = (½,½,½) of the cubic cell
    assert np.allclose(np.abs(inst.qpoint), 0.5, atol=1e-6) and inst.label == "R"
    # an unstable crystal still gets its full result
    assert r.dos().total.size > 0 and r.summary()["instability"]["label"] == "R"


def test_unitcell_with_force_sets_needs_supercell(phonopy_examples):
    d = phonopy_examples / "Si-gruneisen-orig"
    with pytest.raises(atomvib.InputError, match="supercell"):
        atomvib.phonons(d / "POSCAR-unitcell", forces=d / "FORCE_SETS")
    r = atomvib.phonons(d / "POSCAR-unitcell", forces=d / "FORCE_SETS", supercell=(2, 2, 2), mesh_density=30)
    assert r.omega_max_thz == pytest.approx(15.09, rel=5e-3)
    assert not r.has_imaginary


def test_thermal_matches_phonopy_formulas(phonopy_examples):
    d = phonopy_examples / "NaCl"
    ref = _load_reference(d, True)
    ref.run_mesh([12, 12, 12])
    temps = np.array([10.0, 100.0, 300.0, 800.0])
    ref.run_thermal_properties(temperatures=temps, cutoff_frequency=1e-3)
    _t, f, s, cv = ref.thermal_properties.thermal_properties
    ours = thermal_from_modes(ref.mesh.frequencies, ref.mesh.weights, temps)
    # phonopy's physical constants are an older CODATA set than scipy's: agreement to ~2e-6, not round-off
    assert np.allclose(ours.free_energy_kj_per_mol, f, rtol=1e-5)
    assert np.allclose(ours.entropy_j_per_k_per_mol, s, rtol=1e-5)
    assert np.allclose(ours.heat_capacity_j_per_k_per_mol, cv, rtol=1e-5)
    # E = F + TS
    assert np.allclose(ours.internal_energy_kj_per_mol, f + temps * s / 1000, rtol=1e-5)
