"""The runner: structure → (relax) → displacements → forces → force constants → analysis.

:func:`phonons` is the one call behind ``atomvib phonons`` and the batch layer. It returns frozen
results (:class:`~atomvib.harmonic.crystal.CrystalPhonons` or
:class:`~atomvib.harmonic.molecule.MoleculeVibrations`); the work state lives only here.

Forces computed so far are checkpointed to ``checkpoint_dir/forces_checkpoint.npz``, keyed by a hash
of only what determines them (the displaced cells, the engine's identity and kernel path), so an
interrupted run resumes where it stopped, a re-run with another mesh or temperature grid reuses every
displaced cell, and forces from different inputs are never mixed. Isotope masses
(``PhononSettings.isotopes``) are applied after the forces, to the force constants or the Hessian, so the key is
that of the natural-mass structure and a re-run with other isotopes evaluates no force either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
import uuid
import warnings
from pathlib import Path

import numpy as np

from .engines import Engine, default_engine_spec, get_engine
from .errors import AtomvibError, InputError
from .progress import Progress, as_progress
from .runtime import configure_threads
from .settings import PhononSettings
from .structure import Structure, read_structure

PHONOPY_INPUT_SUFFIXES = (".yaml", ".yml")


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
        self.path.parent.mkdir(parents=True, exist_ok=True)  # a checkpoint folder that does not exist yet
        tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.npz")
        extra = {}
        if len(self.dipoles) == len(self.done):
            extra["dipoles"] = np.stack([self.dipoles[i] for i in idx])
        np.savez(tmp, key=np.array(self.key), index=idx, forces=np.stack([self.done[i] for i in idx]), **extra)
        tmp.replace(self.path)


def engine_identity(engine: Engine) -> dict:
    """What about ``engine`` determines its forces (loads the model: the kernel path is known only then)."""
    load = getattr(engine, "load", None)
    if callable(load):
        load()
    info = engine.info
    return info.identity() if hasattr(info, "identity") else info.to_dict()


def forces_key(what: str, engine: Engine) -> str:
    """Checkpoint key: a digest of the cells to evaluate (``what``) and the engine's identity."""
    payload = json.dumps([what, engine_identity(engine)], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def evaluate_forces(engine: Engine, atoms_list: list, key: str, checkpoint_dir=None, progress=False, desc="forces",
                    chunk=8, with_dipoles=False):
    """Forces (n, natoms, 3) eV/Å for ``atoms_list``, resuming from and writing to a checkpoint.

    With ``with_dipoles``, returns ``(forces, dipoles)``; dipoles (n, 3) e·Å, or None if the engine gives none.
    """
    ckpt = ForceCheckpoint(checkpoint_dir, key)
    todo = [i for i in range(len(atoms_list)) if i not in ckpt.done]
    bar = as_progress(progress).bar(len(atoms_list), desc)
    bar(len(atoms_list) - len(todo))
    # an engine with a worker pool (engines/parallel.py) needs several cells per call to keep every worker busy
    if getattr(engine, "uses_worker_pool", False):
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


def load_input(inp, fmt: str | None = None) -> Structure:
    """A Structure from a path (``fmt``: an ASE format name when the file name does not tell), an
    :class:`ase.Atoms` or a Structure."""
    if isinstance(inp, Structure):
        return inp.validate()
    if hasattr(inp, "get_positions") and hasattr(inp, "numbers"):
        return Structure.from_ase(inp, source="ase.Atoms").validate()
    return read_structure(inp, fmt=fmt)


def phonons(
    inp,
    engine: str | Engine | None = None,
    settings: PhononSettings | None = None,
    *,
    forces: str | Path | None = None,
    born: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool | Progress = False,
    fmt: str | None = None,
    **overrides,
):
    """Harmonic vibrations of a crystal or molecule.

    Parameters
    ----------
    inp : path, ase.Atoms or Structure
        A structure (any ASE format), or ``phonopy_disp.yaml``/``phonopy_params.yaml`` to analyse
        forces the user already has (then ``forces`` names FORCE_SETS unless the yaml holds them).
    engine : str or Engine, optional
        Engine spec (``atomvib engines``); default SevenNet-l3i5 (``sevennet:7net-l3i5``) for crystals, GFN2-xTB for molecules.
    settings : PhononSettings, optional
        All workflow settings; keyword ``overrides`` replace single fields (e.g. ``isotopes={"H": 2}``:
        deuterium masses on every H, see :mod:`atomvib.harmonic.isotopes`).
    forces, born : path, optional
        FORCE_SETS and BORN files (for a phonopy yaml input; ``born`` also works with an engine).
    checkpoint_dir : path, optional
        Where to keep forces computed so far (resume after an interruption; reused by re-runs that
        change only the analysis settings).
    progress : bool or Progress
        Say what each stage is doing on stderr, with a bar over the displaced cells.
    fmt : str, optional
        ASE format of ``inp`` when its name does not tell (e.g. ``"vasp"`` for ``zno_unitcell``).

    Returns
    -------
    CrystalPhonons or MoleculeVibrations
    """
    configure_threads(blas_only=True)
    progress = as_progress(progress)
    settings = settings or PhononSettings()
    if engine is not None and not isinstance(engine, Engine):
        overrides.setdefault("engine", engine)
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    if isinstance(inp, str | Path) and Path(inp).suffix.lower() in PHONOPY_INPUT_SUFFIXES:
        return phonons_from_phonopy(inp, forces=forces, born=born, settings=settings, progress=progress)
    if forces is not None:
        # a unit cell + FORCE_SETS (which then holds the displacements, phonopy's older layout)
        return phonons_from_phonopy(inp, forces=forces, born=born, settings=settings, progress=progress, fmt=fmt)
    structure = load_input(inp, fmt=fmt)
    if structure.is_molecule and born is not None and born_mode(born) not in ("auto", "none"):
        raise InputError("--born applies to crystals", fix="drop --born for a molecule")
    if settings.isotopes:  # sites and symmetry checked before any force is computed
        _isotope_check(structure if structure.is_molecule or not settings.primitive
                       else structure.primitive(settings.symprec), settings)
    spec = settings.engine or default_engine_spec(structure.is_molecule)
    with progress.stage(f"loading engine {spec if not isinstance(engine, Engine) else engine.info.name}"):
        eng = engine if isinstance(engine, Engine) else get_engine(spec)
        eng.check(structure)
        identity = engine_identity(eng)
    if structure.is_molecule:
        return _molecule(structure, eng, settings, checkpoint_dir, progress, identity)
    if settings.primitive:
        structure = structure.primitive(settings.symprec)
    return _crystal(structure, eng, settings, born, checkpoint_dir, progress)


def _isotope_check(structure: Structure, settings: PhononSettings) -> None:
    """Refuse isotope labels that do not fit ``structure`` (the cell the phonons are computed in)."""
    from .harmonic.isotopes import apply_isotopes

    apply_isotopes(structure, settings.isotopes, symprec=None if structure.is_molecule else settings.symprec)


def _relax(structure, eng, settings, timings, progress: Progress, checkpoint_dir=None):
    if not settings.relax:
        return structure, None
    from .relax import relax

    what = {k: getattr(settings, k) for k in ("fmax_ev_per_a", "relax_steps", "relax_cell", "symprec")}
    key = forces_key(json.dumps([structure.content_hash(), what], sort_keys=True), eng)
    cached = _read_relaxed(checkpoint_dir, key, structure)
    if cached is not None:
        progress.message("relaxed structure reused from the checkpoint (same structure, engine and relax settings)")
        return cached
    t0 = time.perf_counter()
    bar = progress.bar(settings.relax_steps, f"relaxing (BFGS to {settings.fmax_ev_per_a:g} eV/Å)", unit="step")
    try:
        rel = relax(structure, eng, settings, on_step=lambda fmax: bar(1, fmax=f"{fmax:.1e}"))
    finally:
        bar.close()
    timings["relax"] = time.perf_counter() - t0
    progress.message(f"relaxed in {rel.steps} steps, {timings['relax']:.1f} s (max force {rel.fmax_ev_per_a:.1e} eV/Å)")
    _write_relaxed(checkpoint_dir, key, rel)
    return rel.structure, rel.to_dict()


RELAX_CHECKPOINT = "relax_checkpoint.npz"


def _read_relaxed(directory, key: str, structure: Structure):
    """(relaxed structure, relaxation dict) saved for ``key``, or None."""
    if directory is None or not (Path(directory) / RELAX_CHECKPOINT).is_file():
        return None
    try:
        with np.load(Path(directory) / RELAX_CHECKPOINT, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            relaxed = structure.with_positions(z["positions"], cell=z["cell"])
            return relaxed, json.loads(str(z["relaxation"]))
    except (OSError, KeyError, ValueError):  # torn or foreign file: relax again
        return None


def _write_relaxed(directory, key: str, rel) -> None:
    if directory is None:
        return
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".relax_checkpoint.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.npz"
    np.savez(tmp, key=np.array(key), positions=rel.structure.positions, cell=rel.structure.cell,
             relaxation=np.array(json.dumps(rel.to_dict())))
    tmp.replace(d / RELAX_CHECKPOINT)


def _crystal(structure, eng, settings, born, checkpoint_dir, progress: Progress):
    from .harmonic.crystal import analyse_crystal
    from .harmonic.displacements import plan_displacements

    timings: dict[str, float] = {}
    structure, relaxation = _relax(structure, eng, settings, timings, progress, checkpoint_dir)
    with progress.stage("planning displacements (symmetry)"):
        plan = plan_displacements(structure, settings)
    t0 = time.perf_counter()
    key = forces_key(plan.digest(), eng)
    forces = evaluate_forces(eng, plan.supercells(), key, checkpoint_dir, progress,
                             desc=f"forces of {plan.n_displacements} displaced cells ({plan.n_supercell_atoms} atoms)")
    timings["forces"] = time.perf_counter() - t0
    nac, born_record = resolve_born(born, plan, progress, dft_forces=False)
    if born_record is not None and born_record.get("source") == "predicted":
        eng_info = dataclasses.replace(eng.info, settings={**eng.info.settings, "born": born_record})
    else:
        eng_info = eng.info
    t0 = time.perf_counter()
    with progress.stage("analysing (force constants, mesh, DOS, band path, thermal)"):
        fc = plan.force_constants(forces, nac=nac)
        if settings.isotopes:
            # masses enter only the dynamical matrix: the forces (and their checkpoint key) are the natural ones
            fc, structure = _isotope_fc(fc, structure, settings)
        result = analyse_crystal(
            fc, settings, structure=structure, engine=eng_info, n_displacements=plan.n_displacements,
            relaxation=relaxation, timings=timings,
        )
    timings["analysis"] = time.perf_counter() - t0
    return result


def _isotope_fc(fc, structure: Structure, settings: PhononSettings):
    """(force constants, structure) with the masses of ``settings.isotopes`` (sites of ``fc.unitcell``)."""
    from .harmonic.isotopes import with_isotopes

    fc = with_isotopes(fc, settings.isotopes)
    if structure.natoms == fc.unitcell.natoms and np.array_equal(structure.numbers, fc.unitcell.numbers):
        structure = structure.with_masses(fc.unitcell.masses)
    return fc, structure


#: ``born`` values that are not a BORN file: see :func:`resolve_born`
BORN_MODES = ("auto", "predicted", "none")


def born_mode(born) -> str | None:
    """``"auto"``, ``"predicted"``, ``"none"`` for those words (any case), None for a path (or None)."""
    if isinstance(born, str) and born.lower() in BORN_MODES:
        return born.lower()
    return None


def resolve_born(born, plan_or_phonopy, progress: Progress | None = None, dft_forces: bool = False):
    """(NacParams or None, provenance dict or None) for ``born``: a BORN file, ``"predicted"``, ``"auto"``, ``"none"``.

    ``"predicted"``: Born charges and ε∞ from the shipped model (:mod:`atomvib.learn.born`) for the phonopy primitive
    cell. ``"auto"``: the same for crystals that :func:`atomvib.learn.born.is_polar_candidate` calls polar non-metals
    (a compound with an anion-forming non-metal element), nothing for the rest, and nothing with user DFT forces
    (``dft_forces``: a BORN file from the same DFT is expected there; ``--born predicted`` asks for the model). The
    provenance records what was used and why.
    """
    mode = born_mode(born)
    if born is None or mode == "none":
        return None, ({"source": "none", "reason": "--born none"} if mode == "none" else None)
    if mode is None:
        return read_born(born, plan_or_phonopy), None
    from .learn.born import is_polar_candidate, predict_born

    ph = plan_or_phonopy._phonopy() if hasattr(plan_or_phonopy, "_phonopy") else plan_or_phonopy
    from .harmonic.force_constants import from_phonopy_atoms

    prim = from_phonopy_atoms(ph.primitive)
    polar, why = is_polar_candidate(prim)
    if mode == "auto":
        if dft_forces:
            if polar and progress is not None:
                progress.message(f"no LO-TO splitting: {prim.formula} looks polar ({why}) but DFT forces came without a "
                                 "BORN file; add --born BORN, or --born predicted for the learned Born charges")
            return None, {"source": "none", "reason": "DFT forces without a BORN file (use --born BORN or --born predicted)"}
        if not polar:
            return None, {"source": "none", "reason": why}
    try:
        pred = predict_born(prim, symprec=ph.symmetry.tolerance)
    except InputError as exc:
        if mode == "predicted":
            raise
        warnings.warn(f"no LO-TO splitting: {exc}", stacklevel=2)
        return None, {"source": "none", "reason": str(exc).splitlines()[0]}
    if progress is not None:
        progress.message(f"Born charges and eps_inf {pred.label()}")
    return pred.nac_params(), {**pred.provenance(), "rule": why, "nac_label": pred.label()}


def reanalysed_with_born(result, born="auto"):
    """CrystalPhonons ``result`` computed without LO–TO splitting (e.g. by the batch runner) with the Born charges
    and ε∞ of ``born`` (``"auto"``, ``"predicted"``: the learned model, see :func:`resolve_born`) and its DOS,
    bands and thermal properties recomputed from the same force constants. Returned unchanged when it already
    carries Born charges or ``born`` gives none (``"none"``; ``"auto"`` for a crystal that is not polar)."""
    from .harmonic.crystal import analyse_crystal

    mode = born_mode(born)
    if mode is None:
        raise InputError(f"born {born!r}: expected one of {', '.join(BORN_MODES)}", fix="e.g. --born auto")
    if mode == "none" or result.force_constants.nac is not None:
        return result
    new = with_born(result, mode)
    if new.force_constants.nac is None:
        return result
    return analyse_crystal(new.force_constants, new.settings, structure=new.structure, engine=new.engine,
                           n_displacements=new.n_displacements, relaxation=new.relaxation, timings=dict(new.timings))


def read_born(born, plan_or_phonopy):
    """NAC parameters from a BORN file for the primitive cell of a plan or phonopy object."""
    ph = plan_or_phonopy._phonopy() if hasattr(plan_or_phonopy, "_phonopy") else plan_or_phonopy
    return _parse_born(born, ph.primitive, ph.symmetry.tolerance)


def _parse_born(born, primitive, symprec: float, factor: float | None = None):
    """NacParams of a BORN file for ``primitive`` (``factor``: set the unit factor, which phono3py needs given)."""
    from phonopy.file_IO import parse_BORN

    from .harmonic.force_constants import NacParams

    p = Path(born)
    if not p.is_file():
        raise InputError(f"{born}: no such BORN file", fix="check the path")
    try:
        d = parse_BORN(primitive, symprec=symprec, filename=str(p))
    except Exception as exc:  # phonopy raises several types for malformed files
        raise InputError(f"{born}: cannot read BORN file ({exc})", fix="check it matches the primitive cell") from None
    if factor is not None:
        d.setdefault("factor", factor)
    return NacParams.from_phonopy(d)


def phonons_from_phonopy(yaml_path, forces=None, born=None, settings: PhononSettings | None = None,
                         progress: bool | Progress = False, fmt: str | None = None):
    """Analyse forces the user already has.

    ``yaml_path`` is phonopy_disp.yaml (+ ``forces`` FORCE_SETS, + ``born`` BORN) or phonopy_params.yaml (forces
    inside); or a unit-cell structure file (POSCAR-unitcell) with ``forces`` FORCE_SETS that holds the
    displacements, and ``settings.supercell`` giving the supercell matrix.
    """
    import phonopy

    from .engines.base import EngineInfo
    from .harmonic.crystal import analyse_crystal

    progress = as_progress(progress)
    settings = settings or PhononSettings()
    mode = born_mode(born)
    with progress.stage("reading phonopy files, building force constants"):
        fc, n_disp = read_phonopy_files(yaml_path, forces, None if mode else born, settings, fmt=fmt)
    born_record = None
    if mode == "none" and fc.nac is not None:
        fc = dataclasses.replace(fc, nac=None)
    if mode in ("auto", "predicted") and fc.nac is None:  # a yaml's own Born charges (DFT) are kept
        nac, born_record = resolve_born(mode, fc.phonopy(), progress, dft_forces=True)
        if nac is not None:
            fc = dataclasses.replace(fc, nac=nac)
    if settings.isotopes:
        fc, _ = _isotope_fc(fc, fc.unitcell, settings)
    engine = EngineInfo(
        name="phonopy-files", version=phonopy.__version__, model=str(Path(yaml_path).resolve()),
        model_sha256=_sha256(yaml_path),
        settings={"forces": str(Path(forces).resolve()) if forces else None, "forces_sha256": _sha256(forces),
                  "born": (born_record if born_record and born_record.get("source") == "predicted"
                           else None if mode else str(Path(born).resolve()) if born else None),
                  "born_sha256": "" if mode else _sha256(born)},
    )
    with progress.stage("analysing (mesh, DOS, band path, thermal)"):
        return analyse_crystal(fc, settings, structure=fc.unitcell, engine=engine, n_displacements=n_disp)


def _sha256(path) -> str:
    """SHA-256 of a file the result came from ('' for none): provenance that survives moving the files."""
    if path is None:
        return ""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_phonons(path, forces=None, born=None, settings: PhononSettings | None = None, fmt: str | None = None):
    """The phonons behind a spectrum: a saved result (any directory ``atomvib`` wrote) or phonopy files.

    Returns the typed object: :class:`CrystalPhonons` or :class:`MoleculeVibrations` from a result directory
    (loaded with :func:`atomvib.load`; ``born`` then replaces its NAC data), or :class:`ForceConstants` from a
    phonopy yaml (+ ``forces``, ``born``) or a unit cell + ``forces``. No BORN file is looked for anywhere else.
    """
    from .results import is_result_dir, load

    p = Path(path)
    if p.is_dir() or p.name == "summary.json":
        if not is_result_dir(p if p.is_dir() else p.parent):
            load(p)  # raises the one message for a directory that is not a result
        result = load(p)
        if born is not None and born_mode(born) != "auto":
            result = with_born(result, born)
        return result
    mode = born_mode(born)
    fc = read_phonopy_files(p, forces, None if mode else born, settings or PhononSettings(), fmt=fmt)[0]
    return with_born(fc, mode) if mode in ("predicted", "none") else fc


def with_born(result, born):
    """``result`` (CrystalPhonons or ForceConstants) with NAC data from a BORN file; the analysis is not redone."""
    from .harmonic.force_constants import ForceConstants

    fc = result if isinstance(result, ForceConstants) else getattr(result, "force_constants", None)
    if fc is None:
        raise InputError("Born charges apply to crystals; this result is a molecule", fix="drop --born")
    nac, rec = resolve_born(born, fc.phonopy())
    new_fc = dataclasses.replace(fc, nac=nac)
    if isinstance(result, ForceConstants):
        return new_fc
    eng = getattr(result, "engine", None)
    if rec and rec.get("source") == "predicted" and hasattr(eng, "settings"):  # predicted: in the provenance
        eng = dataclasses.replace(eng, settings={**eng.settings, "born": rec})
        return dataclasses.replace(result, force_constants=new_fc, engine=eng)
    return dataclasses.replace(result, force_constants=new_fc)


def read_phonopy_yaml(path, settings: PhononSettings | None = None):
    """(ForceConstants, number of displacements) from a phonopy yaml that holds force constants or forces."""
    return read_phonopy_files(path, None, None, settings or PhononSettings())


def read_phonopy_files(yaml_path, forces, born, settings: PhononSettings, fmt: str | None = None):
    """(ForceConstants, number of displacements) from phonopy files; see :func:`phonons_from_phonopy`.

    Only the files named are read (never ``./FORCE_CONSTANTS``, ``./FORCE_SETS`` or ``./BORN``), and the yaml with
    a safe loader (:func:`safe_load_yaml`)."""
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
    # the yaml is parsed here, with the safe loader (phonopy's own reader would run Python tags in it)
    data = safe_load_yaml(yp) if is_yaml else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # phonopy's notice about its primitive_matrix default
            ph = _phonopy_from_files(
                data, None if is_yaml else _read_unitcell(yp, fmt),
                None if is_yaml else np.reshape(settings.supercell, (3, 3)), forces, born, str(yp),
            )  # fmt: skip
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


def _phonopy_from_files(data: dict | None, unitcell, supercell_matrix, forces, born, name: str):
    """What ``phonopy.load(..., produce_fc=False)`` builds, from named inputs only.

    ``data`` is a phonopy yaml already parsed by :func:`safe_load_yaml` (or None: ``unitcell`` and
    ``supercell_matrix`` with ``forces``). phonopy.load itself cannot be told to leave the working directory alone:
    it reads ``./FORCE_CONSTANTS`` (or ``./force_constants.hdf5``) whenever the yaml holds no force constants, even
    with FORCE_SETS given, ``./FORCE_SETS`` when no forces are given, and ``./BORN`` with ``is_nac``; and it reads the
    yaml with PyYAML's unsafe loader. So the same steps are taken here (phonopy's own helpers, same arithmetic),
    each with the file the user named or nothing: NAC from ``born`` or the yaml; the dataset from the yaml, or from
    ``forces``; force constants only from the yaml.
    """
    from phonopy import Phonopy
    from phonopy.cui import load_helper
    from phonopy.file_IO import parse_BORN
    from phonopy.interface.phonopy_yaml import load_phonopy_yaml
    from phonopy.physical_units import get_calculator_physical_units
    from phonopy.structure.dataset import forces_in_dataset

    pmat, kw, nac, dataset, fc, calculator = "auto", {}, None, None, None, None
    if data is not None:
        y = load_phonopy_yaml(data)
        unitcell, calculator = y.unitcell, y.calculator
        if unitcell is None:
            raise InputError(f"{name}: no unit cell in it", fix="give phonopy_disp.yaml or phonopy_params.yaml")
        supercell_matrix = y.supercell_matrix if y.supercell_matrix is not None else np.eye(3, dtype="int64")
        if y.primitive_matrix is not None:  # as phonopy.load: the yaml's primitive matrix over "auto"
            pmat = y.primitive_matrix
        if y.site_mixture_scheme is not None:
            kw["site_mixture_scheme"] = y.site_mixture_scheme
        nac, dataset, fc = y.nac_params, y.dataset, y.force_constants
    ph = Phonopy(unitcell, supercell_matrix, primitive_matrix=pmat, calculator=calculator, log_level=0, **kw)
    if born is not None:
        nac = parse_BORN(ph.primitive, filename=str(born))
    if nac is not None:
        if "factor" not in nac:
            nac["factor"] = get_calculator_physical_units(calculator).nac_factor
        ph.nac_params = nac
    if forces is not None and not forces_in_dataset(dataset):  # the yaml's own forces win, as in phonopy.load
        dataset = load_helper.select_and_load_dataset(
            ph, yaml_dataset=dataset, yaml_filename=name, force_sets_filename=str(forces)
        )
    if dataset is not None:
        ph.dataset = dataset
    if fc is not None:  # (phonopy's helper only for the yaml's array: given none, it would look for files)
        ph.force_constants = load_helper.select_and_extract_force_constants(ph, force_constants=fc)
    return ph


def safe_load_yaml(path):
    """The content of a YAML file (``.yaml``; ``.xz``, ``.lzma``, ``.gz`` compressed as phonopy allows) parsed with
    PyYAML's safe loader (its C version where built): plain data only.

    Every yaml atomvib is given goes through here before phonopy sees it. phonopy parses yaml with PyYAML's unsafe
    loader, which runs Python tags (``!!python/object/apply:os.system [...]``); the safe loader refuses any tag it
    does not know, and that refusal is one :class:`InputError` line here.
    """
    import gzip
    import lzma

    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    p = Path(path)
    opener = {".xz": lzma.open, ".lzma": lzma.open, ".gz": gzip.open}.get(p.suffix.lower(), open)
    try:
        with opener(p, "rb") as fh:
            data = yaml.load(fh, Loader=loader)  # noqa: S506 (the safe loader)
    except yaml.constructor.ConstructorError as exc:
        m = re.search(r"tag '([^']+)'", str(exc.problem or ""))
        tag = m.group(1).replace("tag:yaml.org,2002:", "!!") if m else "(unknown)"
        line = f" (line {exc.problem_mark.line + 1})" if exc.problem_mark is not None else ""
        raise InputError(
            f"{path}: YAML tag {tag}{line} refused: atomvib reads YAML as plain data only (Python tags can run code)",
            fix="remove the tag; phonopy's own files never have one",
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        why = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{path}: not valid YAML ({why}{where})", fix="check the file") from None
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise InputError(f"{path}: cannot read it ({type(exc).__name__}: {exc})", fix="check the file") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a phonopy yaml (no mapping at the top)", fix="give phonopy_disp.yaml or phonopy_params.yaml")
    return data


def _has_forces(ph) -> bool:
    try:
        return ph.forces is not None
    except RuntimeError:  # phonopy raises when there is no displacement dataset at all
        return False


def _read_unitcell(path: Path, fmt: str | None = None):
    from .harmonic.force_constants import to_phonopy_atoms

    return to_phonopy_atoms(read_structure(path, fmt=fmt))


def yaml_has_nac(path: Path) -> bool:
    """Whether a phonopy yaml holds Born charges: ``nac:`` with ``born_effective_charge`` under it (phonopy ≥ 2.x),
    or ``born_effective_charge`` at the top (older files). Read with :func:`safe_load_yaml` (a yaml with a Python
    tag is refused here too)."""
    data = safe_load_yaml(path)
    nac = data.get("nac")
    return "born_effective_charge" in data or (isinstance(nac, dict) and "born_effective_charge" in nac)


def _molecule(structure, eng, settings, checkpoint_dir, progress: Progress, identity=None):
    from .harmonic.molecule import (
        MoleculeVibrations,
        dipole_derivatives_from_dipoles,
        displaced_geometries,
        hessian_from_forces,
        normal_modes,
    )

    timings: dict[str, float] = {}
    structure, relaxation = _relax(structure, eng, settings, timings, progress, checkpoint_dir)
    step = settings.displacement_a
    geoms = displaced_geometries(structure, step)
    t0 = time.perf_counter()
    key = forces_key(f"molecule:{structure.content_hash()}:{step!r}", eng)
    forces, dipoles = evaluate_forces(
        eng, geoms, key, checkpoint_dir, progress, desc=f"forces of {len(geoms)} displaced geometries", with_dipoles=True
    )
    timings["forces"] = time.perf_counter() - t0
    apt = dipole_derivatives_from_dipoles(dipoles, step) if dipoles is not None else None
    energy = eng.evaluate([structure.to_ase()])[0].energy
    hess = hessian_from_forces(forces[0::2], forces[1::2], step)
    if settings.isotopes:
        # masses enter only the mass-weighted Hessian: the forces (and their checkpoint key) are the natural ones
        from .harmonic.isotopes import apply_isotopes

        structure = apply_isotopes(structure, settings.isotopes)
    freqs, modes = normal_modes(structure, hess)
    return MoleculeVibrations(
        structure=structure, hessian=hess, frequencies_cm1=freqs, modes=modes, energy_ev=energy,
        engine=eng.info, settings=settings, relaxation=relaxation, n_displacements=len(geoms),
        timings=timings, dipole_derivatives=apt,
    )


__all__ = ["phonons", "phonons_from_phonopy", "load_phonons", "read_phonopy_files", "AtomvibError"]


def crystal_and_engine(inp, engine, settings: PhononSettings, progress: Progress, fmt=None, why: str = ""):
    """(structure, engine) of a calculation that needs a crystal: the input read (a molecule refused with ``why``),
    the engine loaded once and checked against it, the structure reduced to its primitive cell if asked."""
    structure = load_input(inp, fmt=fmt)
    if structure.is_molecule:
        raise InputError(f"{structure.source or 'the input'} is a molecule (no periodic cell): {why or 'a crystal is needed'}",
                         fix="give a crystal structure (CIF, POSCAR, ...); for a molecule use `atomvib phonons`")
    spec = settings.engine or default_engine_spec(False)
    with progress.stage(f"loading engine {spec if not isinstance(engine, Engine) else engine.info.name}"):
        eng = engine if isinstance(engine, Engine) else get_engine(spec)
        eng.check(structure)
        engine_identity(eng)
    if settings.primitive:
        structure = structure.primitive(settings.symprec)
    return structure, eng


# --------------------------------------------------------------------------------------- κ (phono3py)
def _split_overrides(overrides: dict, settings: PhononSettings, kappa_settings):
    """Keyword overrides routed to the settings object that has the field (KappaSettings first)."""
    from .settings import KappaSettings

    ks = kappa_settings or KappaSettings()
    kfields = {f.name for f in dataclasses.fields(KappaSettings)}
    pfields = {f.name for f in dataclasses.fields(PhononSettings)}
    kw_k = {k: v for k, v in overrides.items() if k in kfields}
    kw_p = {k: v for k, v in overrides.items() if k in pfields and k not in kfields}
    unknown = set(overrides) - kfields - pfields
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
    return (dataclasses.replace(settings, **kw_p) if kw_p else settings,
            dataclasses.replace(ks, **kw_k) if kw_k else ks)


def kappa(
    inp,
    engine: str | Engine | None = None,
    settings: PhononSettings | None = None,
    kappa_settings=None,
    *,
    forces: str | Path | None = None,
    fc2_forces: str | Path | None = None,
    born: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool | Progress = False,
    fmt: str | None = None,
    **overrides,
):
    """Lattice thermal conductivity of a crystal: relaxation, fc2 and fc3 from the engine's forces on phono3py's
    displaced supercells, κ(T) with phono3py.

    Parameters
    ----------
    inp : path, ase.Atoms or Structure
        A crystal structure, or ``phono3py_disp.yaml`` (with ``forces`` FORCES_FC3, ``fc2_forces`` FORCES_FC2
        where the yaml has a separate fc2 supercell) or ``phono3py_params.yaml`` (forces inside): DFT forces the
        user already has; then no engine runs.
    engine : str or Engine, optional
        Engine spec; default: the crystal default (``atomvib engines``).
    settings : PhononSettings, optional
        Engine and relaxation settings (shared with :func:`phonons`).
    kappa_settings : KappaSettings, optional
        Method, mesh, temperatures, supercells, displacements. Keyword ``overrides`` replace single fields of
        either settings object.
    born : path, optional
        BORN file: Born charges and dielectric tensor for the LO–TO splitting of the harmonic part.
    checkpoint_dir : path, optional
        Forces computed so far are kept there (``forces_checkpoint.npz``; fc2 cells under ``fc2/``), keyed by the
        displaced cells and the engine: an interrupted run resumes, a re-run with another mesh, method or
        temperature grid computes no force.

    Returns
    -------
    ThermalConductivity
    """
    from .anharmonic.conductivity import conductivity
    from .anharmonic.displacements3 import plan_fc3
    from .anharmonic.phono3py_files import read_phono3py_files
    from .errors import ResourceError

    configure_threads(blas_only=True)
    progress = as_progress(progress)
    settings = settings or PhononSettings()
    if engine is not None and not isinstance(engine, Engine):
        overrides.setdefault("engine", engine)
    settings, ks = _split_overrides(overrides, settings, kappa_settings)
    if isinstance(inp, str | Path) and Path(inp).suffix.lower() in PHONOPY_INPUT_SUFFIXES + (".xz", ".lzma", ".gz"):
        import phono3py

        from .engines.base import EngineInfo

        with progress.stage("reading phono3py files, building fc2 and fc3"):
            fc, n_disp = read_phono3py_files(inp, forces, fc2_forces, born, ks.fc_calculator)
        info = EngineInfo(
            name="phono3py-files", version=phono3py.__version__, model=str(Path(inp).resolve()),
            model_sha256=_sha256(inp),
            settings={"forces": str(Path(forces).resolve()) if forces else None, "forces_sha256": _sha256(forces),
                      "fc2_forces": str(Path(fc2_forces).resolve()) if fc2_forces else None,
                      "fc2_forces_sha256": _sha256(fc2_forces),
                      "born": str(Path(born).resolve()) if born else None, "born_sha256": _sha256(born)},
        )  # fmt: skip
        return conductivity(fc, ks, engine=info, n_displacements=n_disp, progress=progress)
    if forces is not None or fc2_forces is not None:
        raise InputError("--forces/--fc2-forces go with phono3py_disp.yaml (they hold no structure of their own)",
                         fix="give phono3py_disp.yaml as the input, or drop --forces to compute the forces")
    structure, eng = crystal_and_engine(inp, engine, settings, progress, fmt,
                                        "lattice thermal conductivity is a property of crystals")
    if eng.info.name == "chgnet":
        msg = ("CHGNet's third-order force constants depend on the displacement amplitude (its force differences change "
               "10–17× between 0.005 and 0.05 Å; docs/kappa_validation.md: Si κ 3.5 W/m-K against 124 in DFT): "
               "use the default engine for κ")
        warnings.warn(msg, UserWarning, stacklevel=2)
        progress.message("warning: " + msg)
    timings: dict[str, float] = {}
    structure, relaxation = _relax(structure, eng, settings, timings, progress, checkpoint_dir)
    with progress.stage("planning displacements (phono3py)"):
        structure, p3_symprec = _phono3py_symmetry(structure, settings.symprec)
        plan = plan_fc3(structure, ks, symprec=p3_symprec)
    n3, n2 = plan.n_displacements, plan.n_fc2_displacements
    # one call on the perfect supercell: its residual forces are subtracted (phono3py's practice for DFT), and its
    # time gives the estimate that refuses a force stage longer than allowed before any of it runs
    t0 = time.perf_counter()
    residual = eng.evaluate([plan.perfect_supercell()])[0].forces
    t_call = time.perf_counter() - t0
    estimate_h = t_call * (n3 + n2 * plan.n_fc2_supercell_atoms / plan.n_supercell_atoms) / 3600.0
    if estimate_h > ks.max_force_hours:
        raise ResourceError(
            f"{n3 + n2} displaced supercells of {plan.n_supercell_atoms} atoms: ≈ {estimate_h:.1f} h of force calls "
            f"here ({t_call:.2f} s each), more than --max-hours {ks.max_force_hours:g}",
            fix="use --cutoff-pair 4 (fewer pairs), --fc-calculator symfc (fewer, random cells), a smaller "
            "--supercell, or raise --max-hours",
        )
    progress.message(f"{n3} fc3 supercells ({plan.n_supercell_atoms} atoms)"
                     + (f" + {n2} fc2 supercells ({plan.n_fc2_supercell_atoms} atoms)" if n2 else "")
                     + f": ≈ {estimate_h * 60:.1f} min of force calls ({t_call:.2f} s each)")
    t0 = time.perf_counter()
    key = forces_key(plan.digest() + ":fc3", eng)
    f3 = evaluate_forces(eng, plan.supercells(), key, checkpoint_dir, progress,
                         desc=f"forces of {n3} fc3 supercells ({plan.n_supercell_atoms} atoms)")
    f3 = f3 - residual[None]
    f2 = None
    if n2:
        sub = Path(checkpoint_dir) / "fc2" if checkpoint_dir else None
        cells2 = plan.fc2_supercells()
        f2 = evaluate_forces(eng, cells2, forces_key(plan.digest() + ":fc2", eng), sub, progress,
                             desc=f"forces of {n2} fc2 supercells ({plan.n_fc2_supercell_atoms} atoms)")
        f2 = f2 - eng.evaluate([plan.perfect_supercell(fc2=True)])[0].forces[None]
    timings["forces"] = time.perf_counter() - t0
    nac = None
    if born is not None:
        nac = _read_born_phono3py(born, plan)
    with progress.stage("fc2 and fc3 (phono3py)"):
        t0 = time.perf_counter()
        fc = plan.force_constants(f3, f2, nac=nac)
        timings["force_constants"] = time.perf_counter() - t0
    return conductivity(fc, ks, engine=eng.info, structure=structure, relaxation=relaxation,
                        n_displacements=n3 + n2, timings=timings, progress=progress)


#: symmetry tolerance of the phono3py objects (Å): phono3py's default. phono3py finds the site symmetry of each
#: displacement with the same tolerance, so a loose one (atomvib's 1e-3 Å) takes a 0.01 Å displacement in an 11 Å
#: supercell (9e-4 fractional) for invariant under operations that move it: fc3 came out wrong, κ of Si 75 % low
#: (measured; docs/kappa_validation.md). Harmonic phonopy is not affected (tested equal at 1e-3 and 1e-5).
PHONO3PY_SYMPREC = 1e-5


def _phono3py_symmetry(structure: Structure, symprec: float) -> tuple[Structure, float]:
    """(structure, tolerance) for phono3py: the structure as it is where its space group at phono3py's tight
    tolerance is the one found at ``symprec``; otherwise symmetrised at ``symprec`` first (ASE's refine_symmetry:
    positions and cell moved by at most ~``symprec``), so that the tight tolerance finds the full symmetry."""
    if structure.spacegroup(PHONO3PY_SYMPREC) == structure.spacegroup(symprec):
        return structure, PHONO3PY_SYMPREC
    from ase.spacegroup.symmetrize import refine_symmetry

    atoms = structure.to_ase()
    refine_symmetry(atoms, symprec=symprec)
    return Structure.from_ase(atoms, source=structure.source), PHONO3PY_SYMPREC


def _read_born_phono3py(born, plan):
    """NAC parameters from a BORN file for the phonon primitive cell of a κ plan (the unit factor set: phono3py,
    unlike phonopy, does not default it)."""
    from phonopy.physical_units import get_calculator_physical_units

    ph3 = plan._phono3py()
    return _parse_born(born, ph3.phonon_primitive, ph3.symmetry.tolerance,
                       factor=get_calculator_physical_units(None).nac_factor)
