"""Incoherent INS (VISION/TOSCA 1D, direct-geometry maps) against OCLIMAX and exact sum rules."""

from __future__ import annotations

import re
from math import factorial
from pathlib import Path

import numpy as np
import pytest

from atomvib.errors import InputError
from atomvib.spectra.ins import (
    _HB2_2M,
    direct_powder_map,
    incoherent_modes,
    indirect_spectrum,
    vision_spectrum,
)
from atomvib.spectra.instruments import TOSCA, VISION, get_instrument
from atomvib.spectra.neutron_data import cross_section, total_cross_sections_barn
from atomvib.units import NEUTRON_E_MEV_PER_K2, THZ_TO_MEV

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
_PH: dict = {}


def _phonopy(name):
    if not (DATA / "phonopy-examples" / name).is_dir():
        pytest.skip("reference data ../shared/data not present")
    if name not in _PH:
        import phonopy

        d = DATA / "phonopy-examples" / name
        from atomvib.harmonic.force_constants import ForceConstants

        # spectra take typed objects: phonopy's own object is only the reference here
        _PH[name] = ForceConstants.from_phonopy(phonopy.load(
            str(d / "phonopy_disp.yaml"),
            force_sets_filename=str(d / "FORCE_SETS"),
            born_filename=str(d / "BORN"),
            log_level=0,
        ))
    return _PH[name]


def _oclimax(name):
    f = DATA / "oclimax-reference" / f"{name}_vis_o3__vis_inc_5K.csv"
    if not f.is_file():
        pytest.skip("OCLIMAX reference not present")
    rows = [[float(x) for x in line.split(",")] for line in f.read_text().splitlines() if "#" not in line]
    readme = (DATA / "oclimax-reference" / f"README-{name}.txt").read_text()
    peaks = [float(x) for x in re.search(r"vis_o3  backward:\s+([\d.\s]+)\(", readme).group(1).split()]
    msd = [float(x) for x in re.findall(r"MSD at 5 K \(A\^2\): \w+1 ([\d.]+), \w+2 ([\d.]+)", readme)[0]]
    return np.array(rows), peaks, msd


@pytest.mark.parametrize("name", ["NaCl", "MgO"])
def test_vision_matches_oclimax(name):
    """Same force constants, 16³ mesh, 5 K, order 3, VISION preset: OCLIMAX 3.0 within ~1 %."""
    ph = _phonopy(name)
    ref, ref_peaks, ref_msd = _oclimax(name)
    modes = incoherent_modes(ph, temperature_k=5.0, mesh=16)
    # OCLIMAX writes its per-atom <u^2> (x+y+z) at 5 K to 6 digits
    assert np.allclose(modes.msd_a2, ref_msd, rtol=2e-4)
    e = ref[:, 0] / 0.999966 + 0.05  # OCLIMAX: lower bin edges with its meV<->cm-1 round-off
    for bank, col in (("backward", 1), ("forward", 2)):
        s = vision_spectrum(ph, order=3, temperature_k=5.0, bank=bank, modes=modes)
        ours = np.interp(e, s.energy_mev, s.intensity)
        # shape and absolute scale (both normalised per total cross-section, 1/eV)
        assert np.linalg.norm(ours - ref[:, col]) / np.linalg.norm(ref[:, col]) < 0.01
        assert abs(ours.max() / ref[:, col].max() - 1) < 0.01
    s = vision_spectrum(ph, order=3, temperature_k=5.0, modes=modes)
    for n in range(3):  # each order's weight (integral) within 1 %
        ours = np.interp(e, s.energy_mev, s.by_order[n])
        assert np.trapezoid(ours, e) == pytest.approx(np.trapezoid(ref[:, 3 + n], e), rel=0.01)
    # the five strongest peaks of the backward bank at the same positions, to one 0.1 meV bin
    from scipy.signal import find_peaks

    idx, _ = find_peaks(s.intensity, prominence=0.005 * s.intensity.max())
    ours_peaks = s.energy_mev[idx[np.argsort(s.intensity[idx])[::-1][:5]]]
    for p in ref_peaks:
        assert np.min(np.abs(ours_peaks - (p + 0.05))) <= 0.1 + 1e-9
    # per-element partials sum to the total
    assert np.allclose(sum(s.by_element.values()), s.intensity, rtol=1e-10, atol=1e-12)


