"""Molecular dynamics through an atomvib engine, with ASE's integrators; trajectories that resume.

:func:`run_md` relaxes the structure (as ``atomvib phonons`` does), builds the MD cell (phonopy's supercell of
the primitive cell, so that its atoms are in the order the effective force constants need), draws
Maxwell–Boltzmann velocities with a fixed seed, and integrates with ASE's own integrators — nothing here
integrates equations of motion:

=============  ================================================================================================
thermostat     ASE class
=============  ================================================================================================
langevin       ``ase.md.langevin.Langevin`` (``fixcm=False`` with an ``ase.constraints.FixCom``, ASE's advice)
bussi          ``ase.md.bussi.Bussi`` (stochastic velocity rescaling, CSVR)
nose-hoover    ``ase.md.nose_hoover_chain.NoseHooverChainNVT``
(nve)          ``ase.md.verlet.VelocityVerlet`` for the production (equilibration thermostatted)
(npt)          ``ase.md.nose_hoover_chain.IsotropicMTKNPT`` (MTK barostat + Nosé–Hoover chain)
=============  ================================================================================================

Forces come from :meth:`Engine.evaluate` through :class:`EngineCalculator`, a small ASE calculator, so an
engine's fast path runs at every step. Where the graph reuse comes from: SevenNet's ``evaluate`` keeps a Verlet
list (cutoff + ``skin_a`` = 0.5 Å) built for a reference configuration and reuses it while no atom has moved
more than half the skin from that reference (``engines/mlip.py``, ``_VerletList``; minimum image, so wrapping
does not matter); past that it rebuilds from the current positions, which become the new reference. Across MD
steps this happens by itself, with no change here: at 300 K in Si a rebuild every few tens of steps, each a
fraction of one model call. The cell must not change (NPT rebuilds every step). CHGNet reuses its graph only
while atoms stay within 0.05 Å of the reference (``max_reuse_shift_a``, chosen for 0.01 Å displacements), so in
MD it rebuilds nearly every step; a real skin for CHGNet would need its bond and angle lists filtered by
distance per step, which is not done. NPT needs the stress, which ``Engine.evaluate`` does not return: NPT
runs through the engine's stock ASE calculator (its own graph and kernels).

Trajectory and resume. Frames (positions, momenta, forces, energy, cell; ``info``: step, time_fs,
temperature_K, phase, the run's key) are appended to an extended-XYZ file every ``write_every`` steps
(ASE's writer, 8 decimals), so a killed run keeps what it did. Beside it, ``<name>.checkpoint.npz`` holds the
state at the last frame written at full precision (positions, momenta, cell, the thermostat's and barostat's
internal variables, the file length at that frame) and is replaced atomically at most every
:data:`CHECKPOINT_SECONDS` and when the run stops. A second call with the same input, settings and engine (the
run's key; ``steps`` is not part of it, so a run can also be extended) truncates the file to the checkpoint's
frame and continues from it. "The same random state" means here: the thermostat's random numbers do not come
from one stream over the whole run but from a generator re-seeded at every frame, from (seed, step)
(:func:`thermostat_rng`). An interrupted and resumed run therefore draws exactly the numbers an uninterrupted
one draws, and its frames are the same bit for bit (given an engine whose forces are deterministic).

Blow-up. After every step the total energy per atom is compared with the step before; a jump larger than
``max_energy_jump_ev_per_atom`` or a force that is not finite stops the run, keeps the trajectory up to the
last good frame, and raises :class:`~atomvib.errors.InputError` naming a smaller timestep.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import units
from ..engines.base import EngineInfo
from ..errors import InputError, OutputExistsError
from ..results import Result
from ..structure import Structure
from .settings import MDSettings

#: the checkpoint beside the trajectory is replaced at most this often (s), and always when the run stops
CHECKPOINT_SECONDS = 2.0
#: key of the trajectory's frames in ``atoms.info`` that names the run (settings, structure, engine)
KEY_INFO = "atomvib_md_key"


# ------------------------------------------------------------------------------------------ the calculator
def _calculator_class():
    from ase.calculators.calculator import Calculator, all_changes

    class EngineCalculator(Calculator):
        """An ASE calculator over an atomvib :class:`~atomvib.engines.base.Engine`: energy and forces from
        ``engine.evaluate([atoms])`` (the engine's fast path). With ``stress=True`` (NPT) every property comes
        from the engine's own ASE calculator instead, which computes the stress."""

        def __init__(self, engine, stress: bool = False):
            super().__init__()
            self.engine = engine
            self.with_stress = bool(stress)
            self.implemented_properties = ["energy", "free_energy", "forces"] + (["stress"] if stress else [])
            self.n_calls = 0

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            self.n_calls += 1
            if self.with_stress:
                a = self.atoms.copy()
                a.set_constraint()
                a.calc = self.engine.calculator()
                e = float(a.get_potential_energy())
                self.results = {"energy": e, "free_energy": e, "forces": np.array(a.get_forces(), dtype=float),
                                "stress": np.array(a.get_stress(), dtype=float)}
                return
            ev = self.engine.evaluate([self.atoms])[0]
            self.results = {"energy": float(ev.energy), "free_energy": float(ev.energy),
                            "forces": np.asarray(ev.forces, dtype=float)}
            if ev.dipole is not None:  # engines that give it with the forces (xtb, PySCF): the IR from MD
                self.results["dipole"] = np.asarray(ev.dipole, dtype=float)

    return EngineCalculator


def engine_calculator(engine, stress: bool = False):
    """An ASE calculator whose energies and forces come from ``engine.evaluate`` (see the module doc)."""
    return _calculator_class()(engine, stress=stress)


# ------------------------------------------------------------------------------------------ the result
@dataclass(frozen=True, eq=False)
class MDTrajectory(Result):
    """Frames of an MD run (ours, or a trajectory file read by :func:`read_trajectory`).

    Attributes
    ----------
    structure : Structure
        The MD cell at the start: for our runs the relaxed, ideal supercell (the reference positions of the
        effective force constants), in the order of the frames' atoms.
    positions : ndarray (nframes, natoms, 3), Å
    velocities : ndarray (nframes, natoms, 3), Å/fs, or None
        None for a trajectory without velocities read without a timestep.
    forces : ndarray (nframes, natoms, 3), eV/Å, or None
    potential_energy_ev : ndarray (nframes,), eV, or None
    cells : ndarray (nframes, 3, 3), Å (rows)
    steps : ndarray (nframes,), int
        MD step of each frame (frame index for a file without steps).
    time_fs : ndarray (nframes,), fs
    production : ndarray (nframes,), bool
        Frames of the production phase (the analyses use only these).
    unitcell : Structure or None
        The (relaxed, primitive) cell the MD supercell was built from; None for molecules and user files.
    supercell_matrix : ndarray (3, 3) int or None
        phonopy's convention (supercell lattice columns = unit-cell lattice columns @ matrix).
    settings : MDSettings or None
    engine : EngineInfo or None
    source : str
        The trajectory file.
    relaxation : dict or None
    timings : dict
        ``md_wall_s``, ``steps_run`` (all sessions of a resumed run), ``steps_per_s``, ``ns_per_day``,
        ``atom_steps_per_s``; ``engine_calls``.
    key : str
        The run's identity (settings, structure, engine): what resuming checks.
    dipoles : ndarray (nframes, 3), e·Å, or None
        The dipole moment of each frame, where the engine gives one (xtb, PySCF) or the file holds it
        (``info["dipole"]``): the IR spectrum from its autocorrelation (:mod:`atomvib.dynamics.dipole`).
    """

    structure: Structure
    positions: np.ndarray
    velocities: np.ndarray | None
    forces: np.ndarray | None
    potential_energy_ev: np.ndarray | None
    cells: np.ndarray
    steps: np.ndarray
    time_fs: np.ndarray
    production: np.ndarray
    unitcell: Structure | None = None
    supercell_matrix: np.ndarray | None = None
    settings: MDSettings | None = None
    engine: EngineInfo | None = None
    source: str = ""
    relaxation: dict | None = None
    timings: dict = field(default_factory=dict)
    key: str = ""
    dipoles: np.ndarray | None = None

    kind = "md_trajectory"

    # ---- derived ---------------------------------------------------------------------------------
    @property
    def natoms(self) -> int:
        return self.structure.natoms

    @property
    def n_frames(self) -> int:
        return len(self.steps)

    @property
    def masses(self) -> np.ndarray:
        return np.asarray(self.structure.masses, dtype=float)

    @property
    def degrees_of_freedom(self) -> int:
        """3N − 3: the centre of mass is fixed (FixCom, or zero total momentum)."""
        return max(1, 3 * self.natoms - 3)

    @property
    def frame_interval_fs(self) -> float:
        """Time between consecutive frames, fs (the median spacing)."""
        if self.n_frames < 2:
            return float("nan")
        return float(np.median(np.diff(self.time_fs)))

    @property
    def kinetic_energy_ev(self) -> np.ndarray | None:
        """(nframes,) eV, from the velocities and masses."""
        if self.velocities is None:
            return None
        v = np.asarray(self.velocities) / units.FS_TO_ASE_TIME  # Å per ASE time unit: ½ m v² in eV
        return 0.5 * np.einsum("i,fij->f", self.masses, v * v)

    @property
    def temperature_k(self) -> np.ndarray | None:
        """(nframes,) K: 2 E_kin / (dof k_B), dof = 3N − 3."""
        ke = self.kinetic_energy_ev
        return None if ke is None else 2.0 * ke / (self.degrees_of_freedom * units.KB_EV_PER_K)

    def select(self, production_only: bool = True, stride: int = 1) -> MDTrajectory:
        """A trajectory of the production frames only (or all), every ``stride``-th."""
        idx = np.flatnonzero(self.production) if production_only else np.arange(self.n_frames)
        idx = idx[:: max(1, int(stride))]
        return dataclasses.replace(_take(self, idx), production=np.ones(len(idx), dtype=bool))

    def statistics(self) -> dict:
        """Temperature mean, standard deviation and standard error (block averages) of the production frames,
        total-energy drift per atom per ps (a straight-line fit), performance."""
        prod = self.select(True)
        out: dict = {"n_frames": int(prod.n_frames), "time_ps": 0.0}
        if prod.n_frames >= 2:
            out["time_ps"] = float((prod.time_fs[-1] - prod.time_fs[0]) * units.FS_TO_PS)
        temps = prod.temperature_k
        if temps is not None and len(temps):
            out["temperature_mean_K"] = float(np.mean(temps))
            out["temperature_std_K"] = float(np.std(temps))
            out["temperature_sem_K"] = block_standard_error(temps)
        if prod.potential_energy_ev is not None and temps is not None and prod.n_frames >= 3:
            etot = (np.asarray(prod.potential_energy_ev) + prod.kinetic_energy_ev) / self.natoms
            t_ps = np.asarray(prod.time_fs) * units.FS_TO_PS
            slope = np.polyfit(t_ps - t_ps[0], etot, 1)[0]
            out["energy_drift_ev_per_atom_per_ps"] = float(slope)
            out["energy_std_ev_per_atom"] = float(np.std(etot))
        return out

    def summary(self) -> dict:
        from ..results import provenance

        s = self.settings
        return {
            "structure": {"formula": self.structure.formula, "natoms": self.natoms,
                          "cell_formula": self.structure.cell_formula, "source": self.structure.source},
            "supercell_matrix": None if self.supercell_matrix is None else np.asarray(self.supercell_matrix).tolist(),
            "engine": None if self.engine is None else self.engine.to_dict(),
            "settings": None if s is None else s.to_dict(),
            "ensemble": None if s is None else s.ensemble,
            "thermostat": None if s is None else (s.thermostat_name if s.ensemble != "nve" else "none (NVE production)"),
            "target_temperature_K": None if s is None else s.temperature_k,
            "timestep_fs": None if s is None else s.timestep_fs,
            "frames": self.n_frames,
            "last_step": int(self.steps[-1]) if self.n_frames else 0,
            "production": self.statistics(),
            "performance": dict(self.timings),
            "trajectory": self.source,
            "relaxation": self.relaxation,
            "provenance": provenance(),
        }


def block_standard_error(x, n_blocks: int = 8) -> float:
    """Standard error of the mean of a correlated series from ``n_blocks`` block means (≥ 2 blocks)."""
    x = np.asarray(x, dtype=float)
    nb = min(n_blocks, len(x) // 2)
    if nb < 2:
        return float("nan")
    m = len(x) // nb
    means = x[: nb * m].reshape(nb, m).mean(axis=1)
    return float(np.std(means, ddof=1) / np.sqrt(nb))


# ------------------------------------------------------------------------------------------ the cell
def prepare_cell(inp, engine=None, settings: MDSettings | None = None, *, checkpoint_dir=None, progress=False,
                 fmt: str | None = None):
    """(engine, MD cell as Structure, unit cell or None, supercell matrix or None, relaxation dict or None).

    The structure is read, reduced to its primitive cell (``settings.primitive``), relaxed (the relaxation is
    checkpointed in ``checkpoint_dir``, as for ``atomvib phonons``), and repeated with phonopy (its atom order).
    """
    from ..engines import Engine, default_engine_spec, get_engine
    from ..harmonic.displacements import auto_supercell_matrix
    from ..harmonic.force_constants import new_phonopy
    from ..progress import as_progress
    from ..workflow import _relax, engine_identity, load_input

    settings = settings or MDSettings()
    progress = as_progress(progress)
    structure = load_input(inp, fmt=fmt)
    if structure.is_molecule and settings.ensemble == "npt":
        raise InputError(f"{structure.source or 'the input'} is a molecule (no periodic cell): NPT needs a cell "
                         "whose volume can change", fix="use --ensemble nvt (or nve) for a molecule")
    spec = settings.engine or default_engine_spec(structure.is_molecule)
    name = engine.info.name if isinstance(engine, Engine) else (engine or spec)
    with progress.stage(f"loading engine {name}"):
        eng = engine if isinstance(engine, Engine) else get_engine(engine or spec)
        eng.check(structure)
        engine_identity(eng)
    ps = settings.phonon_settings()
    if not structure.is_molecule and settings.primitive:
        structure = structure.primitive(settings.symprec)
    structure, relaxation = _relax(structure, eng, ps, {}, progress, checkpoint_dir)
    if structure.is_molecule:
        return eng, structure, None, None, relaxation
    if settings.supercell is not None:
        smat = np.reshape(settings.supercell, (3, 3)).astype(int)
    else:
        smat = auto_supercell_matrix(structure, settings.min_supercell_length_a, settings.symprec)
    n = int(round(abs(np.linalg.det(smat)))) * structure.natoms
    if n > settings.max_supercell_atoms:
        from ..errors import ResourceError

        raise ResourceError(f"the MD cell would have {n} atoms (limit {settings.max_supercell_atoms})",
                            fix="give a smaller --supercell or --min-length, or raise --max-supercell-atoms")
    ph = new_phonopy(structure, smat, "auto", settings.symprec)
    sc = ph.supercell
    cell = Structure(numbers=sc.numbers, positions=sc.positions, cell=sc.cell, pbc=(True, True, True),
                     masses=sc.masses, source=structure.source)
    return eng, cell, structure, np.array(smat, dtype=int), relaxation


# ------------------------------------------------------------------------------------------ integrators
def thermostat_rng(seed: int, step: int) -> np.random.Generator:
    """The thermostat's generator from frame ``step`` on: re-seeded from (seed, step) at every frame."""
    return np.random.default_rng([int(seed), 0x5EED, int(step)])


def _velocity_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), 0x7E1, 0])


