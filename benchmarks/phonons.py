"""Force stage of a phonon calculation: atomvib vs the plain phonopy + ASE loop, side by side.

The plain loop is what tools such as INSPIRED do: phonopy generates the displaced supercells, each goes
through the engine's ASE calculator one at a time (``atoms.calc = calc; atoms.get_forces()``) with
torch's default thread pool, in one process. atomvib runs ``plan_displacements(...).supercells()`` →
``engine.evaluate`` (graph reused across displaced cells, energy+forces only, model called directly),
which on a multi-core CPU hands enough cells to a pool of worker processes with one torch thread each
(engines/parallel.py). Same model weights, same supercells, same 0.01 Å displacements. Loading the
model in this process is outside both timings (both load it once); starting the worker pool and
loading the model in each worker is inside atomvib's time (the pool is closed before each repeat).
"atomvib, 1 process" is the same path with ``ATOMVIB_WORKERS=1``: what the pool itself buys.

Reported per engine and case: wall time of both (minimum of ``--repeat`` runs: the machine is shared),
the ratio, the largest force difference between the two paths, and on the low-symmetry case the share
of the 1-process path's wall time spent inside the model's own call (forward + autograd forces). Peak
RSS of a fresh process evaluating a 256-atom supercell with CHGNet is measured in a subprocess, both
ways, and for the pool the largest worker's peak too.

Usage::

    python benchmarks/phonons.py [--engines sevennet chgnet] [--repeat 3] [--max-cells 0] [--md docs/benchmarks/phonons.md]
    python benchmarks/phonons.py --per-call [--json scripts/validation_cache/per_call.json]   # every bundled engine
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
LOWSYM_ID = "mp-36066"  # PNO, Cc (No. 9), 6 atoms: 144-atom supercell, 18 displacements
MEMORY_ID = "mp-30988"  # KBiO2, C2/c, 8 atoms: 4×4×2 = 256-atom supercell


def _petretto_atoms(material_id: str):
    from pymatgen.core import Structure as PmgStructure
    from pymatgen.io.ase import AseAtomsAdaptor

    path = DATA / "petretto-dfpt" / "valid.jsonl.gz"
    with gzip.open(path, "rt") as fh:
        for line in fh:
            row = json.loads(line)
            if row["material_id"] == material_id:
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return AseAtomsAdaptor.get_atoms(PmgStructure.from_str(row["cif"], fmt="cif")), row[
                        "formula"
                    ]
    raise SystemExit(f"{material_id} not in {path}")


def cases() -> list[tuple[str, object]]:
    from ase.build import bulk

    from atomvib.structure import Structure

    out = [
        ("Si (Fd-3m)", Structure.from_ase(bulk("Si", "diamond", a=5.431))),
        ("NaCl (Fm-3m)", Structure.from_ase(bulk("NaCl", "rocksalt", a=5.64))),
    ]
    if (DATA / "petretto-dfpt" / "valid.jsonl.gz").is_file():
        atoms, formula = _petretto_atoms(LOWSYM_ID)
        out.append((f"{formula} (Cc, {LOWSYM_ID})", Structure.from_ase(atoms)))
    else:
        print(f"# {DATA} not found: low-symmetry case skipped", file=sys.stderr)
    return out


def plain_loop(structure, calc, threads: int, displacement_a: float, smat, max_cells=None) -> np.ndarray:
    """phonopy + ASE, one displaced supercell at a time through the ASE calculator."""
    import torch
    from ase import Atoms
    from phonopy import Phonopy

    from atomvib.harmonic.force_constants import to_phonopy_atoms

    torch.set_num_threads(threads)
    ph = Phonopy(to_phonopy_atoms(structure), supercell_matrix=smat, primitive_matrix="auto")
    ph.generate_displacements(distance=displacement_a)
    forces = []
    for sc in ph.supercells_with_displacements[:max_cells]:
        atoms = Atoms(numbers=sc.numbers, positions=sc.positions, cell=sc.cell, pbc=True)
        # ASE calculators return cached results for atoms equal to the last ones: a repeated run
        # (or a case with one displacement) would time nothing. Real tools meet each cell once.
        calc.reset()
        atoms.calc = calc
        forces.append(np.array(atoms.get_forces()))
    return np.stack(forces)


def atomvib_path(structure, engine, settings, max_cells=None):
    """atomvib's force stage: displacement plan → supercells → engine.evaluate."""
    from atomvib.harmonic.displacements import plan_displacements

    _pin_atomvib_threads()
    plan = plan_displacements(structure, settings)
    return np.stack([e.forces for e in engine.evaluate(plan.supercells()[:max_cells])]), plan


