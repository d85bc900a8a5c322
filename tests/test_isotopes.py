"""Isotopes (issue 16, item 4): masses change the dynamical matrix only, so the modes of an isotopic sample come
from the force constants already computed (no new force evaluation), and the neutron cross-sections follow the
isotope (Sears 1992).

Checked: (a) a diatomic X–H stretch scales by √(μ_H/μ_D) exactly; (b) the Γ optical mode of a two-atom crystal
(a spring model of LiH) scales by the reduced masses, the acoustic sum rule holds with any masses and every
frequency equals phonopy's own with those masses; (c) the INS fundamentals of an H and a D sample stand in the
closed-form ratio of σ × ⟨u²⟩ (× Q² and the Debye–Waller factor) to 1e-9; (d) no force is evaluated again (engine
calls counted; the CLI on a saved result never loads an engine); the table against Euphonic's transcription of
Sears (1992); the bad inputs of the CLI: one line, exit 2.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.build import bulk

import atomvib
from atomvib.cli.main import main
from atomvib.engines.base import EngineInfo
from atomvib.engines.springs import SpringEngine
from atomvib.errors import InputError
from atomvib.harmonic.isotopes import (
    isotope_mass,
    isotope_table,
    normalise_isotopes,
    species_label,
    with_isotopes,
)
from atomvib.harmonic.molecule import MoleculeVibrations, normal_modes
from atomvib.settings import PhononSettings
from atomvib.spectra.instruments import VISION
from atomvib.spectra.neutron_data import (
    _SEARS_1992_ISOTOPES,
    coherent_scattering_length_fm,
    cross_section,
    total_cross_sections_barn,
)
from atomvib.structure import Structure
from atomvib.units import EV_A2_AMU_TO_THZ, HBAR2_2AMU_MEV_A2, MEV_TO_CM1, THZ_TO_MEV
from conftest import EXAMPLES

DE = 0.1  # meV, VISION output bins
M_D = 2.0141017779  # amu, ²H (NIST/AME2012)


# ------------------------------------------------------------------------------------------------- helpers
class CountingSprings(SpringEngine):
    """Springs that count the structures they evaluate."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls = 0

    def evaluate(self, atoms_list, progress=None):
        self.calls += len(atoms_list)
        return super().evaluate(atoms_list, progress)


def _lih_springs():
    """LiH (rock salt, a = 4 Å) with nearest-neighbour springs only: a harmonic model with a two-atom basis."""
    return CountingSprings(k=2.0, r0=2.0, cutoff=2.4)


LIH = bulk("LiH", "rocksalt", a=4.0)
FAST = {"relax": False, "supercell": (2, 2, 2), "mesh_density": 20.0}


@pytest.fixture(scope="module")
def lih(tmp_path_factory):
    """(result, engine, checkpoint dir) of LiH with natural masses."""
    ck = tmp_path_factory.mktemp("lih_ck")
    eng = _lih_springs()
    return atomvib.phonons(LIH, engine=eng, checkpoint_dir=ck, **FAST), eng, ck


def _diatomic(k_ev_a2=5.0, symbols=("H", "F"), bond_a=0.92, apt=None) -> MoleculeVibrations:
    """A diatomic with a harmonic bond of stiffness k along x: one vibration, ω = √(k/μ) exactly."""
    st = Structure.from_ase(Atoms(symbols, positions=[(0, 0, 0), (bond_a, 0, 0)]), "diatomic")
    h = np.zeros((6, 6))
    h[0, 0] = h[3, 3] = k_ev_a2
    h[0, 3] = h[3, 0] = -k_ev_a2
    freqs, modes = normal_modes(st, h)
    return MoleculeVibrations(st, h, freqs, modes, 0.0, EngineInfo("test", "0"), PhononSettings(),
                              dipole_derivatives=apt)


def _gamma(ph):
    ph.run_qpoints([[0.0, 0.0, 0.0]])
    return np.sort(np.asarray(ph.qpoints.frequencies)[0])


def _one_line_error(capsys, rc, *words):
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


