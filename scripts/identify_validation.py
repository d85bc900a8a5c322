"""Validation of `atomvib identify`: synthetic recovery on 20 structures, and the measured ARCS aluminium data.

Synthetic recovery. Each case takes one "true" structure, computes its spectrum with a different engine than the
one that ranks the candidates, distorts it as a measurement would be (a frequency scale drawn from ±5–10 %, extra
Gaussian broadening, a sloping background, counting noise with error bars), and asks `identify` to rank the true
structure's polymorphs and perturbed variants:

* 17 metal cases (Al, Cu, Ni, Ag, Au, Pd, Pt in fcc, bcc or hcp): the "measurement" from SevenNet-l3i5 phonons
  (the default MLIP, its own relaxation), alternately a VISION spectrum (5 K) and a 1D cut of an ARCS powder map (300 K,
  |Q| 3–9 Å⁻¹); the candidates are the element's fcc, bcc and hcp cells relaxed with EMT, plus two perturbed
  variants of the true polymorph (±5 % uniaxial strain along c at constant volume), ranked with EMT phonons
  (as given, no relaxation). The ARCS incident energy is ≈ 3× the highest phonon energy (as an experimenter
  would choose), the cut 0.1–0.9 Ei. A same-engine control (the measurement from EMT itself, same scale and
  noise) tells the engines' disagreement apart from the method's own failures;
* 3 DFT cases (NaCl, MgO, Si): the measurement from the DFT (VASP) force sets of phonopy's examples in the shared
  data, VISION at 5 K; the candidates are the DFT cell and three polymorphs (rocksalt, CsCl, zincblende,
  wurtzite; diamond, lonsdaleite, β-Sn), each relaxed and ranked with SevenNet-0 phonons.

Every case runs the full `identify` (first pass with the DOS predictor, second pass on the top 5). The recovery
rate, the confusion (true polymorph → polymorph ranked first), the probabilities and the fitted scales are written
to scripts/validation_cache/identify_validation.json and printed as the markdown tables of docs/identify.md.
Results are cached per case in scripts/validation_cache/identify/ (delete a file to recompute it).

The ARCS aluminium check: Al-iqe.h5 against fcc, bcc, hcp Al and fcc Cu, Ni (EMT, relaxed), figure
docs/figures/identify_al_arcs.png.

Usage: python scripts/identify_validation.py [--only metals|dft|al] [--cases N]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
from ase.build import bulk

import atomvib
from atomvib.identify import identify, read_candidates
from atomvib.settings import PhononSettings

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CACHE = ROOT / "scripts" / "validation_cache" / "identify"
OUT_JSON = ROOT / "scripts" / "validation_cache" / "identify_validation.json"
FIG = ROOT / "docs" / "figures"

#: EMT lattice parameters to start from (relaxed here with EMT); hcp with the ideal c/a
A_FCC = {"Al": 4.05, "Cu": 3.61, "Ni": 3.52, "Ag": 4.09, "Au": 4.08, "Pd": 3.89, "Pt": 3.92}
METAL_CASES = [(el, "fcc") for el in A_FCC] + [(el, "hcp") for el in ("Al", "Cu", "Ni", "Ag", "Au")] + \
    [(el, "bcc") for el in ("Al", "Cu", "Ni", "Pd", "Pt")]
DFT_CASES = {"NaCl": ("rocksalt", ["cesiumchloride", "zincblende", "wurtzite"]),
             "MgO": ("rocksalt", ["cesiumchloride", "zincblende", "wurtzite"]),
             "Si": ("diamond", ["lonsdaleite", "beta-Sn", "sh"])}

EMT = PhononSettings(engine="emt", relax=False, min_supercell_length_a=9.0, mesh_density=30.0)
#: ranks the DFT cases' candidates
MLIP = PhononSettings(engine="sevennet", min_supercell_length_a=9.0, mesh_density=30.0)
#: makes the metal cases' "measurements" (SevenNet-0 is no good for them: its Al LA branch is 25 % soft,
#: docs/compare.md; CHGNet's Al collapses)
MEASURE = PhononSettings(engine="sevennet:7net-l3i5", min_supercell_length_a=9.0, mesh_density=30.0)


def _polymorph(el: str, kind: str):
    a = A_FCC[el]
    vol = a**3 / 4
    if kind == "fcc":
        return bulk(el, "fcc", a=a)
    if kind == "bcc":
        return bulk(el, "bcc", a=(2 * vol) ** (1 / 3))
    ahcp = (vol * 4 / (np.sqrt(3) * np.sqrt(8 / 3))) ** (1 / 3)
    return bulk(el, "hcp", a=ahcp, c=ahcp * np.sqrt(8 / 3))


def _emt_relaxed(atoms):
    from ase.calculators.emt import EMT as EMTCalc
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    a = atoms.copy()
    a.calc = EMTCalc()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        BFGS(FrechetCellFilter(a), logfile=None).run(fmax=1e-4, steps=300)
    a.calc = None
    return a


def _strained(atoms, eps):
    """Uniaxial strain ε along the third cell vector's direction, −ε/2 across: volume kept to first order."""
    a = atoms.copy()
    F = np.diag([1 - eps / 2, 1 - eps / 2, 1 + eps])
    a.set_cell(a.cell.array @ F, scale_atoms=True)
    return a


