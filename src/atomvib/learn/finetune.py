"""Fine-tuning a SevenNet model on the user's own DFT forces (``atomvib finetune``).

A thin driver around sevenn's own training machinery: its checkpoint loader builds the base model
(``sevenn.util.load_checkpoint(...).build_model()``), its data code turns labelled cells into graphs
(``sevenn.train.dataload.atoms_to_graph``; extxyz and vasprun.xml through ``ase_reader``, with its
conventions for free energy and stress), its ``Trainer`` runs the epochs with its loss definitions
(``ForceLoss``, ``PerAtomEnergyLoss``, ``StressLoss``) and writes the checkpoint, and its
``ErrorRecorder`` measures the errors. What atomvib adds is what a phonon user needs around it:
reading phonopy force sets, refusing bad input with one line (atoms/forces mismatch, a unit mix-up
caught against the base model's own forces, too few cells for a validation split, a base model that
cannot be fine-tuned), a split by displaced cell, early stopping, a progress bar, and a checkpoint
that ``--engine sevennet:model.pth --trust-model-file`` loads at once.

Data (:func:`read_training_data`): phonopy sets (``phonopy_disp.yaml`` + ``FORCE_SETS``,
``phonopy_params.yaml``, or a unit cell + ``FORCE_SETS`` + the supercell), extxyz with energies/forces
(/stress), VASP ``vasprun.xml`` (ASE reads it). Forces in eV/Å, energies in eV, stress in eV/Å³ (ASE's
sign). FORCE_SETS hold no energies: such sets train on forces alone (energy loss weight 0).

The defaults (:class:`FinetuneConfig`) were chosen by measurement on the shared MgO and NaCl force
sets (docs/finetune.md).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import units as _u
from ..errors import InputError
from ..progress import as_progress

#: force units a data set may be in by mistake: name → value of 1 eV/Å in that unit. A data set whose forces are
#: this factor (±25 %) times the base model's, with the pattern of the base model's forces, is refused.
WRONG_FORCE_UNITS = {
    "eV/bohr": _u.BOHR_A,  # eV/Å × 0.529 = eV/bohr
    "Ry/bohr": _u.BOHR_A / _u.RYDBERG_EV,
    "Hartree/bohr": _u.BOHR_A / _u.HARTREE_EV,
    "kcal/mol/Å": _u.EV_TO_KJ_PER_MOL * 1000.0 / _u.KCAL_J,
    "kJ/mol/Å": _u.EV_TO_KJ_PER_MOL,
    "meV/Å": 1000.0,
}
#: how close (ratio) the fitted scale must come to a wrong unit's factor to be called a unit mix-up
UNIT_TOLERANCE = 1.25
#: base models that can be fine-tuned (their ``sevennet:`` names); any SevenNet training checkpoint as a file too
FINETUNE_ENGINES = ("sevennet",)


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of one fine-tuning run; the defaults are the measured choice (docs/finetune.md).

    ``learning_rate``: Adam's step. ``max_epochs``: upper bound; ``patience``: stop after this many epochs without
    a lower validation force RMSE (the best epoch's weights are kept). ``freeze_layers``: leading interaction
    blocks (and the atom embedding) kept as they are (0 = train every weight). ``valid_fraction``: share of the
    cells held out for validation (at least one cell); 0 trains on every cell for ``max_epochs`` with no early
    stopping. ``refit``: once validation has chosen the number of epochs, train again from the base weights on
    every cell (the held-out ones too) for that many epochs, and write that model. ``lr_decay``: runs of fixed
    length (the refit; ``valid_fraction`` 0) decay the learning rate linearly to 1 % over their epochs, so that
    the weights written have settled (at a constant rate they keep oscillating). ``huber_delta``: sevenn's fine-tuning loss (Huber, eV/Å for forces). Loss weights: energy per atom,
    forces, stress (kbar, sevenn's unit); a label absent from the data gets weight 0.
    """

    learning_rate: float = 1e-3
    max_epochs: int = 40
    patience: int = 6
    freeze_layers: int = 0
    valid_fraction: float = 0.2
    refit: bool = True
    lr_decay: bool = True
    batch_size: int = 1
    huber_delta: float = 0.01
    energy_weight: float = 1.0
    force_weight: float = 1.0
    stress_weight: float = 0.01
    seed: int = 0

    def __post_init__(self):
        def bad(name, value, fix):
            raise InputError(f"fine-tuning setting {name}={value!r} is not usable", fix=fix)

        for name in ("learning_rate", "huber_delta"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                bad(name, v, f"give a positive number (default {getattr(FinetuneConfig, name)})")
        for name in ("energy_weight", "force_weight", "stress_weight"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                bad(name, v, "give a number ≥ 0")
        for name, lo in (("max_epochs", 1), ("patience", 1), ("batch_size", 1), ("freeze_layers", 0)):
            v = getattr(self, name)
            if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= lo):
                bad(name, v, f"give an integer ≥ {lo}")
        for name in ("refit", "lr_decay"):
            if not isinstance(getattr(self, name), bool):
                bad(name, getattr(self, name), "give True or False")
        if not (isinstance(self.valid_fraction, (int, float)) and 0 <= self.valid_fraction < 1):
            bad("valid_fraction", self.valid_fraction, "give a fraction in [0, 1), e.g. 0.2")


@dataclass(frozen=True)
class LabelledCell:
    """One DFT calculation: a periodic cell with its forces (natoms, 3) eV/Å, energy (eV, or None) and stress
    (Voigt xx yy zz yz xz xy, eV/Å³ with ASE's sign, or None); ``source`` says where it came from."""

    atoms: object  # ase.Atoms (positions Å, cell Å)
    forces: np.ndarray
    energy: float | None = None
    stress: np.ndarray | None = None
    source: str = ""

    @property
    def natoms(self) -> int:
        return len(self.atoms)


@dataclass(frozen=True)
class FinetuneResult:
    """What :func:`finetune` did. Errors are force RMSEs in eV/Å (sevenn's ErrorRecorder), ``history`` one dict
    per epoch (0 = the base model) with train/valid errors; ``best_epoch`` 0 means training never beat the base
    model on the validation cells (the model written is then the base model's weights)."""

    path: Path
    base: str
    n_train: int
    n_valid: int
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    trained_on: tuple[str, ...]
    valid_force_rmse_before: float | None
    valid_force_rmse_after: float | None
    train_force_rmse_before: float
    train_force_rmse_after: float
    force_scale_vs_base: float
    energy_offset_ev_per_atom: float | None
    wall_s: float
    config: FinetuneConfig
    refit_epochs: int = 0
    history: tuple[dict, ...] = field(default=(), repr=False)
    refit_history: tuple[dict, ...] = field(default=(), repr=False)

    def describe(self) -> str:
        """A few lines for people: what was fitted and how much better it got."""
        labels = "forces" + (", energies" if "energy" in self.trained_on else "") + (
            ", stress" if "stress" in self.trained_on else ""
        )
        n = self.n_train + self.n_valid
        head = f"fine-tuned {self.base} on {labels} of {n} cell(s)"
        if self.n_valid:
            head += (f": {self.n_train} trained on, {self.n_valid} held out; best epoch {self.best_epoch} of "
                     f"{self.epochs_run}" + (" (stopped early)" if self.stopped_early else ""))
            if self.refit_epochs:
                head += f", then {self.refit_epochs} epoch(s) on all {n} cells"
        else:
            head += f": {self.epochs_run} epoch(s), no validation"
        lines = [head + f"; {self.wall_s:.0f} s"]
        if self.valid_force_rmse_before is not None:
            lines.append(
                f"force RMSE on the held-out cells: {self.valid_force_rmse_before:.2e} -> "
                f"{self.valid_force_rmse_after:.2e} eV/Å (base model -> best epoch)"
            )
        lines.append(
            f"force RMSE on the training cells: {self.train_force_rmse_before:.2e} -> "
            f"{self.train_force_rmse_after:.2e} eV/Å" + (f" (after the refit, all {n} cells)" if self.refit_epochs else "")
        )
        if "energy" not in self.trained_on:
            lines.append("no energies in the data: trained on forces alone (energy loss weight 0)")
        if self.best_epoch == 0:
            lines.append("training did not lower the validation error: the model written is the base model")
        lines.append(f"written {self.path}: use it with --engine sevennet:{self.path} --trust-model-file")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# reading the data


def read_training_data(inputs, forces=None, supercell=None, fmt: str | None = None) -> list[LabelledCell]:
    """Labelled cells from the user's files, in order.

    ``inputs``: paths (or one path) of ``phonopy_disp.yaml`` (with ``forces=FORCE_SETS``), ``phonopy_params.yaml``,
    a unit cell (with ``forces`` and ``supercell``, phonopy's older layout), extxyz with energies/forces(/stress)
    or VASP ``vasprun.xml``/``OUTCAR`` (every ionic step that has forces). ``forces``: one FORCE_SETS for each
    phonopy input that needs one (a single path applies to the single such input). Raises :class:`InputError`.
    """
    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not paths:
        raise InputError("no training data given", fix="name phonopy_disp.yaml (with --forces FORCE_SETS), "
                         "phonopy_params.yaml, extxyz or vasprun.xml files")
    force_files = [] if forces is None else ([forces] if isinstance(forces, (str, Path)) else list(forces))
    cells: list[LabelledCell] = []
    fi = 0
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise InputError(f"{p}: no such file", fix="check the path")
        if _is_phonopy_input(p, force_files):
            fs = None
            if _needs_force_sets(p):
                if fi >= len(force_files):
                    raise InputError(f"{p} holds no forces", fix="add --forces FORCE_SETS (one per phonopy input, "
                                     "in the same order), or give phonopy_params.yaml")
                fs = force_files[fi]
                fi += 1
            cells += _read_phonopy_set(p, fs, supercell, fmt)
        else:
            cells += _read_ase_file(p, fmt)
    if fi < len(force_files):
        raise InputError(f"{len(force_files)} --forces file(s) for {fi} phonopy input(s) that need one",
                         fix="give one FORCE_SETS per phonopy_disp.yaml (or unit cell), in the same order")
    for c in cells:
        _check_cell(c)
    return cells


def _is_phonopy_input(p: Path, force_files) -> bool:
    name = p.name.lower()
    if name.endswith((".yaml", ".yml", ".yaml.xz", ".yaml.gz")):
        return True
    # a unit cell (POSCAR-unitcell, CIF, ...) with FORCE_SETS: phonopy's older layout
    return bool(force_files) and not name.endswith((".xyz", ".extxyz", ".xml")) and "outcar" not in name


def _needs_force_sets(p: Path) -> bool:
    if not p.name.lower().endswith((".yaml", ".yml", ".yaml.xz", ".yaml.gz")):
        return True
    from ..workflow import safe_load_yaml

    data = safe_load_yaml(p)
    from phonopy.structure.dataset import forces_in_dataset

    ds = _yaml_dataset(data)
    return not (ds and forces_in_dataset(ds))


def _yaml_dataset(data):
    from phonopy.interface.phonopy_yaml import load_phonopy_yaml

    try:
        return load_phonopy_yaml(data).dataset
    except Exception:  # a malformed yaml is reported when it is read for real
        return None


def _read_phonopy_set(p: Path, force_sets, supercell, fmt) -> list[LabelledCell]:
    from ase import Atoms

    from ..workflow import _phonopy_from_files, _read_unitcell, safe_load_yaml

    is_yaml = p.name.lower().endswith((".yaml", ".yml", ".yaml.xz", ".yaml.gz"))
    if not is_yaml and supercell is None:
        raise InputError(f"{p} with FORCE_SETS needs the supercell the forces were computed in",
                         fix="add --supercell N N N (as used for FORCE_SETS), or give phonopy_disp.yaml instead")
    if supercell is not None and not is_yaml:
        sc = np.asarray(supercell)
        if sc.size not in (3, 9) or not np.all(sc == np.round(sc)) or (sc.size == 3 and np.any(sc < 1)):
            raise InputError(f"--supercell {' '.join(str(x) for x in np.ravel(sc))} is not a supercell",
                             fix="give 3 positive integers (e.g. 2 2 2) or a 3×3 integer matrix (9 integers)")
    if force_sets is not None and not Path(force_sets).is_file():
        raise InputError(f"{force_sets}: no such FORCE_SETS file", fix="check the path")
    data = safe_load_yaml(p) if is_yaml else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ph = _phonopy_from_files(
                data, None if is_yaml else _read_unitcell(p, fmt),
                None if is_yaml else np.reshape(np.asarray(supercell, dtype=int), (3, 3)) if np.size(supercell) == 9
                else np.diag(np.asarray(supercell, dtype=int)), force_sets, None, str(p),
            )  # fmt: skip
            cells = ph.supercells_with_displacements
            forces = ph.forces
    except InputError:
        raise
    except Exception as exc:  # phonopy raises many types for malformed or mismatched files
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{p}: phonopy cannot read its forces ({why})",
                         fix="check that FORCE_SETS belongs to this phonopy_disp.yaml (same supercell, same "
                         "number of atoms and displacements)") from None
    if forces is None or cells is None:
        raise InputError(f"{p} holds no forces", fix="add --forces FORCE_SETS, or give phonopy_params.yaml")
    forces = np.asarray(forces, dtype=float)
    try:
        energies = ph.supercell_energies  # phonopy_params.yaml may hold them; FORCE_SETS never does
    except (AttributeError, RuntimeError):
        energies = None
    name = Path(force_sets).name if force_sets is not None else p.name
    out = []
    for i, (sc, f) in enumerate(zip(cells, forces)):
        if sc is None:  # phonopy: displacement skipped
            continue
        a = Atoms(numbers=sc.numbers, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
        if f.shape != (len(a), 3):
            raise InputError(f"{name}: displacement {i + 1} has forces for {f.shape[0]} atoms, its supercell has "
                             f"{len(a)}", fix="check that FORCE_SETS belongs to this phonopy_disp.yaml")
        e = None if energies is None else float(energies[i])
        out.append(LabelledCell(a, f, e, None, f"{name} displacement {i + 1}"))
    return out


def _read_ase_file(p: Path, fmt) -> list[LabelledCell]:
    import ase.io

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frames = ase.io.read(p, index=":", format=fmt)
    except Exception as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{p}: cannot read it ({why})",
                         fix="give extxyz with energies/forces, vasprun.xml, or phonopy_disp.yaml with "
                         "--forces FORCE_SETS") from None
    if not isinstance(frames, list):
        frames = [frames]
    from sevenn.train.dataload import (
        _y_from_calc,  # sevenn's own reading of labels (free energy, stress sign)
    )

    out = []
    for i, a in enumerate(frames):
        y = _y_from_calc(a)
        f = np.asarray(y["force"], dtype=float)
        if f.shape != (len(a), 3):
            raise InputError(f"{p} frame {i + 1}: forces for {f.shape[0] if f.ndim else 0} atoms, the cell has "
                             f"{len(a)}", fix="check the file: every frame needs one force per atom")
        if np.isnan(f).all():
            continue  # a frame without forces (e.g. an extxyz of bare structures): nothing to fit
        e = float(y["energy"]) if np.isfinite(y["energy"]) else None
        s = None
        # sevenn's stress is xx yy zz xy yz zx with the sign flipped: back to ASE's Voigt order and sign
        if np.all(np.isfinite(y["stress"])):
            s6 = -np.asarray(y["stress"], dtype=float)
            s = s6[[0, 1, 2, 4, 5, 3]]
        b = a.copy()
        b.calc = None
        out.append(LabelledCell(b, f, e, s, f"{p.name} frame {i + 1}"))
    if not out:
        raise InputError(f"{p}: no frame with forces in it",
                         fix="give files with DFT forces (extxyz 'forces' column, vasprun.xml)")
    return out


