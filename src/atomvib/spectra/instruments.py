"""Neutron spectrometers: kinematics (which |Q| goes with which energy transfer) and energy resolution.

Indirect geometry (VISION, TOSCA): the analysers fix the final energy ``Ef``; each detector bank sits
at one scattering angle θ, so every energy transfer E has one momentum transfer

    |Q|² = k_i² + k_f² − 2 k_i k_f cos θ,   k² = E_neutron / (ħ²/2m_n)   (E_i = E_f + E).

Direct geometry (ARCS, SEQUOIA, MAPS, MARI, MERLIN, generic): the incident energy ``Ei`` is chosen,
the detectors cover a range of angles, so each E has a band of |Q| between the kinematic limits at the
smallest and largest angle.

Sources of the numbers
----------------------
* VISION: exactly OCLIMAX 3.0's "VISION" preset (Cheng et al., J. Chem. Theory Comput. 15, 1974
  (2019)): Ef = 32 cm⁻¹ = 3.9675 meV, banks at 135° (backward) and 45° (forward), Gaussian
  σ(E) = 0.30996 + 0.005 E + 8.0655e-7 E² meV (= 2.5 cm⁻¹ + 0.005 E + 1e-7 E² cm⁻¹). Checked against
  OCLIMAX output in ``tests/test_ins.py``.
* TOSCA: final energies 3.32 meV (backward, 134.99°) and 3.35 meV (forward, 45°) from the ``resins``
  package's TOSCA data (Mitchell, Parker, Ramirez-Cuesta, Tomkinson, *Vibrational Spectroscopy with
  Neutrons*, 2005); resolution: the AbINS polynomial in ``resins`` (Dymkowski et al., Physica B 551,
  443 (2018)), the same σ(E) as above (FWHM/E ≈ 1.9 % at 100 meV, 1.5 % at 250 meV).
* Direct geometry: angle ranges from the instruments' published detector coverage; the energy
  resolution from ``resins`` (PyChop fits, the model Mantid uses) at each instrument's default
  chopper setting, or a user-given Gaussian width for ``generic``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..units import MEV_TO_CM1, NEUTRON_E_MEV_PER_K2
from .lineshape import FWHM_PER_SIGMA

#: OCLIMAX/AbINS quadratic: σ(E) = c0 + c1 E + c2 E² (meV, Gaussian standard deviation), from
#: σ = 2.5 cm⁻¹ + 0.005 E + 1e-7 E² cm⁻¹ (E in cm⁻¹)
_ABINS_SIGMA_MEV = (2.5 / MEV_TO_CM1, 0.005, 1e-7 * MEV_TO_CM1)


@dataclass(frozen=True, eq=False)
class Bank:
    """One detector bank of an indirect-geometry spectrometer."""

    name: str
    angle_deg: float
    final_energy_mev: float


@dataclass(frozen=True, eq=False)
class IndirectInstrument:
    """Fixed-final-energy spectrometer with Gaussian resolution σ(E) = c0 + c1·E + c2·E² (meV)."""

    name: str
    banks: tuple
    sigma_coeffs_mev: tuple = _ABINS_SIGMA_MEV
    kind = "indirect"

    def sigma_mev(self, energy_mev) -> np.ndarray:
        """Gaussian standard deviation at energy transfer ``energy_mev`` (any shape), meV."""
        e = np.asarray(energy_mev, dtype=float)
        c0, c1, c2 = self.sigma_coeffs_mev
        return c0 + c1 * e + c2 * e**2

    def bank(self, name: str) -> Bank:
        for b in self.banks:
            if b.name == name:
                return b
        raise InputError(
            f"{self.name} has no bank {name!r}", fix=f"use one of {', '.join(b.name for b in self.banks)}"
        )

    def q2(self, energy_mev, bank: str | Bank) -> np.ndarray:
        """|Q|² (Å⁻²) of energy transfer ``energy_mev`` (any shape) recorded in ``bank``."""
        b = self.bank(bank) if isinstance(bank, str) else bank
        e = np.asarray(energy_mev, dtype=float)
        return q2_from_angle(b.final_energy_mev + e, b.final_energy_mev, b.angle_deg)


def q2_from_angle(ei_mev, ef_mev, angle_deg) -> np.ndarray:
    """|Q|² in Å⁻² for incident/final neutron energies (meV) and scattering angle (degrees)."""
    ki2 = np.asarray(ei_mev, dtype=float) / NEUTRON_E_MEV_PER_K2
    kf2 = np.asarray(ef_mev, dtype=float) / NEUTRON_E_MEV_PER_K2
    return ki2 + kf2 - 2.0 * np.sqrt(ki2 * kf2) * np.cos(np.radians(angle_deg))


@dataclass(frozen=True, eq=False)
class DirectInstrument:
    """Direct-geometry chopper spectrometer: detector angle range and energy resolution at ``ei_mev``.

    ``resolution_fwhm_mev`` (generic only) is a constant Gaussian FWHM; otherwise ``resins`` gives
    the FWHM as a function of energy transfer for the instrument and incident energy.
    """

    name: str
    angle_range_deg: tuple
    resins_name: str | None = None
    resolution_fwhm_mev: float | None = None
    options: dict = field(default_factory=dict)
    kind = "direct"

    def q_limits(self, ei_mev: float, energy_mev) -> tuple[np.ndarray, np.ndarray]:
        """Kinematic |Q| range (Å⁻¹) at each energy transfer, shape of ``energy_mev``; NaN where E > Ei."""
        e = np.asarray(energy_mev, dtype=float)
        ef = ei_mev - e
        ok = ef > 0
        ef = np.where(ok, ef, np.nan)
        lo = np.sqrt(np.clip(q2_from_angle(ei_mev, ef, self.angle_range_deg[0]), 0, None))
        hi = np.sqrt(np.clip(q2_from_angle(ei_mev, ef, self.angle_range_deg[1]), 0, None))
        return lo, hi

    def sigma_mev(self, energy_mev, ei_mev: float) -> np.ndarray:
        """Gaussian standard deviation (meV) at energy transfer ``energy_mev`` for incident ``ei_mev``."""
        e = np.asarray(energy_mev, dtype=float)
        if self.resins_name is None:
            fwhm = np.full_like(e, float(self.resolution_fwhm_mev or 0.01 * ei_mev))
        else:
            fwhm = _resins_fwhm(self.resins_name, ei_mev, e, self.options)
        return fwhm / FWHM_PER_SIGMA


def _resins_fwhm(name: str, ei_mev: float, energy_mev: np.ndarray, options: dict) -> np.ndarray:
    """FWHM (meV) from resins' PyChop fit; energies outside its validity are clipped to its range."""
    from resins import Instrument

    inst = Instrument.from_default(name)
    try:
        model = inst.get_resolution_function(inst.default_model, e_init=float(ei_mev), **options)
    except Exception as exc:  # resins refuses settings its model does not cover (e.g. no chopper transmission)
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(
            f"no {name} resolution model at Ei {float(ei_mev):g} meV (resins: {why})",
            fix="choose an incident energy the instrument's default chopper setting transmits, or use "
            "--instrument generic --resolution FWHM_MEV",
        ) from None
    e = np.clip(energy_mev, -ei_mev, 0.999 * ei_mev)
    sig = model.get_characteristics(e.reshape(-1, 1))["sigma"]
    return (np.asarray(sig) * FWHM_PER_SIGMA).reshape(e.shape)


