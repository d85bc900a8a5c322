"""INS of isolated molecules (issue 16, item 2): the normal modes of a MoleculeVibrations go through the crystal
code path as one Γ point; checked against closed-form intensities of a diatomic and against the normal modes of
water (positions to the bin, fundamental intensities from the Cartesian displacements), and through the CLI."""

from __future__ import annotations

from math import factorial

import numpy as np
import pandas as pd
import pytest
from ase import Atoms

import atomvib
from atomvib.cli.main import main
from atomvib.engines.base import EngineInfo
from atomvib.harmonic.molecule import MoleculeVibrations, normal_modes
from atomvib.settings import PhononSettings
from atomvib.spectra.ins import incoherent_modes, indirect_spectrum
from atomvib.spectra.instruments import VISION
from atomvib.spectra.neutron_data import total_cross_sections_barn
from atomvib.structure import Structure
from atomvib.units import EV_A2_AMU_TO_THZ, HBAR2_2AMU_MEV_A2, MEV_TO_CM1, THZ_TO_MEV
from conftest import EXAMPLES

DE = 0.1  # meV, VISION output bins


def _diatomic(k_ev_a2: float = 5.0, symbols=("H", "Cl"), bond_a: float = 1.27) -> MoleculeVibrations:
    """A diatomic with a harmonic bond of stiffness k along x: one vibration, ω = √(k/μ), exactly."""
    st = Structure.from_ase(Atoms(symbols, positions=[(0, 0, 0), (bond_a, 0, 0)]), "diatomic")
    h = np.zeros((6, 6))
    h[0, 0] = h[3, 3] = k_ev_a2
    h[0, 3] = h[3, 0] = -k_ev_a2
    freqs, modes = normal_modes(st, h)
    return MoleculeVibrations(st, h, freqs, modes, 0.0, EngineInfo("test", "0"), PhononSettings())


def _peak_integral(s, e0, half_width=1.0):
    """∫ over ±half_width meV of the spectrum (1/eV) → dimensionless."""
    sel = np.abs(s.energy_mev - e0) <= half_width
    return s.intensity[sel].sum() * DE * 1e-3


def test_diatomic_fundamental_and_overtone_are_the_closed_form():
    """S_1 = Σ_i σ_i Q² u_i²/3 (n+1) e^{−Q²⟨u_i²⟩/3} / Σσ at VISION's Q(E); the overtone (Q²)²/2 (u_i²/3)² at 2E."""
    mol = _diatomic()
    m = mol.structure.masses
    mu = m[0] * m[1] / m.sum()
    e = THZ_TO_MEV * EV_A2_AMU_TO_THZ * np.sqrt(5.0 / mu)  # ħω of the bond, meV
    assert len(mol.frequencies_cm1) == 1 and mol.frequencies_cm1[0] / MEV_TO_CM1 == pytest.approx(e, rel=1e-10)
    # atom i moves by m_j/M of the bond stretch: zero-point u_i² = ħ²/(2 m_i E) · m_j/M (Å²), all along x
    u2 = HBAR2_2AMU_MEV_A2 / (m * e) * m[::-1] / m.sum()
    sig = total_cross_sections_barn(["H", "Cl"])
    w = np.array([sig["H"], sig["Cl"]]) / (sig["H"] + sig["Cl"])
    temp = 5.0  # n(E ≈ 290 meV) ~ 1e-290: ⟨u²⟩ is the zero-point value
    modes = incoherent_modes(mol, temperature_k=temp)
    np.testing.assert_allclose(modes.msd_a2, u2, rtol=1e-10)
    s = indirect_spectrum(mol, "vision", order=2, temperature_k=temp, resolution=False,
                          energy_range_mev=(0.5, 2.2 * e))
    # the fundamental is in its bin; the overtone sits at 2E (within the half-bin of the order-2 grid)
    fund = s.by_order[0]
    assert abs(s.energy_mev[np.argmax(fund)] - e) <= DE / 2 + 1e-9
    assert abs(s.energy_mev[np.argmax(s.by_order[1])] - 2 * e) <= DE + 1e-9
    q2s = {1: float(VISION.q2((np.floor(e / DE) + 0.5) * DE, "backward")),  # Q² at the histogram bin centre
           2: float(VISION.q2(2 * e, "backward"))}
    for n, en in ((1, e), (2, 2 * e)):
        q2 = q2s[n]
        expect = np.sum(w * q2**n / factorial(n) * (u2 / 3) ** n * np.exp(-q2 * u2 / 3))
        sel = np.abs(s.energy_mev - en) <= 1.0
        got = s.by_order[n - 1][sel].sum() * DE * 1e-3
        # order 2: one bin of width 0.1 meV at 2E ± 0.05 meV, where Q² differs by < 1e-4 relative
        assert got == pytest.approx(expect, rel=1e-3 if n == 2 else 1e-9), n
    # each element's share is σ_i u_i² e^{−Q²⟨u_i²⟩/3}: the hydrogen end (light, σ 82 b) carries nearly all of it
    f = indirect_spectrum(mol, "vision", order=1, temperature_k=temp, resolution=False,
                          energy_range_mev=(0.5, 1.2 * e))
    share = w * u2 * np.exp(-q2s[1] * u2 / 3)
    assert f.by_element["H"].sum() / f.by_element["Cl"].sum() == pytest.approx(share[0] / share[1], rel=1e-9)


