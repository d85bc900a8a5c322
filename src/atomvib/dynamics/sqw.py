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


def _frames_and_window(traj, window_ps: float, production_only: bool):
    """(selected trajectory, frame interval fs, window in frames), or an InputError naming the fix."""
    t = traj.select(production_only, 1)
    if not np.all(np.abs(np.linalg.det(t.cells)) > 1e-6):
        raise InputError("S(Q, E) from a trajectory is for periodic cells", fix="use --dos or --ir for a molecule")
    dt = t.frame_interval_fs
    if not np.allclose(np.diff(t.time_fs), dt, rtol=1e-6, atol=1e-9):
        raise InputError(f"{t.source or 'the trajectory'}: frames are not evenly spaced in time",
                         fix="give a trajectory written at a fixed interval")
    window = 2 * int(round(window_ps / (2 * dt * units.FS_TO_PS)))  # dynasor takes even windows only
    if window < 8 or window > t.n_frames // 2:
        raise InputError(f"a window of {window_ps:g} ps is {window} frames; the production has {t.n_frames} "
                         f"frames of {dt:g} fs", fix="give --sqe-window between 8 frames and half the production "
                         "(run longer for a finer energy resolution)")
    return t, dt, window


@contextlib.contextmanager
def _dynasor_frames(t):
    """The frames as a dynasor Trajectory (via an ASE trajectory file in a temporary directory), per-species
    indices, dynasor's log and prints silenced; yields (trajectory, species)."""
    from ase import Atoms
    from ase.io import write
    from dynasor import Trajectory

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
                yield Trajectory(str(path), trajectory_format="ase", atomic_indices=indices), species
        finally:
            quiet.setLevel(level)


def _finish(t, e_mev, coh, inc, quantum_correction: bool):
    """(mean temperature of the frames, coherent, incoherent), the two multiplied by the quantum factor when asked."""
    from .vacf import quantum_factor

    temp = float(np.mean(t.temperature_k)) if t.temperature_k is not None else float("nan")
    if quantum_correction:
        qf = quantum_factor(np.asarray(e_mev) / units.THZ_TO_MEV, temp)
        coh, inc = coh * qf[None, :], inc * qf[None, :]
    return temp, coh, inc


def _require_dynasor() -> None:
    try:
        import dynasor  # noqa: F401
    except ImportError:
        raise InputError("S(Q, E) from a trajectory needs dynasor, which is not installed",
                         fix="pip install 'atomvib[md]' (or pip install dynasor)") from None


def _energies_mev(omega_rad_per_fs) -> np.ndarray:
    return np.asarray(omega_rad_per_fs, float) / (2.0 * np.pi) / units.FS_TO_PS * units.THZ_TO_MEV


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
    _require_dynasor()
    from dynasor import compute_dynamic_structure_factors
    from dynasor.post_processing import (
        NeutronScatteringLengths,
        get_spherically_averaged_sample_binned,
        get_weighted_sample,
    )
    from dynasor.qpoints import get_spherical_qpoints

    t, dt, window = _frames_and_window(traj, window_ps, production_only)
    with _dynasor_frames(t) as (dtraj, species):
        qp = get_spherical_qpoints(dtraj.cell, q_max=q_max_ainv, max_points=max_qpoints, seed=seed)
        sample = compute_dynamic_structure_factors(dtraj, qp, dt=dt, window_size=window, calculate_incoherent=True)
        weighted = get_weighted_sample(sample, NeutronScatteringLengths(species))
        avg = get_spherically_averaged_sample_binned(weighted, num_q_bins=n_q_shells)
    q = np.asarray(avg.q_norms, dtype=float)
    coh = np.asarray(avg.Sqw_coh, dtype=float)
    inc = np.asarray(avg.Sqw_incoh, dtype=float)
    keep = np.isfinite(coh).all(axis=1) & np.isfinite(inc).all(axis=1) & (q > 0)
    e_mev = _energies_mev(avg.omega)  # dynasor's ω: rad/fs
    temp, coh, inc = _finish(t, e_mev, coh, inc, quantum_correction)
    notes = []
    if keep.sum() < len(q):
        notes.append(f"{len(q) - keep.sum()} of {len(q)} |Q| shells hold no q-point of the MD cell (below 2π/L or "
                     "between its reciprocal-lattice spheres): dropped")
    return TrajectorySqe(q_ainv=q[keep], energy_mev=e_mev, coherent=coh[keep], incoherent=inc[keep],
                         temperature_k=temp, n_frames=int(t.n_frames), window_ps=float(window * dt * units.FS_TO_PS),
                         quantum_corrected=bool(quantum_correction), source=t.source, notes=tuple(notes))


