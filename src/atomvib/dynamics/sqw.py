"""Powder S(|Q|, E) directly from an MD trajectory: coherent and incoherent, every order of anharmonicity and
every multiphonon process the engine's dynamics has (classically), with dynasor.

dynasor (Fransson, Slabanja, Erhart & Wahnström, Adv. Theory Simul. 4, 2000240 (2021)) computes the
intermediate scattering functions F(q, t) and their transforms S(q, ω) — coherent (all pairs) and incoherent
(self part) — on q-points of the MD cell's reciprocal lattice; atomvib gives it the production frames, the
q-points on spheres up to ``q_max`` (its ``get_spherical_qpoints``), weights every species by its neutron
scattering lengths (``NeutronScatteringLengths``: b_coh² for the coherent, b_inc² for the incoherent part) and
averages over |q| shells (``get_spherically_averaged_sample_binned``). Nothing here correlates anything.

What this adds to the harmonic maps of ``atomvib ins``: the lines shift and broaden with temperature, the
multiphonon and coherent parts come with the dynamics (no incoherent or Debye–Waller approximation), and
diffusing atoms give their quasi-elastic line. What it lacks: the MD is classical, so S(Q, E) is symmetric in E;
``quantum_correction`` multiplies it by the harmonic factor βE/(1 − e^{−βE}) for the energy-loss side (as for the
VACF DOS). The resolution in E is the window's (``window_ps``: E resolution ≈ h/window), in |Q| the shells'
width; the smallest |Q| is the MD cell's (2π/L).

dynasor's own extended-XYZ reader does not read files of the ASE version here; the frames are handed to it as
an ASE trajectory file (its ``'ase'`` format) written in a temporary directory.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import units
from ..errors import InputError
from ..results import Result


@dataclass(frozen=True, eq=False)
class TrajectorySqe(Result):
    """Powder S(|Q|, E) of a trajectory (dynasor), neutron-weighted.

    Attributes
    ----------
    q_ainv : ndarray, shape (nq,), Å⁻¹
        Centres of the |Q| shells (shells without q-points of the MD cell are dropped).
    energy_mev : ndarray, shape (ne,), meV
    coherent, incoherent : ndarray, shape (nq, ne)
        Σ b_coh,i b_coh,j S_ij(Q, E) and Σ b_inc,i² S_i(Q, E) (dynasor's normalisation: per atom, per
        angular-frequency unit; b in fm), classical unless ``quantum_corrected``.
    temperature_k : float
    n_frames : int
    window_ps : float
        Correlation window: the energy resolution is about h/window.
    quantum_corrected : bool
    source : str
    notes : tuple of str
    """

    q_ainv: np.ndarray
    energy_mev: np.ndarray
    coherent: np.ndarray
    incoherent: np.ndarray
    temperature_k: float
    n_frames: int
    window_ps: float
    quantum_corrected: bool = False
    source: str = ""
    notes: tuple = field(default_factory=tuple)

    @property
    def total(self) -> np.ndarray:
        """Coherent + incoherent, shape (nq, ne)."""
        return self.coherent + self.incoherent

    def summary(self) -> dict:
        return {"temperature_K": self.temperature_k, "n_frames": self.n_frames, "window_ps": self.window_ps,
                "q_range_A-1": [float(self.q_ainv.min()), float(self.q_ainv.max())], "n_q_shells": len(self.q_ainv),
                "energy_max_meV": float(self.energy_mev.max()), "quantum_corrected": self.quantum_corrected,
                "method": "dynasor: F(q, t) of the production frames, neutron-weighted, spherically averaged",
                "source": self.source, "notes": list(self.notes)}

    def to_hdf5(self, path) -> Path:
        """``q_ainv``, ``energy_mev``, ``intensity`` (total, nq × ne), ``coherent``, ``incoherent``: the layout of
        ``atomvib ins``' maps, which ``atomvib compare`` reads."""
        import h5py

        path = Path(path)
        with h5py.File(path, "w") as f:
            f["q_ainv"] = self.q_ainv
            f["energy_mev"] = self.energy_mev
            f["intensity"] = self.total
            f["coherent"] = self.coherent
            f["incoherent"] = self.incoherent
            f["q_ainv"].attrs["unit"] = "1/angstrom"
            f["energy_mev"].attrs["unit"] = "meV"
            f.attrs["temperature_k"] = self.temperature_k
            f.attrs["approximation"] = "classical MD (dynasor), coherent + incoherent, powder"
        return path

    def _write_files(self, out) -> None:
        self.to_hdf5(out / "sqe.h5")


