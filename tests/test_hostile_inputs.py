"""Hostile and careless inputs through the CLI, in-process: nothing destroyed, nothing silently wrong, clean errors.

Every refusal is exit code 2 with exactly one ``atomvib CMD: error: ...`` line (progress lines, which also go to
stderr, are left out), never a traceback, and the inputs are byte for byte what they were.
"""

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import write

import atomvib
from atomvib.cli.main import main
from atomvib.errors import InputError
from atomvib.settings import PhononSettings

FAST = ["-e", "emt", "--no-relax", "--min-length", "5", "--mesh-density", "10", "-q", "--no-plot"]

MIXED_CIF = """data_CuAl
_cell_length_a 3.9
_cell_length_b 3.9
_cell_length_c 3.9
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'F m -3 m'
_symmetry_Int_Tables_number 225
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Cu1 Cu 0 0 0 0.25
Al1 Al 0 0 0 0.75
"""


# ------------------------------------------------------------------------------------------ helpers
def _refused(argv, capsys, *, contains=(), rc=2) -> str:
    """Run ``atomvib ARGV``; assert exit ``rc``, one error line naming a fix, no traceback. Returns the line."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("atomvib ")]
    assert code == rc, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and ": error: " in lines[0] and "(fix: " in lines[0], err
    for c in contains:
        assert c in lines[0], lines[0]
    return lines[0]


def _digest(*paths) -> str:
    """SHA-256 over files (directories: every file under them, with its relative name)."""
    h = hashlib.sha256()
    for p in map(Path, paths):
        files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _strict_json(path: Path):
    """Parse ``path`` refusing NaN/Infinity tokens (they are not JSON)."""
    def no(c):
        raise AssertionError(f"{path}: non-finite number {c} in JSON")

    return json.loads(path.read_text(), parse_constant=no)


def _no_staging_left(d: Path):
    assert not [p.name for p in Path(d).iterdir() if p.name.endswith(".tmp")], sorted(os.listdir(d))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Al.cif, its EMT phonons result directory ``al`` and a VISION INS result ``ins`` (order 1, 4³ mesh)."""
    d = tmp_path_factory.mktemp("hostile")
    write(d / "Al.cif", bulk("Al", "fcc", a=4.05))
    assert main(["phonons", str(d / "Al.cif"), *FAST, "--out", str(d / "al")]) == 0
    assert main(["ins", str(d / "al"), "--mesh", "4", "--order", "1", "--no-plot", "--out", str(d / "ins")]) == 0
    return d


# ------------------------------------------------------------------------------------------ 1. nothing destroyed
@pytest.mark.parametrize("force", [[], ["--force"]])
def test_predict_never_writes_over_its_input(work, tmp_path, capsys, force):
    cif = tmp_path / "X.cif"
    write(cif, bulk("Al", "fcc", a=4.05))
    link = tmp_path / "link.cif"
    link.symlink_to(cif)
    before = _digest(cif)
    _refused(["predict", cif, "--out", cif, *force], capsys, contains=("is the input", "destroy"))
    _refused(["predict", cif, "--out", link, *force], capsys, contains=("is the input",))  # resolved paths
    assert _digest(cif) == before