@dataclass(frozen=True, eq=False)
class TrajectorySqePath(Result):
    """Coherent and incoherent S(Q, E) of a trajectory along a band path (dynasor), neutron-weighted.

    Only the q-points of the MD cell's reciprocal lattice exist in a periodic MD: those on seekpath's standard
    path of the primitive cell (dynasor's ``get_supercell_qpoints_along_path``), Q = G + q with G the ``zone``.

    Attributes
    ----------
    distances_ainv : ndarray, shape (nq,), 1/Å — position of each q along the path (2π included, as |Q|)
    qpoints : ndarray, shape (nq, 3) — q in reduced coordinates of the primitive reciprocal lattice
    q_cart_ainv : ndarray, shape (nq, 3), 1/Å — Q = G + q, Cartesian (2π included)
    label_names : tuple of str; label_positions_ainv : ndarray, shape (nlabels,) — high-symmetry points
    energy_mev : ndarray, shape (ne,), meV
    coherent, incoherent : ndarray, shape (nq, ne) — Σ b_coh,i b_coh,j S_ij(Q, E) and Σ b_inc,i² S_i(Q, E) per
        atom (b in fm), per THz, classical unless ``quantum_corrected``: the Gaussian-windowed cosine transform of
        dynasor's F(Q, t) (line shape: Gaussian of σ given in ``notes``, as the VACF DOS)
    zone : ndarray, shape (3,) — G in reduced coordinates of the primitive reciprocal lattice
    temperature_k, n_frames, window_ps, quantum_corrected, source, notes : as :class:`TrajectorySqe`
    """

    distances_ainv: np.ndarray
    qpoints: np.ndarray
    q_cart_ainv: np.ndarray
    label_names: tuple
    label_positions_ainv: np.ndarray
    energy_mev: np.ndarray
    coherent: np.ndarray
    incoherent: np.ndarray
    zone: np.ndarray
    temperature_k: float
    n_frames: int
    window_ps: float
    quantum_corrected: bool = False
    source: str = ""
    notes: tuple = field(default_factory=tuple)

    def peak_energies_mev(self, part: str = "coherent", e_min_mev: float = 0.5) -> np.ndarray:
        """Energy of the strongest line above ``e_min_mev`` at each q, meV, shape (nq,)."""
        y = getattr(self, part)
        ok = self.energy_mev >= e_min_mev
        return self.energy_mev[ok][np.argmax(y[:, ok], axis=1)]

    def summary(self) -> dict:
        return {"temperature_K": self.temperature_k, "n_frames": self.n_frames, "window_ps": self.window_ps,
                "n_qpoints": len(self.distances_ainv), "path": " ".join(self.label_names),
                "zone": self.zone.tolist(), "quantum_corrected": self.quantum_corrected,
                "method": "dynasor: F(q, t) of the production frames at the MD cell's q-points on the band path, "
                          "neutron-weighted", "source": self.source, "notes": list(self.notes)}

    def _write_files(self, out) -> None:
        import h5py

        with h5py.File(out / "sqe_path.h5", "w") as f:
            for k in ("distances_ainv", "qpoints", "q_cart_ainv", "energy_mev", "coherent", "incoherent"):
                f[k] = getattr(self, k)
            f["label_positions_ainv"] = self.label_positions_ainv
            f.attrs["labels"] = " ".join(self.label_names)
            f.attrs["temperature_k"] = self.temperature_k


def _path_segments(primitive):
    """seekpath's standard path of a phonopy primitive cell: [(start, end, start label, end label)], reduced."""
    from phonopy.phonon.band_structure import get_band_qpoints_by_seekpath

    from ..harmonic.crystal import _clean_label

    bands, labels, connections = get_band_qpoints_by_seekpath(primitive, 2)
    labels = [_clean_label(x) for x in labels]
    out, li = [], 0
    for k, b in enumerate(bands):
        if k == 0 or not connections[k - 1]:
            start = labels[li]
            li += 1
        else:
            start = out[-1][3]
        end = labels[li]
        li += 1
        out.append((np.asarray(b[0], float), np.asarray(b[-1], float), start, end))
    return out


