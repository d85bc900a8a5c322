"""Benchmark: ``atomvib batch`` (Dask + provenance store) against the plain loop it replaces.

The reference is what a user writes by hand: ``for f in files: atomvib.phonons(f); write_result(...)``
in one process. The same structures then run through :func:`atomvib.batch.run_batch` with 1 and 2
Dask worker processes (LocalCluster, one thread each), then once more to time a re-run that finds
everything done. Store overhead per task is the time of the store calls the driver makes for one
calculation (plan, claim, finish; measured on a fresh SQLite file with the same number of rows),
relative to the mean task time of the run.

Structures: EMT fcc metals (Al, Cu, Ni, Au, Ag, Pd, Pt) with lattice constants scaled 0.97–1.03, so
every one is a distinct crystal; CHGNet: the same cells with CHGNet (all elements covered).
Writes docs/benchmarks/batch.md.

Usage: python benchmarks/batch.py [--n-emt 200] [--n-chgnet 50]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

for _k in ("ATOMVIB_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("PYTHONWARNINGS", "ignore")

import numpy as np  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.io import write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METALS = {"Al": 4.05, "Cu": 3.61, "Ni": 3.52, "Au": 4.08, "Ag": 4.09, "Pd": 3.89, "Pt": 3.92}


def make_inputs(d: Path, n: int) -> list[Path]:
    files = []
    scales = np.linspace(0.97, 1.03, int(np.ceil(n / len(METALS))))
    for s in scales:
        for el, a in METALS.items():
            if len(files) == n:
                return files
            p = d / f"{el}_{s:.4f}.cif"
            write(p, bulk(el, "fcc", a=a * s))
            files.append(p)
    return files


def plain_loop(files, settings, out: Path) -> float:
    import atomvib
    from atomvib.output import write_result

    t0 = time.perf_counter()
    for f in files:
        r = atomvib.phonons(str(f), settings=settings)
        d = out / f.stem
        d.mkdir(parents=True, exist_ok=True)
        write_result(r, d, plot=False)
    return time.perf_counter() - t0


def store_overhead(n: int, tmp: Path) -> float:
    """Seconds of store work per calculation (the driver's plan + claim + finish calls)."""
    from atomvib.store import Store

    tmp.mkdir(parents=True, exist_ok=True)
    s = Store(tmp / "overhead.db")
    recs = [
        {
            "hash": f"h{i}",
            "formula": "Cu",
            "natoms": 1,
            "kind": "crystal",
            "source": f"{i}.cif",
            "spacegroup": "",
            "extxyz": "x" * 300,
        }
        for i in range(n)
    ]
    calcs = [
        {
            "key": f"k{i}",
            "structure_hash": f"h{i}",
            "task": "phonons",
            "engine": "emt",
            "engine_version": "1",
            "settings_digest": "d",
            "settings_json": "{}" * 200,
            "source": f"{i}.cif",
        }
        for i in range(n)
    ]
    t0 = time.perf_counter()
    s.add_structures(recs)
    s.plan(calcs)
    run = s.start_run()
    keys = s.claim([c["key"] for c in calcs], run)
    for k in keys:
        s.finish(
            k,
            run,
            "done",
            seconds=1.0,
            omega_max_thz=8.0,
            has_imaginary=False,
            summary_json={"a": list(range(50))},
        )
    s.end_run(run)
    return (time.perf_counter() - t0) / n


def bench(label, engine, n, settings, tmp: Path, loop: bool) -> dict:
    from atomvib.batch import run_batch

    inp = tmp / f"in_{label}"
    inp.mkdir()
    files = make_inputs(inp, n)
    row = {"label": label, "engine": engine, "n": len(files), "load_before": os.getloadavg()[0]}
    if loop:
        row["loop_s"] = plain_loop(files, settings, tmp / f"loop_{label}")
    for w in (1, 2):
        db = tmp / f"{label}_{w}.db"
        t0 = time.perf_counter()
        s = run_batch(files, settings=settings, db=db, workers=w)
        row[f"w{w}_s"] = time.perf_counter() - t0
        assert s.done == len(files), s.describe()
        if w == 2:
            from atomvib.store import Store

            row["task_mean_s"] = float(Store(db).calculations()["seconds"].mean())
            t0 = time.perf_counter()
            again = run_batch(files, settings=settings, db=db, workers=w)
            row["rerun_s"] = time.perf_counter() - t0
            assert again.already_done == len(files)
            # a task added to the finished batch: ins reads the finished phonons, computes none
            t0 = time.perf_counter()
            added = run_batch(files, tasks=["phonons", "ins"], settings=settings, db=db, workers=w)
            row["added_ins_s"] = time.perf_counter() - t0
            assert added.done == len(files) and added.already_done == len(files), added.describe()
            row["ins_mean_s"] = float(Store(db).calculations(task="ins")["seconds"].mean())
            # another mesh: new phonons rows, forces from the checkpoint (no engine call)
            remesh = dataclasses.replace(settings, mesh_density=2 * settings.mesh_density)
            t0 = time.perf_counter()
            again = run_batch(files, settings=remesh, db=db, workers=w)
            row["remesh_s"] = time.perf_counter() - t0
            assert again.done == len(files), again.describe()
            df = Store(db).calculations(task="phonons")
            row["remesh_task_s"] = float(df["seconds"].iloc[len(files):].mean())
    row["overhead_s"] = store_overhead(len(files), tmp / label)
    print(row, flush=True)
    row["load_after"] = os.getloadavg()[0]
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-emt", type=int, default=200)
    ap.add_argument("--n-chgnet", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "batch.md"))
    args = ap.parse_args()
    from atomvib.settings import PhononSettings

    common = {"relax": False, "min_supercell_length_a": 5.0, "mesh_density": 5.0}
    tmp = Path(tempfile.mkdtemp(prefix="atomvib-bench-batch-"))
    rows = []
    try:
        rows.append(bench("emt", "emt", args.n_emt, PhononSettings(engine="emt", **common), tmp, loop=True))
        if args.n_chgnet:
            rows.append(
                bench(
                    "chgnet",
                    "chgnet",
                    args.n_chgnet,
                    PhononSettings(engine="chgnet", **common),
                    tmp,
                    loop=True,
                )
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [
        "## Batches (`atomvib batch`)",
        "",
        f"Machine: {os.cpu_count()} cores shared with other jobs (load average shown; scaling is depressed when it exceeds the cores). "
        "Phonons of one-atom fcc cells, 2×2×2 supercell, mesh density 5, no relaxation. "
        "'plain loop' = `atomvib.phonons` + `write_result` in one process, no Dask, no database.",
        "",
        "| engine | structures | plain loop (s) | batch 1 worker (s) | batch 2 workers (s) | speed-up 2 vs 1 | store overhead / task | re-run all done (s) | + ins on the finished batch (s; per ins row) | other mesh (s; per phonons row) | load avg before/after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sp = r["w1_s"] / r["w2_s"]
        ov = r["overhead_s"] / r["task_mean_s"] * 100
        lines.append(
            f"| {r['engine']} | {r['n']} | {r.get('loop_s', float('nan')):.1f} | {r['w1_s']:.1f} | {r['w2_s']:.1f} | {sp:.2f}× | "
            f"{r['overhead_s'] * 1e3:.1f} ms ({ov:.2f} % of {r['task_mean_s']:.2f} s) | {r['rerun_s']:.2f} | "
            f"{r['added_ins_s']:.1f}; {r['ins_mean_s']:.2f} | {r['remesh_s']:.1f}; {r['remesh_task_s']:.2f} | "
            f"{r['load_before']:.1f}/{r['load_after']:.1f} |"
        )
        print(
            f"{r['engine']}: n={r['n']} loop {r.get('loop_s', 0):.1f} s, 1 worker {r['w1_s']:.1f} s, 2 workers {r['w2_s']:.1f} s "
            f"(speed-up {sp:.2f}x, batch/loop {r['w1_s'] / r.get('loop_s', np.nan):.2f}), store {ov:.2f} % per task, re-run {r['rerun_s']:.2f} s"
        )
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