def stock_calculator(name: str, engine):
    """The package's own ASE calculator, as a plain loop would build it (SevenNet: the same checkpoint and head,
    without atomvib's e3nn kernel rewrite, engines/graph_rewrite.py; CHGNet's model is not rewritten, so shared)."""
    if name.startswith("sevennet"):
        import warnings

        from sevenn.calculator import SevenNetCalculator

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return SevenNetCalculator(engine._weights_file(), device="cpu", modal=engine.head)
    return engine.calculator()


def _pin_atomvib_threads():
    import torch

    from atomvib.runtime import torch_threads

    torch.set_num_threads(torch_threads())


def _reset_graph_cache(engine):
    # each repeat starts cold, as a new structure would: no graph, no worker pool
    for attr in ("_verlet", "_ref"):
        if hasattr(engine, attr):
            setattr(engine, attr, None)
    if hasattr(engine, "close_pool"):
        engine.close_pool()


def _workers_env(value: str | None):
    """Set (or unset, for None) ATOMVIB_WORKERS; returns the previous value."""
    old = os.environ.get("ATOMVIB_WORKERS")
    if value is None:
        os.environ.pop("ATOMVIB_WORKERS", None)
    else:
        os.environ["ATOMVIB_WORKERS"] = value
    return old


class ModelTimer:
    """Accumulates wall time inside ``model.__call__`` (forward + autograd forces)."""

    def __init__(self, model):
        self.model, self.total = model, 0.0
        self._orig = model.forward

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return self._orig(*a, **k)
            finally:
                self.total += time.perf_counter() - t0

        model.forward = timed

    def close(self):
        del self.model.forward  # back to the class method


