"""Phonon lines at temperature from an MD trajectory: velocities projected on the normal modes at one q-point.

For a q-point commensurate with the MD supercell and the eigenvectors e_s(κ; q) of a phonon result of the same
crystal (the engine's harmonic phonons, or the effective ones at T), the mode velocity

    Q̇_s(t) = N^(-1/2) Σ_j √m_j e_s*(κ_j; q) · v_j(t) exp(−2πi q·r_j)      (r_j the ideal site of atom j)

has the power spectrum of mode s in the anharmonic crystal: one line per mode, at the frequency the MD gives it
at T (shifted from the harmonic one by every order of anharmonicity the engine has, classically), with its
width (the inverse lifetime, broadened by the thermostat: a Langevin friction γ adds γ/2π full width; run the
production in NVE or with Bussi for the natural width). This is what a Raman (Γ, q = 0) or a single-crystal
INS measurement sees as a peak position and width. The spectrum is the windowed autocorrelation of Q̇_s,
cosine-transformed as in :mod:`atomvib.dynamics.vacf` (Gaussian window of standard deviation σ), each
normalised to unit area.

Why our own: dynasor computes current correlations along q-paths but needs its own trajectory reader and has
no notion of the phonon eigenvectors of a result; the projection is a sum over atoms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import units
from ..errors import InputError
from ..results import Result
from .vacf import autocorrelation, lag_window, windowed_cosine_transform


@dataclass(frozen=True, eq=False)
class ModeSpectra(Result):
    """Spectra of the normal modes at one q-point from a trajectory.

    Attributes
    ----------
    qpoint : ndarray, shape (3,)
        Reduced coordinates of the primitive cell's reciprocal lattice.
    frequencies_thz : ndarray, shape (nf,)
        Frequency grid, THz.
    spectra : ndarray, shape (nbands, nf)
        Power spectrum of each mode's velocity, 1/THz, each of unit area.
    harmonic_frequencies_thz : ndarray, shape (nbands,)
        Frequencies of the modes projected on (from the phonon result given), THz.
    peak_frequencies_thz : ndarray, shape (nbands,)
        Where each spectrum peaks (parabola through the three highest grid points), THz.
    fwhm_thz : ndarray, shape (nbands,)
        Full width at half maximum of each line (including the window's and the thermostat's width), THz.
    sigma_thz : float
        Gaussian window width (standard deviation of a line of infinite lifetime), THz.
    temperature_k : float
        Mean kinetic temperature of the frames, K.
    n_frames : int
    source : str
        The trajectory.
    """

    qpoint: np.ndarray
    frequencies_thz: np.ndarray
    spectra: np.ndarray
    harmonic_frequencies_thz: np.ndarray
    peak_frequencies_thz: np.ndarray
    fwhm_thz: np.ndarray
    sigma_thz: float
    temperature_k: float
    n_frames: int
    source: str = ""

    def summary(self) -> dict:
        return {
            "qpoint": [float(x) for x in self.qpoint],
            "temperature_K": self.temperature_k,
            "n_frames": self.n_frames,
            "sigma_THz": self.sigma_thz,
            "modes": [{"harmonic_THz": float(h), "peak_THz": float(p), "shift_THz": float(p - h),
                       "fwhm_THz": float(w), "peak_cm-1": float(p * units.THZ_TO_CM1)}
                      for h, p, w in zip(self.harmonic_frequencies_thz, self.peak_frequencies_thz, self.fwhm_thz)],
            "source": self.source,
        }

    def _write_files(self, out) -> None:
        head = "frequency_THz," + ",".join(f"mode_{i}" for i in range(len(self.spectra)))
        np.savetxt(out / "mode_spectra.csv", np.column_stack([self.frequencies_thz, self.spectra.T]),
                   delimiter=",", header=head, comments="", fmt="%.8g")

    def line(self, bands) -> tuple[float, float]:
        """Peak and FWHM (THz) of the sum of the spectra of ``bands`` (e.g. a degenerate set)."""
        g = self.spectra[list(bands)].sum(axis=0)
        return _peak(self.frequencies_thz, g), _fwhm(self.frequencies_thz, g)


def _peak(freqs: np.ndarray, g: np.ndarray) -> float:
    i = int(np.argmax(g))
    if 0 < i < len(g) - 1:
        a, b, c = g[i - 1], g[i], g[i + 1]
        den = a - 2 * b + c
        if den < 0:
            return float(freqs[i] + 0.5 * (a - c) / den * (freqs[1] - freqs[0]))
    return float(freqs[i])


def _fwhm(freqs: np.ndarray, g: np.ndarray) -> float:
    i = int(np.argmax(g))
    half = 0.5 * g[i]
    lo = i
    while lo > 0 and g[lo] > half:
        lo -= 1
    hi = i
    while hi < len(g) - 1 and g[hi] > half:
        hi += 1
    # linear interpolation of the two crossings
    fl = freqs[lo] + (half - g[lo]) / (g[lo + 1] - g[lo]) * (freqs[lo + 1] - freqs[lo]) if g[lo] <= half else freqs[lo]
    fh = freqs[hi - 1] + (g[hi - 1] - half) / (g[hi - 1] - g[hi]) * (freqs[hi] - freqs[hi - 1]) if g[hi] <= half else freqs[hi]
    return float(fh - fl)


def _primitive_index(ph_traj, ph_modes) -> np.ndarray:
    """For each supercell site of ``ph_traj``: the index of its atom in ``ph_modes``' primitive cell."""
    prim_t, prim_m = ph_traj.primitive, ph_modes.primitive
    p_of_site = np.array([prim_t.p2p_map[s] for s in prim_t.s2p_map], dtype=int)
    ft = np.asarray(prim_t.scaled_positions)
    fm = np.asarray(prim_m.scaled_positions)
    if len(ft) != len(fm):
        raise InputError("the phonon result is not of the trajectory's crystal (different primitive cells)",
                         fix="give the phonons of the structure the trajectory was run from")
    d = ft[:, None, :] - fm[None, :, :]
    d -= np.round(d)
    dist = np.linalg.norm(d, axis=2)
    dist[np.asarray(prim_t.numbers)[:, None] != np.asarray(prim_m.numbers)[None, :]] = np.inf
    t2m = np.argmin(dist, axis=1)
    if dist[np.arange(len(ft)), t2m].max() > 0.05 or len(set(t2m.tolist())) != len(ft):
        raise InputError("the phonon result's primitive cell does not match the trajectory's sites",
                         fix="give the phonons of the structure the trajectory was run from")
    return t2m[p_of_site]