@pytest.fixture(scope="module")
def water():
    return atomvib.phonons(str(EXAMPLES / "water.xyz"), engine="xtb")


def test_water_fundamentals_positions_and_intensities(water):
    """Every fundamental in its 0.1 meV bin; its integral = Σ_i σ_i Q² u_iν²/3 e^{−Q²⟨u_i²⟩/3}/Σσ with u_iν² from the
    Cartesian normal modes, u_iν² = ħ²/(2E_ν) |d_iν|² / Σ_j m_j |d_jν|² (a route independent of the eigenvectors)."""
    e_modes = water.frequencies_cm1 / MEV_TO_CM1
    assert len(e_modes) == 3  # 3N − 6: translations and rotations excluded
    s = indirect_spectrum(water, "vision", order=1, temperature_k=5.0, resolution=False,
                          energy_range_mev=(0.5, 500.0))
    m = water.structure.masses
    d2 = (np.asarray(water.modes) ** 2).sum(axis=2)  # (nmode, natom)
    u2 = HBAR2_2AMU_MEV_A2 / e_modes[:, None] * d2 / (d2 * m[None, :]).sum(axis=1, keepdims=True)
    msd = u2.sum(axis=0)  # zero point, per atom
    sig = total_cross_sections_barn(water.structure.symbols)
    w = np.array([sig[x] for x in water.structure.symbols]) / sum(sig[x] for x in water.structure.symbols)
    for nu, en in enumerate(e_modes):
        k = int(np.floor(en / DE))
        q2 = float(VISION.q2((k + 0.5) * DE, "backward"))
        expect = np.sum(w * q2 * u2[nu] / 3 * np.exp(-q2 * msd / 3))
        idx = np.flatnonzero(np.abs(s.energy_mev - (k + 0.5) * DE) < 1e-6)
        got = s.intensity[idx[0]] * DE * 1e-3  # the whole peak sits in one bin
        assert got == pytest.approx(expect, rel=1e-6), (nu, en)
    # with the VISION resolution and overtones: the bending mode is the strongest peak below 250 meV, in its bin
    r = indirect_spectrum(water, "vision", order=3, temperature_k=5.0)
    assert abs(r.energy_mev[np.argmax(r.intensity)] - e_modes[0]) <= DE / 2 + 1e-9
    assert r.by_order[1].max() > 0  # overtones present, from the same machinery


def test_cli_ins_of_a_molecule_result(water, tmp_path, capsys):
    wdir = tmp_path / "water_atomvib"
    water.save(wdir)
    for inst in ("vision", "tosca"):
        out = tmp_path / inst
        rc = main(["ins", str(wdir), "--instrument", inst, "--emax", "500", "--out", str(out)])
        assert rc == 0, capsys.readouterr().err
        assert "molecule, 3 normal modes" in capsys.readouterr().out
        df = pd.read_csv(out / "ins.csv")
        assert list(df.columns) == ["energy_meV", "intensity", "intensity_forward", "O", "H",
                                    "order_1", "order_2", "order_3"]
        assert (out / "ins.png").stat().st_size > 10_000 and (out / "ins.json").is_file()
        bend = water.frequencies_cm1[0] / MEV_TO_CM1
        assert df["energy_meV"][df["intensity"].idxmax()] == pytest.approx(bend, abs=DE)
        assert type(atomvib.load(out)).__name__ == "InsSpectrum"
    rc = main(["ins", str(wdir), "--mesh", "4", "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc == 2 and "--mesh" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
