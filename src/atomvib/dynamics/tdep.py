"""Temperature-dependent effective harmonic force constants from an MD trajectory (TDEP-style).

The harmonic force constants Φ that best reproduce the forces the engine gave along an MD trajectory,

    min_Φ Σ_t Σ_i |F_i(t) + Σ_j Φ_ij u_j(t)|²,   u(t) = x(t) − x_ref  (minimum image),

within the space of force constants that obey the crystal's symmetry, the permutation symmetry and the
acoustic sum rule, are the effective (renormalised) force constants at the trajectory's temperature
(Hellman, Abrikosov & Simak, Phys. Rev. B 84, 180301 (2011)). The fit is symfc's (through phonopy's
``fc_calculator="symfc"``: symfc builds the symmetry-adapted basis and solves the least squares; nothing is
solved here). The reference positions are the ideal sites of the crystal, in the trajectory's mean cell (for
NPT runs: the thermally expanded lattice); the displacements and forces of each frame have their mean (the
centre-of-mass drift, the net force) removed.

The result, :class:`EffectivePhonons`, *is* a :class:`~atomvib.harmonic.crystal.CrystalPhonons` (a subclass
with the temperature, the number of frames and the fit residual added), analysed by the same
``analyse_crystal``: dispersion, DOS, thermal properties, INS and IR take it unchanged. Its thermal properties
are those of the renormalised harmonic phonons at each temperature — the effective-harmonic free energy, not
the full anharmonic one.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..harmonic.crystal import CrystalPhonons
from ..settings import PhononSettings
from ..structure import Structure

#: a mean offset from the reference sites above this (Å; and above 5 statistical errors) flags a distorted phase
OFFSET_FLAG_A = 0.1
#: atoms of a trajectory further than this share of the shortest interatomic distance from every ideal site
#: do not belong to the structure
MATCH_FRACTION = 0.35


@dataclass(frozen=True, eq=False)
class EffectivePhonons(CrystalPhonons):
    """Phonons from effective force constants fitted to an MD trajectory: every field and method of
    :class:`CrystalPhonons`, plus

    Attributes
    ----------
    temperature_k : float
        Mean kinetic temperature of the frames fitted, K.
    target_temperature_k : float or None
        The thermostat's temperature of the run, K.
    n_frames : int
        Frames fitted.
    force_residual : float
        Relative force error of the fit, sqrt(Σ|F − F_fit|² / Σ|F|²) over the frames fitted: 0 for a harmonic
        crystal, growing with anharmonicity (and with noise in the forces).
    displacement_rms_a : float
        Root-mean-square displacement from the reference sites, Å.
    trajectory : str
        The trajectory fitted ("" for harmonic sampling).
    method : str
        "md" (fitted to a trajectory) or "harmonic sampling" (:mod:`atomvib.dynamics.sampling`).
    site_offset_max_a : float
        MD only: the largest distance between an atom's time-averaged position and its reference site, Å (centre
        of mass removed). Near 0 (within the statistical u_rms/√frames) when the trajectory stays in the
        structure's phase; large when it sits in a distorted one (frozen octahedral tilts below a perovskite's
        transition): the force constants about the high-symmetry sites then describe fluctuations about a
        structure the system does not have, and look stable even so (the static offset carries no mean force).
        ``distorted`` flags it.
    sampling : dict or None
        Harmonic sampling only: its settings, ``converged`` and the per-iteration report (``iterations``: max and
        RMS |Δω| at the commensurate q-points, THz; lowest and highest frequency, THz; force residual; u_rms, Å).
    """

    temperature_k: float = float("nan")
    target_temperature_k: float | None = None
    n_frames: int = 0
    force_residual: float = float("nan")
    displacement_rms_a: float = float("nan")
    trajectory: str = ""
    method: str = "md"
    sampling: dict | None = None
    site_offset_max_a: float = float("nan")

    @property
    def distorted(self) -> bool:
        """The atoms sit off the reference sites on average (more than :data:`OFFSET_FLAG_A` and five times the
        statistical error u_rms/√frames): the trajectory is not in the structure's phase."""
        if not np.isfinite(self.site_offset_max_a) or self.n_frames < 1:
            return False
        return self.site_offset_max_a > max(OFFSET_FLAG_A, 5.0 * self.displacement_rms_a / np.sqrt(self.n_frames))

    def summary(self) -> dict:
        from ..output import crystal_summary

        s = crystal_summary(self)
        s["effective_force_constants"] = {
            "method": ("least-squares fit to MD displacements and forces (symfc), TDEP-style" if self.method == "md"
                       else "self-consistent harmonic sampling: least-squares fit (symfc) to forces on thermally "
                       "displaced supercells"),
            "temperature_K": self.temperature_k,
            "target_temperature_K": self.target_temperature_k,
            "n_frames": self.n_frames,
            "force_residual": self.force_residual,
            "displacement_rms_A": self.displacement_rms_a,
            "trajectory": self.trajectory,
        }
        if self.method == "md":
            s["effective_force_constants"]["site_offset_max_A"] = self.site_offset_max_a
            s["effective_force_constants"]["distorted"] = self.distorted
        if self.sampling is not None:
            s["effective_force_constants"]["sampling"] = self.sampling
        return s


