"""One copy of each piece of physics (issue 10): the incoherent INS model, Gaussian broadening, the Bose
function, the neutron weighting, the Wasserstein distance and the physical constants each live in one
place, and the modules that used to carry their own copy now give the same numbers through it.
Also: no import-time global state (warning filters, matplotlib) and no learn/ import circle."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from math import factorial
from pathlib import Path

import numpy as np
import pytest

from atomvib import units
from atomvib.spectra.compare import incoherent_powder_spectrum, similarity_arrays, wasserstein
from atomvib.spectra.ins import (
    direct_powder_map,
    indirect_spectrum,
    modes_from_partial_dos,
    q_averaged_orders,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "atomvib"


def _toy_dos(step=0.1):
    """Two bands (10–20 meV, 30–38 meV) sampled at the centres of bins of ``step`` meV from 0."""
    centres = (np.arange(int(45 / step)) + 0.5) * step
    g = np.where((centres > 10) & (centres < 20), 1.0, 0.0) + np.where(
        (centres > 30) & (centres < 38), 2.0 * np.sin(np.pi * (centres - 30) / 8) ** 2, 0.0
    )
    return centres, g


def _modes_like_compare(centres, g, step, mass, temperature_k):
    edges = step * np.arange(len(centres) + 1)
    states = g * 3.0 / g.sum()
    return modes_from_partial_dos(
        edges, {"X": states}, {"X": mass}, {"X": 1}, temperature_k=temperature_k, de_mev=step, cutoff_mev=0.0
    )


# --------------------------------------------------------------------------------- incoherent model
def test_compare_incoherent_model_is_the_ins_model():
    """compare.incoherent_powder_spectrum (the Al validation model) against ins.direct_powder_map (the
    instrument map) on the same DOS: one phonon point by point, higher orders by their weight."""
    step, mass, temp = 0.1, 26.98, 5.0  # at 5 K the energy-gain side (≥ 10 meV modes) is ~e^-23
    centres, g = _toy_dos(step)
    e = (np.arange(1200) + 0.5) * step  # to 120 meV: the 3-phonon band ends at 114 meV
    q = np.array([4.0, 6.0])
    ip = incoherent_powder_spectrum(
        centres / units.THZ_TO_MEV, g, mass, temp, q, e, max_order=3, step_mev=step
    )
    modes = _modes_like_compare(centres, g, step, mass, temp)
    assert ip.msd_a2 == pytest.approx(modes.debye_waller_alpha_a2[0], rel=1e-12)
    mp = direct_powder_map(
        None,
        "generic",
        400.0,
        order=1,
        modes=modes,
        q_range_ainv=(4.0, 6.0),
        dq_ainv=2.0,
        energy_range_mev=(0.0, 120.0),
        de_mev=step,
        mask=False,
        resolution=False,
        cross_sections={"X": 1.0},
    )
    assert np.allclose(mp.q_ainv, q) and np.allclose(mp.energy_mev, e)
    # the map is in 1/eV and per |Q| point; the powder model per meV and averaged over the |Q| points
    np.testing.assert_allclose(ip.orders[0], mp.intensity.mean(axis=0) / 1e3, rtol=1e-9, atol=1e-15)
    alpha = modes.debye_waller_alpha_a2[0]
    for n in (1, 2, 3):
        expect = np.mean((q**2 * alpha) ** n / factorial(n) * np.exp(-(q**2) * alpha))
        assert ip.orders[n - 1].sum() * step == pytest.approx(expect, rel=1e-6)


def test_energy_gain_side_detailed_balance_and_sum_rule_per_order():
    step, temp = 0.05, 300.0
    centres, g = _toy_dos(step)
    modes = _modes_like_compare(centres, g, step, 26.98, temp)
    q = np.linspace(2.0, 8.0, 7)
    kt = units.KB_MEV_PER_K * temp
    # bin centres of order n sit at (m + n/2)·step: half-integer multiples for odd n, integer for even n
    for parity, e in ((1, (np.arange(-3000, 3000) + 0.5) * step), (0, np.arange(-2999, 3000) * step)):
        orders = q_averaged_orders(
            modes, q, e, order=4, de_mev=step, energy_gain=True, cross_sections={"X": 1.0}
        )
        alpha = modes.debye_waller_alpha_a2[0]
        for n in range(1, 5):
            if n % 2 != parity:
                continue
            expect = np.mean((q**2 * alpha) ** n / factorial(n) * np.exp(-(q**2) * alpha))
            assert orders[n - 1].sum() * step == pytest.approx(expect, rel=1e-6)
            # S(−E) = exp(−E/kT) S(E), order by order (the multiphonon terms mix gain and loss)
            pos = (e > 5) & (orders[n - 1] > 1e-6 * orders[n - 1].max())
            mirror = orders[n - 1][::-1][pos]
            np.testing.assert_allclose(
                mirror, orders[n - 1][pos] * np.exp(-e[pos] / kt), rtol=1e-9, atol=1e-12 * orders[n - 1].max()
            )
    # the Stokes side alone (the instrument spectra's choice) loses exactly the anti-Stokes weight
    e = (np.arange(-3000, 3000) + 0.5) * step
    both = q_averaged_orders(modes, q, e, order=1, de_mev=step, energy_gain=True, cross_sections={"X": 1.0})
    loss = q_averaged_orders(modes, q, e, order=1, de_mev=step, energy_gain=False, cross_sections={"X": 1.0})
    np.testing.assert_allclose(loss[0][e > 0], both[0][e > 0], rtol=1e-12, atol=0)
    assert np.all(loss[0][e < 0] == 0)


def test_multiphonon_orders_do_not_wrap_around():
    """A 200 meV mode: its 5-phonon term (1 eV) lies beyond the FFT length of a 250 meV grid and used to
    alias back to ≈ 180 meV (0.7 % of the fundamental); each order is now cut back to the grid."""
    edges = np.arange(0.0, 400.01, 1.0)
    st = np.exp(-0.5 * ((edges[:-1] + 0.5 - 200.0) / 3.0) ** 2)
    modes = modes_from_partial_dos(edges, {"H": st * 3 / st.sum()}, {"H": 1.008}, {"H": 1}, temperature_k=5.0)
    s = indirect_spectrum(None, "vision", order=5, modes=modes, energy_range_mev=(0.5, 250.0))
    below = s.energy_mev < 190
    assert s.by_order[0].max() > 10
    assert np.all(s.by_order[2:, below] < 1e-12 * s.by_order[0].max())  # FFT round-off only


# --------------------------------------------------------------------------------- Gaussians
def test_gaussian_sum_is_the_one_broadening():
    from atomvib.spectra.instruments import get_instrument
    from atomvib.spectra.lineshape import FWHM_PER_SIGMA, broaden, gaussian, gaussian_ft, gaussian_sum

    assert FWHM_PER_SIGMA == pytest.approx(2.0 * np.sqrt(2.0 * np.log(2.0)), rel=1e-15)
    x = np.arange(0.0, 100.0, 0.05)
    c = np.array([20.0, 45.5, 70.25])
    w = np.array([[1.0, 2.0, 0.5], [0.0, 1.0, 0.0]])
    sig = np.array([1.0, 2.5, 0.7])
    exact = gaussian_sum(c, w, x, sig)
    cut = gaussian_sum(c, w, x, sig, nsigma=6.0)
    ref = np.stack([sum(wi * gaussian(x - ci, si) for ci, wi, si in zip(c, row, sig)) for row in w])
    np.testing.assert_allclose(exact, ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(cut, ref, rtol=0, atol=1e-8 * ref.max())
    assert exact[0].sum() * 0.05 == pytest.approx(3.5, rel=1e-6)  # areas kept
    # the optical line shape with a Gaussian FWHM is the same sum
    np.testing.assert_allclose(
        broaden(c, w[0], x, 2.0, "gaussian"), gaussian_sum(c, w[0], x, 2.0 / FWHM_PER_SIGMA)
    )
    # the Fourier transform used by the fit
    k = np.fft.rfftfreq(4096, 0.05)
    g = gaussian(x - 50.0, 1.3)
    ft = np.abs(np.fft.rfft(g, 4096)) * 0.05
    np.testing.assert_allclose(ft[:200], gaussian_ft(k, 1.3)[:200], atol=1e-9)
    # instruments: FWHM ↔ σ through the same constant
    gen = get_instrument("generic", resolution_fwhm_mev=2.0)
    assert gen.sigma_mev(np.array([10.0]), 100.0)[0] == pytest.approx(2.0 / FWHM_PER_SIGMA)


# --------------------------------------------------------------------------------- Bose, weights, W1
def test_raman_bose_factor_is_bose_occupation_plus_one():
    from atomvib.harmonic.thermal import bose_occupation
    from atomvib.spectra.raman import cross_section_factor

    nu = np.array([-10.0, 0.0, 50.0, 500.0, 3000.0])
    laser, temp = 532.0, 298.15
    f = cross_section_factor(nu, laser, temp)
    x = nu[2:] * 100.0 * 2.99792458e8 * 6.62607015e-34 / (1.380649e-23 * temp)  # hcν/kT, SI by hand
    expect = (1e7 / laser - nu[2:]) ** 4 / nu[2:] / (1.0 - np.exp(-x)) * 1e-12
    np.testing.assert_allclose(f[2:], expect, rtol=1e-12)
    assert f[0] == 0 and f[1] == 0
    np.testing.assert_allclose(
        1.0 + bose_occupation(nu[2:] / units.MEV_TO_CM1, temp), 1.0 / (1.0 - np.exp(-x)), rtol=1e-12
    )


def test_neutron_weights_one_function():
    from atomvib.learn.spectra import neutron_weighted_dos
    from atomvib.spectra.neutron_data import cross_section, cross_sections_barn, neutron_dos_weights

    w = neutron_dos_weights(["Na", "Cl", "Cl"], [22.99, 35.45, 35.45], "incoherent")
    mean_m = (22.99 + 2 * 35.45) / 3
    expect = np.array(
        [
            cross_section(el).incoherent_barn * mean_m / m / 3
            for el, m in (("Na", 22.99), ("Cl", 35.45), ("Cl", 35.45))
        ]
    )
    np.testing.assert_allclose(w, expect, rtol=1e-14)
    assert cross_sections_barn(["H", "H", "D"], "total", {"D": 7.0}) == {"H": 82.02, "D": 7.0}
    g = {"Na": np.array([1.0, 2.0]), "Cl": np.array([2.0, 4.0])}
    tot, part = neutron_weighted_dos(
        g, {"Na": 22.99, "Cl": 35.45}, {"Na": 1, "Cl": 2}, weighting="incoherent"
    )
    np.testing.assert_allclose(part["Na"], g["Na"] * w[0])
    np.testing.assert_allclose(part["Cl"], g["Cl"] * w[1])


def test_wasserstein_is_scipys_and_the_predictor_metric():
    from scipy.stats import wasserstein_distance

    from atomvib.learn.metrics import wasserstein_cm1

    rng = np.random.default_rng(3)
    x = np.sort(rng.uniform(0, 50, 300))  # non-uniform axis
    a, b = rng.uniform(0, 1, (2, 300))
    assert wasserstein(x, a, b) == pytest.approx(wasserstein_distance(x, x, a, b), rel=1e-12)
    batch = rng.uniform(0, 1, (4, 300))
    np.testing.assert_allclose(
        wasserstein(x, batch, b), [wasserstein_distance(x, x, r, b) for r in batch], rtol=1e-12
    )
    xu = np.arange(300) * 5.0
    assert wasserstein_cm1(a, b, 5.0) == pytest.approx(wasserstein_distance(xu, xu, a, b), rel=1e-12)
    assert similarity_arrays(x, a, b, "meV").wasserstein == wasserstein(x, a, b)
    assert np.isnan(wasserstein(x, np.zeros(300), b))


# --------------------------------------------------------------------------------- coherent binning
def test_triangle_binning_of_flat_bands_computes_no_division_by_zero():
    """Triangles whose corners share an energy (flat bands, degenerate modes) used to divide 0 by 0 in
    branches that were then discarded; the numbers were right, the RuntimeWarning was not."""
    from atomvib.spectra.coherent import _triangle_bins

    e = np.array([[5.05, 7.0], [5.05, 7.0], [5.05, 9.0]])  # band 0 flat, band 1 partly flat
    s = np.ones_like(e)
    tri, weight = np.array([[0, 1, 2]]), np.array([1.0])
    edges = np.arange(0.0, 12.01, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with np.errstate(all="raise"):
            out = _triangle_bins(e, s, tri, weight, edges)
    assert out.sum() * 0.5 == pytest.approx(2.0)  # each band carries weight 1
    assert out[10] * 0.5 == pytest.approx(1.0)  # the flat band sits in the bin [5, 5.5)


# --------------------------------------------------------------------------------- constants
def test_constants_are_codata_2018():
    from scipy import constants

    table = getattr(getattr(constants, "_codata", None), "txt2018", None)
    assert units.H_EV_S == constants.h / constants.e and units.KB_EV_PER_K == constants.k / constants.e
    assert units.GAS_CONSTANT_J_PER_K_PER_MOL == pytest.approx(8.314462618, rel=1e-10)
    if table is None:
        pytest.skip("this SciPy has no CODATA 2018 table")

    def codata(name):
        line = next(ln for ln in table.splitlines() if ln.startswith(name + "  "))
        return float(line[60:85].replace(" ", "").replace("...", ""))

    assert units.AMU_KG == codata("atomic mass constant")
    assert units.NEUTRON_MASS_AMU == pytest.approx(codata("neutron mass in u"), rel=1e-10)
    assert units.BOHR_A * 1e-10 == pytest.approx(codata("Bohr radius"), rel=1e-14)
    assert units.HARTREE_EV == codata("Hartree energy in eV")
    assert units.COULOMB_EV_A == pytest.approx(units.HARTREE_EV * units.BOHR_A, rel=1e-9)
    assert units.KM_PER_MOL_PER_E2_AMU == pytest.approx(974.88, rel=1e-5)


#: values (in the units they are usually hard-coded in) that must only come from atomvib.units
_KNOWN_CONSTANTS = {
    "hbar eV s": 6.582119569e-16,
    "hbar J s": 1.054571817e-34,
    "h J s": 6.62607015e-34,
    "h eV s": 4.135667696e-15,
    "kB eV/K": 8.617333262e-5,
    "kB meV/K": 0.08617333262,
    "THz->meV": 4.135667696,
    "THz->cm-1": 33.35640952,
    "cm-1/THz": 0.0299792458,
    "meV->cm-1": 8.065543937,
    "eV->THz": 241.7989242,
    "neutron meV A^2": 2.0721,
    "F kJ/mol/eV": 96.48533212,
    "R J/K/mol": 8.314462618,
    "N_A": 6.02214076e23,
    "e C": 1.602176634e-19,
    "amu kg": 1.66053906660e-27,
    "Bohr A": 0.529177210903,
    "Hartree eV": 27.211386245988,
    "e^2/4pi eps0 eV A": 14.3996454784,
    "eV/A^3 -> GPa": 160.21766208,
}


def test_no_constants_outside_units_in_spectra_and_learn():
    """Physical constants only in units.py: no scipy.constants / ase.units import and no numeric literal
    close to a known constant in the code (docstrings and comments do not count) of the spectra and learn
    packages and the thermal module."""
    import ast

    files = [*(SRC / "spectra").glob("*.py"), *(SRC / "learn").glob("*.py"), SRC / "harmonic" / "thermal.py"]
    tables = {"neutron_data.py"}  # the Sears (1992) cross-section table is data, not constants
    values = np.array(list(_KNOWN_CONSTANTS.values()))
    bad = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in (
                "scipy",
                "scipy.constants",
                "ase.units",
                "ase",
            ):
                names = {a.name for a in node.names}
                if node.module in ("scipy.constants", "ase.units") or names & {"constants", "units"}:
                    bad.append(f"{f.name}:{node.lineno}: imports constants from {node.module}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, float) and f.name not in tables:
                v = abs(node.value)
                if v and np.any(np.abs(values - v) <= 1e-4 * values):
                    bad.append(f"{f.name}:{node.lineno}: literal {node.value!r}")
    assert not bad, "\n".join(bad)


# --------------------------------------------------------------------------------- import-time state
def test_imports_leave_no_global_state_and_have_no_cycle(tmp_path):
    code = r"""
