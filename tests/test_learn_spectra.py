"""Neutron-weighted DOS and VISION/TOSCA spectra from a DOS per element (atomvib.learn.spectra).

The key check: for NaCl (every site cubic, so the isotropic incoherent approximation loses nothing
when the eigenvectors are summed into a partial DOS) the spectrum built from the exact partial DOS
must equal the eigenvector-based :func:`atomvib.spectra.ins.vision_spectrum` on the same mesh.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NACL = DATA / "phonopy-examples" / "NaCl"


@pytest.fixture(scope="module")
def nacl():
    if not (NACL / "FORCE_SETS").exists():
        pytest.skip("shared reference data not available")
    import atomvib

    return atomvib.phonons(
        NACL / "phonopy_disp.yaml", forces=NACL / "FORCE_SETS", born=NACL / "BORN", mesh_density=20
    )


@pytest.fixture(scope="module")
def nacl_prediction(nacl):
    from atomvib.learn import predict
    from atomvib.learn.predictor import DEFAULT_MODEL

    if not DEFAULT_MODEL.exists():
        pytest.skip("shipped model not available")
    (p,) = predict(nacl.primitive)
    return p


def _inputs(result, modes, edges):
    from atomvib.learn.spectra import _element_masses
    from atomvib.spectra.dos import phonon_dos

    d = phonon_dos(result, unit="meV", bins=edges, modes=modes)
    masses, counts = _element_masses(result.primitive)
    return {el: g * np.diff(edges) for el, g in d.partial.items()}, masses, counts


@pytest.mark.parametrize("temperature_k, tol", [(5.0, 2e-3), (300.0, 1e-2)])
def test_vision_from_exact_partial_dos_equals_eigenvector_spectrum(nacl, temperature_k, tol):
    """Same mesh, same 0.1 meV bins: equal to 0.04 % (5 K) / 0.3 % (300 K) of the peak, orders 1-3.

    The only difference is that ħ²/2mE and the Bose factor are taken at the bin centre instead of
    at each mode's energy (a relative error ≲ ΔE/2E, largest at the low-energy end).
    """
    from atomvib.learn.spectra import spectrum_from_partial_dos
    from atomvib.spectra.ins import incoherent_modes, vision_spectrum

    modes = incoherent_modes(nacl, temperature_k=temperature_k, mesh=16)
    ref = vision_spectrum(nacl, modes=modes, energy_range_mev=(0.5, 60.0))
    edges = np.arange(0.0, 40.0001, 0.1)
    states, masses, counts = _inputs(nacl, modes, edges)
    sp = spectrum_from_partial_dos(
        edges, states, masses, counts, temperature_k=temperature_k, energy_range_mev=(0.5, 60.0)
    )
    np.testing.assert_allclose(sp.energy_mev, ref.energy_mev)
    for n in range(3):
        dev = np.abs(sp.by_order[n] - ref.by_order[n]).max() / ref.by_order[n].max()
        assert dev < tol, (n + 1, dev)
    assert sp.intensity.sum() == pytest.approx(ref.intensity.sum(), rel=1e-3)
    for el in ("Na", "Cl"):
        assert sp.msd_a2[el] == pytest.approx(ref.msd_a2[el], rel=1e-3)
        np.testing.assert_allclose(sp.by_element[el], ref.by_element[el], atol=tol * ref.intensity.max())


def test_tosca_and_coarse_bins_of_the_predictor(nacl):
    """On the predictor's 5 cm⁻¹ (0.62 meV) bins the TOSCA spectrum keeps its area and its mean energy
    to 0.5 % at 300 K (measured 0.04 % and 0.08 %): the DOS is spread evenly in each bin."""
    from atomvib.learn.spectra import spectrum_from_partial_dos
    from atomvib.spectra.ins import incoherent_modes, tosca_spectrum
    from atomvib.units import frequency_factor

    modes = incoherent_modes(nacl, temperature_k=300.0, mesh=16)
    ref = tosca_spectrum(nacl, modes=modes, energy_range_mev=(0.5, 60.0))
    edges = np.arange(0.0, 41.0, 5.0 * frequency_factor("cm-1", "meV"))
    states, masses, counts = _inputs(nacl, modes, edges)
    sp = spectrum_from_partial_dos(
        edges, states, masses, counts, "tosca", temperature_k=300.0, energy_range_mev=(0.5, 60.0)
    )

    def mean_e(s):
        return (s.energy_mev * s.intensity).sum() / s.intensity.sum()

    assert sp.intensity.sum() == pytest.approx(ref.intensity.sum(), rel=5e-3)
    assert mean_e(sp) == pytest.approx(mean_e(ref), rel=5e-3)


def test_neutron_weighted_dos_equals_phonon_dos_weighting(nacl):
    """From the exact partial DOS, Σ σ⟨M⟩/M g / N equals phonon_dos(weighting=...) (Euphonic's convention)."""
    from atomvib.learn.spectra import _element_masses, neutron_weighted_dos
    from atomvib.spectra.dos import phonon_dos
    from atomvib.spectra.ins import incoherent_modes

    modes = incoherent_modes(nacl, temperature_k=0.0, mesh=8, cutoff_mev=1e-6)
    bins = np.linspace(0.0, 35.0, 141)
    plain = phonon_dos(nacl, unit="meV", bins=bins, modes=modes)
    masses, counts = _element_masses(nacl.primitive)
    for weighting in ("total", "incoherent"):
        ref = phonon_dos(nacl, unit="meV", bins=bins, modes=modes, weighting=weighting)
        total, partial = neutron_weighted_dos(plain.partial, masses, counts, weighting=weighting)
        np.testing.assert_allclose(total, ref.total, rtol=1e-10, atol=1e-14)
        for el in ("Na", "Cl"):
            np.testing.assert_allclose(partial[el], ref.partial[el], rtol=1e-10, atol=1e-14)


def test_predicted_partial_dos_and_neutron_dos(nacl_prediction):
    """Each atom carries exactly 3 states, so each element integrates to 3 × its atoms and the
    neutron-weighted DOS to Σ_el 3 n_el σ_el ⟨M⟩/M_el / N (Sears 1992 total cross-sections)."""
    from atomvib.learn.spectra import predicted_neutron_dos
    from atomvib.spectra.neutron_data import cross_section

    p = nacl_prediction
    w = p.frequencies_cm1[1] - p.frequencies_cm1[0]
    assert set(p.partial_dos) == {"Na", "Cl"}
    for g in p.partial_dos.values():
        assert (g * w).sum() == pytest.approx(3.0, rel=1e-6)
        assert (g >= 0).all()
    np.testing.assert_allclose(sum(p.partial_dos.values()), p.dos, rtol=1e-6, atol=1e-12)
    e, total, partial = predicted_neutron_dos(p, unit="meV")
    m = {"Na": 22.98977, "Cl": 35.453}
    mean_m = (m["Na"] + m["Cl"]) / 2
    expect = sum(3 * cross_section(el).total_barn * mean_m / m[el] / 2 for el in m)
    assert (total * np.gradient(e)).sum() == pytest.approx(expect, rel=1e-3)


def test_predicted_vision_spectrum_of_nacl(nacl, nacl_prediction):
    """Predicted VISION spectrum against the DFT one at 5 K: area within 5 % (measured 2.5 %) and
    mean energy of the spectrum within 5 % (measured 2.7 %); NaCl is in distribution. Tolerances
    reflect the model's DOS error, not the conversion (exact, see the test above)."""
    from atomvib.learn.spectra import predicted_vision_spectrum
    from atomvib.spectra.ins import vision_spectrum

    ref = vision_spectrum(nacl, mesh=16, energy_range_mev=(0.5, 60.0))
    sp = predicted_vision_spectrum(nacl_prediction, energy_range_mev=(0.5, 60.0))
    assert sp.instrument == "vision" and sp.bank == "backward" and sp.order == 3
    assert (sp.intensity >= 0).all()
    np.testing.assert_allclose(sum(sp.by_element.values()), sp.intensity, rtol=1e-10, atol=1e-14)

    def mean_e(s):
        return (s.energy_mev * s.intensity).sum() / s.intensity.sum()

    assert nacl_prediction.in_distribution
    assert sp.intensity.sum() == pytest.approx(ref.intensity.sum(), rel=0.05)
    assert mean_e(sp) == pytest.approx(mean_e(ref), rel=0.05)


def test_prediction_without_partial_dos_is_refused(nacl_prediction):
    import dataclasses

    from atomvib.errors import InputError
    from atomvib.learn.spectra import predicted_vision_spectrum

    bare = dataclasses.replace(nacl_prediction, partial_dos=None)
    with pytest.raises(InputError, match="partial DOS"):
        predicted_vision_spectrum(bare)


def test_cli_predict_with_ins(nacl, nacl_prediction, tmp_path, capsys):
    """`atomvib predict --ins vision` adds the same spectrum as the API to the JSON line."""
    import json

    from atomvib.cli.main import main
    from atomvib.learn.spectra import predicted_vision_spectrum

    cif = tmp_path / "NaCl.cif"
    nacl.primitive.to_ase().write(cif)
    out = tmp_path / "p.jsonl"
    assert main(["predict", str(cif), "--ins", "vision", "--out", str(out), "-q"]) == 0
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    ref = predicted_vision_spectrum(nacl_prediction)
    assert line["ins_instrument"] == "vision backward, 5 K"
    np.testing.assert_allclose(line["ins_energy_meV"], ref.energy_mev, atol=1e-6)
    # the CIF round trip rounds the cell and positions, which moves the prediction by ~1e-4
    np.testing.assert_allclose(
        line["ins_intensity"], ref.intensity, rtol=2e-3, atol=1e-6 * ref.intensity.max()
    )
    with pytest.raises(SystemExit) as exc:  # argparse: usage error, exit code 2
        main(["predict", str(cif), "--ins", "arcs", "--out", str(out)])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
