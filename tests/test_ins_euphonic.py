"""DOS, neutron-weighted partial DOS, Debye–Waller factors and coherent S(Q,E) against Euphonic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atomvib.spectra.coherent import coherent_path, coherent_powder_map, euphonic_force_constants
from atomvib.spectra.dos import phonon_dos
from atomvib.spectra.ins import incoherent_modes
from atomvib.units import THZ_TO_MEV

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "phonopy-examples"
_CACHE: dict = {}
MESH = 8


def _setup(name):
    if not (DATA / name).is_dir():
        pytest.skip("reference data ../shared/data not present")
    if name not in _CACHE:
        import phonopy

        d = DATA / name
        ph = phonopy.load(
            str(d / "phonopy_disp.yaml"),
            force_sets_filename=str(d / "FORCE_SETS"),
            born_filename=str(d / "BORN"),
            log_level=0,
        )
        fc = euphonic_force_constants(ph)
        # Γ-centred mesh, the same q-points phonopy uses (euphonic.util.mp_grid shifts even meshes)
        g = np.array(np.meshgrid(*[np.arange(MESH) / MESH] * 3, indexing="ij")).reshape(3, -1).T
        # Γ itself is left out on both sides: its LO–TO limit depends on a direction (see below)
        g = g[np.any(g != 0, axis=1)]
        modes = fc.calculate_qpoint_phonon_modes(g, asr="reciprocal")
        _CACHE[name] = (ph, fc, modes)
    return _CACHE[name]


def _ours(ph, **kw):
    # full Γ-centred mesh (Γ's weight is 1/MESH³, below the 1 % tolerance)
    return phonon_dos(ph, mesh=MESH, **kw)


@pytest.mark.parametrize("name", ["NaCl", "MgO"])
def test_dos_and_neutron_weighted_pdos_match_euphonic(name):
    from euphonic import ureg

    ph, fc, modes = _setup(name)
    emax = 1.1 * modes.frequencies.to("meV").magnitude.max()
    bins = np.linspace(0.0, emax, 221)
    sigma = 0.8  # meV; Euphonic 2.1's ``mode_widths`` are Gaussian standard deviations
    widths = np.full(modes.frequencies.shape, sigma) * ureg("meV")
    fwhm = sigma * 2.0 * np.sqrt(2.0 * np.log(2.0))
    ours = _ours(ph, bins=bins, fwhm=fwhm, unit="meV")
    ref = modes.calculate_dos(bins * ureg("meV"), mode_widths=widths).y_data.to("1/meV").magnitude
    natom = len(ph.primitive)
    # Euphonic's DOS integrates to 3 (per atom); ours to 3·natom (per primitive cell)
    scale = ours.total.sum() / ref.sum()
    assert scale == pytest.approx(natom, rel=0.01)
    assert np.abs(ours.total / scale - ref).max() < 0.01 * ref.max()
    # neutron-weighted partial DOS (σ_coh+inc ⟨M⟩/M, Sears 1992), both per atom, barn per meV
    w = _ours(ph, bins=bins, fwhm=fwhm, unit="meV", weighting="total")
    pw = modes.calculate_pdos(
        bins * ureg("meV"),
        mode_widths=widths,
        weighting="coherent-plus-incoherent",
        cross_sections="Sears1992",
    )
    for i, el in enumerate(fc.crystal.atom_type):
        ref_i = pw.y_data[i].to("barn/meV").magnitude
        assert np.abs(w.partial[el] / scale * natom - ref_i).max() < 0.01 * ref_i.max(), el
    # the same DOS on other axes: integral is unit-independent
    cm = _ours(ph, bins=bins * 8.065544, fwhm=fwhm * 8.065544, unit="cm-1")
    assert np.trapezoid(cm.total, cm.energy) == pytest.approx(np.trapezoid(ours.total, ours.energy), rel=1e-6)
    thz = _ours(ph, bins=bins / THZ_TO_MEV, unit="THz")
    assert thz.total.sum() * np.diff(thz.energy)[0] == pytest.approx(3 * natom, rel=0.01)


@pytest.mark.parametrize("temperature_k", [5.0, 300.0])
def test_debye_waller_matches_euphonic(temperature_k):
    """Euphonic's W tensor (exp(−Q·W·Q)) has trace ⟨u²⟩/2 (x+y+z): same mesh, same answer to 1 %."""
    from euphonic import ureg

    ph, fc, modes = _setup("NaCl")
    dw = modes.calculate_debye_waller(temperature_k * ureg("K"))
    tr = np.trace(dw.debye_waller.to("angstrom**2").magnitude, axis1=1, axis2=2)
    ours = incoherent_modes(ph, temperature_k=temperature_k, mesh=MESH, mesh_symmetry=True)
    # Euphonic's grid here lacks Γ (1 of MESH³ points): normalise the same way
    nq = MESH**3
    assert ours.msd_a2 == pytest.approx(2 * tr * (nq - 1) / nq, rel=0.01)


def test_coherent_path_follows_dispersion():
    """Along Γ→X (second zone) the coherent intensity peaks lie on phonopy's branches at each q."""
    ph, fc, _ = _setup("NaCl")
    q = np.array([[0.0, 0.5 + 0.05 * k, 0.5 + 0.05 * k] for k in range(1, 10)]) + np.array([1.0, 1.0, 0.0])
    ebins = np.arange(0.0, 35.0, 0.25)
    m = coherent_path(ph, q, ebins, temperature_k=5.0, dw_mesh=4)
    assert m.intensity.shape == (len(q), len(ebins) - 1)
    ph.run_qpoints(q)
    bands = ph.get_qpoints_dict()["frequencies"] * THZ_TO_MEV
    for k in range(len(q)):
        e_peak = m.energy_mev[np.argmax(m.intensity[k])]
        assert np.min(np.abs(bands[k] - e_peak)) < 0.25
    assert np.all(np.diff(m.x) > 0)


def test_coherent_powder_map_energy_range():
    """Powder-averaged coherent one-phonon intensity lies inside the phonon band (0..ω_max)."""
    ph, fc, modes = _setup("NaCl")
    ebins = np.arange(0.0, 60.0, 0.5)
    m = coherent_powder_map(ph, [2.0, 4.0], ebins, temperature_k=5.0, dw_mesh=4, npts=200, fc=fc)
    wmax = modes.frequencies.to("meV").magnitude.max()
    above = m.energy_mev > wmax + 1.0
    assert np.all(m.intensity[:, above] < 1e-6 * m.intensity.max())
    assert np.all(m.intensity.sum(axis=1) > 0)