def bench_engine(name: str, repeat: int, plain_threads: int, max_cells: int | None) -> list[dict]:
    import torch

    from atomvib.engines import get_engine
    from atomvib.runtime import torch_threads
    from atomvib.settings import PhononSettings

    engine = get_engine(name)
    calc = engine.calculator()
    plain_calc = stock_calculator(name, engine)
    settings = PhononSettings(engine=name, relax=False)
    rows = []
    for label, structure in cases():
        lowsym = "Cc" in label
        n = max_cells if lowsym else None  # the low-symmetry case times its first cells only
        t_av, t_plain, t_one, shares = [], [], [], []
        f_av = f_plain = f_one = plan = None
        workers = 0
        for _ in range(repeat):
            # atomvib as a user runs it: worker pool where it pays (ATOMVIB_WORKERS as in the environment)
            _reset_graph_cache(engine)
            t0 = time.perf_counter()
            f_av, plan = atomvib_path(structure, engine, settings, n)
            t_av.append(time.perf_counter() - t0)
            pool = getattr(engine, "_pool", None)
            workers = pool.workers + 1 if pool is not None and pool.alive else 1  # + this process
            _reset_graph_cache(engine)
            # atomvib in one process (ATOMVIB_WORKERS=1), with the share of time inside the model
            old = _workers_env("1")
            try:
                timer = ModelTimer(calc.model)
                t0 = time.perf_counter()
                f_one, _ = atomvib_path(structure, engine, settings, n)
                t_one.append(time.perf_counter() - t0)
                timer.close()
            finally:
                _workers_env(old)
            shares.append((t_one[-1], timer.total / t_one[-1]))
            dp = settings.displacement_a
            t0 = time.perf_counter()
            f_plain = plain_loop(structure, plain_calc, plain_threads, dp, plan.supercell_matrix, n)
            t_plain.append(time.perf_counter() - t0)
        row = {
            "engine": name,
            "case": label,
            "n_supercell_atoms": plan.n_supercell_atoms,
            "n_displacements": plan.n_displacements,
            "n_timed": len(f_av),
            "atomvib_s": min(t_av),
            "workers": workers,
            "atomvib_1proc_s": min(t_one),
            "plain_s": min(t_plain),
            "ratio": min(t_plain) / min(t_av),
            "ratio_1proc": min(t_plain) / min(t_one),
            "max_force_diff_eV_per_A": float(np.abs(f_av - f_plain).max()),
            "max_force_diff_pool_vs_1proc": float(np.abs(f_av - f_one).max()),
            "model_share": min(shares)[1] if lowsym else None,
            "threads_atomvib": torch_threads(),
            "threads_plain": plain_threads,
            "load_after": os.getloadavg()[0],
        }
        _reset_graph_cache(engine)  # stop the workers: the next case/engine starts cold
        torch.set_num_threads(torch_threads())
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _timed_calls(engine, cell, repeat):
    engine._evaluate_here([cell])  # warm-up (graph cached, kernels touched)
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        ev = engine._evaluate_here([cell])[0]
        ts.append(time.perf_counter() - t0)
    return min(ts), ev.forces


def rewrite_ab(threads_list=(1, 2), repeat: int = 3) -> list[dict]:
    """SevenNet-0 force call on the first displaced Cc supercell: stock model, the model after
    engines/graph_rewrite.py without the fused kernels, and with them (engines/fused_tp.py), in one
    process with the same graph; minimum of ``repeat`` calls each."""
    import torch

    from atomvib.engines.graph_rewrite import optimise_model
    from atomvib.engines.mlip import SevenNetEngine
    from atomvib.harmonic.displacements import plan_displacements
    from atomvib.settings import PhononSettings

    structure = [s for label, s in cases() if "Cc" in label]
    if not structure:
        return []
    cell = plan_displacements(structure[0], PhononSettings(relax=False)).supercells()[0]
    rows = []
    for threads in threads_list:
        torch.set_num_threads(threads)
        times, forces = {}, {}
        for variant in ("stock", "rewritten", "fused"):
            engine = SevenNetEngine(rewrite_graphs=False)
            if variant != "stock":
                optimise_model(engine.calculator().model, fused=variant == "fused")
            times[variant], forces[variant] = _timed_calls(engine, cell, repeat)
        rows.append(
            {
                "threads": threads,
                "natoms": len(cell),
                "stock_s": times["stock"],
                "rewritten_s": times["rewritten"],
                "fused_s": times["fused"],
                "speedup": times["stock"] / times["fused"],
                "max_force_diff_eV_per_A": float(np.abs(forces["fused"] - forces["stock"]).max()),
            }
        )
        print(json.dumps({"rewrite_ab": rows[-1]}), flush=True)
    return rows


#: the bundled crystal engines (engines/registry.py), compared per force call by ``--per-call``
BUNDLED_ENGINES = ("sevennet", "sevennet:7net-l3i5", "sevennet:7net-mf-0:pbe", "sevennet:7net-mf-0:r2scan", "chgnet")

