"""Euphonic cross-check on a low-symmetry crystal built in the test: α-quartz (P3₂21, 9 atoms), SevenNet-0.

NaCl and MgO (tests/test_ins_euphonic.py) have cubic sites; quartz has anisotropic, symmetry-inequivalent sites
and 27 branches, so it checks the mesh, weights and Debye–Waller sums where they are not trivial.
"""

from __future__ import annotations

import numpy as np
import pytest

import atomvib
from atomvib.spectra.coherent import euphonic_force_constants
from atomvib.spectra.dos import phonon_dos
from atomvib.spectra.ins import incoherent_modes

MESH = 6


@pytest.fixture(scope="module")
def quartz():
    from ase.spacegroup import crystal

    # α-quartz, Levien et al., Am. Mineral. 65, 920 (1980), shifted by z + 2/3 to the ITA origin ASE uses
    atoms = crystal(
        ["Si", "O"], basis=[(0.4697, 0.0, 2 / 3), (0.4135, 0.2669, 0.1191 + 2 / 3)], spacegroup=154,
        cellpar=[4.916, 4.916, 5.405, 90, 90, 120],
    )
    r = atomvib.phonons(atoms, engine="sevennet", min_supercell_length_a=8.0, mesh_density=20, fmax_ev_per_a=5e-3)
    ph = r
    fc = euphonic_force_constants(ph)
    g = np.array(np.meshgrid(*[np.arange(MESH) / MESH] * 3, indexing="ij")).reshape(3, -1).T
    modes = fc.calculate_qpoint_phonon_modes(g, asr="reciprocal")
    return r, ph, modes


@pytest.mark.slow
def test_quartz_is_stable_and_low_symmetry(quartz):
    r, ph, _ = quartz
    assert r.primitive.natoms == 9 and r.primitive.spacegroup().startswith("P3_221")
    # no real instability: only the acoustic branches dip slightly below zero close to Γ (−0.6 THz at
    # |q| < 0.1 with a 2×2×2 supercell), the usual interpolation artifact of a short-ranged supercell
    if r.has_imaginary:
        assert r.min_frequency_thz > -1.0 and np.linalg.norm(r.instability.qpoint) < 0.15
    # SevenNet-0 softens phonons; quartz's highest (Si–O stretch) DFT/IR mode is ~1170 cm^-1 = 35 THz
    assert 0.8 * 35.0 < r.omega_max_thz < 1.05 * 35.0


@pytest.mark.slow
def test_quartz_dos_and_weighted_pdos_match_euphonic(quartz):
    from euphonic import ureg

    r, ph, modes = quartz
    emax = 1.1 * modes.frequencies.to("meV").magnitude.max()
    bins = np.linspace(0.0, emax, 301)
    sigma = 1.0  # meV, Euphonic's mode_widths are Gaussian standard deviations
    widths = np.full(modes.frequencies.shape, sigma) * ureg("meV")
    fwhm = sigma * 2.0 * np.sqrt(2.0 * np.log(2.0))
    ours = phonon_dos(ph, mesh=MESH, bins=bins, fwhm=fwhm, unit="meV")
    ref = modes.calculate_dos(bins * ureg("meV"), mode_widths=widths).y_data.to("1/meV").magnitude
    scale = ours.total.sum() / ref.sum()
    assert scale == pytest.approx(9, rel=0.01)  # Euphonic per atom, ours per primitive cell
    assert np.abs(ours.total / scale - ref).max() < 0.01 * ref.max()
    w = phonon_dos(ph, mesh=MESH, bins=bins, fwhm=fwhm, unit="meV", weighting="total")
    pw = modes.calculate_pdos(bins * ureg("meV"), mode_widths=widths, weighting="coherent-plus-incoherent",
                              cross_sections="Sears1992")
    per_el = {}
    for i, el in enumerate(modes.crystal.atom_type):
        per_el[el] = per_el.get(el, 0.0) + pw.y_data[i].to("barn/meV").magnitude
    for el, ref_el in per_el.items():
        assert np.abs(w.partial[el] / scale * 9 - ref_el).max() < 0.01 * ref_el.max(), el


@pytest.mark.slow
@pytest.mark.parametrize("temperature_k", [10.0, 300.0])
def test_quartz_debye_waller_matches_euphonic(quartz, temperature_k):
    from euphonic import ureg

    r, ph, modes = quartz
    dw = modes.calculate_debye_waller(temperature_k * ureg("K"))
    tr = np.trace(dw.debye_waller.to("angstrom**2").magnitude, axis1=1, axis2=2)  # ⟨u²⟩/2 per atom
    ours = incoherent_modes(ph, temperature_k=temperature_k, mesh=MESH, mesh_symmetry=False)
    # Euphonic's grid includes Γ here, whose three acoustic modes it skips; ours skips them too
    assert ours.msd_a2 == pytest.approx(2 * tr, rel=0.01)