# ------------------------------------------------------------------------------------------------- the tables
def _euphonic_sears_rows() -> dict[str, dict]:
    import euphonic

    path = Path(euphonic.__file__).parent / "isotopes" / "data" / "sears-1992.csv"
    if not path.is_file():
        pytest.skip("Euphonic's transcription of Sears (1992) not found")
    rows = {}
    with open(path) as fh:
        r = csv.reader(fh)
        head = next(r)
        next(r)  # types
        for row in r:
            d = dict(zip(head, row))
            if d["a_number"]:
                rows[d["a_number"] + d["symbol"]] = d
    return rows


def test_isotope_cross_sections_and_masses_are_sears_1992_as_euphonic_transcribes_them():
    rows = _euphonic_sears_rows()
    num = lambda x: float(x) if x else 0.0  # noqa: E731  (a blank incoherent cross-section is zero)
    for label, (coh, inc, tot, b) in _SEARS_1992_ISOTOPES.items():
        d = rows[label]
        assert (coh, inc, tot) == (num(d["coherent_cross_section (barn)"]), num(d["incoherent_cross_section (barn)"]),
                                   num(d["scattering_cross_section (barn)"])), label
        assert complex(b) == complex(d["coherent_scattering_length (fm)"].strip("()")), label
        a = int(label[: -len(d["symbol"])])
        z = int(d["z_number"])
        # NIST's masses (AME2012) against the CSV's (a later evaluation): 6e-6 amu apart at most (⁵⁸Ni)
        assert isotope_mass(z, a) == pytest.approx(float(d["mass (amu)"]), abs=1e-5), label
    # the values the issue quotes, and the isotopes it asks for
    assert (cross_section("H").incoherent_barn, cross_section("H").coherent_barn) == (80.26, 1.7568)
    for lab in ("2H", "D"):
        assert (cross_section(lab).incoherent_barn, cross_section(lab).coherent_barn) == (2.05, 5.592)
    for lab in ("1H", "2H", "6Li", "7Li", "10B", "11B", "13C", "15N", "18O", "58Ni", "62Ni"):
        assert lab in _SEARS_1992_ISOTOPES
    assert coherent_scattering_length_fm("D") == 6.671 and coherent_scattering_length_fm("62Ni") == -8.7
    with pytest.raises(InputError, match="no neutron cross-section for the isotope 56Fe"):
        total_cross_sections_barn(["56Fe"])
    assert total_cross_sections_barn(["56Fe"], {"56Fe": 12.4}) == {"56Fe": 12.4}  # the API's way out