#: internal variables of ASE's integrators that a resume restores (attribute paths), per class name
_STATE = {
    "NoseHooverChainNVT": ("_thermostat._eta", "_thermostat._p_eta"),
    "IsotropicMTKNPT": ("_thermostat._eta", "_thermostat._p_eta", "_barostat._xi", "_barostat._p_xi", "_eps",
                        "_p_eps", "_cell0", "_volume0"),
    "Bussi": ("transferred_energy",),
}


def _get_state(dyn) -> dict:
    out = {}
    for path in _STATE.get(type(dyn).__name__, ()):
        obj = dyn
        for part in path.split("."):
            obj = getattr(obj, part)
        out[path] = np.array(obj, dtype=float)
    return out


def _set_state(dyn, state: dict) -> None:
    for path, value in state.items():
        *head, last = path.split(".")
        obj = dyn
        for part in head:
            obj = getattr(obj, part)
        value = np.array(value, dtype=float)
        setattr(obj, last, float(value) if value.ndim == 0 else value)
    if type(dyn).__name__ == "IsotropicMTKNPT":
        dyn._q = dyn.atoms.get_positions()
        dyn._p = dyn.atoms.get_momenta()


def _make_dynamics(atoms, settings: MDSettings, phase: str, step: int):
    """The ASE integrator for ``phase`` ("equilibration" or "production")."""
    dt = settings.timestep_fs * units.FS_TO_ASE_TIME
    t = settings.temperature_k
    th = settings.thermostat_name
    if settings.ensemble == "npt":
        from ase.md.nose_hoover_chain import IsotropicMTKNPT

        return IsotropicMTKNPT(atoms, dt, temperature_K=t,
                               pressure_au=settings.pressure_gpa / units.EV_PER_A3_TO_GPA,
                               tdamp=settings.thermostat_time_fs * units.FS_TO_ASE_TIME,
                               pdamp=settings.barostat_time_fs * units.FS_TO_ASE_TIME)
    if phase == "production" and settings.ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, dt)
    if th == "langevin":
        from ase.md.langevin import Langevin

        gamma = settings.friction_per_ps if phase == "production" else settings.equilibration_friction_per_ps
        return Langevin(atoms, dt, temperature_K=t, friction=gamma * units.FS_TO_PS / units.FS_TO_ASE_TIME,
                        fixcm=False, rng=thermostat_rng(settings.seed, step))
    if th == "bussi":
        from ase.md.bussi import Bussi

        return Bussi(atoms, dt, temperature_K=t, taut=settings.thermostat_time_fs * units.FS_TO_ASE_TIME,
                     rng=thermostat_rng(settings.seed, step))
    from ase.md.nose_hoover_chain import NoseHooverChainNVT

    return NoseHooverChainNVT(atoms, dt, temperature_K=t, tdamp=settings.thermostat_time_fs * units.FS_TO_ASE_TIME)


