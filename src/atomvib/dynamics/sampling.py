"""Effective phonons at T without MD: self-consistent sampling of the harmonic phonon distribution.

A cheaper alternative to an MD trajectory for the effective force constants of
:mod:`atomvib.dynamics.tdep` (the stochastic self-consistent scheme of sTDEP / QSCAILD: Shulumba, Hellman &
Minnich, Phys. Rev. B 95, 014302 (2017); Roekeghem, Carrete & Mingo, Comput. Phys. Commun. 263, 107945
(2021)). Starting from the engine's 0 K force constants Φ₀, iteration k

1. draws ``n_snapshots`` supercells with the atoms displaced as in the canonical ensemble of the harmonic
   phonons of Φ_k at T (phonopy's ``RandomDisplacements``: quantum ⟨u²⟩ = ħ/(2mω)·coth(ħω/2k_BT) or classical
   k_BT/(mω²); an imaginary mode is sampled with |ω|, each atom's displacement capped at
   ``max_displacement_a``),
2. computes the engine's forces on them (one batched :meth:`Engine.evaluate` call: the fast path, the GPU
   where there is one),
3. fits the symmetry-constrained harmonic force constants to those displacements and forces (symfc through
   phonopy, as for MD — nothing is solved here), and
4. mixes: Φ_{k+1} = α Φ_fit + (1 − α) Φ_k.

It stops when the frequencies of the fit at the supercell's commensurate q-points agree with those of the
force constants that generated the displacements to ``tolerance_thz`` (self-consistency). The same standard
normal numbers are used at every iteration (phonopy's ``standard_normals``), so the iteration converges to a
fixed point instead of wandering with the sampling noise; the noise of that fixed point is the sampling error
of ``n_snapshots`` configurations (run with another ``seed`` to see it).

Why this and not MD: no equilibration and no time correlation, every configuration is independent, and the
quantum distribution (zero-point motion) is available, which classical MD does not have. What it misses: the
sampled distribution is the harmonic one of the current Φ, not the true anharmonic one (a double-well
potential is sampled as a single well of the effective width).

Why our own loop: phonopy gives the random displacements and the fit, hiPhive's ``self_consistent_harmonic_model``
does the same loop but needs its own cluster space and ASE calculators (no batched forces, no symfc); the loop
itself is twenty lines.
"""

from __future__ import annotations

import contextlib
import inspect
import io
from dataclasses import dataclass, fields

import numpy as np

from ..errors import InputError
from ..settings import PhononSettings, _count, _finite, _positive
from .settings import MDSettings
from .tdep import EffectivePhonons, force_residual

STATISTICS = ("quantum", "classical")


@dataclass(frozen=True)
class SamplingSettings:
    """Settings of the self-consistent harmonic sampling (:func:`sampled_phonons`).

    Attributes
    ----------
    n_snapshots : int
        Displaced supercells per iteration (≥ 2).
    max_iterations : int
        Iterations at most (≥ 1); the result of the last one is returned, marked not converged.
    mixing : float
        α in (0, 1]: the share of the new fit in the next force constants.
    tolerance_thz : float
        Converged when the fit's frequencies at the commensurate q-points differ from those of the sampled force
        constants by less than this everywhere, THz.
    statistics : str
        "quantum" (Bose–Einstein amplitudes, zero-point motion included) or "classical" (k_BT/(mω²), as MD).
    max_displacement_a : float
        Cap of one atom's displacement, Å (imaginary or very soft modes would otherwise throw atoms far).
    seed : int
        Seed of the standard normals (the same numbers at every iteration).
    """

    n_snapshots: int = 20
    max_iterations: int = 12
    mixing: float = 0.5
    tolerance_thz: float = 0.05
    statistics: str = "quantum"
    max_displacement_a: float = 0.5
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "n_snapshots", _count(
            "n_snapshots", self.n_snapshots, 2, "--snapshots", "at least 2 configurations per iteration, e.g. 20"))
        object.__setattr__(self, "max_iterations", _count(
            "max_iterations", self.max_iterations, 1, "--iterations", "a number of iterations such as 12"))
        a = self.mixing
        if not (_finite(a) and 0 < float(a) <= 1):
            raise InputError(f"--mixing must be in (0, 1], got {a!r}", fix="give e.g. --mixing 0.5")
        object.__setattr__(self, "mixing", float(a))
        _positive("tolerance_thz", self.tolerance_thz, "--tolerance", "a frequency such as 0.05 THz")
        _positive("max_displacement_a", self.max_displacement_a, "--max-displacement", "a distance such as 0.5 Å")
        st = str(self.statistics).lower()
        if st not in STATISTICS:
            raise InputError(f"unknown statistics {self.statistics!r}", fix="use quantum or classical (--statistics)")
        object.__setattr__(self, "statistics", st)
        object.__setattr__(self, "seed", _count("seed", self.seed, 0, "--seed", "an integer ≥ 0"))

    def to_dict(self) -> dict:
        import dataclasses

        return dataclasses.asdict(self)


