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
``figures``  docs/figures/md_catio3_stability.png, docs/figures/md_si_raman.png from the cache.

Run: ``OMP_NUM_THREADS=1 python scripts/md_validation.py [--only NAME ...]``.
"""

from __future__ import annotations

import argparse
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


def catio3_md(cache: dict) -> None:
    from atomvib.dynamics import MDSettings, effective_phonons, run_md
    from atomvib.dynamics.sampling import commensurate_qpoints

    rows = dict(cache.get("catio3_md", {}))
    for T in (900.0, 1500.0, 600.0, 300.0):
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
        cache["catio3_md"] = rows
        save_cache(cache)
    ts = np.array(CATIO3_MD_T, float)
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
                       write_every=2, ensemble="nve")
        traj = run_md(si, settings=s, out=WORK / f"si_md_{int(T)}" / "trajectory.extxyz")
        if harm is None:
            harm = atomvib.phonons(traj.unitcell, engine=ENGINE, relax=False, primitive=False,
                                   supercell=tuple(int(x) for x in traj.supercell_matrix.ravel()),
                                   checkpoint_dir=WORK / "si_ckpt")
        m = mode_spectra(traj, harm, (0, 0, 0), sigma_thz=0.45)
        opt = [i for i in range(len(m.harmonic_frequencies_thz)) if m.harmonic_frequencies_thz[i] > 1.0]
        peak, fwhm = m.line(opt)
        sp = sampled_phonons(si, settings=MDSettings(engine=ENGINE, temperature_k=T), harmonic=harm,
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=["catio3_md", "si_raman", "catio3"])
    p.add_argument("--redo", nargs="*", default=[])
    a = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    for name in a.only:
        cache = load_cache()
        if name in cache and name not in a.redo:
            print(f"{name}: cached")
            continue
        globals()[name](cache)
        save_cache(cache)


if __name__ == "__main__":
    main()
