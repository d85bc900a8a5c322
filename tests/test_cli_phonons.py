"""The `atomvib phonons` and `atomvib engines` commands, in-process: outputs and bad input."""

import json

import numpy as np
import phonopy
import pytest
from ase.build import bulk
from ase.io import write

from atomvib.cli.main import main


@pytest.fixture
def al_cif(tmp_path):
    p = tmp_path / "Al.cif"
    write(p, bulk("Al", "fcc", a=4.05))
    return p


def _err(capsys):
    """The error lines on stderr (progress lines, which also go there, left out): exactly one per failure."""
    lines = capsys.readouterr().err.strip().splitlines()
    err = [ln for ln in lines if ln.startswith("atomvib ")]
    assert len(err) >= 1, lines
    return err


def test_phonons_emt_outputs(al_cif, capsys):
    out = al_cif.parent / "res"
    rc = main(["phonons", str(al_cif), "--engine", "emt", "--out", str(out), "--mesh-density", "30", "--quiet"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    for key in ("schema_version", "engine", "structure", "kind", "supercell_matrix", "n_displacements", "omega_max_thz",
                "min_frequency_thz", "has_imaginary", "thermal", "formula_units"):
        assert key in s
    assert s["kind"] == "crystal" and s["engine"]["name"] == "emt" and s["engine"]["version"]
    assert s["structure"]["spacegroup"] == "Fm-3m (225)" and s["structure"]["natoms"] == 1
    assert s["relaxation"]["converged"] and not s["has_imaginary"]
    assert set(s["thermal"]) >= {"temperature_K", "free_energy_kJ_per_mol", "entropy_J_per_K_per_mol",
                                 "heat_capacity_J_per_K_per_mol"}
    # Dulong–Petit bound: Cv(300 K) of one Al atom below 3R and above 80 % of it (θ_D(Al) ≈ 430 K)
    assert 0.8 * 24.94 < s["thermal"]["heat_capacity_J_per_K_per_mol"] < 24.95
    dos = np.loadtxt(out / "dos.csv", delimiter=",", skiprows=1)
    header = (out / "dos.csv").read_text().splitlines()[0].split(",")
    assert header == ["frequency_thz", "total", "Al"]
    assert np.trapezoid(dos[:, 1], dos[:, 0]) == pytest.approx(3.0, rel=5e-3)
    band = json.loads((out / "band.json").read_text())
    assert band["labels"][0]["label"] == "Γ"
    assert (out / "band_dos.png").stat().st_size > 10_000
    # phonopy.yaml is loadable by phonopy with the force constants inside, and gives our numbers back
    ph = phonopy.load(out / "phonopy.yaml", log_level=0)
    ph.run_mesh(s["mesh"], is_gamma_center=True)
    assert ph.mesh.frequencies.max() <= s["omega_max_thz"] + 1e-8
    assert ph.mesh.frequencies.max() == pytest.approx(s["omega_max_thz"], rel=0.02)


def test_refuses_to_overwrite_then_force(al_cif, capsys):
    out = al_cif.parent / "res"
    args = ["phonons", str(al_cif), "--engine", "emt", "--out", str(out), "--mesh-density", "15", "--quiet", "--no-plot"]
    assert main(args) == 0
    assert main(args) == 2
    err = _err(capsys)[-1]
    assert "already holds results" in err and "--force" in err
    assert main(args + ["--force"]) == 0


@pytest.mark.parametrize(
    "content,suffix,expect",
    [
        ("", ".cif", "is empty"),
        ("this is not a structure\n", ".cif", "cannot read"),
        ("garbage", ".unknownext", "unknown structure format"),
        ("2\n\nH 0 0 0\nH 0 0 0.2\n", ".xyz", "closer than"),
    ],
)
def test_bad_structure_files(tmp_path, capsys, content, suffix, expect):
    p = tmp_path / f"bad{suffix}"
    p.write_text(content)
    rc = main(["phonons", str(p), "--engine", "emt", "--out", str(tmp_path / "o")])
    err = _err(capsys)
    assert rc == 2
    assert len(err) == 1 and expect in err[0] and "fix:" in err[0]
    assert "Traceback" not in capsys.readouterr().err


def test_missing_file(tmp_path, capsys):
    assert main(["phonons", str(tmp_path / "nope.cif")]) == 2
    assert "no such file" in _err(capsys)[0]


def test_element_not_covered_by_engine(tmp_path, capsys):
    p = tmp_path / "Si.cif"
    write(p, bulk("Si", "diamond", a=5.43))
    assert main(["phonons", str(p), "--engine", "emt", "--out", str(tmp_path / "o")]) == 2
    err = _err(capsys)[0]
    assert "does not cover element(s) Si" in err and "atomvib engines" in err


def test_molecule_with_periodic_only_engine(tmp_path, capsys):
    p = tmp_path / "water.xyz"
    p.write_text("3\n\nO 0 0 0.119\nH 0 0.763 -0.477\nH 0 -0.763 -0.477\n")
    assert main(["phonons", str(p), "--engine", "chgnet", "--out", str(tmp_path / "o")]) == 2
    err = _err(capsys)[0]
    assert "is for periodic crystals" in err and "xtb" in err


def test_supercell_too_large(al_cif, capsys):
    rc = main(["phonons", str(al_cif), "--engine", "emt", "--supercell", "20", "20", "20", "--out", str(al_cif.parent / "o")])
    assert rc == 2
    err = _err(capsys)[0]
    assert "8000 atoms" in err and "--supercell" in err


def test_relaxation_not_converged_keeps_structure(tmp_path, capsys):
    p = tmp_path / "Cu.cif"
    write(p, bulk("Cu", "fcc", a=3.9))  # 7 % off the EMT lattice constant
    out = tmp_path / "o"
    rc = main(["phonons", str(p), "--engine", "emt", "--relax-steps", "1", "--out", str(out)])
    assert rc == 2
    err = _err(capsys)[0]
    assert "did not converge" in err and "--relax-steps" in err
    assert (out / "relaxed_unconverged.extxyz").exists()  # what was computed is kept


def test_unknown_engine_and_bad_supercell(al_cif, capsys):
    assert main(["phonons", str(al_cif), "--engine", "nonsense"]) == 2
    assert "unknown engine 'nonsense'" in _err(capsys)[0]
    assert main(["phonons", str(al_cif), "--engine", "emt", "--supercell", "2", "2"]) == 2
    assert "supercell" in _err(capsys)[0]


def test_several_inputs_one_call(tmp_path, capsys):
    files = []
    for el, a in (("Al", 4.05), ("Cu", 3.6)):
        p = tmp_path / f"{el}.cif"
        write(p, bulk(el, "fcc", a=a))
        files.append(str(p))
    out = tmp_path / "many"
    rc = main(["phonons", *files, "--engine", "emt", "--out", str(out), "--mesh-density", "15", "--no-plot"])
    assert rc == 0
    assert (out / "Al" / "summary.json").exists() and (out / "Cu" / "summary.json").exists()
    assert "Cu" in capsys.readouterr().out


def test_force_sets_input_cli(phonopy_examples, tmp_path, capsys):
    d = phonopy_examples / "NaCl"
    out = tmp_path / "nacl"
    rc = main(["phonons", str(d / "phonopy_disp.yaml"), "--forces", str(d / "FORCE_SETS"), "--born", str(d / "BORN"),
               "--out", str(out), "--mesh-density", "20", "--no-plot"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["nac"] and s["engine"]["name"] == "phonopy-files"
    assert s["omega_max_thz"] == pytest.approx(7.39, rel=5e-3)
    assert s["formula_units"] == 1 and s["structure"]["formula"] == "NaCl"


def test_engines_listing(capsys):
    assert main(["engines"]) == 0
    out = capsys.readouterr().out
    for name in ("sevennet", "chgnet", "xtb", "pyscf", "emt", "lj", "mace", "ase"):
        assert name in out
    assert "[default: crystals]" in out and "[default: molecules]" in out