def _thermalize(atoms, settings: MDSettings) -> None:
    from ase.md import velocitydistribution as vd

    rng = _velocity_rng(settings.seed)
    if hasattr(vd, "thermalize_momenta"):  # ASE ≥ 3.29
        vd.thermalize_momenta(atoms, temperature_K=settings.temperature_k, rng=rng)
    else:
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=settings.temperature_k, rng=rng)
    vd.Stationary(atoms)
    if not any(atoms.pbc):
        vd.ZeroRotation(atoms)


# ------------------------------------------------------------------------------------------ checkpoint
def checkpoint_path(out) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".checkpoint.npz")


def _write_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.npz")
    dyn_state = state.pop("dyn_state", {})
    np.savez(tmp, dyn_state=np.array(json.dumps({k: np.asarray(v).tolist() for k, v in dyn_state.items()})),
             **{k: np.asarray(v) for k, v in state.items()})
    state["dyn_state"] = dyn_state
    os.replace(tmp, path)


def _read_checkpoint(path: Path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError):
        return None
    try:
        d["dyn_state"] = {k: np.array(v) for k, v in json.loads(str(d["dyn_state"])).items()}
        d["key"] = str(d["key"])
        d["step"] = int(d["step"])
        d["file_size"] = int(d["file_size"])
    except (KeyError, ValueError, json.JSONDecodeError):
        return None
    return d