def _mic_frac(d: np.ndarray) -> np.ndarray:
    return d - np.round(d)


def _infer_supercell(unitcell: Structure, cell_rows: np.ndarray) -> np.ndarray:
    """Integer M with supercell rows ≈ Mᵀ @ unit-cell rows (phonopy's column convention), or an InputError."""
    m = np.linalg.solve(np.asarray(unitcell.cell).T, np.asarray(cell_rows).T)  # U_cols @ M = S_cols
    mr = np.round(m)
    # a thermally expanded (or differently relaxed) cell is a few per cent off the integer multiple
    if np.abs(m - mr).max() > 0.08 * max(1.0, np.abs(mr).max()) or round(abs(np.linalg.det(mr))) < 1:
        raise InputError(
            "the trajectory's cell is not a supercell of the structure's cell (matrix "
            f"{np.array2string(m, precision=2, separator=',')})",
            fix="give the unit cell the trajectory's supercell was built from (and --supercell N N N)",
        )
    return mr.astype(int)


def map_atoms(ref_frac: np.ndarray, ref_numbers, frac: np.ndarray, numbers, cell_rows: np.ndarray) -> np.ndarray:
    """Index ``perm`` such that trajectory atom ``perm[j]`` sits on reference site ``j`` (minimum image, same
    element); an :class:`InputError` when the atoms do not match the sites one to one."""
    n = len(ref_frac)
    ref_numbers, numbers = np.asarray(ref_numbers), np.asarray(numbers)
    if len(frac) != n or sorted(ref_numbers.tolist()) != sorted(numbers.tolist()):
        raise InputError(
            f"the trajectory's atoms ({len(frac)}: {_counts(numbers)}) do not match the structure's supercell "
            f"({n}: {_counts(ref_numbers)})",
            fix="give the structure the trajectory was run from, and its supercell (--supercell)",
        )
    cell_rows = np.asarray(cell_rows, dtype=float)
    perm = np.empty(n, dtype=int)
    dist = np.empty(n)
    for start in range(0, n, 256):
        d = _mic_frac(frac[None, :, :] - ref_frac[start:start + 256, None, :]) @ cell_rows  # (chunk, n, 3)
        r = np.linalg.norm(d, axis=2)
        r[ref_numbers[start:start + 256, None] != numbers[None, :]] = np.inf
        perm[start:start + 256] = np.argmin(r, axis=1)
        dist[start:start + 256] = r[np.arange(r.shape[0]), perm[start:start + 256]]
    ref_cart = ref_frac @ cell_rows
    dmin = _shortest_distance(ref_cart, cell_rows)
    if len(set(perm.tolist())) != n or dist.max() > MATCH_FRACTION * dmin:
        raise InputError(
            f"the trajectory's atoms do not sit on the structure's sites (largest distance {dist.max():.2f} Å, "
            f"{n - len(set(perm.tolist()))} sites without an atom of their own)",
            fix="give the structure the trajectory was run from (same cell and supercell); a melted or diffusing "
            "system has no effective force constants",
        )
    return perm


def _counts(numbers) -> str:
    from ase.data import chemical_symbols

    vals, cnt = np.unique(np.asarray(numbers), return_counts=True)
    return " ".join(f"{chemical_symbols[int(v)]}{c}" for v, c in zip(vals, cnt))


