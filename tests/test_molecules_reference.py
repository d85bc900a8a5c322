"""Molecules with GFN2-xTB (the molecule default) against experiment and an independent Hessian.

References: experimental gas-phase fundamentals and harmonic frequencies ω_e from NIST CCCBDB /
Herzberg (the table lives in ``scripts/validate.py`` and ``docs/validation.md``). A harmonic
calculation is compared with ω_e where experiment has it; fundamentals are lower by the
anharmonic shift. Independent numerical reference: ASE's own finite-difference
:class:`ase.vibrations.Vibrations` with the same tblite calculator on atomvib's relaxed geometry.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tblite") is None, reason="tblite (xtb) not installed"
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from validate import MOLECULE_EXPERIMENT_CM1  # noqa: E402


@pytest.fixture(scope="module")
def vib():
    from ase.build import molecule

    import atomvib

    return {name: atomvib.phonons(molecule(name)) for name in ("H2O", "CO2", "C6H6")}


def _pairs(result, name):
    calc = np.sort(np.asarray(result.frequencies_cm1))
    exp = sorted(MOLECULE_EXPERIMENT_CM1[name], key=lambda x: x[1])
    assert len(calc) == len(exp)
    return list(zip(calc, exp))


@pytest.mark.parametrize("name,nvib", [("H2O", 3), ("CO2", 4), ("C6H6", 30)])
def test_all_frequencies_real_and_counted(vib, name, nvib):
    r = vib[name]
    assert r.engine.name == "xtb"
    f = np.asarray(r.frequencies_cm1)
    assert f.shape == (nvib,)  # 3N-6, or 3N-5 for linear CO2
    assert f.min() > 300.0  # lowest experimental mode is benzene's 398 cm^-1; no soft/imaginary modes


def test_water_against_experiment(vib):
    for calc, (mode, fund, harm, stretch) in _pairs(vib["H2O"], "H2O"):
        # GFN2-xTB: O-H stretches -0.4 % and -2.8 % from the fundamentals, -5 % and -7 % from ω_e;
        # the bend -3.5 % / -6.6 %. 10 % is the bar for stretches, met here by every mode.
        assert abs(calc - fund) / fund < 0.10, mode
        assert abs(calc - harm) / harm < 0.10, (mode, stretch)


def test_co2_against_experiment(vib):
    pairs = _pairs(vib["CO2"], "CO2")
    # the bend is doubly degenerate by symmetry (linear molecule)
    assert abs(pairs[0][0] - pairs[1][0]) < 1.0
    sym, asym = pairs[2], pairs[3]
    assert abs(sym[0] - sym[1][1]) / sym[1][1] < 0.10  # ν1 +6.9 % vs the 1333 cm^-1 fundamental
    # ν3: GFN2 gives 2594 cm^-1, +8.2 % from the harmonic ω_e = 2397 cm^-1 (like with like) but
    # +10.4 % from the 2349 cm^-1 fundamental; GFN2's C=O bond (1.144 Å vs 1.160 Å) is too short.
    assert abs(asym[0] - asym[1][2]) / asym[1][2] < 0.10
    assert asym[0] > asym[1][2]  # documented: GFN2 overestimates, the sign is part of the record


def test_benzene_stretches_and_degeneracy(vib):
    pairs = _pairs(vib["C6H6"], "C6H6")
    stretches = [(c, e) for c, e in pairs if e[3]]
    assert len(stretches) == 10  # 6 C-H + 2×2 C-C (e1u, e2g)
    for calc, (mode, fund, _h, _s) in stretches:
        assert abs(calc - fund) / fund < 0.10, (mode, calc, fund)
    # D6h: every e-mode of the experiment table must come out as a degenerate pair
    f = np.array([c for c, _ in pairs])
    labels = [e[0] for _, e in pairs]
    for i in range(len(labels) - 1):
        if labels[i] == labels[i + 1] and "C-H stretch" not in labels[i]:
            assert abs(f[i] - f[i + 1]) < 2.0, labels[i]


@pytest.mark.parametrize("name", ["H2O", "CO2"])
def test_hessian_matches_ase_vibrations(vib, name, tmp_path):
    """atomvib's projected finite-difference Hessian agrees with ASE's Vibrations on the same geometry."""
    from ase.vibrations import Vibrations

    from atomvib.engines import get_engine

    r = vib[name]
    atoms = r.structure.to_ase()
    atoms.calc = get_engine("xtb").calculator()
    v = Vibrations(atoms, name=str(tmp_path / "vib"), delta=0.01, nfree=2)
    v.run()
    ref = np.sort(np.real(v.get_frequencies()))[-len(r.frequencies_cm1) :]
    # ASE does not project out rotations: the residual mixing is < 1 cm^-1 at a converged geometry
    np.testing.assert_allclose(np.sort(r.frequencies_cm1), ref, atol=2.0)
