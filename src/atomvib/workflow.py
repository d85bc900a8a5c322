"""The runner: structure → (relax) → displacements → forces → force constants → analysis.

:func:`phonons` is the one call behind ``atomvib phonons`` and the batch layer. It returns frozen
results (:class:`~atomvib.harmonic.crystal.CrystalPhonons` or
:class:`~atomvib.harmonic.molecule.MoleculeVibrations`); the work state lives only here.

Forces computed so far are checkpointed to ``checkpoint_dir/forces.npz`` (keyed by a hash of the
structure, engine and settings), so an interrupted run resumes where it stopped and never mixes
forces from different inputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from pathlib import Path

import numpy as np

from .engines import Engine, default_engine_spec, get_engine
from .errors import AtomvibError, InputError
from .runtime import configure_threads
from .settings import PhononSettings
from .structure import Structure, read_structure

PHONOPY_INPUT_SUFFIXES = (".yaml", ".yml")


class _Progress:
    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar = None
        if enabled and total > 0:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="calc", leave=False)

    def __call__(self, n: int = 1):
        if self.bar is not None:
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class ForceCheckpoint:
    """Forces of displaced cells saved as they arrive; valid only for the same ``key``."""

    def __init__(self, directory: Path | None, key: str):
        self.path = Path(directory) / "forces_checkpoint.npz" if directory else None
        self.key = key
        self.done: dict[int, np.ndarray] = {}
        self.dipoles: dict[int, np.ndarray] = {}
        if self.path is not None and self.path.exists():
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    if str(z["key"]) == key:
                        self.done = {int(i): f for i, f in zip(z["index"], z["forces"])}
                        if "dipoles" in z.files:
                            self.dipoles = {int(i): d for i, d in zip(z["index"], z["dipoles"])}
            except (OSError, KeyError, ValueError):  # a torn write: start again
                self.done, self.dipoles = {}, {}

    def save(self):
        if self.path is None or not self.done:
            return
        idx = np.array(sorted(self.done))
        tmp = self.path.with_suffix(".tmp.npz")
        extra = {}
        if len(self.dipoles) == len(self.done):
            extra["dipoles"] = np.stack([self.dipoles[i] for i in idx])
        np.savez(tmp, key=np.array(self.key), index=idx, forces=np.stack([self.done[i] for i in idx]), **extra)
        tmp.replace(self.path)


def _key(structure: Structure, engine: Engine, settings: PhononSettings, extra: str = "") -> str:
    payload = json.dumps(
        [structure.content_hash(), engine.info.to_dict(), settings.digest(), extra], sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def evaluate_forces(engine: Engine, atoms_list: list, key: str, checkpoint_dir=None, progress=True, desc="forces",
                    chunk=8, with_dipoles=False):
    """Forces (n, natoms, 3) eV/Å for ``atoms_list``, resuming from and writing to a checkpoint.

    With ``with_dipoles``, returns ``(forces, dipoles)``; dipoles (n, 3) e·Å, or None if the engine gives none.
    """
    ckpt = ForceCheckpoint(checkpoint_dir, key)
    todo = [i for i in range(len(atoms_list)) if i not in ckpt.done]
    bar = _Progress(len(atoms_list), desc, progress)
    bar(len(atoms_list) - len(todo))
    # an engine with a worker pool (engines/parallel.py) needs several cells per call to keep every worker busy
    if getattr(engine, "spec", None) is not None:
        from .engines.parallel import requested_workers

        chunk = max(chunk, 8 * requested_workers(), getattr(engine, "batch_size", None) or 1)
    try:
        for start in range(0, len(todo), chunk):
            idx = todo[start : start + chunk]
            evs = engine.evaluate([atoms_list[i] for i in idx], progress=bar)
            for i, ev in zip(idx, evs):
                ckpt.done[i] = ev.forces
                if ev.dipole is not None:
                    ckpt.dipoles[i] = ev.dipole
            ckpt.save()
    finally:
        bar.close()
    forces = np.stack([ckpt.done[i] for i in range(len(atoms_list))])
    if not with_dipoles:
        return forces
    n = len(atoms_list)
    dipoles = np.stack([ckpt.dipoles[i] for i in range(n)]) if len(ckpt.dipoles) == n else None
    return forces, dipoles


def load_input(inp) -> Structure:
    """A Structure from a path, an :class:`ase.Atoms` or a Structure."""
    if isinstance(inp, Structure):
        return inp.validate()
    if hasattr(inp, "get_positions") and hasattr(inp, "numbers"):
        return Structure.from_ase(inp, source="ase.Atoms").validate()
    return read_structure(inp)


def phonons(
    inp,
    engine: str | Engine | None = None,
    settings: PhononSettings | None = None,
    *,
    forces: str | Path | None = None,
    born: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
    **overrides,
):
    """Harmonic vibrations of a crystal or molecule.

    Parameters
    ----------
    inp : path, ase.Atoms or Structure
        A structure (any ASE format), or ``phonopy_disp.yaml``/``phonopy_params.yaml`` to analyse
        forces the user already has (then ``forces`` names FORCE_SETS unless the yaml holds them).
    engine : str or Engine, optional
        Engine spec (``atomvib engines``); default SevenNet-0 for crystals, GFN2-xTB for molecules.
    settings : PhononSettings, optional
        All workflow settings; keyword ``overrides`` replace single fields.
    forces, born : path, optional
        FORCE_SETS and BORN files (for a phonopy yaml input; ``born`` also works with an engine).
    checkpoint_dir : path, optional
        Where to keep forces computed so far (resume after an interruption).
    progress : bool
        Show a progress bar over the displaced cells.

    Returns
    -------
    CrystalPhonons or MoleculeVibrations
    """
    configure_threads(blas_only=True)
    settings = settings or PhononSettings()
    if engine is not None and not isinstance(engine, Engine):
        overrides.setdefault("engine", engine)
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    if isinstance(inp, str | Path) and Path(inp).suffix.lower() in PHONOPY_INPUT_SUFFIXES:
        return phonons_from_phonopy(inp, forces=forces, born=born, settings=settings)
    if forces is not None:
        # a unit cell + FORCE_SETS (which then holds the displacements, phonopy's older layout)
        return phonons_from_phonopy(inp, forces=forces, born=born, settings=settings)
    structure = load_input(inp)
    eng = engine if isinstance(engine, Engine) else get_engine(settings.engine or default_engine_spec(structure.is_molecule))
    if structure.is_molecule:
        if born is not None:
            raise InputError("--born applies to crystals", fix="drop --born for a molecule")
        return _molecule(structure, eng, settings, checkpoint_dir, progress)
    if settings.primitive:
        structure = structure.primitive(settings.symprec)
    return _crystal(structure, eng, settings, born, checkpoint_dir, progress)


def _relax(structure, eng, settings, timings):
    if not settings.relax:
        return structure, None
    from .relax import relax

    t0 = time.perf_counter()
    rel = relax(structure, eng, settings)
    timings["relax"] = time.perf_counter() - t0
    return rel.structure, rel.to_dict()


def _crystal(structure, eng, settings, born, checkpoint_dir, progress):
    from .harmonic.crystal import analyse_crystal
    from .harmonic.displacements import plan_displacements

    eng.check(structure)
    timings: dict[str, float] = {}
    structure, relaxation = _relax(structure, eng, settings, timings)
    plan = plan_displacements(structure, settings)
    t0 = time.perf_counter()
    key = _key(structure, eng, settings)
    forces = evaluate_forces(eng, plan.supercells(), key, checkpoint_dir, progress, desc="displacements")
    timings["forces"] = time.perf_counter() - t0
    nac = read_born(born, plan) if born else None
    fc = plan.force_constants(forces, nac=nac)
    t0 = time.perf_counter()
    result = analyse_crystal(
        fc, settings, structure=structure, engine=eng.info.to_dict(), n_displacements=plan.n_displacements,
        relaxation=relaxation, timings=timings,
    )
    timings["analysis"] = time.perf_counter() - t0
    return result


def read_born(born, plan_or_phonopy):
    """NAC parameters from a BORN file for the primitive cell of a plan or phonopy object."""
    from phonopy.file_IO import parse_BORN

    from .harmonic.force_constants import NacParams

    p = Path(born)
    if not p.is_file():
        raise InputError(f"{born}: no such BORN file", fix="check the path")
    ph = plan_or_phonopy._phonopy() if hasattr(plan_or_phonopy, "_phonopy") else plan_or_phonopy
    try:
        d = parse_BORN(ph.primitive, symprec=ph.symmetry.tolerance, filename=str(p))
    except Exception as exc:  # phonopy raises several types for malformed files
        raise InputError(f"{born}: cannot read BORN file ({exc})", fix="check it matches the primitive cell") from None
    return NacParams.from_phonopy(d)


def phonons_from_phonopy(yaml_path, forces=None, born=None, settings: PhononSettings | None = None):
    """Analyse forces the user already has.

    ``yaml_path`` is phonopy_disp.yaml (+ ``forces`` FORCE_SETS, + ``born`` BORN) or phonopy_params.yaml (forces
    inside); or a unit-cell structure file (POSCAR-unitcell) with ``forces`` FORCE_SETS that holds the
    displacements, and ``settings.supercell`` giving the supercell matrix.
    """
    import phonopy

    from .harmonic.crystal import analyse_crystal

    settings = settings or PhononSettings()
    fc, n_disp = _load_phonopy_files(yaml_path, forces, born, settings)
    engine = {"name": "phonopy-files", "version": phonopy.__version__, "model": str(Path(yaml_path).resolve()),
              "settings": {"forces": str(forces) if forces else None, "born": str(born) if born else None}}
    return analyse_crystal(fc, settings, structure=fc.unitcell, engine=engine, n_displacements=n_disp)


def load_force_constants(path, forces=None, born=None, settings: PhononSettings | None = None):
    """:class:`~atomvib.harmonic.force_constants.ForceConstants` from phonopy files, without the analysis.

    ``path`` is an ``atomvib phonons`` result directory (its phonopy.yaml), a phonopy yaml (with force constants or
    forces inside, or with ``forces`` FORCE_SETS), or a unit cell + ``forces`` (+ ``settings.supercell``). ``born``
    replaces any NAC data of the yaml. Nothing else is read: no BORN file is looked for in the working directory.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "phonopy.yaml"
        if not p.is_file():
            raise InputError(f"{path}: no phonopy.yaml in this directory", fix="give an `atomvib phonons` result directory")
    return _load_phonopy_files(p, forces, born, settings or PhononSettings())[0]


