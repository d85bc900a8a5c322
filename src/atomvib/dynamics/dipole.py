"""IR absorption from the dipole autocorrelation of an MD trajectory (molecules and molecular crystals with an
engine that gives the dipole: xtb, PySCF).

The classical absorption of a system whose dipole M(t) fluctuates at temperature T, with the harmonic quantum
correction (Ramírez et al., J. Chem. Phys. 121, 3973 (2004)), integrates over one band to the harmonic IR
intensity of the modes in it:

    I(ν) = K / (k_B T) · 2 G(ν),     G(ν) = ∫ ⟨Ṁ(0)·Ṁ(τ)⟩ w(τ) cos(2πντ) dτ,

with K = N_A/(12 ε₀ c²) the factor of :data:`atomvib.units.KM_PER_MOL_PER_E2_AMU`. For a
harmonic molecule with a dipole linear in the displacements, every normal mode carries ⟨Q̇_k²⟩ = k_B T and the
band of mode k integrates to K |∂μ/∂Q_k|², which is the number ``atomvib ir`` gives (km/mol): the same unit, the
same scale, so the two spectra lie on one axis. Anharmonicity shifts and broadens the bands (overtones and
combinations appear, weakly); a free molecule also rotates, which puts the rotational band of a polar molecule
below ~200 cm⁻¹ at 300 K. The window w(τ) is the Gaussian lag window of :mod:`atomvib.dynamics.vacf` (each line
a Gaussian of standard deviation σ, plus the thermostat's Lorentzian).

Ṁ comes from central differences of the frames' dipoles, (M(t+Δ) − M(t−Δ))/2Δ, whose transfer function
sin(2πνΔ)/(2πνΔ) is divided out of the spectrum exactly (the axis stops where it falls below 1/2, at 0.6 of the
Nyquist frequency: write frames every ≤ 1 fs for O–H stretches). Why not (2πν)² times the spectrum of M itself:
the permanent dipole of a rotating polar molecule has a correlation thousands of times larger than the
vibrational one, and the part of it the lag window cuts (e⁻⁸ at 4σ) leaks to every frequency, where (2πν)²
multiplies it — twice the true bend intensity of water at 100 K. The derivative has no such weight at low ν.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import units
from ..errors import InputError
from ..results import Result
from .vacf import WINDOW_SIGMAS, autocorrelation, lag_window, windowed_cosine_transform


@dataclass(frozen=True, eq=False)
class DipoleSpectrum(Result):
    """IR absorption from an MD trajectory's dipoles.

    Attributes
    ----------
    wavenumbers_cm1 : ndarray, shape (n,), cm⁻¹
    intensity : ndarray, shape (n,), km/mol per cm⁻¹
        Integrates over a band to the IR intensity (km/mol) of the modes in it (see the module docstring).
    sigma_cm1 : float
        Line width (Gaussian σ) of the lag window, cm⁻¹.
    temperature_k : float
        Mean kinetic temperature of the frames, K.
    n_frames : int
    frame_interval_fs : float
    source : str
    notes : tuple of str
    """

    wavenumbers_cm1: np.ndarray
    intensity: np.ndarray
    sigma_cm1: float
    temperature_k: float
    n_frames: int
    frame_interval_fs: float
    source: str = ""
    notes: tuple = field(default_factory=tuple)

    def band(self, lo_cm1: float, hi_cm1: float) -> float:
        """Integrated intensity between two wavenumbers, km/mol."""
        sel = (self.wavenumbers_cm1 >= lo_cm1) & (self.wavenumbers_cm1 <= hi_cm1)
        x, y = self.wavenumbers_cm1[sel], self.intensity[sel]
        return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x))) if len(x) > 1 else 0.0

    def peak(self, lo_cm1: float, hi_cm1: float) -> float:
        """Wavenumber of the highest point between two wavenumbers, cm⁻¹."""
        sel = np.flatnonzero((self.wavenumbers_cm1 >= lo_cm1) & (self.wavenumbers_cm1 <= hi_cm1))
        return float(self.wavenumbers_cm1[sel[np.argmax(self.intensity[sel])]])

    def summary(self) -> dict:
        return {"temperature_K": self.temperature_k, "n_frames": self.n_frames, "sigma_cm-1": self.sigma_cm1,
                "frame_interval_fs": self.frame_interval_fs, "total_km_per_mol": self.band(0, np.inf),
                "intensity_unit": "km/mol per cm-1", "source": self.source, "notes": list(self.notes)}

    def _write_files(self, out) -> None:
        np.savetxt(out / "ir_md.csv", np.column_stack([self.wavenumbers_cm1, self.intensity]), delimiter=",",
                   header="wavenumber_cm-1,intensity_km_per_mol_per_cm-1", comments="", fmt="%.8g")


def dipole_ir(traj, *, sigma_cm1: float = 10.0, max_wavenumber_cm1: float | None = None,
              production_only: bool = True) -> DipoleSpectrum:
    """IR spectrum from the dipole autocorrelation of a trajectory with dipoles (``traj.dipoles``).

    Parameters
    ----------
    sigma_cm1 : float
        Gaussian line width of the lag window, cm⁻¹; the trajectory must last at least 8/(2πσ).
    max_wavenumber_cm1 : float, optional
        Top of the axis; default the Nyquist frequency of the frames.
    """
    t = traj.select(production_only, 1)
    if t.dipoles is None:
        raise InputError(f"{t.source or 'the trajectory'} has no dipoles",
                         fix="run the MD with an engine that gives the dipole (--engine xtb or pyscf)")
    if t.n_frames < 8:
        raise InputError(f"{t.n_frames} frames are too few for a dipole autocorrelation", fix="run longer (--steps)")
    if not (np.isfinite(sigma_cm1) and sigma_cm1 > 0):
        raise InputError(f"--ir-sigma must be > 0 cm-1, got {sigma_cm1!r}", fix="give a width such as 10 cm-1")
    dt = t.frame_interval_fs
    if not np.allclose(np.diff(t.time_fs), dt, rtol=1e-6, atol=1e-9):
        raise InputError(f"{t.source or 'the trajectory'}: frames are not evenly spaced in time",
                         fix="give a trajectory written at a fixed interval")
    sigma_thz = sigma_cm1 / units.THZ_TO_CM1
    nlag, tau0_fs = lag_window(dt, sigma_thz)
    nf = t.n_frames
    if nlag > nf // 2 + 1:
        need_ps = 2 * WINDOW_SIGMAS * tau0_fs * units.FS_TO_PS
        raise InputError(f"the trajectory ({(nf - 1) * dt * units.FS_TO_PS:.3g} ps) is too short for an IR line width "
                         f"of {sigma_cm1:g} cm-1 (it needs {need_ps:.3g} ps)", fix="run longer, or give a larger --ir-sigma")
    m = np.asarray(t.dipoles, dtype=float)
    m = (m[2:] - m[:-2]) / (2.0 * dt * units.FS_TO_PS)  # Ṁ, e·Å/ps, at the interior frames
    acf = autocorrelation(m, nlag).sum(axis=1)
    nyquist_thz = 0.5 / (dt * units.FS_TO_PS)
    # the central difference's transfer function sin(x)/x, x = 2πνΔ, falls to 1/2 at x = 1.895
    usable_thz = 1.895 / (2.0 * np.pi * dt * units.FS_TO_PS)
    top_thz = usable_thz if max_wavenumber_cm1 is None else min(max_wavenumber_cm1 / units.THZ_TO_CM1, usable_thz)
    step_thz = sigma_thz / 5.0
    nu = np.arange(0.0, top_thz + 0.5 * step_thz, step_thz)
    g = windowed_cosine_transform(acf, dt, tau0_fs, nu)  # (eÅ)²/ps
    x = 2.0 * np.pi * nu * dt * units.FS_TO_PS
    g = g / np.where(x > 0, np.sin(x) / np.where(x > 0, x, 1.0), 1.0) ** 2
    temp = float(np.mean(t.temperature_k))
    kt_ev = units.KB_EV_PER_K * temp
    # 2G: (eÅ)²/ps² per THz → (eÅ)²/(ASE time)² per THz; / k_BT (eV) → e²/amu per THz; × K → km/mol per THz
    ps_in_ase_time = 1.0 / units.FS_TO_PS * units.FS_TO_ASE_TIME
    inten = units.KM_PER_MOL_PER_E2_AMU * 2.0 * g / ps_in_ase_time ** 2 / kt_ev
    notes = []
    high = nu > 0.9 * top_thz
    if high.any() and inten[high].max() > 0.05 * inten.max():
        notes.append(f"IR weight near the top of the axis {top_thz * units.THZ_TO_CM1:.0f} cm-1 (0.6 of the Nyquist "
                     f"frequency {nyquist_thz * units.THZ_TO_CM1:.0f} cm-1): bands above it are lost or aliased; write "
                     "frames more often (--write-every)")
    return DipoleSpectrum(wavenumbers_cm1=nu * units.THZ_TO_CM1, intensity=inten / units.THZ_TO_CM1,
                          sigma_cm1=float(sigma_cm1), temperature_k=temp, n_frames=int(nf), frame_interval_fs=float(dt),
                          source=t.source, notes=tuple(notes))