def _shortest_distance(cart: np.ndarray, cell_rows: np.ndarray) -> float:
    d = cart[1:] - cart[0]
    frac = _mic_frac(d @ np.linalg.inv(cell_rows))
    r = np.linalg.norm(frac @ cell_rows, axis=1)
    return float(r.min()) if r.size else 1.0


def effective_phonons(
    traj,
    structure=None,
    *,
    supercell_matrix=None,
    settings: PhononSettings | None = None,
    production_only: bool = True,
    stride: int = 1,
    timestep_fs: float | None = None,
    fmt: str | None = None,
    progress=False,
) -> EffectivePhonons:
    """Effective harmonic phonons at the temperature of an MD trajectory.

    Parameters
    ----------
    traj : MDTrajectory or path
        Our trajectory (from :func:`~atomvib.dynamics.md.run_md`: the unit cell and supercell come with it), or
        a trajectory file (``structure`` then needed). Frames need forces.
    structure : path, ase.Atoms or Structure, optional
        The crystal the trajectory's supercell was built from (reduced to its primitive cell when
        ``settings.primitive``); not needed for our own trajectories.
    supercell_matrix : 3 or 9 ints, optional
        The trajectory's supercell of ``structure``; default: inferred from the cells.
    settings : PhononSettings, optional
        Analysis settings (mesh, DOS, temperatures, symmetry tolerance).
    production_only, stride
        Which frames are fitted.

    Returns
    -------
    EffectivePhonons
    """
    from ..harmonic.crystal import analyse_crystal
    from ..harmonic.force_constants import ForceConstants
    from ..progress import as_progress
    from ..workflow import load_input
    from .md import MDTrajectory, read_trajectory

    progress = as_progress(progress)
    settings = settings or PhononSettings()
    if not isinstance(traj, MDTrajectory):
        traj = read_trajectory(traj, timestep_fs=timestep_fs, fmt=fmt)
    t = traj.select(production_only, stride)
    if t.forces is None:
        raise InputError(f"{t.source or 'the trajectory'} has no forces", fix="give a trajectory with forces per frame")
    if t.n_frames < 1:
        raise InputError("no production frames to fit", fix="run the production (--steps > 0)")
    unitcell = traj.unitcell
    if structure is not None:
        unitcell = load_input(structure)
        if settings.primitive:
            unitcell = unitcell.primitive(settings.symprec)
    if unitcell is None:
        raise InputError("effective force constants need the crystal the trajectory was run from",
                         fix="give the structure (INPUT) with the trajectory")
    if unitcell.is_molecule or not np.all(np.abs(np.linalg.det(t.cells)) > 1e-6):
        raise InputError("effective force constants are for crystals (periodic cells)",
                         fix="use the VACF DOS (--dos) for a molecule")
    smat = None if supercell_matrix is None else supercell_matrix
    if smat is None and traj.supercell_matrix is not None and structure is None:
        smat = traj.supercell_matrix
    ph, ref_unit, perm, frac, mean_cell = reference_sites(t, unitcell, smat, settings.symprec)
    sc = ph.supercell
    ref_frac = np.asarray(sc.scaled_positions)
    u = _mic_frac(frac[:, perm] - ref_frac[None]) @ mean_cell
    offset = u.mean(axis=0)
    offset -= np.average(offset, axis=0, weights=np.asarray(sc.masses, dtype=float))
    masses = np.asarray(sc.masses, dtype=float)
    u -= (np.einsum("i,fij->fj", masses, u) / masses.sum())[:, None, :]
    f = np.asarray(t.forces, dtype=float)[:, perm]
    f = f - f.mean(axis=1, keepdims=True)
    with progress.stage(f"fitting effective force constants (symfc, {t.n_frames} frames of {len(perm)} atoms)"):
        ph.dataset = {"displacements": u, "forces": f}
        with contextlib.redirect_stdout(io.StringIO()):
            ph.produce_force_constants(calculate_full_force_constants=False, fc_calculator="symfc",
                                       show_drift=False)
        fc = ForceConstants.from_phonopy(ph)
        residual = force_residual(ph, u, f)
    temps = t.temperature_k
    temp = float(np.mean(temps)) if temps is not None else float("nan")
    with progress.stage("analysing (mesh, DOS, band path, thermal)"):
        base = analyse_crystal(fc, settings, structure=ref_unit, engine=traj.engine, n_displacements=t.n_frames,
                               relaxation=traj.relaxation)
    from dataclasses import fields

    return EffectivePhonons(
        **{fl.name: getattr(base, fl.name) for fl in fields(CrystalPhonons) if fl.init},
        temperature_k=temp,
        target_temperature_k=None if traj.settings is None else traj.settings.temperature_k,
        n_frames=int(t.n_frames), force_residual=residual,
        displacement_rms_a=float(np.sqrt(np.mean(np.sum(u * u, axis=2)))),
        trajectory=str(Path(t.source)) if t.source else "",
        site_offset_max_a=float(np.max(np.linalg.norm(offset, axis=1))),
    )