def trajectory_sqe_path(traj, *, structure=None, zone=(0, 0, 0), window_ps: float = 1.0,
                        quantum_correction: bool = False, production_only: bool = True) -> TrajectorySqePath:
    """Coherent and incoherent S(Q, E) along the band path from a periodic trajectory (dynasor).

    Parameters
    ----------
    traj : MDTrajectory
        Its unit cell (ours) or ``structure`` gives the primitive cell and the supercell.
    zone : 3 ints
        Reciprocal lattice vector G (primitive reciprocal basis) added to every q: in a Bravais crystal only the
        modes polarised along Q scatter coherently, so (0, 0, 0) shows the longitudinal branches and a zone with
        G ⊥ q the transverse ones.
    window_ps, quantum_correction, production_only : as :func:`trajectory_sqe`
    """
    import warnings

    _require_dynasor()
    from dynasor import compute_dynamic_structure_factors
    from dynasor.post_processing import NeutronScatteringLengths, get_weighted_sample
    from dynasor.qpoints import get_supercell_qpoints_along_path

    from .tdep import crystal_sites

    t, dt, window = _frames_and_window(traj, window_ps, production_only)
    ph, _, _, _, mean_cell = crystal_sites(traj, t, structure, "S(Q, E) along a path")
    prim = np.asarray(ph.primitive.cell, float)
    recip = 2.0 * np.pi * np.linalg.inv(prim).T  # rows: primitive reciprocal vectors, 1/Å
    g = np.asarray(zone, float).reshape(3)
    qs, dist, names, marks, offset = [], [], [], [], 0.0
    for k, (a, b, la, lb) in enumerate(_path_segments(ph.primitive)):
        if not marks or abs(marks[-1] - offset) > 1e-9:
            names.append(la)
            marks.append(offset)
        elif names[-1] != la:
            names[-1] = f"{names[-1]}|{la}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No q-points along path!" for a segment the cell does not sample
            seg = get_supercell_qpoints_along_path([(f"A{k}", f"B{k}")], {f"A{k}": a, f"B{k}": b}, prim, mean_cell)
        pts = np.asarray(seg[0], float).reshape(-1, 3) if len(seg) else np.zeros((0, 3))
        ca, cb = a @ recip, b @ recip
        length = float(np.linalg.norm(cb - ca))
        for p in pts:
            if qs and dist and abs(offset + float(np.linalg.norm(p - ca)) - dist[-1]) < 1e-9:
                continue  # the end of one segment is the start of the next
            qs.append(p)
            dist.append(offset + float(np.linalg.norm(p - ca)))
        offset += length
        names.append(lb)
        marks.append(offset)
    if not qs:
        raise InputError("the MD cell has no q-point on the band path", fix="run a larger supercell")
    q_cart = np.asarray(qs) + g @ recip
    with _dynasor_frames(t) as (dtraj, species):
        sample = compute_dynamic_structure_factors(dtraj, q_cart, dt=dt, window_size=window, calculate_incoherent=True)
        weighted = get_weighted_sample(sample, NeutronScatteringLengths(species))
    # dynasor's S(q, ω) is the bare transform of F(q, t) cut at the window: it rings at every q. The MD module's
    # Gaussian lag window instead (as the VACF DOS): a Gaussian line of σ_E = 1/(2π τ₀), τ₀ = window / WINDOW_SIGMAS
    from .vacf import WINDOW_SIGMAS, windowed_cosine_transform

    tau0_fs = window * dt / WINDOW_SIGMAS
    sigma_thz = 1.0 / (2.0 * np.pi * tau0_fs * units.FS_TO_PS)
    freqs = np.arange(0.0, 0.5 / (dt * units.FS_TO_PS), sigma_thz / 4.0)
    coh = windowed_cosine_transform(np.asarray(weighted.Fqt_coh, float).T, dt, tau0_fs, freqs).T
    inc = windowed_cosine_transform(np.asarray(weighted.Fqt_incoh, float).T, dt, tau0_fs, freqs).T
    e_mev = freqs * units.THZ_TO_MEV
    temp, coh, inc = _finish(t, e_mev, coh, inc, quantum_correction)
    notes = [f"energy resolution: Gaussian, σ = {sigma_thz * units.THZ_TO_MEV:.3g} meV (window {window * dt * units.FS_TO_PS:g} ps)"]
    notes += [] if not np.allclose(g, 0) else ["zone (0, 0, 0): only modes polarised along q scatter coherently "
                                              "(longitudinal branches of a Bravais crystal)"]
    return TrajectorySqePath(
        distances_ainv=np.asarray(dist), qpoints=np.asarray(qs) @ np.linalg.inv(recip), q_cart_ainv=q_cart,
        label_names=tuple(names), label_positions_ainv=np.asarray(marks), energy_mev=e_mev, coherent=coh,
        incoherent=inc, zone=g, temperature_k=temp, n_frames=int(t.n_frames),
        window_ps=float(window * dt * units.FS_TO_PS), quantum_corrected=bool(quantum_correction), source=t.source,
        notes=tuple(notes))