def test_the_mass_table_is_static(monkeypatch):
    """ase.data.isotopes only downloads; the table comes from phonopy's static data (no network at run time)."""
    import urllib.request

    import ase.data.isotopes

    def no_network(*a, **k):
        raise AssertionError("network used")

    monkeypatch.setattr(ase.data.isotopes, "download_isotope_data", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    isotope_table.cache_clear()
    assert isotope_mass(1, 2) == M_D and isotope_mass(3, 6) == pytest.approx(6.0151223)
    assert isotope_mass(1, 3) == pytest.approx(3.01604928)
    assert isotope_mass(28, 62) == pytest.approx(61.9283484)


def test_species_labels_follow_the_mass():
    assert species_label(1, 1.008) == "H"  # ASE's natural mass
    assert species_label(1, 1.00794) == "H"  # phonopy's natural mass (closer to it than to 1H)
    assert species_label(1, M_D) == "2H" and species_label(1, 2.014) == "2H"  # 4 decimals in a user's yaml
    assert species_label(1, 1.00782503) == "1H"
    assert species_label(8, 17.9991604) == "18O" and species_label(8, 15.9994) == "O"
    assert species_label(11, 22.98977) == "Na"  # monoisotopic: its natural data are the isotope's
    assert species_label(1, 5.0) == "H"  # a custom mass that is no isotope's: the element


def test_specifications_are_normalised_and_refused_in_one_line():
    assert normalise_isotopes({"H": 2, 5: 18, "5:O": "18"}) == (("H", 2), ("5", 18), ("5:O", 18))
    assert normalise_isotopes(["H=2", "3=1", "H=2"]) == (("3", 1), ("H", 2))  # a repeat moves to its last place
    assert normalise_isotopes("H=2,O=18") == (("H", 2), ("O", 18))
    assert PhononSettings(isotopes={"H": 2}).to_dict()["isotopes"] == {"H": 2}
    assert PhononSettings().digest() == PhononSettings(isotopes=()).digest()  # old database keys unchanged
    assert PhononSettings(isotopes={"H": 2}).digest() != PhononSettings().digest()
    for bad, words in (({"H": 5}, "no isotope 5H"), ({"Q": 2}, "Q is neither"), ({"H": 2.5}, "positive integer"),
                       ({"5:Xx": 1}, "Xx is not an element"), ("H2", "not TARGET=A"), ({-1: 2}, "negative")):
        with pytest.raises(InputError, match=words):
            PhononSettings(isotopes=bad)


# ------------------------------------------------------------------------------------------------- (a) molecule
def test_diatomic_stretch_scales_by_the_reduced_masses():
    """ω ∝ 1/√μ: the H–F stretch of D–F is ω_H √(μ_HF/μ_DF), to 1e-12 (the Hessian is not touched)."""
    hf = _diatomic()
    df = with_isotopes(hf, {"H": 2})
    m = hf.structure.masses
    mu_h, mu_d = m[0] * m[1] / (m[0] + m[1]), M_D * m[1] / (M_D + m[1])
    assert df.frequencies_cm1[0] / hf.frequencies_cm1[0] == pytest.approx(np.sqrt(mu_h / mu_d), rel=1e-12)
    assert hf.frequencies_cm1[0] / MEV_TO_CM1 == pytest.approx(
        THZ_TO_MEV * EV_A2_AMU_TO_THZ * np.sqrt(5.0 / mu_h), rel=1e-12)
    assert df.hessian is hf.hessian and df.structure.masses[0] == M_D and df.settings.isotopes == (("H", 2),)
    # by site, with the element check; a second call adds to the recorded specification
    assert with_isotopes(hf, {"0:H": 2}).frequencies_cm1[0] == df.frequencies_cm1[0]
    assert with_isotopes(df, {"F": 19}).settings.isotopes == (("H", 2), ("F", 19))
    with pytest.raises(InputError, match="site 1 is F, not H"):
        with_isotopes(hf, {"1:H": 2})


def test_symmetry_number_counts_isotopes_apart():
    st = Structure.from_ase(Atoms("OH2", positions=[(0, 0, 0.12), (0, 0.76, -0.47), (0, -0.76, -0.47)]), "water")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(9, 9))
    h = a @ a.T
    f, modes = normal_modes(st, h)
    h2o = MoleculeVibrations(st, h, f, modes, 0.0, EngineInfo("test", "0"), PhononSettings())
    assert h2o.symmetry_number() == 2
    assert with_isotopes(h2o, {"H": 2}).symmetry_number() == 2  # D2O
    assert with_isotopes(h2o, {"1:H": 2}).symmetry_number() == 1  # HDO


