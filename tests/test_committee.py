"""A committee of engines: exact spread arithmetic, round trip, CLI, INS with a band."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from ase.build import bulk
from ase.io import write

import atomvib
from atomvib.cli.main import main
from atomvib.harmonic.committee import CommitteePhonons, Spread, committee_phonons

#: two engines that both cover fcc aluminium (EMT and a Lennard-Jones fit), small meshes: seconds
MEMBERS = ("emt", "lj:2.55,0.4")
FAST = {"mesh_density": 20.0, "min_supercell_length_a": 7.0}


@pytest.fixture(scope="module")
def al_committee():
    return committee_phonons(bulk("Al", "fcc", a=4.05), MEMBERS, **FAST)


def test_spread_is_mean_and_sample_std_times_scale():
    v = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0]])
    s = Spread.of(v, scale=2.0)
    np.testing.assert_allclose(s.mean, [3.0, 6.0])
    np.testing.assert_allclose(s.std, 2.0 * np.std(v, axis=0, ddof=1))
    lo, hi = s.interval()
    np.testing.assert_allclose(hi - lo, 2 * 1.6448536269514722 * s.std)


def test_committee_stacks_its_members(al_committee):
    c = al_committee
    assert c.engines[0] == "emt" and c.engines[1].startswith("lj") and len(c.members) == 2
    om = c.omega_max()
    w = [m.omega_max_thz for m in c.members]
    assert om.mean == pytest.approx(np.mean(w)) and om.std == pytest.approx(c.scale * np.std(w, ddof=1))
    assert abs(w[0] - w[1]) > 0.05  # two different models: a real spread
    th = c.thermal([300.0])
    cv = [m.thermal([300.0]).heat_capacity_j_per_k_per_mol[0] for m in c.members]
    assert th["heat_capacity_j_per_k_per_mol"].mean[0] == pytest.approx(np.mean(cv))
    f, dos = c.dos()
    for m, row in zip(c.members, dos.members):  # each member's DOS on the common axis integrates to 3N
        assert np.trapezoid(row, f) == pytest.approx(3 * m.primitive.natoms, rel=0.02)
    path, bands = c.band_structure()
    assert bands.mean.shape == path.frequencies_thz.shape


def test_committee_round_trip_and_summary(al_committee, tmp_path):
    al_committee.save(tmp_path / "c")
    back = atomvib.load(tmp_path / "c")
    assert isinstance(back, CommitteePhonons) and back == al_committee
    s = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert s["kind"] == "committee" and s["engines"] == al_committee.engines
    om = s["omega_max_thz"]
    assert om["interval_90"][0] < om["mean"] < om["interval_90"][1]
    assert s["uncertainty"]["scale"] == al_committee.scale
    head = (tmp_path / "c" / "dos.csv").read_text().splitlines()[0]
    assert head.startswith("frequency_thz,total_mean,total_std")


def test_committee_needs_two_engines_and_a_crystal():
    from atomvib.errors import InputError

    with pytest.raises(InputError, match="at least two engines"):
        committee_phonons(bulk("Al", "fcc", a=4.05), ("emt",))


def test_cli_committee_and_ins_band(tmp_path, capsys):
    p = tmp_path / "al.cif"
    write(p, bulk("Al", "fcc", a=4.05))
    args = ["--mesh-density", "20", "--min-length", "7"]
    assert main(["phonons", str(p), "--committee", ",".join(MEMBERS), *args, "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "committee of 2" in out and "±" in out
    c = atomvib.load(tmp_path / "c")
    assert isinstance(c, CommitteePhonons)
    assert main(["ins", str(tmp_path / "c"), "--mesh", "6", "--emax", "60", "--no-plot", "--out",
                 str(tmp_path / "i")]) == 0
    df = pd.read_csv(tmp_path / "i" / "ins.csv")
    members = [col for col in df.columns if col.startswith("intensity_") and col != "intensity_std"]
    assert len(members) == 2
    np.testing.assert_allclose(df["intensity"], df[members].mean(axis=1), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(df["intensity_std"], c.scale * df[members].std(axis=1, ddof=1), rtol=1e-5,
                               atol=1e-10)
    # errors: one engine, a committee with DFT forces
    assert main(["phonons", str(p), "--committee", "emt", *args, "--out", str(tmp_path / "x")]) == 2
    assert "at least two engines" in capsys.readouterr().err


def test_scale_fit_recovers_a_known_underdispersion():
    """Errors drawn with twice the committee's σ: the fitted scale is 2 and the calibrated 90 % interval holds 90 %."""
    from atomvib.harmonic.committee import fit_scale, interval_coverage

    rng = np.random.default_rng(1)
    sig = rng.uniform(0.5, 2.0, 20000)
    err = rng.normal(0.0, 2.0 * sig)
    k = fit_scale(err, sig)
    assert k == pytest.approx(2.0, rel=0.03)
    assert interval_coverage(err, sig, 1.0) == pytest.approx(0.59, abs=0.02)  # uncalibrated: P(|z| < 0.82)
    assert interval_coverage(err, sig, k) == pytest.approx(0.90, abs=0.01)
    fresh = rng.normal(0.0, 2.0 * sig)  # holds on data it was not fitted on
    assert interval_coverage(fresh, sig, k) == pytest.approx(0.90, abs=0.015)


