"""Units and conversions: the one place where atomvib converts between units.

Internal unit system
--------------------
energy eV, length Å, mass amu (unified atomic mass unit), frequency THz (ordinary
frequency ν, not angular ω), temperature K, wavevector Å^-1 including the factor 2π
(``|Q| = 2π/d``). Names carry the unit where it could be ambiguous (``frequencies_thz``,
``energy_mev``). Imaginary modes are stored as negative frequencies, the phonopy convention.

Every constant here is CODATA 2018 (as in ``scipy.constants``). Nothing in this module is
mutable: there is no global "current unit".
"""

from __future__ import annotations

import numpy as np
from scipy import constants as _c

#: Planck constant in eV·s
H_EV_S: float = _c.h / _c.e
#: reduced Planck constant in eV·s
HBAR_EV_S: float = _c.hbar / _c.e
#: Boltzmann constant in eV/K
KB_EV_PER_K: float = _c.k / _c.e
#: Avogadro constant in 1/mol
AVOGADRO: float = _c.N_A
#: one electronvolt in joules
EV_J: float = _c.e
#: amu in kg
AMU_KG: float = _c.atomic_mass
#: speed of light in cm/s
C_CM_PER_S: float = _c.c * 100.0

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

#: sqrt(eV / (Å² amu)) in angular frequency rad/s, divided by 2π and 1e12 gives THz:
#: the factor that turns eigenvalues of the mass-weighted force-constant matrix (eV/Å²/amu)
#: into frequencies in THz.
EV_A2_AMU_TO_THZ: float = np.sqrt(EV_J / (1e-20 * AMU_KG)) / (2.0 * np.pi) / 1e12

#: neutron mass in amu (CODATA 2018)
NEUTRON_MASS_AMU: float = _c.m_n / _c.atomic_mass
#: E[meV] = NEUTRON_E_MEV_PER_K2 * k[Å^-1]^2 for a free neutron (ħ²/2m_n)
NEUTRON_E_MEV_PER_K2: float = (_c.hbar**2 / (2.0 * _c.m_n)) / _c.e * 1e3 * 1e20

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

        raise InputError(
            f"unknown frequency unit {exc.args[0]!r}", fix="use one of THz, meV, cm-1"
        ) from None


def convert_frequency(values, from_unit: str, to_unit: str) -> np.ndarray:
    """Convert an array of frequencies/energies between ``THz``, ``meV`` and ``cm-1``."""
    return np.asarray(values, dtype=float) * frequency_factor(from_unit, to_unit)