# ------------------------------------------------------------------------------------------------- (b), (d) crystal
def test_crystal_gamma_optical_mode_sum_rule_and_no_new_forces(lih):
    r, eng, ck = lih
    n_forces = eng.calls
    assert n_forces == r.n_displacements == 2
    again = _lih_springs()
    rd = atomvib.phonons(LIH, engine=again, checkpoint_dir=ck, isotopes={"H": 2}, **FAST)
    assert again.calls == 0  # every displaced cell from the checkpoint (keyed by the natural-mass structure)
    assert rd.settings.isotopes == (("H", 2),) and rd.primitive.masses[1] == M_D
    assert rd.summary()["settings"]["isotopes"] == {"H": 2}
    np.testing.assert_array_equal(rd.force_constants.force_constants, r.force_constants.force_constants)
    # the same as relabelling the saved result
    np.testing.assert_allclose(with_isotopes(r, {"H": 2}).bands.frequencies_thz, rd.bands.frequencies_thz, atol=1e-10)
    m_li, m_h = r.primitive.masses
    for iso, (ma, mb) in (({"H": 2}, (m_li, M_D)), ({"Li": 6, "H": 2}, (isotope_mass(3, 6), M_D))):
        fh = _gamma(r.to_phonopy())
        fd = _gamma(with_isotopes(r.force_constants, iso).phonopy())
        # acoustic sum rule: three zero modes at Γ whatever the masses
        assert np.abs(fd[:3]).max() < 1e-5 and np.abs(fh[:3]).max() < 1e-5
        ratio = np.sqrt((m_li * m_h / (m_li + m_h)) / (ma * mb / (ma + mb)))
        np.testing.assert_allclose(fd[3:] / fh[3:], ratio, rtol=1e-9)
    # every frequency anywhere in the zone: phonopy's own dynamical matrix with those masses
    import phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    fc = r.force_constants
    u = fc.unitcell
    ref = phonopy.Phonopy(PhonopyAtoms(numbers=u.numbers, positions=u.positions, cell=u.cell, masses=[m_li, M_D]),
                          supercell_matrix=fc.supercell_matrix, primitive_matrix=fc.primitive_matrix)
    ref.force_constants = fc.force_constants
    q = np.random.default_rng(1).random((20, 3))
    ours = with_isotopes(fc, {"H": 2}).phonopy()
    ref.run_qpoints(q)
    ours.run_qpoints(q)
    np.testing.assert_allclose(ours.qpoints.frequencies, ref.qpoints.frequencies, atol=1e-10)


def test_molecule_rerun_with_isotopes_evaluates_no_displaced_geometry(tmp_path):
    hf = Atoms("HF", positions=[(0, 0, 0), (0.92, 0, 0)])
    eng = CountingSprings(k=5.0, r0=0.92, cutoff=1.5)
    h = atomvib.phonons(hf, engine=eng, relax=False, checkpoint_dir=tmp_path)
    assert eng.calls == 12 + 1  # 6N displaced geometries and the energy
    eng2 = CountingSprings(k=5.0, r0=0.92, cutoff=1.5)
    d = atomvib.phonons(hf, engine=eng2, relax=False, checkpoint_dir=tmp_path, isotopes={"H": 2})
    assert eng2.calls == 1  # the energy of the structure only: every displaced geometry from the checkpoint
    np.testing.assert_array_equal(d.hessian, h.hessian)
    np.testing.assert_allclose(d.frequencies_cm1, with_isotopes(h, {"H": 2}).frequencies_cm1, rtol=1e-12)


def test_site_isotopes_of_a_crystal_must_respect_its_symmetry(tmp_path):
    conv = bulk("LiH", "rocksalt", a=4.0, cubic=True)  # 8 atoms: 4 equivalent H sites
    eng = _lih_springs()
    h_sites = [i for i, s in enumerate(conv.get_chemical_symbols()) if s == "H"]
    with pytest.raises(InputError, match="equivalent by the crystal's symmetry"):
        atomvib.phonons(conv, engine=eng, primitive=False, isotopes={f"{h_sites[0]}:H": 2}, **FAST)
    assert eng.calls == 0  # refused before any force
    with pytest.raises(InputError, match="site 99 is out of range"):
        atomvib.phonons(conv, engine=eng, isotopes={"99": 2}, **FAST)
    assert eng.calls == 0


def test_effective_phonons_are_refused(lih):
    """Force constants fitted to MD or harmonic sampling were fitted at the masses of that run."""
    import dataclasses

    from atomvib.cli.common import with_isotope_masses
    from atomvib.dynamics.tdep import EffectivePhonons

    r = lih[0]
    eff = EffectivePhonons(**{f.name: getattr(r, f.name) for f in dataclasses.fields(r)})
    for f in (with_isotopes, with_isotope_masses):
        with pytest.raises(InputError, match="fitted at the masses of its run"):
            f(eff, (("H", 2),))