def _load_phonopy_files(yaml_path, forces, born, settings: PhononSettings):
    """(ForceConstants, number of displacements) from phonopy files; see :func:`phonons_from_phonopy`."""
    import phonopy

    from .harmonic.force_constants import ForceConstants

    yp = Path(yaml_path)
    if not yp.is_file():
        raise InputError(f"{yaml_path}: no such file", fix="check the path")
    if forces is not None and not Path(forces).is_file():
        raise InputError(f"{forces}: no such FORCE_SETS file", fix="check the path")
    if born is not None and not Path(born).is_file():
        raise InputError(f"{born}: no such BORN file", fix="check the path")
    is_yaml = yp.suffix.lower() in PHONOPY_INPUT_SUFFIXES
    if not is_yaml and settings.supercell is None:
        raise InputError(
            f"{yaml_path} with --forces needs the supercell the forces were computed in",
            fix="add --supercell N N N (as used for FORCE_SETS), or give phonopy_disp.yaml instead",
        )
    if not is_yaml and forces is None:
        raise InputError("a unit cell alone holds no forces", fix="add --forces FORCE_SETS")
    try:
        # is_nac only with an explicit BORN file or NAC data inside the yaml: phonopy would otherwise
        # look for a BORN file in the working directory.
        cell_kw = (
            {"phonopy_yaml": str(yp)}
            if is_yaml
            else {
                "unitcell": _read_unitcell(yp),
                "supercell_matrix": np.reshape(settings.supercell, (3, 3)),
            }
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # phonopy's notice about its primitive_matrix default
            ph = phonopy.load(
                **cell_kw,
                force_sets_filename=str(forces) if forces else None,
                born_filename=str(born) if born else None,
                is_nac=born is not None or (is_yaml and _yaml_has_nac(yp)),
                produce_fc=False,
                log_level=0,
            )
    except AtomvibError:
        raise
    except Exception as exc:  # phonopy raises many types for malformed inputs
        raise InputError(f"{yaml_path}: phonopy cannot read it ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                         fix="give phonopy_disp.yaml with --forces FORCE_SETS, or phonopy_params.yaml") from None
    if ph.force_constants is None and not _has_forces(ph):
        raise InputError(
            f"{yaml_path} holds no forces",
            fix="add --forces FORCE_SETS (or give phonopy_params.yaml, which has the forces inside)",
        )
    try:
        if ph.force_constants is None:
            from .harmonic.displacements import produce_symmetrized_fc

            produce_symmetrized_fc(ph)
    except Exception as exc:
        raise InputError(f"cannot build force constants: {exc}", fix="check FORCE_SETS matches phonopy_disp.yaml") from None
    n_disp = len(ph.dataset.get("first_atoms", ph.dataset.get("displacements", []))) if ph.dataset else 0
    return ForceConstants.from_phonopy(ph), n_disp



def _has_forces(ph) -> bool:
    try:
        return ph.forces is not None
    except RuntimeError:  # phonopy raises when there is no displacement dataset at all
        return False


def _read_unitcell(path: Path):
    from .harmonic.force_constants import to_phonopy_atoms

    return to_phonopy_atoms(read_structure(path))


def _yaml_has_nac(path: Path) -> bool:
    with open(path) as fh:
        for line in fh:
            if line.startswith("born_effective_charge") or line.startswith("nac_unit_conversion_factor"):
                return True
    return False


def _molecule(structure, eng, settings, checkpoint_dir, progress):
    from .harmonic.molecule import (
        MoleculeVibrations,
        dipole_derivatives_from_dipoles,
        displaced_geometries,
        hessian_from_forces,
        normal_modes,
    )

    eng.check(structure)
    timings: dict[str, float] = {}
    structure, relaxation = _relax(structure, eng, settings, timings)
    step = settings.displacement_a
    geoms = displaced_geometries(structure, step)
    t0 = time.perf_counter()
    forces, dipoles = evaluate_forces(
        eng, geoms, _key(structure, eng, settings), checkpoint_dir, progress, desc="displacements", with_dipoles=True
    )
    timings["forces"] = time.perf_counter() - t0
    apt = dipole_derivatives_from_dipoles(dipoles, step) if dipoles is not None else None
    energy = eng.evaluate([structure.to_ase()])[0].energy
    hess = hessian_from_forces(forces[0::2], forces[1::2], step)
    freqs, modes = normal_modes(structure, hess)
    return MoleculeVibrations(
        structure=structure, hessian=hess, frequencies_cm1=freqs, modes=modes, energy_ev=energy,
        engine=eng.info.to_dict(), settings=settings, relaxation=relaxation, n_displacements=len(geoms),
        timings=timings, dipole_derivatives=apt,
    )


__all__ = ["phonons", "phonons_from_phonopy", "load_force_constants", "AtomvibError"]