def test_predict_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    out.write_text("earlier predictions\n")
    write(tmp_path / "a.cif", bulk("Al", "fcc", a=4.05))
    _refused(["predict", tmp_path / "a.cif", "--out", out], capsys, contains=("exists", "--force"))
    _refused(["predict", tmp_path / "a.cif", "--out", tmp_path], capsys, contains=("is a directory",))
    assert out.read_text() == "earlier predictions\n"


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_out_never_replaces_an_input(work, tmp_path, capsys, force):
    # a structure named like a file the command writes, in the output directory
    d = tmp_path / "d"
    d.mkdir()
    write(d / "structure.cif", bulk("Al", "fcc", a=4.05))
    ins_before, al_before = _digest(work / "ins"), _digest(work / "al")
    before = _digest(d / "structure.cif")
    _refused(["phonons", d / "structure.cif", *FAST, "--out", d, *force], capsys, contains=("would be overwritten",))
    # a result directory given as its own --out
    _refused(["ins", work / "al", "--out", work / "al", *force], capsys, contains=("input directory",))
    _refused(["compare", work / "ins", work / "ins" / "ins.csv", "--out", work / "ins", *force], capsys,
             contains=("input directory",))
    # an input file the command would replace (here --becs named like ir_modes.csv)
    (d / "ir_modes.csv").write_text("\n".join(["1 0 0 0 1 0 0 0 1"]) + "\n")
    becs_before = _digest(d / "ir_modes.csv")
    _refused(["ir", work / "al", "--becs", d / "ir_modes.csv", "--out", d, *force], capsys,
             contains=("would be overwritten",))
    assert _digest(d / "structure.cif") == before and _digest(d / "ir_modes.csv") == becs_before
    assert _digest(work / "ins") == ins_before and _digest(work / "al") == al_before


@pytest.mark.parametrize(
    "command,own_file",
    [("phonons", "summary.json"), ("phonons", "dos.csv"), ("ins", "ins.csv"), ("ir", "ir.csv"),
     ("raman", "raman_summary.json"), ("compare", "compare.json")],
)
def test_every_command_refuses_to_overwrite_without_force(work, tmp_path, capsys, command, own_file):
    out = tmp_path / "out"
    out.mkdir()
    (out / own_file).write_text("an earlier result\n")
    argv = {
        "phonons": ["phonons", work / "Al.cif", *FAST],
        "ins": ["ins", work / "al"],
        "ir": ["ir", work / "al", "--becs", work / "Al.cif"],
        "raman": ["raman", work / "al"],
        "compare": ["compare", work / "ins", work / "ins" / "ins.csv"],
    }[command]
    _refused([*argv, "--out", out], capsys, contains=("already holds results", "--force"))
    assert (out / own_file).read_text() == "an earlier result\n" and sorted(os.listdir(out)) == [own_file]


def test_force_removes_only_stale_files_of_the_same_command(work, tmp_path, capsys):
    out = tmp_path / "v"
    base = ["ins", work / "al", "--mesh", "4", "--order", "1", "--out", out]
    assert main([str(a) for a in base]) == 0
    assert (out / "ins.png").is_file()
    (out / "my_notes.txt").write_text("the user's file")
    (out / "forces_checkpoint.npz").write_bytes(b"not ours to delete")
    # --no-plot: the old figure goes (it would show a spectrum this directory no longer holds)
    assert main([str(a) for a in [*base, "--no-plot", "--force"]]) == 0
    assert not (out / "ins.png").exists()
    # a direct-geometry map, then an indirect spectrum again: the map file goes
    assert main([str(a) for a in [*base, "--no-plot", "--force", "-i", "arcs", "--ei", "40"]]) == 0
    # ins.csv is now the map's |Q| cut (issue 16), not the stale VISION spectrum
    assert (out / "ins_map.h5").is_file() and "q_range_ainv=" in (out / "ins.csv").read_text().splitlines()[0]
    assert type(atomvib.load(out)).__name__ == "InsMap"
    assert main([str(a) for a in [*base, "--no-plot", "--force"]]) == 0
    assert not (out / "ins_map.h5").exists() and (out / "ins.csv").is_file()
    assert type(atomvib.load(out)).__name__ == "InsSpectrum"
    assert (out / "my_notes.txt").read_text() == "the user's file"
    assert (out / "forces_checkpoint.npz").read_bytes() == b"not ours to delete"
    _no_staging_left(out)
    _strict_json(out / "ins.json"), _strict_json(out / "summary.json")
    capsys.readouterr()