def test_per_quantity_scales_apply_where_fitted(al_committee):
    """ω_max, F, S, Cv take their own σ factor from the calibration; everything else the pooled one."""
    c = al_committee
    cal = {"scales": {"ω_max": 3.0, "Cv": 0.5}}
    c2 = CommitteePhonons(members=c.members, scale=2.0, calibration=cal)
    w = [m.omega_max_thz for m in c.members]
    assert c2.omega_max().std == pytest.approx(3.0 * np.std(w, ddof=1))
    th = c2.thermal([300.0])
    cv = [m.thermal([300.0]).heat_capacity_j_per_k_per_mol[0] for m in c.members]
    s = [m.thermal([300.0]).entropy_j_per_k_per_mol[0] for m in c.members]
    assert th["heat_capacity_j_per_k_per_mol"].std[0] == pytest.approx(0.5 * np.std(cv, ddof=1))
    assert th["entropy_j_per_k_per_mol"].std[0] == pytest.approx(2.0 * np.std(s, ddof=1))  # not fitted: pooled
    f, dos = c2.dos()
    assert np.allclose(dos.std, 2.0 * np.std(dos.members, axis=0, ddof=1))


def test_default_committee_calibration_holds_on_the_validation_crystals():
    """The shipped scales, applied to the cached Petretto-valid rows they were fitted on, put 85–95 % of the DFPT
    values inside the 90 % interval for each quantity (recomputed here from the rows, not read from the file)."""
    import importlib.util
    from pathlib import Path

    from atomvib.harmonic.committee import DEFAULT_MEMBERS, Z90, calibration, interval_coverage

    script = Path(__file__).resolve().parents[1] / "scripts" / "calibrate_committee.py"
    spec = importlib.util.spec_from_file_location("calibrate_committee", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ids, err, sig = mod.committee_errors(DEFAULT_MEMBERS)
    cal = calibration(DEFAULT_MEMBERS)
    assert sorted(cal["members"]) == sorted(DEFAULT_MEMBERS) and cal["crystals"] == ids and len(ids) >= 30
    for q, name in mod.QUANTITIES.items():
        raw = interval_coverage(err[q], sig[q], 1.0, Z90)
        got = interval_coverage(err[q], sig[q], cal["scales"][name], Z90)
        assert 0.85 <= got <= 0.95, (name, got)
        assert raw < 0.8 and cal["scales"][name] > 1.0  # the members' raw spread is too narrow: they share errors
