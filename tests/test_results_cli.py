"""Saved results through the CLI: what `atomvib phonons --out DIR` writes, `ins`/`ir DIR` read back unchanged."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from ase.build import bulk
from ase.io import write

import atomvib
from atomvib.cli.main import main
from conftest import EXAMPLES, SHARED_DATA

MGO = SHARED_DATA / "phonopy-examples" / "MgO"


@pytest.fixture(scope="module")
def mgo_dir(tmp_path_factory):
    if not MGO.is_dir():
        pytest.skip("reference data ../shared/data not present")
    out = tmp_path_factory.mktemp("mgo") / "r"
    rc = main(["phonons", str(MGO / "phonopy_disp.yaml"), "--forces", str(MGO / "FORCE_SETS"), "--born",
               str(MGO / "BORN"), "--mesh-density", "30", "--no-plot", "-q", "--out", str(out)])
    assert rc == 0
    return out


def test_ins_from_a_saved_polar_result_keeps_born_charges(mgo_dir, tmp_path):
    """Bug 1: `atomvib ins DIR` lost the NAC data: the LO band sat where phonopy puts it without NAC."""
    from atomvib.spectra.ins import indirect_spectrum

    args = ["--instrument", "vision", "--mesh", "8", "--emax", "120", "--no-plot"]
    assert main(["ins", str(mgo_dir), *args, "--out", str(tmp_path / "a")]) == 0
    assert main(["ins", str(MGO / "phonopy_disp.yaml"), "--forces", str(MGO / "FORCE_SETS"), "--born",
                 str(MGO / "BORN"), *args, "--out", str(tmp_path / "b")]) == 0
    a, b = pd.read_csv(tmp_path / "a" / "ins.csv"), pd.read_csv(tmp_path / "b" / "ins.csv")
    np.testing.assert_allclose(a["intensity"], b["intensity"], rtol=1e-10, atol=1e-14)
    # the same numbers as the in-memory result through the API
    r = atomvib.load(mgo_dir)
    assert r.force_constants.nac is not None
    ref = indirect_spectrum(r, "vision", "backward", order=3, mesh=8, energy_range_mev=(0.5, 120.0))
    np.testing.assert_allclose(a["intensity"], ref.intensity, rtol=1e-6, atol=1e-12)
    # without NAC the spectrum differs (the LO band moves): the test can see the bug
    import dataclasses

    no_nac = dataclasses.replace(r.force_constants, nac=None)
    bad = indirect_spectrum(no_nac, "vision", "backward", order=3, mesh=8, energy_range_mev=(0.5, 120.0))
    assert np.abs(bad.intensity - ref.intensity).max() > 0.01 * ref.intensity.max()


@pytest.fixture(scope="module")
def water_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("water") / "w"
    assert main(["phonons", str(EXAMPLES / "water.xyz"), "--no-plot", "-q", "--out", str(out)]) == 0
    return out


def test_ir_from_a_saved_molecule_uses_its_dipole_derivatives(water_dir, tmp_path, monkeypatch, capsys):
    """Bug 2: IR of a saved molecule recomputed every dipole with default settings."""
    import atomvib.spectra.ir as ir

    r = atomvib.load(water_dir)
    expected = ir.ir_spectrum(r)

    def refuse(*a, **k):
        raise AssertionError("dipoles recomputed")

    monkeypatch.setattr(ir, "dipole_derivatives", refuse)
    assert main(["ir", str(water_dir), "--no-plot", "--out", str(tmp_path / "ir")]) == 0
    modes = pd.read_csv(tmp_path / "ir" / "ir_modes.csv")
    np.testing.assert_allclose(modes.iloc[:, 1], expected.intensities, rtol=1e-6)  # 8 digits in the CSV


def test_ins_of_a_molecule_result_says_what_it_is(water_dir, capsys):
    """Bug 6: the message said 'no phonopy.yaml in this directory' about a molecule result. Since issue 16 a
    molecule result has INS of its own (tests/test_ins_molecule.py): the output says it is a molecule."""
    assert main(["ins", str(water_dir), "--no-plot", "--out", str(water_dir.parent / "ins")]) == 0
    out = capsys.readouterr().out
    assert "molecule, 3 normal modes" in out and "phonopy.yaml" not in out
    assert (water_dir.parent / "ins" / "ins.csv").is_file()


def test_summary_uses_one_basis_named_the_same_way(water_dir, mgo_dir):
    """Bug 7: per mole of the analysed cell and per formula unit, formulas as chemists write them."""
    w = json.loads((water_dir / "summary.json").read_text())
    assert w["structure"]["formula"] == "H2O" and w["formula_units"] == 1
    assert w["thermochemistry"]["temperature_K"] == 298.15
    m = json.loads((mgo_dir / "summary.json").read_text())
    th = m["thermal"]
    z = m["formula_units"]
    assert m["structure"]["formula"] == "MgO" and z == m["structure"]["natoms"] // 2
    assert th["per_formula_unit"]["heat_capacity_J_per_K_per_mol"] * z == pytest.approx(
        th["heat_capacity_J_per_K_per_mol"], rel=1e-12)
    assert "per mole of MgO" in th["per_formula_unit"]["basis"]
    # Dulong–Petit bound per formula unit (2 atoms): Cv < 6R
    assert th["per_formula_unit"]["heat_capacity_J_per_K_per_mol"] < 6 * 8.314462618


def test_file_name_without_extension_needs_format(tmp_path, capsys):
    """Bug 9: `zno_unitcell` (a POSCAR without the usual name) was refused with no way out."""
    p = tmp_path / "al_unitcell"
    write(p, bulk("Al", "fcc", a=4.05), format="vasp")
    assert main(["phonons", str(p), "-e", "emt", "--no-plot", "-q", "--out", str(tmp_path / "a")]) == 2
    assert "--format" in capsys.readouterr().err
    rc = main(["phonons", str(p), "--format", "vasp", "-e", "emt", "--no-plot", "-q", "--mesh-density", "20",
               "--out", str(tmp_path / "a")])
    assert rc == 0 and atomvib.load(tmp_path / "a").structure.formula == "Al"


def test_every_long_stage_says_what_it_does(tmp_path, capsys):
    """Bug 8: model loading, relaxation and analysis printed nothing."""
    p = tmp_path / "cu.cif"
    write(p, bulk("Cu", "fcc", a=3.6))
    rc = main(["phonons", str(p), "-e", "emt", "--no-plot", "--mesh-density", "20", "--out", str(tmp_path / "cu")])
    assert rc == 0
    err = capsys.readouterr().err
    for stage in ("loading engine emt", "relax", "planning displacements", "displaced cells", "analysing"):
        assert stage in err, stage


def test_spectra_written_by_the_cli_are_results_compare_reads(mgo_dir, tmp_path):
    """`atomvib ins --out D` saves the spectrum itself; `atomvib compare D measured` reads it through atomvib.load."""
    from atomvib.spectra.ins import InsSpectrum

    assert main(["ins", str(mgo_dir), "--mesh", "8", "--emax", "120", "--no-plot", "--out", str(tmp_path / "v")]) == 0
    ins = atomvib.load(tmp_path / "v")
    assert isinstance(ins, InsSpectrum) and ins.instrument.lower() == "vision" and ins.bank == "backward"
    csv = pd.read_csv(tmp_path / "v" / "ins.csv")
    np.testing.assert_allclose(csv["intensity"], ins.intensity, rtol=1e-7, atol=1e-12)
    # a "measurement": the same spectrum 3 % stiffer, twice as strong
    meas = tmp_path / "measured.csv"
    pd.DataFrame({"energy_meV": 1.03 * ins.energy_mev, "intensity": 2 * ins.intensity}).to_csv(meas, index=False)
    assert main(["compare", str(tmp_path / "v"), str(meas), "--fit", "scale", "--range", "5", "110", "--no-plot",
                 "--out", str(tmp_path / "c")]) == 0
    res = atomvib.load(tmp_path / "c")
    assert res.fit.frequency_scale[0] == pytest.approx(1.03, abs=0.003)