_PER_CALL_SNIPPET = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {bench_dir!r})
import numpy as np
import torch
import phonons as B
from atomvib.engines import get_engine
from atomvib.harmonic.displacements import plan_displacements
from atomvib.settings import PhononSettings


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def stock_call(spec):
    eng = get_engine(spec)
    if spec.startswith("sevennet"):
        calc = B.stock_calculator(spec, eng)
    else:  # CHGNet's own ASE calculator: a fresh graph per call, stress and magnetic moments too
        calc = eng.calculator()

    def call():
        calc.reset()
        a = cell.copy()
        a.calc = calc
        return np.asarray(a.get_forces(), dtype=np.float64)
    return call


def fast_call(spec):
    eng = get_engine(spec).load()

    def call():
        return eng._evaluate_here([cell])[0].forces
    return call


structure = [s for label, s in B.cases() if "Cc" in label][0]
cell = plan_displacements(structure, PhononSettings(relax=False)).supercells()[0]
mode, specs = {mode!r}, {specs!r}
if mode.startswith("mem-"):  # one fresh process per engine and path: its peak is that path's
    call = (stock_call if mode == "mem-stock" else fast_call)(specs[0])
    torch.set_num_threads({threads})
    call()
    base = status("VmRSS:")
    call()
    print(json.dumps({{"rss_between_calls_GB": base, "peak_rss_GB": status("VmHWM:")}}))
else:  # interleaved rounds: every path of every engine once per round, minimum over rounds
    calls = {{}}
    for spec in specs:
        if mode == "time":
            calls[(spec, "stock")] = stock_call(spec)
        calls[(spec, "fast")] = fast_call(spec)
    torch.set_num_threads({threads})
    forces = {{key: c() for key, c in calls.items()}}  # warm-up: kernels loaded, graphs cached
    best = {{key: float("inf") for key in calls}}
    for _ in range({rounds}):
        for key, c in calls.items():
            t0 = time.perf_counter()
            c()
            best[key] = min(best[key], time.perf_counter() - t0)
    out = {{}}
    for spec in specs:
        row = out.setdefault(spec, {{"natoms": len(cell), "kernel_path": get_engine(spec).info.kernel_path}})
        row["fast_s"] = best[(spec, "fast")]
        if mode == "time":
            row["stock_s"] = best[(spec, "stock")]
            row["max_force_diff_eV_per_A"] = float(np.abs(forces[(spec, "stock")] - forces[(spec, "fast")]).max())
    print(json.dumps(out))