def _check_cell(c: LabelledCell) -> None:
    a = c.atoms
    if not all(a.pbc) or abs(a.cell.volume) < 1e-6:
        raise InputError(f"{c.source}: not a periodic cell", fix="fine-tuning here is for crystals: give periodic "
                         "cells (extxyz with a Lattice, vasprun.xml, phonopy sets)")
    if c.forces.shape != (len(a), 3):
        raise InputError(f"{c.source}: {c.forces.shape[0]} forces for {len(a)} atoms",
                         fix="give one force (3 components) per atom")
    if not np.all(np.isfinite(c.forces)) or not np.all(np.isfinite(a.positions)):
        raise InputError(f"{c.source}: NaN or infinite forces or positions", fix="check the file")
    if c.energy is not None and not math.isfinite(c.energy):
        raise InputError(f"{c.source}: energy {c.energy} is not finite", fix="check the file")


# ----------------------------------------------------------------------------------------------------------------
# the base model


def _base_checkpoint(base: str, trust_model_file: bool):
    """(spec, checkpoint path, head) of a base model spec; raises InputError for one that cannot be fine-tuned."""
    from ..engines.mlip import SevenNetEngine

    spec = (base or "sevennet").strip()
    name, _, arg = spec.partition(":")
    if name.lower() not in FINETUNE_ENGINES:
        raise InputError(
            f"--base {spec}: only SevenNet models can be fine-tuned here ({name} has no fine-tuning driver in atomvib)",
            fix="use --base sevennet (SevenNet-0), sevennet:7net-l3i5, or sevennet:PATH for a SevenNet training checkpoint",
        )
    try:
        eng = SevenNetEngine(arg or None, trust_model_file=trust_model_file)
    except Exception as exc:  # EngineUnavailable, untrusted file: one line with its own fix
        fix = getattr(exc, "fix", None) or "check --base"
        raise InputError(f"--base {spec}: {getattr(exc, 'problem', exc)}", fix=fix) from None
    return eng.spec, eng._weights_file(), getattr(eng, "head", None)