def test_symmetry_reduced_mesh_is_exact():
    """Irreducible mesh + averaging over equivalent atoms equals the full mesh (to round-off)."""
    ph = _phonopy("NaCl")
    full = vision_spectrum(ph, mesh=8, mesh_symmetry=False, order=2)
    red = vision_spectrum(ph, mesh=8, mesh_symmetry=True, order=2)
    assert np.allclose(full.intensity, red.intensity, rtol=1e-6, atol=1e-9 * full.intensity.max())
    assert full.msd_a2 == pytest.approx(red.msd_a2, rel=1e-8)


def test_msd_matches_phonopy_thermal_displacements():
    """⟨u²⟩ at 300 K equals phonopy's own thermal displacements (independent code path)."""
    ph = _phonopy("MgO")
    cut_thz = 1e-3  # phonopy's freq_min: leave out the acoustic modes at Γ exactly as phonopy does
    modes = incoherent_modes(
        ph, temperature_k=300.0, mesh=10, mesh_symmetry=True, cutoff_mev=cut_thz * THZ_TO_MEV
    )
    pp = ph.phonopy()
    pp.run_mesh([10, 10, 10], is_gamma_center=True, with_eigenvectors=True, is_mesh_symmetry=False)
    pp.run_thermal_displacements(temperatures=[300.0], freq_min=cut_thz)
    ref = pp.thermal_displacements.thermal_displacements[0].reshape(-1, 3).sum(axis=1)
    assert modes.msd_a2 == pytest.approx(ref, rel=1e-6)


def test_one_phonon_weights_integrate_to_mode_count():
    """Σ_i (2 m_i E/ħ²)·3·A_i summed over modes = number of modes (eigenvectors are unit-norm) at T = 0."""
    ph = _phonopy("NaCl")
    m = incoherent_modes(ph, temperature_k=0.0, mesh=6, mesh_symmetry=False, cutoff_mev=0.0)
    per_mode = (3.0 * m.weights_a2 * m.masses_amu[None, :] * m.energies_mev[:, None] / _HB2_2M).sum(axis=1)
    nq = 6**3
    assert per_mode.sum() * nq == pytest.approx(len(m.energies_mev), rel=1e-10)
    # at T = 0 the one-phonon weight ∫A_i dE is exactly the DW coefficient α_i = <u_i²>/3
    assert m.weights_a2.sum(axis=0) == pytest.approx(m.msd_a2 / 3.0, rel=1e-10)


def test_orders_integrate_to_debye_waller_series():
    """At fixed Q and T = 0: ∫S_n dE = (Q²α)^n/n! e^{-Q²α} per atom, and Σ_{n≥1} → 1 − e^{-Q²α}."""
    ph = _phonopy("MgO")
    modes = incoherent_modes(ph, temperature_k=0.0, mesh=8)
    kw = dict(
        modes=modes,
        mask=False,
        resolution=False,
        energy_range_mev=(0.0, 1000.0),
        de_mev=0.5,
        q_range_ainv=(1.0, 10.0),
        dq_ainv=3.0,
    )
    sig = total_cross_sections_barn(modes.elements)
    w = np.array([sig[el] for el in modes.elements]) / sum(sig[el] for el in modes.elements)
    a = modes.msd_a2 / 3.0
    prev = None
    for order in (1, 2, 3, 10):
        m = direct_powder_map(ph, "generic", 2000.0, order=order, **kw)
        integral = m.intensity.sum(axis=1) * 0.5e-3  # 1/eV × 0.5 meV bins
        x = m.q_ainv[:, None] ** 2 * a[None, :]
        expect = (np.exp(-x) * sum(x**n / factorial(n) for n in range(1, order + 1))) @ w
        assert integral == pytest.approx(expect, rel=1e-6)
        if prev is not None:
            assert np.all(integral > prev)
        prev = integral
    assert integral == pytest.approx((1 - np.exp(-x)) @ w, rel=2e-3)  # series converged at order 10