def crystal_sites(traj, t, structure=None, what: str = "this analysis"):
    """:func:`reference_sites` of the frames ``t`` selected from ``traj``: the crystal of ``structure`` (reduced to
    its primitive cell, the supercell inferred from the frames) or else the trajectory's own unit cell and
    supercell matrix; an InputError naming ``what`` when there is neither."""
    unitcell = traj.unitcell
    if structure is not None:
        from ..workflow import load_input

        unitcell = load_input(structure).primitive(1e-3)
    if unitcell is None:
        raise InputError(f"{what} needs the crystal the trajectory was run from", fix="give the structure")
    return reference_sites(t, unitcell, traj.supercell_matrix if structure is None else None)


def reference_sites(t, unitcell: Structure, supercell_matrix=None, symprec: float = 1e-3):
    """The ideal sites of a trajectory's atoms.

    Returns ``(ph, ref_unit, perm, frac, mean_cell)``: a phonopy object of ``unitcell`` scaled to the trajectory's
    mean cell (``ref_unit``) with the trajectory's supercell, ``perm`` such that trajectory atom ``perm[j]`` sits
    on supercell site ``j``, the fractional positions of every frame (nframes, natoms, 3) and the mean cell (3, 3)
    rows, Å.
    """
    from ..harmonic.force_constants import new_phonopy

    mean_cell = np.mean(np.asarray(t.cells, dtype=float), axis=0)
    if supercell_matrix is not None:
        from ..settings import _supercell_matrix

        smat = np.reshape(_supercell_matrix(np.asarray(supercell_matrix).ravel().tolist()), (3, 3)).astype(int)
    else:
        smat = _infer_supercell(unitcell, mean_cell)
    # the reference lattice: the unit cell scaled to the trajectory's mean cell (rows: S = Mᵀ U)
    unit_rows = np.linalg.solve(smat.T.astype(float), mean_cell)
    ref_unit = Structure(numbers=unitcell.numbers, positions=unitcell.scaled_positions() @ unit_rows,
                         cell=unit_rows, pbc=(True, True, True), masses=unitcell.masses, source=unitcell.source)
    ph = new_phonopy(ref_unit, smat, "auto", symprec)
    sc = ph.supercell
    # mean fractional positions of the trajectory's atoms (minimum image from the first frame)
    frac = np.einsum("fij,fjk->fik", np.asarray(t.positions), np.linalg.inv(np.asarray(t.cells)))
    mean_frac = frac[0] + _mic_frac(frac - frac[0]).mean(axis=0)
    perm = map_atoms(np.asarray(sc.scaled_positions), sc.numbers, mean_frac, t.structure.numbers, mean_cell)
    return ph, ref_unit, perm, frac, mean_cell


def force_residual(ph, u: np.ndarray, f: np.ndarray) -> float:
    """sqrt(Σ|F + Φu|² / Σ|F|²) with the force constants set on ``ph`` (compact or full)."""
    from phonopy.harmonic.force_constants import compact_fc_to_full_fc

    fc = np.asarray(ph.force_constants)
    if fc.shape[0] != fc.shape[1]:
        fc = compact_fc_to_full_fc(ph.primitive, fc)
    pred = -np.einsum("ijab,fjb->fia", fc, u)
    return float(np.sqrt(np.sum((f - pred) ** 2) / max(np.sum(f * f), 1e-300)))