# ------------------------------------------------------------------------------------------------- (c) INS H vs D
@pytest.mark.parametrize("partner", ["F", "Li"])
def test_ins_of_h_and_d_samples_stand_in_the_ratio_of_cross_section_times_amplitude(partner):
    """One fundamental per sample: its integral is Σ_i σ_i Q² u_i²/3 e^{−Q²⟨u_i²⟩/3} / Σ_i σ_i with u_i² the
    zero-point amplitude ħ²/(2 m_i E) m_j/M of a diatomic; the H/D ratio of the two integrals is that of
    σ_H u_H² vs σ_D u_D² (and of Q², the Debye–Waller factor and the normalising Σσ), to 1e-9."""
    from atomvib.spectra.ins import indirect_spectrum

    def closed_form(mol):
        m = mol.structure.masses
        e = mol.frequencies_cm1[0] / MEV_TO_CM1
        u2 = HBAR2_2AMU_MEV_A2 / (m * e) * m[::-1] / m.sum()
        sig = total_cross_sections_barn(["2H" if m[0] > 2 else "H", partner])
        s = np.array(list(sig.values()))
        q2 = float(VISION.q2((np.floor(e / DE) + 0.5) * DE, "backward"))
        return np.sum(s * q2 * u2 / 3 * np.exp(-q2 * u2 / 3)) / s.sum(), e, s, u2

    h = _diatomic(symbols=("H", partner), bond_a=0.92 if partner == "F" else 1.6)
    d = with_isotopes(h, {"H": 2})
    got, want = {}, {}
    for name, mol in (("H", h), ("D", d)):
        want[name], e, s, u2 = closed_form(mol)
        sp = indirect_spectrum(mol, "vision", order=1, temperature_k=5.0, resolution=False,
                               energy_range_mev=(0.5, 1.5 * e))
        got[name] = sp.intensity[np.abs(sp.energy_mev - e) <= 1.0].sum() * DE * 1e-3
        assert got[name] == pytest.approx(want[name], rel=1e-9), name
        assert set(sp.cross_sections_barn) == {"H" if name == "H" else "2H", partner}
    assert got["H"] / got["D"] == pytest.approx(want["H"] / want["D"], rel=1e-9)
    # H–F: the H end carries nearly all of it, so the ratio is close to σ_H u_H² / (σ_D u_D²) over the cells' Σσ
    # (82.02/7.64 · u_H²/u_D² · Σσ_DF/Σσ_HF, Q² and the Debye–Waller factor near 1 at these amplitudes)
    assert got["H"] / got["D"] > 1.0


# ------------------------------------------------------------------------------------------------- the CLI
def test_cli_ins_of_a_saved_result_with_isotopes_loads_no_engine(lih, tmp_path, capsys, monkeypatch):
    r, _, _ = lih
    res = tmp_path / "lih_atomvib"
    r.save(res)
    import atomvib.engines.registry as registry
    import atomvib.workflow as workflow

    def no_engine(*a, **k):
        raise AssertionError("an engine was loaded")

    monkeypatch.setattr(workflow, "get_engine", no_engine)
    monkeypatch.setattr(registry, "get_engine", no_engine)
    outs = {}
    for name, extra in (("h", []), ("d", ["--isotope", "H=2"]), ("d6", ["--isotope", "H=2", "--isotope", "0:Li=6"])):
        out = tmp_path / name
        rc = main(["ins", str(res), "--out", str(out), "--no-plot", "--emax", "150", *extra])
        assert rc == 0, capsys.readouterr().err
        capsys.readouterr()
        outs[name] = out
    h, d = (pd.read_csv(outs[k] / "ins.csv") for k in ("h", "d"))
    assert "H" in h.columns and "2H" in d.columns and "H" not in d.columns
    import json

    meta = json.loads((outs["d6"] / "ins.json").read_text())
    assert meta["isotopes"] == {"H": 2, "0:Li": 6} and meta["cross_sections_barn"] == {"6Li": 0.97, "2H": 7.64}
    # the optical band (above the acoustic one) of D lies lower by about √2 (the H vibration dominates it)
    eh, ed = (df["energy_meV"][df["order_1"].where(df["energy_meV"] > 60).idxmax()] for df in (h, d))
    assert 1.25 < eh / ed < 1.45
    for bad, words in (("H=5", "no isotope 5H"), ("Q=2", "Q is neither"), ("999=2", "site 999 is out of range"),
                       ("0:H=2", "site 0 is Li, not H"), ("Na=23", "no Na in LiH")):
        rc = main(["ins", str(res), "--out", str(tmp_path / "bad"), "--isotope", bad])
        _one_line_error(capsys, rc, words, f"isotope {bad}")
    assert not (tmp_path / "bad").exists()