def _distort(x, e, y, rng, scale, sigma_mev=0.6, peak_counts=3000.0):
    """Measured-like: frequencies × scale, extra Gaussian broadening, sloping background, Poisson-like noise.
    The broadening is done on a grid 6σ wider than ``x`` at each end (no edge effect at the ends of ``x``)."""
    step = float(x[1] - x[0]) / 2
    xf = np.arange(x[0] - 6 * sigma_mev, x[-1] + 6 * sigma_mev + step, step)
    yf = np.interp(xf / scale, e, y, left=0.0, right=0.0)
    half = int(np.ceil(5 * sigma_mev / step))
    k = np.exp(-0.5 * (np.arange(-half, half + 1) * step / sigma_mev) ** 2)
    ys = np.interp(x, xf, np.convolve(yf, k / k.sum(), mode="same"))
    ys = peak_counts * ys / ys.max() + 0.02 * peak_counts + 0.3 * x
    err = np.sqrt(ys)
    return ys + rng.normal(0, err), err


def _write(path, x, y, err):
    np.savetxt(path, np.column_stack([x, y, err]), delimiter=",", header="energy_meV,intensity,error", comments="")
    return path


def _ei(ph, scale: float) -> float:
    """The incident energy an experimenter would pick: about 3 × the highest phonon energy (meV), at least 20."""
    from atomvib.units import THZ_TO_MEV

    return float(max(20.0, round(3.0 * scale * ph.omega_max_thz * THZ_TO_MEV)))


def _measurement(ph, mode: str, rng, scale: float, path: Path, ei: float | None = None) -> Path:
    from atomvib.spectra.ins import direct_powder_map, indirect_spectrum

    if mode == "vision":
        s = indirect_spectrum(ph, "vision")
        e, y = s.energy_mev, s.intensity
        x = np.arange(3.0, 1.25 * scale * float(e[y > 1e-2 * y.max()][-1]), 0.25)
    else:
        ei = ei or _ei(ph, scale)
        m = direct_powder_map(ph, "arcs", ei, temperature_k=300.0, energy_range_mev=(0.5, 0.9 * ei), de_mev=0.1)
        e, y, _ = m.q_cut(3.0, 9.0)
        x = np.arange(0.1 * ei, 0.9 * ei, ei / 150)
    yy, err = _distort(x, e, y, rng, scale)
    return _write(path, x, yy, err)


def _summary(res, truth: str, scale: float, mode: str, seconds: float) -> dict:
    names = res.ranking()
    row = {c["name"]: c for c in res.candidates}
    # a candidate that is the same crystal as another is ranked as that one
    if row[truth]["status"].startswith("same structure as "):
        truth = row[truth]["status"][len("same structure as "):].split(":")[0]
    t = row[truth]
    first_pass = sorted((c for c in res.candidates if c["first_pass"]), key=lambda c: -c["first_pass"]["probability"])
    fp_rank = next((k + 1 for k, c in enumerate(first_pass) if c["name"] == truth), None)
    last = t["second_pass"] or t["first_pass"] or {}
    return {
        "truth": truth, "mode": mode, "scale": scale, "first": names[0], "rank": names.index(truth) + 1,
        "p_truth": t["probability"], "p_first": res.best["probability"], "first_pass_rank": fp_rank,
        "fitted_scale": last.get("frequency_scale"), "chi2_red": last.get("chi2_red"),
        "refined": sum(1 for c in res.candidates if c["second_pass"]), "early_stop": res.early_stop,
        "n_candidates": len(names), "seconds": seconds, "ranking": names,
        "probabilities": {c["name"]: c["probability"] for c in res.candidates},
    }


