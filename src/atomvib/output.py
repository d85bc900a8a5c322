"""What a saved phonon result says (``summary.json``) and the files beside it for people and other tools.

The result itself is saved and loaded by :mod:`atomvib.results`; this module adds the summaries, the
CSV/JSON/phonopy files and the figures.

Output directories are never overwritten silently: an existing result directory needs ``force``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import OutputExistsError
from .results import SCHEMA_VERSION, provenance  # noqa: F401  (re-exported for older imports)


def default_out_dir(input_path) -> Path:
    """``<input stem>_atomvib`` next to the input file."""
    p = Path(input_path)
    return p.with_name(f"{p.stem}_atomvib")


def prepare_out_dir(out: Path, force: bool) -> Path:
    """Create ``out``; refuse a directory that already holds results unless ``force``."""
    out = Path(out)
    if out.exists() and (out / "summary.json").exists() and not force:
        raise OutputExistsError(
            f"{out} already holds results",
            fix="give another --out directory, or --force to overwrite",
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _structure_dict(s, symprec) -> dict:
    return {
        "formula": s.formula,
        "cell_formula": s.cell_formula,
        "formula_units": s.formula_units,
        "natoms": s.natoms,
        "spacegroup": s.spacegroup(symprec) if not s.is_molecule else "",
        "source": s.source,
    }


def thermal_bases(values: dict, cell) -> dict:
    """Thermal values per mole of the analysed cell, with the same per formula unit, both named.

    ``values`` holds ``*_per_mol`` keys (per mole of ``cell``); returns them with ``basis`` and
    ``per_formula_unit`` (each value divided by the number of formula units in the cell).
    """
    z = cell.formula_units or 1
    per_fu = {k: (v / z if k != "temperature_K" else v) for k, v in values.items()}
    return {
        **values,
        "basis": f"per mole of {cell.cell_formula} (the analysed cell, {z} formula unit{'s' if z != 1 else ''})",
        "per_formula_unit": {**per_fu, "basis": f"per mole of {cell.formula} (formula unit)"},
    }


def crystal_summary(r) -> dict:
    prim = r.primitive
    t = r.settings.summary_temperature("crystal")
    thermal = r.thermal_.at(t)
    thermal.pop("internal_energy_kJ_per_mol")
    inst = None
    if r.instability is not None:
        i = r.instability
        inst = {
            "min_frequency_thz": i.min_frequency_thz,
            "qpoint": list(i.qpoint),
            "label": i.label,
            "fraction_of_mesh": i.fraction_of_mesh,
            "message": i.describe(),
        }
    return {
        "kind": "crystal",
        "engine": r.engine.to_dict(),
        "structure": _structure_dict(prim, r.settings.symprec),
        "input_structure": _structure_dict(r.structure, r.settings.symprec),
        "formula_units": prim.formula_units,
        "supercell_matrix": np.asarray(r.force_constants.supercell_matrix).tolist(),
        "n_supercell_atoms": int(round(abs(np.linalg.det(r.force_constants.supercell_matrix)))) * r.force_constants.unitcell.natoms,
        "n_displacements": r.n_displacements,
        "mesh": list(r.mesh),
        "dos_mesh": list(r.dos_.mesh),
        "mesh_convergence": r.mesh_convergence,
        "nac": r.force_constants.nac is not None,
        "omega_max_thz": r.omega_max_thz,
        "min_frequency_thz": r.min_frequency_thz,
        "has_imaginary": r.has_imaginary,
        "instability": inst,
        "thermal": thermal_bases(thermal, prim),
        "relaxation": r.relaxation,
        "settings": r.settings.to_dict(),
        "timings_s": r.timings,
        "provenance": provenance(),
    }


def molecule_summary(r) -> dict:
    return {
        "kind": "molecule",
        "engine": r.engine.to_dict(),
        "structure": _structure_dict(r.structure, r.settings.symprec),
        "formula_units": 1,
        "n_displacements": r.n_displacements,
        "frequencies_cm1": r.frequencies_cm1.tolist(),
        "omega_max_thz": r.omega_max_thz,
        "min_frequency_thz": r.min_frequency_thz,
        "has_imaginary": r.has_imaginary,
        "zero_point_energy_eV": r.zero_point_energy_ev,
        "energy_eV": r.energy_ev,
        "has_dipole_derivatives": r.dipole_derivatives is not None,
        "thermochemistry": r.thermochemistry(r.settings.summary_temperature("molecule")),
        "relaxation": r.relaxation,
        "settings": r.settings.to_dict(),
        "timings_s": r.timings,
        "provenance": provenance(),
    }


def write_crystal_files(result, out: Path) -> None:
    """Files for people and other tools beside a saved crystal result (never read back by atomvib)."""
    from ase.io import write

    dos = result.dos()
    header = ["frequency_thz", "total", *dos.partial.keys()]
    cols = [dos.frequencies_thz, dos.total, *dos.partial.values()]
    np.savetxt(out / "dos.csv", np.column_stack(cols), delimiter=",", header=",".join(header), comments="", fmt="%.8g")
    (out / "band.json").write_text(json.dumps(result.band_structure().to_dict()))
    th = result.thermal_.to_dict()
    np.savetxt(out / "thermal.csv", np.column_stack([th[k] for k in th]), delimiter=",", header=",".join(th.keys()),
               comments="", fmt="%.8g")
    result.to_phonopy().save(str(out / "phonopy.yaml"), settings={"force_constants": True})
    write(out / "structure.cif", result.structure.to_ase())


def write_molecule_files(result, out: Path) -> None:
    """Files for people and other tools beside a saved molecule result (never read back by atomvib)."""
    from ase.io import write

    write(out / "structure.xyz", result.structure.to_ase())
    np.savetxt(out / "frequencies.csv", result.frequencies_cm1, header="frequency_cm1", comments="", fmt="%.6f")


def write_result(result, out: Path, plot: bool = True) -> list[Path]:
    """Save ``result`` into ``out`` (its own layout, :mod:`atomvib.results`) and draw its figure.

    Returns the paths written.
    """
    out = Path(out)
    result.save(out, force=True)
    written = sorted(p for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
    if plot:
        if result.kind == "crystal":
            from .plot import plot_band_dos

            plot_band_dos(result, out / "band_dos.png")
            written.append(out / "band_dos.png")
        else:
            from .plot import plot_molecule_modes

            plot_molecule_modes(result, out / "modes.png")
            written.append(out / "modes.png")
    return written
