"""Settings of a molecular-dynamics run (``atomvib md``), beside :class:`~atomvib.settings.PhononSettings`.

Frozen and checked once, here, for the API, the CLI and (later) the batch runner: every bad number is one
:class:`~atomvib.errors.InputError` line that names the option and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

from ..errors import InputError
from ..settings import PhononSettings, _count, _finite, _positive, _supercell_matrix

ENSEMBLES = ("nvt", "nve", "npt")
THERMOSTATS = ("langevin", "bussi", "nose-hoover")
#: the largest timestep accepted, fs (heavier-atom crystals are stable to ~5 fs; hydrogen needs ≤ 1 fs)
MAX_TIMESTEP_FS = 10.0


@dataclass(frozen=True)
class MDSettings:
    """Settings of :func:`atomvib.dynamics.run_md`.

    Attributes
    ----------
    temperature_k : float
        Target temperature, K (> 0). Initial velocities are Maxwell–Boltzmann at it.
    timestep_fs : float
        Integration timestep, fs, in (0, 10].
    steps : int
        Production steps (≥ 0), after the equilibration.
    equilibration_steps : int
        Steps before the production, always thermostatted (for ``nve`` too: an NVE production starts from a
        thermalised state); written to the trajectory but marked, and left out of every analysis.
    ensemble : str
        "nvt", "nve" (VelocityVerlet production) or "npt" (isotropic Martyna–Tobias–Klein barostat with a
        Nosé–Hoover chain, ASE's ``IsotropicMTKNPT``; crystals only).
    thermostat : str or None
        "langevin" (ASE ``Langevin``), "bussi" (ASE ``Bussi``, stochastic velocity rescaling) or "nose-hoover"
        (ASE ``NoseHooverChainNVT``); None → langevin, or nose-hoover for npt (the only NPT thermostat used).
        Bussi and Nosé–Hoover rescale all velocities together: they do not exchange energy between the modes of
        a nearly harmonic crystal (use Langevin there, e.g. for the low-temperature DOS).
    friction_per_ps : float
        Langevin friction of the production, ps⁻¹. It broadens every line of the VACF DOS by a Lorentzian of
        full width γ/2π (1 ps⁻¹ → 0.16 THz).
    equilibration_friction_per_ps : float
        Langevin friction of the equilibration, ps⁻¹ (strong: fast thermalisation).
    thermostat_time_fs : float
        Bussi relaxation time / Nosé–Hoover damping time, fs.
    pressure_gpa : float
        NPT external pressure, GPa.
    barostat_time_fs : float
        NPT barostat damping time, fs.
    write_every : int
        Write a frame (positions, velocities, forces, energy) every this many steps; the VACF DOS sees
        frequencies up to 1/(2·write_every·timestep) (Nyquist).
    supercell : tuple of 9 ints or None
        Supercell matrix (row-major 3×3, phonopy's convention) of the (primitive) cell; None → automatic, every
        width ≥ ``min_supercell_length_a`` (as ``atomvib phonons``, so the harmonic result uses the same cell).
    min_supercell_length_a : float
        Automatic supercell width, Å.
    max_supercell_atoms : int
        Refuse larger MD cells.
    seed : int
        Seed of the initial velocities and of the thermostat noise (re-seeded from (seed, step) at every frame;
        see :mod:`atomvib.dynamics.md`).
    max_energy_jump_ev_per_atom : float
        Stop when the total energy per atom changes by more than this in one step (or a force is not finite):
        the timestep is too large (or the structure flies apart).
    engine : str or None
        Engine spec; None → the default for the structure kind.
    relax, relax_cell, fmax_ev_per_a, relax_steps, primitive, symprec
        As in :class:`~atomvib.settings.PhononSettings`: relaxation before the MD (symmetry kept), the reduction
        to the primitive cell the supercell is built from, the symmetry tolerance.
    """

    temperature_k: float = 300.0
    timestep_fs: float = 1.0
    steps: int = 1000
    equilibration_steps: int = 500
    ensemble: str = "nvt"
    thermostat: str | None = None
    friction_per_ps: float = 1.0
    equilibration_friction_per_ps: float = 10.0
    thermostat_time_fs: float = 100.0
    pressure_gpa: float = 0.0
    barostat_time_fs: float = 1000.0
    write_every: int = 10
    supercell: tuple[int, ...] | None = None
    min_supercell_length_a: float = 10.0
    max_supercell_atoms: int = 5000
    seed: int = 0
    max_energy_jump_ev_per_atom: float = 0.1
    engine: str | None = None
    relax: bool = True
    relax_cell: bool = True
    fmax_ev_per_a: float = 1e-3
    relax_steps: int = 300
    primitive: bool = True
    symprec: float = 1e-3

    def __post_init__(self):
        t = self.temperature_k
        if not (_finite(t) and float(t) > 0):
            raise InputError(f"--temperature must be a finite temperature > 0 K, got {t!r}",
                             fix="give a temperature in kelvin, e.g. --temperature 300")
        object.__setattr__(self, "temperature_k", float(t))
        dt = self.timestep_fs
        if not (_finite(dt) and 0 < float(dt) <= MAX_TIMESTEP_FS):
            raise InputError(f"--timestep {dt!r} fs is outside (0, {MAX_TIMESTEP_FS:g}] fs",
                             fix="use 1 fs (0.5 fs with hydrogen; up to 5 fs for heavy atoms at low temperature)")
        object.__setattr__(self, "timestep_fs", float(dt))
        object.__setattr__(self, "steps", _count("steps", self.steps, 0, "--steps", "a number of steps such as 10000"))
        object.__setattr__(self, "equilibration_steps", _count(
            "equilibration_steps", self.equilibration_steps, 0, "--equilibration", "a number of steps such as 1000"))
        ens = str(self.ensemble).lower()
        if ens not in ENSEMBLES:
            raise InputError(f"unknown ensemble {self.ensemble!r}", fix=f"use one of {', '.join(ENSEMBLES)} (--ensemble)")
        object.__setattr__(self, "ensemble", ens)
        if self.thermostat is not None:
            th = str(self.thermostat).lower().replace("_", "-")
            th = {"nose_hoover": "nose-hoover", "nosehoover": "nose-hoover", "nhc": "nose-hoover",
                  "csvr": "bussi"}.get(th, th)
            if th not in THERMOSTATS:
                raise InputError(f"unknown thermostat {self.thermostat!r}",
                                 fix=f"use one of {', '.join(THERMOSTATS)} (--thermostat)")
            if ens == "npt" and th != "nose-hoover":
                raise InputError(f"--ensemble npt runs ASE's MTK barostat with a Nosé–Hoover chain; --thermostat {th} "
                                 "has no barostat here", fix="drop --thermostat (or give --thermostat nose-hoover)")
            object.__setattr__(self, "thermostat", th)
        for name, option, example in (
            ("friction_per_ps", "--friction", "a friction such as 1 (ps⁻¹)"),
            ("equilibration_friction_per_ps", "--equilibration-friction", "a friction such as 10 (ps⁻¹)"),
            ("thermostat_time_fs", "--thermostat-time", "a time such as 100 fs"),
            ("barostat_time_fs", "--barostat-time", "a time such as 1000 fs"),
            ("min_supercell_length_a", "--min-length", "a width such as 10 Å"),
            ("max_energy_jump_ev_per_atom", "max_energy_jump_ev_per_atom", "a threshold such as 0.1 eV/atom"),
            ("fmax_ev_per_a", "--fmax", "a force threshold such as 1e-3 eV/Å"),
            ("symprec", "--symprec", "a tolerance such as 1e-3 Å"),
        ):
            _positive(name, getattr(self, name), option, example)
        if not (_finite(self.pressure_gpa) and math.isfinite(float(self.pressure_gpa))):
            raise InputError(f"--pressure must be a finite number (GPa), got {self.pressure_gpa!r}", fix="give e.g. --pressure 0")
        object.__setattr__(self, "write_every", _count(
            "write_every", self.write_every, 1, "--write-every", "a number of steps such as 10"))
        object.__setattr__(self, "seed", _count("seed", self.seed, 0, "--seed", "an integer ≥ 0"))
        object.__setattr__(self, "relax_steps", _count(
            "relax_steps", self.relax_steps, 1, "--relax-steps", "at least 1 step (default 300); --no-relax skips relaxing"))
        object.__setattr__(self, "max_supercell_atoms", _count(
            "max_supercell_atoms", self.max_supercell_atoms, 1, "--max-supercell-atoms", "a limit such as 5000"))
        if self.supercell is not None:
            object.__setattr__(self, "supercell", _supercell_matrix(self.supercell))

    # ------------------------------------------------------------------------------------------ derived
    @property
    def thermostat_name(self) -> str:
        """The thermostat that runs (the default resolved)."""
        if self.thermostat is not None:
            return self.thermostat
        return "nose-hoover" if self.ensemble == "npt" else "langevin"

    @property
    def total_steps(self) -> int:
        return self.equilibration_steps + self.steps

    @property
    def frame_interval_fs(self) -> float:
        """Time between two written frames, fs."""
        return self.timestep_fs * self.write_every

    def phonon_settings(self) -> PhononSettings:
        """The relaxation/symmetry part as PhononSettings (for the relaxation and the harmonic comparison)."""
        return PhononSettings(
            engine=self.engine, relax=self.relax, relax_cell=self.relax_cell, fmax_ev_per_a=self.fmax_ev_per_a,
            relax_steps=self.relax_steps, supercell=self.supercell, min_supercell_length_a=self.min_supercell_length_a,
            primitive=self.primitive, symprec=self.symprec, max_supercell_atoms=self.max_supercell_atoms,
        )

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if self.supercell is not None:
            d["supercell"] = list(self.supercell)
        return d

    def digest(self, exclude: tuple[str, ...] = ("steps",)) -> str:
        """SHA-256 (16 hex) of the settings that fix the trajectory step by step. ``steps`` is left out by
        default: a run extended with more steps continues the same trajectory."""
        d = {k: v for k, v in self.to_dict().items() if k not in exclude}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
