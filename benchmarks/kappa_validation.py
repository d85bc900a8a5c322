"""Validation of ``atomvib.kappa``: MLIP κ against DFT κ and experiment (a), defaults chosen by measurement (b).

(a) κ(300 K), RTA, of Si, AlN, MgO and NaCl with atomvib's engines against DFT κ from the shared phono3py
    examples (Si PBEsol, AlN LDA; computed here by atomvib from the DFT files on the same mesh) and experiment;
    polar crystals without NAC (MLIPs have no Born charges) and with the DFT BORN files where the shared data
    has one that fits the MLIP-relaxed primitive cell. κ with isotope scattering off and on: each MLIP/DFT κ is
    one phono3py RTA run with ``isotope=True``; the isotope-free κ of the same run follows exactly from
    phono3py's mode κ, which is ∝ 1/(Γ_ph-ph + Γ_iso) (one RTA per setting instead of two; checked against a
    separate ``isotope=False`` run of Si: part (b)'s default run).
(b) Si with the default engine: κ(300 K, 19³ mesh, RTA, no isotope) vs fc3 supercell, displacement amplitude,
    pair cutoff, symfc with 20/50/100 snapshots, and the q mesh (11, 15, 19, 23).

Results are cached in ``scripts/validation_cache/kappa_validation.json`` after every run (a re-run skips what is
there; ``--redo ID`` recomputes one); forces in ``/tmp/kv/<crystal>_<engine>_<variant>`` (atomvib's force
checkpoint: a re-run with another mesh, isotope setting or BORN computes no force). Every run's wall time and
``r.timings`` are recorded; a one-line log goes to ``/tmp/kv/walltimes.log``.

Usage::

    ATOMVIB_THREADS=1 OMP_NUM_THREADS=1 nice python benchmarks/kappa_validation.py --part a --engines sevennet:7net-l3i5
    ATOMVIB_THREADS=1 OMP_NUM_THREADS=1 nice python benchmarks/kappa_validation.py --part b
    python benchmarks/kappa_validation.py --part report      # markdown tables + docs/figures/kappa_validation.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
P3 = SHARED / "phono3py-examples"
CACHE = ROOT / "scripts" / "validation_cache" / "kappa_validation.json"
CKPT = Path(os.environ.get("KV_CHECKPOINTS", "/tmp/kv"))
FIGURE = ROOT / "docs" / "figures" / "kappa_validation.png"
DEFAULT_ENGINE = "sevennet:7net-l3i5"
ENGINES = (DEFAULT_ENGINE, "sevennet", "chgnet")
T = 300.0

# experiment at 300 K, natural isotopes, W/(m K): value, range, source
EXPERIMENT = {
    "Si": (
        152.0,
        (148.0, 156.0),
        "Glassbrenner & Slack, Phys. Rev. 134, A1058 (1964): 156; "
        "Touloukian et al., TPRC vol. 1 (1970) / Shanks et al. Phys. Rev. 130, 1743 "
        "(1963): ≈148",
    ),
    "AlN": (
        285.0,
        (285.0, 285.0),
        "Slack, Tanzilli, Pohl & Vandersande, J. Phys. Chem. Solids 48, 641 (1987): "
        "285 (single crystal, extrapolated to zero oxygen)",
    ),
    "MgO": (
        55.0,
        (53.0, 60.0),
        "Slack, Phys. Rev. 126, 427 (1962); Touloukian et al., TPRC vol. 2 (1970): ≈55–60",
    ),
    "NaCl": (
        7.0,
        (6.5, 7.1),
        "Håkansson & Andersson, J. Phys. Chem. Solids 47, 355 (1986): 7.1; "
        "Touloukian et al., TPRC vol. 2 (1970): 6.5–7",
    ),
}
# DFT references: phono3py's own numbers from the example READMEs (for the fidelity check of the DFT path)
DFT_README = {
    "Si": "124.4 (19³ mesh, RTA, phono3py README)",
    "AlN": "κ_xx 251.2, κ_zz 233.4 (finite differences, NAC, --mesh 40 = 15×15×8, phono3py README)",
}
BORN = {
    "AlN": P3 / "AlN-LDA" / "BORN",
    "MgO": SHARED / "phonopy-examples" / "MgO" / "BORN",
    "NaCl": SHARED / "phonopy-examples" / "NaCl" / "BORN",
}
# the element of each symmetry-independent atom in the order the BORN file lists their charges (cation first:
# the DFT cells list it first and its Z* is positive in each file)
BORN_ORDER = {"AlN": ["Al", "N"], "MgO": ["Mg", "O"], "NaCl": ["Na", "Cl"]}
MESH = {"Si": (19, 19, 19), "MgO": (19, 19, 19), "NaCl": (19, 19, 19), "AlN": (15, 15, 8)}
AlN_CUTOFF = 4.0

_LAST_TC = {}


def _log(msg: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    print(line, flush=True)
    CKPT.mkdir(parents=True, exist_ok=True)
    with open(CKPT / "walltimes.log", "a") as fh:
        fh.write(line + "\n")


# ------------------------------------------------------------------------------------------------ cache
def load_cache() -> dict:
    if CACHE.is_file():
        return json.loads(CACHE.read_text())
    return {"runs": {}}


def save_cache(cache: dict) -> None:
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    tmp = CACHE.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
    tmp.replace(CACHE)


# ------------------------------------------------------------------------------------------------ helpers
def _patch_phono3py() -> None:
    """Keep phono3py's last conductivity object (its Γ_isotope and mode κ): the benchmark's own bookkeeping,
    the library is not changed."""
    from phono3py import Phono3py

    if getattr(Phono3py.run_thermal_conductivity, "_kv_patched", False):
        return
    orig = Phono3py.run_thermal_conductivity

    def wrapped(self, *a, **k):
        out = orig(self, *a, **k)
        _LAST_TC["tc"] = self.thermal_conductivity
        return out

    wrapped._kv_patched = True
    Phono3py.run_thermal_conductivity = wrapped


def _no_isotope_from_last() -> np.ndarray | None:
    """κ (6,) at the first temperature without isotope scattering, from the last RTA run that had it: phono3py's
    mode κ is C·v⊗v/(2Γ_eff)·const with Γ_eff = Γ_ph-ph + Γ_iso, so each mode is rescaled by Γ_eff/Γ_ph-ph."""
    tc = _LAST_TC.get("tc")
    if tc is None or getattr(tc, "gamma_isotope", None) is None:
        return None
    g = np.asarray(tc.gamma)[0, 0]  # (ngp, nb)
    gi = np.asarray(tc.gamma_isotope)[0]
    mk = np.asarray(tc.mode_kappa)[0, 0]  # (ngp, nb, 6)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(g > 0, (g + gi) / g, 0.0)
    n = int(np.sum(tc.grid_weights))
    return (mk * scale[..., None]).sum(axis=(0, 1)) / n


class _dataset_cutoff:
    """Within the block, the DFT force sets are used as a run with ``cutoff_pair_a`` would have made them: pairs
    farther apart than the cutoff marked not included and their forces zeroed before phono3py builds fc3 (what
    phono3py does with the cells it never generated). A benchmark-only patch of atomvib's fc builder, undone
    on exit; it lets the DFT κ show what the MLIP runs' pair cutoff costs."""

    n_included = None

    def __init__(self, cutoff: float):
        self.cutoff = cutoff

    def __enter__(self):
        import copy

        from atomvib.anharmonic import phono3py_files

        self._mod = phono3py_files
        self._orig = orig = phono3py_files.produce_force_constants
        cutoff = self.cutoff

        def patched(ph3, fc_calculator="traditional"):
            ds = copy.deepcopy(ph3.dataset)
            ds["cutoff_distance"] = cutoff
            n = 0
            for fa in ds["first_atoms"]:
                n += 1
                for sa in fa["second_atoms"]:
                    sa["included"] = bool(sa["pair_distance"] < cutoff)
                    n += sa["included"]
                    if not sa["included"]:
                        sa["forces"] = np.zeros_like(np.asarray(sa["forces"]))
            _dataset_cutoff.n_included = n
            ph3.dataset = ds
            return orig(ph3, fc_calculator)

        phono3py_files.produce_force_constants = patched
        return self

    def __exit__(self, *exc):
        self._mod.produce_force_constants = self._orig
        return False