def metal_case(k: int, el: str, kind: str) -> dict:
    cache = CACHE / f"metal_{el}_{kind}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    rng = np.random.default_rng(100 + k)
    scale = float(1 + rng.choice([-1, 1]) * rng.uniform(0.05, 0.10))
    mode = "vision" if k % 2 == 0 else "arcs"
    work = CACHE / f"metal_{el}_{kind}"
    work.mkdir(parents=True, exist_ok=True)
    cands = {}
    for poly in ("fcc", "bcc", "hcp"):
        cands[f"{el}_{poly}"] = _emt_relaxed(_polymorph(el, poly))
    base = cands[f"{el}_{kind}"]
    if kind == "hcp":
        cands[f"{el}_{kind}_c+5%"] = _strained(base, 0.05)
        cands[f"{el}_{kind}_c-5%"] = _strained(base, -0.05)
    else:  # the cubic cells strained along the conventional c axis (= z)
        for eps, tag in ((0.05, "+"), (-0.05, "-")):
            a = base.copy()
            a.set_cell(a.cell.array @ np.diag([1 - eps / 2, 1 - eps / 2, 1 + eps]), scale_atoms=True)
            cands[f"{el}_{kind}_z{tag}5%"] = a
    for name, a in cands.items():
        a.write(str(work / f"{name}.cif"))
    t0 = time.perf_counter()
    ph = atomvib.phonons(_polymorph(el, kind), settings=MEASURE)  # the "measurement": its own relaxation
    meas = _measurement(ph, mode, rng, scale, work / "measured.csv")
    kw = {"instrument": "arcs", "ei_mev": _ei(ph, scale), "temperature_k": 300.0} if mode == "arcs" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = identify(meas, read_candidates(sorted(work.glob("*.cif"))), settings=EMT, top_k=5, **kw)
    res.save(work / "result", force=True)
    out = {"case": f"{el} {kind}", "group": kind, "engine_measured": "sevennet:7net-l3i5", "engine_ranked": "emt",
           "ei_mev": kw.get("ei_mev"),
           "measured_omega_max_thz": float(ph.omega_max_thz), "measured_has_imaginary": bool(ph.has_imaginary),
           **_summary(res, f"{el}_{kind}", scale, mode, time.perf_counter() - t0)}
    cache.write_text(json.dumps(out, indent=1))
    return out


def metal_control(k: int, el: str, kind: str) -> dict:
    """The same case with the measurement made by the ranking engine itself (EMT, the true candidate's own cell):
    what the method does when the calculation is exact, so that a failure above is the engines' disagreement."""
    cache = CACHE / f"control_{el}_{kind}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    case = metal_case(k, el, kind)
    rng = np.random.default_rng(100 + k)
    rng.choice([-1, 1]), rng.uniform(0.05, 0.10)  # the same draws as the case: same scale, then the noise
    work = CACHE / f"metal_{el}_{kind}"
    ph = atomvib.phonons(work / f"{el}_{kind}.cif", settings=EMT)
    meas = _measurement(ph, case["mode"], rng, case["scale"], work / "measured_control.csv", case["ei_mev"])
    kw = {"instrument": "arcs", "ei_mev": case["ei_mev"], "temperature_k": 300.0} if case["mode"] == "arcs" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = identify(meas, read_candidates(sorted(work.glob("*.cif"))), settings=EMT, top_k=5, **kw)
    names = res.ranking()
    out = {"case": case["case"], "first": names[0], "rank": names.index(f"{el}_{kind}") + 1,
           "p_truth": res.candidates[names.index(f"{el}_{kind}")]["probability"],
           "fitted_scale": (res.candidates[names.index(f"{el}_{kind}")]["second_pass"] or {}).get("frequency_scale")}
    cache.write_text(json.dumps(out, indent=1))
    return out


def _dft_polymorph(formula: str, kind: str, ref_atoms):
    from ase import Atoms

    vol = ref_atoms.get_volume() / len(ref_atoms) * 2  # per formula unit of 2 atoms
    if formula == "Si":
        if kind == "lonsdaleite":
            a = (vol * 2 / (np.sqrt(3) / 2 * np.sqrt(8 / 3))) ** (1 / 3)  # 4 atoms, ideal c/a
            c = a * np.sqrt(8 / 3)
            return bulk("SiSi", "wurtzite", a=a, c=c)
        if kind == "beta-Sn":
            # I4_1/amd, c/a 0.55, 2 atoms in the primitive cell, ~20 % denser than diamond
            v = vol * 0.8
            a = (4 * v / 2 / 0.55) ** (1 / 3)
            conv = Atoms("Si4", scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5), (0, 0.5, 0.25), (0.5, 0, 0.75)],
                         cell=[a, a, 0.55 * a], pbc=True)
            return conv
        if kind == "sh":
            a = (vol * 0.8 / 2 / 0.94 * 2 / np.sqrt(3)) ** (1 / 3)
            return Atoms("Si", cell=[[a, 0, 0], [-a / 2, a * np.sqrt(3) / 2, 0], [0, 0, 0.94 * a]], pbc=True)
    if kind == "cesiumchloride":
        return bulk(formula, "cesiumchloride", a=(0.95 * vol) ** (1 / 3))
    if kind == "zincblende":
        return bulk(formula, "zincblende", a=(4 * vol * 1.15) ** (1 / 3))
    if kind == "wurtzite":
        a = (vol * 1.15 * 2 / (np.sqrt(3) / 2 * 1.6)) ** (1 / 3)
        return bulk(formula, "wurtzite", a=a, c=1.6 * a)
    raise ValueError(kind)


