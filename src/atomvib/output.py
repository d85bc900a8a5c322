"""What a saved phonon result says (``summary.json``) and the files beside it for people and other tools.

The result itself is saved and loaded by :mod:`atomvib.results`; this module adds the summaries, the
CSV/JSON/phonopy files and the figures.

Output directories are never overwritten silently: an existing result directory needs ``force``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import InputError, OutputExistsError
from .results import SCHEMA_VERSION, provenance  # noqa: F401  (re-exported for older imports)


def default_out_dir(input_path) -> Path:
    """``<input stem>_atomvib`` next to the input file."""
    p = Path(input_path)
    return p.with_name(f"{p.stem}_atomvib")


def prepare_out_dir(out: Path, force: bool) -> Path:
    """Create ``out``; refuse a directory that already holds results unless ``force``.

    (Kept for scripts; the CLI commands use :class:`OutputDir`, which also stages and cleans up.)"""
    out = Path(out)
    if out.exists() and (out / "summary.json").exists() and not force:
        raise OutputExistsError(
            f"{out} already holds results",
            fix="give another --out directory, or --force to overwrite",
        )
    _check_writable(out, "--out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(out, exc) from None
    return out


# ------------------------------------------------------------------------------------------ output policy
#: the result files every command saves (:func:`atomvib.results.save`)
RESULT_FILES = ("summary.json", "result.json", "arrays.npz")
#: every file each command may write into its output directory. Without ``--force`` any of them already there
#: is refused; with ``--force`` those of a previous run that this run does not write again (an old ``ins.png``
#: after ``--no-plot``, ``ins_map.h5`` after switching to an indirect instrument) are removed. Nothing else in
#: the directory is touched: the checkpoints (``*_checkpoint.npz``) stay to be reused.
COMMAND_FILES: dict[str, tuple[str, ...]] = {
    "phonons": RESULT_FILES + ("phonopy.yaml", "dos.csv", "band.json", "thermal.csv", "structure.cif", "band_dos.png",
                               "structure.xyz", "frequencies.csv", "modes.png", "relaxed_unconverged.extxyz"),
    "ins": RESULT_FILES + ("ins.csv", "ins_map.h5", "ins.json", "ins.png"),
    "ir": RESULT_FILES + ("ir.csv", "ir_modes.csv", "ir.png", "ir_summary.json"),
    "raman": RESULT_FILES + ("raman.csv", "raman_modes.csv", "raman.png", "raman_summary.json"),
    "compare": RESULT_FILES + ("compare.json", "compare.csv", "compare.png"),
    "kappa": RESULT_FILES + ("kappa.csv", "kappa.json", "kappa-phono3py.hdf5", "kappa.png"),
    "qha": RESULT_FILES + ("qha.csv", "e-v.csv", "qha.png"),
    "identify": RESULT_FILES + ("identify.json", "ranking.csv", "identify.png"),
}
#: files a failed run leaves for the user (not a result: they neither block a re-run nor outlive a success)
PARTIAL_FILES: dict[str, tuple[str, ...]] = {"phonons": ("relaxed_unconverged.extxyz",)}


def _same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` are one file or directory (symbolic and hard links resolved)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _exists(p: Path) -> bool:
    try:
        return p.exists() or p.is_symlink()
    except OSError:  # e.g. a parent without search permission
        return False


def _unwritable(path: Path, exc: OSError | None = None) -> InputError:
    why = f" ({exc.strerror})" if exc is not None and exc.strerror else ""
    return InputError(f"cannot write {path}{why}", fix="give an --out path in a directory you can write")


def _check_writable(out: Path, option: str = "--out") -> None:
    """Refuse, before any computation, an output path that cannot be created or written."""
    p = Path(out)
    while not _exists(p) and p.parent != p:
        p = p.parent
    if not p.is_dir():
        raise InputError(
            f"cannot create {option} {out}: {p} is a file, not a directory",
            fix=f"give an {option} path in a directory you can write",
        )
    if not os.access(p, os.W_OK | os.X_OK):
        raise InputError(
            f"cannot write in {p} (permission denied)", fix=f"give an {option} path in a directory you can write"
        )


class OutputDir:
    """The output directory of one CLI command: checked before computing, written in one step at the end.

    - ``check()`` (call it before the computation): refuses an ``--out`` that is one of the inputs or would
      replace an input file, a directory that already holds this command's files unless ``force``, and a place
      that cannot be written.
    - ``with out:`` creates the directory (and a staging directory inside it, ``.CMD-*.tmp``); the command writes
      every file into ``out.stage``. On success each file is moved into place with :func:`os.replace`
      (``summary.json`` last, after the old one is removed, so a half-replaced directory never passes for a
      result), and with ``force`` the command's own files of a previous run that were not written again are
      removed. On an error nothing of the old result is lost, the staging directory is removed, and so is the
      output directory itself if this run created it and left it empty.
    """

    def __init__(self, path, command: str, *, inputs=(), force: bool = False):
        self.path = Path(path)
        self.command = command
        self.files = COMMAND_FILES[command]
        self.partial = PARTIAL_FILES.get(command, ())
        self.inputs = [Path(p) for p in inputs if p is not None]
        self.force = bool(force)
        self.stage: Path | None = None
        self._created: list[Path] = []

    def existing(self) -> list[str]:
        """This command's result files already in the directory (partial files of a failed run not counted)."""
        return [n for n in self.files if n not in self.partial and _exists(self.path / n)]

    def check(self) -> OutputDir:
        out = self.path
        if _exists(out) and not out.is_dir():
            raise InputError(f"--out {out} is a file, not a directory", fix="give a directory for the results")
        for inp in self.inputs:
            if not _exists(inp):
                continue  # the command says itself that an input is missing
            if inp.is_dir() and _same_file(inp, out):
                raise InputError(
                    f"--out {out} is the input directory {inp}: its result would be overwritten",
                    fix="give another --out directory",
                )
            for name in self.files:
                if _same_file(out / name, inp):
                    raise InputError(
                        f"input {inp} would be overwritten: `atomvib {self.command}` writes {name} in {out}",
                        fix="give another --out directory (or move the input)",
                    )
        blocking = [n for n in self.files if (out / n).is_dir()]
        if blocking:
            raise InputError(
                f"{out / blocking[0]} is a directory, where `atomvib {self.command}` writes a file",
                fix="give another --out directory (or move that directory)",
            )
        existing = self.existing()
        if existing and not self.force:
            raise OutputExistsError(
                f"{out} already holds results ({', '.join(existing[:3])}{', ...' if len(existing) > 3 else ''})",
                fix="give another --out directory, or --force to overwrite",
            )
        _check_writable(out)
        return self

    def __enter__(self) -> OutputDir:
        self.check()
        p, missing = self.path, []
        while not _exists(p) and p.parent != p:
            missing.append(p)
            p = p.parent
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._created = missing  # deepest first
            self.stage = Path(tempfile.mkdtemp(prefix=f".{self.command}-", suffix=".tmp", dir=self.path))
        except OSError as exc:
            self._discard()
            raise _unwritable(self.path, exc) from None
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self._discard()
                raise
        else:
            self._discard()
        return False

    def commit(self) -> list[Path]:
        """Move the staged files into place (see the class doc); returns their final paths."""
        stage = self.stage
        # summary.json last; a file not in COMMAND_FILES (a writer added without updating the list) is moved in
        # too, but is never removed by a later --force
        staged = sorted((p.name for p in stage.iterdir()), key=lambda n: n == "summary.json")
        existing = self.existing()
        if existing and not self.force:  # appeared while this run computed
            raise OutputExistsError(f"{self.path} already holds results ({', '.join(existing[:3])})",
                                    fix="give another --out directory, or --force to overwrite")
        try:
            old = self.path / "summary.json"
            if _exists(old) and not old.is_dir():
                old.unlink()  # from here on the directory is not taken for a finished result
            for name in self.files:
                p = self.path / name
                if name not in staged and (p.is_file() or p.is_symlink()):
                    p.unlink()  # this command's own file of an earlier run, not written this time
            for name in staged:
                os.replace(stage / name, self.path / name)
            stage.rmdir()
        except OSError as exc:
            raise _unwritable(self.path, exc) from None
        self.stage = None
        return [self.path / n for n in staged]

    def _discard(self) -> None:
        if self.stage is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
            self.stage = None
        for d in self._created:  # deepest first; stop at the first that is not empty
            try:
                d.rmdir()
            except OSError:
                break
        self._created = []


