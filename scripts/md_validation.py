"""Validation of temperature-dependent phonons against experiment (issue 14): docs/md_validation.md.

Sections (each caches its numbers in scripts/validation_cache/md_validation.json and is skipped when cached;
``--redo NAME`` recomputes one):

``catio3``   cubic CaTiO3 (the shared DFT set's structure): 0 K phonons (DFT forces and the default engine) are
             unstable; effective phonons from self-consistent harmonic sampling at a ladder of temperatures
             (quantum and classical statistics) → the temperature above which the cubic phase is dynamically
             stable, against the measured tetragonal → cubic transition (1634 K, Yashima & Ali 2009).
``catio3_md`` MD (Langevin) + effective force constants at two temperatures around the sampling's answer.
``si_raman`` Si: NVE MD at 300 and 700 K, the Γ optical line from the mode-projected velocity spectrum, against
             the measured Raman line (Balkanski, Wallis & Haro, Phys. Rev. B 28, 1928 (1983)).
``catio3_npt`` the NPT runs (40 and 320 atoms): tilt order parameters and effective phonons per temperature.
``si_frozen`` the Si Γ optical mode's stiffness against its frozen amplitude, per engine.
``si_long``  the long Si runs (64 atoms, NVE 10 ps) per engine: the Γ optical line and its uncertainty.
``figures``  docs/figures/md_catio3_tilts.png, md_si_raman.png from the cache.

Run: ``OMP_NUM_THREADS=1 python scripts/md_validation.py [--only NAME ...]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "phonopy-examples" / "CaTiO3"
CACHE = ROOT / "scripts" / "validation_cache" / "md_validation.json"
WORK = Path("/tmp/atomvib_md_validation")
ENGINE = "sevennet:7net-l3i5"
CATIO3_T = (300, 900, 1500, 2100, 2700)
CATIO3_MD_T = (300.0, 600.0, 900.0, 1500.0)
#: Si MD cell: 2×2×2 primitive cells (16 atoms; the machine is shared: the 64-atom cell ran at 0.2 steps/s)
SI_SUPERCELL = (2, 2, 2)
#: Balkanski, Wallis & Haro, PRB 28, 1928 (1983): ω(T) = ω0 + A[1 + 2/(e^x − 1)] + B[1 + 3/(e^y − 1) + 3/(e^y − 1)²],
#: x = ħω0/2k_BT, y = ħω0/3k_BT; ω0 = 528 cm⁻¹, A = −2.96 cm⁻¹, B = −0.174 cm⁻¹ (fit to their measurements 5–1400 K)
BALKANSKI = (528.0, -2.96, -0.174)


def balkanski_cm1(t_k: float) -> float:
    from atomvib import units

    w0, a, b = BALKANSKI
    kt_cm1 = t_k / units.THZ_TO_K * units.THZ_TO_CM1
    x, y = w0 / (2 * kt_cm1), w0 / (3 * kt_cm1)
    ex, ey = np.expm1(x), np.expm1(y)
    return float(w0 + a * (1 + 2 / ex) + b * (1 + 3 / ey + 3 / ey ** 2))


def load_cache() -> dict:
    return json.loads(CACHE.read_text()) if CACHE.exists() else {}


def save_cache(c: dict) -> None:
    """Merge into the file (two sections may run in two processes at once)."""
    merged = load_cache()
    merged.update(c)
    CACHE.write_text(json.dumps(merged, indent=1, sort_keys=True))


def _lowest_at(ph, q) -> float:
    ph.run_qpoints([q])
    from atomvib.dynamics.sampling import qpoint_solution

    return float(np.min(qpoint_solution(ph)[0][0]))


def catio3(cache: dict) -> None:
    import atomvib
    from atomvib.dynamics.sampling import SamplingSettings, commensurate_qpoints, sampled_phonons
    from atomvib.dynamics.settings import MDSettings

    out: dict = {"engine": ENGINE}
    t0 = time.time()
    dft = atomvib.phonons(SHARED / "phonopy_disp.yaml", forces=SHARED / "FORCE_SETS")
    phd = dft.force_constants.phonopy()
    out["dft_lowest_thz"] = {"R": _lowest_at(phd, (0.5, 0.5, 0.5)), "M": _lowest_at(phd, (0.5, 0.5, 0)),
                             "X": _lowest_at(phd, (0.5, 0, 0)), "G": _lowest_at(phd, (0, 0, 0))}
    ms = MDSettings(engine=ENGINE, temperature_k=300.0, supercell=(2, 2, 2))
    harm = None
    rows = {}
    for stat in ("quantum",):
        for T in CATIO3_T:
            s = MDSettings(**{**ms.to_dict(), "supercell": (2, 2, 2), "temperature_k": float(T)})
            t1 = time.time()
            e = sampled_phonons(SHARED / "POSCAR-unitcell", settings=s, harmonic=harm,
                                sampling=SamplingSettings(statistics=stat, n_snapshots=24, max_iterations=20),
                                checkpoint_dir=WORK / "catio3_ckpt", progress=False, fmt="vasp")
            if harm is None:
                harm = atomvib.phonons(e.structure, engine=ENGINE, relax=False, primitive=False, supercell=(2, 2, 2),
                                       checkpoint_dir=WORK / "catio3_ckpt")
                ph0 = harm.force_constants.phonopy()
                out["harmonic_lowest_thz"] = {"R": _lowest_at(ph0, (0.5, 0.5, 0.5)), "M": _lowest_at(ph0, (0.5, 0.5, 0)),
                                              "X": _lowest_at(ph0, (0.5, 0, 0)), "G": _lowest_at(ph0, (0, 0, 0))}
                out["a_relaxed_A"] = float(np.linalg.norm(e.structure.cell[0]))
            ph = e.force_constants.phonopy()
            row = {"R": _lowest_at(ph, (0.5, 0.5, 0.5)), "M": _lowest_at(ph, (0.5, 0.5, 0)),
                   "X": _lowest_at(ph, (0.5, 0, 0)), "G": _lowest_at(ph, (0, 0, 0)),
                   "commensurate_lowest": float(min(_lowest_at(ph, q) for q in commensurate_qpoints(ph))),
                   "converged": e.sampling["converged"], "iterations": len(e.sampling["iterations"]),
                   "force_residual": e.force_residual, "u_rms_A": e.displacement_rms_a, "seconds": time.time() - t1}
            rows[f"{stat}_{T}"] = row
            print(stat, T, {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    out["sampling"] = rows
    for stat in ("quantum",):
        ts = np.array(CATIO3_T, float)
        w = np.array([min(rows[f"{stat}_{T}"][k] for k in ("R", "M", "X")) for T in CATIO3_T])
        out[f"t_stable_{stat}_K"] = _crossing(ts, w)
    out["seconds"] = time.time() - t0
    cache["catio3"] = out


def _crossing(ts, w) -> float | None:
    """Temperature where the signed lowest frequency turns positive (linear in the signed ω², mean-field-like)."""
    w2 = np.sign(w) * w * w
    for i in range(len(ts) - 1):
        if w2[i] < 0 <= w2[i + 1]:
            return float(ts[i] + (0 - w2[i]) * (ts[i + 1] - ts[i]) / (w2[i + 1] - w2[i]))
    return None


def catio3_md(cache: dict, temps=(900.0, 600.0, 300.0, 1500.0)) -> None:
    from atomvib.dynamics import MDSettings, effective_phonons, run_md
    from atomvib.dynamics.sampling import commensurate_qpoints

    rows = dict(cache.get("catio3_md", {}))
    for T in temps:
        if str(int(T)) in rows:
            continue
        t1 = time.time()
        s = MDSettings(engine=ENGINE, temperature_k=float(T), timestep_fs=2.0, steps=1000, equilibration_steps=500,
                       write_every=5, supercell=(2, 2, 2))
        traj = run_md(SHARED / "POSCAR-unitcell", settings=s, out=WORK / f"catio3_md_{int(T)}" / "trajectory.extxyz",
                      fmt="vasp")
        e = effective_phonons(traj)
        ph = e.force_constants.phonopy()
        rows[str(int(T))] = {"R": _lowest_at(ph, (0.5, 0.5, 0.5)), "M": _lowest_at(ph, (0.5, 0.5, 0)),
                             "X": _lowest_at(ph, (0.5, 0, 0)),
                             "commensurate_lowest": float(min(_lowest_at(ph, q) for q in commensurate_qpoints(ph))),
                             "temperature_mean_K": e.temperature_k, "force_residual": e.force_residual,
                             "n_frames": e.n_frames, "seconds": time.time() - t1,
                             "steps_per_s": traj.timings.get("steps_per_s")}
        print("md", T, rows[str(int(T))], flush=True)
        cache["catio3_md"] = {**load_cache().get("catio3_md", {}), **rows}
        save_cache(cache)
    rows = cache["catio3_md"]
    ts = np.array([T for T in CATIO3_MD_T if str(int(T)) in rows], float)
    zb = [min(rows[str(int(T))][k] for k in ("R", "M", "X") if k in rows[str(int(T))]) for T in ts]
    cache["catio3_md_t_stable_K"] = _crossing(ts, np.array(zb))


def si_raman(cache: dict) -> None:
    import atomvib
    from atomvib import units
    from atomvib.dynamics import MDSettings, run_md
    from atomvib.dynamics.modes import mode_spectra
    from atomvib.dynamics.sampling import SamplingSettings, qpoint_solution, sampled_phonons

    si = ROOT / "examples" / "Si.cif"
    rows = {}
    harm = None
    for T in (300.0, 700.0):
        t1 = time.time()
        s = MDSettings(engine=ENGINE, temperature_k=T, timestep_fs=2.0, steps=1500, equilibration_steps=300,
                       write_every=2, ensemble="nve", supercell=SI_SUPERCELL)
        traj = run_md(si, settings=s, out=WORK / f"si{int(np.prod(SI_SUPERCELL)) * 2}_md_{int(T)}" / "trajectory.extxyz")
        if harm is None:
            harm = atomvib.phonons(traj.unitcell, engine=ENGINE, relax=False, primitive=False,
                                   supercell=tuple(int(x) for x in traj.supercell_matrix.ravel()),
                                   checkpoint_dir=WORK / "si_ckpt")
        m = mode_spectra(traj, harm, (0, 0, 0), sigma_thz=0.45)
        opt = [i for i in range(len(m.harmonic_frequencies_thz)) if m.harmonic_frequencies_thz[i] > 1.0]
        peak, fwhm = m.line(opt)
        sp = sampled_phonons(si, settings=MDSettings(engine=ENGINE, temperature_k=T, supercell=SI_SUPERCELL), harmonic=harm,
                             sampling=SamplingSettings(statistics="quantum"), checkpoint_dir=WORK / "si_ckpt")
        php = sp.force_constants.phonopy()
        php.run_qpoints([(0, 0, 0)])
        w_s = float(np.max(qpoint_solution(php)[0][0]))
        rows[str(int(T))] = {
            "md_peak_thz": peak, "md_fwhm_thz": fwhm, "harmonic_thz": float(np.max(m.harmonic_frequencies_thz)),
            "md_peak_cm1": peak * units.THZ_TO_CM1, "harmonic_cm1": float(np.max(m.harmonic_frequencies_thz)) * units.THZ_TO_CM1,
            "sampling_gamma_cm1": w_s * units.THZ_TO_CM1, "experiment_cm1": balkanski_cm1(T),
            "temperature_mean_K": m.temperature_k, "n_frames": m.n_frames, "natoms": traj.natoms,
            "steps_per_s": traj.timings.get("steps_per_s"), "seconds": time.time() - t1,
        }
        np.savez(WORK / f"si_modes_{int(T)}.npz", f=m.frequencies_thz, g=m.spectra[opt].sum(axis=0))
        print("si", T, rows[str(int(T))], flush=True)
    cache["si_raman"] = rows


def _order_parameter(prod, unitcell) -> dict:
    """How far the time-averaged positions sit from the ideal cubic sites (Å; RMS over the O atoms and the largest
    of any atom): ~0 above a displacive transition, the frozen distortion (octahedral tilts) below it. The
    effective force constants around the cubic sites cannot show a frozen distortion (the static offset carries no
    mean force), so this is the test of the phase; the effective frequencies are those of the fluctuations."""
    from atomvib.dynamics.tdep import _mic_frac, reference_sites

    ph, _, perm, frac, mean_cell = reference_sites(prod, unitcell)
    ref = np.asarray(ph.supercell.scaled_positions)
    mean_frac = frac[0][perm] + _mic_frac(frac[:, perm] - frac[0][perm]).mean(axis=0)
    off = _mic_frac(mean_frac - ref) @ mean_cell
    off -= off.mean(axis=0)
    is_o = np.asarray(ph.supercell.numbers) == 8
    return {"mean_offset_O_rms_A": float(np.sqrt(np.mean(np.sum(off[is_o] ** 2, axis=1)))),
            "mean_offset_max_A": float(np.max(np.linalg.norm(off, axis=1)))}


def _tilt_order(traj, harmonic) -> dict:
    """Order parameters of the octahedral tilts: the displacements projected on the 0 K unstable modes — the three
    R₄⁺ (antiphase) tilts at R and the M₃⁺ (in-phase) tilt of each of the three M arms
    (:func:`atomvib.dynamics.modes.mode_amplitudes`). η = |⟨Q⟩| / √⟨|Q|²⟩ over the production: ≈ 1 for frozen tilts,
    → the noise level (block estimate over 8 blocks, ``noise``) when they fluctuate about 0 (the cubic phase)."""
    from atomvib.dynamics.modes import mode_amplitudes

    out = {}
    for lab, qs, n in (("R", [(0.5, 0.5, 0.5)], 3), ("M", [(0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)], 1)):
        cols = []
        for q in qs:
            a, w = mode_amplitudes(traj, harmonic, q, structure=harmonic.structure)
            cols.append(a[:, np.argsort(w)[:n]])
        # complex amplitudes: the eigenvectors of a degenerate set carry arbitrary phases and mixing, so only the
        # norms over the set mean anything (invariant under any unitary change of basis within it)
        Q = np.concatenate(cols, axis=1)
        rms = float(np.sqrt((np.abs(Q) ** 2).sum(axis=1).mean()))
        blocks = np.array([b.mean(axis=0) for b in np.array_split(Q, 8)])
        out[f"eta_{lab}"] = float(np.linalg.norm(Q.mean(axis=0)) / rms)
        out[f"eta_{lab}_noise"] = float(np.sqrt((np.abs(blocks - blocks.mean(axis=0)) ** 2).sum(axis=0).sum()
                                                / (8 * 7)) / rms)
        out[f"rms_{lab}"] = rms
    return out


def catio3_npt(cache: dict) -> None:
    """The NPT runs (WORK/catio3_npt_T: 40 atoms, MTK barostat at 0 GPa, 1 ps equilibration, 4 ps production):
    tilt order parameters, mean lattice parameter, effective phonons about the cubic sites, per temperature."""
    import atomvib

    h = atomvib.phonons(SHARED / "POSCAR-unitcell", engine=ENGINE, supercell=(2, 2, 2),
                        checkpoint_dir=WORK / "catio3_ckpt", fmt="vasp")
    for pattern, key in (("catio3_npt_*", "catio3_npt"), ("catio3_npt4_*", "catio3_npt4")):
        cache[key] = _npt_rows(h, pattern)
    cache["catio3_harmonic_a_A"] = float(np.cbrt(abs(np.linalg.det(np.asarray(h.structure.cell)))))


def _npt_rows(h, pattern: str) -> dict:
    from atomvib import units
    from atomvib.dynamics.md import read_trajectory
    from atomvib.dynamics.tdep import effective_phonons

    rows = {}
    for d in sorted(WORK.glob(pattern), key=lambda d: int(d.name.rsplit("_", 1)[1])):
        T = d.name.rsplit("_", 1)[1]
        traj = read_trajectory(d / "trajectory.extxyz")
        prod = traj.select(True)
        if prod.n_frames < 100:
            continue
        e = effective_phonons(traj, h.structure)
        ph = e.force_constants.phonopy()
        a = float(np.mean(np.cbrt(np.abs(np.linalg.det(np.asarray(prod.cells, float))) * 5 / traj.natoms)))
        rows[T] = {"R": _lowest_at(ph, (0.5, 0.5, 0.5)), "M": _lowest_at(ph, (0.5, 0.5, 0)),
                   "temperature_mean_K": e.temperature_k, "n_frames": prod.n_frames, "a_pseudocubic_A": a,
                   "production_ps": (prod.n_frames - 1) * prod.frame_interval_fs * units.FS_TO_PS,
                   **_tilt_order(traj, h), **_order_parameter(prod, h.structure)}
        rows[T]["natoms"] = traj.natoms
        print(pattern, T, {k: round(v, 3) if isinstance(v, float) else v for k, v in rows[T].items()}, flush=True)
    return rows


#: frozen-phonon amplitudes of the Si Γ optical mode (relative displacement of the two atoms along z, Å)
FROZEN_U = (0.005, 0.02, 0.05, 0.1, 0.15)


def si_frozen(cache: dict) -> None:
    """The Si Γ optical mode's stiffness against its amplitude, per engine (relaxed diamond cell, the two atoms
    moved ±u/2 along z): ω_eff(u) = √(F/(μu)), μ = m/2. A curvature that grows with u (quartic hardening) raises
    the MD line above the harmonic one as the temperature rises; the cubic terms (to other modes) lower it."""
    import warnings

    from ase.build import bulk
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    from atomvib import units
    from atomvib.engines import get_engine

    rows = {}
    for spec in (ENGINE, "sevennet", "sevennet:7net-mf-0", "chgnet"):
        eng = get_engine(spec)
        a = bulk("Si", "diamond", a=5.43)
        a.calc = eng.calculator()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            BFGS(FrechetCellFilter(a), logfile=None).run(fmax=1e-4, steps=200)
        a.calc = None
        mu = float(a.get_masses()[0]) / 2
        w = []
        for u in FROZEN_U:
            b = a.copy()
            pos = b.get_positions()
            pos[0, 2] += u / 2
            pos[1, 2] -= u / 2
            b.set_positions(pos)
            k = -eng.evaluate([b])[0].forces[0, 2] / u
            w.append(float(np.sqrt(max(k, 0.0) / mu) * units.EV_A2_AMU_TO_THZ * units.THZ_TO_CM1))
        rows[spec] = {"a_A": float(a.cell.lengths()[0] * np.sqrt(2)), "u_A": list(FROZEN_U), "omega_cm1": w}
        print("frozen", spec, rows[spec], flush=True)
    cache["si_frozen"] = rows


#: the long Si runs (64 atoms, 2×2×2 conventional, NVE 10 ps after 2 ps Langevin): directory pattern → engine
SI_LONG = {"si64long_md_*": ENGINE, "si64sn0_md_*": "sevennet"}


def _optical_line(traj, harm, si, length_ps):
    """The Γ optical line of a Si trajectory: (peak, FWHM, window σ) in cm⁻¹, the ModeSpectra and the optical
    modes. σ is the narrowest window ``length_ps`` of production allows."""
    from atomvib import units
    from atomvib.dynamics.modes import mode_spectra

    sigma = float(np.ceil(2 * 4.0 / (2 * np.pi * length_ps) * 100) / 100)
    m = mode_spectra(traj, harm, (0, 0, 0), sigma_thz=sigma, structure=si)
    opt = [i for i in range(len(m.harmonic_frequencies_thz)) if m.harmonic_frequencies_thz[i] > 1.0]
    pk, fw = m.line(opt)
    return pk * units.THZ_TO_CM1, fw * units.THZ_TO_CM1, sigma * units.THZ_TO_CM1, m, opt


def si_long(cache: dict) -> None:
    """The Γ optical line of the long Si runs per engine and temperature: peak of the whole production (Gaussian
    window σ from its length) and of each half (their difference: the statistical uncertainty), against the
    engine's own harmonic line and Balkanski's measured line."""
    import dataclasses

    import atomvib
    from atomvib import units
    from atomvib.dynamics.md import read_trajectory

    si = ROOT / "examples" / "Si.cif"
    out = {}
    for pattern, engine in SI_LONG.items():
        dirs = sorted(WORK.glob(pattern), key=lambda d: int(d.name.rsplit("_", 1)[1]))
        if not dirs:
            continue
        harm = atomvib.phonons(si, engine=engine, supercell=SI_SUPERCELL, checkpoint_dir=WORK / f"si_ckpt_{engine}")
        rows = {}
        for d in dirs:
            T = d.name.rsplit("_", 1)[1]
            traj = read_trajectory(d / "trajectory.extxyz")
            prod = traj.select(True)
            if prod.n_frames < 500:
                continue
            length_ps = (prod.n_frames - 1) * prod.frame_interval_fs * units.FS_TO_PS

            pk, fw, sig, m, opt = _optical_line(traj, harm, si, length_ps)
            idx = np.nonzero(traj.production)[0]
            halves = []
            for part in (idx[: len(idx) // 2], idx[len(idx) // 2:]):
                mask = np.zeros(traj.n_frames, bool)
                mask[part] = True
                halves.append(_optical_line(dataclasses.replace(traj, production=mask), harm, si, length_ps / 2)[0])
            rows[T] = {"md_peak_cm1": pk, "md_fwhm_cm1": fw, "sigma_cm1": sig, "halves_cm1": halves,
                       "harmonic_cm1": float(np.max(m.harmonic_frequencies_thz)) * units.THZ_TO_CM1,
                       "experiment_cm1": balkanski_cm1(float(T)), "temperature_mean_K": m.temperature_k,
                       "production_ps": length_ps, "natoms": traj.natoms}
            np.savez(WORK / f"si_long_{engine.replace(':', '_')}_{T}.npz", f=m.frequencies_thz,
                     g=m.spectra[opt].sum(axis=0))
            print("si long", engine, T, rows[T], flush=True)
        out[engine] = rows
    cache["si_long"] = out


def from_files(cache: dict) -> None:
    """Analyse the trajectories in WORK as far as they got (the machine was shared: runs stopped by hand keep their
    frames): CaTiO3 effective phonons per temperature, the Si Γ line per temperature."""
    import atomvib
    from atomvib import units
    from atomvib.dynamics.md import read_trajectory
    from atomvib.dynamics.tdep import effective_phonons

    h = atomvib.phonons(SHARED / "POSCAR-unitcell", engine=ENGINE, supercell=(2, 2, 2),
                        checkpoint_dir=WORK / "catio3_ckpt", fmt="vasp")
    rows = dict(cache.get("catio3_md", {}))
    for d in sorted(WORK.glob("catio3_md_*")):
        T = d.name.rsplit("_", 1)[1]
        f = d / "trajectory.extxyz"
        if not f.exists():
            continue
        traj = read_trajectory(f)
        prod = traj.select(True)
        note = ""
        if prod.n_frames < 20:  # stopped before its production: the second half of the (Langevin) equilibration
            n = traj.n_frames
            if n < 40:
                continue
            traj = dataclasses.replace(traj, production=np.arange(n) >= n // 2)
            prod = traj.select(True)
            note = "second half of the equilibration (the run was stopped before its production)"
        e = effective_phonons(traj, h.structure)
        ph = e.force_constants.phonopy()
        rows[T] = {"R": _lowest_at(ph, (0.5, 0.5, 0.5)), "M": _lowest_at(ph, (0.5, 0.5, 0)),
                   "X": _lowest_at(ph, (0.5, 0, 0)), "temperature_mean_K": e.temperature_k,
                   "force_residual": e.force_residual, "n_frames": e.n_frames,
                   "production_ps": (prod.n_frames - 1) * prod.frame_interval_fs * units.FS_TO_PS,
                   **_order_parameter(prod, h.structure), **_tilt_order(traj, h), **({"note": note} if note else {})}
        print("catio3 from file", T, rows[T], flush=True)
    cache["catio3_md"] = rows
    ts = np.array(sorted(float(t) for t in rows))
    zb = [min(rows[str(int(t))][k] for k in ("R", "M", "X") if k in rows[str(int(t))]) for t in ts]
    cache["catio3_md_t_stable_K"] = _crossing(ts, np.array(zb))
    si = ROOT / "examples" / "Si.cif"
    harm = atomvib.phonons(si, engine=ENGINE, supercell=SI_SUPERCELL, checkpoint_dir=WORK / "si_ckpt")
    for pattern, key in (("si16_md_*", "si_raman"), ("si_md_*", "si_raman_64")):
        out = {}
        for d in sorted(WORK.glob(pattern)):
            T = d.name.rsplit("_", 1)[1]
            traj = read_trajectory(d / "trajectory.extxyz")
            prod = traj.select(True)
            if prod.n_frames < 50:
                continue
            length_ps = (prod.n_frames - 1) * prod.frame_interval_fs * units.FS_TO_PS
            peak, fwhm, sig, m, opt = _optical_line(traj, harm, si, length_ps)
            out[T] = {"md_peak_cm1": peak, "md_fwhm_cm1": fwhm,
                      "sigma_cm1": sig, "harmonic_cm1": float(np.max(m.harmonic_frequencies_thz))
                      * units.THZ_TO_CM1, "experiment_cm1": balkanski_cm1(float(T)), "temperature_mean_K": m.temperature_k,
                      "production_ps": length_ps, "natoms": traj.natoms}
            np.savez(WORK / f"si_modes_{T}{'_64' if key.endswith('64') else ''}.npz", f=m.frequencies_thz, g=m.spectra[opt].sum(axis=0))
            print("si from file", T, out[T], flush=True)
        cache[key] = out


def _effective_panel(ax, rows: dict, harmonic: dict | None, title: str) -> None:
    """Lowest effective frequency at R and M against temperature, with the 0 K harmonic ones dotted."""
    ts = sorted(float(t) for t in rows)
    for k, mk in (("R", "o"), ("M", "s")):
        ax.plot(ts, [rows[str(int(t))][k] for t in ts], mk + "-", label=f"effective phonons at {k} (fit about cubic sites)")
    if harmonic:
        ax.axhline(harmonic["R"], color="C0", ls=":", lw=1, label=f"harmonic (0 K) at R: {harmonic['R']:.2f} THz")
        ax.axhline(harmonic["M"], color="C1", ls=":", lw=1, label=f"harmonic (0 K) at M: {harmonic['M']:.2f} THz")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("Temperature (K)")
    ax.set_ylabel("lowest frequency (THz; < 0: imaginary)")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)


def figures(cache: dict) -> None:
    """docs/figures/md_catio3_tilts.png and md_si_raman.png from the cache."""
    from atomvib.plot import new_figure

    figs = ROOT / "docs" / "figures"
    npt = cache.get("catio3_npt", {})
    if npt:
        ts = sorted(float(t) for t in npt)
        fig = new_figure(figsize=(10, 4))
        ax, ax2 = fig.subplots(1, 2)
        _effective_panel(ax, npt, cache.get("catio3_harmonic"), "fit about the cubic sites: real at every T")
        series = [(npt, "-", "NPT, 40 atoms, 4 ps"),
                  ({t: r for t, r in cache.get("catio3_md", {}).items() if "eta_R" in r and "note" not in r and r.get("production_ps", 0) >= 0.5}, ":",
                   "NVT at the 0 K volume, 40 atoms"),
                  (cache.get("catio3_npt4", {}), "", "NPT, 320 atoms, 2 ps")]
        for j, (rows, ls, what) in enumerate(series):
            if not rows:
                continue
            tt = sorted(float(t) for t in rows)
            for k, mk, lab in (("R", "o", "R₄⁺"), ("M", "s", "M₃⁺")):
                ax2.errorbar(np.array(tt) + 15 * j, [rows[str(int(t))][f"eta_{k}"] for t in tt],
                             yerr=[rows[str(int(t))][f"eta_{k}_noise"] for t in tt], fmt=mk + ls,
                             color=f"C{2 * j + (k == 'M')}", capsize=3, ms=9 if j == 2 else 5,
                             label=f"η {lab}, {what}")
        ax2.axvspan(1580, 1635, color="0.85", label="measured: cubic above 1580–1635 K")
        ax2.set_ylim(0, 1.05)
        ax2.set_xlabel("Temperature (K)")
        ax2.set_ylabel("η = |⟨Q⟩| / √⟨Q²⟩  (1 frozen, ≈0 cubic)")
        ax2.set_title("tilt order parameters (± block error; the noise floor is ≈ 0.2–0.3)", fontsize=9)
        ax2.legend(fontsize=7, loc="lower left")
        fig.suptitle(f"CaTiO$_3$, {ENGINE} MD (left: NPT, 40 atoms)", fontsize=10)
        fig.savefig(figs / "md_catio3_tilts.png", dpi=120, bbox_inches="tight")
    sl = cache.get("si_long", {})
    if sl:
        from atomvib import units

        fig = new_figure(figsize=(11, 4))
        ax0, ax, ax2 = fig.subplots(1, 3)
        colour = {"sevennet": "C0", ENGINE: "C1", "sevennet:7net-mf-0": "C2", "chgnet": "C3"}
        for eng, rows in sl.items():
            j = int(colour.get(eng, "C4")[1])
            for T in sorted(rows, key=float):
                npz = WORK / f"si_long_{eng.replace(':', '_')}_{T}.npz"
                if npz.exists():
                    d = np.load(npz)
                    ax0.plot(d["f"] * units.THZ_TO_CM1, d["g"] / d["g"].max(), color=f"C{j}",
                             ls="-" if float(T) < 500 else "--", label=f"{eng} {float(rows[T]['temperature_mean_K']):.0f} K")
            ax0.axvline(next(iter(rows.values()))["harmonic_cm1"], color=f"C{j}", lw=0.6, ls=":")
            ts = sorted(rows, key=float)
            tt = [rows[T]["temperature_mean_K"] for T in ts]
            err = [abs(rows[T]["halves_cm1"][0] - rows[T]["halves_cm1"][1]) / 2 for T in ts]
            ax.errorbar(tt, [rows[T]["md_peak_cm1"] - rows[T]["harmonic_cm1"] for T in ts], yerr=err, fmt="o-",
                        color=f"C{j}", capsize=3, label=f"MD (NVE, 64 atoms, 10 ps): {eng}")
        tg = np.linspace(5, 900, 100)
        ax.plot(tg, [balkanski_cm1(t) - BALKANSKI[0] - BALKANSKI[1] - BALKANSKI[2] for t in tg], "k-",
                label="measured (Balkanski 1983): ω(T) − ω(0 K)")
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set_xlabel("Temperature (K)")
        ax.set_ylabel("Γ optical line − harmonic (cm$^{-1}$)")
        ax.legend(fontsize=7)
        ax.set_title("shift of the Si Raman line with T", fontsize=10)
        ax0.set_xlim(380, 500)
        ax0.set_xlabel("Wavenumber (cm$^{-1}$)")
        ax0.set_ylabel("Γ optical mode spectrum (normalised)")
        ax0.legend(fontsize=7)
        ax0.set_title("MD lines (dotted: harmonic)", fontsize=10)
        for eng, r in cache.get("si_frozen", {}).items():
            w = np.asarray(r["omega_cm1"])
            ax2.plot(r["u_A"], w / w[0], "o-", color=colour.get(eng, "C4"), label=eng)
        ax2.axhline(1, color="0.5", lw=0.6)
        ax2.set_xlabel("frozen Γ-optical amplitude u (Å)")
        ax2.set_ylabel("ω_eff(u) / ω_eff(0.005 Å)")
        ax2.set_title("stiffness against amplitude (frozen phonon)", fontsize=10)
        ax2.legend(fontsize=7)
        fig.savefig(figs / "md_si_raman.png", dpi=120, bbox_inches="tight")
    si = cache.get("si_raman", {})
    if si and not sl:  # the short runs' figure, where the long runs are missing
        fig = new_figure(figsize=(6.5, 4))
        ax = fig.subplots()
        for T in sorted(si, key=float):
            npz = WORK / f"si_modes_{int(float(T))}.npz"
            if npz.exists():
                d = np.load(npz)
                from atomvib import units

                ax.plot(d["f"] * units.THZ_TO_CM1, d["g"] / d["g"].max(), label=f"MD {T} K (Γ optical)")
        for T in sorted(si, key=float):
            ax.axvline(si[T]["experiment_cm1"] - si["300"]["experiment_cm1"] + si["300"]["md_peak_cm1"], ls=":",
                       lw=0.8, color="0.4")
        ax.set_xlim(400, 560)
        ax.set_xlabel("Wavenumber (cm$^{-1}$)")
        ax.set_ylabel("Γ optical mode spectrum (normalised)")
        ax.set_title("Si Raman line from MD (dotted: measured shift from 300 K, Balkanski 1983)", fontsize=9)
        ax.legend(fontsize=8)
        fig.savefig(figs / "md_si_raman.png", dpi=120, bbox_inches="tight")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=["catio3_md", "si_raman", "catio3"])
    p.add_argument("--redo", nargs="*", default=[])
    p.add_argument("--temps", nargs="*", type=float, help="catio3_md: only these temperatures")
    a = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    for name in a.only:
        cache = load_cache()
        if name in ("figures", "from_files", "catio3_npt", "si_long"):
            globals()[name](cache)
            save_cache(cache)
            continue
        if name in cache and name not in a.redo:
            print(f"{name}: cached")
            continue
        if name == "catio3_md" and a.temps:
            catio3_md(cache, tuple(a.temps))
        else:
            globals()[name](cache)
        save_cache(cache)


if __name__ == "__main__":
    main()