def _load_base(path: str, spec: str):
    """sevenn's checkpoint and the model built from it; InputError for a file that is no training checkpoint."""
    import contextlib
    import io

    from sevenn.util import load_checkpoint

    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            cp = load_checkpoint(path)
            config = cp.config
            if not config or not cp.model_state_dict:
                raise ValueError("no config or model_state_dict in it")
            model = cp.build_model()
    except Exception as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"--base {spec}: not a SevenNet training checkpoint that can be fine-tuned ({why})",
            fix="give the .pth checkpoint sevenn writes when training (not a deployed TorchScript model), or "
            "--base sevennet",
        ) from None
    return cp, config, model


def _type_index(config) -> dict[int, int]:
    from sevenn import _keys as KEY

    return {int(z): int(i) for z, i in config[KEY.TYPE_MAP].items()}


def _check_elements(cells, config, spec) -> None:
    from ase.data import chemical_symbols

    known = set(_type_index(config))
    missing = sorted({int(z) for c in cells for z in c.atoms.numbers} - known)
    if missing:
        names = ", ".join(chemical_symbols[z] for z in missing)
        raise InputError(f"--base {spec} does not know {names}", fix="choose a base model trained on these elements")


# ----------------------------------------------------------------------------------------------------------------
# graphs and forces


