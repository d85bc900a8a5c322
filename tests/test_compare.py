"""Measured spectra, similarity scores and the scale/background/broadening fit (issue 3, item 5)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from atomvib.errors import InputError
from atomvib.spectra.compare import (
    compare,
    fit_spectrum,
    incoherent_powder_spectrum,
    similarity_arrays,
    spectral_information_similarity,
)
from atomvib.spectra.measured import Spectrum1D, read_columns, read_spectrum, read_sqe_map
from atomvib.units import KB_EV_PER_K, MEV_TO_CM1, NEUTRON_E_MEV_PER_K2, NEUTRON_MASS_AMU, THZ_TO_MEV

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
AL_IQE = DATA / "ins-experiment" / "Al-iqe.h5"


def _need_al():
    if not AL_IQE.is_file():
        pytest.skip("shared/data/ins-experiment/Al-iqe.h5 not available")


def _gauss(x, x0, s):
    return np.exp(-0.5 * ((x - x0) / s) ** 2)


def _toy_computed():
    """A DOS-like computed spectrum with three peaks, 0.05 meV steps."""
    x = np.arange(0.0, 60.0, 0.05)
    y = 1.0 * _gauss(x, 15, 1.2) + 0.6 * _gauss(x, 28, 2.0) + 1.4 * _gauss(x, 38, 1.0)
    return Spectrum1D(x, y, None, "meV")


def _synthetic_measurement(seed, s=0.93, amp=400.0, sigma=1.5, b0=20.0, b1=0.3):
    """Stretch by s, broaden by sigma (exact Gaussians), add linear background and Poisson noise."""
    rng = np.random.default_rng(seed)
    x = np.arange(5.0, 55.0, 0.5)
    # analytic truth: each Gaussian at x0·s with width sqrt((w·s)² + σ²), area preserved up to the 1/s Jacobian
    truth = np.zeros_like(x)
    for a, x0, w in ((1.0, 15, 1.2), (0.6, 28, 2.0), (1.4, 38, 1.0)):
        wt = np.hypot(w * s, sigma)
        truth += a * (w * s / wt) * _gauss(x, x0 * s, wt)
    lam = amp * truth + b0 + b1 * (x - 30.0)
    counts = rng.poisson(lam).astype(float)
    return Spectrum1D(x, counts, np.sqrt(np.maximum(counts, 1.0)), "meV", (), f"synthetic seed {seed}")


# ----------------------------------------------------------------------------------------- reading
def test_read_text_with_errors_and_unit_from_header(tmp_path):
    p = tmp_path / "m.dat"
    x = np.arange(0, 50, 0.5)
    np.savetxt(p, np.column_stack([x, x**2, np.full_like(x, 0.1)]), header="energy (meV)  S  error")
    s = read_columns(p)
    assert s.unit == "meV" and s.error is not None and np.allclose(s.y, x**2) and s.notes == ()
    c = s.to_unit("cm-1")
    assert np.allclose(c.x, x * MEV_TO_CM1)  # 1 meV = 8.0655 cm^-1
    assert abs(MEV_TO_CM1 - 8.06554) < 1e-4


def test_read_csv_header_atomvib_layout_and_units_override(tmp_path):
    p = tmp_path / "ir.csv"
    p.write_text("wavenumber_cm1,intensity,H,O\n100,1,0.5,0.5\n200,2,1,1\n300,3,1.5,1.5\n")
    s = read_columns(p)
    assert s.unit == "cm-1" and s.error is None and np.allclose(s.y, [1, 2, 3])  # partials are not errors
    q = tmp_path / "plain.txt"
    q.write_text("1 2\n2 3\n3 4\n")
    with pytest.raises(InputError, match="--units"):
        read_columns(q)
    assert read_columns(q, units="THz").unit == "THz"


def test_bad_input_nan_unsorted_nonuniform_negative(tmp_path):
    p = tmp_path / "bad.txt"
    x = np.array([3.0, 1.0, 2.0, 4.0, 6.0, 7.0, 8.0, 5.0])
    y = 2.0 * x - 5.0  # linear: resampling must reproduce it exactly; negative at x = 1, 2
    y[3] = np.nan
    np.savetxt(p, np.column_stack([x, y]), header="E_meV counts")
    p.write_text(p.read_text() + "\n9.5 14\n")  # the last step is 1.5: non-uniform
    with pytest.warns(UserWarning) as rec:
        s = read_columns(p)
    text = " ".join(s.notes)
    assert "dropped 1 of 9" in text and "sorted" in text and "resampled" in text and "negative" in text
    assert len(rec) >= 4
    assert np.all(np.diff(s.x) > 0) and np.ptp(np.diff(s.x)) < 1e-9
    assert np.allclose(s.y, 2.0 * s.x - 5.0)
    allnan = tmp_path / "nan.txt"
    allnan.write_text("# energy_meV y\nnan nan\nnan 1\n1 nan\n")
    with pytest.raises(InputError, match="NaN"):
        read_columns(allnan)


def test_sqe_map_reduction_matches_numpy_mean():
    _need_al()
    mp = read_sqe_map(AL_IQE)
    assert mp.intensity.shape == (120, 149) and np.isnan(mp.intensity).any()
    s = mp.reduce(3.0, 9.0)
    qm = (mp.q_invA >= 3) & (mp.q_invA <= 9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = np.nanmean(mp.intensity[qm], axis=0)
    keep = np.isfinite(ref)
    assert np.allclose(s.x, mp.energy_mev[keep]) and np.allclose(s.y, ref[keep])
    # elastic line at E = 0 within one 0.8 meV bin, aluminium's two DOS peaks (≈ 19 and ≈ 36 meV) above it
    assert abs(s.x[np.argmax(s.y)]) < 0.8
    inel = (s.x > 10) & (s.x < 50)
    assert 15 < s.x[inel][np.argmax(s.y[inel])] < 25
    # errors are √(stored variances): the bin-to-bin scatter of a flat stretch agrees with them
    d = mp.intensity[60, 60:75]
    assert 0.5 < np.std(np.diff(d)) / np.sqrt(2) / np.median(mp.error[60, 60:75]) < 2.0
    assert read_spectrum(AL_IQE, q_range=(3, 9)).unit == "meV"
    with pytest.raises(InputError, match="q-range"):
        mp.reduce(20, 30)


def test_mantid_nexus_1d(tmp_path):
    import h5py

    p = tmp_path / "ws.nxs"
    edges = np.linspace(0, 40, 81)
    centres = 0.5 * (edges[1:] + edges[:-1])
    with h5py.File(p, "w") as f:
        ws = f.create_group("mantid_workspace_1/workspace")
        ws["values"] = _gauss(centres, 20, 3)[None, :]
        ws["errors"] = np.full((1, 80), 0.01)
        ax = ws.create_dataset("axis1", data=edges)
        ax.attrs["units"] = np.bytes_(b"DeltaE")
    s = read_spectrum(p)
    assert s.unit == "meV" and np.allclose(s.x, centres) and s.x[np.argmax(s.y)] == pytest.approx(20, abs=0.5)


# ----------------------------------------------------------------------------------------- similarity
def test_similarity_identity_and_wasserstein_is_the_shift():
    x = np.arange(0, 100, 0.1)
    a = _gauss(x, 40, 3)
    same = similarity_arrays(x, a, 5 * a, "meV")  # scale-invariant
    assert same.cosine == pytest.approx(1) and same.pearson == pytest.approx(1)
    assert same.wasserstein == pytest.approx(0, abs=1e-9) and same.sis == pytest.approx(1)
    # W1 between two translated copies of a distribution is the translation (here 4.0 meV)
    shifted = similarity_arrays(x, a, _gauss(x, 44, 3), "meV")
    assert shifted.wasserstein == pytest.approx(4.0, rel=1e-3)
    in_cm1 = similarity_arrays(x * MEV_TO_CM1, a, _gauss(x, 44, 3), "cm-1")
    assert in_cm1.wasserstein == pytest.approx(4.0 * MEV_TO_CM1, rel=1e-3)
    # SIS: for two equal-width Gaussians shifted by d, SID = (d/σ)² analytically, so SIS = 1/(1 + 16/9)
    assert shifted.sis == pytest.approx(1 / (1 + (4 / 3) ** 2), rel=1e-3)
    assert spectral_information_similarity(a, _gauss(x, 60, 3)) < shifted.sis < 1


# ----------------------------------------------------------------------------------------- fit
def test_fit_recovers_known_frequency_scale():
    comp = _toy_computed()
    meas = _synthetic_measurement(seed=7)
    f = fit_spectrum(comp, meas, fit=("scale", "linear", "broadening"))
    s, ds = f.frequency_scale
    assert 0 < ds < 0.005
    assert abs(s - 0.93) < 3 * ds
    sig, dsig = f.parameters["broadening_sigma"]
    assert abs(sig - 1.5) < 3 * dsig
    assert (
        abs(f.parameters["background"][0] - (20.0 + 0.3 * (f.x_ref - 30.0)))
        < 3 * f.parameters["background"][1]
    )
    assert 0.7 < f.chi2_red < 1.4  # Poisson noise with √N errors: the model is exact


def test_fit_uncertainties_are_honest():
    comp = _toy_computed()
    pulls = []
    for seed in range(20):
        f = fit_spectrum(comp, _synthetic_measurement(seed=100 + seed), fit="scale,linear,broadening")
        s, ds = f.frequency_scale
        pulls.append((s - 0.93) / ds)
    rms = float(np.sqrt(np.mean(np.square(pulls))))
    assert 0.5 < rms < 1.6, pulls


def test_fit_without_errors_and_fixed_parameters():
    comp = _toy_computed()
    m = _synthetic_measurement(seed=3)
    noerr = Spectrum1D(m.x, m.y, None, "meV")
    f = fit_spectrum(comp, noerr, fit=("scale", "broadening", "linear"))
    assert not f.weighted and abs(f.frequency_scale[0] - 0.93) < 3 * f.frequency_scale[1]
    fixed = fit_spectrum(comp, m, fit=("background",))
    assert fixed.parameters["frequency_scale"] == (1.0, 0.0) and fixed.fitted == (
        "intensity_scale",
        "background",
    )
    with pytest.raises(InputError, match="unknown fit"):
        fit_spectrum(comp, m, fit="scale,wobble")


# ----------------------------------------------------------------------------------------- incoherent model
def test_incoherent_model_einstein_msd_detailed_balance_and_sum_rule():
    e0, temp, mass = 20.0, 300.0, 26.98
    f = np.linspace(0.1, 10, 2000)
    dos = _gauss(f * THZ_TO_MEV, e0, 0.05)  # an Einstein solid
    q = np.linspace(2, 10, 17)
    e = np.arange(-80, 120, 0.05)
    ip = incoherent_powder_spectrum(f, dos, mass, temp, q, e, max_order=8, step_mev=0.01)
    kt = KB_EV_PER_K * 1e3 * temp
    recoil = NEUTRON_E_MEV_PER_K2 * NEUTRON_MASS_AMU / mass
    assert ip.msd_a2 == pytest.approx(recoil / e0 / np.tanh(e0 / (2 * kt)), rel=2e-3)
    one = ip.orders[0]
    i_loss, i_gain = np.argmin(abs(e - e0)), np.argmin(abs(e + e0))
    assert one[i_gain] / one[i_loss] == pytest.approx(np.exp(-e0 / kt), rel=1e-2)
    # Σ_n ∫S_n dE = 1 − exp(−Q²⟨u²⟩), averaged over the Q bins
    expect = np.mean(1 - np.exp(-(q**2) * ip.msd_a2))
    assert ip.total.sum() * 0.05 == pytest.approx(expect, rel=2e-3)


# ----------------------------------------------------------------------------------------- aluminium
def _al_vs_arcs(engine, temperature_k=300.0):
    from ase.build import bulk

    import atomvib

    r = atomvib.phonons(bulk("Al", "fcc", a=4.05), engine=engine, relax=True, mesh_density=40)
    d = r.dos()
    mp = read_sqe_map(AL_IQE)
    qm = (mp.q_invA >= 3) & (mp.q_invA <= 9)
    ef = np.arange(0.05, 80.0, 0.1)
    ie = np.clip(np.searchsorted(mp.energy_mev, ef), 0, len(mp.energy_mev) - 1)
    cov = np.isfinite(mp.intensity[qm])[:, ie]
    ip = incoherent_powder_spectrum(
        d.frequencies_thz, d.total, 26.9815, temperature_k, mp.q_invA[qm], ef, coverage=cov
    )
    return compare(
        ip.spectrum(), mp.reduce(3.0, 9.0), fit=("scale", "background", "broadening"), x_range=(10.0, 70.0)
    )


def test_aluminium_emt_against_arcs():
    _need_al()
    res = _al_vs_arcs("emt")
    s, ds = res.fit.frequency_scale
    assert 0.85 < s < 1.15 and ds < 0.02
    assert res.similarity_fitted.cosine > 0.99 > res.similarity.cosine
    assert res.similarity_fitted.wasserstein < 1.0  # meV, one 0.8 meV bin
    sig = res.fit.parameters["broadening_sigma"][0]
    assert 0.5 < sig < 5.0  # ARCS resolution at these energies is ~1–3 meV FWHM-ish scale


@pytest.mark.slow
def test_aluminium_sevennet_against_arcs():
    _need_al()
    res = _al_vs_arcs("sevennet")
    s, ds = res.fit.frequency_scale
    # SevenNet-0 puts the LA peak at ≈ 27 meV (measured ≈ 35) but the TA peak at ≈ 20.5 (measured ≈ 19): one
    # scale cannot match both, the fit compromises near 1.0 with a large extra broadening, honestly reported
    assert 0.85 < s < 1.15 and ds < 0.05
    assert res.similarity_fitted.cosine > 0.98 > res.similarity.cosine


# ----------------------------------------------------------------------------------------- CLI
def _write_cli_inputs(tmp_path):
    comp = _toy_computed()
    cpath = tmp_path / "ins.csv"
    np.savetxt(
        cpath,
        np.column_stack([comp.x, comp.y, comp.y]),
        delimiter=",",
        header="energy_meV,intensity,Al",
        comments="",
    )
    m = _synthetic_measurement(seed=11)
    mpath = tmp_path / "measured.dat"
    np.savetxt(mpath, np.column_stack([m.x, m.y, m.error]), header="E(meV) counts error")
    return cpath, mpath


def test_cli_compare_writes_json_and_png(tmp_path, capsys):
    from atomvib.cli.main import main

    cpath, mpath = _write_cli_inputs(tmp_path)
    out = tmp_path / "cmp"
    rc = main(["compare", str(cpath), str(mpath), "--fit", "scale,linear,broadening", "--out", str(out)])
    assert rc == 0
    d = json.loads((out / "compare.json").read_text())
    fs = d["frequency_scale"]
    assert abs(fs["value"] - 0.93) < 3 * fs["std"] and 0.7 < d["chi2_red"] < 1.4
    assert {"cosine", "pearson", "wasserstein_meV", "sis"} <= set(d["similarity"])
    assert d["similarity_fitted"]["cosine"] > 0.99
    assert (out / "compare.png").stat().st_size < 300_000 and (out / "compare.csv").exists()
    assert "frequency_scale" in capsys.readouterr().out
    assert main(["compare", str(cpath), str(mpath), "--out", str(out)]) == 2  # refuses to overwrite


def test_cli_compare_bad_input_one_line(tmp_path, capsys):
    from atomvib.cli.main import main

    cpath, mpath = _write_cli_inputs(tmp_path)
    nounit = tmp_path / "nounit.txt"
    nounit.write_text("1 2\n2 3\n3 4\n")
    cases = [
        ([str(cpath), str(tmp_path / "missing.dat")], "not found"),
        ([str(cpath), str(mpath), "--fit", "scale,wobble"], "unknown fit"),
        ([str(cpath), str(nounit)], "--units"),
        ([str(cpath), str(mpath), "--range", "200", "300"], "range"),
    ]
    for k, (argv, msg) in enumerate(cases):
        rc = main(["compare", *argv, "--out", str(tmp_path / f"o{k}")])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    rc = main(
        ["compare", str(cpath), str(nounit), "--units", "meV", "--fit", "none", "--out", str(tmp_path / "u")]
    )
    assert rc == 0


def test_fit_start_ignores_negative_intensities():
    """The starting scan of the frequency scale keeps only scales at which the spectrum enters with a positive
    intensity. Real case (Petretto DFPT DOS of two AgBr polymorphs): a measurement of rock-salt AgBr (DOS × 1.08,
    broadened, sloping background, noise) against the zincblende DOS, whose best least-squares match in the scan
    was "background minus spectrum": the fit used to stop with "does not resemble the measurement" (and identify
    dropped the candidate, a true one in other cases). Now both fit, the rock salt far better and at its scale."""

    d = json.loads((Path(__file__).parent / "data" / "petretto_agbr_dos.json").read_text())

    def dos(mid):
        r = d[mid]
        y = np.asarray(r["dos"], float)
        return Spectrum1D(r["freq_start_cm1"] + r["freq_step_cm1"] * np.arange(len(y)), y, None, "cm-1")

    rocksalt, zincblende = dos("mp-23231"), dos("mp-866291")
    rng = np.random.default_rng(1)
    x = np.arange(20.0, 166.0, 2.0)
    xf = np.arange(0.0, 250.0, 0.5)
    y = np.interp(xf / 1.08, rocksalt.x, rocksalt.y, left=0, right=0)
    k = np.exp(-0.5 * (np.arange(-30, 31) * 0.5 / 6.0) ** 2)
    y = np.interp(x, xf, np.convolve(y, k / k.sum(), mode="same"))
    y = 3000 * y / y.max() + 100 + 0.5 * x
    err = np.sqrt(y)
    meas = Spectrum1D(x, y + rng.normal(0, err), err, "cm-1")
    good = fit_spectrum(rocksalt, meas, "scale,linear,broadening")
    other = fit_spectrum(zincblende, meas, "scale,linear,broadening")
    assert good.parameters["frequency_scale"][0] == pytest.approx(1.08, abs=0.005)
    assert good.chi2_red < 2.0
    assert other.parameters["intensity_scale"][0] > 0
    assert other.chi2_red > 10 * good.chi2_red