def test_failed_overwrite_keeps_the_old_result(work, tmp_path, capsys, monkeypatch):
    out = tmp_path / "v"
    base = ["ins", work / "al", "--mesh", "4", "--order", "1", "--no-plot", "--out", out]
    assert main([str(a) for a in base]) == 0
    before = _digest(out)
    # refused after loading the phonons (memory): the old result is as it was
    _refused([*base, "--force", "--mesh", "2000"], capsys, contains=("--mesh",))
    assert _digest(out) == before
    # a crash while the new files are written (here the figure): nothing half-replaced, no temporary left
    import atomvib.spectra.plots as plots

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(plots, "plot_indirect", boom)
    argv = [str(a) for a in base if a != "--no-plot"]
    with pytest.raises(RuntimeError, match="disk on fire"):
        main([*argv, "--force", "--temperature", "300"])
    assert _digest(out) == before
    _no_staging_left(out)


def test_phonons_force_keeps_checkpoints_and_is_atomic(work, tmp_path, capsys):
    out = tmp_path / "r"
    args = ["phonons", work / "Al.cif", *FAST, "--out", out]
    assert main([str(a) for a in args]) == 0
    assert (out / "forces_checkpoint.npz").is_file()
    assert main([str(a) for a in [*args, "--force", "--tmax", "500"]]) == 0
    assert (out / "forces_checkpoint.npz").is_file()
    assert max(atomvib.load(out).settings.temperatures_k) == 500
    _no_staging_left(out)
    _strict_json(out / "summary.json"), _strict_json(out / "result.json")


def test_partial_files_of_a_failed_run_neither_block_nor_outlive_a_success(tmp_path, capsys):
    a = bulk("Cu", "fcc", a=3.61, cubic=True)
    a.positions[0] += [0.1, 0.05, 0.0]
    write(tmp_path / "Cu.cif", a)
    out = tmp_path / "cu"
    args = ["phonons", tmp_path / "Cu.cif", "-e", "emt", "--no-primitive", "--min-length", "5",
            "--mesh-density", "10", "-q", "--no-plot", "--out", out]
    _refused([*args, "--relax-steps", "1", "--fmax", "1e-6"], capsys, contains=("did not converge",))
    assert sorted(os.listdir(out)) == ["relaxed_unconverged.extxyz"]  # what the failed step had: kept
    assert main([str(x) for x in [*args, "--fmax", "0.05"]]) == 0  # no --force needed: it was no result
    assert "relaxed_unconverged.extxyz" not in os.listdir(out) and (out / "summary.json").is_file()
    _no_staging_left(out)


def test_a_directory_named_like_an_output_file_is_refused(work, tmp_path, capsys):
    (tmp_path / "o" / "ins.png").mkdir(parents=True)
    _refused(["ins", work / "al", "--out", tmp_path / "o", "--force"], capsys, contains=("is a directory",))
    assert os.listdir(tmp_path / "o") == ["ins.png"]


# ------------------------------------------------------------------------------------------ 2. partial occupancy
def test_partial_occupancy_is_refused(tmp_path, capsys):
    mixed = tmp_path / "CuAl.cif"
    mixed.write_text(MIXED_CIF)
    vac = tmp_path / "Alvac.cif"
    vac.write_text(MIXED_CIF.replace("Cu1 Cu 0 0 0 0.25\n", "").replace("0.75", "0.9"))
    for cif, what in ((mixed, "Cu0.25Al0.75"), (vac, "occupancy 0.9")):
        before = _digest(cif)
        line = _refused(["phonons", cif, *FAST, "--out", tmp_path / "o"], capsys,
                        contains=(what, "order the structure"))
        assert "supercell" in line
        assert not (tmp_path / "o").exists() and _digest(cif) == before
    with pytest.raises(InputError, match="partial occupancy"):
        atomvib.read_structure(mixed)


