import numpy as np
import pytest

from atomvib import units
from atomvib.errors import InputError


def test_reference_conversions():
    # 1 THz = 4.135667696 meV = 33.35640952 cm^-1 = 47.99243 K (CODATA 2018)
    assert units.THZ_TO_MEV == pytest.approx(4.135667696, rel=1e-9)
    assert units.THZ_TO_CM1 == pytest.approx(33.35640952, rel=1e-9)
    assert units.THZ_TO_K == pytest.approx(47.99243073, rel=1e-8)
    assert units.MEV_TO_CM1 == pytest.approx(8.065543937, rel=1e-9)


def test_phonopy_vasp_factor():
    # phonopy's VaspToTHz factor, sqrt(eV/Å²/amu) → THz; phonopy uses older CODATA values (1e-7 apart)
    from phonopy.physical_units import get_physical_units

    assert units.EV_A2_AMU_TO_THZ == pytest.approx(get_physical_units().DefaultToTHz, rel=1e-6)


def test_neutron_energy_wavevector():
    # E[meV] = 2.0721 k² [Å^-1]: 81.81 meV neutrons have λ = 1 Å
    assert units.NEUTRON_E_MEV_PER_K2 == pytest.approx(2.0721, rel=1e-4)
    assert units.NEUTRON_E_MEV_PER_K2 * (2 * np.pi) ** 2 == pytest.approx(81.804, rel=1e-4)


def test_round_trip_and_bad_unit():
    x = np.array([1.0, 10.0])
    y = units.convert_frequency(units.convert_frequency(x, "THz", "cm-1"), "cm-1", "meV")
    assert np.allclose(y, x * units.THZ_TO_MEV)
    with pytest.raises(InputError, match="unknown frequency unit"):
        units.frequency_factor("eV", "THz")