# ------------------------------------------------------------------------------------------ the run
def run_md(
    inp,
    engine=None,
    settings: MDSettings | None = None,
    *,
    out=None,
    progress=False,
    force: bool = False,
    fmt: str | None = None,
    **overrides,
) -> MDTrajectory:
    """Molecular dynamics of a crystal or molecule with an atomvib engine.

    Parameters
    ----------
    inp : path, ase.Atoms or Structure
        The structure (relaxed first unless ``settings.relax`` is False).
    engine : str or Engine, optional
        Engine spec or object; default: the settings' engine, else the default for the structure kind.
    settings : MDSettings, optional
        Keyword ``overrides`` replace single fields.
    out : path, optional
        The trajectory file (extended XYZ; ``<out>.checkpoint.npz`` beside it). Given a file of the same run
        (same input, settings apart from ``steps``, engine), the run continues from its last frame; a file of
        another run is refused unless ``force`` (then it is started again). None: frames kept in memory only.
    progress : bool or Progress
        Stages on stderr and a bar with steps, ps/day and the time left.

    Returns
    -------
    MDTrajectory
        Every frame of the run (read back from ``out`` when given: all sessions of a resumed run).

    Raises
    ------
    InputError
        Bad settings, a molecule asked for NPT, or a blow-up (energy jump or non-finite force): the trajectory
        up to the last good frame is kept, the message names a smaller timestep.
    """
    from ..progress import as_progress
    from ..runtime import configure_threads
    from ..workflow import forces_key

    configure_threads(blas_only=True)  # torch threads: set by a torch engine when it loads
    progress = as_progress(progress)
    settings = settings or MDSettings()
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    out = Path(out) if out is not None else None
    if out is not None and out.is_dir():
        raise InputError(f"{out} is a directory", fix="give the trajectory file, e.g. DIR/trajectory.extxyz")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    eng, cell, unitcell, smat, relaxation = prepare_cell(
        inp, engine, settings, checkpoint_dir=out.parent if out is not None else None, progress=progress, fmt=fmt)
    key = forces_key(json.dumps(["md", cell.content_hash(), settings.digest()], sort_keys=True), eng)
    start = _resume_point(out, key, force, progress) if out is not None else None

    atoms = cell.to_ase()
    if settings.ensemble != "npt":
        from ase.constraints import FixCom

        atoms.set_constraint(FixCom())
    calc = engine_calculator(eng, stress=settings.ensemble == "npt")
    atoms.calc = calc
    step, dyn_state, prior = 0, {}, {"md_wall_s": 0.0, "steps_run": 0}
    if start is not None:
        atoms.set_cell(start["cell"], scale_atoms=False)
        atoms.set_positions(start["positions"], apply_constraint=False)
        atoms.set_momenta(start["momenta"], apply_constraint=False)
        step, dyn_state = start["step"], start["dyn_state"]
        prior = {"md_wall_s": float(start.get("md_wall_s", 0.0)), "steps_run": int(start.get("steps_run", 0))}
        progress.message(f"resuming {out} at step {step} of {settings.total_steps}")
    else:
        _thermalize(atoms, settings)
        if out is not None:
            out.write_text("")  # a new trajectory
            checkpoint_path(out).unlink(missing_ok=True)

    memory: list[dict] = []
    total = settings.total_steps
    n = len(atoms)
    t_session = time.perf_counter()
    steps_session = 0
    fh = open(out, "a") if out is not None else None  # noqa: SIM115 (closed in finally)
    last: dict | None = None
    last_ckpt = 0.0
    bar = progress.bar(total, f"MD {settings.ensemble.upper()} {settings.temperature_k:g} K, {n} atoms, "
                              f"{settings.timestep_fs:g} fs", unit="step")
    bar(step)
    dyn, phase = None, None
    try:
        forces = atoms.get_forces(md=True)
        epot = atoms.get_potential_energy()
        _check_finite(forces, epot, step, settings, out)
        etot_prev = (epot + atoms.get_kinetic_energy()) / n
        if start is None:
            last = _frame(atoms, step, settings, key, fh, memory, {})
        else:
            last = dict(start, dyn_state=dyn_state)
        last.update(md_wall_s=prior["md_wall_s"], steps_run=prior["steps_run"])
        while step < total:
            want = "equilibration" if step < settings.equilibration_steps else "production"
            if dyn is None or want != phase:
                dyn, phase = _make_dynamics(atoms, settings, want, step), want
                if dyn_state:  # the integrator's own variables at the frame resumed from (once)
                    _set_state(dyn, dyn_state)
                    dyn_state = {}
            if step % settings.write_every == 0 and hasattr(dyn, "rng"):
                dyn.rng = thermostat_rng(settings.seed, step)
            dyn.step()
            step += 1
            steps_session += 1
            forces = atoms.get_forces(md=True)
            epot = atoms.get_potential_energy()
            _check_finite(forces, epot, step, settings, out)
            etot = (epot + atoms.get_kinetic_energy()) / n
            if not np.isfinite(etot) or abs(etot - etot_prev) > settings.max_energy_jump_ev_per_atom:
                raise _blow_up(step, etot - etot_prev, settings, out)
            etot_prev = etot
            if step % settings.write_every == 0 or step == total:
                wall = prior["md_wall_s"] + time.perf_counter() - t_session
                # the integrator's variables go with the frame when the next step uses the same integrator
                same = (step < settings.equilibration_steps) == (phase == "equilibration")
                last = _frame(atoms, step, settings, key, fh, memory, _get_state(dyn) if same else {})
                last.update(md_wall_s=wall, steps_run=prior["steps_run"] + steps_session)
                rate = steps_session / max(time.perf_counter() - t_session, 1e-9)
                bar(settings.write_every if step % settings.write_every == 0 else step % settings.write_every,
                    T=f"{2 * atoms.get_kinetic_energy() / (max(1, 3 * n - 3) * units.KB_EV_PER_K):.0f}K",
                    ps_day=f"{rate * settings.timestep_fs * units.FS_TO_PS * units.SECONDS_PER_DAY:.3g}")
                if out is not None and time.perf_counter() - last_ckpt > CHECKPOINT_SECONDS:
                    _write_checkpoint(checkpoint_path(out), dict(last))
                    last_ckpt = time.perf_counter()
    finally:
        bar.close()
        if fh is not None:
            fh.close()
            if last is not None:
                _write_checkpoint(checkpoint_path(out), dict(last))
    wall = prior["md_wall_s"] + time.perf_counter() - t_session
    steps_run = prior["steps_run"] + steps_session
    timings = _performance(wall, steps_run, settings.timestep_fs, n)
    timings["engine_calls_this_session"] = calc.n_calls
    if out is not None:
        traj = read_trajectory(out, cell, key=key)
    else:
        traj = _from_memory(memory, cell, settings)
    keep = np.flatnonzero(np.asarray(traj.steps) <= total)  # a run shortened after a longer one: its steps only
    if len(keep) < traj.n_frames:
        traj = _take(traj, keep)
    return dataclasses.replace(
        traj, production=np.asarray(traj.steps) >= settings.equilibration_steps, unitcell=unitcell,
        supercell_matrix=smat, settings=settings, engine=eng.info, source=str(out) if out is not None else "",
        relaxation=relaxation, timings=timings, key=key,
    )


