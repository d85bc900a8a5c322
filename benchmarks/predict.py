"""Speed of the DOS predictor vs `atomvib phonons` with CHGNet on the same structures.

Measures (after the model is loaded): per-structure latency (one call per structure), a batch of
1000 crystals (the valid split repeated), peak resident memory, and the wall time of the MLIP route
(CHGNet phonons, relax=False, default supercell) on a few of the same structures. Prints ratios and
writes docs/benchmarks/predict.md.

    python benchmarks/predict.py [--n-mlip 3] [--n-batch 1000]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "petretto-dfpt"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-mlip", type=int, default=3)
    ap.add_argument("--n-batch", type=int, default=1000)
    ap.add_argument("--n-latency", type=int, default=50)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("ATOMVIB_THREADS", "2")))
    from atomvib.learn import load_model
    from atomvib.learn.data import read_petretto

    valid = read_petretto(DATA / "valid.jsonl.gz")
    structs = [s.structure for s in valid]
    t0 = time.perf_counter()
    model = load_model()
    t_load = time.perf_counter() - t0
    model.predict(structs[:2])  # warm-up (kernels, first e3nn call)
    lat = []
    for s in structs[: args.n_latency]:
        t = time.perf_counter()
        model.predict([s])
        lat.append(time.perf_counter() - t)
    batch = (structs * (args.n_batch // len(structs) + 1))[: args.n_batch]
    t = time.perf_counter()
    model.predict(batch)
    t_batch = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    import atomvib

    mlip = []
    for s in structs[: args.n_mlip]:
        t = time.perf_counter()
        atomvib.phonons(s.to_ase(), engine="chgnet", relax=False, mesh_density=50)
        mlip.append((s.formula, s.natoms, time.perf_counter() - t))
    per_pred = float(np.median(lat))
    rows = [f"| {f} ({n} atoms) | {w:.1f} s | {w / per_pred:.0f}× |" for f, n, w in mlip]
    load = os.getloadavg()[0]
    md = f"""## Direct DOS prediction (`atomvib predict`)

Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, threads
{torch.get_num_threads()}, load average {load:.1f} during the run (shared machine: absolute times are
pessimistic). Model: {model.n_members}-member ensemble, loaded in {t_load:.2f} s.

| measure | value | target |
|---|---|---|
| latency per structure (median of {len(lat)}, one call each) | {1000 * per_pred:.1f} ms | < 50 ms |
| {args.n_batch} structures in one batch | {t_batch:.1f} s ({1000 * t_batch / args.n_batch:.1f} ms each) | < 60 s |
| peak resident memory of the process | {peak_mb:.0f} MB | < 4 GB |

Against the MLIP route on the same crystals (`atomvib.phonons(..., engine="chgnet", relax=False)`,
default supercell, mesh density 50; the ratio is to the per-structure prediction latency):

| structure | CHGNet phonons | ratio |
|---|---|---|
{chr(10).join(rows)}
"""
    print(md)
    out = ROOT / "docs" / "benchmarks" / "predict.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)


if __name__ == "__main__":
    main()