def structure(crystal: str):
    from ase.build import bulk

    if crystal == "Si":
        p = ROOT / "examples" / "Si.cif"
        return str(p) if p.is_file() else bulk("Si", "diamond", a=5.43)
    if crystal == "MgO":
        return bulk("MgO", "rocksalt", a=4.21)
    if crystal == "NaCl":
        return bulk("NaCl", "rocksalt", a=5.64)
    if crystal == "AlN":
        return bulk("AlN", "wurtzite", a=3.11, c=4.98)
    raise ValueError(crystal)


def _short(engine: str) -> str:
    return engine.replace("sevennet:", "").replace(":", "_") if engine != "sevennet" else "sevennet0"


def born_fits(crystal: str, r) -> tuple[bool, str]:
    """Does the DFT BORN file fit the MLIP-relaxed primitive cell (independent atoms in the file's order)?"""
    ph3 = r.force_constants.phono3py()
    prim = ph3.phonon_primitive
    from phonopy.structure.symmetry import Symmetry

    sym = Symmetry(prim, symprec=r.force_constants.symprec)
    indep = [prim.symbols[i] for i in sym.get_independent_atoms()]
    want = BORN_ORDER[crystal]
    ok = indep == want
    return ok, f"independent atoms of the relaxed primitive cell {indep}, BORN lists {want}"