"""


def _run_snippet(mode: str, specs, threads: int, rounds: int = 3) -> dict:
    code = _PER_CALL_SNIPPET.format(
        bench_dir=str(Path(__file__).parent), mode=mode, specs=list(specs), threads=threads, rounds=rounds
    )
    env = dict(os.environ, ATOMVIB_WORKERS="1", ATOMVIB_THREADS=str(threads))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if res.returncode:
        raise RuntimeError(f"{mode} {specs}: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def per_call(engines=BUNDLED_ENGINES, threads: int = 1, rounds: int = 3) -> list[dict]:
    """One force call on the first displaced Cc supercell (144 atoms) per engine, ``threads`` torch threads:

    * stock vs fast: the package's stock ASE calculator and atomvib's path (graph reuse, fused kernels) in one
      process, calls interleaved, minimum of ``rounds`` after a warm-up (so both see the same machine load);
    * engine vs engine: every engine's fast path in one process, interleaved the same way (``vs_sevennet``);
    * memory: peak RSS (``VmHWM``) of a fresh process per engine and path (model, torch, two calls), and its RSS
      between the calls.
    """
    rows = []
    cross = _run_snippet("roundrobin", engines, threads, rounds)
    for name in engines:
        row = {"engine": name, "threads": threads, **_run_snippet("time", [name], threads, rounds)[name]}
        row["speedup"] = row["stock_s"] / row["fast_s"]
        row["fast_s_roundrobin"] = cross[name]["fast_s"]
        row["vs_sevennet"] = cross[name]["fast_s"] / cross["sevennet"]["fast_s"] if "sevennet" in cross else None
        row["memory"] = {m: _run_snippet(f"mem-{m}", [name], threads) for m in ("stock", "fast")}
        row["load_after"] = os.getloadavg()[0]
        rows.append(row)
        print(json.dumps({"per_call": row}), flush=True)
    return rows


def per_call_markdown(rows: list[dict]) -> str:
    if not rows:
        return ""
    lines = [
        "",
        f"Per force call, every bundled crystal engine (`python benchmarks/phonons.py --per-call`): first displaced "
        f"Cc supercell ({rows[0]['natoms']} atoms), {rows[0]['threads']} torch thread. Stock: the package's own ASE "
        "calculator (fresh graph, stress too); atomvib: `engine.evaluate`'s path (`info.kernel_path`). Times: "
        "minimum over interleaved rounds in one process (stock and atomvib of one engine together; all engines' "
        "atomvib paths together for the 'vs SevenNet-0' column), so the paths compared share the machine's load. Memory: "
        "peak RSS of a fresh process per engine and path (model, torch, two calls) and, in brackets, how far the "
        "peak rose above the RSS between calls (what one call allocates).",
        "",
        "| engine | stock (s) | atomvib (s) | speed-up | kernel path | atomvib vs SevenNet-0 | peak RSS stock (GB) "
        "| peak RSS atomvib (GB) | max ΔF (eV/Å) | load after |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ms, mf = r["memory"]["stock"], r["memory"]["fast"]
        rel = f"{r['vs_sevennet']:.2f}×" if r.get("vs_sevennet") else ""
        lines.append(
            f"| {r['engine']} | {r['stock_s']:.3f} | {r['fast_s']:.3f} | {r['speedup']:.2f}× | {r['kernel_path']} | "
            f"{rel} | {ms['peak_rss_GB']:.2f} (+{max(0.0, ms['peak_rss_GB'] - ms['rss_between_calls_GB']):.2f}) | "
            f"{mf['peak_rss_GB']:.2f} (+{max(0.0, mf['peak_rss_GB'] - mf['rss_between_calls_GB']):.2f}) | "
            f"{r['max_force_diff_eV_per_A']:.1e} | {r['load_after']:.2f} |"
        )
    return "\n".join(lines) + "\n"


_MEMORY_SNIPPET = r"""
import resource, sys, numpy as np, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {bench_dir!r})
import phonons as B
from atomvib.engines import get_engine
from atomvib.harmonic.displacements import plan_displacements
from atomvib.settings import PhononSettings
from atomvib.structure import Structure
atoms, _ = B._petretto_atoms({mid!r})
plan = plan_displacements(Structure.from_ase(atoms), PhononSettings(supercell=(4, 4, 2), relax=False))
cells = plan.supercells()[:4]
eng = get_engine({engine!r})
if {mode!r} == "atomvib-pool":
    eng.pool_min_cell_atoms = 0  # 4 cells are below the pool's work threshold: force the pool
if {mode!r}.startswith("atomvib"):
    eng.evaluate(cells)
    eng.close_pool()  # joins the workers, so RUSAGE_CHILDREN holds the largest worker's peak
