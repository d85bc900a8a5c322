"""``atomvib finetune`` (atomvib.learn.finetune): reading DFT data, refusing bad input with one line, a short
run that writes a checkpoint ``--engine sevennet:FILE`` loads, and (slow) the MgO validation against DFT."""

from __future__ import annotations

import numpy as np
import pytest

from atomvib.cli.main import main
from atomvib.errors import InputError
from atomvib.learn.finetune import (
    WRONG_FORCE_UNITS,
    FinetuneConfig,
    LabelledCell,
    check_force_units,
    read_training_data,
    split_cells,
)


@pytest.fixture
def no_trust(monkeypatch):
    """No model file trusted at the start, and whatever a test trusts forgotten after it."""
    from atomvib.engines.mlip import TRUST_ENV

    monkeypatch.setenv(TRUST_ENV, "")


def _err(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("atomvib finetune: error:")]
    assert len(lines) == 1, lines
    return lines[0]


# --- reading ------------------------------------------------------------------------------------------------------


def test_reads_phonopy_set_as_displaced_cells(phonopy_examples):
    from phonopy.file_IO import parse_FORCE_SETS

    d = phonopy_examples / "NaCl"
    cells = read_training_data(d / "phonopy_disp.yaml", forces=d / "FORCE_SETS")
    ref = parse_FORCE_SETS(filename=str(d / "FORCE_SETS"))
    assert len(cells) == 2 and all(c.natoms == 64 and c.energy is None and c.stress is None for c in cells)
    for c, first in zip(cells, ref["first_atoms"]):
        np.testing.assert_allclose(c.forces, first["forces"])
        # the displaced atom moved by the FORCE_SETS displacement (0.01 Å) from its site
        assert "FORCE_SETS displacement" in c.source
    assert sorted(set(cells[0].atoms.get_chemical_symbols())) == ["Cl", "Na"]


def test_reads_phonopy_params_with_forces_and_energies_inside(phonopy_examples, tmp_path):
    import phonopy

    d = phonopy_examples / "NaCl"
    ph = phonopy.load(d / "phonopy_disp.yaml", force_sets_filename=d / "FORCE_SETS", produce_fc=False, log_level=0)
    ph.save(tmp_path / "phonopy_params.yaml")
    cells = read_training_data(tmp_path / "phonopy_params.yaml")  # no --forces: they are inside
    assert len(cells) == 2 and cells[0].energy is None
    ds = ph.dataset
    for i, first in enumerate(ds["first_atoms"]):
        first["supercell_energy"] = -200.0 - i
    ph.dataset = ds
    ph.save(tmp_path / "with_energies.yaml")
    assert [c.energy for c in read_training_data(tmp_path / "with_energies.yaml")] == [-200.0, -201.0]


def test_reads_unit_cell_with_force_sets_and_supercell(phonopy_examples):
    d = phonopy_examples / "Si-gruneisen-orig"
    cells = read_training_data(d / "POSCAR-unitcell", forces=d / "FORCE_SETS", supercell=(2, 2, 2))
    assert len(cells) == 1 and cells[0].natoms == 64
    with pytest.raises(InputError, match="--supercell"):
        read_training_data(d / "POSCAR-unitcell", forces=d / "FORCE_SETS")
    with pytest.raises(InputError, match="not a supercell"):
        read_training_data(d / "POSCAR-unitcell", forces=d / "FORCE_SETS", supercell=(2, 0, 2))


def test_reads_extxyz_labels_with_ase_conventions(tmp_path):
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    a = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    a.rattle(0.02, seed=1)
    f = np.random.default_rng(0).normal(size=(len(a), 3))
    stress = np.array([0.01, 0.02, 0.03, 0.004, 0.005, 0.006])  # eV/Å³, ASE's Voigt order and sign
    a.calc = SinglePointCalculator(a, energy=-27.5, forces=f, stress=stress)
    write(tmp_path / "d.extxyz", [a, a])
    cells = read_training_data(tmp_path / "d.extxyz")
    assert len(cells) == 2
    assert cells[0].energy == pytest.approx(-27.5)
    np.testing.assert_allclose(cells[0].forces, f)
    np.testing.assert_allclose(cells[0].stress, stress)
    assert cells[1].source.endswith("frame 2")


