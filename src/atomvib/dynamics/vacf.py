"""Vibrational density of states from the velocity autocorrelation of an MD trajectory.

The mass-weighted velocity autocorrelation of the atoms of element X,

    C_X(τ) = Σ_{i∈X} m_i ⟨v_i(t)·v_i(t+τ)⟩_t        (averaged over every time origin t; FFT, zero-padded),

is multiplied by a Gaussian lag window w(τ) = exp(−(2πστ)²/2) and cosine-transformed:

    g_X(ν) = Δt [C_X(0) + 2 Σ_{τ≥1} w(τ) C_X(τ) cos(2πντ)].

In a classical harmonic crystal every mode carries k_B T of kinetic-energy-weighted correlation (equipartition),
so g = Σ_X g_X is the phonon DOS with each line a Gaussian of standard deviation σ (the window's transform) —
the same broadening a harmonic DOS is given for comparison. Anharmonicity shifts and broadens the lines; a
Langevin thermostat adds a Lorentzian of full width γ/2π (γ the friction). Normalisation: ∫ g dν = 3 per atom
over 0…ν_Nyquist, and g_X integrates to 3·N_X/N.

The optional quantum correction multiplies the classical spectrum by the harmonic factor
Q(ν) = x/(1 − e^{−x}), x = hν/k_BT (Ramírez, López-Ciudad, Kumar & Marx, J. Chem. Phys. 121, 3973 (2004)): the
classical (symmetric) correlation spectrum becomes the detailed-balance one of the quantum harmonic system, the
form to set beside a measured Stokes-side spectrum. The DOS itself (which modes exist where) is the classical
one; ``quantum_factor`` is stored beside it, not folded in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import units
from ..errors import InputError
from ..results import Result

#: a lag window is cut where the Gaussian has fallen to exp(−8) (4 standard deviations)
WINDOW_SIGMAS = 4.0


@dataclass(frozen=True, eq=False)
class VibrationalDos(Result):
    """A vibrational DOS from the velocity autocorrelation of a trajectory.

    Attributes
    ----------
    frequencies_thz : ndarray (nf,), THz
    total : ndarray (nf,), states/THz per atom (∫ = 3)
    partial : dict element → ndarray (nf,)
        Per element, on the same scale (∫ g_X = 3 N_X / N; Σ_X g_X = total).
    sigma_thz : float
        Standard deviation of the Gaussian line shape (the lag window), THz.
    temperature_k : float
        Mean kinetic temperature of the frames used, K.
    n_frames : int
    frame_interval_fs : float
    nyquist_thz : float
        Highest frequency the frames resolve, 1/(2·frame interval).
    omega_max_thz : float
        The highest peak of ``total`` (a local maximum ≥ 5 % of the largest), THz.
    quantum_factor : ndarray (nf,) or None
        Q(ν) = x/(1−e^{−x}), x = hν/k_BT, when asked for (see the module doc); ``corrected()`` applies it.
    vacf_time_fs, vacf : ndarray
        The normalised total autocorrelation C(τ)/C(0) (before the window) and its lags, fs.
    source : str
        The trajectory.
    notes : tuple of str
        Warnings (weight near the Nyquist frequency: aliasing).
    """

    frequencies_thz: np.ndarray
    total: np.ndarray
    partial: dict
    sigma_thz: float
    temperature_k: float
    n_frames: int
    frame_interval_fs: float
    nyquist_thz: float
    omega_max_thz: float
    quantum_factor: np.ndarray | None = None
    vacf_time_fs: np.ndarray | None = None
    vacf: np.ndarray | None = None
    source: str = ""
    notes: tuple = field(default_factory=tuple)

    kind = "md_dos"

    def corrected(self) -> np.ndarray:
        """``total`` times the quantum correction factor (the classical DOS when none was asked for)."""
        return self.total if self.quantum_factor is None else self.total * self.quantum_factor

    def summary(self) -> dict:
        from ..results import provenance

        return {
            "method": "mass-weighted velocity autocorrelation, Gaussian lag window",
            "sigma_thz": self.sigma_thz,
            "temperature_K": self.temperature_k,
            "n_frames": self.n_frames,
            "frame_interval_fs": self.frame_interval_fs,
            "nyquist_thz": self.nyquist_thz,
            "omega_max_thz": self.omega_max_thz,
            "elements": sorted(self.partial),
            "quantum_correction": self.quantum_factor is not None,
            "normalisation": "integral of total over 0..nyquist = 3 per atom",
            "source": self.source,
            "notes": list(self.notes),
            "provenance": provenance(),
        }

    def _write_files(self, out) -> None:
        cols = [self.frequencies_thz, self.total] + [self.partial[k] for k in sorted(self.partial)]
        head = ["frequency_thz", "total"] + sorted(self.partial)
        if self.quantum_factor is not None:
            cols.append(self.corrected())
            head.append("total_quantum_corrected")
        np.savetxt(out / "dos.csv", np.column_stack(cols), delimiter=",", header=",".join(head), comments="",
                   fmt="%.8g")


def autocorrelation(x: np.ndarray, nlag: int) -> np.ndarray:
    """Re⟨x*(t) x(t+τ)⟩_t for τ < nlag along axis 0 (every time origin, FFT, zero-padded), every other axis
    kept: x (nframes, ...) real or complex → (nlag, ...)."""
    nf = x.shape[0]
    nfft = 1 << int(np.ceil(np.log2(2 * nf)))
    if np.iscomplexobj(x):
        acf = np.fft.ifft(np.abs(np.fft.fft(x, n=nfft, axis=0)) ** 2, axis=0)[:nlag].real
    else:
        acf = np.fft.irfft(np.abs(np.fft.rfft(x, n=nfft, axis=0)) ** 2, n=nfft, axis=0)[:nlag]
    return acf / (nf - np.arange(nlag)).reshape((-1,) + (1,) * (x.ndim - 1))


def lag_window(dt_fs: float, sigma_thz: float) -> tuple[int, float]:
    """(number of lags, window standard deviation in fs) of the Gaussian lag window whose transform is a Gaussian
    line of standard deviation ``sigma_thz``, cut at :data:`WINDOW_SIGMAS`, for frames ``dt_fs`` apart."""
    tau0_fs = 1.0 / (2.0 * np.pi * sigma_thz * units.FS_TO_PS)  # σ THz ↔ 1/(2πσ) ps
    return int(np.ceil(WINDOW_SIGMAS * tau0_fs / dt_fs)) + 1, tau0_fs


def quantum_factor(freqs_thz, temperature_k: float) -> np.ndarray:
    """βhν/(1 − e^{−βhν}) at ``freqs_thz``: the classical spectrum → the energy-loss side of the quantum harmonic
    system (1 at ν = 0)."""
    x = np.asarray(freqs_thz, dtype=float) * units.THZ_TO_K / temperature_k  # hν/kT
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 1e-8, x / (-np.expm1(-x)), 1.0)


def windowed_cosine_transform(acf: np.ndarray, dt_fs: float, tau0_fs: float, freqs_thz) -> np.ndarray:
    """Δt [C(0) + 2 Σ_{τ≥1} w(τ) C(τ) cos(2πντ)] at ``freqs_thz``: acf (nlag, ...) → (nfreq, ...), in acf's
    unit × ps (w the Gaussian lag window of standard deviation ``tau0_fs``)."""
    nlag = acf.shape[0]
    lag_ps = np.arange(nlag) * dt_fs * units.FS_TO_PS
    w = np.exp(-0.5 * (lag_ps / (tau0_fs * units.FS_TO_PS)) ** 2) * np.where(np.arange(nlag) == 0, 1.0, 2.0)
    kernel = np.cos(2.0 * np.pi * np.outer(np.asarray(freqs_thz, dtype=float), lag_ps)) * w[None, :]
    return np.tensordot(kernel, acf, axes=(1, 0)) * (dt_fs * units.FS_TO_PS)


def vacf_dos(
    traj,
    *,
    sigma_thz: float = 0.1,
    frequency_step_thz: float | None = None,
    max_frequency_thz: float | None = None,
    quantum_correction: bool = False,
    production_only: bool = True,
    stride: int = 1,
) -> VibrationalDos:
    """The VACF DOS of a trajectory (:class:`~atomvib.dynamics.md.MDTrajectory`, e.g. from
    :func:`~atomvib.dynamics.md.run_md` or :func:`~atomvib.dynamics.md.read_trajectory`).

    Parameters
    ----------
    sigma_thz : float
        Line width (Gaussian standard deviation) of the DOS, THz; the lag window lasts 4/(2πσ), and the
        trajectory must be at least that long.
    frequency_step_thz : float, optional
        Grid step; default σ/5.
    max_frequency_thz : float, optional
        Top of the grid; default the Nyquist frequency.
    quantum_correction : bool
        Store the harmonic quantum correction factor at the trajectory's mean temperature.
    production_only : bool
        Use the production frames only (our trajectories mark the equilibration).
    stride : int
        Use every ``stride``-th frame.
    """
    if not (np.isfinite(sigma_thz) and sigma_thz > 0):
        raise InputError(f"--dos-sigma must be > 0 THz, got {sigma_thz!r}", fix="give a width such as 0.1 THz")
    t = traj.select(production_only, stride)
    if t.velocities is None:
        raise InputError(f"{t.source or 'the trajectory'} has no velocities and no time between frames",
                         fix="give the time between frames (--timestep FS for a file without velocities)")
    if t.n_frames < 8:
        raise InputError(f"{t.n_frames} frames are too few for a velocity autocorrelation",
                         fix="run longer (--steps) or write frames more often (--write-every)")
    dt = t.frame_interval_fs
    if not (np.isfinite(dt) and dt > 0) or not np.allclose(np.diff(t.time_fs), dt, rtol=1e-6, atol=1e-9):
        raise InputError(f"{t.source or 'the trajectory'}: frames are not evenly spaced in time",
                         fix="give a trajectory written at a fixed interval (or with --stride 1)")
    nlag, tau0_fs = lag_window(dt, sigma_thz)
    length_fs = (t.n_frames - 1) * dt
    if nlag > t.n_frames // 2 + 1:
        need = WINDOW_SIGMAS * 2 / (2 * np.pi * length_fs * units.FS_TO_PS)
        raise InputError(
            f"the trajectory ({length_fs * units.FS_TO_PS:.3g} ps of production) is too short for a DOS line "
            f"width of {sigma_thz:g} THz (it needs {2 * WINDOW_SIGMAS * tau0_fs * units.FS_TO_PS:.3g} ps)",
            fix=f"run longer (--steps), or give --dos-sigma {np.ceil(need * 100) / 100:g} or more",
        )
    v = np.asarray(t.velocities, dtype=float)
    m = np.asarray(t.masses, dtype=float)
    acf = autocorrelation(v, nlag).sum(axis=2) * m[None, :]  # (nlag, natoms): m ⟨v·v⟩
    lag_fs = np.arange(nlag) * dt
    nyquist = 0.5 / (dt * units.FS_TO_PS)  # THz
    top = nyquist if max_frequency_thz is None else min(float(max_frequency_thz), nyquist)
    step = frequency_step_thz or sigma_thz / 5.0
    freqs = np.arange(0.0, top + 0.5 * step, step)
    symbols = t.structure.symbols
    partial = {}
    for el in sorted(set(symbols)):
        idx = [i for i, s in enumerate(symbols) if s == el]
        partial[el] = windowed_cosine_transform(acf[:, idx].sum(axis=1), dt, tau0_fs, freqs)
    total = sum(partial.values())
    area = np.trapezoid(total, freqs) if hasattr(np, "trapezoid") else np.trapz(total, freqs)
    scale = 3.0 / area if area > 0 else 0.0
    partial = {k: g * scale for k, g in partial.items()}
    total = total * scale
    temps = t.temperature_k
    temp = float(np.mean(temps))
    qf = None
    if quantum_correction:
        qf = quantum_factor(freqs, temp)
    notes = []
    high = freqs > 0.9 * nyquist
    if high.any() and total[high].max() > 0.05 * total.max():
        notes.append(f"DOS weight near the Nyquist frequency {nyquist:.3g} THz: modes above it are aliased; "
                     "write frames more often (--write-every)")
    c0 = acf[0].sum()
    return VibrationalDos(
        frequencies_thz=freqs, total=total, partial=partial, sigma_thz=float(sigma_thz), temperature_k=temp,
        n_frames=int(t.n_frames), frame_interval_fs=float(dt), nyquist_thz=float(nyquist),
        omega_max_thz=highest_peak(freqs, total), quantum_factor=qf, vacf_time_fs=lag_fs,
        vacf=acf.sum(axis=1) / c0 if c0 > 0 else acf.sum(axis=1), source=t.source, notes=tuple(notes),
    )


def highest_peak(freqs, g, fraction: float = 0.05) -> float:
    """The frequency of the highest-frequency local maximum of ``g`` that is ≥ ``fraction`` of its maximum."""
    g = np.asarray(g, dtype=float)
    if g.size < 3 or g.max() <= 0:
        return float("nan")
    inner = (g[1:-1] >= g[:-2]) & (g[1:-1] > g[2:]) & (g[1:-1] >= fraction * g.max())
    idx = np.flatnonzero(inner) + 1
    if idx.size == 0:
        return float(freqs[int(np.argmax(g))])
    k = int(idx[-1])
    # parabola through the three points around the maximum
    y0, y1, y2 = g[k - 1], g[k], g[k + 1]
    den = y0 - 2 * y1 + y2
    shift = 0.5 * (y0 - y2) / den if den != 0 else 0.0
    return float(freqs[k] + shift * (freqs[1] - freqs[0]))


def dos_overlap(freqs_a, g_a, freqs_b, g_b) -> float:
    """∫ min(ĝ_a, ĝ_b) dν of the two DOS, each normalised to unit area (1: identical, 0: disjoint), on the
    finer of the two grids over their common range (linear interpolation)."""
    fa, fb = np.asarray(freqs_a, float), np.asarray(freqs_b, float)
    lo, hi = max(fa[0], fb[0]), min(fa[-1], fb[-1])
    step = min(np.median(np.diff(fa)), np.median(np.diff(fb)))
    x = np.arange(lo, hi + 0.5 * step, step)
    a = np.clip(np.interp(x, fa, g_a), 0, None)
    b = np.clip(np.interp(x, fb, g_b), 0, None)
    trap = np.trapezoid if hasattr(np, "trapezoid") else np.trapz
    a, b = a / trap(a, x), b / trap(b, x)
    return float(trap(np.minimum(a, b), x))


def broadened_dos(frequencies_thz, grid_thz, sigma_thz: float, weights=None) -> np.ndarray:
    """Σ_k w_k G(ν − ν_k; σ) on ``grid_thz`` (Gaussians of unit area; w_k = 1 by default), states/THz."""
    from ..spectra.lineshape import gaussian_sum

    f = np.asarray(frequencies_thz, dtype=float).ravel()
    w = np.ones_like(f) if weights is None else np.asarray(weights, dtype=float).ravel()
    return gaussian_sum(f, w[None, :], np.asarray(grid_thz, dtype=float), sigma_thz)[0]


def commensurate_frequencies(phonons, supercell_matrix) -> np.ndarray:
    """Harmonic frequencies (THz) at the q-points commensurate with ``supercell_matrix`` (phonopy's convention,
    of the phonons' unit cell): the only modes an MD run in that supercell has. Shape (nq · nbands,)."""
    from phonopy.harmonic.dynmat_to_fc import get_commensurate_points

    ph = phonons.to_phonopy() if hasattr(phonons, "to_phonopy") else phonons.phonopy()
    # the supercell relative to the primitive cell: unit @ S = (unit @ P) @ (P⁻¹ S)
    m = np.linalg.solve(np.asarray(ph.primitive_matrix, dtype=float), np.asarray(supercell_matrix, dtype=float))
    ph.run_qpoints(get_commensurate_points(np.rint(m).astype(int)))
    return np.asarray(ph.qpoints.frequencies).ravel()


def harmonic_md_spectrum(frequencies_thz, grid_thz, sigma_thz: float, friction_per_ps: float = 0.0) -> np.ndarray:
    """The DOS an MD run of a harmonic crystal gives through :func:`vacf_dos` (∫ = 3 per mode/3): each mode
    (``frequencies_thz``, e.g. :func:`commensurate_frequencies`) a line with the velocity spectrum of a
    Langevin-damped oscillator, ∝ g ν²/((ν_k² − ν²)² + g²ν²) with g = γ/2π (no thermostat: a δ line), convolved
    with the window's Gaussian of standard deviation σ. Normalised to ∫ = 3 (per atom, on ``grid_thz``)."""
    from ..spectra.lineshape import gaussian_sum

    f = np.asarray(frequencies_thz, dtype=float).ravel()
    f = f[f > 1e-3]
    grid = np.asarray(grid_thz, dtype=float)
    trap = np.trapezoid if hasattr(np, "trapezoid") else np.trapz
    g = float(friction_per_ps) / (2.0 * np.pi)  # THz
    if g <= 0:
        out = gaussian_sum(f, np.ones((1, f.size)), grid, sigma_thz)[0]
    else:
        step = min(sigma_thz, g) / 10.0
        fine = np.arange(0.0, grid[-1] + 10 * sigma_thz, step)
        lines = np.zeros_like(fine)
        for nk in f:
            lor = g * fine**2 / ((nk**2 - fine**2) ** 2 + (g * fine) ** 2)
            lines += lor / trap(lor, fine)
        out = gaussian_sum(fine, lines[None, :] * step, grid, sigma_thz)[0]
    area = trap(out, grid)
    return out * (3.0 / area) if area > 0 else out