def commensurate_qpoints(ph) -> np.ndarray:
    """The q-points commensurate with the supercell of phonopy object ``ph``: shape (n_cells, 3), reduced
    coordinates of the primitive cell's reciprocal lattice (what ``run_qpoints`` takes)."""
    from phonopy.harmonic.dynmat_to_fc import get_commensurate_points

    smat_p = np.rint(np.linalg.inv(ph.primitive_matrix) @ ph.supercell_matrix).astype(int)
    return np.asarray(get_commensurate_points(smat_p), dtype=float)


def _frequencies(ph, fc, qpoints) -> np.ndarray:
    """Frequencies (THz, imaginary negative) of force constants ``fc`` at ``qpoints``: shape (nq, 3·n_prim)."""
    ph.force_constants = fc
    ph.run_qpoints(qpoints)
    return qpoint_solution(ph)[0]


def qpoint_solution(ph) -> tuple[np.ndarray, np.ndarray | None]:
    """(frequencies (nq, nbands) THz, eigenvectors (nq, 3·n_prim, nbands) or None) of ``ph.run_qpoints``:
    phonopy ≥ 4.10 holds them on ``ph.qpoints``, earlier versions in ``get_qpoints_dict()``."""
    res = getattr(ph, "qpoints", None)
    if res is not None and hasattr(res, "frequencies"):
        return np.asarray(res.frequencies, dtype=float), getattr(res, "eigenvectors", None)
    d = ph.get_qpoints_dict()
    return np.asarray(d["frequencies"], dtype=float), d.get("eigenvectors")


def _to_full(ph, fc) -> np.ndarray:
    from phonopy.harmonic.force_constants import compact_fc_to_full_fc

    fc = np.asarray(fc, dtype=float)
    return compact_fc_to_full_fc(ph.primitive, fc) if fc.shape[0] != fc.shape[1] else fc