def check_output_file(out, *, inputs=(), force: bool = False, option: str = "--out") -> Path:
    """Refuse an output file that is an input (symbolic and hard links resolved; ``force`` or not), a directory,
    an existing file without ``force``, or a place that cannot be written. Returns the path."""
    out = Path(out)
    for inp in inputs:
        if inp is not None and _exists(Path(inp)) and _same_file(Path(inp), out):
            raise InputError(f"{option} {out} is the input {inp}: writing it would destroy the input",
                             fix=f"give another {option} file")
    if _exists(out) and out.is_dir():
        raise InputError(f"{option} {out} is a directory", fix=f"give a file name, e.g. {option} {out / 'out.jsonl'}")
    if _exists(out) and not force:
        raise OutputExistsError(f"{out} exists", fix=f"give another {option} file, or --force to overwrite it")
    parent = out.parent
    if not parent.is_dir():
        raise InputError(f"{parent}: no such directory", fix=f"create it or choose another {option}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write in {parent} (permission denied)", fix=f"choose another {option}")
    return out


@contextlib.contextmanager
def atomic_file(path, mode: str = "w"):
    """Open a temporary file beside ``path``; on success it replaces ``path`` (:func:`os.replace`), on an error
    it is removed and ``path`` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a result file gets the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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


def _nac_summary(r):
    """``summary.json``'s ``nac``: true/false for a BORN file or none; ``"predicted (model …, spread …)"`` for
    Born charges from :mod:`atomvib.learn.born` (the full record is under ``engine.settings.born``)."""
    rec = r.engine.settings.get("born") if isinstance(getattr(r.engine, "settings", None), dict) else None
    if r.force_constants.nac is not None and isinstance(rec, dict) and rec.get("source") == "predicted":
        return rec.get("nac_label", "predicted")
    return r.force_constants.nac is not None


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
        "nac": _nac_summary(r),
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
        if result.kind == "committee":
            from .plot import plot_committee

            plot_committee(result, out / "band_dos.png")
            written.append(out / "band_dos.png")
        elif result.kind == "qha":
            written.append(out / "qha.png")  # drawn by the result itself (QuasiHarmonic._write_files)
        elif result.kind == "kappa":
            from .plot import plot_kappa

            plot_kappa(result, out / "kappa.png")
            written.append(out / "kappa.png")
        elif result.kind == "crystal":
            from .plot import plot_band_dos

            plot_band_dos(result, out / "band_dos.png")
            written.append(out / "band_dos.png")
        else:
            from .plot import plot_molecule_modes

            plot_molecule_modes(result, out / "modes.png")
            written.append(out / "modes.png")
    return written