def test_split_holds_out_whole_cells():
    tr, va = split_cells(10, 0.2, seed=0)
    assert len(va) == 2 and sorted(tr + va) == list(range(10))
    assert split_cells(10, 0.2, seed=0) == (tr, va)  # seeded
    assert split_cells(2, 0.2)[1] and len(split_cells(2, 0.2)[0]) == 1  # at least one each
    assert split_cells(3, 0.0) == ([0, 1, 2], [])
    with pytest.raises(InputError, match="too few"):
        split_cells(1, 0.2)


# --- refusals -------------------------------------------------------------------------------------------------------


def test_unit_check_names_the_unit_and_the_fix():
    rng = np.random.default_rng(3)
    model = [rng.normal(size=(8, 3)) for _ in range(3)]
    # the same physics in eV/Å, 20 % stiffer than the model: fine
    assert check_force_units([1.2 * m for m in model], model, "sevennet") == pytest.approx(1.2)
    for unit, factor in WRONG_FORCE_UNITS.items():
        with pytest.raises(InputError, match=f"look like {unit}") as exc:
            check_force_units([factor * m for m in model], model, "sevennet")
        assert "convert the forces to eV/Å" in str(exc.value)
    with pytest.raises(InputError, match="flip the sign"):
        check_force_units([-m for m in model], model, "sevennet")
    # unrelated forces (no common pattern) say nothing about units
    assert check_force_units([0.5 * rng.normal(size=(8, 3)) for _ in range(3)], model, "sevennet") is not None


def test_settings_are_validated():
    for bad in ({"learning_rate": -1.0}, {"max_epochs": 0}, {"valid_fraction": 1.0}, {"freeze_layers": -1},
                {"huber_delta": float("nan")}, {"energy_weight": -1}):  # fmt: skip
        with pytest.raises(InputError):
            FinetuneConfig(**bad)


def test_too_few_cells_for_validation_is_one_line(phonopy_examples, tmp_path, capsys):
    d = phonopy_examples / "Si-gruneisen-orig"
    rc = main(["finetune", str(d / "POSCAR-unitcell"), "--forces", str(d / "FORCE_SETS"), "--supercell", "2", "2",
               "2", "--out", str(tmp_path / "m.pth"), "-q"])  # fmt: skip
    assert rc == 2
    assert "too few to hold one out" in _err(capsys)
    assert not (tmp_path / "m.pth").exists()


def test_force_sets_of_another_crystal_is_one_line(phonopy_examples, tmp_path, capsys):
    d = phonopy_examples
    rc = main(["finetune", str(d / "NaCl" / "phonopy_disp.yaml"), "--forces", str(d / "Al2O3" / "FORCE_SETS"),
               "--out", str(tmp_path / "m.pth"), "-q"])  # fmt: skip
    assert rc == 2
    assert "FORCE_SETS belongs to this phonopy_disp.yaml" in _err(capsys)


def test_yaml_without_forces_is_one_line(phonopy_examples, tmp_path, capsys):
    rc = main(["finetune", str(phonopy_examples / "MgO" / "phonopy_disp.yaml"), "--out", str(tmp_path / "m.pth")])
    assert rc == 2
    assert "holds no forces" in _err(capsys)


def test_mismatched_atoms_and_forces_refused():
    from ase.build import bulk

    from atomvib.learn.finetune import _check_cell

    a = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    with pytest.raises(InputError, match="7 forces for 8 atoms"):
        _check_cell(LabelledCell(a, np.zeros((7, 3)), source="x"))
    with pytest.raises(InputError, match="NaN"):
        _check_cell(LabelledCell(a, np.full((8, 3), np.nan), source="x"))


@pytest.mark.parametrize("base", ["chgnet", "emt", "mace:model.model"])
def test_base_that_cannot_be_finetuned_is_one_line(phonopy_examples, tmp_path, capsys, base):
    d = phonopy_examples / "NaCl"
    rc = main(["finetune", str(d / "phonopy_disp.yaml"), "--forces", str(d / "FORCE_SETS"), "--base", base,
               "--out", str(tmp_path / "m.pth"), "-q"])  # fmt: skip
    assert rc == 2
    assert "only SevenNet models can be fine-tuned" in _err(capsys)


def test_base_file_needs_trust_and_must_be_a_training_checkpoint(phonopy_examples, tmp_path, capsys, no_trust):
    import torch

    d = phonopy_examples / "NaCl"
    notckpt = tmp_path / "weights.pth"
    torch.save({"something": torch.zeros(3)}, notckpt)
    args = ["finetune", str(d / "phonopy_disp.yaml"), "--forces", str(d / "FORCE_SETS"), "--base",
            f"sevennet:{notckpt}", "--out", str(tmp_path / "m.pth"), "-q"]  # fmt: skip
    assert main(args) == 2
    assert "--trust-model-file" in _err(capsys)
    assert main([*args, "--trust-model-file"]) == 2
    assert "not a SevenNet training checkpoint" in _err(capsys)