def dft_case(k: int, formula: str) -> dict:
    from ase.io import read

    cache = CACHE / f"dft_{formula}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    rng = np.random.default_rng(200 + k)
    scale = float(1 + rng.choice([-1, 1]) * rng.uniform(0.05, 0.10))
    d = SHARED / "phonopy-examples" / ("Si-gruneisen-orig" if formula == "Si" else formula)
    work = CACHE / f"dft_{formula}"
    work.mkdir(parents=True, exist_ok=True)
    if formula == "Si":
        ph = atomvib.phonons(d / "POSCAR-unitcell", forces=d / "FORCE_SETS", supercell=(2, 2, 2), mesh_density=30)
    else:
        ph = atomvib.phonons(d / "phonopy_disp.yaml", forces=d / "FORCE_SETS", born=d / "BORN", mesh_density=30)
    meas = _measurement(ph, "vision", rng, scale, work / "measured.csv")
    truth_kind, others = DFT_CASES[formula]
    unit = read(str(d / "POSCAR-unitcell"), format="vasp")
    unit.write(str(work / f"{formula}_{truth_kind}.cif"))
    for kind in others:
        _dft_polymorph(formula, kind, unit).write(str(work / f"{formula}_{kind}.cif"))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = identify(meas, read_candidates(sorted(work.glob("*.cif"))), settings=MLIP, top_k=5)
    res.save(work / "result", force=True)
    out = {"case": f"{formula} {truth_kind}", "group": truth_kind, "engine_measured": "DFT (VASP force sets)",
           "engine_ranked": "sevennet (SevenNet-0)", **_summary(res, f"{formula}_{truth_kind}", scale, "vision",
                                                                time.perf_counter() - t0)}
    cache.write_text(json.dumps(out, indent=1))
    return out


def _label(name: str) -> str:
    """The polymorph of a candidate name (Al_fcc_z+5% → fcc z+5%)."""
    return name.split("_", 1)[1].replace("_", " ")


def al_arcs() -> dict:
    """Al-iqe.h5 against fcc, bcc, hcp Al and fcc Cu, Ni (EMT, relaxed): with the default flat background of a map
    (the figure), and with a sloping one."""
    iqe = SHARED / "ins-experiment" / "Al-iqe.h5"
    work = CACHE / "al_arcs"
    work.mkdir(parents=True, exist_ok=True)
    for name, a in {"Al_fcc": bulk("Al", "fcc", a=4.05), "Al_bcc": bulk("Al", "bcc", a=3.24),
                    "Al_hcp": bulk("Al", "hcp", a=2.86, c=4.67), "Cu_fcc": bulk("Cu", "fcc", a=3.61),
                    "Ni_fcc": bulk("Ni", "fcc", a=3.52)}.items():
        a.write(str(work / f"{name}.cif"))
    out = {}
    for label, fit in (("flat background (default)", None), ("sloping background", "scale,linear,broadening")):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = identify(iqe, read_candidates(sorted(work.glob("*.cif"))), ei_mev=80, temperature_k=300,
                           x_range=(10, 70), settings=PhononSettings(engine="emt", mesh_density=40.0), top_k=5,
                           fit=fit)
        secs = time.perf_counter() - t0
        if fit is None:
            FIG.mkdir(parents=True, exist_ok=True)
            res.plot(FIG / "identify_al_arcs.png", n=3)
        print(label)
        print(res.table())
        for n in res.notes:
            print("  note:", n)
        out[label] = {
            "ranking": res.ranking(), "seconds": secs, "notes": list(res.notes),
            "rows": [{"name": c["name"], "probability": c["probability"],
                      "p_first_pass": (c["first_pass"] or {}).get("probability"),
                      "frequency_scale": (c["second_pass"] or c["first_pass"])["frequency_scale"],
                      "chi2_red": (c["second_pass"] or c["first_pass"])["chi2_red"]} for c in res.candidates]}
    return out