def sampled_phonons(
    inp,
    engine=None,
    settings: MDSettings | None = None,
    sampling: SamplingSettings | None = None,
    *,
    phonon_settings: PhononSettings | None = None,
    harmonic=None,
    checkpoint_dir=None,
    progress=False,
    fmt: str | None = None,
) -> EffectivePhonons:
    """Effective phonons at ``settings.temperature_k`` by self-consistent harmonic sampling.

    Parameters
    ----------
    inp : path, ase.Atoms or Structure
        The crystal; relaxed and repeated as for :func:`~atomvib.dynamics.md.run_md` (same supercell).
    engine : str or Engine, optional
        Force engine (default: ``settings.engine`` or the crystal default).
    settings : MDSettings, optional
        Temperature, engine, relaxation and supercell (the MD-only fields are not used).
    sampling : SamplingSettings, optional
        Snapshots, iterations, mixing, tolerance, statistics.
    phonon_settings : PhononSettings, optional
        Analysis of the result (mesh, DOS, temperatures).
    harmonic : CrystalPhonons, optional
        The engine's 0 K phonons in the same supercell (computed here when not given).
    checkpoint_dir : path, optional
        Where the relaxation and the 0 K displacement forces are kept (as for ``atomvib phonons``).

    Returns
    -------
    EffectivePhonons
        With ``method = "harmonic sampling"`` and the per-iteration ``convergence`` report.
    """
    from phonopy.phonon.random_displacements import RandomDisplacements

    import atomvib

    from ..harmonic.crystal import CrystalPhonons, analyse_crystal
    from ..harmonic.force_constants import ForceConstants
    from ..progress import as_progress
    from .md import prepare_cell

    settings = settings or MDSettings()
    sampling = sampling or SamplingSettings()
    progress = as_progress(progress)
    eng, cell, unitcell, smat, relaxation = prepare_cell(inp, engine, settings, checkpoint_dir=checkpoint_dir,
                                                         progress=progress, fmt=fmt)
    if unitcell is None:
        raise InputError("harmonic sampling is for crystals (periodic cells)",
                         fix="run MD (atomvib md without --sampling) for a molecule")
    ps = phonon_settings or PhononSettings(symprec=settings.symprec, primitive=False)
    if harmonic is None:
        progress.message("0 K phonons of the same engine and supercell (the starting point)")
        harmonic = atomvib.phonons(unitcell, engine=eng, relax=False, primitive=False,
                                   supercell=tuple(int(x) for x in smat.ravel()), symprec=settings.symprec,
                                   mesh_density=ps.mesh_density, checkpoint_dir=checkpoint_dir, progress=progress)
    fc0 = harmonic.force_constants
    ph = fc0.phonopy()
    notes = []
    if harmonic.has_imaginary:
        notes.append("the 0 K phonons are unstable: the sampling draws the unstable modes with |ω| and finds a "
                     "self-consistent solution near that start, which does not tell whether the high-symmetry phase "
                     "is stable at T (the double well is sampled as one harmonic well); use MD (--tdep) for that")
    fc_cur = _to_full(ph, fc0.force_constants)
    sc = ph.supercell
    pos0 = np.asarray(sc.positions, dtype=float)
    masses = np.asarray(sc.masses, dtype=float)
    qpts = commensurate_qpoints(ph)
    T = settings.temperature_k
    normals = None
    reuse_normals = "standard_normals" in inspect.signature(RandomDisplacements.run).parameters
    report: list[dict] = []
    fit_full = fc_cur
    u = f = None
    converged = False
    with progress.stage(f"self-consistent sampling at {T:g} K ({sampling.statistics}, {sampling.n_snapshots} "
                        f"snapshots of {len(masses)} atoms per iteration)"):
        for it in range(1, sampling.max_iterations + 1):
            rd = RandomDisplacements(sc, ph.primitive, fc_cur, dist_func=sampling.statistics,
                                     max_distance=sampling.max_displacement_a)
            if reuse_normals:
                rd.run(T, number_of_snapshots=sampling.n_snapshots, random_seed=sampling.seed,
                       standard_normals=normals)
                normals = rd.standard_normals
            else:  # phonopy < 4.5: the same seed, which draws the same normals
                rd.run(T, number_of_snapshots=sampling.n_snapshots, random_seed=sampling.seed)
            u = np.asarray(rd.u, dtype=float)
            u = u - (np.einsum("i,fij->fj", masses, u) / masses.sum())[:, None, :]
            atoms = []
            for k in range(len(u)):
                a = cell.to_ase()
                a.positions = pos0 + u[k]
                atoms.append(a)
            ev = eng.evaluate(atoms)
            f = np.stack([e.forces for e in ev])
            f = f - f.mean(axis=1, keepdims=True)
            ph.dataset = {"displacements": u, "forces": f}
            with contextlib.redirect_stdout(io.StringIO()):
                ph.produce_force_constants(calculate_full_force_constants=True, fc_calculator="symfc",
                                           show_drift=False)
            fit_full = np.array(ph.force_constants, dtype=float)
            resid = force_residual(ph, u, f)
            w_in = _frequencies(ph, fc_cur, qpts)
            w_fit = _frequencies(ph, fit_full, qpts)
            dw = np.abs(w_fit - w_in)
            row = {"iteration": it, "max_abs_dfreq_thz": float(dw.max()), "rms_dfreq_thz": float(np.sqrt(np.mean(dw ** 2))),
                   "min_freq_thz": float(w_fit.min()), "max_freq_thz": float(w_fit.max()),
                   "n_imaginary": int(np.sum(w_fit < -1e-2)), "force_residual": resid,
                   "displacement_rms_a": float(np.sqrt(np.mean(np.sum(u * u, axis=2))))}
            report.append(row)
            progress.message(f"iteration {it}: max |Δω| {row['max_abs_dfreq_thz']:.3f} THz, lowest "
                             f"{row['min_freq_thz']:.3f} THz, force residual {100 * resid:.1f} %")
            if row["max_abs_dfreq_thz"] < sampling.tolerance_thz:
                converged = True
                break
            fc_cur = sampling.mixing * fit_full + (1 - sampling.mixing) * fc_cur
    ph.force_constants = fit_full
    fc = ForceConstants.from_phonopy(ph)
    with progress.stage("analysing (mesh, DOS, band path, thermal)"):
        base = analyse_crystal(fc, ps, structure=fc0.unitcell, engine=harmonic.engine,
                               n_displacements=len(report) * sampling.n_snapshots, relaxation=relaxation)
    return EffectivePhonons(
        **{fl.name: getattr(base, fl.name) for fl in fields(CrystalPhonons) if fl.init},
        temperature_k=float(T), target_temperature_k=float(T), n_frames=int(len(u)),
        force_residual=report[-1]["force_residual"], displacement_rms_a=report[-1]["displacement_rms_a"],
        trajectory="", method="harmonic sampling",
        sampling={"settings": sampling.to_dict(), "converged": converged, "iterations": tuple(report),
                  "notes": tuple(notes)},
    )