def trajectory_sqe(traj, *, q_max_ainv: float = 8.0, n_q_shells: int = 40, window_ps: float = 1.0,
                   max_qpoints: int = 2000, quantum_correction: bool = False, production_only: bool = True,
                   seed: int = 42) -> TrajectorySqe:
    """Powder S(|Q|, E) of a periodic trajectory with dynasor.

    Parameters
    ----------
    q_max_ainv : float
        Largest |Q|, Å⁻¹.
    n_q_shells : int
        |Q| shells between 0 and ``q_max_ainv``.
    window_ps : float
        Correlation time window (energy resolution ≈ h/window, 4.1 meV for 1 ps); at most half the production.
    max_qpoints : int
        q-points drawn (dynasor's ``max_points``): cost ∝ q-points × frames × atoms.
    quantum_correction : bool
        Multiply by βE/(1 − e^{−βE}) (the energy-loss side of a quantum harmonic system).
    """
    from ase import Atoms
    from ase.io import write

    try:
        from dynasor import Trajectory, compute_dynamic_structure_factors
        from dynasor.post_processing import (
            NeutronScatteringLengths,
            get_spherically_averaged_sample_binned,
            get_weighted_sample,
        )
        from dynasor.qpoints import get_spherical_qpoints
    except ImportError:
        raise InputError("S(Q, E) from a trajectory needs dynasor, which is not installed",
                         fix="pip install 'atomvib[md]' (or pip install dynasor)") from None
    t = traj.select(production_only, 1)
    if not np.all(np.abs(np.linalg.det(t.cells)) > 1e-6):
        raise InputError("S(Q, E) from a trajectory is for periodic cells", fix="use --dos or --ir for a molecule")
    dt = t.frame_interval_fs
    if not np.allclose(np.diff(t.time_fs), dt, rtol=1e-6, atol=1e-9):
        raise InputError(f"{t.source or 'the trajectory'}: frames are not evenly spaced in time",
                         fix="give a trajectory written at a fixed interval")
    window = int(round(window_ps / (dt * units.FS_TO_PS)))
    if window < 8 or window > t.n_frames // 2:
        raise InputError(f"a window of {window_ps:g} ps is {window} frames; the production has {t.n_frames} "
                         f"frames of {dt:g} fs", fix="give --sqe-window between 8 frames and half the production "
                         "(run longer for a finer energy resolution)")
    symbols = list(t.structure.symbols)
    species = sorted(set(symbols))
    indices = {el: [i for i, s in enumerate(symbols) if s == el] for el in species}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.traj"
        write(path, [Atoms(symbols, positions=x, cell=c, pbc=True) for x, c in zip(t.positions, t.cells)])
        quiet = logging.getLogger("dynasor")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # one "no q-points for bin" line per empty shell and species otherwise
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                dtraj = Trajectory(str(path), trajectory_format="ase", atomic_indices=indices)
                qp = get_spherical_qpoints(dtraj.cell, q_max=q_max_ainv, max_points=max_qpoints, seed=seed)
                sample = compute_dynamic_structure_factors(dtraj, qp, dt=dt, window_size=window,
                                                           calculate_incoherent=True)
                weighted = get_weighted_sample(sample, NeutronScatteringLengths(species))
                avg = get_spherically_averaged_sample_binned(weighted, num_q_bins=n_q_shells)
        finally:
            quiet.setLevel(level)
    q = np.asarray(avg.q_norms, dtype=float)
    coh = np.asarray(avg.Sqw_coh, dtype=float)
    inc = np.asarray(avg.Sqw_incoh, dtype=float)
    keep = np.isfinite(coh).all(axis=1) & np.isfinite(inc).all(axis=1) & (q > 0)
    omega = np.asarray(avg.omega, dtype=float)  # rad/fs
    e_mev = omega / (2.0 * np.pi) / units.FS_TO_PS * units.THZ_TO_MEV
    temp = float(np.mean(t.temperature_k)) if t.temperature_k is not None else float("nan")
    if quantum_correction:
        x = e_mev / (units.KB_MEV_PER_K * temp)
        with np.errstate(divide="ignore", invalid="ignore"):
            qf = np.where(x > 1e-8, x / (-np.expm1(-x)), 1.0)
        coh, inc = coh * qf[None, :], inc * qf[None, :]
    notes = []
    if keep.sum() < len(q):
        notes.append(f"{len(q) - keep.sum()} of {len(q)} |Q| shells hold no q-point of the MD cell (below 2π/L or "
                     "between its reciprocal-lattice spheres): dropped")
    return TrajectorySqe(q_ainv=q[keep], energy_mev=e_mev, coherent=coh[keep], incoherent=inc[keep],
                         temperature_k=temp, n_frames=int(t.n_frames), window_ps=float(window * dt * units.FS_TO_PS),
                         quantum_corrected=bool(quantum_correction), source=t.source, notes=tuple(notes))
