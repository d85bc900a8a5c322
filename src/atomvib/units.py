"""Units and conversions: the one place where atomvib converts between units.

Internal unit system
--------------------
energy eV, length Å, mass amu (unified atomic mass unit), frequency THz (ordinary
frequency ν, not angular ω), temperature K, wavevector Å^-1 including the factor 2π
(``|Q| = 2π/d``). Names carry the unit where it could be ambiguous (``frequencies_thz``,
``energy_mev``). Imaginary modes are stored as negative frequencies, the phonopy convention.

Every physical constant atomvib uses is defined here, from one set: CODATA 2018. The exact SI
constants (h, e, k_B, c, N_A, and R = N_A k_B) are taken from ``scipy.constants`` (they are the same
in every CODATA set since 2018); the measured ones (atomic mass constant, neutron mass, ε₀, Bohr
radius, Hartree energy) are written out below as CODATA 2018 values, because SciPy ≥ 1.15 ships
CODATA 2022 and the numbers must not depend on the SciPy version. Nothing in this module is
mutable: there is no global "current unit".
"""

from __future__ import annotations

import numpy as np
from scipy import constants as _c

# --- CODATA 2018, exact in the SI since 2019 (scipy.constants) --------------------------------
#: Planck constant in eV·s
H_EV_S: float = _c.h / _c.e
#: reduced Planck constant in eV·s
HBAR_EV_S: float = _c.hbar / _c.e
#: Boltzmann constant in eV/K
KB_EV_PER_K: float = _c.k / _c.e
#: Boltzmann constant in meV/K
KB_MEV_PER_K: float = KB_EV_PER_K * 1e3
#: Avogadro constant in 1/mol
AVOGADRO: float = _c.N_A
#: molar gas constant R = N_A k_B in J/(K·mol)
GAS_CONSTANT_J_PER_K_PER_MOL: float = _c.N_A * _c.k
#: one electronvolt in joules
EV_J: float = _c.e
#: speed of light in cm/s
C_CM_PER_S: float = _c.c * 100.0

# --- CODATA 2018, measured (written out: SciPy ≥ 1.15 has CODATA 2022) -------------------------
#: atomic mass constant (1 amu) in kg
AMU_KG: float = 1.66053906660e-27
#: neutron mass in kg
_NEUTRON_MASS_KG: float = 1.67492749804e-27
#: vacuum electric permittivity ε₀ in F/m
_EPSILON0_F_PER_M: float = 8.8541878128e-12
#: Bohr radius in Å
BOHR_A: float = 0.529177210903
#: Hartree energy in eV
HARTREE_EV: float = 27.211386245988
#: 1 Rydberg in eV
RYDBERG_EV: float = HARTREE_EV / 2.0
#: 1 kcal in J (thermochemical calorie)
KCAL_J: float = 4184.0

# --- derived -----------------------------------------------------------------------------------
#: 1 THz expressed as energy in meV (h·1e12 Hz / e · 1000)
THZ_TO_MEV: float = H_EV_S * 1e12 * 1e3
#: 1 THz expressed in wavenumbers cm^-1
THZ_TO_CM1: float = 1e12 / C_CM_PER_S
#: 1 meV in cm^-1
MEV_TO_CM1: float = THZ_TO_CM1 / THZ_TO_MEV
#: 1 THz expressed as a temperature hν/k_B in K
THZ_TO_K: float = H_EV_S * 1e12 / KB_EV_PER_K
#: one eV per atom-mole, in kJ/mol
EV_TO_KJ_PER_MOL: float = EV_J * AVOGADRO / 1000.0
#: 1 eV/Å³ (stress, pressure) in GPa
EV_PER_A3_TO_GPA: float = EV_J * 1e30 / 1e9
#: one femtosecond in ASE's time unit Å·sqrt(amu/eV) (ASE's integrators take their timestep in it); a velocity
#: in Å per ASE time unit times FS_TO_ASE_TIME is in Å/fs
FS_TO_ASE_TIME: float = 1e-15 / (1e-10 * np.sqrt(AMU_KG / EV_J))
#: one femtosecond in picoseconds
FS_TO_PS: float = 1e-3
#: one frequency unit 1/fs in THz
PER_FS_TO_THZ: float = 1e3
#: seconds per day (MD throughput in ns/day)
SECONDS_PER_DAY: float = 86400.0
#: one picosecond in nanoseconds
PS_TO_NS: float = 1e-3

#: sqrt(eV / (Å² amu)) in angular frequency rad/s, divided by 2π and 1e12 gives THz:
#: the factor that turns eigenvalues of the mass-weighted force-constant matrix (eV/Å²/amu)
#: into frequencies in THz.
EV_A2_AMU_TO_THZ: float = np.sqrt(EV_J / (1e-20 * AMU_KG)) / (2.0 * np.pi) / 1e12

#: neutron mass in amu
NEUTRON_MASS_AMU: float = _NEUTRON_MASS_KG / AMU_KG
#: E[meV] = NEUTRON_E_MEV_PER_K2 * k[Å^-1]^2 for a free neutron (ħ²/2m_n)
NEUTRON_E_MEV_PER_K2: float = (_c.hbar**2 / (2.0 * _NEUTRON_MASS_KG)) / _c.e * 1e3 * 1e20
#: ħ²/(2·1 amu) in meV·Å²: the recoil ħ²/(2m) of a mass m (amu) is HBAR2_2AMU_MEV_A2 / m
HBAR2_2AMU_MEV_A2: float = (_c.hbar**2 / (2.0 * AMU_KG)) / _c.e * 1e3 * 1e20

#: e²/(4πε₀) in eV·Å (the Coulomb constant for charges in e): α[Å³] = COULOMB_EV_A · ∂μ[e·Å]/∂F[V/Å]
COULOMB_EV_A: float = _c.e / (4.0 * np.pi * _EPSILON0_F_PER_M) * 1e10
#: IR intensity (e/√amu)² → km/mol: N_A / (12 ε₀ c²) · e² / amu / 1000 (the π of N_A π/(3c²)
#: cancels the 4π of 4πε₀; Wilson, Decius & Cross; Gaussian/ORCA "IR Int")
KM_PER_MOL_PER_E2_AMU: float = _c.N_A / (12.0 * _EPSILON0_F_PER_M * _c.c**2) * _c.e**2 / AMU_KG / 1000.0
#: 1 nm of wavelength ↔ wavenumber: ν[cm^-1] = NM_CM1 / λ[nm] (1 cm = 1e7 nm)
NM_CM1: float = 1e7

_TO_THZ = {"thz": 1.0, "mev": 1.0 / THZ_TO_MEV, "cm-1": 1.0 / THZ_TO_CM1, "cm1": 1.0 / THZ_TO_CM1}


def frequency_factor(from_unit: str, to_unit: str) -> float:
    """Multiplicative factor converting a frequency/energy axis between ``THz``, ``meV`` and ``cm-1``.

    Parameters
    ----------
    from_unit, to_unit : str
        One of ``"THz"``, ``"meV"``, ``"cm-1"`` (case-insensitive; ``"cm1"`` also accepted).
    """
    try:
        return _TO_THZ[from_unit.lower()] / _TO_THZ[to_unit.lower()]
    except KeyError as exc:
        from .errors import InputError

        raise InputError(f"unknown frequency unit {exc.args[0]!r}", fix="use one of THz, meV, cm-1") from None


def convert_frequency(values, from_unit: str, to_unit: str) -> np.ndarray:
    """Convert an array of frequencies/energies between ``THz``, ``meV`` and ``cm-1``."""
    return np.asarray(values, dtype=float) * frequency_factor(from_unit, to_unit)
