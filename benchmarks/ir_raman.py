"""Benchmark: atomvib IR/Raman against ASE's ``Infrared`` on the same molecule, engine and step.

ASE's :class:`ase.vibrations.Infrared` is the peer for molecules: it runs its own ±δ loop (Hessian
and dipoles in one pass, cached on disk). atomvib computes the Hessian (``atomvib.phonons``) and the
dipole derivatives in the same single pass over the 6N displaced geometries (the engine caches the
dipole with the forces), and ``ir_spectrum`` only projects them; both sides are timed end to end. Raman (36N
finite-field SCF runs) and crystal IR (one Γ diagonalisation) have no peer here and are timed alone.

Run: ``ATOMVIB_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/ir_raman.py [--out docs/benchmarks/ir_raman.md]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")


def _time(fn, repeat=1):
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_molecule(name: str):
    from ase.build import molecule
    from ase.vibrations import Infrared
    from tblite.ase import TBLite

    import atomvib
    from atomvib.spectra.ir import ir_spectrum

    start = atomvib.phonons(molecule(name), engine="xtb")  # relaxed geometry shared by both sides
    atoms = start.structure.to_ase()

    def ours():
        r = atomvib.phonons(atoms, engine="xtb", relax=False)
        return ir_spectrum(r)

    def ase_ir():
        with tempfile.TemporaryDirectory() as d:
            cwd = os.getcwd()
            os.chdir(d)
            try:
                a = atoms.copy()
                a.calc = TBLite(method="GFN2-xTB", verbosity=0, accuracy=0.1)
                ir = Infrared(a, delta=0.01, nfree=2, name="ir")
                ir.run()
                return ir.get_frequencies().real, ir.intensities * 42.2561
            finally:
                os.chdir(cwd)

    t_ours, ir = _time(ours)
    t_ase, (f_ase, i_ase) = _time(ase_ir)
    nvib = len(ir.frequencies_cm1)
    f_ase, i_ase = f_ase[-nvib:], i_ase[-nvib:]
    dev_f = float(np.max(np.abs(ir.frequencies_cm1 - f_ase)))
    dev_i = float(np.max(np.abs(ir.intensities - i_ase)) / ir.intensities.max())
    return {
        "system": f"{name} IR (xtb)",
        "atomvib_s": t_ours,
        "ref_s": t_ase,
        "ref": "ASE Infrared",
        "agreement": f"max |Δν| {dev_f:.2f} cm^-1, max |ΔI|/I_max {dev_i:.1e}",
    }, start


def bench_raman(result, name):
    from atomvib.spectra.raman import raman_spectrum

    t, rm = _time(lambda: raman_spectrum(result))
    w, s = rm.strongest(1)[0]
    return {
        "system": f"{name} Raman (xtb, {6 * 6 * result.structure.natoms} field SCFs)",
        "atomvib_s": t,
        "ref_s": None,
        "ref": "-",
        "agreement": f"strongest {w:.0f} cm^-1, {s:.1f} Å⁴/amu",
    }


def bench_crystal():
    import atomvib
    from atomvib.spectra.ir import crystal_ir

    d = Path(__file__).resolve().parents[2] / "shared" / "data" / "phonopy-examples" / "Al2O3"
    if not d.is_dir():
        return None
    r = atomvib.phonons(
        str(d / "phonopy_disp.yaml"), forces=str(d / "FORCE_SETS"), born=str(d / "BORN"), mesh_density=10
    )
    t, ir = _time(lambda: crystal_ir(r), repeat=5)
    n_active = int((ir.intensities > 1e-4 * ir.intensities.max()).sum())
    return {
        "system": "Al2O3 IR (BORN, 10-atom cell)",
        "atomvib_s": t,
        "ref_s": None,
        "ref": "-",
        "agreement": f"{n_active} IR-active modes (4 Eu pairs + 2 A2u)",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="write the markdown section here")
    args = ap.parse_args()
    rows = []
    for name in ("H2O", "C6H6"):
        row, res = bench_molecule(name)
        rows.append(row)
        rows.append(bench_raman(res, name))
    c = bench_crystal()
    if c:
        rows.append(c)
    lines = [
        "## IR and Raman",
        "",
        "Same relaxed geometry, GFN2-xTB (tblite), δ = 0.01 Å, 1 thread. atomvib = Hessian + dipole loop "
        "in one pass, dipoles cached with the forces; ASE Infrared = one pass. Ratio = reference time / atomvib time (> 1: atomvib faster).",
        "",
        "| system | atomvib (s) | reference | reference (s) | ratio | agreement |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref_s = f"{r['ref_s']:.2f}" if r["ref_s"] else "-"
        ratio = f"{r['ref_s'] / r['atomvib_s']:.2f}" if r["ref_s"] else "-"
        lines.append(
            f"| {r['system']} | {r['atomvib_s']:.3f} | {r['ref']} | {ref_s} | {ratio} | {r['agreement']} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