VISION = IndirectInstrument("vision", (Bank("backward", 135.0, 3.9675), Bank("forward", 45.0, 3.9675)))
TOSCA = IndirectInstrument("tosca", (Bank("backward", 134.98885653282196, 3.32), Bank("forward", 45.0, 3.35)))

#: detector coverage in degrees (instrument web pages: ARCS 3–135 (as OCLIMAX), SEQUOIA 2–60,
#: MAPS 3–60, MARI 3–134, MERLIN 3–135)
_DIRECT = {
    "arcs": DirectInstrument("arcs", (3.0, 135.0), "ARCS"),
    "sequoia": DirectInstrument("sequoia", (2.0, 60.0), "SEQUOIA"),
    "maps": DirectInstrument("maps", (3.0, 60.0), "MAPS"),
    "mari": DirectInstrument("mari", (3.0, 134.0), "MARI"),
    "merlin": DirectInstrument("merlin", (3.0, 135.0), "MERLIN"),
}

KNOWN_INSTRUMENTS = ("vision", "tosca", "arcs", "sequoia", "maps", "mari", "merlin", "generic")


def get_instrument(name: str, *, resolution_fwhm_mev: float | None = None, angle_range_deg=None):
    """Instrument by (case-insensitive) name; ``generic`` takes a FWHM and an angle range."""
    key = name.lower()
    if key == "vision":
        return VISION
    if key == "tosca":
        return TOSCA
    if key in _DIRECT:
        inst = _DIRECT[key]
        if angle_range_deg is not None:
            inst = DirectInstrument(inst.name, tuple(angle_range_deg), inst.resins_name)
        return inst
    if key == "generic":
        return DirectInstrument(
            "generic", tuple(angle_range_deg or (3.0, 135.0)), None, resolution_fwhm_mev=resolution_fwhm_mev
        )
    raise InputError(f"unknown instrument {name!r}", fix=f"use one of {', '.join(KNOWN_INSTRUMENTS)}")