def _projector(traj, phonons, qpoint, structure, production_only: bool):
    """What projects atoms' vectors on the modes at ``qpoint``: (selected trajectory, phonopy of its supercell,
    perm, fractional positions per frame, mean cell, coefficients (natoms, 3, nbands) complex, harmonic
    frequencies (nbands,) THz). See the module docstring for the projection."""
    from .sampling import qpoint_solution
    from .tdep import crystal_sites

    t = traj.select(production_only, 1)
    ph, _, perm, frac, mean_cell = crystal_sites(traj, t, structure, "mode projections")
    q = np.asarray(qpoint, dtype=float)
    smat = np.asarray(ph.supercell_matrix, dtype=float)
    phase_check = q @ np.linalg.inv(ph.primitive_matrix) @ smat  # q·L must be integer for every lattice vector L
    if np.abs(phase_check - np.round(phase_check)).max() > 1e-6:
        raise InputError(f"q = {q.tolist()} is not commensurate with the MD supercell",
                         fix="give a q-point of the supercell's reciprocal lattice (Γ always is)")
    phm = phonons.force_constants.phonopy()
    phm.run_qpoints([q], with_eigenvectors=True)
    freqs_q, evecs_q = qpoint_solution(phm)
    evec = np.asarray(evecs_q[0])  # (3 n_prim, nbands)
    pidx = _primitive_index(ph, phm)
    sc = ph.supercell
    masses = np.asarray(sc.masses, dtype=float)
    ref_cart = np.asarray(sc.scaled_positions) @ mean_cell
    prim_frac = ref_cart @ np.linalg.inv(np.asarray(ph.primitive.cell))
    phase = np.exp(-2j * np.pi * prim_frac @ q)
    ncell = len(masses) / len(phm.primitive)
    e = evec.reshape(len(phm.primitive), 3, -1)[pidx]  # (natoms, 3, nbands)
    coeff = np.sqrt(masses)[:, None, None] * e.conj() * phase[:, None, None] / np.sqrt(ncell)
    return t, ph, perm, frac, mean_cell, coeff, freqs_q[0]