def test_output_over_an_input_is_refused(phonopy_examples, tmp_path, capsys):
    import shutil

    d = phonopy_examples / "NaCl"
    fs = tmp_path / "FORCE_SETS"
    shutil.copy(d / "FORCE_SETS", fs)
    rc = main(["finetune", str(d / "phonopy_disp.yaml"), "--forces", str(fs), "--out", str(fs), "--force", "-q"])
    assert rc == 2
    assert "destroy the input" in _err(capsys)


def test_forces_in_ev_per_bohr_are_caught_against_the_base_model(phonopy_examples, tmp_path, capsys):
    from phonopy.file_IO import parse_FORCE_SETS, write_FORCE_SETS

    d = phonopy_examples / "NaCl"
    ds = parse_FORCE_SETS(filename=str(d / "FORCE_SETS"))
    for first in ds["first_atoms"]:
        first["forces"] = np.asarray(first["forces"]) * WRONG_FORCE_UNITS["eV/bohr"]
    bohr = tmp_path / "FORCE_SETS"
    write_FORCE_SETS(ds, filename=str(bohr))
    rc = main(["finetune", str(d / "phonopy_disp.yaml"), "--forces", str(bohr), "--out", str(tmp_path / "m.pth"),
               "-q"])  # fmt: skip
    assert rc == 2
    msg = _err(capsys)
    assert "look like eV/bohr" in msg and "convert the forces to eV/Å" in msg
    assert not (tmp_path / "m.pth").exists()