def _graphs(cells, cutoff: float, head: str | None, use_energy: bool, use_stress: bool):
    from sevenn import _keys as KEY
    from sevenn.atom_graph_data import AtomGraphData
    from sevenn.train.dataload import atoms_to_graph

    out = []
    for c in cells:
        a = c.atoms.copy()
        a.info = {"y_energy": c.energy if (use_energy and c.energy is not None) else np.nan}
        a.arrays["y_force"] = np.asarray(c.forces, dtype=float)
        if use_stress and c.stress is not None:  # sevenn's convention: -σ (ASE), order xx yy zz xy yz zx
            s = -np.asarray(c.stress, dtype=float)
            a.info["y_stress"] = s[[0, 1, 2, 5, 3, 4]]
        g = AtomGraphData.from_numpy_dict(atoms_to_graph(a, cutoff, transfer_info=False, allow_unlabeled=True))
        if head:
            g[KEY.DATA_MODALITY] = head
        out.append(g)
    return out


def _predict(model, graphs):
    """(energies (n,), forces [(natoms, 3)]) of the model on graphs, one at a time (eval mode)."""
    from sevenn import _keys as KEY

    model.eval()
    model.set_is_batch_data(False)
    es, fs = [], []
    try:
        for g in graphs:
            out = model(g.clone())
            es.append(float(out[KEY.PRED_TOTAL_ENERGY].detach().reshape(-1)[0]))
            fs.append(out[KEY.PRED_FORCE].detach().cpu().numpy().astype(np.float64))
    finally:
        model.set_is_batch_data(True)  # as sevenn's Trainer wants it
    return np.array(es), fs