def test_cli_neutron_spectra_refuse_an_isotope_without_data_phonons_take_it(tmp_path, capsys):
    nacl = bulk("NaCl", "rocksalt", a=5.6)
    eng = SpringEngine(k=1.0, r0=2.8, cutoff=3.3)
    r = atomvib.phonons(nacl, engine=eng, isotopes={"Cl": 37}, **FAST)  # a mass for the phonons: fine
    assert r.primitive.masses[1] == pytest.approx(isotope_mass(17, 37))
    res = tmp_path / "na37cl"
    r.save(res)
    rc = main(["ins", str(res), "--out", str(tmp_path / "ins")])
    _one_line_error(capsys, rc, "no neutron cross-section for the isotope 37Cl")


def test_cli_phonons_refuses_bad_isotopes_before_computing(tmp_path, capsys):
    water = str(EXAMPLES / "water.xyz")
    for bad, words in (("H=5", "no isotope 5H"), ("Q=2", "Q is neither"), ("999=2", "site 999 is out of range")):
        rc = main(["phonons", water, "--engine", "emt", "--out", str(tmp_path / "w"), "--isotope", bad])
        _one_line_error(capsys, rc, *words.split("|"))
    assert not (tmp_path / "w").exists()


def test_cli_ir_of_a_molecule_result_with_isotopes(tmp_path, capsys):
    apt = np.zeros((2, 3, 3))
    apt[0] = np.eye(3) * 0.4
    apt[1] = -np.eye(3) * 0.4  # charges ±0.4 e: an IR-active stretch
    res = tmp_path / "hf"
    _diatomic(apt=apt).save(res)
    outs = {}
    for name, extra in (("h", []), ("d", ["--isotope", "H=2"])):
        rc = main(["ir", str(res), "--out", str(tmp_path / name), "--no-plot", *extra])
        assert rc == 0, capsys.readouterr().err
        outs[name] = pd.read_csv(tmp_path / name / "ir_modes.csv")
    m_h, m_f = Structure.from_ase(Atoms("HF")).masses
    ratio = np.sqrt((M_D * m_f / (M_D + m_f)) / (m_h * m_f / (m_h + m_f)))
    # ir_modes.csv holds 8 significant digits
    assert outs["h"].iloc[0, 0] / outs["d"].iloc[0, 0] == pytest.approx(ratio, rel=1e-7)
    # intensity ∝ (dμ/dQ)² = q²/μ for fixed charges ±q
    assert outs["h"].iloc[0, 1] / outs["d"].iloc[0, 1] == pytest.approx(ratio**2, rel=1e-7)


def test_coherent_scattering_lengths_follow_the_isotope(lih):
    from atomvib.spectra.coherent import coherent_path, euphonic_force_constants, scattering_lengths

    r, _, _ = lih
    fc_h = euphonic_force_constants(r)
    fc_d = euphonic_force_constants(with_isotopes(r.force_constants, {"H": 2}))
    assert scattering_lengths(fc_h.crystal) == "Sears1992"
    b = scattering_lengths(fc_d.crystal)
    assert sorted(b) == ["2H", "Li"] and b["2H"].to("fm").magnitude == 6.671
    q = [[0.1, 0.0, 0.0], [1.1, 0.0, 0.0]]
    edges = np.linspace(0, 150, 151)
    sh = coherent_path(r, q, edges, temperature_k=None)
    sd = coherent_path(with_isotopes(r.force_constants, {"H": 2}), q, edges, temperature_k=None)
    assert sh.intensity.sum() > 0 and sd.intensity.sum() > 0
    assert not np.allclose(sh.intensity, sd.intensity)