def test_indirect_kinematics():
    """E = 0 at 90°: Q² = 2 k_f²; backward banks see larger Q than forward; TOSCA Ef from resins."""
    kf2 = VISION.banks[0].final_energy_mev / NEUTRON_E_MEV_PER_K2
    from atomvib.spectra.instruments import q2_from_angle

    assert q2_from_angle(3.9675, 3.9675, 90.0) == pytest.approx(2 * kf2)
    e = np.array([10.0, 100.0])
    assert np.all(VISION.q2(e, "backward") > VISION.q2(e, "forward"))
    # at high E, Q² → k_i² ≈ E/2.0721 (the familiar VISION/TOSCA line Q² ≈ E/2.07 meV Å²)
    assert VISION.q2(1000.0, "backward") * NEUTRON_E_MEV_PER_K2 / 1003.97 == pytest.approx(1.0, rel=0.15)
    # TOSCA resolution = resins' AbINS model for TOSCA (an independent implementation of the polynomial)
    from resins import Instrument

    tosca = Instrument.from_default("TOSCA")
    model = tosca.get_resolution_function("AbINS")
    e = np.array([5.0, 50.0, 200.0])
    assert TOSCA.sigma_mev(e) == pytest.approx(model.get_characteristics(e[:, None])["sigma"], rel=1e-6)


def test_tosca_and_temperature():
    """TOSCA at 5 K and 300 K: heating raises ⟨u²⟩ (Bose) and the multiphonon share of the spectrum."""
    ph = _phonopy("NaCl")
    cold = indirect_spectrum(ph, "tosca", mesh=8, temperature_k=5.0)
    hot = indirect_spectrum(ph, "tosca", mesh=8, temperature_k=300.0)
    assert hot.msd_a2["Na"] > 3 * cold.msd_a2["Na"]
    # classical limit: <u²> ∝ T at high T, so 300 K is above 2× the 150 K value minus zero-point
    assert cold.msd_a2["Na"] < hot.msd_a2["Na"] < 300.0 / 5.0 * cold.msd_a2["Na"]
    frac = lambda s: s.by_order[1:].sum() / s.intensity.sum()  # noqa: E731
    assert frac(hot) > 2 * frac(cold)


def test_direct_map_kinematic_mask():
    """Covered points lie exactly between the Q limits of the smallest and largest angle."""
    ph = _phonopy("MgO")
    m = direct_powder_map(ph, "arcs", 100.0, mesh=6, order=2)
    inst = get_instrument("arcs")
    qlo, qhi = inst.q_limits(100.0, m.energy_mev)
    covered = ~np.isnan(m.intensity)
    inside = (m.q_ainv[:, None] >= qlo) & (m.q_ainv[:, None] <= qhi)
    assert np.array_equal(covered, inside)
    assert np.all(m.intensity[covered] >= 0)
    # the strongest one-phonon band (~49 meV) is inside the map and the upper half is empty beyond 2·ω_max
    assert np.nanmax(m.intensity[:, m.energy_mev > 2 * 83 + 10], initial=0) < 1e-3 * np.nanmax(m.intensity)


def test_bad_input():
    with pytest.raises(InputError, match="vision, tosca, arcs"):
        get_instrument("iris")
    with pytest.raises(InputError, match="no neutron cross-section"):
        cross_section("Po")
    assert cross_section("H").total_barn == pytest.approx(82.02)  # Sears 1992
    ph = _phonopy("MgO")
    with pytest.raises(InputError, match="below the lowest phonon"):
        direct_powder_map(ph, "arcs", 0.01, mesh=4)
    with pytest.raises(InputError, match="direct-geometry"):
        indirect_spectrum(ph, "arcs", mesh=4)