def force_scale(data_forces, model_forces) -> tuple[float, float]:
    """(s, cos): the least-squares factor with data ≈ s × model over all force components, and the cosine between
    the two (1: same pattern). A data set in the wrong unit shows s near a factor of :data:`WRONG_FORCE_UNITS`."""
    d = np.concatenate([np.ravel(f) for f in data_forces])
    m = np.concatenate([np.ravel(f) for f in model_forces])
    mm, dd = float(m @ m), float(d @ d)
    if mm <= 0 or dd <= 0:
        return float("nan"), float("nan")
    return float(d @ m / mm), float(d @ m / math.sqrt(mm * dd))


def check_force_units(data_forces, model_forces, base: str) -> float:
    """The scale of :func:`force_scale`; raises InputError when the data's forces look like another unit than
    eV/Å (or have the wrong sign) compared with the base model's on the same cells."""
    s, cos = force_scale(data_forces, model_forces)
    if not math.isfinite(s):
        return s
    if cos < -0.5:
        raise InputError(
            f"the data's forces point against the base model's ({base}) on the same cells (cosine {cos:.2f}): "
            "gradients (dE/dx) instead of forces (-dE/dx)?",
            fix="flip the sign of the forces in the data",
        )
    if cos > 0.5 and not (1 / UNIT_TOLERANCE < abs(s) < UNIT_TOLERANCE):
        for unit, factor in WRONG_FORCE_UNITS.items():
            if 1 / UNIT_TOLERANCE < s / factor < UNIT_TOLERANCE:
                raise InputError(
                    f"the data's forces are {s:.3g}× the base model's ({base}) on the same cells: they look like "
                    f"{unit}, not eV/Å",
                    fix=f"convert the forces to eV/Å (divide by {factor:.6g}) and run again",
                )
    return s


def _energy_offsets(cells, model_energies, type_index) -> tuple[np.ndarray, float] | None:
    """Per-element energy shifts (eV, by the model's type index) that bring the base model onto the data's energy
    reference (another code, other pseudopotentials: a constant per atom of each element), least squares over the
    cells with energies; and the mean offset per atom. None when no cell has an energy."""
    rows, rhs = [], []
    zs = sorted({int(z) for c in cells for z in c.atoms.numbers})
    for c, e_model in zip(cells, model_energies):
        if c.energy is None:
            continue
        counts = np.bincount(c.atoms.numbers, minlength=max(zs) + 1)[zs]
        rows.append(counts)
        rhs.append(c.energy - e_model)
    if not rows:
        return None
    A, b = np.array(rows, dtype=float), np.array(rhs)
    delta, *_ = np.linalg.lstsq(A, b, rcond=None)
    shift = np.zeros(max(type_index.values()) + 1)
    for z, d in zip(zs, delta):
        shift[type_index[z]] = d
    per_atom = float(np.sum(b) / np.sum(A))
    return shift, per_atom


# ----------------------------------------------------------------------------------------------------------------
# the run