#: Petretto polymorph cases: groups of one reduced formula with 2–5 crystals in train+valid, primitive cells of at
#: most this many atoms (the cost of the second pass), 20 groups drawn with a fixed seed; the other groups are the
#: development set on which the ranking settings were chosen
PETRETTO_MAX_SITES = 8
PETRETTO_CASES = 20
#: ranks the Petretto cases' candidates: identify's defaults (the default crystal engine, atoms relaxed in each
#: candidate's own cell)
RANKER = PhononSettings(relax_cell=False, min_supercell_length_a=9.0, mesh_density=30.0)
L3I5 = "sevennet:7net-l3i5"
#: the second-pass settings compared on every Petretto group (--only configs): name -> (settings, committee)
CONFIGS = {
    "l3i5-fixed-cell": (replace(RANKER, engine=L3I5), None, "none"),
    "l3i5-relaxed-cell": (replace(RANKER, engine=L3I5, relax_cell=True), None, "none"),
    "l3i5-as-given": (replace(RANKER, engine=L3I5, relax=False), None, "none"),
    "7net0-fixed-cell": (replace(RANKER, engine="sevennet:7net-0"), None, "none"),
    "mf0pbe-fixed-cell": (replace(RANKER, engine="sevennet:7net-mf-0:pbe"), None, "none"),
    "mf0r2scan-fixed-cell": (replace(RANKER, engine="sevennet:7net-mf-0:r2scan"), None, "none"),
    "chgnet-fixed-cell": (replace(RANKER, engine="chgnet"), None, "none"),
    "pool-fixed-cell": (RANKER, ("sevennet:7net-0", L3I5), "none"),
    "l3i5-fixed-cell-cli": (replace(RANKER, engine=L3I5, min_supercell_length_a=10.0, mesh_density=100.0), None, "none"),
    "l3i5-fixed-cell-13A": (replace(RANKER, engine=L3I5, min_supercell_length_a=13.0), None, "none"),
    "l3i5-fixed-cell-born": (replace(RANKER, engine=L3I5), None, "auto"),
    "pool-l3i5-chgnet": (RANKER, (L3I5, "chgnet"), "none"),
}
CONFIG_LABELS = {
    "l3i5-fixed-cell": "SevenNet-l3i5, atoms relaxed in the given cell (**default**)",
    "l3i5-relaxed-cell": "SevenNet-l3i5, cell and atoms relaxed (the default before)",
    "l3i5-as-given": "SevenNet-l3i5, the given structure as it is",
    "7net0-fixed-cell": "SevenNet-0, atoms relaxed in the given cell",
    "mf0pbe-fixed-cell": "SevenNet-MF-0 (PBE head), atoms relaxed in the given cell",
    "mf0r2scan-fixed-cell": "SevenNet-MF-0 (r2SCAN head), atoms relaxed in the given cell",
    "chgnet-fixed-cell": "CHGNet, atoms relaxed in the given cell",
    "pool-fixed-cell": "SevenNet-0 and l3i5 pooled (`--committee`), atoms relaxed in the given cell",
    "l3i5-fixed-cell-cli": "SevenNet-l3i5, atoms relaxed in the given cell, the CLI's supercell (10 Å) and mesh (100)",
    "l3i5-fixed-cell-13A": "SevenNet-l3i5, atoms relaxed in the given cell, 13 Å supercells",
    "l3i5-fixed-cell-born": "SevenNet-l3i5, atoms relaxed in the given cell, LO–TO splitting from learned Born charges (`--born auto`)",
    "pool-l3i5-chgnet": "SevenNet-l3i5 and CHGNet pooled (`--committee`), atoms relaxed in the given cell",
}


def _petretto_ok() -> list[list[dict]]:
    from atomvib.learn.data import petretto_records

    groups: dict[str, list[dict]] = {}
    for split in ("train", "valid"):
        for _, r in petretto_records(SHARED / "petretto-dfpt" / f"{split}.jsonl.gz"):
            groups.setdefault(r["formula"], []).append(r)
    return [g for f, g in sorted(groups.items()) if 2 <= len(g) <= 5
            and max(r["nsites"] for r in g) <= PETRETTO_MAX_SITES and any(not r["has_neg_freq"] for r in g)]


def _petretto_groups(ok=None) -> list[list[dict]]:
    """The 20 reported groups (seed 17)."""
    ok = ok if ok is not None else _petretto_ok()
    rng = np.random.default_rng(17)
    return [ok[i] for i in sorted(rng.choice(len(ok), size=min(PETRETTO_CASES, len(ok)), replace=False))]


def _petretto_dev(ok=None) -> list[list[dict]]:
    """The development groups: all the others."""
    ok = ok if ok is not None else _petretto_ok()
    drawn = {g[0]["formula"] for g in _petretto_groups(ok)}
    return [g for g in ok if g[0]["formula"] not in drawn]


def _petretto_draws(ok) -> dict:
    """{draw: (groups, first measurement seed, formula -> work directory)} for the reported and development draws."""
    return {"reported": (_petretto_groups(ok), 300, lambda f: CACHE / f"petretto_{f}"),
            "dev": (_petretto_dev(ok), 700, lambda f: CACHE / "petretto_dev" / f)}


def _petretto_measurement(group: list[dict], seed: int, work: Path) -> tuple[str, float]:
    """Write the group's crystals (CIF) and the "measured" DOS of one DFPT-stable member into ``work``: its DFPT
    phonon DOS (ABINIT, PBEsol) scaled by 5–10 %, broadened by 6 cm⁻¹, on a sloping background with counting noise
    and error bars, 20 cm⁻¹ up to 1.15 × the scaled band top in 2 cm⁻¹ bins. Returns (true candidate, scale)."""
    import io

    import spglib
    from ase.io import read

    formula = group[0]["formula"]
    meta = work / "truth.json"
    if meta.is_file() and (m := json.loads(meta.read_text())).get("seed") == seed:
        return m["truth"], m["scale"]
    rng = np.random.default_rng(seed)
    stable = [r for r in group if not r["has_neg_freq"]]
    truth = stable[int(rng.integers(len(stable)))]
    scale = float(1 + rng.choice([-1, 1]) * rng.uniform(0.05, 0.10))
    work.mkdir(parents=True, exist_ok=True)
    names = {}
    for r in group:
        a = read(io.StringIO(r["cif"]), format="cif")
        sg = spglib.get_spacegroup((a.cell.array, a.get_scaled_positions(), a.numbers), symprec=1e-3) or "P1"
        name = f"{formula}_{r['material_id']}_{sg.split(' ')[0].replace('/', '_')}"
        a.write(str(work / f"{name}.cif"))
        names[r["material_id"]] = name
    d = truth["dos"]
    y = np.asarray(d["states_per_cm1_per_cell"], float)
    e = d["freq_start_cm1"] + d["freq_step_cm1"] * np.arange(len(y))
    x = np.arange(20.0, 1.15 * scale * float(truth["band_max_cm1"]), 2.0)
    yy, err = _distort(x, e, y, rng, scale, sigma_mev=6.0)
    np.savetxt(work / "measured.csv", np.column_stack([x, yy, err]), delimiter=",",
               header="wavenumber_cm-1,dos,error", comments="")
    meta.write_text(json.dumps({"truth": names[truth["material_id"]], "scale": scale, "seed": seed}))
    return names[truth["material_id"]], scale