def _take(traj: MDTrajectory, idx) -> MDTrajectory:
    take = lambda a: None if a is None else np.asarray(a)[idx]  # noqa: E731
    return dataclasses.replace(
        traj, positions=take(traj.positions), velocities=take(traj.velocities), forces=take(traj.forces),
        potential_energy_ev=take(traj.potential_energy_ev), cells=take(traj.cells), steps=take(traj.steps),
        time_fs=take(traj.time_fs), production=take(traj.production), dipoles=take(traj.dipoles),
    )


def _performance(wall_s: float, steps: int, timestep_fs: float, natoms: int) -> dict:
    rate = steps / wall_s if wall_s > 0 else float("nan")
    return {
        "md_wall_s": float(wall_s),
        "steps_run": int(steps),
        "steps_per_s": float(rate),
        "ns_per_day": float(rate * timestep_fs * units.FS_TO_PS * units.PS_TO_NS * units.SECONDS_PER_DAY),
        "atom_steps_per_s": float(rate * natoms),
    }


def _check_finite(forces, epot, step, settings, out):
    if not (np.all(np.isfinite(forces)) and np.isfinite(epot)):
        raise _blow_up(step, float("nan"), settings, out)


def _blow_up(step: int, jump: float, settings: MDSettings, out) -> InputError:
    kept = f"; the trajectory up to the last frame before it is kept in {out}" if out is not None else ""
    what = "a force or the energy is not finite" if not np.isfinite(jump) else \
        f"the total energy jumped by {jump:+.3g} eV/atom in one step"
    return InputError(
        f"MD blew up at step {step}: {what} (timestep {settings.timestep_fs:g} fs is too large for the fastest "
        f"vibration, or the structure is unstable){kept}",
        fix=f"use --timestep {settings.timestep_fs / 2:g} (or smaller; ≤ 0.5 fs with hydrogen) with --force",
    )