def split_cells(n: int, valid_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train, valid) indices: a seeded random choice of ``max(1, round(fraction × n))`` whole cells (for a phonopy
    set: whole displacements) held out; ``valid_fraction`` 0 holds out none. Raises InputError when fewer than two
    cells would leave nothing to train or validate on."""
    if valid_fraction == 0:
        return list(range(n)), []
    if n < 2:
        raise InputError(
            f"{n} labelled cell(s): too few to hold one out for validation",
            fix="add more DFT cells (e.g. another phonopy set), or --valid-fraction 0 with a fixed --epochs "
            "(no early stopping)",
        )
    n_valid = min(n - 1, max(1, int(round(valid_fraction * n))))
    order = np.random.default_rng(seed).permutation(n)
    return sorted(int(i) for i in order[n_valid:]), sorted(int(i) for i in order[:n_valid])


def _freeze(model, n_blocks: int, n_conv: int) -> int:
    """Keep the atom embedding and the first ``n_blocks`` interaction blocks fixed; returns trainable weights."""
    if n_blocks > n_conv:
        raise InputError(f"freeze_layers={n_blocks}: the model has {n_conv} interaction blocks",
                         fix=f"give 0–{n_conv - 1}")
    frozen = ("onehot_to_feature_x", "edge_embedding") + tuple(f"{i}_" for i in range(n_blocks)) if n_blocks else ()
    n = 0
    for name, p in model.named_parameters():
        if frozen and name.startswith(frozen):
            p.requires_grad_(False)
        elif p.requires_grad:
            n += p.numel()
    return n


def finetune(
    data,
    out,
    base: str = "sevennet",
    config: FinetuneConfig | None = None,
    *,
    forces=None,
    supercell=None,
    trust_model_file: bool = False,
    force: bool = False,
    progress=False,
    on_epoch=None,
    **overrides,
) -> FinetuneResult:
    """Fine-tune a SevenNet model on DFT cells and write the checkpoint ``out`` (sevenn's format).

    Parameters
    ----------
    data : path(s) or list of :class:`LabelledCell`
        Files for :func:`read_training_data` (``forces``, ``supercell`` go with them), or cells already read.
    out : path
        The checkpoint to write (``.pth``); refused if it exists (unless ``force``) or is one of the inputs.
    base : str
        ``sevennet`` (SevenNet-0), ``sevennet:7net-l3i5``, or ``sevennet:PATH`` of a SevenNet training checkpoint
        (with ``trust_model_file=True``: loading it unpickles it).
    config : FinetuneConfig
        Settings; keyword ``overrides`` replace single fields (``max_epochs=2``).
    progress : bool or Progress
        Stage lines and a bar over epochs with the losses, on stderr.
    on_epoch : callable, optional
        ``on_epoch(epoch, model, record)`` after each epoch (benchmarks, validation studies).

    Returns
    -------
    FinetuneResult
        Use the model with ``atomvib.phonons(..., engine=f"sevennet:{result.path}")`` after trusting the file
        (``get_engine(spec, trust_model_file=True)``; CLI ``--trust-model-file``): it is yours, written here.
    """
    from ..output import check_output_file
    from ..runtime import configure_threads

    t_start = time.perf_counter()
    cfg = replace(config or FinetuneConfig(), **overrides)
    progress = as_progress(progress)
    inputs = [] if isinstance(data, (list, tuple)) and data and isinstance(data[0], LabelledCell) else (
        [data] if isinstance(data, (str, Path)) else list(data)
    )
    out = check_output_file(out, inputs=[*inputs, *([forces] if isinstance(forces, (str, Path)) else forces or [])],
                            force=force)
    spec, ckpt_path, head = _base_checkpoint(base, trust_model_file)
    out = Path(out)
    if Path(ckpt_path).resolve() == out.resolve():
        raise InputError(f"--out {out} is the base model's checkpoint: writing it would destroy the base model",
                         fix="give another --out file")
    if inputs:
        with progress.stage("reading the DFT data"):
            cells = read_training_data(inputs, forces=forces, supercell=supercell)
    else:
        cells = list(data)
        for c in cells:
            _check_cell(c)
    train_idx, valid_idx = split_cells(len(cells), cfg.valid_fraction, cfg.seed)

    configure_threads()
    import torch
    from sevenn import _keys as KEY

    from ..runtime import torch_threads

    # again: numba's OpenMP layer (the fused kernels of a SevenNet engine used earlier in this process) resets the
    # OpenMP thread count torch shares with it; measured 80× slower training steps on 2 cores until this was undone
    torch.set_num_threads(torch_threads())

    torch.manual_seed(cfg.seed)
    with progress.stage(f"loading {spec}"):
        cp, sconfig, model = _load_base(ckpt_path, spec)
    if sconfig.get(KEY.USE_MODALITY, False) and not head:
        raise InputError(f"--base {spec} is a multi-head model", fix=f"name the head to fine-tune: --base {spec}:HEAD")
    _check_elements(cells, sconfig, spec)
    cutoff = float(sconfig[KEY.CUTOFF])
    use_energy = cfg.energy_weight > 0 and all(c.energy is not None for c in cells)
    use_stress = cfg.stress_weight > 0 and any(c.stress is not None for c in cells)
    graphs = _graphs(cells, cutoff, head, use_energy, use_stress)

    # the base model on the data's cells: units check, energy reference, the "before" errors
    with progress.stage(f"base model on the {len(cells)} DFT cell(s)"):
        e_base, f_base = _predict(model, graphs)
    scale = check_force_units([c.forces for c in cells], f_base, spec)
    offset_per_atom = None
    if use_energy:
        shift, offset_per_atom = _energy_offsets(cells, e_base, _type_index(sconfig))
        p = getattr(getattr(model, "rescale_atomic_energy", None), "shift", None)
        if isinstance(p, torch.Tensor) and p.ndim == 1 and p.numel() == len(shift):  # species-wise shift
            with torch.no_grad():
                p += torch.as_tensor(shift, dtype=p.dtype)
        else:  # e.g. a multi-head model's shift per head: fitted as it is
            offset_per_atom = None

    n_trainable = _freeze(model, cfg.freeze_layers, int(sconfig[KEY.NUM_CONVOLUTION]))
    from sevenn.train.loss import ForceLoss, PerAtomEnergyLoss, StressLoss
    from sevenn.train.trainer import Trainer
    from sevenn.util import get_error_recorder
    from torch_geometric.loader import DataLoader

    criterion = torch.nn.HuberLoss(delta=cfg.huber_delta)
    losses = [(ForceLoss(criterion=criterion), cfg.force_weight)]
    if use_energy:
        losses.append((PerAtomEnergyLoss(criterion=criterion), cfg.energy_weight))
    if use_stress:
        losses.append((StressLoss(criterion=criterion), cfg.stress_weight))
    metrics = [("Force", "RMSE")] + ([("Energy", "RMSE")] if use_energy else []) + (
        [("Stress", "RMSE")] if use_stress else []
    )
    base_state = copy.deepcopy(model.state_dict())  # after the energy alignment: the start of every phase

    def loader(idx, shuffle=False):
        gen = torch.Generator().manual_seed(cfg.seed)
        return DataLoader([graphs[i] for i in idx], batch_size=cfg.batch_size, shuffle=shuffle, generator=gen)

    def errors(trainer, name, loader, is_train=False) -> dict:
        recorder = get_error_recorder(metrics)
        trainer.run_one_epoch(loader, is_train=is_train, error_recorder=recorder)
        # e.g. valid_force_rmse; sevenn's keys read "Force_RMSE (eV/Å)"
        return {f"{name}_{k.split(' ')[0].lower()}": float(v) for k, v in recorder.epoch_forward().items()}

    def run_phase(idx, epochs, desc, valid=None):
        """Train from the base weights on cells ``idx`` (fresh Adam): ``epochs`` epochs, or with ``valid`` cells
        until ``patience`` epochs bring no new best. Returns (history, best epoch, stopped early); the model holds
        the best epoch's weights (with ``valid``) or the last epoch's. A run of fixed length (no ``valid``) decays
        the learning rate linearly to 1 % over its epochs (``lr_decay``) so that its last weights have settled."""
        model.load_state_dict(base_state)
        decay = cfg.lr_decay and not valid and epochs > 1
        trainer = Trainer(
            model, losses, torch.optim.Adam, {"lr": cfg.learning_rate},
            scheduler_cls=torch.optim.lr_scheduler.LinearLR if decay else None,
            scheduler_args={"start_factor": 1.0, "end_factor": 0.01, "total_iters": epochs - 1} if decay else None,
            device="cpu",
        )  # fmt: skip
        train_loader = loader(idx, shuffle=True)
        valid_loader = loader(valid) if valid else None
        # epoch 0: the base model; after it, the train errors are those sevenn's recorder saw during the epoch's
        # steps (before each step: no extra pass over the cells)
        rec = {"epoch": 0, **errors(trainer, "train", loader(idx))}
        if valid:
            rec.update(errors(trainer, "valid", valid_loader))
        history = [rec]
        if on_epoch is not None:
            on_epoch(0, model, rec)
        best = (rec.get("valid_force_rmse"), 0, copy.deepcopy(model.state_dict()) if valid else None)
        bar = progress.bar(epochs, desc, unit="epoch")
        stopped, epoch = False, 0
        try:
            for epoch in range(1, epochs + 1):
                rec = {"epoch": epoch, **errors(trainer, "train", train_loader, is_train=True)}
                post = {"train F": f"{rec['train_force_rmse']:.2e}"}
                if valid:
                    rec.update(errors(trainer, "valid", valid_loader))
                    post["valid F"] = f"{rec['valid_force_rmse']:.2e}"
                rec["lr"] = trainer.get_lr()
                trainer.scheduler_step()  # sevenn's: a no-op without a scheduler
                history.append(rec)
                if on_epoch is not None:
                    on_epoch(epoch, model, rec)
                bar(1, **post)
                if valid and rec["valid_force_rmse"] < best[0]:
                    best = (rec["valid_force_rmse"], epoch, copy.deepcopy(model.state_dict()))
                if valid and epoch - best[1] >= cfg.patience:
                    stopped = epoch < epochs
                    break
        finally:
            bar.close()
        if valid:
            model.load_state_dict(best[2])
            return history, best[1], stopped
        return history, epoch, False

    progress.message(
        f"fine-tuning {n_trainable} weights on {len(train_idx)} cell(s)"
        + (f", validating on {len(valid_idx)}" if valid_idx else "")
        + ("" if use_energy else "; forces only (no energies in the data)")
    )
    history, best_epoch, stopped_early = run_phase(train_idx, cfg.max_epochs, "epochs", valid_idx)
    epochs_run = len(history) - 1
    selected = history[best_epoch]
    refit_history: list = []
    if valid_idx and cfg.refit and best_epoch > 0:
        # the number of epochs validation chose, now on every cell (from the base weights): the held-out
        # displacements carry force-constant rows the training cells do not
        progress.message(f"refit: {best_epoch} epoch(s) on all {len(cells)} cells")
        refit_history, _, _ = run_phase(list(range(len(cells))), best_epoch, "refit")
        final_train = refit_history[-1]["train_force_rmse"]
    else:
        final_train = selected["train_force_rmse"]

    # the checkpoint: sevenn's own format (its config + the weights), written beside `out`, then moved into place
    trained_on = ("forces",) + (("energy",) if use_energy else ()) + (("stress",) if use_stress else ())
    import sevenn

    sconfig = dict(sconfig)
    # the weights are in this sevenn's layout: a checkpoint stamped with the base's (older) version would have
    # them converted once more on loading (sevenn's backward-compatibility patches), scrambling the model
    sconfig["version"] = sevenn.__version__
    sconfig.update({KEY.OPTIMIZER: "adam", KEY.OPTIM_PARAM: {"lr": cfg.learning_rate}, KEY.LOSS: "huber",
                    KEY.LOSS_PARAM: {"delta": cfg.huber_delta}})
    wall = time.perf_counter() - t_start
    result = FinetuneResult(
        path=out, base=spec, n_train=len(train_idx), n_valid=len(valid_idx), epochs_run=epochs_run,
        best_epoch=best_epoch, stopped_early=stopped_early, trained_on=trained_on,
        valid_force_rmse_before=history[0].get("valid_force_rmse"),
        valid_force_rmse_after=selected.get("valid_force_rmse"),
        train_force_rmse_before=history[0]["train_force_rmse"], train_force_rmse_after=final_train,
        force_scale_vs_base=scale, energy_offset_ev_per_atom=offset_per_atom, wall_s=wall, config=cfg,
        refit_epochs=max(0, len(refit_history) - 1), history=tuple(history), refit_history=tuple(refit_history),
    )  # fmt: skip
    provenance = {
        "base": spec,
        "base_checkpoint": str(ckpt_path),
        "data": [c.source for c in cells],
        "train": [cells[i].source for i in train_idx],
        "valid": [cells[i].source for i in valid_idx],
        "settings": asdict(cfg),
        "trained_on": list(trained_on),
        "history": history,
        "refit_history": refit_history,
    }
    _write_checkpoint(model, out, sconfig, best_epoch, provenance, probe=graphs[0])
    return replace(result, wall_s=time.perf_counter() - t_start)


def _write_checkpoint(model, out: Path, config: dict, epoch: int, provenance: dict, probe=None) -> None:
    """sevenn's checkpoint (what its Trainer.write_checkpoint writes: config, model_state_dict, epoch, ...), written
    beside ``out`` and moved into place once sevenn's own loader, given the file, reproduces the model's forces on
    ``probe`` (a graph) to 1e-4 eV/Å."""
    import contextlib
    import os
    import tempfile

    import torch
    from sevenn.train.trainer import Trainer

    trainer = Trainer(model, [], torch.optim.Adam, {"lr": 0.0}, device="cpu")  # its writer, for the format

    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        trainer.write_checkpoint(tmp, config=config, epoch=epoch, atomvib_finetune=provenance)
        if probe is not None:
            _, _, reloaded = _load_base(tmp, str(out))
            f_model, f_file = _predict(model, [probe])[1][0], _predict(reloaded, [probe])[1][0]
            df = float(np.abs(f_model - f_file).max())
            if not df < 1e-4:
                from ..errors import EngineError

                raise EngineError(
                    f"the checkpoint sevenn reads back differs from the trained model (forces by {df:.2g} eV/Å); "
                    f"{out} not written",
                    fix="report this with your sevenn version (a checkpoint-format change atomvib does not know)",
                )
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