def mode_amplitudes(traj, phonons, qpoint=(0.0, 0.0, 0.0), *, structure=None, production_only: bool = True):
    """Normal-mode displacement amplitudes at ``qpoint`` along a trajectory: the order parameter of a soft mode.

    Q_s(t) = N^(-1/2) Σ_j √m_j e_s*(κ_j; q) · u_j(t) exp(−2πi q·r_j), with u_j the displacement of atom j from its
    ideal site (the unit cell scaled to the trajectory's mean cell; minimum image). A frozen distortion along mode
    s (octahedral tilts below a perovskite's transition) has ⟨Q_s⟩ ≠ 0; above it Q_s fluctuates about 0.

    Returns
    -------
    amplitudes : ndarray, shape (nframes, nbands), complex, √amu·Å (real up to a phase at q with 2q a reciprocal
        lattice vector, e.g. Γ, X, M, R)
    harmonic_frequencies_thz : ndarray, shape (nbands,), THz — of the modes projected on (< 0: imaginary)
    """
    t, ph, perm, frac, mean_cell, coeff, harm = _projector(traj, phonons, qpoint, structure, production_only)
    from .tdep import _mic_frac

    ref = np.asarray(ph.supercell.scaled_positions)
    u = _mic_frac(frac[:, perm] - ref[None]) @ mean_cell  # (nframes, natoms, 3), Å
    u -= u.mean(axis=1, keepdims=True)  # the centre of mass does not move a mode
    return np.einsum("fia,iab->fb", u, coeff), harm


def mode_spectra(traj, phonons, qpoint=(0.0, 0.0, 0.0), *, sigma_thz: float = 0.05, frequency_step_thz=None,
                 structure=None, production_only: bool = True) -> ModeSpectra:
    """Spectra of the modes at ``qpoint`` from the velocities of a trajectory.

    Parameters
    ----------
    traj : MDTrajectory
        With velocities; its unit cell (ours) or ``structure`` gives the ideal sites.
    phonons : CrystalPhonons
        Phonons of the same crystal (harmonic or effective): the eigenvectors projected on.
    qpoint : 3 floats
        Reduced coordinates (primitive reciprocal lattice); must be commensurate with the MD supercell.
    sigma_thz : float
        Gaussian window (line width of an infinitely long-lived mode), THz.
    """
    if traj.select(production_only, 1).velocities is None:
        raise InputError(f"{traj.source or 'the trajectory'} has no velocities", fix="give a trajectory with velocities")
    t, ph, perm, _, _, coeff, harm = _projector(traj, phonons, qpoint, structure, production_only)
    q = np.asarray(qpoint, dtype=float)
    v = np.asarray(t.velocities, dtype=float)[:, perm]  # (nframes, natoms, 3)
    qdot = np.einsum("fia,iab->fb", v, coeff)  # (nframes, nbands)
    dt = t.frame_interval_fs
    nlag, tau0_fs = lag_window(dt, sigma_thz)
    nf = qdot.shape[0]
    if nlag > nf // 2 + 1:
        raise InputError(f"the trajectory ({(nf - 1) * dt * units.FS_TO_PS:.3g} ps) is too short for a line width "
                         f"of {sigma_thz:g} THz", fix="run longer, or give a larger --mode-sigma")
    acf = autocorrelation(qdot, nlag)
    nyquist = 0.5 / (dt * units.FS_TO_PS)
    step = frequency_step_thz or sigma_thz / 10.0
    freqs = np.arange(0.0, nyquist, step)
    g = windowed_cosine_transform(acf, dt, tau0_fs, freqs).T  # (nbands, nf)
    g = np.clip(g, 0.0, None)
    area = g.sum(axis=1, keepdims=True) * step
    g = np.where(area > 0, g / np.where(area > 0, area, 1.0), 0.0)
    peaks = np.array([_peak(freqs, x) for x in g])
    widths = np.array([_fwhm(freqs, x) for x in g])
    # the acoustic modes at Γ are the centre-of-mass motion, which the thermostat's FixCom holds still
    still = np.abs(harm) < 1e-2 if np.allclose(q, 0) else np.zeros(len(harm), bool)
    peaks[still] = np.nan
    widths[still] = np.nan
    return ModeSpectra(qpoint=q, frequencies_thz=freqs, spectra=g, harmonic_frequencies_thz=harm,
                       peak_frequencies_thz=peaks, fwhm_thz=widths, sigma_thz=float(sigma_thz),
                       temperature_k=float(np.mean(t.temperature_k)), n_frames=int(nf), source=t.source)
