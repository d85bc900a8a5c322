"""Harmonic thermal properties from phonon frequencies or from a DOS.

Formulas (per mode of frequency ν, x = hν / k_B T):
``F = hν/2 + k_B T ln(1 - e^-x)``, ``S = k_B [x/(e^x - 1) - ln(1 - e^-x)]``,
``C_v = k_B x² e^x / (e^x - 1)²``, ``E = hν/2 + hν/(e^x - 1)``.
Modes at or below ``cutoff_thz`` (imaginary or acoustic at Γ) are skipped, as phonopy does.
The same functions serve the mesh route (weights = q-point weights) and the DOS route used by the
learned predictor (weights = DOS · Δν), so both give identical numbers on identical spectra.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import units


@dataclass(frozen=True, eq=False)
class Thermal:
    """Thermal properties per mole of the analysed cell.

    Attributes
    ----------
    temperatures_k : ndarray, shape (nt,), K
    free_energy_kj_per_mol : ndarray, shape (nt,), kJ/mol (includes zero-point energy)
    entropy_j_per_k_per_mol : ndarray, shape (nt,), J/K/mol
    heat_capacity_j_per_k_per_mol : ndarray, shape (nt,), J/K/mol (constant volume)
    internal_energy_kj_per_mol : ndarray, shape (nt,), kJ/mol (includes zero-point energy)
    """

    temperatures_k: np.ndarray
    free_energy_kj_per_mol: np.ndarray
    entropy_j_per_k_per_mol: np.ndarray
    heat_capacity_j_per_k_per_mol: np.ndarray
    internal_energy_kj_per_mol: np.ndarray

    def at(self, temperature_k: float) -> dict:
        """Values at one temperature (linear interpolation on the grid)."""
        t = self.temperatures_k
        f = lambda y: float(np.interp(temperature_k, t, y))  # noqa: E731
        return {
            "temperature_K": float(temperature_k),
            "free_energy_kJ_per_mol": f(self.free_energy_kj_per_mol),
            "entropy_J_per_K_per_mol": f(self.entropy_j_per_k_per_mol),
            "heat_capacity_J_per_K_per_mol": f(self.heat_capacity_j_per_k_per_mol),
            "internal_energy_kJ_per_mol": f(self.internal_energy_kj_per_mol),
        }

    def to_dict(self) -> dict:
        return {
            "temperature_K": self.temperatures_k.tolist(),
            "free_energy_kJ_per_mol": self.free_energy_kj_per_mol.tolist(),
            "entropy_J_per_K_per_mol": self.entropy_j_per_k_per_mol.tolist(),
            "heat_capacity_J_per_K_per_mol": self.heat_capacity_j_per_k_per_mol.tolist(),
            "internal_energy_kJ_per_mol": self.internal_energy_kj_per_mol.tolist(),
        }


def bose_occupation(energy_mev, temperature_k: float | None) -> np.ndarray:
    """Bose occupation n(E) = 1/(e^(E/k_B T) − 1), same shape as ``energy_mev`` (meV); 0 where E ≤ 0 or T is
    None or ≤ 0.

    The one Bose function of atomvib: INS (Stokes n + 1, anti-Stokes n), the coherent powder map,
    the Raman cross-section factor and the DOS-based spectra all call it.
    """
    e = np.asarray(energy_mev, dtype=float)
    if not temperature_k or temperature_k <= 0:
        return np.zeros_like(e)
    x = e / (units.KB_MEV_PER_K * temperature_k)
    with np.errstate(over="ignore"):
        return np.where(x > 0, 1.0 / np.expm1(np.clip(x, 1e-300, 700.0)), 0.0)


def thermal_from_modes(
    frequencies_thz, weights, temperatures_k, cutoff_thz: float = 1e-3, normalize_weights: bool = True
) -> Thermal:
    """Thermal properties from mode frequencies.

    Parameters
    ----------
    frequencies_thz : array, shape (nq, nmodes) or (nmodes,), THz
    weights : array, shape (nq,) or None
        q-point weights (normalised to sum 1 when ``normalize_weights``); None = equal weights.
    temperatures_k : array, shape (nt,), K
    """
    freqs = np.atleast_2d(np.asarray(frequencies_thz, float))
    w = np.ones(freqs.shape[0]) if weights is None else np.asarray(weights, float)
    if normalize_weights:
        w = w / w.sum()
    ww = np.broadcast_to(w[:, None], freqs.shape).ravel()
    nu = freqs.ravel()
    keep = nu > cutoff_thz
    return thermal_from_spectrum(nu[keep], ww[keep], temperatures_k)


def thermal_from_spectrum(frequencies_thz, weights, temperatures_k) -> Thermal:
    """Thermal properties of a set of oscillators ``frequencies_thz`` (>0) with ``weights`` (number of modes each)."""
    nu = np.asarray(frequencies_thz, float)
    w = np.asarray(weights, float)
    t = np.asarray(temperatures_k, float)
    e_ev = units.H_EV_S * 1e12 * nu  # hν per mode, eV
    kb = units.KB_EV_PER_K
    conv = units.EV_TO_KJ_PER_MOL
    zpe = 0.5 * np.sum(w * e_ev)
    F, S, C, E = (np.empty_like(t) for _ in range(4))
    for k, temp in enumerate(t):
        if temp < 1e-8:
            F[k] = E[k] = zpe
            S[k] = C[k] = 0.0
            continue
        x = e_ev / (kb * temp)
        with np.errstate(over="ignore"):
            em1 = np.expm1(x)  # e^x - 1
            n = 1.0 / em1
            log_term = np.log1p(-np.exp(-x))
            cv_mode = np.where(x < 500, x**2 * np.exp(np.minimum(x, 500)) / em1**2, 0.0)
        F[k] = zpe + kb * temp * np.sum(w * log_term)
        S[k] = kb * np.sum(w * (x * n - log_term))
        C[k] = kb * np.sum(w * cv_mode)
        E[k] = zpe + np.sum(w * e_ev * n)
    return Thermal(
        temperatures_k=t,
        free_energy_kj_per_mol=F * conv,
        entropy_j_per_k_per_mol=S * conv * 1000.0,
        heat_capacity_j_per_k_per_mol=C * conv * 1000.0,
        internal_energy_kj_per_mol=E * conv,
    )


def thermal_from_dos(frequencies_thz, dos_per_thz, temperatures_k) -> Thermal:
    """Thermal properties from a DOS on a uniform axis (states per THz per cell; integrates to 3N)."""
    nu = np.asarray(frequencies_thz, float)
    g = np.asarray(dos_per_thz, float)
    dnu = np.gradient(nu)
    keep = nu > 1e-6
    return thermal_from_spectrum(nu[keep], (g * dnu)[keep], temperatures_k)
