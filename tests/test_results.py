"""Results save and load themselves: round trips, NAC, old and new schema versions, the one loader."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk

import atomvib
from atomvib.errors import InputError, OutputExistsError
from atomvib.harmonic.crystal import CrystalPhonons
from atomvib.harmonic.force_constants import ForceConstants
from atomvib.results import SCHEMA_VERSION, equal, read_summary
from conftest import EXAMPLES, SHARED_DATA


@pytest.fixture(scope="module")
def al_emt():
    return atomvib.phonons(bulk("Al", "fcc", a=4.05), engine="emt", mesh_density=30)


@pytest.fixture(scope="module")
def nacl_nac(phonopy_examples_module):
    d = phonopy_examples_module / "NaCl"
    return atomvib.phonons(d / "phonopy_disp.yaml", forces=d / "FORCE_SETS", born=d / "BORN", mesh_density=40)


@pytest.fixture(scope="module")
def phonopy_examples_module():
    d = SHARED_DATA / "phonopy-examples"
    if not d.is_dir():
        pytest.skip("phonopy-examples not present")
    return d


def test_crystal_round_trip_is_equal(al_emt, tmp_path):
    al_emt.save(tmp_path / "r")
    back = atomvib.load(tmp_path / "r")
    assert isinstance(back, CrystalPhonons)
    assert back == al_emt and back is not al_emt
    # field by field, the things users rely on
    assert np.array_equal(back.force_constants.force_constants, al_emt.force_constants.force_constants)
    assert back.engine == al_emt.engine and back.engine.name == "emt"
    assert back.settings == al_emt.settings
    assert back.relaxation == al_emt.relaxation and back.relaxation["converged"]
    assert np.array_equal(back.bands.frequencies_thz, al_emt.bands.frequencies_thz)
    assert back.bands.labels == al_emt.bands.labels
    assert back.dos().partial.keys() == al_emt.dos().partial.keys()
    assert back.mesh == al_emt.mesh and isinstance(back.mesh, tuple)
    # a loaded result computes what the original computes
    t = [100.0, 250.0]
    assert np.array_equal(back.thermal(t).entropy_j_per_k_per_mol, al_emt.thermal(t).entropy_j_per_k_per_mol)
    s = read_summary(tmp_path / "r")
    assert s["schema_version"] == SCHEMA_VERSION and s["kind"] == "crystal"


def test_equality_sees_a_changed_array(al_emt, tmp_path):
    import dataclasses

    fc = al_emt.force_constants
    other = dataclasses.replace(fc, force_constants=fc.force_constants * (1 + 1e-12))
    assert fc != other and fc == dataclasses.replace(fc)


def test_save_refuses_to_overwrite_without_force(al_emt, tmp_path):
    al_emt.save(tmp_path / "r")
    with pytest.raises(OutputExistsError):
        al_emt.save(tmp_path / "r")
    al_emt.save(tmp_path / "r", force=True)


def test_human_files_are_never_read_back(al_emt, tmp_path):
    """Editing dos.csv or phonopy.yaml beside a result cannot change what load returns."""
    al_emt.save(tmp_path / "r")
    (tmp_path / "r" / "dos.csv").write_text("frequency_thz,total\n0,1e9\n")
    (tmp_path / "r" / "phonopy.yaml").write_text("garbage: [\n")
    assert atomvib.load(tmp_path / "r") == al_emt


def test_force_constants_round_trip(al_emt, tmp_path):
    fc = al_emt.force_constants
    fc.save(tmp_path / "fc")
    back = ForceConstants.load(tmp_path / "fc")
    assert back == fc
    assert (tmp_path / "fc" / "phonopy.yaml").is_file()
    with pytest.raises(InputError, match="holds a force_constants result, not a CrystalPhonons"):
        CrystalPhonons.load(tmp_path / "fc")


def test_nac_survives_the_round_trip_and_ins_is_unchanged(nacl_nac, tmp_path):
    """Bug: Born charges were lost on reload (phonopy writes them indented under `nac:`)."""
    from atomvib.spectra.ins import indirect_spectrum

    assert nacl_nac.force_constants.nac is not None
    nacl_nac.save(tmp_path / "nacl")
    back = atomvib.load(tmp_path / "nacl")
    assert back == nacl_nac
    np.testing.assert_array_equal(back.force_constants.nac.born, nacl_nac.force_constants.nac.born)
    np.testing.assert_array_equal(back.force_constants.nac.dielectric, nacl_nac.force_constants.nac.dielectric)
    a = indirect_spectrum(nacl_nac, "vision", mesh=8, order=2)
    b = indirect_spectrum(back, "vision", mesh=8, order=2)
    np.testing.assert_array_equal(a.intensity, b.intensity)
    # and the NAC actually matters on this mesh: without it the LO band sits lower
    import dataclasses

    no_nac = dataclasses.replace(nacl_nac.force_constants, nac=None)
    c = indirect_spectrum(no_nac, "vision", mesh=8, order=2)
    assert np.abs(c.intensity - a.intensity).max() > 1e-3 * a.intensity.max()


def test_yaml_has_nac_reads_phonopy_layout(nacl_nac, tmp_path):
    from atomvib.workflow import yaml_has_nac

    nacl_nac.to_phonopy().save(str(tmp_path / "p.yaml"), settings={"force_constants": True})
    assert "\nnac:\n  born_effective_charge:" in (tmp_path / "p.yaml").read_text()
    assert yaml_has_nac(tmp_path / "p.yaml")
    no = ForceConstants.from_phonopy(nacl_nac.to_phonopy())
    import dataclasses

    dataclasses.replace(no, nac=None).phonopy().save(str(tmp_path / "q.yaml"), settings={"force_constants": True})
    assert not yaml_has_nac(tmp_path / "q.yaml")


def test_schema_1_crystal_directory_still_loads(nacl_nac, tmp_path):
    """A directory written before results saved themselves: summary.json (schema 1) + phonopy.yaml."""
    d = tmp_path / "old"
    d.mkdir()
    nacl_nac.to_phonopy().save(str(d / "phonopy.yaml"), settings={"force_constants": True})
    old_summary = {
        "schema_version": 1, "kind": "crystal",
        "engine": {"name": "phonopy-files", "version": "2.30", "model": "x", "settings": {}},
        "settings": nacl_nac.settings.to_dict(), "n_displacements": 2,
    }
    (d / "summary.json").write_text(json.dumps(old_summary))
    back = atomvib.load(d)
    assert back.force_constants.nac is not None
    np.testing.assert_allclose(back.force_constants.force_constants, nacl_nac.force_constants.force_constants,
                               rtol=0, atol=1e-12)
    assert back.omega_max_thz == pytest.approx(nacl_nac.omega_max_thz, abs=1e-9)
    assert back.engine.name == "phonopy-files" and back.n_displacements == 2


def test_newer_schema_and_bad_directories_fail_with_a_message(al_emt, tmp_path):
    al_emt.save(tmp_path / "r")
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    s["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "r" / "summary.json").write_text(json.dumps(s))
    with pytest.raises(InputError, match=f"schema_version {SCHEMA_VERSION + 1}.*upgrade atomvib"):
        atomvib.load(tmp_path / "r")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not an atomvib result directory"):
        atomvib.load(tmp_path / "empty")
    s["schema_version"], s["kind"] = SCHEMA_VERSION, "warp_drive"
    (tmp_path / "r" / "summary.json").write_text(json.dumps(s))
    with pytest.raises(InputError, match="unknown kind 'warp_drive'"):
        atomvib.load(tmp_path / "r")


def test_result_json_cannot_name_a_class_outside_the_table(al_emt, tmp_path):
    """No code from data files: result.json names kinds from a fixed table, never a module path."""
    al_emt.save(tmp_path / "r")
    doc = json.loads((tmp_path / "r" / "result.json").read_text())
    doc["result"]["structure"]["__kind__"] = "os:system"
    (tmp_path / "r" / "result.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="unknown kind 'os:system'"):
        atomvib.load(tmp_path / "r")


def test_molecule_round_trip_keeps_dipole_derivatives(tmp_path):
    w = atomvib.phonons(EXAMPLES / "water.xyz", engine="xtb")
    assert w.dipole_derivatives is not None
    w.save(tmp_path / "w")
    back = atomvib.load(tmp_path / "w")
    assert back == w
    np.testing.assert_array_equal(back.dipole_derivatives, w.dipole_derivatives)
    assert back.settings == w.settings and back.engine == w.engine


def test_equal_handles_nan_and_nested_containers():
    a = {"x": (1.0, np.array([np.nan, 2.0])), "y": [float("nan")]}
    b = {"x": (1.0, np.array([np.nan, 2.0])), "y": [float("nan")]}
    assert equal(a, b)
    assert not equal(a, {"x": [1.0, np.array([np.nan, 2.0])], "y": [float("nan")]})  # tuple vs list


def test_checkpoint_reused_when_only_the_analysis_changes(tmp_path, monkeypatch):
    """The checkpoints key only what changes the forces: a new mesh or temperature grid reuses the relaxed
    structure and every displaced cell's forces (no engine call at all)."""
    from atomvib.engines import get_engine

    eng = get_engine("emt")
    calls = []
    orig = type(eng).evaluate

    def counting(self, atoms_list, progress=None):
        calls.append(len(atoms_list))
        return orig(self, atoms_list, progress)

    monkeypatch.setattr(type(eng), "evaluate", counting)
    al = bulk("Al", "fcc", a=4.05)
    r1 = atomvib.phonons(al, engine=eng, mesh_density=20, checkpoint_dir=tmp_path)
    n_first = sum(calls)
    assert n_first >= r1.n_displacements
    calls.clear()
    r2 = atomvib.phonons(al, engine=eng, mesh_density=35, temperatures_k=(100.0, 200.0),
                         checkpoint_dir=tmp_path)
    assert sum(calls) == 0
    assert r2.mesh != r1.mesh
    np.testing.assert_array_equal(r2.force_constants.force_constants, r1.force_constants.force_constants)
    assert r2.relaxation == r1.relaxation and "relax" in r1.timings and "relax" not in r2.timings
    calls.clear()
    atomvib.phonons(al, engine=eng, mesh_density=20, displacement_a=0.02, checkpoint_dir=tmp_path)
    assert sum(calls) == r1.n_displacements  # another displacement: new forces, same relaxed cell
    calls.clear()
    r4 = atomvib.phonons(al, engine=eng, mesh_density=20, fmax_ev_per_a=1e-4, checkpoint_dir=tmp_path)
    assert "relax" in r4.timings  # another relaxation threshold: relaxed again