def _rank_petretto(work: Path, group, settings, committee=None, born="auto"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return identify(work / "measured.csv", read_candidates(sorted(work.glob("*.cif"))), kind="dos",
                        settings=settings, committee=committee, top_k=len(group), first_pass=False, born=born)


def petretto_case(k: int, group: list[dict]) -> dict:
    """One of the 20 reported polymorph groups of the Petretto DFPT set: the measurement is one DFPT-stable
    member's DFPT phonon DOS (:func:`_petretto_measurement`), the candidates every member of the group
    (imaginary-mode ones too: a user does not know), ranked with identify's defaults. No screening: the DOS
    predictor was trained on these crystals, so its first pass would be a leak; every candidate is refined."""
    formula = group[0]["formula"]
    cache = CACHE / f"petretto_{formula}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    work = CACHE / f"petretto_{formula}"
    truth, scale = _petretto_measurement(group, 300 + k, work)
    t0 = time.perf_counter()
    res = _rank_petretto(work, group, RANKER)
    res.save(work / "result", force=True)
    out = {"case": f"{formula} {truth.split('_', 1)[1]}", "group": formula,
           "engine_measured": "DFPT (Petretto, ABINIT PBEsol)",
           "engine_ranked": "default (sevennet:7net-l3i5), atoms relaxed in the given cell",
           "unstable_candidates": [c for c in sorted(p.stem for p in work.glob("*.cif"))
                                   if any(r["has_neg_freq"] and r["material_id"] in c for r in group)],
           **_summary(res, truth, scale, "dos", time.perf_counter() - t0)}
    cache.write_text(json.dumps(out, indent=1))
    return out


def petretto_configs(names=None) -> dict:
    """Every config of :data:`CONFIGS` on the 20 reported groups (their measurements) and the development groups
    (measurements with seeds 700 + k): {config: {"reported": [row], "dev": [row]}}, rows cached per config in
    scripts/validation_cache/identify/configs/."""
    ok = _petretto_ok()
    draws = _petretto_draws(ok)
    out = {}
    for name in names or CONFIGS:
        settings, committee, born = CONFIGS[name]
        path = CACHE / "configs" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        done = json.loads(path.read_text()) if path.is_file() else {}
        for draw, (groups, seed0, where) in draws.items():
            for k, g in enumerate(groups):
                key = f"{draw}:{g[0]['formula']}"
                if key in done:
                    continue
                work = where(g[0]["formula"])
                truth, scale = _petretto_measurement(g, seed0 + k, work)
                t0 = time.perf_counter()
                res = _rank_petretto(work, g, settings, committee, born)
                sm = _summary(res, truth, scale, "dos", time.perf_counter() - t0)
                done[key] = {k2: sm[k2] for k2 in ("truth", "first", "rank", "p_first", "p_truth", "n_candidates",
                                                   "seconds")}
                path.write_text(json.dumps(done, indent=1))
                print(name, key, "rank", sm["rank"], f"{sm['seconds']:.0f} s", flush=True)
        out[name] = {d: [v for k2, v in done.items() if k2.startswith(d + ":")] for d in draws}
    return out


def petretto_dfpt_control() -> dict:
    """The same cases ranked with a perfect engine: each candidate's own DFPT DOS (from the Petretto record, the
    source of the measurement) as its computed spectrum, fitted and scored exactly as identify does (same target,
    fit, scale prior, Birge factor and correlation length). It separates the method's limits from the engine's."""
    from atomvib.identify.candidates import duplicate_candidates
    from atomvib.identify.core import _compare, _target, probabilities
    from atomvib.spectra.measured import Spectrum1D

    ok = _petretto_ok()
    out = {}
    for draw, (groups, seed0, where) in _petretto_draws(ok).items():
        rows = []
        for k, g in enumerate(groups):
            work = where(g[0]["formula"])
            truth, _ = _petretto_measurement(g, seed0 + k, work)
            t = _target(work / "measured.csv", "dos", None, None, None, None, None, None, 1, None)
            t = replace(t, plausible=(float(np.exp(-0.45)), float(np.exp(0.45))))  # identify's, σ_s = 0.15
            fits, names = [], []
            for r in g:
                d = r["dos"]
                y = np.asarray(d["states_per_cm1_per_cell"], float)
                e = d["freq_start_cm1"] + d["freq_step_cm1"] * np.arange(len(y))
                fits.append(_compare(Spectrum1D(e, np.where(e > 0, y, 0.0), None, "cm-1"), t).fit)
                names.append(next(p.stem for p in work.glob("*.cif") if f"_{r['material_id']}_" in p.stem))
            pr = probabilities(fits)["probability"]
            # a crystal listed twice is one candidate, as in identify
            same = duplicate_candidates(read_candidates(sorted(work.glob("*.cif"))))
            first = names[int(np.argmax(pr))]
            rows.append({"group": g[0]["formula"], "truth": truth, "first": same.get(first, first),
                         "p_truth": float(sum(p for n, p in zip(names, pr) if same.get(n, n) == same.get(truth, truth))),
                         "same": same})
            if same.get(truth, truth) != truth and rows[-1]["first"] == same[truth]:
                rows[-1]["first"] = truth
        out[draw] = rows
    return out


def configs_table(res: dict) -> str:
    lines = ["| second pass | 20 reported groups | 50 development groups | all 70 | p(first) > 0.9: right |",
             "|---|---|---|---|---|"]
    for name, d in res.items():
        rep, dev = d["reported"], d["dev"]
        ok_r, ok_d = sum(r["rank"] == 1 for r in rep), sum(r["rank"] == 1 for r in dev)
        n = len(rep) + len(dev)
        sure = [r for r in rep + dev if r["p_first"] > 0.9]
        lines.append(f"| {CONFIG_LABELS[name]} | {ok_r} of {len(rep)} | {ok_d} of {len(dev)} | "
                     f"{ok_r + ok_d} of {n} ({100 * (ok_r + ok_d) / max(n, 1):.0f} %) | "
                     f"{sum(r['rank'] == 1 for r in sure)} of {len(sure)} |")
    return "\n".join(lines)


def petretto_table(cases: list[dict]) -> str:
    lines = ["| formula | true crystal | candidates | scale imposed | ranked first | p(first) | p(truth) | truth rank | "
             "fitted s |", "|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        fs = c["fitted_scale"]
        lines.append(f"| {c['group']} | {c['truth'].split('_', 1)[1]} | {c['n_candidates']} | {c['scale']:.3f} | "
                     f"{c['first'].split('_', 1)[1]} | {c['p_first']:.3g} | {c['p_truth']:.3g} | {c['rank']} | "
                     + (f"{fs[0]:.3f} ± {fs[1]:.3f} |" if fs and fs[1] is not None and np.isfinite(fs[1]) else "– |"))
    ok = sum(c["rank"] == 1 for c in cases)
    chance = float(np.mean([1.0 / c["n_candidates"] for c in cases]))
    lines.append(f"\nRecovered first: **{ok} of {len(cases)}** ({100 * ok / len(cases):.0f} %; chance "
                 f"{100 * chance:.0f} %). Mean p(truth) {np.mean([c['p_truth'] for c in cases]):.2f}.")
    return "\n".join(lines)


def tables(cases: list[dict]) -> str:
    lines = ["| case | measured with | spectrum | scale imposed | ranked first | p(first) | p(truth) | truth rank "
             "(first pass) | fitted s | control: rank, p(truth) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        fs = c["fitted_scale"]
        lines.append(f"| {c['case']} | {c['engine_measured'].split(' ')[0]} | {c['mode']} | {c['scale']:.3f} | "
                     f"{_label(c['first'])} | {c['p_first']:.3g} | {c['p_truth']:.3g} | {c['rank']} "
                     f"({c['first_pass_rank'] or '–'}) | {fs[0]:.3f} "
                     + (f"± {fs[1]:.3f} | " if fs[1] is not None and np.isfinite(fs[1]) else "(edge) | ")
                     + (f"{c['control']['rank']}, {c['control']['p_truth']:.3g} |" if c.get("control") else "– |"))
    ok = sum(c["rank"] == 1 for c in cases)
    lines.append(f"\nRecovered first: **{ok} of {len(cases)}** ({100 * ok / len(cases):.0f} %).")
    ctl = [c["control"] for c in cases if c.get("control")]
    if ctl:
        lines.append(f"Same-engine controls (metal cases measured with EMT itself): **{sum(c['rank'] == 1 for c in ctl)} "
                     f"of {len(ctl)}** recovered first.")
    groups = sorted({c["group"] for c in cases})
    cols = sorted({_label(c["first"]).split(" ")[0] if c["rank"] == 1 else _label(c["first"]) for c in cases})
    lines.append("\nConfusion (rows: true polymorph; columns: the candidate ranked first):\n")
    lines.append("| true \\ first | " + " | ".join(cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for g in groups:
        cnt = {col: 0 for col in cols}
        for c in cases:
            if c["group"] == g:
                cnt[_label(c["first"]).split(" ")[0] if c["rank"] == 1 else _label(c["first"])] += 1
        lines.append(f"| {g} | " + " | ".join(str(cnt[col]) or "" for col in cols) + " |")
    return "\n".join(lines)


def polymorphs_only(cases: list[dict]) -> list[dict]:
    """The same cases ranked among the polymorphs alone (no strained variants): the probabilities recomputed
    from the saved second-pass fits (a fit does not depend on the other candidates)."""
    from atomvib.identify import probabilities

    out = []
    for c in cases:
        d = CACHE / ("metal_" + c["case"].replace(" ", "_") if c["engine_ranked"] == "emt"
                     else "dft_" + c["case"].split(" ")[0]) / "result"
        res = atomvib.load(d)
        refined = {r["name"] for r in res.candidates if r["second_pass"]}
        names = [n for n in res.fits if "%" not in n and n in refined]
        if c["truth"] not in names or len(names) < 2:
            continue
        pr = probabilities([res.fits[n] for n in names], scale_prior=res.settings["scale_prior"])
        k = int(np.argmax(pr["probability"]))
        out.append({"case": c["case"], "first": names[k], "p_first": float(pr["probability"][k]),
                    "p_truth": float(pr["probability"][names.index(c["truth"])]), "ok": names[k] == c["truth"]})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=("metals", "dft", "al", "petretto", "configs"))
    ap.add_argument("--cases", type=int, default=None, help="only the first N metal cases")
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), help="with --only configs: these only")
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    out = json.loads(OUT_JSON.read_text()) if OUT_JSON.is_file() else {}
    if args.only in (None, "al") and (SHARED / "ins-experiment" / "Al-iqe.h5").is_file():
        out["al_arcs"] = al_arcs()
    if args.only in (None, "petretto") and (SHARED / "petretto-dfpt" / "train.jsonl.gz").is_file():
        pc = []
        for k, g in enumerate(_petretto_groups()):
            pc.append(petretto_case(k, g))
            print(pc[-1]["case"], "→", pc[-1]["first"], f"p={pc[-1]['p_truth']:.3g}", f"{pc[-1]['seconds']:.0f} s",
                  flush=True)
        out["petretto"] = pc
        out["petretto_table"] = petretto_table(pc)
        print(out["petretto_table"])
    if args.only in (None, "configs") and (SHARED / "petretto-dfpt" / "train.jsonl.gz").is_file():
        # --configs runs a subset: the others keep their rows (cached per config in any case)
        cr = {**out.get("petretto_configs", {}), **petretto_configs(args.configs)}
        cr = {k: cr[k] for k in CONFIGS if k in cr}
        out["petretto_configs"] = cr
        ctl = petretto_dfpt_control()
        out["petretto_dfpt_control"] = ctl
        out["petretto_configs_table"] = configs_table(cr) + "\n" + (
            "| control: each candidate's own DFPT DOS (a perfect engine) | "
            + " | ".join(f"{sum(r['first'] == r['truth'] for r in ctl[d])} of {len(ctl[d])}" for d in ctl)
            + f" | {sum(r['first'] == r['truth'] for d in ctl for r in ctl[d])} of "
            f"{sum(len(v) for v in ctl.values())} | – |")
        print(out["petretto_configs_table"])
    cases = []
    if args.only in (None, "metals", "dft"):
        if args.only in (None, "dft"):
            for k, f in enumerate(DFT_CASES):
                cases.append(dft_case(k, f))
                print(cases[-1]["case"], "→", cases[-1]["first"], f"p={cases[-1]['p_truth']:.3g}", flush=True)
        if args.only in (None, "metals"):
            for k, (el, kind) in enumerate(METAL_CASES[: args.cases]):
                cases.append(metal_case(k, el, kind))
                cases[-1]["control"] = metal_control(k, el, kind)
                print(cases[-1]["case"], "→", cases[-1]["first"], f"p={cases[-1]['p_truth']:.3g}", flush=True)
        out["synthetic"] = cases
        out["tables"] = tables(cases)
        poly = polymorphs_only(cases)
        out["polymorphs_only"] = poly
        ok = sum(p["ok"] for p in poly)
        out["tables"] += (f"\n\nAmong the polymorphs alone (strained variants left out): **{ok} of {len(poly)}** "
                          "recovered first.\n\n| case | ranked first | p(first) | p(truth) |\n|---|---|---|---|\n"
                          + "\n".join(f"| {p['case']} | {_label(p['first'])} | {p['p_first']:.3g} | "
                                       f"{p['p_truth']:.3g} |" for p in poly))
        print(out["tables"])
        nacl = CACHE / "dft_NaCl" / "result"
        if nacl.is_dir():
            atomvib.load(nacl).plot(FIG / "identify_nacl_dft.png", n=3)
    from atomvib.results import _json_safe

    OUT_JSON.write_text(json.dumps(_json_safe(out), indent=1, allow_nan=False))


if __name__ == "__main__":
    main()