else:
    calc = B.stock_calculator({engine!r}, eng)
    for a in cells:
        calc.reset()
        a.calc = calc
        a.get_forces()
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over execve, so a child of the (large) benchmark process
# would report the parent's size as its floor
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
self_gb = int(hwm[0].split()[1]) / 1024**2 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
print(len(cells[0]), self_gb, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2)
"""


def peak_memory(engine: str = "chgnet") -> dict:
    """Peak RSS (GB) of a fresh process evaluating four displaced 256-atom cells with ``engine``: atomvib
    in one process, atomvib with 2 workers (parent and largest worker; CHGNet only), the package's stock
    ASE calculator."""
    out = {}
    modes = (("atomvib", "1"), ("atomvib-pool", "2"), ("plain", "1"))
    for mode, workers in modes if engine == "chgnet" else (modes[0], modes[2]):
        code = _MEMORY_SNIPPET.format(bench_dir=str(Path(__file__).parent), mid=MEMORY_ID, mode=mode, engine=engine)
        env = dict(os.environ, ATOMVIB_WORKERS=workers)
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        )
        natoms, gb, child_gb = res.stdout.split()[-3:]
        out[mode] = {"natoms": int(natoms), "peak_rss_GB": float(gb), "worker_peak_rss_GB": float(child_gb)}
    print(json.dumps({f"peak_memory_{engine}": out}), flush=True)
    return out


def markdown(rows: list[dict], mem: dict | None, load: tuple, repeat: int, ab: list | None = None) -> str:
    lines = [
        "## Phonon force stage: atomvib vs plain phonopy + ASE loop",
        "",
        f"`python benchmarks/phonons.py` — same model weights, supercells (min. width 10 Å) and 0.01 Å "
        f"displacements; loading the model in the main process excluded from both, starting the worker "
        f"pool and loading the model in each worker included in atomvib's time; minimum of {repeat} run(s); "
        f"load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on a shared 2-core CPU.",
        "",
        "| engine | case | supercell atoms | displacements (timed) | atomvib (s) | processes | plain loop (s) "
        "| speed-up | atomvib, 1 process (s) | speed-up | max ΔF (eV/Å) | model share | load after |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        share = f"{100 * r['model_share']:.0f} %" if r["model_share"] is not None else ""
        lines.append(
            f"| {r['engine']} | {r['case']} | {r['n_supercell_atoms']} | {r['n_displacements']} ({r['n_timed']}) | "
            f"{r['atomvib_s']:.2f} | {r['workers']} | {r['plain_s']:.2f} | {r['ratio']:.2f}× | "
            f"{r['atomvib_1proc_s']:.2f} | {r['ratio_1proc']:.2f}× | {r['max_force_diff_eV_per_A']:.1e} | {share} | "
            f"{r['load_after']:.2f} |"
        )
    if rows:
        lines += [
            "",
            f"Threads: atomvib {rows[0]['threads_atomvib']} torch thread(s) per process (`ATOMVIB_THREADS`), "
            "`processes` = this process + its workers (engines/parallel.py; 1 = the cells were too few to pay "
            "for a pool); plain "
            f"loop {rows[0]['threads_plain']} threads (torch's default pool), one process. Speed-ups are "
            "plain loop / atomvib.",
            "Model share: wall time inside the model's own call (graph featurisation inside the model, forward, "
            "autograd forces) over the 1-process force stage (plan, supercells, graphs, model).",
        ]
    lines += [
        "",
        "What atomvib does differently (src/atomvib/engines/mlip.py): the neighbour graph of the perfect "
        "supercell is built once and reused for its 0.01 Å-displaced copies (SevenNet: a Verlet list with a "
        "0.5 Å skin, edges inside the cutoff selected per cell, so the edge set is exactly a fresh build's; "
        "CHGNet: the whole graph with new coordinates, its smooth cutoff envelopes make the difference "
        "< 1e-5 eV/Å); the model is called directly for energy and forces only (CHGNet `task='ef'`: no "
        "stress, no magnetic moments; no ASE results dict); SevenNet's e3nn kernels are rewritten at load "
        "(engines/graph_rewrite.py: one split per column-sliced tensor instead of a zero-filled gradient per "
        "slice, unused outer products removed) and its convolutions run in fused numba kernels on CPU "
        "(engines/fused_tp.py: the tensor product and the sum over neighbours in one pass, no per-edge "
        "message tensor); on CPU the cells "
        "are shared between this process and worker processes, one torch thread each, this process "
        "computing while the workers start (engines/parallel.py); several cells per forward pass on CUDA "
        "(`batch_size` 8; 1 on CPU). The plain loop uses the package's stock ASE calculator. Forces of both "
        "paths agree to float32 round-off (column max ΔF; tests/test_engine_speedpaths.py).",
    ]
    if ab:
        lines += [
            "",
            "SevenNet-0 model alone (one force call, first displaced Cc supercell, same process and graph, "
            "minimum of 3 calls): stock, e3nn graphs rewritten (graph_rewrite.py without fused kernels), and "
            "with the fused convolution kernels (what atomvib runs):",
            "",
            "| torch threads | atoms | stock model (s) | rewritten (s) | fused (s) | speed-up vs stock "
            "| max ΔF (eV/Å) |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in ab:
            lines.append(
                f"| {r['threads']} | {r['natoms']} | {r['stock_s']:.3f} | {r['rewritten_s']:.3f} | "
                f"{r['fused_s']:.3f} | {r['speedup']:.2f}× | {r['max_force_diff_eV_per_A']:.1e} |"
            )
    if mem and "chgnet" in mem:
        a, w, p = mem["chgnet"]["atomvib"], mem["chgnet"]["atomvib-pool"], mem["chgnet"]["plain"]
        lines += [
            "",
            f"Peak memory, CHGNet, {a['natoms']}-atom supercell (fresh process, 4 displaced cells, `VmHWM`; "
            "the worker's `ru_maxrss`, an upper bound that includes its parent's size at spawn): "
            f"atomvib in one process {a['peak_rss_GB']:.2f} GB; with a worker {w['peak_rss_GB']:.2f} GB in the "
            f"main process + {w['worker_peak_rss_GB']:.2f} GB in the worker; plain ASE calculator "
            f"{p['peak_rss_GB']:.2f} GB.",
        ]
    for name in [n for n in (mem or {}) if n.startswith("sevennet")]:
        a, p = mem[name]["atomvib"], mem[name]["plain"]
        lines += [
            "",
            f"Peak memory, {name}, same {a['natoms']}-atom supercell: atomvib {a['peak_rss_GB']:.2f} GB "
            f"(the fused kernels build no per-edge message tensor), stock ASE calculator {p['peak_rss_GB']:.2f} GB.",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--engines", nargs="+", default=["sevennet:7net-l3i5", "sevennet", "chgnet"],
        help="engine specs (default: the crystal default, SevenNet-0, CHGNet; --per-call: every bundled engine)",
    )  # fmt: skip
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--max-cells", type=int, default=0, help="displaced cells timed on the low-symmetry case (0: all 18)"
    )
    ap.add_argument(
        "--plain-threads",
        type=int,
        default=None,
        help="torch threads of the plain loop (default: torch's own default, one per core, ignoring OMP_NUM_THREADS)",
    )
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument(
        "--per-call", action="store_true",
        help="only the per-force-call table (stock vs fast path, time and memory) of every bundled engine",
    )  # fmt: skip
    ap.add_argument("--md", type=Path, default=None, help="write the markdown section here")
    ap.add_argument("--json", type=Path, default=None, help="--per-call: also write the rows as JSON here")
    args = ap.parse_args(argv)
    from atomvib.runtime import available_cores

    plain_threads = args.plain_threads or available_cores()
    if args.per_call:
        explicit = any(a.startswith("--engines") for a in (argv if argv is not None else sys.argv[1:]))
        rows = per_call(tuple(args.engines) if explicit else BUNDLED_ENGINES)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=1))
        md = per_call_markdown(rows)
        print(md)
        if args.md:
            args.md.parent.mkdir(parents=True, exist_ok=True)
            args.md.write_text(md)
        return 0
    load = os.getloadavg()
    print(f"# load average {load}", flush=True)
    rows = []
    for name in args.engines:
        rows += bench_engine(name, args.repeat, plain_threads, args.max_cells or None)
    ab = rewrite_ab() if "sevennet" in args.engines else None
    mem = None if args.no_memory else {name: peak_memory(name) for name in args.engines}
    md = markdown(rows, mem, load, args.repeat, ab)
    print(md)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
