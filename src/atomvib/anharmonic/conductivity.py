"""Lattice thermal conductivity from fc2 and fc3: phono3py's solvers, atomvib's result.

:func:`conductivity` runs phono3py (RTA, direct LBTE, or the Wigner formulation's coherences on top of RTA) on
:class:`~atomvib.anharmonic.force_constants3.AnharmonicForceConstants` and returns a frozen
:class:`ThermalConductivity`: κ(T) and every per-mode quantity phono3py computes, with the derived ones a user
plots (lifetimes, mean free paths, cumulative κ, Grüneisen parameters). Before any scattering rate is computed
the harmonic part is checked: imaginary modes make κ undefined (phono3py would silently drop those modes), so
they are refused unless asked for; an LBTE collision matrix that would not fit in memory is refused with the
mesh that would.

Units: κ in W/(m·K), Voigt order xx, yy, zz, yz, xz, xy; frequencies THz; Γ (phono3py's imaginary part of the
self-energy, half width at half maximum) THz; group velocities THz·Å (= 100 m/s); mode heat capacities eV/K;
lifetimes ps (τ = 1/(4πΓ)); mean free paths Å.

phono3py writes its kappa-m*.hdf5 only into the working directory; atomvib writes the same datasets itself
(:meth:`ThermalConductivity._write_files`) so that nothing depends on, or lands in, the directory it runs from.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, ResourceError, UnstableError
from ..results import Result
from ..settings import KappaSettings
from .force_constants3 import AnharmonicForceConstants

VOIGT = ("xx", "yy", "zz", "yz", "xz", "xy")


@dataclass(frozen=True, eq=False)
class ThermalConductivity(Result):
    """Lattice thermal conductivity of a crystal and the phonon quantities behind it.

    Attributes
    ----------
    force_constants : AnharmonicForceConstants
    settings : KappaSettings
    mesh : tuple of 3 ints
    temperatures_k : ndarray, shape (nT,), K
    kappa_w_per_mk : ndarray, shape (nT, 6), W/(m·K)
        κ tensor (Voigt order); for "wigner" the total κ_P + κ_C.
    kappa_coherent_w_per_mk : ndarray, shape (nT, 6), or None
        "wigner": the coherences' part κ_C.
    kappa_rta_w_per_mk : ndarray, shape (nT, 6), or None
        "lbte": the RTA solution of the same calculation.
    qpoints : ndarray, shape (nq, 3)
        Irreducible q-points (reduced coordinates of the primitive reciprocal lattice).
    weights : ndarray, shape (nq,), int
        Their multiplicities (sum: the number of mesh points).
    frequencies_thz : ndarray, shape (nq, nb), THz
    group_velocities_thz_a : ndarray, shape (nq, nb, 3), THz·Å
    gamma_thz : ndarray, shape (nT, nq, nb), THz
        Imaginary part of the phonon self-energy (half width at half maximum).
    mode_heat_capacities_ev_per_k : ndarray, shape (nT, nq, nb), eV/K
    mode_kappa_w_per_mk : ndarray, shape (nT, nq, nb, 6), W/(m·K)
        Mode contributions: κ = Σ over q-points and bands / (number of mesh points) ("wigner": of κ_P, the
        populations' part).
    gruneisen : ndarray, shape (nq, nb), or None
        Mode Grüneisen parameters (None where fc2 has its own supercell).
    n_ignored_modes : ndarray, shape (nT,), int
        Modes phono3py left out (frequency below its cutoff: acoustic at Γ, imaginary ones); −1 where the
        method does not count them (LBTE).
    structure : Structure
    engine : EngineInfo
    relaxation : dict or None
    n_displacements : int
        Supercells whose forces made fc3 (and fc2).
    timings : dict
    gamma_isotope_thz : ndarray, shape (nq, nb), THz, or None
        Isotope scattering rate (``settings.isotope``), added to ``gamma_thz`` in the lifetimes.
    """

    force_constants: AnharmonicForceConstants
    settings: KappaSettings
    mesh: tuple
    temperatures_k: np.ndarray
    kappa_w_per_mk: np.ndarray
    kappa_coherent_w_per_mk: np.ndarray | None
    kappa_rta_w_per_mk: np.ndarray | None
    qpoints: np.ndarray
    weights: np.ndarray
    frequencies_thz: np.ndarray
    group_velocities_thz_a: np.ndarray
    gamma_thz: np.ndarray
    mode_heat_capacities_ev_per_k: np.ndarray
    mode_kappa_w_per_mk: np.ndarray
    gruneisen: np.ndarray | None
    n_ignored_modes: np.ndarray
    structure: object
    engine: object
    relaxation: dict | None = None
    n_displacements: int = 0
    timings: dict = field(default_factory=dict)
    gamma_isotope_thz: np.ndarray | None = None

    kind = "kappa"

    # ----------------------------------------------------------------------------- derived
    @property
    def method(self) -> str:
        return self.settings.method

    @property
    def kappa_average_w_per_mk(self) -> np.ndarray:
        """(κ_xx + κ_yy + κ_zz)/3, shape (nT,), W/(m·K)."""
        return self.kappa_w_per_mk[:, :3].mean(axis=1)

    @property
    def n_mesh_points(self) -> int:
        return int(np.sum(self.weights))

    def _t_index(self, temperature_k: float) -> int:
        i = int(np.argmin(np.abs(self.temperatures_k - temperature_k)))
        if abs(self.temperatures_k[i] - temperature_k) > 1e-6:
            raise InputError(f"{temperature_k:g} K is not on this result's temperature grid",
                             fix=f"use one of {', '.join(f'{t:g}' for t in self.temperatures_k)} K, or recompute")
        return i

    def kappa_at(self, temperature_k: float = 300.0) -> np.ndarray:
        """κ tensor (6,) W/(m·K) at a temperature of the grid."""
        return self.kappa_w_per_mk[self._t_index(temperature_k)]

    @property
    def gamma_total_thz(self) -> np.ndarray:
        """Γ of every scattering process included (phonon–phonon, isotopes), shape (nT, nq, nb), THz."""
        if self.gamma_isotope_thz is None:
            return self.gamma_thz
        return self.gamma_thz + self.gamma_isotope_thz[None]

    @property
    def lifetimes_ps(self) -> np.ndarray:
        """Phonon lifetimes τ = 1/(4πΓ) with every scattering process included, shape (nT, nq, nb), ps (inf where
        Γ = 0)."""
        g = self.gamma_total_thz
        with np.errstate(divide="ignore"):
            return np.where(g > 0, 1.0 / (4.0 * np.pi * np.where(g > 0, g, 1.0)), np.inf)

    @property
    def linewidths_thz(self) -> np.ndarray:
        """Full width at half maximum 2Γ (every scattering process included), shape (nT, nq, nb), THz."""
        return 2.0 * self.gamma_total_thz

    @property
    def mean_free_paths_a(self) -> np.ndarray:
        """|v|·τ, shape (nT, nq, nb), Å."""
        speed = np.linalg.norm(self.group_velocities_thz_a, axis=-1)  # THz·Å; × ps → Å
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(self.lifetimes_ps), speed[None] * self.lifetimes_ps, np.inf)

    def mode_kappa_average(self, temperature_k: float = 300.0) -> np.ndarray:
        """Each mode's share of the trace-average κ, shape (nq, nb), W/(m·K) (sums to κ_avg)."""
        mk = self.mode_kappa_w_per_mk[self._t_index(temperature_k)]
        return mk[..., :3].mean(axis=-1) / self.n_mesh_points

    def cumulative_kappa(self, by: str = "frequency", temperature_k: float = 300.0):
        """(x, cumulative κ_avg) sorted by mode frequency (THz) or mean free path (Å): arrays (nq·nb,)."""
        contrib = self.mode_kappa_average(temperature_k).ravel()
        if by == "frequency":
            x = self.frequencies_thz.ravel()
        elif by in ("mfp", "mean_free_path"):
            x = self.mean_free_paths_a[self._t_index(temperature_k)].ravel()
        else:
            raise InputError(f"cumulative κ by {by!r}", fix="use 'frequency' or 'mfp'")
        keep = np.isfinite(x)
        order = np.argsort(x[keep])
        return x[keep][order], np.cumsum(contrib[keep][order])

    @property
    def has_negative_linewidths(self) -> bool:
        return bool(np.any(self.gamma_thz < -1e-8))

    # ----------------------------------------------------------------------------- output
    def summary(self) -> dict:
        t = 300.0 if np.any(np.isclose(self.temperatures_k, 300.0)) else float(self.temperatures_k[0])
        k = self.kappa_at(t)
        s = self.structure
        out = {
            "kind": "kappa",
            "engine": self.engine.to_dict() if hasattr(self.engine, "to_dict") else self.engine,
            "structure": {"formula": s.formula, "cell_formula": s.cell_formula, "natoms": s.natoms,
                          "spacegroup": s.spacegroup(), "source": s.source},
            "method": self.method,
            "mesh": list(self.mesh),
            "fc3_supercell_matrix": np.asarray(self.force_constants.supercell_matrix).tolist(),
            "fc2_supercell_matrix": np.asarray(self.force_constants.phonon_supercell_matrix
                                               if self.force_constants.phonon_supercell_matrix is not None
                                               else self.force_constants.supercell_matrix).tolist(),
            "n_displacements": self.n_displacements,
            "nac": self.force_constants.nac is not None,
            "temperature_K": t,
            "kappa_W_per_mK": {c: float(v) for c, v in zip(VOIGT, k)},
            "kappa_average_W_per_mK": float(np.mean(k[:3])),
            "kappa_vs_T": {"temperatures_K": self.temperatures_k.tolist(),
                           "average": self.kappa_average_w_per_mk.tolist()},
            "n_ignored_modes": self.n_ignored_modes.tolist(),
            "negative_linewidths": self.has_negative_linewidths,
            "settings": self.settings.to_dict(),
            "relaxation": self.relaxation,
            "timings_s": dict(self.timings),
        }
        if self.kappa_coherent_w_per_mk is not None:
            out["kappa_coherent_W_per_mK"] = {c: float(v) for c, v in
                                              zip(VOIGT, self.kappa_coherent_w_per_mk[self._t_index(t)])}
        if self.kappa_rta_w_per_mk is not None:
            out["kappa_rta_W_per_mK"] = {c: float(v) for c, v in zip(VOIGT, self.kappa_rta_w_per_mk[self._t_index(t)])}
        return out

    def _write_files(self, out) -> None:
        import json

        cols = [self.temperatures_k[:, None], self.kappa_w_per_mk, self.kappa_average_w_per_mk[:, None]]
        names = ["temperature_K", *(f"kappa_{c}_W_per_mK" for c in VOIGT), "kappa_average_W_per_mK"]
        if self.kappa_coherent_w_per_mk is not None:
            cols.append(self.kappa_coherent_w_per_mk)
            names += [f"kappa_coherent_{c}_W_per_mK" for c in VOIGT]
        if self.kappa_rta_w_per_mk is not None:
            cols.append(self.kappa_rta_w_per_mk)
            names += [f"kappa_rta_{c}_W_per_mK" for c in VOIGT]
        np.savetxt(out / "kappa.csv", np.hstack(cols), delimiter=",", header=",".join(names), comments="", fmt="%.8g")
        table = {"units": "W/(m K)", "method": self.method, "mesh": list(self.mesh), "components": list(VOIGT),
                 "temperatures_K": self.temperatures_k.tolist(), "kappa": self.kappa_w_per_mk.tolist(),
                 "kappa_average": self.kappa_average_w_per_mk.tolist()}
        (out / "kappa.json").write_text(json.dumps(table, indent=1))
        # one name whatever the mesh (phono3py's is kappa-mNNN.hdf5): a re-run never leaves a stale file beside
        self.write_hdf5(out / "kappa-phono3py.hdf5")

    def write_hdf5(self, path) -> None:
        """phono3py's kappa-m*.hdf5 datasets (what ``phono3py-kaccum`` and users' scripts read)."""
        import h5py

        with h5py.File(path, "w") as w:
            w.create_dataset("temperature", data=self.temperatures_k)
            w.create_dataset("mesh", data=np.asarray(self.mesh, dtype="intc"))
            w.create_dataset("frequency", data=self.frequencies_thz, compression="gzip")
            w.create_dataset("group_velocity", data=self.group_velocities_thz_a, compression="gzip")
            gvgv = np.einsum("qbi,qbj->qbij", self.group_velocities_thz_a, self.group_velocities_thz_a)
            idx = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
            w.create_dataset("gv_by_gv", data=np.stack([gvgv[..., i, j] for i, j in idx], axis=-1),
                             compression="gzip")
            w.create_dataset("heat_capacity", data=self.mode_heat_capacities_ev_per_k, compression="gzip")
            w.create_dataset("kappa", data=self.kappa_w_per_mk)
            w.create_dataset("mode_kappa", data=self.mode_kappa_w_per_mk, compression="gzip")
            w.create_dataset("gamma", data=self.gamma_thz, compression="gzip")
            if self.gamma_isotope_thz is not None:
                w.create_dataset("gamma_isotope", data=self.gamma_isotope_thz, compression="gzip")
            w.create_dataset("qpoint", data=self.qpoints)
            w.create_dataset("weight", data=np.asarray(self.weights, dtype="intc"))
            mfp = self.mean_free_paths_a
            w.create_dataset("mean_free_path", data=np.where(np.isfinite(mfp), mfp, 0.0), compression="gzip")
            if self.kappa_rta_w_per_mk is not None:
                w.create_dataset("kappa_RTA", data=self.kappa_rta_w_per_mk)
            if self.kappa_coherent_w_per_mk is not None:
                w.create_dataset("kappa_C", data=self.kappa_coherent_w_per_mk)
            if self.gruneisen is not None:
                w.create_dataset("gruneisen", data=self.gruneisen)


# --------------------------------------------------------------------------------- the calculation
def mesh_from_density(fc: AnharmonicForceConstants, density_a: float) -> tuple[int, int, int]:
    """phonopy's length convention on the primitive cell: ``n_i = max(1, round(length·|b_i|))``."""
    ph3 = fc.phono3py()
    rec = np.linalg.inv(np.asarray(ph3.primitive.cell, float)).T  # rows b_i without 2π
    return tuple(int(max(1, round(density_a * np.linalg.norm(b)))) for b in rec)


def collision_matrix_bytes(ph3, n_temperatures: int) -> int:
    """Memory (bytes) of phono3py's irreducible LBTE collision matrix: n_T × (n_ir·n_bands·3)² doubles."""
    from phonopy.phonon.grid import get_ir_grid_points

    n_ir = len(get_ir_grid_points(ph3.grid)[0])
    nb = 3 * len(ph3.primitive)
    return int(n_temperatures) * (n_ir * nb * 3) ** 2 * 8


def available_memory_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (None where it cannot be read)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _check_lbte_memory(ph3, settings: KappaSettings, mesh) -> None:
    limit = settings.max_memory_gb * 1e9 if settings.max_memory_gb is not None else None
    if limit is None:
        avail = available_memory_bytes()
        limit = 0.8 * avail if avail else None
    if limit is None:
        return
    need = 2 * collision_matrix_bytes(ph3, len(settings.temperatures_k))  # the matrix and its solver's copy
    if need <= limit:
        return
    m = np.asarray(mesh)
    fits = None
    for f in np.linspace(0.95, 0.2, 16):
        trial = tuple(int(x) for x in np.maximum(1, np.round(m * f)))
        ph3.mesh_numbers = trial  # only the grid is looked at; the caller's mesh is set back below
        if 2 * collision_matrix_bytes(ph3, len(settings.temperatures_k)) <= limit:
            fits = trial
            break
    ph3.mesh_numbers = mesh
    raise ResourceError(
        f"LBTE on the {'x'.join(map(str, mesh))} mesh needs {need / 1e9:.1f} GB for its collision matrix "
        f"({len(settings.temperatures_k)} temperatures), more than the {limit / 1e9:.1f} GB allowed",
        fix=(f"use --mesh {' '.join(map(str, fits))}" if fits else "use a coarser --mesh")
        + ", fewer --temperatures, --method rta, or raise --max-memory",
    )


def harmonic_check(ph3, settings: KappaSettings, tol_thz: float = 0.1) -> float:
    """Lowest harmonic frequency (THz) on the whole mesh; raises :class:`UnstableError` below ``−tol``
    unless ``settings.allow_imaginary``."""
    ph3.run_phonon_solver()
    freqs = ph3.get_phonon_data()[0]
    fmin = float(np.min(freqs))
    if fmin < -tol_thz and not settings.allow_imaginary:
        n = int(np.sum(np.any(freqs < -tol_thz, axis=1)))
        raise UnstableError(
            f"the harmonic phonons have imaginary modes (lowest {fmin:.2f} THz, at {n} of {len(freqs)} q-points of the "
            "mesh): κ is not defined for a dynamically unstable crystal",
            fix="check the structure and its relaxation (atomvib phonons shows where), try another --engine, "
            "or --allow-imaginary to compute κ with those modes left out",
        )
    return fmin


def conductivity(fc: AnharmonicForceConstants, settings: KappaSettings | None = None, *, engine=None,
                 structure=None, relaxation=None, n_displacements: int = 0, timings=None,
                 progress=False) -> ThermalConductivity:
    """κ(T) of the crystal of ``fc`` with phono3py (``settings.method``: rta, lbte or wigner)."""
    from ..progress import as_progress

    settings = settings or KappaSettings()
    progress = as_progress(progress)
    timings = dict(timings or {})
    mesh = settings.mesh or mesh_from_density(fc, settings.mesh_density)
    ph3 = fc.phono3py()
    ph3.mesh_numbers = mesh
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with progress.stage(f"phonons on the {'x'.join(map(str, mesh))} mesh, harmonic check"):
            ph3.init_phph_interaction()
            fmin = harmonic_check(ph3, settings)
        if fmin < -0.1:
            progress.message(f"imaginary modes down to {fmin:.2f} THz: phono3py leaves them out (--allow-imaginary)")
        if settings.method == "lbte":
            _check_lbte_memory(ph3, settings, mesh)
        kw = {}
        if settings.isotope:
            kw["is_isotope"] = True
        if settings.boundary_mfp_um is not None:
            kw["boundary_mfp"] = settings.boundary_mfp_um
        if settings.method == "wigner":
            kw["transport_type"] = "smm19"
        with progress.stage(f"phonon-phonon scattering and κ ({settings.method.upper()}, "
                            f"{len(settings.temperatures_k)} temperatures)"):
            ph3.run_thermal_conductivity(is_LBTE=settings.method == "lbte",
                                         temperatures=np.asarray(settings.temperatures_k, float), **kw)
    timings["kappa"] = time.perf_counter() - t0
    tc = ph3.thermal_conductivity
    kappa = np.array(tc.kappa[0], float)
    coherent = rta = None
    extra = tc.get_extra_kappa_output() if hasattr(tc, "get_extra_kappa_output") else None
    if settings.method == "wigner" and extra and "kappa_inter" in extra:
        coherent = np.array(extra["kappa_inter"][0], float)
    if settings.method == "lbte" and getattr(tc, "kappa_RTA", None) is not None:
        rta = np.array(tc.kappa_RTA[0], float)
    nq = len(tc.qpoints)
    if getattr(tc, "mode_kappa", None) is not None:
        mode_kappa = np.array(tc.mode_kappa[0], float)
    else:  # Wigner: the band-pair matrix; its diagonal is the populations' (κ_P) mode contributions
        mm = np.array(tc.mode_kappa_matrix[0], float)
        nb = mm.shape[2]
        mode_kappa = mm[:, :, np.arange(nb), np.arange(nb), :]
    if settings.method == "lbte":
        mode_kappa = mode_kappa[:, :nq]
    gamma = np.array(tc.gamma[0], float)[:, :nq]
    gi = getattr(tc, "gamma_isotope", None) if settings.isotope else None
    gamma_iso = np.array(gi[0], float)[:nq] if gi is not None else None
    ign = getattr(tc, "number_of_ignored_phonon_modes", None)  # RTA only
    ignored = (np.array(ign[0], dtype=np.int64) if ign is not None
               else np.full(len(settings.temperatures_k), -1, dtype=np.int64))
    t0 = time.perf_counter()
    grun = _gruneisen(fc, ph3, np.asarray(tc.qpoints))
    timings["gruneisen"] = time.perf_counter() - t0
    if structure is None:
        structure = fc.unitcell
    if engine is None:
        from ..engines.base import EngineInfo

        engine = EngineInfo(name="unknown", version="")
    return ThermalConductivity(
        force_constants=fc, settings=settings, mesh=tuple(int(x) for x in mesh),
        temperatures_k=np.array(settings.temperatures_k, float), kappa_w_per_mk=kappa,
        kappa_coherent_w_per_mk=coherent, kappa_rta_w_per_mk=rta, qpoints=np.array(tc.qpoints, float),
        weights=np.array(tc.grid_weights, dtype=np.int64), frequencies_thz=np.array(tc.frequencies, float),
        group_velocities_thz_a=np.array(tc.group_velocities, float), gamma_thz=gamma,
        mode_heat_capacities_ev_per_k=np.array(tc.mode_heat_capacities, float), mode_kappa_w_per_mk=mode_kappa,
        gruneisen=grun, n_ignored_modes=ignored,
        structure=structure, engine=engine, relaxation=relaxation, n_displacements=int(n_displacements),
        timings=timings, gamma_isotope_thz=gamma_iso,
    )  # fmt: skip


def _gruneisen(fc: AnharmonicForceConstants, ph3, qpoints) -> np.ndarray | None:
    """Mode Grüneisen parameters at ``qpoints`` from fc2 and fc3 (phono3py's Gruneisen); None where fc2 has its
    own supercell (phono3py's formula needs both on one)."""
    if fc.phonon_supercell_matrix is not None:
        return None
    from phono3py.phonon3.gruneisen import Gruneisen

    # exactly at Γ the acoustic γ are 0/0; phono3py returns NaN or large numbers there: shift Γ off by 1e-5
    q = np.array(qpoints, float)
    at_gamma = np.all(np.abs(q) < 1e-12, axis=1)
    q[at_gamma] = 1e-5
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            g = Gruneisen(np.asarray(ph3.fc2), np.asarray(ph3.fc3), ph3.supercell, ph3.primitive,
                          nac_params=ph3.nac_params, symprec=ph3.symmetry.tolerance)
            g.set_qpoints(q)
            g.run()
            gamma = np.array(g.gruneisen_parameters, float)
    except Exception:  # noqa: BLE001 — an optional output: κ stands without it
        return None
    if gamma.ndim == 4:  # phono3py gives the Grüneisen tensor of each mode, (nq, nb, 3, 3): its mean trace
        gamma = np.trace(gamma, axis1=-2, axis2=-1) / 3.0
    gamma = gamma.reshape(len(q), -1)
    gamma[at_gamma, :3] = np.nan  # acoustic modes at Γ: undefined
    return gamma


__all__ = ["ThermalConductivity", "conductivity", "mesh_from_density", "UnstableError", "VOIGT"]