# ------------------------------------------------------------------------------------------ 3. numeric options
@pytest.mark.parametrize(
    "opts,words",
    [
        (["--tmax", "-100"], ("--tmax", "≥ 0")),
        (["--tmax", "nan"], ("--tmax",)),
        (["--tstep", "0"], ("--tstep", "> 0")),
        (["--tstep", "1e-9"], ("--tstep",)),
        (["--temperature", "-5"], ("--temperature",)),
        (["--mesh-density", "nan"], ("--mesh-density",)),
        (["--mesh-density", "inf"], ("--mesh-density",)),
        (["--mesh-density", "0"], ("--mesh-density",)),
        (["--supercell", "-2", "2", "2"], ("supercell",)),
        (["--supercell", "-2", "0", "0", "0", "-2", "0", "0", "0", "2"], ("diagonal",)),
        (["--supercell", "0", "1", "0", "1", "0", "0", "0", "0", "1"], ("determinant -1",)),
        (["--fmax", "0"], ("--fmax",)),
        (["--relax-steps", "0"], ("--relax-steps",)),
        (["--dos-step", "0"], ("--dos-step",)),
        (["--dos-sigma", "nan"], ("--dos-sigma",)),
        (["--symprec", "0"], ("--symprec",)),
        (["--displacement", "nan"], ("displacement",)),
        (["--max-supercell-atoms", "0"], ("--max-supercell-atoms",)),
    ],
)
def test_bad_numbers_refused_before_anything(work, tmp_path, capsys, opts, words):
    out = tmp_path / "new" / "dir"
    _refused(["phonons", work / "Al.cif", *FAST, *opts, "--out", out], capsys, contains=words)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "argv,words",
    [
        (["predict", "{cif}", "--tmax", "-100", "--out", "{tmp}/p.jsonl"], ("--tmax",)),
        (["predict", "{cif}", "--tstep", "0", "--out", "{tmp}/p.jsonl"], ("--tstep",)),
        (["predict", "{cif}", "--tmax", "nan", "--out", "{tmp}/p.jsonl"], ("--tmax",)),
        (["ins", "{al}", "--temperature", "nan", "--out", "{tmp}/i"], ("--temperature",)),
        (["ins", "{al}", "--mesh", "0", "--out", "{tmp}/i"], ("--mesh",)),
        (["ins", "{al}", "-i", "arcs", "--ei", "nan", "--out", "{tmp}/i"], ("--ei",)),
        (["ir", "{al}", "--fwhm", "nan", "--out", "{tmp}/i"], ("--fwhm",)),
        (["ir", "{al}", "--xmax", "-1", "--out", "{tmp}/i"], ("--xmax",)),
        (["compare", "{ins}", "{ins}/ins.csv", "--range", "nan", "5", "--out", "{tmp}/c"], ("--range",)),
    ],
)
def test_bad_numbers_of_other_commands(work, tmp_path, capsys, argv, words):
    fill = {"cif": work / "Al.cif", "al": work / "al", "ins": work / "ins", "tmp": tmp_path}
    _refused([a.format(**fill) for a in argv], capsys, contains=words)
    assert os.listdir(tmp_path) == []


def test_settings_validate_every_number():
    for bad in (dict(temperatures_k=(0.0, float("nan"))), dict(temperatures_k=(-1.0,)), dict(temperatures_k=()),
                dict(imaginary_tol_thz=-0.1), dict(imaginary_tol_thz=float("nan")), dict(dos_mesh_density=0.0),
                dict(summary_temperature_k=float("inf")), dict(min_supercell_length_a=float("nan")),
                dict(supercell=(2.5, 2, 2)), dict(max_supercell_atoms=0), dict(relax_steps=0)):
        with pytest.raises(InputError) as exc:
            PhononSettings(**bad)
        assert "fix:" in str(exc.value) and "\n" not in str(exc.value)
    s = PhononSettings(supercell=(0, 1, 0, 1, 0, 0, 0, 0, -1), relax_steps=300.0)  # det +1: a valid matrix
    assert s.supercell == (0, 1, 0, 1, 0, 0, 0, 0, -1) and s.relax_steps == 300
    json.loads(json.dumps(s.to_dict(), allow_nan=False))