def _frame(atoms, step: int, settings: MDSettings, key: str, fh, memory: list, dyn_state: dict) -> dict:
    """Append the current state as a frame (file and/or memory); returns the checkpoint state of this frame."""
    n = len(atoms)
    ke = float(atoms.get_kinetic_energy())
    temp = 2.0 * ke / (max(1, 3 * n - 3) * units.KB_EV_PER_K)
    phase = "equilibration" if step < settings.equilibration_steps else "production"
    forces = np.array(atoms.get_forces(md=True))
    epot = float(atoms.get_potential_energy())
    dipole = atoms.calc.results.get("dipole") if atoms.calc is not None else None
    if fh is not None:
        from ase.calculators.singlepoint import SinglePointCalculator
        from ase.io import write

        a = atoms.copy()
        a.set_constraint()
        a.calc = SinglePointCalculator(a, energy=epot, forces=forces)
        a.info = {"step": int(step), "time_fs": float(step * settings.timestep_fs), "temperature_K": temp,
                  "kinetic_energy": ke, "phase": phase, KEY_INFO: key}
        if dipole is not None:
            a.info["dipole"] = np.asarray(dipole, dtype=float)
        write(fh, a, format="extxyz")
        fh.flush()
        size = fh.tell()
    else:
        memory.append({"step": step, "positions": atoms.get_positions(), "momenta": atoms.get_momenta(),
                       "forces": forces, "energy": epot, "cell": np.array(atoms.cell), "dipole": dipole})
        size = 0
    return {"key": np.array(key), "step": np.array(step), "positions": atoms.get_positions(),
            "momenta": atoms.get_momenta(), "cell": np.array(atoms.cell), "file_size": np.array(size),
            "dyn_state": dyn_state, "time_fs": np.array(step * settings.timestep_fs)}