import sys, warnings
import numpy, scipy, scipy.stats, ase, phonopy, spglib
f0 = list(warnings.filters)
import atomvib, atomvib.cli.main, atomvib.spectra, atomvib.spectra.compare, atomvib.spectra.ir, atomvib.plot
import atomvib.spectra.plots, atomvib.learn.spectra, atomvib.learn.metrics
assert warnings.filters == f0, [f for f in warnings.filters if f not in f0]
assert "matplotlib" not in sys.modules, "matplotlib imported at import time"
import atomvib.learn.predictor
assert "atomvib.learn.train" not in sys.modules, "predictor imports train"
import numpy as np
from atomvib.spectra.compare import compare
from atomvib.spectra.measured import Spectrum1D
from atomvib.spectra.plots import plot_fit
x = np.arange(0.0, 60.0, 0.5)
s = Spectrum1D(x, np.exp(-0.5 * ((x - 30) / 3) ** 2) + 0.01, None, "meV")
plot_fit(compare(s, s, fit=None), sys.argv[1])
assert "matplotlib.pyplot" not in sys.modules, "pyplot (global figure registry / backend switch) used"
print("ok")
"""
    png = tmp_path / "f.png"
    r = subprocess.run([sys.executable, "-c", code, str(png)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
    assert png.stat().st_size > 1000
    # predictor and train share learn/ensemble.py and learn/model.py; neither imports the other
    for a, b in (("predictor", "train"), ("train", "predictor")):
        text = (SRC / "learn" / f"{a}.py").read_text()
        assert not re.search(rf"from \.{b} import|import atomvib\.learn\.{b}", text), f"{a} imports {b}"