# ------------------------------------------------------------------------------ spectra, predictions, fits
def _round_trip(obj, tmp_path, name):
    obj.save(tmp_path / name)
    back = atomvib.load(tmp_path / name)
    assert type(back) is type(obj) and back == obj and back is not obj
    assert read_summary(tmp_path / name)["kind"] == name
    return back


def test_every_spectrum_kind_round_trips(al_emt, tmp_path):
    from atomvib.spectra.coherent import coherent_path
    from atomvib.spectra.dos import phonon_dos
    from atomvib.spectra.ins import direct_powder_map, indirect_spectrum

    ins = indirect_spectrum(al_emt, "vision", mesh=6, order=2)
    back = _round_trip(ins, tmp_path, "ins_spectrum")
    assert back.by_element.keys() == ins.by_element.keys() and back.mesh == ins.mesh
    _round_trip(direct_powder_map(al_emt, "arcs", 50.0, mesh=4, order=1), tmp_path, "ins_map")
    q = np.array([[0.1, 0.0, 0.0], [0.3, 0.0, 0.0], [0.5, 0.0, 0.0]])
    _round_trip(coherent_path(al_emt, q, np.linspace(0.5, 40, 40), dw_mesh=2), tmp_path, "coherent_map")
    _round_trip(phonon_dos(al_emt, mesh=6, weighting="total"), tmp_path, "dos_spectrum")