def _resume_point(out: Path, key: str, force: bool, progress) -> dict | None:
    """The checkpoint to continue from (the file truncated to its frame), or None for a new run."""
    ck = checkpoint_path(out)
    if not out.exists() or out.stat().st_size == 0:
        ck.unlink(missing_ok=True)
        return None
    state = _read_checkpoint(ck) if ck.exists() else None
    if state is not None and state["key"] == key and not force:
        if out.stat().st_size < state["file_size"]:
            raise InputError(f"{out} is shorter than its checkpoint says (edited or truncated?)",
                             fix="start again with --force, or give another --out")
        with open(out, "r+b") as fh:
            fh.truncate(state["file_size"])
        return state
    if state is None and not force:
        last = _last_frame(out)
        if last is not None and last.info.get(KEY_INFO) == key:
            progress.message(f"{out}: no checkpoint; resuming from its last frame (8 decimals, thermostat chain reset)")
            return {"key": key, "step": int(last.info["step"]), "positions": last.get_positions(),
                    "momenta": last.get_momenta(), "cell": np.array(last.cell), "dyn_state": {},
                    "file_size": out.stat().st_size, "time_fs": float(last.info.get("time_fs", 0.0))}
    if not force:
        raise OutputExistsError(
            f"{out} holds a trajectory of another run (other input, settings or engine)",
            fix="give another --out, or --force to start this run again in its place",
        )
    return None


def _last_frame(path: Path):
    from ase.io import iread

    last = None
    try:
        for a in iread(path, index=":", format="extxyz"):
            last = a
    except Exception:  # a torn last frame: the one before it
        pass
    return last


# ------------------------------------------------------------------------------------------ reading
def _from_memory(memory: list[dict], cell: Structure, settings: MDSettings) -> MDTrajectory:
    masses = np.asarray(cell.masses)[None, :, None]
    steps = np.array([m["step"] for m in memory], dtype=int)
    return MDTrajectory(
        structure=cell,
        positions=np.array([m["positions"] for m in memory]),
        velocities=np.array([m["momenta"] for m in memory]) / masses * units.FS_TO_ASE_TIME,
        forces=np.array([m["forces"] for m in memory]),
        potential_energy_ev=np.array([m["energy"] for m in memory]),
        cells=np.array([m["cell"] for m in memory]),
        steps=steps,
        time_fs=steps * settings.timestep_fs,
        production=np.ones(len(memory), dtype=bool),
        dipoles=np.array([m["dipole"] for m in memory], dtype=float) if all(
            m["dipole"] is not None for m in memory) and memory else None,
    )


