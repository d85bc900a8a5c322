"""Thermal conductivity: atomvib's force stage vs the plain phono3py + ASE loop, and κ end to end.

1. Force stage, side by side in one process, same engine, same displaced supercells: phono3py's fc3 displacements
   of a 128-atom Si supercell (4×4×4 primitive cells) through the engine's stock ASE calculator one at a time
   (``atoms.calc = calc; atoms.get_forces()``, torch's default threads: what a user writes by hand) against
   ``atomvib``'s path (``plan_fc3(...).supercells()`` → ``evaluate_forces``: graph reuse, fused kernels, the
   worker pool where it pays). The first ``--cells`` displaced cells both ways (the per-cell cost is what
   matters; the full set has over a thousand). Reported: time per cell both ways, ratio, largest force
   difference.
2. κ of Si from the shared DFT files (phono3py's example, 2×2×2 conventional fc3, 111 cells) on the 19³ mesh, RTA,
   300 K: ``atomvib kappa`` against ``phono3py.load`` + ``run_thermal_conductivity`` (the reference tool on the
   same files), wall time of each and the κ difference.
3. κ of Si end to end with an engine (default: atomvib's crystal default): relaxation, 111 fc3 cells, fc2/fc3, the
   19³ mesh RTA at 300 K; wall time per stage and peak resident memory (a fresh process).

Usage::

    python benchmarks/kappa.py [--engine sevennet:7net-l3i5] [--cells 16] [--md docs/benchmarks/kappa.md]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "phono3py-examples" / "Si-PBEsol"
sys.path.insert(0, str(ROOT / "benchmarks"))


def _si_plan():
    from ase.build import bulk

    from atomvib.anharmonic.displacements3 import plan_fc3
    from atomvib.settings import KappaSettings
    from atomvib.structure import Structure

    s = Structure.from_ase(bulk("Si", "diamond", a=5.45), source="bulk Si")
    return plan_fc3(s, KappaSettings(fc3_supercell=(4, 4, 4)), symprec=1e-5)


def bench_forces(spec: str, n_cells: int) -> dict:
    from phonons import stock_calculator  # benchmarks/phonons.py: the engine's own ASE calculator

    from atomvib.engines import get_engine
    from atomvib.workflow import evaluate_forces

    plan = _si_plan()
    cells = plan.supercells()[:n_cells]
    eng = get_engine(spec)
    eng.load()
    calc = stock_calculator(spec.split(":")[0], eng)
    # warm both (first calls compile kernels / build caches)
    a = cells[0].copy()
    a.calc = calc
    a.get_forces()
    evaluate_forces(eng, cells[:1], "warm", None, False)
    t0 = time.perf_counter()
    plain = []
    for c in cells:
        c = c.copy()
        c.calc = calc
        plain.append(c.get_forces())
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = evaluate_forces(eng, cells, "bench", None, False)
    t_fast = time.perf_counter() - t0
    return {
        "engine": spec, "supercell_atoms": plan.n_supercell_atoms, "cells_timed": len(cells),
        "cells_total": plan.n_displacements, "plain_s_per_cell": t_plain / len(cells),
        "atomvib_s_per_cell": t_fast / len(cells), "speedup": t_plain / t_fast,
        "max_force_diff_eV_per_A": float(np.abs(np.array(plain) - fast).max()),
        "kernel_path": eng.info.kernel_path,
    }  # fmt: skip


def bench_dft_files(mesh=(19, 19, 19)) -> dict:
    import phono3py

    import atomvib

    t0 = time.perf_counter()
    r = atomvib.kappa(DATA / "phono3py_disp.yaml", forces=DATA / "FORCES_FC3", mesh=mesh, temperatures_k=(300.0,))
    t_av = time.perf_counter() - t0
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ph3 = phono3py.load(str(DATA / "phono3py_disp.yaml"), forces_fc3_filename=str(DATA / "FORCES_FC3"),
                            log_level=0)
        ph3.mesh_numbers = list(mesh)
        ph3.init_phph_interaction()
        ph3.run_thermal_conductivity(temperatures=[300.0])
    t_p3 = time.perf_counter() - t0
    k_p3 = float(ph3.thermal_conductivity.kappa[0, 0, 0])
    return {"mesh": list(mesh), "atomvib_s": t_av, "phono3py_s": t_p3, "ratio": t_av / t_p3,
            "kappa_atomvib": float(r.kappa_at(300.0)[0]), "kappa_phono3py": k_p3,
            "rel_diff": abs(float(r.kappa_at(300.0)[0]) - k_p3) / k_p3}


_E2E = """
import json, resource, time, sys
import atomvib
t0 = time.perf_counter()
r = atomvib.kappa(sys.argv[1], engine=sys.argv[2], mesh=(19, 19, 19), temperatures_k=(300.0,))
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": wall, "timings": r.timings, "kappa_300": r.kappa_at(300.0)[:3].tolist(),
                  "n_displacements": r.n_displacements, "engine": r.engine.describe(),
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
"""


def bench_end_to_end(spec: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _E2E, str(ROOT / "examples" / "Si.cif"), spec],
                         capture_output=True, text=True, check=True, env=os.environ.copy())
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(rows: dict) -> str:
    f, d, e = rows["forces"], rows["dft"], rows["e2e"]
    load = os.getloadavg()[0]
    lines = [
        "## Thermal conductivity (`atomvib kappa`; `python benchmarks/kappa.py`)",
        "",
        f"Machine: {os.cpu_count()} cores, torch threads {os.environ.get('ATOMVIB_THREADS', 'default')}, load "
        f"average {load:.1f} at the end (a shared machine: read the ratios).",
        "",
        "Force stage, Si fc3 displacements in a 128-atom supercell, one process, same model weights "
        "(plain loop: phono3py displacements → the package's ASE calculator one cell at a time):",
        "",
        "| engine | cells timed (of) | plain loop (s/cell) | atomvib (s/cell) | speed-up | max |ΔF| (eV/Å) | kernel path |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in f:
        lines.append(f"| {r['engine']} | {r['cells_timed']} ({r['cells_total']}) | {r['plain_s_per_cell']:.3f} | "
                     f"{r['atomvib_s_per_cell']:.3f} | **{r['speedup']:.1f}×** | {r['max_force_diff_eV_per_A']:.1e} | "
                     f"{r['kernel_path']} |")
    lines += [
        "",
        f"κ of Si from phono3py's DFT files (111 cells), {'×'.join(map(str, d['mesh']))} mesh, RTA, 300 K: atomvib "
        f"{d['atomvib_s']:.1f} s, phono3py {d['phono3py_s']:.1f} s (ratio {d['ratio']:.2f}); κ {d['kappa_atomvib']:.3f} "
        f"vs {d['kappa_phono3py']:.3f} W/m-K (relative difference {d['rel_diff']:.1e}).",
        "",
        f"κ of Si end to end with `{e['engine']}` (examples/Si.cif: relaxation, {e['n_displacements']} fc3 cells of "
        f"64 atoms, fc2/fc3, 19×19×19 mesh RTA at 300 K): **{e['wall_s']:.0f} s** wall in a fresh process "
        f"(stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in e["timings"].items()) + f"), peak resident memory "
        f"{e['peak_rss_gb']:.2f} GB; κ_xx(300 K) = {e['kappa_300'][0]:.1f} W/m-K.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="sevennet:7net-l3i5")
    ap.add_argument("--force-engines", nargs="+", default=["sevennet", "sevennet:7net-l3i5"])
    ap.add_argument("--cells", type=int, default=16)
    ap.add_argument("--md", default=str(ROOT / "docs" / "benchmarks" / "kappa.md"))
    a = ap.parse_args(argv)
    rows = {"forces": [bench_forces(s, a.cells) for s in a.force_engines]}
    print(json.dumps(rows["forces"], indent=1), flush=True)
    rows["dft"] = bench_dft_files()
    print(json.dumps(rows["dft"], indent=1), flush=True)
    rows["e2e"] = bench_end_to_end(a.engine)
    print(json.dumps(rows["e2e"], indent=1), flush=True)
    md = markdown(rows)
    Path(a.md).write_text(md)
    print(md)
    print("peak RSS of this process:", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, "GB")


if __name__ == "__main__":
    main()
