"""Quasi-harmonic thermal properties: harmonic phonons at several volumes, phonopy's QHA on top.

:func:`quasi_harmonic` relaxes a crystal once (cell and positions, space group kept), scales the relaxed cell
isotropically to a set of volumes around it, relaxes the positions at each fixed volume and computes the harmonic
phonons there with :func:`atomvib.workflow.phonons` (one engine object for every volume: the model is loaded
once), then hands the static energies E(V) and the phonon free energies F_ph(V, T) to phonopy's QHA
(:class:`phonopy.qha.core.QHA`; its EOS fits, finite differences and C_p fits are used as they are). The result,
:class:`QuasiHarmonic`, holds the equilibrium volume V(T), the volumetric thermal expansion α(T), the isothermal
bulk modulus B(T), the Gibbs energy G(T, p = 0), C_p(T) and C_v(T) at V(T), the fitted EOS, and the phonons of
every volume.

Units: volumes Å³ and energies eV per analysed (primitive) cell; thermal quantities per mole of that cell
(phonopy's convention; ``summary.json`` adds per formula unit); α 1/K; B GPa; T K.

Where the QHA stops: phonopy's EOS fit at a temperature needs the free-energy minimum inside the sampled
volumes, and its finite differences need one temperature beyond the last one reported. The temperatures are cut
where the minimum of F(V, T) reaches the largest (or smallest) sampled volume or a fit fails; the result says
where and why (:attr:`QuasiHarmonic.truncation`).

Limitation: the cell is scaled isotropically and only the positions relax at each volume, so for non-cubic
crystals the cell shape stays that of the static relaxation (α is volumetric; the linear α/3 is given for cubic
crystals only).
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import units
from ..engines.base import EngineInfo
from ..errors import AtomvibError, ConvergenceError, InputError
from ..results import Result
from ..settings import PhononSettings
from ..structure import Structure

#: equations of state phonopy's QHA fits (phonopy.qha.eos)
EOS_NAMES = ("vinet", "birch_murnaghan", "murnaghan")
#: phonopy fits S(V) and C_v(V) with degree-4 polynomials: at least 5 volumes
MIN_VOLUMES = 5
MAX_VOLUMES = 51
#: the largest ± volume range accepted (beyond it harmonic phonons of a strained crystal mean little)
MAX_VOLUME_RANGE = 0.3
#: the fewest temperatures the QHA can use (finite differences: one beyond the last reported)
MIN_TEMPERATURES = 4


@dataclass(frozen=True)
class QhaSettings:
    """Settings of the quasi-harmonic step (the phonons at each volume use :class:`PhononSettings`).

    Attributes
    ----------
    n_volumes : int
        Number of volumes, evenly spaced in V from ``(1 - volume_range)·V0`` to ``(1 + volume_range)·V0``
        (V0: the statically relaxed volume). At least 5 (phonopy fits S(V), C_v(V) with quartics).
    volume_range : float
        Half-width of the volume grid as a fraction of V0 (0.05: −5 % … +5 %).
    volume_scales : tuple of float or None
        Explicit volumes as V/V0 (at least 5, ascending); replaces ``n_volumes``/``volume_range``.
    eos : str
        Equation of state of phonopy's fits: "vinet" (default), "birch_murnaghan" or "murnaghan".
    max_imaginary_fraction : float
        Refuse when, at any volume, more than this share of the q-mesh has imaginary modes: F(T) then misses
        those modes and means nothing. Smaller instabilities are reported and kept.
    """

    n_volumes: int = 7
    volume_range: float = 0.05
    volume_scales: tuple[float, ...] | None = None
    eos: str = "vinet"
    max_imaginary_fraction: float = 0.01

    def __post_init__(self):
        n = self.n_volumes
        if isinstance(n, bool) or not _finite(n) or float(n) != int(n) or not MIN_VOLUMES <= int(n) <= MAX_VOLUMES:
            raise InputError(
                f"--volumes (n_volumes) must be an integer from {MIN_VOLUMES} to {MAX_VOLUMES}, got {n!r}",
                fix=f"give --volumes 7 (phonopy's QHA fits S(V) and Cv(V) with quartics: at least {MIN_VOLUMES})",
            )
        object.__setattr__(self, "n_volumes", int(n))
        r = self.volume_range
        if not (_finite(r) and 0.0 < float(r) <= MAX_VOLUME_RANGE):
            raise InputError(
                f"--volume-range (volume_range) must be a fraction of the volume in (0, {MAX_VOLUME_RANGE:g}], got {r!r}",
                fix="give e.g. --volume-range 0.05 (volumes from −5 % to +5 % of the relaxed one)",
            )
        object.__setattr__(self, "volume_range", float(r))
        if self.volume_scales is not None:
            try:
                s = np.asarray(self.volume_scales, dtype=float).ravel()
            except (TypeError, ValueError):
                raise InputError(f"volume scales {self.volume_scales!r} are not numbers",
                                 fix="give volumes as V/V0, e.g. 0.95, 0.975, 1, 1.025, 1.05") from None
            ok = (s.size >= MIN_VOLUMES and np.all(np.isfinite(s)) and np.all(np.diff(s) > 0)
                  and s.min() >= 1 - MAX_VOLUME_RANGE and s.max() <= 1 + MAX_VOLUME_RANGE)
            if not ok:
                raise InputError(
                    f"volume scales {tuple(s.tolist())} must be ≥ {MIN_VOLUMES} ascending values of V/V0 within "
                    f"1 ± {MAX_VOLUME_RANGE:g}",
                    fix="give e.g. 0.95, 0.975, 1, 1.025, 1.05",
                )
            object.__setattr__(self, "volume_scales", tuple(float(x) for x in s))
        if self.eos not in EOS_NAMES:
            raise InputError(f"unknown equation of state {self.eos!r}", fix=f"use one of {', '.join(EOS_NAMES)}")
        f = self.max_imaginary_fraction
        if not (_finite(f) and 0.0 <= float(f) <= 1.0):
            raise InputError(f"max_imaginary_fraction must be a fraction in [0, 1], got {f!r}",
                             fix="give e.g. 0.01 (1 % of the q-mesh)")
        object.__setattr__(self, "max_imaginary_fraction", float(f))

    def scales(self) -> np.ndarray:
        """The volumes as V/V0, shape (nv,)."""
        if self.volume_scales is not None:
            return np.array(self.volume_scales)
        return np.linspace(1.0 - self.volume_range, 1.0 + self.volume_range, self.n_volumes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if self.volume_scales is not None:
            d["volume_scales"] = list(self.volume_scales)
        return d


def _finite(x) -> bool:
    try:
        return bool(np.isfinite(float(x)))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True, eq=False)
class QuasiHarmonic(Result):
    """Quasi-harmonic thermal properties of a crystal (the result of :func:`quasi_harmonic`).

    Per analysed (primitive) cell: volumes in Å³, energies in eV; thermal quantities per mole of that cell
    (``formula_units`` formula units; :meth:`per_formula_unit` divides). Temperature arrays end where the QHA
    stops (see ``truncation``).

    Attributes
    ----------
    structure : Structure
        The statically relaxed crystal (the analysed primitive cell) at V0.
    engine : EngineInfo
    settings : PhononSettings
        The settings of the phonons at each volume (supercell and q-mesh fixed for all volumes).
    qha_settings : QhaSettings
    volumes_a3 : ndarray, shape (nv,), Å³
        Cell volume of each phonon calculation.
    energies_ev : ndarray, shape (nv,), eV
        Static energy of the cell, positions relaxed at that volume.
    temperatures_k : ndarray, shape (nt,), K
    free_energies_kj_per_mol : ndarray, shape (nv, nt), kJ/mol
        Harmonic phonon free energy at each volume (zero-point energy included; without E(V)).
    volume_t_a3 : ndarray, shape (nt,), Å³
        Equilibrium volume at p = 0.
    thermal_expansion_per_k : ndarray, shape (nt,), 1/K
        Volumetric thermal expansion α_V = (1/V) dV/dT (central differences; 0 at the first temperature).
    bulk_modulus_gpa : ndarray, shape (nt,), GPa
        Isothermal bulk modulus of the F(V) fit at V(T).
    gibbs_kj_per_mol : ndarray, shape (nt,), kJ/mol
        G(T, p = 0) = min_V [E(V) + F_ph(V, T)], E included (so G(0) is the static energy plus zero-point energy).
    cp_j_per_k_per_mol : ndarray, shape (nt,), J/K/mol
        C_p = C_v(V(T)) + T (dV/dT) (∂S/∂V)_T (phonopy's polynomial-fit route; 0 at the first temperature).
    cp_numerical_j_per_k_per_mol : ndarray, shape (nt,), J/K/mol
        C_p = −T d²G/dT² (phonopy's numerical route; noisier).
    cv_j_per_k_per_mol : ndarray, shape (nt,), J/K/mol
        C_v interpolated to V(T) (the same degree-4 fit in V that phonopy uses for C_p).
    gruneisen : ndarray, shape (nt,)
        Thermodynamic Grüneisen parameter α_V B V / C_v (0 where C_v vanishes).
    eos_t : ndarray, shape (nt, 4)
        The F(V) fit at each temperature: E0 (eV), B0 (GPa), B0' and V0 (Å³).
    static_eos : dict
        The fit of E(V): ``energy_ev``, ``bulk_modulus_gpa``, ``bulk_modulus_prime``, ``volume_a3``, ``eos``.
    volume_results : tuple of CrystalPhonons
        The phonons at each volume (``atomvib.load`` gives them back with the result).
    requested_temperatures_k : ndarray, shape (nt_requested,), K
        The temperature grid asked for.
    truncation : str
        Where the temperatures end and why (the F(V) minimum leaving the sampled volumes, a failed fit, or only
        the one extra temperature phonopy's finite differences use).
    notes : tuple of str
        Things worth knowing (small instabilities kept, meshes, …).
    relaxation : dict or None
        The static relaxation (cell and positions).
    timings : dict
        Seconds per stage.
    """

    structure: Structure
    engine: EngineInfo
    settings: PhononSettings
    qha_settings: QhaSettings
    volumes_a3: np.ndarray
    energies_ev: np.ndarray
    temperatures_k: np.ndarray
    free_energies_kj_per_mol: np.ndarray
    volume_t_a3: np.ndarray
    thermal_expansion_per_k: np.ndarray
    bulk_modulus_gpa: np.ndarray
    gibbs_kj_per_mol: np.ndarray
    cp_j_per_k_per_mol: np.ndarray
    cp_numerical_j_per_k_per_mol: np.ndarray
    cv_j_per_k_per_mol: np.ndarray
    gruneisen: np.ndarray
    eos_t: np.ndarray
    static_eos: dict
    volume_results: tuple
    requested_temperatures_k: np.ndarray
    truncation: str = ""
    notes: tuple = ()
    relaxation: dict | None = None
    timings: dict = field(default_factory=dict)

    kind = "qha"

    @property
    def primitive(self) -> Structure:
        """The analysed cell (all per-cell values refer to it)."""
        return self.volume_results[len(self.volume_results) // 2].primitive

    @property
    def formula_units(self) -> int:
        return self.primitive.formula_units or 1

    @property
    def t_max_k(self) -> float:
        """The highest temperature with QHA results, K."""
        return float(self.temperatures_k[-1])

    @property
    def is_cubic(self) -> bool:
        m = re.search(r"\((\d+)\)", self.structure.spacegroup(self.settings.symprec))
        return bool(m) and int(m.group(1)) >= 195

    @property
    def linear_thermal_expansion_per_k(self) -> np.ndarray:
        """α_V / 3, shape (nt,), 1/K: the linear thermal expansion of a cubic crystal (isotropic scaling)."""
        if not self.is_cubic:
            raise InputError("the linear thermal expansion α_V/3 holds for cubic crystals only",
                             fix="use thermal_expansion_per_k (volumetric) for this crystal")
        return self.thermal_expansion_per_k / 3.0

    @property
    def static_volume_a3(self) -> float:
        """V0 of the static E(V) fit, Å³ per cell."""
        return float(self.static_eos["volume_a3"])

    def cp_minus_cv_identity_j_per_k_per_mol(self) -> np.ndarray:
        """α_V² B V T (J/K/mol), shape (nt,): what C_p − C_v must equal."""
        v_m3_per_mol = self.volume_t_a3  # Å³ per cell; GPa·Å³ → eV → kJ/mol → J/mol below
        gpa_a3_to_j_per_mol = units.EV_TO_KJ_PER_MOL * 1000.0 / units.EV_PER_A3_TO_GPA
        return (self.thermal_expansion_per_k**2 * self.bulk_modulus_gpa * v_m3_per_mol * self.temperatures_k
                * gpa_a3_to_j_per_mol)

    def at(self, temperature_k: float) -> dict:
        """Values at one temperature (linear interpolation; refused above :attr:`t_max_k`)."""
        t = float(temperature_k)
        if not (self.temperatures_k[0] <= t <= self.t_max_k):
            raise InputError(f"{t:g} K is outside the QHA's temperatures {self.temperatures_k[0]:g}–{self.t_max_k:g} K",
                             fix="ask for a temperature inside the range, or rerun with a larger --volume-range "
                             "(summary.json 'truncation' says why the range ends)")
        f = lambda y: float(np.interp(t, self.temperatures_k, y))  # noqa: E731
        out = {
            "temperature_K": t,
            "volume_A3": f(self.volume_t_a3),
            "thermal_expansion_volumetric_per_K": f(self.thermal_expansion_per_k),
            "bulk_modulus_GPa": f(self.bulk_modulus_gpa),
            "gibbs_energy_kJ_per_mol": f(self.gibbs_kj_per_mol),
            "heat_capacity_p_J_per_K_per_mol": f(self.cp_j_per_k_per_mol),
            "heat_capacity_v_J_per_K_per_mol": f(self.cv_j_per_k_per_mol),
            "gruneisen": f(self.gruneisen),
        }
        if self.is_cubic:
            out["thermal_expansion_linear_per_K"] = out["thermal_expansion_volumetric_per_K"] / 3.0
        return out

    def per_formula_unit(self, values: np.ndarray) -> np.ndarray:
        """A per-cell array (volume, G, C_p, C_v) per formula unit."""
        return np.asarray(values) / self.formula_units

    def instabilities(self) -> list[dict]:
        """The volumes with imaginary modes: index, V/V0, volume, depth (THz), where and how much of the mesh."""
        out = []
        v0 = self.static_volume_a3
        for i, r in enumerate(self.volume_results):
            if r.instability is not None:
                out.append({"index": i, "volume_A3": float(self.volumes_a3[i]),
                            "volume_ratio": float(self.volumes_a3[i] / v0),
                            "min_frequency_thz": r.instability.min_frequency_thz,
                            "fraction_of_mesh": r.instability.fraction_of_mesh,
                            "message": r.instability.describe()})
        return out

    def summary(self) -> dict:
        from ..output import _structure_dict, thermal_bases
        from ..results import provenance

        prim = self.primitive
        t = self.settings.summary_temperature("crystal")
        at = self.at(min(max(t, float(self.temperatures_k[0])), self.t_max_k))
        extensive = {k: at[k] for k in ("temperature_K", "volume_A3", "gibbs_energy_kJ_per_mol",
                                         "heat_capacity_p_J_per_K_per_mol", "heat_capacity_v_J_per_K_per_mol")}
        extensive["cp_minus_cv_J_per_K_per_mol"] = at["heat_capacity_p_J_per_K_per_mol"] - at["heat_capacity_v_J_per_K_per_mol"]
        intensive = {k: v for k, v in at.items() if k not in extensive or k == "temperature_K"}
        v0 = self.static_volume_a3
        return {
            "kind": "qha",
            "engine": self.engine.to_dict(),
            "structure": _structure_dict(prim, self.settings.symprec),
            "formula_units": prim.formula_units,
            "static_eos": {**self.static_eos, "basis": f"per {prim.cell_formula} (the analysed cell)"},
            "volume_0K_A3": float(self.volume_t_a3[0]),
            "zero_point_expansion": float(self.volume_t_a3[0] / v0 - 1.0),
            "volumes": [{"volume_A3": float(v), "volume_ratio": float(v / v0), "energy_eV": float(e),
                         "min_frequency_thz": r.min_frequency_thz, "omega_max_thz": r.omega_max_thz}
                        for v, e, r in zip(self.volumes_a3, self.energies_ev, self.volume_results)],
            "t_max_K": self.t_max_k,
            "truncation": self.truncation,
            "at_temperature": {**intensive, "extensive": thermal_bases(extensive, prim)},
            "instabilities": self.instabilities(),
            "notes": list(self.notes),
            "supercell_matrix": np.asarray(self.volume_results[0].force_constants.supercell_matrix).tolist(),
            "mesh": list(self.volume_results[0].mesh),
            "relaxation": self.relaxation,
            "settings": self.settings.to_dict(),
            "qha_settings": self.qha_settings.to_dict(),
            "timings_s": self.timings,
            "provenance": provenance(),
        }

    def _write_files(self, out) -> None:
        """qha.csv, e-v.csv and qha.png beside the saved result (never read back)."""
        from ..plot_qha import plot_qha

        out = Path(out)
        z = self.formula_units
        cols = {
            "temperature_K": self.temperatures_k,
            "volume_A3": self.volume_t_a3,
            "thermal_expansion_volumetric_per_K": self.thermal_expansion_per_k,
        }
        if self.is_cubic:
            cols["thermal_expansion_linear_per_K"] = self.thermal_expansion_per_k / 3.0
        cols |= {
            "bulk_modulus_GPa": self.bulk_modulus_gpa,
            "gibbs_kJ_per_mol_cell": self.gibbs_kj_per_mol,
            "cp_J_per_K_per_mol_cell": self.cp_j_per_k_per_mol,
            "cv_J_per_K_per_mol_cell": self.cv_j_per_k_per_mol,
            "gibbs_kJ_per_mol_fu": self.gibbs_kj_per_mol / z,
            "cp_J_per_K_per_mol_fu": self.cp_j_per_k_per_mol / z,
            "cv_J_per_K_per_mol_fu": self.cv_j_per_k_per_mol / z,
            "cp_numerical_J_per_K_per_mol_cell": self.cp_numerical_j_per_k_per_mol,
            "gruneisen": self.gruneisen,
        }
        np.savetxt(out / "qha.csv", np.column_stack(list(cols.values())), delimiter=",", header=",".join(cols),
                   comments="", fmt="%.10g")
        v0 = self.static_volume_a3
        ev = {
            "volume_A3": self.volumes_a3,
            "volume_ratio": self.volumes_a3 / v0,
            "energy_eV": self.energies_ev,
            "min_frequency_thz": np.array([r.min_frequency_thz for r in self.volume_results]),
            "omega_max_thz": np.array([r.omega_max_thz for r in self.volume_results]),
        }
        np.savetxt(out / "e-v.csv", np.column_stack(list(ev.values())), delimiter=",", header=",".join(ev),
                   comments="", fmt="%.10g")
        plot_qha(self, out / "qha.png")


# ------------------------------------------------------------------------------------------ the runner
def quasi_harmonic(
    inp,
    engine=None,
    settings: PhononSettings | None = None,
    *,
    volumes: int | tuple | list | None = None,
    volume_range: float | None = None,
    qha_settings: QhaSettings | None = None,
    progress=False,
    checkpoint_dir=None,
    fmt: str | None = None,
    **overrides,
) -> QuasiHarmonic:
    """Quasi-harmonic thermal properties of a crystal.

    Parameters
    ----------
    inp : path, ase.Atoms or Structure
        A crystal (any ASE format).
    engine : str or Engine, optional
        Engine spec (``atomvib engines``) or an engine object; default SevenNet-l3i5. Loaded once, used for every
        volume.
    settings : PhononSettings, optional
        Relaxation and phonon settings (keyword ``overrides`` replace fields, e.g. ``mesh_density=60``). The
        static relaxation follows ``relax``/``relax_cell``; at each volume only the positions relax.
    volumes : int or sequence of float, optional
        Number of volumes (default 7), or the volumes themselves as V/V0 (at least 5, ascending).
    volume_range : float, optional
        Half-width of the volume grid as a fraction of V0 (default 0.05: −5 % … +5 %).
    qha_settings : QhaSettings, optional
        All QHA settings at once (``volumes``/``volume_range`` replace fields of it).
    progress : bool or Progress
        Stage messages on stderr.
    checkpoint_dir : path, optional
        The static relaxation and each volume's relaxation and forces are checkpointed under it (one
        subdirectory per volume): an interrupted run resumes, a re-run with other temperatures or mesh reuses them.
    fmt : str, optional
        ASE format of ``inp`` when its name does not tell.

    Returns
    -------
    QuasiHarmonic
    """
    from ..engines import Engine
    from ..progress import as_progress
    from ..runtime import configure_threads
    from ..workflow import _relax, crystal_and_engine

    configure_threads(blas_only=True)
    progress = as_progress(progress)
    settings = settings or PhononSettings()
    if engine is not None and not isinstance(engine, Engine):
        overrides.setdefault("engine", engine)
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    qs = qha_settings or QhaSettings()
    if isinstance(volumes, (list, tuple, np.ndarray)):
        qs = dataclasses.replace(qs, volume_scales=tuple(volumes))
    elif volumes is not None:
        qs = dataclasses.replace(qs, n_volumes=volumes)
    if volume_range is not None:
        qs = dataclasses.replace(qs, volume_range=volume_range)
    temps = np.asarray(settings.temperatures_k, dtype=float)
    if temps.size < MIN_TEMPERATURES or np.any(np.diff(temps) <= 0):
        raise InputError(f"the QHA needs at least {MIN_TEMPERATURES} ascending temperatures, got {temps.size}",
                         fix="give a grid such as --tmax 1000 --tstep 10")

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    structure, eng = crystal_and_engine(inp, engine, settings, progress, fmt, "the QHA needs a crystal")
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None

    # 1. the static relaxation (cell and positions, symmetry kept): V0
    reference, relaxation = _relax(structure, eng, settings, timings, progress, ckpt)
    timings["static_relax"] = timings.pop("relax", 0.0)
    scales = qs.scales()
    v_ref = abs(float(np.linalg.det(reference.cell)))

    # 2. one supercell and one q-mesh for every volume (an automatic choice could change between volumes and
    # add a step to F(V)): the supercell is chosen on the smallest cell, so every volume meets the minimum width
    cells = [_scaled(reference, s) for s in scales]
    vsettings = dataclasses.replace(settings, relax_cell=False, primitive=False)
    if settings.supercell is None:
        from .displacements import auto_supercell_matrix

        smat = auto_supercell_matrix(cells[0], settings.min_supercell_length_a, settings.symprec)
        vsettings = dataclasses.replace(vsettings, supercell=tuple(int(x) for x in np.ravel(smat)))

    # 3. phonons at each volume (positions relaxed at fixed cell)
    from ..workflow import phonons

    results, energies = [], []
    t0 = time.perf_counter()
    for i, (s, cell) in enumerate(zip(scales, cells)):
        progress.message(f"volume {i + 1}/{len(scales)}: V/V0 = {s:.4f} ({abs(np.linalg.det(cell.cell)):.3f} Å³)")
        # q-mesh density scaled with the reciprocal lattice: the same mesh numbers at every volume
        dens = settings.mesh_density * float(s) ** (1.0 / 3.0)
        dos_dens = (settings.dos_mesh_density or 0.5 * settings.mesh_density) * float(s) ** (1.0 / 3.0)
        vs = dataclasses.replace(vsettings, mesh_density=dens, dos_mesh_density=dos_dens)
        sub = ckpt / f"volume_{i:02d}_{s:.4f}" if ckpt is not None else None
        try:
            r = phonons(cell, engine=eng, settings=vs, checkpoint_dir=sub, progress=progress)
        except AtomvibError as exc:
            raise type(exc)(f"at V/V0 = {s:.4f} (volume {i + 1} of {len(scales)}): {exc.problem}",
                            fix=exc.fix) from None
        results.append(r)
        energies.append(_static_energy(r, eng))
    timings["volumes"] = time.perf_counter() - t0
    volumes_a3 = np.array([abs(float(np.linalg.det(r.primitive.cell))) for r in results])
    energies_ev = np.array(energies)

    # 4. imaginary modes: report them; refuse where F(T) would miss a real share of the modes
    notes: list[str] = []
    bad = []
    for s, r in zip(scales, results):
        inst = r.instability
        if inst is None:
            continue
        if inst.fraction_of_mesh > qs.max_imaginary_fraction:
            bad.append((s, inst))
        else:
            notes.append(f"V/V0 = {s:.4f}: {inst.describe()} (kept: below {100 * qs.max_imaginary_fraction:g} % of "
                         "the mesh)")
    if bad:
        worst_s, worst = min(bad, key=lambda b: b[1].min_frequency_thz)
        where = ", ".join(f"{s:.3f} ({100 * i.fraction_of_mesh:.1f} % of the mesh)" for s, i in bad)
        if len(bad) == len(scales) or any(abs(s - 1.0) < 1e-9 for s, _ in bad):
            fix = ("the crystal is unstable at its own volume with this engine: try another --engine, or check the "
                   "structure with `atomvib phonons`")
        else:
            fix = (f"a smaller --volume-range (now {100 * (scales.min() - 1):+.3g} % … {100 * (scales.max() - 1):+.3g} %)"
                   " that keeps to the stable volumes, or another --engine")
        raise InputError(
            f"imaginary modes make F(T) meaningless at {len(bad)} of {len(scales)} volumes, V/V0 = {where}; deepest "
            f"{worst.min_frequency_thz:.2f} THz{' at ' + worst.label if worst.label else ''} (V/V0 = {worst_s:.3f})",
            fix=fix,
        )

    # 5. thermal properties on one mesh for all volumes
    mesh = results[len(results) // 2].mesh
    thermals = []
    for s, r in zip(scales, results):
        if tuple(r.mesh) != tuple(mesh):
            notes.append(f"V/V0 = {s:.4f}: thermal properties recomputed on the common q-mesh {mesh} (not {r.mesh})")
            thermals.append(_thermal_on_mesh(r, mesh, temps))
        else:
            thermals.append(r.thermal_)
    fe = np.array([th.free_energy_kj_per_mol for th in thermals])  # (nv, nt)
    cv = np.array([th.heat_capacity_j_per_k_per_mol for th in thermals])
    entropy = np.array([th.entropy_j_per_k_per_mol for th in thermals])

    # 6. phonopy's QHA on the temperatures where its fits hold
    t0 = time.perf_counter()
    with progress.stage(f"QHA ({qs.eos} EOS fits over {len(scales)} volumes, {temps.size} temperatures)"):
        out = _run_qha(volumes_a3, energies_ev, temps, fe, cv, entropy, qs.eos)
    timings["qha"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    n = out["temperatures_k"].size
    return QuasiHarmonic(
        structure=reference,
        engine=results[0].engine,
        settings=vsettings,
        qha_settings=qs,
        volumes_a3=volumes_a3,
        energies_ev=energies_ev,
        temperatures_k=out["temperatures_k"],
        free_energies_kj_per_mol=fe[:, :n],
        volume_t_a3=out["volume_t_a3"],
        thermal_expansion_per_k=out["thermal_expansion_per_k"],
        bulk_modulus_gpa=out["bulk_modulus_gpa"],
        gibbs_kj_per_mol=out["gibbs_kj_per_mol"],
        cp_j_per_k_per_mol=out["cp_j_per_k_per_mol"],
        cp_numerical_j_per_k_per_mol=out["cp_numerical_j_per_k_per_mol"],
        cv_j_per_k_per_mol=out["cv_j_per_k_per_mol"],
        gruneisen=out["gruneisen"],
        eos_t=out["eos_t"],
        static_eos=out["static_eos"],
        volume_results=tuple(results),
        requested_temperatures_k=temps,
        truncation=out["truncation"],
        notes=tuple(notes),
        relaxation={**(relaxation or {}), "volume_A3": v_ref} if relaxation is not None else None,
        timings=timings,
    )


def _scaled(structure: Structure, scale: float) -> Structure:
    """``structure`` with its cell and positions scaled isotropically to ``scale`` × its volume."""
    c = float(scale) ** (1.0 / 3.0)
    return structure.with_positions(structure.positions * c, cell=structure.cell * c)


def _static_energy(r, eng) -> float:
    """The static energy (eV) of the analysed cell of ``r``: from its relaxation, or one engine call."""
    if r.relaxation is not None and "energy_eV" in r.relaxation:
        e = float(r.relaxation["energy_eV"])
    else:
        e = float(eng.evaluate([r.structure.to_ase()])[0].energy)
    return e * r.primitive.natoms / r.structure.natoms


def _thermal_on_mesh(r, mesh, temps):
    from .thermal import thermal_from_modes

    ph = r.force_constants.phonopy()
    ph.run_mesh(list(mesh), is_mesh_symmetry=True, is_gamma_center=True)
    return thermal_from_modes(ph.mesh.frequencies, ph.mesh.weights, temps)


def _fit_eos(volumes, energies, eos: str):
    """phonopy's EOS fit: (E0 eV, B0 eV/Å³, B0', V0 Å³), or None where it fails."""
    import warnings

    from phonopy.qha.eos import fit_to_eos, get_eos

    try:
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            p = fit_to_eos(np.asarray(volumes, float), np.asarray(energies, float), get_eos(eos))
    except (RuntimeError, TypeError, ValueError):
        return None
    if p is None or not np.all(np.isfinite(p)) or p[1] <= 0:
        return None
    return np.asarray(p, dtype=float)


def _quiet():
    import contextlib
    import io

    return contextlib.redirect_stdout(io.StringIO())


def _run_qha(volumes, energies_ev, temps, fe, cv, entropy, eos: str) -> dict:
    """phonopy's QHA on the temperatures where the F(V) minimum lies inside the sampled volumes.

    ``fe``, ``cv``, ``entropy``: (nv, nt) per mole of the cell. Returns the arrays of :class:`QuasiHarmonic`
    (nt cut) and the ``truncation`` message.
    """
    from phonopy.qha.core import QHA

    static = _fit_eos(volumes, energies_ev, eos)
    if static is None:
        raise ConvergenceError(f"phonopy's {eos} fit of the static E(V) failed",
                               fix="more --volumes, another --eos, or check the engine's E(V) in e-v.csv")
    static_eos = {"eos": eos, "energy_ev": float(static[0]), "bulk_modulus_gpa": float(static[1] * units.EV_PER_A3_TO_GPA),
                  "bulk_modulus_prime": float(static[2]), "volume_a3": float(static[3])}
    nv, nt = fe.shape
    f_total = energies_ev[:, None] + fe / units.EV_TO_KJ_PER_MOL  # (nv, nt) eV
    # the temperatures phonopy can fit: minimum of F(V) strictly inside the grid, fit converged, V(T) inside
    limit, why = nt - 1, ""
    params = []
    for j in range(nt):
        k = int(np.argmin(f_total[:, j]))
        p = _fit_eos(volumes, f_total[:, j], eos) if 0 < k < nv - 1 else None
        if p is None or not (volumes[0] < p[3] < volumes[-1]):
            limit = j - 1
            if 0 < k < nv - 1:
                why = f"phonopy's {eos} fit of F(V) fails at {temps[j]:g} K"
            else:
                edge = "largest" if k == nv - 1 else "smallest"
                why = (f"above {temps[max(j - 1, 0)]:g} K the minimum of F(V) reaches the {edge} sampled volume "
                       f"({volumes[k]:.3f} Å³, V/V0 = {volumes[k] / static[3]:.3f})")
            break
        params.append(p)
    if limit < MIN_TEMPERATURES - 2:
        raise InputError(
            f"the QHA has fewer than {MIN_TEMPERATURES - 1} usable temperatures: {why or 'the fits fail'}",
            fix="a larger --volume-range (the sampled volumes must bracket the free-energy minimum), or more --volumes",
        )
    # phonopy's finite differences use one temperature beyond the last reported
    use = min(limit + 2, nt)
    while True:
        qha = QHA(volumes, energies_ev, temps[:use], cv[:, :use].T, entropy[:, :use].T, fe[:, :use].T, eos=eos)
        try:
            with _quiet():
                qha.run()
            break
        except (RuntimeError, TypeError, ValueError) as exc:  # a fit phonopy could not do on the extra point
            if use - 1 < MIN_TEMPERATURES - 1:
                raise ConvergenceError(f"phonopy's QHA failed ({exc})",
                                       fix="more --volumes or a larger --volume-range") from None
            use -= 1
    v_t = np.asarray(qha.volume_temperature, dtype=float)
    n = v_t.size
    t_out = temps[:n]
    if limit < nt - 1 or n < limit:
        fix = ("a larger --volume-range (or --volumes with more points on the expanded side) to reach higher "
               "temperatures" if "largest" in why else "more --volumes or a smaller --volume-range")
        truncation = (f"results end at {t_out[-1]:g} K of the requested {temps[-1]:g} K: "
                      f"{why or 'phonopy could not fit beyond'} (fix: {fix})")
    else:
        truncation = (f"results end at {t_out[-1]:g} K: phonopy's finite differences use the next temperature "
                      f"({temps[n]:g} K) too")
    eos_t = np.array(params[:n])
    eos_t[:, 1] *= units.EV_PER_A3_TO_GPA
    # C_v at V(T): the same degree-4 polynomial in V that phonopy's C_p route fits
    cv_t = np.array([np.polyval(np.polyfit(volumes, cv[:, j], min(4, nv - 1)), v_t[j]) for j in range(n)])
    return {
        "temperatures_k": t_out,
        "volume_t_a3": v_t,
        "thermal_expansion_per_k": np.asarray(qha.thermal_expansion, dtype=float),
        "bulk_modulus_gpa": np.asarray(qha.bulk_modulus_temperature, dtype=float),
        "gibbs_kj_per_mol": np.asarray(qha.gibbs_temperature, dtype=float) * units.EV_TO_KJ_PER_MOL,
        "cp_j_per_k_per_mol": np.asarray(qha.heat_capacity_P_polyfit, dtype=float),
        "cp_numerical_j_per_k_per_mol": np.asarray(qha.heat_capacity_P_numerical, dtype=float),
        "cv_j_per_k_per_mol": cv_t,
        "gruneisen": np.asarray(qha.gruneisen_temperature, dtype=float),
        "eos_t": eos_t,
        "static_eos": static_eos,
        "truncation": truncation,
    }


__all__ = ["QuasiHarmonic", "QhaSettings", "quasi_harmonic", "EOS_NAMES"]