def _mic(d: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Minimum-image Cartesian differences (…, 3) in a periodic cell (rows)."""
    frac = d @ np.linalg.inv(cell)
    return (frac - np.round(frac)) @ cell


def read_trajectory(path, structure: Structure | None = None, *, timestep_fs: float | None = None,
                    fmt: str | None = None, index=":", key: str | None = None) -> MDTrajectory:
    """A trajectory file as :class:`MDTrajectory`: extended XYZ (ours or anyone's), ASE ``.traj``, VASP
    XDATCAR/vasprun.xml, LAMMPS dumps — whatever ``ase.io.read(path, index=':')`` reads.

    Parameters
    ----------
    structure : Structure, optional
        The structure the frames belong to (its species and masses replace the file's when the file has none
        of its own, as a LAMMPS dump: same atom order required).
    timestep_fs : float, optional
        Time between consecutive frames, fs. Needed when the file has neither velocities nor times; velocities
        then come from central finite differences of the positions (minimum image).
    key : str, optional
        Keep only frames of this run (our files).
    """
    from ase.io import read

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such trajectory file", fix="check the path")
    try:
        frames = read(p, index=index, format=fmt)
    except Exception as exc:  # ASE raises many types for files it cannot parse
        raise InputError(f"{path}: ASE cannot read it as a trajectory ({type(exc).__name__}: {exc})"[:300],
                         fix="give an extxyz, ASE .traj, XDATCAR, vasprun.xml or LAMMPS dump (--format FMT)") from None
    if not isinstance(frames, list):
        frames = [frames]
    if key is not None:
        frames = [a for a in frames if a.info.get(KEY_INFO) == key]
    if not frames:
        raise InputError(f"{path}: no frames", fix="give a trajectory with at least one frame")
    n = len(frames[0])
    if any(len(a) != n for a in frames):
        raise InputError(f"{path}: the frames have different numbers of atoms", fix="give a trajectory of one system")
    ref = structure
    if ref is not None and ref.natoms != n:
        raise InputError(f"{path}: {n} atoms per frame, but the structure has {ref.natoms}",
                         fix="give the structure (supercell) the trajectory was run in")
    first = frames[0]
    if ref is None:
        ref = Structure.from_ase(first, source=str(path))
    elif not np.array_equal(first.numbers, ref.numbers):
        # a file without species of its own (LAMMPS dump: type ids) takes the structure's, in the same order
        if sorted(set(first.numbers.tolist())) != sorted(set(ref.numbers.tolist())) or not _type_like(first, ref):
            raise InputError(f"{path}: its atoms do not match the structure (other species or order)",
                             fix="give the structure the trajectory was run in (the same atoms in the same order)")
    positions = np.array([a.get_positions() for a in frames])
    cells = np.array([np.array(a.cell) if any(a.pbc) else np.zeros((3, 3)) for a in frames])
    forces = energies = None
    try:
        forces = np.array([a.get_forces() for a in frames])
        energies = np.array([a.get_potential_energy() for a in frames])
    except Exception:  # a file without forces (XDATCAR): fine for the DOS, not for TDEP
        try:
            forces = np.array([a.get_forces() for a in frames])
        except Exception:
            forces = None
    steps = np.array([int(a.info.get("step", i)) for i, a in enumerate(frames)], dtype=int)
    if all("time_fs" in a.info for a in frames):
        time_fs = np.array([float(a.info["time_fs"]) for a in frames])
    elif timestep_fs is not None:
        time_fs = np.arange(len(frames)) * float(timestep_fs)
    else:
        time_fs = np.arange(len(frames), dtype=float)  # frame index: no time known
    velocities = None
    if all(a.has("momenta") for a in frames):
        masses = np.asarray(ref.masses)[None, :, None]
        velocities = np.array([a.get_momenta() for a in frames]) / masses * units.FS_TO_ASE_TIME
    elif len(frames) >= 3 and (timestep_fs is not None or all("time_fs" in a.info for a in frames)):
        velocities = finite_difference_velocities(positions, cells, time_fs)
    production = np.array([a.info.get("phase", "production") == "production" for a in frames])
    dip = [_frame_dipole(a) for a in frames]
    dipoles = np.array(dip) if all(d is not None for d in dip) else None
    return MDTrajectory(structure=ref, positions=positions, velocities=velocities, forces=forces,
                        potential_energy_ev=energies, cells=cells, steps=steps, time_fs=time_fs,
                        production=production, source=str(path), dipoles=dipoles)


def _frame_dipole(a) -> np.ndarray | None:
    """The dipole of a frame read by ASE: ``info["dipole"]``, or the calculator's (extxyz moves a per-frame
    ``dipole`` into the single-point calculator's results)."""
    d = a.info.get("dipole")
    if d is None and a.calc is not None:
        d = a.calc.results.get("dipole")
    d = None if d is None else np.asarray(d, dtype=float)
    return d if d is not None and d.shape == (3,) else None


def _type_like(first, ref: Structure) -> bool:
    """The file's species ids partition the atoms as the structure's species do (LAMMPS type ids)."""
    a, b = np.asarray(first.numbers), np.asarray(ref.numbers)
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def finite_difference_velocities(positions, cells, time_fs) -> np.ndarray:
    """Velocities (nframes, natoms, 3) Å/fs from positions by central differences (one-sided at the ends),
    minimum image in periodic cells (so wrapped coordinates are fine)."""
    x = np.asarray(positions, dtype=float)
    t = np.asarray(time_fs, dtype=float)
    cells = np.asarray(cells, dtype=float)
    periodic = np.abs(np.linalg.det(cells[0])) > 1e-9

    def diff(i, j):
        d = x[j] - x[i]
        return _mic(d, cells[i]) if periodic else d

    v = np.empty_like(x)
    for k in range(len(x)):
        i, j = max(k - 1, 0), min(k + 1, len(x) - 1)
        v[k] = diff(i, j) / (t[j] - t[i])
    return v