def _record(r, wall: float, **extra) -> dict:
    k = np.asarray(r.kappa_at(T), float)
    fc = r.force_constants
    rec = {
        "kappa_voigt": k.tolist(),
        "kappa_avg": float(np.mean(k[:3])),
        "mesh": list(r.mesh),
        "n_cells": int(r.n_displacements),
        "supercell_atoms": int(fc.n_supercell_atoms),
        "fc3_supercell": np.asarray(fc.supercell_matrix).tolist(),
        "nac": fc.nac is not None,
        "timings": {k_: round(float(v), 2) for k_, v in r.timings.items()},
        "wall_s": round(wall, 1),
        "n_ignored_modes": int(np.asarray(r.n_ignored_modes)[0]),
        "negative_linewidths": bool(r.has_negative_linewidths),
        "min_frequency_thz": float(np.nanmin(r.frequencies_thz)),
        "lattice_a": float(np.linalg.norm(np.asarray(r.structure.cell)[0])),
        "settings": {
            k_: v
            for k_, v in r.settings.to_dict().items()
            if k_
            in (
                "method",
                "fc3_min_length_a",
                "fc3_supercell",
                "displacement_a",
                "cutoff_pair_a",
                "fc_calculator",
                "n_snapshots",
                "isotope",
                "mesh",
            )
        },
    }
    if r.settings.isotope:
        rec["kappa_voigt_iso"] = rec["kappa_voigt"]
        rec["kappa_avg_iso"] = rec["kappa_avg"]
        k0 = _no_isotope_from_last()
        if k0 is not None:
            rec["kappa_voigt"] = k0.tolist()
            rec["kappa_avg"] = float(np.mean(k0[:3]))
            rec["kappa_noiso_from"] = "rescaled mode κ of the isotope run"
    rec.update(extra)
    return rec