# --- a short run, end to end ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """Four rattled 8-atom NaCl cells labelled with SevenNet-0's own forces × 1.15 (a stiffer 'DFT'), its energies
    + 0.3 eV/atom (another energy reference) and, on one cell, a stress: small enough for a 2-epoch run in seconds."""
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from atomvib.engines import get_engine

    eng = get_engine("sevennet")
    cells = []
    for seed in range(4):
        a = bulk("NaCl", "rocksalt", a=5.60, cubic=True)
        a.rattle(0.05, seed=seed)
        cells.append(a)
    evs = eng.evaluate(cells)
    for i, (a, ev) in enumerate(zip(cells, evs)):
        kw = {"stress": np.array([0.001, 0.001, 0.001, 0.0, 0.0, 0.0])} if i == 0 else {}
        a.calc = SinglePointCalculator(a, energy=ev.energy + 0.3 * len(a), forces=1.15 * ev.forces, **kw)
    path = tmp_path_factory.mktemp("tiny") / "tiny.extxyz"
    write(path, cells)
    return path


def test_short_run_writes_a_checkpoint_the_engine_loads(tiny_set, tmp_path, capsys, no_trust):
    from ase.build import bulk

    import atomvib
    from atomvib.engines import get_engine
    from atomvib.errors import EngineError
    from atomvib.learn.finetune import finetune

    out = tmp_path / "tiny.pth"
    r = finetune(tiny_set, out, max_epochs=2, valid_fraction=0.25, learning_rate=1e-3)
    assert out.is_file() and r.path == out
    assert r.n_train == 3 and r.n_valid == 1 and r.epochs_run == 2 and len(r.history) == 3
    # validation chose the epoch count, then every cell (the held-out one too) trained for that many epochs
    assert r.refit_epochs == r.best_epoch and len(r.refit_history) == r.best_epoch + 1
    if r.refit_epochs == 2:  # the refit's rate decays linearly to 1 % over its epochs
        assert [h["lr"] for h in r.refit_history[1:]] == pytest.approx([1e-3, 1e-5])
    assert r.trained_on == ("forces", "energy", "stress")
    assert r.energy_offset_ev_per_atom == pytest.approx(0.3, abs=1e-3)  # the other energy reference, absorbed
    assert r.force_scale_vs_base == pytest.approx(1.15, rel=1e-3)
    assert r.train_force_rmse_after < r.train_force_rmse_before
    assert "sevennet:" in r.describe() and "--trust-model-file" in r.describe()
    # the file is sevenn's checkpoint format, with atomvib's provenance beside it
    import torch

    blob = torch.load(out, weights_only=False, map_location="cpu")  # our own file, just written
    assert {"config", "model_state_dict", "epoch", "atomvib_finetune"} <= set(blob)
    assert blob["atomvib_finetune"]["base"] == "sevennet:7net-0"
    # a pickle like every SevenNet checkpoint: refused until trusted, then usable at once
    with pytest.raises(EngineError, match="--trust-model-file"):
        get_engine(f"sevennet:{out}")
    eng = get_engine(f"sevennet:{out}", trust_model_file=True)
    # the engine on the file gives the trained model: its force error on the data is the one training reached
    cells = read_training_data(tiny_set)
    ev = eng.evaluate([c.atoms for c in cells])
    rmse = np.sqrt(np.mean([np.sum((e.forces - c.forces) ** 2, axis=1).mean() for e, c in zip(ev, cells)]))
    assert rmse < 0.5 * r.train_force_rmse_before
    nacl = bulk("NaCl", "rocksalt", a=5.60)
    res = atomvib.phonons(nacl, engine=eng, relax=False, supercell=(2, 2, 2), mesh_density=20)
    assert res.engine.spec == f"sevennet:{out.resolve()}"
    assert 3.0 < res.omega_max_thz < 10.0 and not res.has_imaginary


def test_cli_short_run_and_no_overwrite(tiny_set, tmp_path, capsys):
    out = tmp_path / "m.pth"
    args = ["finetune", str(tiny_set), "--out", str(out), "--epochs", "1", "--valid-fraction", "0.25", "-q"]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "fine-tuned sevennet:7net-0 on forces, energies, stress of 4 cell(s): 3 trained on, 1 held out" in stdout
    assert f"--engine sevennet:{out}" in stdout
    assert main(args) == 2  # exists: not overwritten without --force
    assert "exists" in _err(capsys)


# --- validation against DFT (slow: ~10 min on 2 cores) --------------------------------------------------------------


def _phonons_of(engine, d, tmp_path):
    """Phonons of ``engine`` on the DFT's own displaced supercells (the DFT cell, no relaxation), analysed exactly as
    the DFT FORCE_SETS is: same supercell, displacements and q-points (benchmarks/finetune.py does the same)."""
    from phonopy.file_IO import parse_FORCE_SETS, write_FORCE_SETS

    import atomvib

    cells = read_training_data(d / "phonopy_disp.yaml", forces=d / "FORCE_SETS")
    ds = parse_FORCE_SETS(filename=str(d / "FORCE_SETS"))
    for first, ev in zip(ds["first_atoms"], engine.evaluate([c.atoms for c in cells])):
        first["forces"] = np.asarray(ev.forces)
    fs = tmp_path / f"FORCE_SETS.{len(list(tmp_path.iterdir()))}"
    write_FORCE_SETS(ds, filename=str(fs))
    return atomvib.phonons(d / "phonopy_disp.yaml", forces=fs, mesh_density=40)


@pytest.mark.slow
def test_finetuned_mgo_matches_dft_phonons(phonopy_examples, tmp_path, no_trust):
    """Fine-tuned with the defaults on MgO's two DFT displacements, phonons on the DFT cell against DFT: ω_max within
    2 %, Cv and S (300 K) within 1 %, dispersion RMS at most half the base model's (measured, docs/finetune.md)."""
    import atomvib
    from atomvib.engines import get_engine
    from atomvib.learn.finetune import finetune

    d = phonopy_examples / "MgO"
    r = finetune(d / "phonopy_disp.yaml", tmp_path / "mgo.pth", forces=d / "FORCE_SETS")
    dft = atomvib.phonons(d / "phonopy_disp.yaml", forces=d / "FORCE_SETS", mesh_density=40)
    base = _phonons_of(get_engine("sevennet"), d, tmp_path)
    ft = _phonons_of(get_engine(f"sevennet:{r.path}", trust_model_file=True), d, tmp_path)
    k = int(np.argmin(np.abs(dft.thermal_.temperatures_k - 300.0)))
    assert abs(ft.omega_max_thz / dft.omega_max_thz - 1) < 0.02
    for q in ("heat_capacity_j_per_k_per_mol", "entropy_j_per_k_per_mol"):
        assert abs(getattr(ft.thermal_, q)[k] / getattr(dft.thermal_, q)[k] - 1) < 0.01, q

    def rms(res):
        assert np.allclose(res.bands.qpoints, dft.bands.qpoints)
        return float(np.sqrt(np.mean((res.bands.frequencies_thz - dft.bands.frequencies_thz) ** 2)))

    assert rms(ft) <= 0.5 * rms(base)