# ------------------------------------------------------------------------------------------ 4. clean errors
def test_unwritable_output_directory(work, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    _refused(["phonons", work / "Al.cif", *FAST, "--out", afile / "sub"], capsys, contains=("is a file",))
    _refused(["phonons", work / "Al.cif", *FAST, "--out", afile], capsys, contains=("is a file",))
    _refused(["ins", work / "al", "--out", afile / "sub"], capsys, contains=("is a file",))
    _refused(["predict", work / "Al.cif", "--out", afile / "p.jsonl"], capsys, contains=("no such directory",))
    assert afile.read_text() == "x"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: permissions do not bite")
        _refused(["phonons", work / "Al.cif", *FAST, "--out", locked / "sub"], capsys, contains=("permission",))
        _refused(["ins", work / "al", "--out", locked], capsys, contains=("permission",))
        _refused(["compare", work / "ins", work / "ins" / "ins.csv", "--out", locked / "c"], capsys,
                 contains=("permission",))
        _refused(["predict", work / "Al.cif", "--out", locked / "p.jsonl"], capsys, contains=("permission",))
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o700)


def test_isolated_atom_and_single_atom_molecule(tmp_path, capsys):
    box = tmp_path / "Ar_box.cif"
    write(box, Atoms("Ar", cell=[20, 20, 20], pbc=True))
    one = tmp_path / "Ar.xyz"
    write(one, Atoms("Ar"))
    _refused(["phonons", box, "-e", "emt", "--out", tmp_path / "a"], capsys,
             contains=("isolated atom", "no phonons", "real cell"))
    _refused(["phonons", one, "-e", "emt", "--out", tmp_path / "b"], capsys, contains=("single Ar atom", "no vibrations"))
    _refused(["ins", box, "-e", "emt", "--out", tmp_path / "c"], capsys, contains=("isolated atom",))
    assert sorted(os.listdir(tmp_path)) == ["Ar.xyz", "Ar_box.cif"]


def test_measured_file_is_a_directory(work, tmp_path, capsys):
    (tmp_path / "measured").mkdir()
    _refused(["compare", work / "ins", tmp_path / "measured", "--out", tmp_path / "c"], capsys,
             contains=("is a directory",))
    assert not (tmp_path / "c").exists()


def test_measured_axis_with_an_outlier(work, tmp_path, capsys):
    x = np.r_[np.arange(1.0, 100.0), 1e12]
    pd.DataFrame({"energy_meV": x, "intensity": np.ones_like(x)}).to_csv(tmp_path / "m.csv", index=False)
    _refused(["compare", work / "ins", tmp_path / "m.csv", "--out", tmp_path / "c"], capsys, contains=("outlying",))


def test_ins_mesh_too_large_for_memory(work, tmp_path, capsys):
    line = _refused(["ins", work / "al", "--mesh", "2000", "--out", tmp_path / "i"], capsys,
                    contains=("GB", "--mesh"))
    n = int(line.split("--mesh ")[-1].split(",")[0])
    assert 10 <= n < 2000
    assert not (tmp_path / "i").exists()


def test_failed_input_leaves_no_empty_directory(tmp_path, capsys):
    bad = tmp_path / "bad.cif"
    bad.write_text("data_x\nthis is not a crystal\n")
    _refused(["phonons", bad, "-e", "emt", "--out", tmp_path / "new" / "dir"], capsys)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()  # a directory that was there before stays
    _refused(["phonons", bad, "-e", "emt", "--out", tmp_path / "kept"], capsys)
    assert (tmp_path / "kept").is_dir() and os.listdir(tmp_path / "kept") == []
    # the default output directory (INPUT_atomvib) is not left behind either
    _refused(["phonons", bad, "-e", "emt"], capsys)
    assert not (tmp_path / "bad_atomvib").exists()


def test_summary_json_is_strict(work):
    for d in ("al", "ins"):
        for name in ("summary.json", "result.json"):
            _strict_json(work / d / name)
    s = _strict_json(work / "al" / "summary.json")
    assert all(math.isfinite(t) for t in s["settings"]["temperatures_k"])