def test_optical_spectrum_round_trips(tmp_path):
    from atomvib.spectra.ir import ir_spectrum

    w = atomvib.phonons(EXAMPLES / "water.xyz", engine="xtb", relax=False)
    _round_trip(ir_spectrum(w), tmp_path, "optical_spectrum")


def test_prediction_comparison_and_fit_round_trip(tmp_path):
    from atomvib.learn.predictor import predict
    from atomvib.spectra.compare import compare
    from atomvib.spectra.measured import Spectrum1D, SQEMap

    (p,) = predict([atomvib.read_structure(EXAMPLES / "Si.cif")])
    back = _round_trip(p, tmp_path, "dos_prediction")
    assert back.in_distribution == p.in_distribution and back.partial_dos.keys() == p.partial_dos.keys()
    x = np.linspace(1.0, 60.0, 300)
    computed = Spectrum1D(x, np.exp(-((x - 30.0) / 3.0) ** 2), None, "meV", source="model")
    measured = Spectrum1D(x, 2.0 * np.exp(-((x / 1.05 - 30.0) / 3.5) ** 2) + 0.01, np.full_like(x, 0.01), "meV",
                          notes=("synthetic",), source="synthetic")
    res = compare(computed, measured, fit=("scale", "background", "broadening"))
    back = _round_trip(res, tmp_path, "comparison")
    assert back.fit.frequency_scale == res.fit.frequency_scale and res.fit.frequency_scale[0] == pytest.approx(1.05, abs=0.01)
    _round_trip(res.fit, tmp_path, "fit")
    _round_trip(measured, tmp_path, "spectrum_1d")
    sqe = SQEMap(q_invA=np.linspace(0.5, 5, 10), energy_mev=x[:20], intensity=np.full((10, 20), np.nan),
                 error=None, source="synthetic")
    _round_trip(sqe, tmp_path, "sqe_map")


def test_ir_engine_comes_from_the_saved_spec_not_a_version_string(tmp_path):
    """Bug 3: the engine for a saved molecule's dipoles was guessed from its version string."""
    from ase.build import molecule

    from atomvib.spectra.ir import engine_for

    w = atomvib.phonons(molecule("H2O"), engine="xtb:gfn1", relax=False)
    assert w.engine.spec == "xtb:gfn1"
    w.save(tmp_path / "w")
    back = atomvib.load(tmp_path / "w")
    assert engine_for(back).info.spec == "xtb:gfn1"
    assert engine_for(back, "xtb").info.spec == "xtb:gfn2"  # an explicit engine wins
