"""Writing results: ``summary.json``, ``dos.csv``, ``band.json``, ``phonopy.yaml``, plots.

Output directories are never overwritten silently: an existing result directory needs ``force``.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from .errors import OutputExistsError

SCHEMA_VERSION = 1


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


def provenance() -> dict:
    from importlib.metadata import version

    return {
        "atomvib_version": version("atomvib"),
        "python": platform.python_version(),
        "host": platform.node(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _structure_dict(s, symprec) -> dict:
    return {
        "formula": s.formula,
        "cell_formula": s.cell_formula,
        "natoms": s.natoms,
        "spacegroup": s.spacegroup(symprec) if not s.is_molecule else "",
        "source": s.source,
    }


def crystal_summary(r) -> dict:
    prim = r.primitive
    t = r.settings.summary_temperature_k
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
        "schema_version": SCHEMA_VERSION,
        "kind": "crystal",
        "engine": r.engine,
        "structure": _structure_dict(prim, r.settings.symprec),
        "input_structure": _structure_dict(r.structure, r.settings.symprec),
        "formula_units": prim.formula_units,
        "thermal_basis": f"per mole of the analysed primitive cell ({prim.cell_formula}, {prim.formula_units} formula units)",
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
        "thermal": thermal,
        "relaxation": r.relaxation,
        "settings": r.settings.to_dict(),
        "timings_s": r.timings,
        "provenance": provenance(),
    }


def molecule_summary(r) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "molecule",
        "engine": r.engine,
        "structure": _structure_dict(r.structure, r.settings.symprec),
        "formula_units": 1,
        "n_displacements": r.n_displacements,
        "frequencies_cm1": r.frequencies_cm1.tolist(),
        "omega_max_thz": r.omega_max_thz,
        "min_frequency_thz": r.min_frequency_thz,
        "has_imaginary": r.has_imaginary,
        "zero_point_energy_eV": r.zero_point_energy_ev,
        "energy_eV": r.energy_ev,
        "thermochemistry": r.thermochemistry(r.settings.summary_temperature_k),
        "relaxation": r.relaxation,
        "settings": r.settings.to_dict(),
        "timings_s": r.timings,
        "provenance": provenance(),
    }


def write_result(result, out: Path, plot: bool = True) -> list[Path]:
    """Write every output file of a result into ``out`` (which must exist). Returns the paths."""
    from ase.io import write

    out = Path(out)
    written = []
    summary = result.summary()
    if result.kind == "crystal":
        dos = result.dos()
        header = ["frequency_thz", "total", *dos.partial.keys()]
        cols = [dos.frequencies_thz, dos.total, *dos.partial.values()]
        np.savetxt(out / "dos.csv", np.column_stack(cols), delimiter=",", header=",".join(header), comments="", fmt="%.8g")
        (out / "band.json").write_text(json.dumps(result.band_structure().to_dict()))
        result.thermal_  # noqa: B018
        th = result.thermal_.to_dict()
        np.savetxt(
            out / "thermal.csv",
            np.column_stack([th[k] for k in th]),
            delimiter=",",
            header=",".join(th.keys()),
            comments="",
            fmt="%.8g",
        )
        ph = result.to_phonopy()
        ph.save(str(out / "phonopy.yaml"), settings={"force_constants": True})
        write(out / "structure.cif", result.structure.to_ase())
        written += [out / n for n in ("dos.csv", "band.json", "thermal.csv", "phonopy.yaml", "structure.cif")]
        if plot:
            from .plot import plot_band_dos

            plot_band_dos(result, out / "band_dos.png")
            written.append(out / "band_dos.png")
    else:
        extra = {}
        if result.dipole_derivatives is not None:
            extra["dipole_derivatives_e"] = result.dipole_derivatives
        np.savez_compressed(
            out / "modes.npz", frequencies_cm1=result.frequencies_cm1, modes=result.modes,
            hessian_eV_per_A2=result.hessian, **extra,
        )
        write(out / "structure.xyz", result.structure.to_ase())
        written += [out / "modes.npz", out / "structure.xyz"]
        if plot:
            from .plot import plot_molecule_modes

            plot_molecule_modes(result, out / "modes.png")
            written.append(out / "modes.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    written.append(out / "summary.json")
    return written
