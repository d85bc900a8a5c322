"""`atomvib md` (issue 14): MD through an atomvib engine with ASE's integrators, resumable trajectories, the VACF
DOS and effective (TDEP) force constants, validated against the harmonic result of the same engine (EMT, Al).

Statistical statements (fixed seeds, so every number below is reproducible):
- NVT: ⟨T⟩ over the production lies within 3 standard errors (8 block means) of the target, and the spread of the
  kinetic temperature is the canonical one, T·sqrt(2/(3N−3)), within 25 %.
- NVE (1 fs): |energy drift| < 1e-5 eV/atom/ps.
- 20 K: the VACF DOS against the harmonic spectrum of the MD cell's own modes (same Gaussian width, the Langevin
  line shape of the run's friction): highest peak within 1 %, overlap ∫min(ĝ₁, ĝ₂) ≥ 0.95 (both normalised to
  unit area); the effective force constants against the harmonic ones: ω_max within 1 %, DOS overlap ≥ 0.95.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.io import read, write

import atomvib
import atomvib.engines
import atomvib.results
from atomvib.dynamics import MDSettings, MDTrajectory, effective_phonons, read_trajectory, run_md, vacf_dos
from atomvib.dynamics.tdep import EffectivePhonons
from atomvib.dynamics.vacf import (
    VibrationalDos,
    commensurate_frequencies,
    dos_overlap,
    harmonic_md_spectrum,
    highest_peak,
)
from atomvib.errors import InputError, OutputExistsError
from atomvib.harmonic.crystal import CrystalPhonons
from atomvib.settings import PhononSettings

AL = bulk("Al", "fcc", a=4.05)
SC = (3, 3, 3)  # 27 atoms


def _settings(**kw):
    base = dict(engine="emt", supercell=SC, relax=False, write_every=5)
    base.update(kw)
    return MDSettings(**base)


# ------------------------------------------------------------------------------------------ runs shared by tests
@pytest.fixture(scope="module")
def nvt300():
    s = _settings(temperature_k=300.0, timestep_fs=2.0, steps=2000, equilibration_steps=300, friction_per_ps=10.0)
    return run_md(AL, settings=s)


@pytest.fixture(scope="module")
def low_t(tmp_path_factory):
    """20 K, Langevin 1/ps, 4 fs, 20 ps of production, frames every 8 fs; relaxed (the harmonic reference is too)."""
    out = tmp_path_factory.mktemp("lowT") / "traj.extxyz"
    s = MDSettings(engine="emt", supercell=SC, temperature_k=20.0, timestep_fs=4.0, steps=5000,
                   equilibration_steps=300, write_every=2, friction_per_ps=1.0)
    return run_md(AL, settings=s, out=out)


@pytest.fixture(scope="module")
def harmonic():
    return atomvib.phonons(AL, engine="emt", supercell=SC, mesh_density=40, dos_sigma_thz=0.1)


# ------------------------------------------------------------------------------------------ thermostat, integrator
def test_langevin_nvt_reaches_the_temperature(nvt300):
    s = nvt300.statistics()
    t = nvt300.select(True).temperature_k
    blocks = t[: len(t) // 8 * 8].reshape(8, -1).mean(axis=1)
    sem = blocks.std(ddof=1) / np.sqrt(8)
    assert 0 < sem < 15
    assert abs(s["temperature_mean_K"] - 300.0) < 3 * sem, (s, sem)
    canonical = 300.0 * np.sqrt(2.0 / (3 * nvt300.natoms - 3))
    assert s["temperature_std_K"] == pytest.approx(canonical, rel=0.25)
    perf = nvt300.timings
    assert perf["steps_run"] == 2300 and perf["steps_per_s"] > 0
    assert perf["atom_steps_per_s"] == pytest.approx(27 * perf["steps_per_s"])
    assert perf["ns_per_day"] == pytest.approx(perf["steps_per_s"] * 2.0 * 86400 * 1e-6)
    # one engine call per step (and one for the start): the forces of a step are reused by the next
    assert perf["engine_calls_this_session"] == 2301


def test_nve_conserves_energy():
    s = _settings(temperature_k=300.0, timestep_fs=1.0, steps=1000, equilibration_steps=200, ensemble="nve")
    tr = run_md(AL, settings=s)
    st = tr.statistics()
    assert abs(st["energy_drift_ev_per_atom_per_ps"]) < 1e-5, st
    assert st["energy_std_ev_per_atom"] < 1e-4
    assert 200 < st["temperature_mean_K"] < 400


# ------------------------------------------------------------------------------------------ resume
def _interrupted_then_resumed(monkeypatch, s, out, n_steps):
    """Kill the run (KeyboardInterrupt, as Ctrl-C) at its ``n_steps``-th force check, then run it again."""
    import atomvib.dynamics.md as md

    real, calls = md._check_finite, {"n": 0}

    def check(*args):
        calls["n"] += 1
        if calls["n"] > n_steps:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(md, "_check_finite", check)
    with pytest.raises(KeyboardInterrupt):
        run_md(AL, settings=s, out=out)
    monkeypatch.undo()
    done = read(out, index=":")
    assert 0 < len(done) < s.total_steps // s.write_every + 1  # what it did is kept
    return run_md(AL, settings=s, out=out)


@pytest.mark.parametrize("kw", [{"ensemble": "nve"}, {"ensemble": "nvt"}, {"thermostat": "nose-hoover"},
                                {"ensemble": "npt"}], ids=["nve", "langevin", "nose-hoover", "npt"])
def test_resume_continues_the_same_trajectory(tmp_path, monkeypatch, kw):
    """Killed after 37 steps and resumed: frame by frame the trajectory of an uninterrupted run (to 1e-10;
    for Langevin too, as the thermostat is re-seeded from (seed, step) at every frame; Nosé–Hoover and MTK with
    their chain and barostat variables restored). A second resumed run of the same settings agrees with the
    first (deterministic continuation)."""
    s = _settings(temperature_k=300.0, timestep_fs=2.0, steps=60, equilibration_steps=20, **kw)
    whole = run_md(AL, settings=s, out=tmp_path / "whole.extxyz")
    resumed = _interrupted_then_resumed(monkeypatch, s, tmp_path / "resumed.extxyz", 37)
    again = _interrupted_then_resumed(monkeypatch, s, tmp_path / "again.extxyz", 53)
    for other in (resumed, again):
        assert np.array_equal(other.steps, whole.steps) and other.n_frames == 17
        for name in ("positions", "velocities", "forces", "potential_energy_ev", "cells"):
            np.testing.assert_allclose(getattr(other, name), getattr(whole, name), rtol=0, atol=1e-10)
    # the full-precision state at the end is the same too
    from atomvib.dynamics.md import _read_checkpoint, checkpoint_path

    a, b = (_read_checkpoint(checkpoint_path(tmp_path / f)) for f in ("whole.extxyz", "resumed.extxyz"))
    assert a["step"] == b["step"] == 80
    np.testing.assert_allclose(b["positions"], a["positions"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(b["momenta"], a["momenta"], rtol=0, atol=1e-10)
    # extending the run (more steps, same run otherwise) continues it
    longer = run_md(AL, settings=_settings(**{**s.to_dict(), "steps": 70, "supercell": SC}),
                    out=tmp_path / "resumed.extxyz")
    assert longer.n_frames == 19 and np.array_equal(longer.positions[:17], whole.positions)


def test_another_run_in_the_same_file_is_refused(tmp_path):
    out = tmp_path / "t.extxyz"
    run_md(AL, settings=_settings(temperature_k=100.0, steps=10, equilibration_steps=0), out=out)
    with pytest.raises(OutputExistsError, match="another run"):
        run_md(AL, settings=_settings(temperature_k=200.0, steps=10, equilibration_steps=0), out=out)
    t = run_md(AL, settings=_settings(temperature_k=200.0, steps=10, equilibration_steps=0), out=out, force=True)
    assert t.n_frames == 3 and t.settings.temperature_k == 200.0


# ------------------------------------------------------------------------------------------ low-T validation
def test_low_temperature_vacf_dos_is_the_harmonic_one(low_t, harmonic):
    d = vacf_dos(low_t, sigma_thz=0.25)
    assert d.temperature_k == pytest.approx(20.0, rel=0.1)
    assert d.frequencies_thz[0] == 0 and np.trapezoid(d.total, d.frequencies_thz) == pytest.approx(3.0)
    modes = commensurate_frequencies(harmonic, np.diag(SC))
    assert modes.size == 81
    ref = harmonic_md_spectrum(modes, d.frequencies_thz, d.sigma_thz, low_t.settings.friction_per_ps)
    peak_ref = highest_peak(d.frequencies_thz, ref)
    assert d.omega_max_thz == pytest.approx(peak_ref, rel=0.01)
    overlap = dos_overlap(d.frequencies_thz, d.total, d.frequencies_thz, ref)
    assert overlap >= 0.95, overlap
    # the same trajectory read back from the file (8 decimals) gives the same DOS
    back = read_trajectory(low_t.source)
    assert back.n_frames == low_t.n_frames and np.array_equal(back.production, low_t.production)
    d2 = vacf_dos(back, sigma_thz=0.25)
    np.testing.assert_allclose(d2.total, d.total, atol=1e-5 * d.total.max())


def test_low_temperature_effective_force_constants_are_the_harmonic_ones(low_t, harmonic):
    ps = PhononSettings(mesh_density=40, dos_sigma_thz=0.1)
    eff = effective_phonons(low_t, settings=ps)
    assert isinstance(eff, CrystalPhonons) and eff.n_frames == 2501
    assert eff.temperature_k == pytest.approx(20.0, rel=0.1) and eff.target_temperature_k == 20.0
    assert not eff.has_imaginary
    assert eff.omega_max_thz == pytest.approx(harmonic.omega_max_thz, rel=0.01)
    # the relative force error is EMT's anharmonicity (∝ u ∝ √T: 1.9 % at 2 K, 6 % at 20 K), not the fit:
    # the harmonic force constants leave the same residual on these frames
    assert 0 < eff.force_residual < 0.1
    overlap = dos_overlap(eff.dos().frequencies_thz, eff.dos().total, harmonic.dos().frequencies_thz,
                          harmonic.dos().total)
    assert overlap >= 0.95, overlap
    # thermal properties at T come with it, per mole of primitive cells as for harmonic phonons
    assert eff.thermal([300.0]).entropy_j_per_k_per_mol[0] == pytest.approx(
        harmonic.thermal([300.0]).entropy_j_per_k_per_mol[0], rel=0.01)


# ------------------------------------------------------------------------------------------ results on disk
def test_results_save_and_load(low_t, tmp_path):
    low_t.save(tmp_path / "traj")
    back = atomvib.load(tmp_path / "traj")
    assert isinstance(back, MDTrajectory) and back == low_t and back.settings == low_t.settings
    d = vacf_dos(low_t, sigma_thz=0.5, quantum_correction=True)
    d.save(tmp_path / "dos")
    db = atomvib.load(tmp_path / "dos")
    assert isinstance(db, VibrationalDos) and db == d
    assert np.all(d.quantum_factor >= 1.0) and d.quantum_factor[0] == 1.0
    assert (tmp_path / "dos" / "dos.csv").is_file()
    eff = effective_phonons(low_t, settings=PhononSettings(mesh_density=20))
    eff.save(tmp_path / "eff")
    eb = atomvib.load(tmp_path / "eff")
    assert isinstance(eb, EffectivePhonons) and eb == eff and eb.force_residual == eff.force_residual
    assert atomvib.results.read_summary(tmp_path / "eff")["effective_force_constants"]["n_frames"] == eff.n_frames
    # a crystal's IR spectrum needs Born charges: refused before computing, as for any crystal result
    from atomvib.cli.main import main

    assert main(["ir", str(tmp_path / "eff"), "--out", str(tmp_path / "ir")]) == 2


def test_a_trajectory_from_elsewhere(low_t, tmp_path):
    """A file without velocities (positions and forces only, as XDATCAR/vasprun give): velocities from finite
    differences with the time between frames; atoms shuffled and wrapped: still mapped onto the sites."""
    t = low_t.select(True, stride=1)
    frames = []
    rng = np.random.default_rng(1)
    perm = rng.permutation(t.natoms)
    for i in range(200):
        a = t.structure.to_ase()[perm]
        a.positions = t.positions[i][perm]
        a.wrap()
        from ase.calculators.singlepoint import SinglePointCalculator

        a.calc = SinglePointCalculator(a, forces=t.forces[i][perm], energy=float(t.potential_energy_ev[i]))
        frames.append(a)
    write(tmp_path / "plain.extxyz", frames)
    tr = read_trajectory(tmp_path / "plain.extxyz", timestep_fs=t.frame_interval_fs)
    v_true = t.velocities[1:199][:, perm]
    v_fd = tr.velocities[1:199]
    # central differences over 8 fs: (2πν·8 fs)²/6 ≈ 2 % at 7 THz, plus the Langevin kicks between frames
    assert np.sqrt(np.mean((v_fd - v_true) ** 2)) < 0.08 * np.sqrt(np.mean(v_true**2))
    eff = effective_phonons(tmp_path / "plain.extxyz", AL, settings=PhononSettings(mesh_density=20))
    assert eff.omega_max_thz == pytest.approx(8.48, rel=0.02)
    # the atoms of another crystal do not match
    with pytest.raises(InputError, match="do not"):
        effective_phonons(tr, bulk("Al", "fcc", a=4.05, cubic=True), supercell_matrix=(1, 1, 1))
    # no velocities and no time between frames: the DOS says what it needs
    with pytest.raises(InputError, match="no velocities"):
        vacf_dos(read_trajectory(tmp_path / "plain.extxyz"))


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kw, match",
    [
        ({"temperature_k": 0.0}, "temperature"),
        ({"temperature_k": -5.0}, "temperature"),
        ({"temperature_k": float("nan")}, "temperature"),
        ({"timestep_fs": 20.0}, "timestep"),
        ({"timestep_fs": 0.0}, "timestep"),
        ({"ensemble": "nph"}, "ensemble"),
        ({"ensemble": "npt", "thermostat": "langevin"}, "barostat"),
        ({"write_every": 0}, "write-every"),
        ({"steps": -1}, "steps"),
    ],
)
def test_bad_settings_are_one_line(kw, match):
    with pytest.raises(InputError, match=match) as e:
        MDSettings(**kw)
    assert "\n" not in str(e.value) and e.value.fix


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    from atomvib.cli.main import main

    write(tmp_path / "water.xyz", molecule("H2O"))
    write(tmp_path / "Al.cif", AL)
    cases = [
        ["md", str(tmp_path / "Al.cif"), "-e", "emt", "--temperature", "0"],
        ["md", str(tmp_path / "Al.cif"), "-e", "emt", "--temperature", "300", "--timestep", "50"],
        ["md", str(tmp_path / "water.xyz"), "-e", "emt", "--temperature", "300", "--ensemble", "npt"],
    ]
    for argv in cases:
        assert main(argv + ["--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "fix:" in err, err
    assert "molecule" in err and "NPT" in err


def test_a_blow_up_stops_keeps_the_trajectory_and_names_a_timestep(tmp_path):
    out = tmp_path / "w.extxyz"
    s = MDSettings(engine="emt", temperature_k=300.0, timestep_fs=2.0, steps=300, equilibration_steps=0,
                   write_every=2, relax=False)
    with pytest.raises(InputError, match="blew up") as e:
        run_md(molecule("H2O"), settings=s, out=out)
    assert "--timestep 1" in str(e.value) and "\n" not in str(e.value)
    kept = read(out, index=":")
    assert len(kept) >= 2 and all(np.isfinite(a.get_forces()).all() for a in kept)


def test_non_finite_forces_stop_the_run(tmp_path, monkeypatch):
    eng = atomvib.engines.get_engine("emt")
    real = eng.evaluate
    calls = {"n": 0}

    def nan_after_20(atoms_list, progress=None):
        calls["n"] += 1
        out = real(atoms_list, progress)
        if calls["n"] > 20:
            from atomvib.engines.base import Evaluation

            return [Evaluation(energy=out[0].energy, forces=out[0].forces * np.nan)]
        return out

    monkeypatch.setattr(eng, "evaluate", nan_after_20)
    with pytest.raises(InputError, match="not finite"):
        run_md(AL, engine=eng, settings=_settings(temperature_k=300.0, steps=50, equilibration_steps=0),
               out=tmp_path / "t.extxyz")
    assert len(read(tmp_path / "t.extxyz", index=":")) == 4  # steps 0, 5, 10, 15


# ------------------------------------------------------------------------------------------ the command
def test_cli_md_dos_tdep(tmp_path, capsys):
    from atomvib.cli.main import main

    write(tmp_path / "Al.cif", AL)
    out = tmp_path / "run"
    argv = ["md", str(tmp_path / "Al.cif"), "-e", "emt", "--temperature", "300", "--time", "1.2", "--timestep", "2",
            "--supercell", "3", "3", "3", "--equilibration", "100", "--write-every", "2", "--dos", "--dos-sigma", "1.2",
            "--tdep", "--mesh-density", "20", "--out", str(out), "-q"]
    assert main(argv) == 0
    for f in ("summary.json", "trajectory.extxyz", "dos/md_dos.png", "dos/dos.csv", "tdep/md_dispersion.png",
              "tdep/phonopy.yaml", "harmonic/summary.json"):
        assert (out / f).is_file(), f
    s = atomvib.results.read_summary(out)
    assert s["kind"] == "md_trajectory" and s["production"]["n_frames"] == 301
    assert {"steps_per_s", "ns_per_day", "atom_steps_per_s"} <= set(s["performance"])
    assert isinstance(atomvib.load(out / "tdep"), EffectivePhonons)
    # the same command again: nothing left to run, the results are written again
    assert main(argv) == 0
    assert atomvib.load(out).n_frames == 351
    # the trajectory analysed as a file someone brings (INPUT: the structure it was run from)
    user = tmp_path / "user"
    assert main(["md", str(tmp_path / "Al.cif"), "--trajectory", str(out / "trajectory.extxyz"), "--dos",
                 "--dos-sigma", "1.2", "--tdep", "--mesh-density", "20", "--no-plot", "--out", str(user), "-q"]) == 0
    assert atomvib.load(user / "tdep").n_frames == 301


# ------------------------------------------------------------------------------------------ slow: anharmonic case
@pytest.mark.slow
def test_bcc_copper_unstable_at_0K_is_stabilised_at_1000K():
    """EMT bcc Cu: imaginary harmonic modes at N (the bcc→close-packed path); at 1000 K in the fixed cubic cell
    the atoms stay on the bcc sites on average and the effective phonons are real (dynamical stabilisation, as
    in bcc Zr/Ti). At 10 K the atoms slide off the sites and the fit stays unstable."""
    cu = bulk("Cu", "bcc", a=2.87)
    h = atomvib.phonons(cu, engine="emt", mesh_density=30)
    assert h.has_imaginary and h.instability.label == "N"
    for temp, stable in ((10.0, False), (1000.0, True)):
        s = MDSettings(engine="emt", temperature_k=temp, timestep_fs=2.0, steps=1500, equilibration_steps=500,
                       write_every=10, friction_per_ps=2.0)
        eff = effective_phonons(run_md(cu, settings=s), settings=PhononSettings(mesh_density=30))
        assert eff.has_imaginary is not stable, (temp, eff.min_frequency_thz)


# ------------------------------------------------------------------------------------------ mode line shapes
def test_mode_spectra_at_low_temperature_are_the_harmonic_lines(low_t, harmonic, tmp_path):
    """20 K. NVE: each mode at a commensurate q is one undamped oscillator, so its line peaks at the harmonic
    frequency (0.5 %) with the window's Gaussian width (FWHM 2.355σ, 5 %). Langevin 1/ps (the shared run): the
    line of a degenerate pair peaks there within 2 % (one damped oscillator observed over 20 coherence times:
    statistical error ≈ FWHM/√40 ≈ 0.05 THz = 1 %) with the Voigt width of window and friction,
    0.5346·f_L + sqrt(0.2166·f_L² + f_G²) (Olivero & Longbothum 1977), within 25 %."""
    from atomvib.dynamics.modes import ModeSpectra, mode_spectra

    f_g = 2 * np.sqrt(2 * np.log(2)) * 0.1
    s = MDSettings(engine="emt", supercell=SC, temperature_k=20.0, timestep_fs=4.0, steps=5000,
                   equilibration_steps=300, write_every=2, ensemble="nve")
    nve = run_md(AL, settings=s)
    m = mode_spectra(nve, harmonic, (1 / 3, 0, 1 / 3), sigma_thz=0.1)
    np.testing.assert_allclose(m.peak_frequencies_thz, m.harmonic_frequencies_thz, rtol=0.005)
    np.testing.assert_allclose(m.fwhm_thz, f_g, rtol=0.05)
    np.testing.assert_allclose(np.sum(m.spectra, axis=1) * (m.frequencies_thz[1] - m.frequencies_thz[0]), 1.0, rtol=1e-9)
    lv = mode_spectra(low_t, harmonic, (1 / 3, 0, 1 / 3), sigma_thz=0.1)
    f_l = low_t.settings.friction_per_ps / (2 * np.pi)
    voigt = 0.5346 * f_l + np.sqrt(0.2166 * f_l ** 2 + f_g ** 2)
    pair = [i for i in range(3) if abs(lv.harmonic_frequencies_thz[i] - lv.harmonic_frequencies_thz[0]) < 1e-6]
    assert len(pair) == 2
    peak, width = lv.line(pair)
    assert peak == pytest.approx(lv.harmonic_frequencies_thz[0], rel=0.02)
    assert width == pytest.approx(voigt, rel=0.25)
    # at Γ the acoustic modes are the fixed centre of mass: no line
    g = mode_spectra(low_t, harmonic, (0, 0, 0), sigma_thz=0.1)
    assert np.all(np.isnan(g.peak_frequencies_thz))
    with pytest.raises(InputError, match="not commensurate"):
        mode_spectra(low_t, harmonic, (0.5, 0, 0.5), sigma_thz=0.1)
    m.save(tmp_path / "modes")
    back = atomvib.load(tmp_path / "modes")
    assert isinstance(back, ModeSpectra) and back == m and (tmp_path / "modes" / "mode_spectra.csv").is_file()


def test_mode_amplitudes_are_complete_and_equipartitioned(low_t, harmonic):
    """Displacement projections on the normal modes. Exact: over the 27 q-points of the 3×3×3 cell and all modes,
    Σ|Q|² = Σ_j m_j|u_j|² in every frame (Parseval: the eigenvectors are complete and orthonormal). Physical: at
    20 K each mode at q = (⅓, 0, ⅓) holds k_BT of potential energy on average, ω²⟨|Q|²⟩ = k_BT (classical
    equipartition of a complex normal coordinate), within 25 % for the mean of its 3 modes (20 ps at 1 ps⁻¹:
    ~40 independent samples per mode)."""
    from itertools import product

    from atomvib import units
    from atomvib.dynamics.modes import mode_amplitudes
    from atomvib.dynamics.tdep import _mic_frac, reference_sites

    total = 0.0
    for i, j, k in product(range(3), repeat=3):
        q = (i / 3, j / 3, k / 3)
        a, _ = mode_amplitudes(low_t, harmonic, q)
        total = total + np.sum(np.abs(a) ** 2, axis=1)
    t = low_t.select(True)
    ph, _, perm, frac, cell = reference_sites(t, low_t.unitcell, low_t.supercell_matrix)
    u = _mic_frac(frac[:, perm] - np.asarray(ph.supercell.scaled_positions)[None]) @ cell
    u -= u.mean(axis=1, keepdims=True)
    m = np.asarray(ph.supercell.masses)
    np.testing.assert_allclose(total, np.einsum("fia,i->f", u ** 2, m), rtol=1e-8)
    a, w = mode_amplitudes(low_t, harmonic, (1 / 3, 0, 1 / 3))
    kt = units.KB_EV_PER_K * float(np.mean(t.temperature_k))
    ratio = (w / units.EV_A2_AMU_TO_THZ) ** 2 * np.mean(np.abs(a) ** 2, axis=0) / kt
    assert np.mean(ratio) == pytest.approx(1.0, rel=0.25), ratio


def test_coherent_sqe_along_the_path_peaks_on_the_longitudinal_branch(low_t, harmonic, tmp_path):
    """20 K, zone (0,0,0): in a Bravais crystal the one-phonon coherent S(q, E) ∝ |q·e_s|², so at every q-point of
    the 3×3×3 cell on the band path the strongest line is the longitudinal branch of the harmonic phonons, within
    3 % (the 2 ps window's Gaussian has σ ≈ 0.3 meV against 20–36 meV lines); Q = 0 is left out. Zone (1, 1, 1)
    adds G to every q (Q = G + q). The result saves and loads."""
    from atomvib import units
    from atomvib.dynamics.sqw import TrajectorySqePath, trajectory_sqe_path

    r = trajectory_sqe_path(low_t, window_ps=2.0)
    ph = harmonic.force_constants.phonopy()
    ph.run_qpoints(r.qpoints, with_eigenvectors=True)
    peaks = r.peak_energies_mev()
    moving = np.linalg.norm(r.q_cart_ainv, axis=1) > 1e-6
    assert moving.sum() >= 3 and r.label_names[0] == "Γ"
    for k in np.nonzero(moving)[0]:
        qhat = r.q_cart_ainv[k] / np.linalg.norm(r.q_cart_ainv[k])
        ev = ph.qpoints.eigenvectors[k]
        s = int(np.argmax([abs(np.vdot(qhat, ev[:, j])) ** 2 for j in range(3)]))
        assert peaks[k] == pytest.approx(ph.qpoints.frequencies[k][s] * units.THZ_TO_MEV, rel=0.03), r.qpoints[k]
    assert np.all(np.diff(r.distances_ainv) > 0) and r.label_positions_ainv[-1] >= r.distances_ainv[-1]
    g = trajectory_sqe_path(low_t, window_ps=1.0, zone=(1, 1, 1))
    recip = 2 * np.pi * np.linalg.inv(np.asarray(ph.primitive.cell)).T
    np.testing.assert_allclose(g.q_cart_ainv - r.q_cart_ainv, np.tile(np.ones(3) @ recip, (len(r.qpoints), 1)))
    r.save(tmp_path / "sp")
    back = atomvib.load(tmp_path / "sp")
    assert isinstance(back, TrajectorySqePath) and back == r and (tmp_path / "sp" / "sqe_path.h5").is_file()


# ------------------------------------------------------------------------------------------ harmonic sampling
def test_harmonic_sampling_at_low_temperature_is_the_harmonic_result(harmonic, tmp_path):
    """Classical sampling at 20 K: converged in a few iterations; ω_max within 1 % and DOS overlap ≥ 0.95 of the
    harmonic phonons (as the MD fit at 20 K)."""
    from atomvib.dynamics.sampling import SamplingSettings, sampled_phonons

    eff = sampled_phonons(AL, settings=_settings(temperature_k=20.0, relax=True), sampling=SamplingSettings(statistics="classical"),
                          phonon_settings=PhononSettings(mesh_density=40, dos_sigma_thz=0.1, primitive=False))
    assert isinstance(eff, EffectivePhonons) and eff.method == "harmonic sampling"
    assert eff.sampling["converged"] and len(eff.sampling["iterations"]) <= 4
    assert eff.omega_max_thz == pytest.approx(harmonic.omega_max_thz, rel=0.01)
    overlap = dos_overlap(eff.dos().frequencies_thz, eff.dos().total, harmonic.dos().frequencies_thz,
                          harmonic.dos().total)
    assert overlap >= 0.95, overlap
    # quantum amplitudes at 20 K are the zero-point ones: larger than the classical k_BT/(mω²)
    q = sampled_phonons(AL, settings=_settings(temperature_k=20.0, relax=True), harmonic=harmonic,
                        sampling=SamplingSettings(statistics="quantum", max_iterations=1))
    assert q.displacement_rms_a > 1.5 * eff.displacement_rms_a
    eff.save(tmp_path / "s")
    back = atomvib.load(tmp_path / "s")
    assert back == eff and back.sampling["iterations"] == eff.sampling["iterations"]


def test_harmonic_sampling_stabilises_bcc_copper_at_1000K():
    """EMT bcc Cu (imaginary at N at 0 K): classical sampling at 1000 K gives real effective phonons, at 10 K
    not (the same answer as MD, test_bcc_copper_unstable_at_0K_is_stabilised_at_1000K), in seconds."""
    from atomvib.dynamics.sampling import SamplingSettings, sampled_phonons

    cu = bulk("Cu", "bcc", a=2.87)
    for temp, stable in ((10.0, False), (1000.0, True)):
        eff = sampled_phonons(cu, settings=_settings(temperature_k=temp, relax=True), sampling=SamplingSettings(statistics="classical"),
                              phonon_settings=PhononSettings(mesh_density=30, primitive=False))
        assert eff.sampling["converged"]
        assert eff.has_imaginary is not stable, (temp, eff.min_frequency_thz)
        assert eff.sampling["notes"]  # the 0 K phonons are unstable: said


@pytest.mark.parametrize("kw, match", [
    (dict(n_snapshots=1), "--snapshots"), (dict(mixing=0.0), "--mixing"), (dict(mixing=1.5), "--mixing"),
    (dict(statistics="boltzmann"), "statistics"), (dict(tolerance_thz=-1), "--tolerance"),
])
def test_bad_sampling_settings_are_one_line(kw, match):
    from atomvib.dynamics.sampling import SamplingSettings

    with pytest.raises(InputError, match=match):
        SamplingSettings(**kw)


def test_cli_sampling_and_modes(tmp_path, capsys):
    from atomvib.cli.main import main

    write(tmp_path / "Al.cif", AL)
    out = tmp_path / "s"
    assert main(["md", str(tmp_path / "Al.cif"), "-e", "emt", "-T", "300", "--sampling", "--supercell", "3", "3", "3",
                 "--statistics", "classical", "--mesh-density", "20", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "by harmonic sampling" in text and "converged" in text
    for f in ("sampling/summary.json", "sampling/convergence.png", "sampling/band_dos.png", "sampling/phonopy.yaml"):
        assert (out / f).is_file(), f
    s = atomvib.results.read_summary(out / "sampling")["effective_force_constants"]
    assert s["method"].startswith("self-consistent harmonic sampling") and s["sampling"]["converged"]
    run = tmp_path / "run"
    assert main(["md", str(tmp_path / "Al.cif"), "-e", "emt", "-T", "100", "--time", "7", "--timestep", "4",
                 "--supercell", "3", "3", "3", "--ensemble", "nve", "--equilibration", "200", "--write-every", "2",
                 "--modes", "0.3333333333", "0", "0.3333333333", "--mode-sigma", "0.2", "--mesh-density", "20",
                 "--out", str(run)]) == 0
    assert "harmonic → peak" in capsys.readouterr().out
    assert (run / "modes" / "modes.png").is_file() and (run / "modes" / "mode_spectra.csv").is_file()
    assert main(["md", str(tmp_path / "Al.cif"), "-e", "emt", "-T", "100", "--sampling", "--snapshots", "1",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "--snapshots" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ IR from the dipole
class _HarmonicDipoleEngine(atomvib.engines.base.Engine):
    """A harmonic molecule (springs along the bonds of a bent triatomic, Hessian at the start geometry) with a
    dipole linear in the positions (fixed charges): classical MD of it has IR bands that integrate exactly, in
    expectation, to the harmonic intensities K|Σ_i q_i u_ik|²."""

    periodic = False

    def __init__(self, x0, hessian, charges):
        super().__init__()
        self.x0, self.h, self.q = np.asarray(x0), np.asarray(hessian), np.asarray(charges)

    @property
    def info(self):
        return atomvib.engines.base.EngineInfo(name="toy-harmonic-dipole", version="1")

    def _make_calculator(self):  # loaded for the engine's identity; the forces come from evaluate
        return object()

    def evaluate(self, atoms_list, progress=None):
        out = []
        for a in atoms_list:
            u = (a.get_positions() - self.x0).ravel()
            f = -(self.h @ u).reshape(-1, 3)
            e = 0.5 * float(u @ self.h @ u)
            out.append(atomvib.engines.base.Evaluation(energy=e, forces=f, dipole=self.q @ a.get_positions()))
        return out


def _toy_molecule():
    """Bent triatomic (water-like geometry, masses 16/1/1), Hessian of two bond springs (k = 30 eV/Å²), an
    angle-like spring between the two H (k = 3 eV/Å²) and a weak tether of every atom to its site (0.05 eV/Å²:
    a purely quadratic energy has no rotations, and free zero modes would random-walk the dipole), charges
    −0.6/+0.3/+0.3 e."""
    from ase import Atoms

    a = Atoms("OH2", positions=[[0, 0, 0.12], [0, 0.76, -0.47], [0, -0.76, -0.47]])
    x0 = a.get_positions()
    n = len(a)
    h = np.zeros((3 * n, 3 * n))
    for i, j, k in ((0, 1, 30.0), (0, 2, 30.0), (1, 2, 3.0)):
        d = x0[j] - x0[i]
        e = d / np.linalg.norm(d)
        blk = k * np.outer(e, e)
        for p, q, sgn in ((i, i, 1), (j, j, 1), (i, j, -1), (j, i, -1)):
            h[3 * p:3 * p + 3, 3 * q:3 * q + 3] += sgn * blk
    h += 0.05 * np.eye(3 * n)
    return a, x0, h, np.array([-0.6, 0.3, 0.3])


def test_dipole_ir_of_a_harmonic_molecule_integrates_to_the_harmonic_intensities(tmp_path):
    """Langevin MD (50 K, 0.5 fs, 40 ps, friction 5/ps) of the toy: every band peaks at its normal-mode frequency
    (within 0.5 % + one grid step) and integrates (between the midpoints to its neighbours) to K|∂μ/∂Q|² of that
    mode (km/mol, as `atomvib ir`) within 20 % — one mode's kinetic energy averaged over ~200 friction times has a
    statistical error of 1/√200 ≈ 7 % — and the three together within 10 %."""
    from atomvib import units
    from atomvib.dynamics.dipole import DipoleSpectrum, dipole_ir

    a, x0, h, q = _toy_molecule()
    m = np.repeat(a.get_masses(), 3)
    w2, vec = np.linalg.eigh(h / np.sqrt(np.outer(m, m)))
    vib = np.argsort(w2)[-3:]  # the 3 vibrations (the 6 others: the tethered translations and rotations)
    nu_cm1 = np.sqrt(w2[vib]) / (2 * np.pi) * units.FS_TO_ASE_TIME / units.FS_TO_PS * units.THZ_TO_CM1
    u = (vec[:, vib] / np.sqrt(m)[:, None]).T.reshape(3, -1, 3)  # (mode, atom, xyz) in Å/√amu
    harmonic = units.KM_PER_MOL_PER_E2_AMU * np.sum(np.einsum("i,kia->ka", q, u) ** 2, axis=1)
    eng = _HarmonicDipoleEngine(x0, h, q)
    s = MDSettings(temperature_k=50.0, timestep_fs=0.5, steps=80000, equilibration_steps=2000, write_every=2,
                   friction_per_ps=5.0, relax=False)
    traj = run_md(a, eng, settings=s)
    assert traj.dipoles is not None and traj.dipoles.shape == (traj.n_frames, 3)
    ir = dipole_ir(traj, sigma_cm1=10.0)
    step = ir.wavenumbers_cm1[1] - ir.wavenumbers_cm1[0]
    edges = np.concatenate([[nu_cm1[0] - 300], 0.5 * (nu_cm1[1:] + nu_cm1[:-1]), [nu_cm1[-1] + 300]])
    for k, (nu, ref) in enumerate(zip(nu_cm1, harmonic)):
        assert abs(ir.peak(edges[k], edges[k + 1]) - nu) <= 0.005 * nu + step
        assert ir.band(edges[k], edges[k + 1]) == pytest.approx(ref, rel=0.20), (nu, ir.band(edges[k], edges[k + 1]), ref)
    assert ir.band(edges[0], edges[-1]) == pytest.approx(harmonic.sum(), rel=0.10)
    ir.save(tmp_path / "ir")
    back = atomvib.load(tmp_path / "ir")
    assert isinstance(back, DipoleSpectrum) and back == ir and (tmp_path / "ir" / "ir_md.csv").is_file()
    # a trajectory without dipoles is refused in one line
    with pytest.raises(InputError, match="no dipoles"):
        dipole_ir(run_md(AL, settings=_settings(temperature_k=50.0, steps=20, equilibration_steps=0)))


# ------------------------------------------------------------------------------------------ S(Q, E) from MD
def test_trajectory_sqe_incoherent_is_the_dos_at_small_q(low_t, tmp_path):
    """dynasor's incoherent S(Q, E) of the 20 K run: at small Q the classical one-phonon term is
    S_inc ∝ Q² g(E)/E² (Debye–Waller ≈ 1, multiphonon ∝ Q⁴), so E²·S_inc/Q² has the VACF DOS's mean energy
    (within 5 %: the two windows' line shapes differ); the result saves, loads and writes the map compare reads."""
    from atomvib import units
    from atomvib.dynamics.sqw import TrajectorySqe, trajectory_sqe

    s = trajectory_sqe(low_t, q_max_ainv=4.0, n_q_shells=16, window_ps=4.0, max_qpoints=150)
    assert s.coherent.shape == s.incoherent.shape == (len(s.q_ainv), len(s.energy_mev))
    assert np.all(s.incoherent >= -1e-3 * s.incoherent.max())  # the window's ringing only
    low = s.q_ainv < 2.5
    g = np.clip(s.energy_mev ** 2 * (s.incoherent[low] / s.q_ainv[low, None] ** 2).mean(axis=0), 0, None)
    d = vacf_dos(low_t, sigma_thz=0.1)
    e_d = d.frequencies_thz * units.THZ_TO_MEV
    top = 1.2 * d.omega_max_thz * units.THZ_TO_MEV  # E² lifts the window's ringing at high E: compare below it
    sel, sel_d = s.energy_mev < top, e_d < top
    mean = np.sum((s.energy_mev * g)[sel]) / np.sum(g[sel])
    mean_d = np.sum((e_d * d.total)[sel_d]) / np.sum(d.total[sel_d])
    assert mean == pytest.approx(mean_d, rel=0.05), (mean, mean_d)
    s.save(tmp_path / "sqe")
    back = atomvib.load(tmp_path / "sqe")
    assert isinstance(back, TrajectorySqe) and back == s
    import h5py

    with h5py.File(tmp_path / "sqe" / "sqe.h5") as f:
        assert f["intensity"].shape == s.total.shape and f["q_ainv"].shape == s.q_ainv.shape
    with pytest.raises(InputError, match="window"):
        trajectory_sqe(low_t, window_ps=1000.0)


def test_a_trajectory_off_its_sites_is_flagged_distorted(low_t):
    """20 K Al stays on its sites (offset ≪ 0.1 Å); the same frames with a static, zero-net ±0.2 Å displacement
    (a frozen distortion, as tilts below a perovskite's transition) are flagged: the fit about the ideal sites
    would look stable while the crystal is not in that phase."""
    import dataclasses

    eff = effective_phonons(low_t, settings=PhononSettings(mesh_density=20))
    assert eff.site_offset_max_a < 0.05 and not eff.distorted
    shift = np.zeros((low_t.natoms, 3))
    shift[::2, 0], shift[1::2, 0] = 0.2, -0.2
    moved = dataclasses.replace(low_t, positions=np.asarray(low_t.positions) + shift[None])
    off = effective_phonons(moved, settings=PhononSettings(mesh_density=20))
    assert off.site_offset_max_a == pytest.approx(0.2, abs=0.02) and off.distorted
    assert off.summary()["effective_force_constants"]["distorted"]