def run_one(cache: dict, rid: str, fn, redo=()) -> dict | None:
    if rid in cache["runs"] and rid not in redo and "error" not in cache["runs"][rid]:
        return cache["runs"][rid]
    _log(f"start {rid}")
    t0 = time.perf_counter()
    try:
        rec = fn(t0)
    except Exception as exc:  # noqa: BLE001 — recorded, the next run goes on
        tb = traceback.format_exc().strip().splitlines()
        rec = {
            "error": f"{type(exc).__name__}: {exc}",
            "traceback_tail": tb[-6:],
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        _log(f"FAILED {rid}: {rec['error']}")
    cache["runs"][rid] = rec
    save_cache(cache)
    _log(
        f"done {rid}: wall {rec.get('wall_s')} s, κ_avg {rec.get('kappa_avg')} (iso {rec.get('kappa_avg_iso')}), "
        f"cells {rec.get('n_cells')}, timings {rec.get('timings')}"
    )
    return rec


def _kappa(inp, t0, **kw):
    import atomvib

    r = atomvib.kappa(inp, temperatures_k=(T,), **kw)
    return r, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------ part a
def part_a(cache: dict, engines, redo=(), crystals=("Si", "AlN", "MgO", "NaCl"), dft=True, nac=True) -> None:
    _patch_phono3py()
    if dft:
        if "Si" in crystals:

            def si_dft(t0):
                r, w = _kappa(
                    str(P3 / "Si-PBEsol" / "phono3py_disp.yaml"),
                    t0,
                    forces=str(P3 / "Si-PBEsol" / "FORCES_FC3"),
                    mesh=MESH["Si"],
                    isotope=True,
                )
                return _record(r, w, crystal="Si", engine="DFT (PBEsol)", reference_readme=DFT_README["Si"])

            run_one(cache, "a:Si:DFT", si_dft, redo)
        if "AlN" in crystals:
            for with_born in (True, False):

                def aln_dft(t0, with_born=with_born):
                    d = P3 / "AlN-LDA"
                    r, w = _kappa(
                        str(d / "phono3py_disp.yaml"),
                        t0,
                        forces=str(d / "FORCES_FC3.xz"),
                        born=str(d / "BORN") if with_born else None,
                        mesh=MESH["AlN"],
                        isotope=True,
                    )
                    return _record(
                        r, w, crystal="AlN", engine="DFT (LDA)", reference_readme=DFT_README["AlN"]
                    )

                run_one(cache, f"a:AlN:DFT:{'nac' if with_born else 'nonac'}", aln_dft, redo)
        if "AlN" in crystals:

            def aln_dft_cut(t0):
                d = P3 / "AlN-LDA"
                with _dataset_cutoff(AlN_CUTOFF):
                    r, w = _kappa(
                        str(d / "phono3py_disp.yaml"),
                        t0,
                        forces=str(d / "FORCES_FC3.xz"),
                        mesh=MESH["AlN"],
                        isotope=True,
                    )
                return _record(
                    r,
                    w,
                    crystal="AlN",
                    engine="DFT (LDA)",
                    dft_cutoff_pair_a=AlN_CUTOFF,
                    n_cells_within_cutoff=_dataset_cutoff.n_included,
                )

            run_one(cache, f"a:AlN:DFT-cutoff{AlN_CUTOFF:g}:nonac", aln_dft_cut, redo)
    for engine in engines:
        for crystal in crystals:
            ck = CKPT / f"{crystal}_{_short(engine)}"
            extra = {"cutoff_pair_a": AlN_CUTOFF} if crystal == "AlN" else {}

            def mlip(t0, crystal=crystal, engine=engine, ck=ck, extra=extra):
                r, w = _kappa(
                    structure(crystal),
                    t0,
                    engine=engine,
                    mesh=MESH[crystal],
                    isotope=True,
                    checkpoint_dir=str(ck),
                    **extra,
                )
                rec = _record(r, w, crystal=crystal, engine=engine)
                if crystal in BORN:
                    rec["born_fits"], rec["born_check"] = born_fits(crystal, r)
                return rec

            base = run_one(cache, f"a:{crystal}:{engine}:nonac", mlip, redo)
            if not nac or crystal not in BORN or base is None or "error" in base:
                continue
            if not base.get("born_fits"):
                _log(f"skip NAC for {crystal} {engine}: {base.get('born_check')}")
                continue

            def mlip_nac(t0, crystal=crystal, engine=engine, ck=ck, extra=extra):
                r, w = _kappa(
                    structure(crystal),
                    t0,
                    engine=engine,
                    mesh=MESH[crystal],
                    isotope=True,
                    checkpoint_dir=str(ck),
                    born=str(BORN[crystal]),
                    **extra,
                )
                return _record(
                    r, w, crystal=crystal, engine=engine, born=str(BORN[crystal].relative_to(SHARED.parent))
                )

            run_one(cache, f"a:{crystal}:{engine}:nac", mlip_nac, redo)


# ------------------------------------------------------------------------------------------------ part b
# the fc3 variants are compared on the 11³ mesh (RTA there costs ~10 s instead of ~2 min on 19³, the forces are
# the same); the default and the 128-atom supercell also on 19³ (the mesh the default gives), which checks
# that the 11³ differences carry over
B_VARIANTS = [
    # id, checkpoint variant, kappa() keywords
    ("default", "", {}),
    ("mesh11", "", {"mesh": (11, 11, 11)}),
    ("mesh15", "", {"mesh": (15, 15, 15)}),
    ("disp0.01@11", "_d0.01", {"displacement_a": 0.01, "mesh": (11, 11, 11)}),
    ("disp0.05@11", "_d0.05", {"displacement_a": 0.05, "mesh": (11, 11, 11)}),
    # 0.01 Å with the default symprec (1e-3 Å) gives a corrupted fc3 (phono3py's site-symmetry test of the
    # displacement direction uses the tolerance): the same displacements with symprec 1e-5
    (
        "disp0.01-symprec1e-5@11",
        "_d0.01_sp5",
        {"displacement_a": 0.01, "symprec": 1e-5, "mesh": (11, 11, 11)},
    ),
    ("cutoff5@11", "_c5", {"cutoff_pair_a": 5.0, "mesh": (11, 11, 11)}),
    ("cutoff4@11", "_c4", {"cutoff_pair_a": 4.0, "mesh": (11, 11, 11)}),
    ("cutoff3@11", "_c3", {"cutoff_pair_a": 3.0, "mesh": (11, 11, 11)}),
    ("symfc20@11", "_s20", {"fc_calculator": "symfc", "n_snapshots": 20, "mesh": (11, 11, 11)}),
    ("symfc50@11", "_s50", {"fc_calculator": "symfc", "n_snapshots": 50, "mesh": (11, 11, 11)}),
    ("symfc100@11", "_s100", {"fc_calculator": "symfc", "n_snapshots": 100, "mesh": (11, 11, 11)}),
    ("sc444prim@11", "_sc444", {"fc3_supercell": (4, 4, 4), "mesh": (11, 11, 11)}),
    ("sc444prim", "_sc444", {"fc3_supercell": (4, 4, 4)}),
    ("mesh23", "", {"mesh": (23, 23, 23)}),
]


def count_cells(crystal: str, **kw) -> tuple[int, int]:
    """(cells, supercell atoms) of a plan without any force (the relaxation is skipped: counts only)."""
    from atomvib.anharmonic.displacements3 import plan_fc3
    from atomvib.settings import KappaSettings
    from atomvib.workflow import load_input

    s = load_input(structure(crystal)).primitive(1e-5)
    plan = plan_fc3(s, KappaSettings(**kw), symprec=1e-5)
    return plan.n_displacements, plan.n_supercell_atoms


def part_b(cache: dict, engine=DEFAULT_ENGINE, redo=(), only=None, max_force_min=30.0) -> None:
    _patch_phono3py()
    for vid, ck_suffix, kw in B_VARIANTS:
        if only and vid not in only:
            continue
        kw = dict(kw)
        rid = f"b:Si:{engine}:{vid}"
        if vid.startswith("sc444prim") and rid not in cache["runs"]:
            n, na = count_cells("Si", **kw)
            # seconds per 64-atom cell from the runs that computed forces (a run from the checkpoint did not)
            rates = [
                r["timings"]["forces"] / r["n_cells"]
                for k, r in cache["runs"].items()
                if k.startswith(f"b:Si:{engine}:") and r.get("timings", {}).get("forces", 0) > 1.0
            ]
            per_cell = (max(rates) if rates else 1.0) * na / 64 * 1.3
            est = n * per_cell / 60
            _log(
                f"sc444prim: {n} cells of {na} atoms, ≈ {est:.1f} min of forces (from the default run's rate)"
            )
            if est > max_force_min:
                kw["cutoff_pair_a"] = 5.0
                ck_suffix += "_c5"
                _log(f"sc444prim: over {max_force_min:g} min: with cutoff_pair_a 5.0")
        mesh = kw.pop("mesh", MESH["Si"])
        iso = kw.pop("isotope", False)

        def fn(t0, kw=kw, mesh=mesh, iso=iso, ck_suffix=ck_suffix):
            r, w = _kappa(
                structure("Si"),
                t0,
                engine=engine,
                mesh=mesh,
                isotope=iso,
                checkpoint_dir=str(CKPT / f"Si_{_short(engine)}{ck_suffix}"),
                **kw,
            )
            return _record(r, w, crystal="Si", engine=engine, variant=kw)

        run_one(cache, rid, fn, redo)


# ------------------------------------------------------------------------------------------------ report
def parse_id(rid: str) -> tuple[str, str, str]:
    """'a:AlN:sevennet:7net-l3i5:nac' → ('AlN', 'sevennet:7net-l3i5', 'nac'); 'a:Si:DFT' → ('Si', 'DFT', '')."""
    parts = rid.split(":")
    nac = parts[-1] if parts[-1] in ("nac", "nonac") else ""
    return parts[1], ":".join(parts[2 : len(parts) - (1 if nac else 0)]), nac


def sre(a: float, b: float) -> float:
    return 2 * abs(a - b) / (a + b)


def report(cache: dict) -> str:
    runs = cache["runs"]
    out = []
    ok = {k: v for k, v in runs.items() if "error" not in v}
    out.append("### (a) κ(300 K), RTA, W/(m·K): trace average (xx, zz for AlN)\n")
    out.append(
        "| crystal | source | NAC | mesh | cells (atoms) | κ no isotope | κ isotope | wall s | timings s |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|")
    for rid, r in sorted(ok.items()):
        if not rid.startswith("a:"):
            continue
        crystal, engine, nac = parse_id(rid)
        kv, kvi = r["kappa_voigt"], r.get("kappa_voigt_iso", r["kappa_voigt"])
        fmt = (
            (lambda k, avg: f"{avg:.1f} ({k[0]:.1f}, {k[2]:.1f})")
            if crystal == "AlN"
            else (lambda k, avg: f"{avg:.1f}")
        )
        out.append(
            f"| {crystal} | {engine} | {'yes' if r['nac'] else 'no'} | {'×'.join(map(str, r['mesh']))} | "
            f"{r['n_cells']} ({r['supercell_atoms']}) | {fmt(kv, r['kappa_avg'])} | "
            f"{fmt(kvi, r.get('kappa_avg_iso', float('nan')))} | {r['wall_s']} | "
            + ", ".join(f"{k} {v:.0f}" for k, v in r["timings"].items())
            + " |"
        )
    out.append(
        "\n### SRE per crystal and SRME (κ_tot trace-average form, not Póta et al.'s mode-resolved one)\n"
    )
    out.append("| engine | NAC | vs | " + " | ".join(("Si", "AlN", "MgO", "NaCl")) + " | SRME | crystals |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    engines = sorted({parse_id(k)[1] for k in ok if k.startswith("a:") and "DFT" not in k})
    for engine in engines:
        has_nac = any(f"a:{c}:{engine}:nac" in ok for c in BORN)
        for nac_mode in ("nonac", "nac") if has_nac else ("nonac",):
            for vs in ("DFT", "exp"):
                cells = []
                vals = []
                for crystal in ("Si", "AlN", "MgO", "NaCl"):
                    r = (
                        ok.get(f"a:{crystal}:{engine}:{nac_mode}")
                        if crystal in BORN
                        else ok.get(f"a:{crystal}:{engine}:nonac")
                    )
                    if vs == "DFT":
                        ref = ok.get(f"a:{crystal}:DFT") or ok.get(f"a:{crystal}:DFT:{nac_mode}")
                        v = sre(r["kappa_avg"], ref["kappa_avg"]) if r and ref else None
                    else:
                        v = sre(r["kappa_avg_iso"], EXPERIMENT[crystal][0]) if r else None
                    cells.append("–" if v is None else f"{v:.3f}")
                    if v is not None:
                        vals.append(v)
                out.append(
                    f"| {engine} | {'DFT BORN' if nac_mode == 'nac' else 'none'} | {vs} | "
                    + " | ".join(cells)
                    + f" | {np.mean(vals):.3f} | {len(vals)} |"
                    if vals
                    else f"| {engine} | {nac_mode} | {vs} |" + " – |" * 6
                )
    base = []
    for crystal in ("Si", "AlN"):
        ref = ok.get(f"a:{crystal}:DFT") or ok.get(f"a:{crystal}:DFT:nac")
        if ref:
            base.append((crystal, sre(ref["kappa_avg_iso"], EXPERIMENT[crystal][0])))
    if base:
        out.append(
            "\nDFT (RTA, isotope on) against experiment: "
            + ", ".join(f"{c} SRE {v:.3f}" for c, v in base)
            + f"; mean {np.mean([v for _, v in base]):.3f}"
        )
    out.append(
        "\n### (b) Si convergence (default engine, no isotope; Δ against the default settings on the same mesh)\n"
    )
    out.append("| variant | cells | supercell atoms | κ | Δ vs default | wall s | timings s |")
    out.append("|---|---|---|---|---|---|---|")
    by_mesh = {
        tuple(r["mesh"]): r
        for k, r in ok.items()
        if k.startswith("b:") and (k.endswith(":default") or k.split(":")[-1].startswith("mesh"))
    }
    order = {v[0]: i for i, v in enumerate(B_VARIANTS)}
    brows = sorted((k for k in ok if k.startswith("b:")), key=lambda k: order.get(k.split(":")[-1], 99))
    for rid in brows:
        r = ok[rid]
        is_mesh = rid.split(":")[-1].startswith("mesh")
        d0 = by_mesh.get((19, 19, 19)) if is_mesh else by_mesh.get(tuple(r["mesh"]))
        delta = f"{100 * (r['kappa_avg'] / d0['kappa_avg'] - 1):+.1f} %" if d0 else ""
        out.append(
            f"| {rid.split(':')[-1]} {r.get('variant') or ''} mesh {'×'.join(map(str, r['mesh']))} | "
            f"{r['n_cells']} | {r['supercell_atoms']} | {r['kappa_avg']:.1f} | {delta} | {r['wall_s']} | "
            + ", ".join(f"{k} {v:.0f}" for k, v in r["timings"].items())
            + " |"
        )
    errs = {k: v for k, v in runs.items() if "error" in v}
    if errs:
        out.append("\n### failed\n")
        for k, v in errs.items():
            out.append(f"- {k}: {v['error']}")
    return "\n".join(out)


def figure(cache: dict, path=FIGURE) -> None:
    from matplotlib.figure import Figure

    ok = {k: v for k, v in cache["runs"].items() if "error" not in v and k.startswith("a:")}
    fig = Figure(figsize=(10, 4.6), dpi=130)
    axes = fig.subplots(1, 2)
    markers = {
        "sevennet:7net-l3i5": ("o", "C0", "SevenNet-l3i5"),
        "sevennet": ("s", "C1", "SevenNet-0"),
        "chgnet": ("^", "C2", "CHGNet"),
    }
    crystals = ("Si", "AlN", "MgO", "NaCl")
    lo, hi = 0.5, 600
    for ax, (ref_kind, title) in zip(
        axes, (("dft", "vs DFT (no isotope)"), ("exp", "vs experiment (isotope on)"))
    ):
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=1)
        ax.fill_between([lo, hi], [lo / 1.5, hi / 1.5], [lo * 1.5, hi * 1.5], color="0.9", lw=0)
        for engine, (m, c, label) in markers.items():
            first = True
            for crystal in crystals:
                for nac in ("nonac", "nac"):
                    r = ok.get(f"a:{crystal}:{engine}:{nac}")
                    if r is None:
                        continue
                    if ref_kind == "dft":
                        dft = ok.get(f"a:{crystal}:DFT") or ok.get(f"a:{crystal}:DFT:{nac}")
                        if dft is None:
                            continue
                        x, y = dft["kappa_avg"], r["kappa_avg"]
                    else:
                        x, y = EXPERIMENT[crystal][0], r["kappa_avg_iso"]
                    ax.scatter(
                        [x],
                        [y],
                        marker=m,
                        s=46,
                        facecolor=c if nac == "nac" or crystal == "Si" else "none",
                        edgecolor=c,
                        label=label if first else None,
                        zorder=3,
                    )
                    first = False
                    if engine == DEFAULT_ENGINE and nac == "nonac":
                        ax.annotate(crystal, (x, y), textcoords="offset points", xytext=(6, -10), fontsize=8)
        if ref_kind == "exp":  # the DFT κ (isotope on) against experiment: what RTA + the functional give
            for j, crystal in enumerate(("Si", "AlN")):
                dft = ok.get(f"a:{crystal}:DFT") or ok.get(f"a:{crystal}:DFT:nac")
                if dft:
                    ax.scatter(
                        [EXPERIMENT[crystal][0]],
                        [dft["kappa_avg_iso"]],
                        marker="x",
                        s=50,
                        color="k",
                        label="DFT (shared files)" if j == 0 else None,
                        zorder=4,
                    )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("κ reference, W/(m·K)")
        ax.set_ylabel("κ atomvib (MLIP), W/(m·K)")
        ax.set_title(title, fontsize=10)
        ax.legend(
            fontsize=8,
            loc="upper left",
            title="open: no NAC; filled: DFT BORN (Si: no NAC)",
            title_fontsize=7,
        )
    fig.suptitle("atomvib kappa, 300 K, RTA (grey band: within a factor 1.5)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("a", "b", "report"), required=True)
    ap.add_argument("--engines", nargs="+", default=[DEFAULT_ENGINE])
    ap.add_argument("--crystals", nargs="+", default=["Si", "AlN", "MgO", "NaCl"])
    ap.add_argument("--no-dft", action="store_true", help="(a): skip the DFT-file runs")
    ap.add_argument("--no-nac", action="store_true", help="(a): skip the runs with the DFT BORN files")
    ap.add_argument("--only", nargs="+", help="(b): these variants only")
    ap.add_argument("--redo", nargs="+", default=[], help="run ids to recompute")
    args = ap.parse_args(argv)
    cache = load_cache()
    if args.part == "a":
        part_a(
            cache,
            args.engines,
            set(args.redo),
            tuple(args.crystals),
            dft=not args.no_dft,
            nac=not args.no_nac,
        )
    elif args.part == "b":
        part_b(cache, args.engines[0], set(args.redo), args.only)
    else:
        print(report(cache))
        figure(cache)
        print(f"figure: {FIGURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
