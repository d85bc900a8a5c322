"""INS and DOS speed: atomvib vs Euphonic on the same force constants, side by side in one run.

Cases (phonopy-examples force sets, so both codes start from identical force constants; the
conversion to Euphonic's ForceConstants is outside all timings):

1. DOS of MgO on a 20×20×20 Γ-centred mesh, Gaussian FWHM 1 meV. Euphonic: frequencies on the full
   mesh (its fastest DOS path) + ``calculate_dos``; atomvib: ``phonon_dos`` (phonopy on the
   irreducible mesh, with eigenvectors, so partial DOS come for free).
2. Powder S(|Q|,E) map with the Debye–Waller factor, MgO, 5 K, 30 |Q| shells 0.5–7.75 Å⁻¹.
   Euphonic as its ``euphonic-powder-map`` does it: DW factor on its default grid (spacing
   0.1 Å⁻¹) then ``sample_sphere_structure_factor`` per shell, 1000 golden directions each.
   atomvib ``coherent_powder_map`` with its defaults: DW on a 6×6×6 grid, directions of one
   fundamental domain of the Laue group only (npts=10000 → ≈ 200 per shell), linear interpolation
   over triangles, all shells in one Euphonic call. Accuracy of both: relative L1 distance (E ≥ 5
   meV) to a converged map, Euphonic's own full-sphere histogram with 16000 directions (6 shells,
   same 6³ DW, so only the sampling differs). atomvib ``direct_powder_map`` (incoherent
   approximation, orders 1–3, ARCS kinematics and resolution) is timed as well: a different
   approximation, shown for scale.
3. VISION spectrum with orders 1–3: Al2O3 primitive cell (10 atoms), and a 108-atom cell (fcc Al,
   3×3×3 conventional, EMT force constants), default mesh.

Usage::

    python benchmarks/spectra.py [--repeat 3] [--md docs/benchmarks/spectra.md]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

for _v in ("ATOMVIB_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "phonopy-examples"


def _best(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def _phonopy(name):
    """Force constants of a phonopy example as atomvib's typed ForceConstants (what spectra take)."""
    import phonopy

    from atomvib.harmonic.force_constants import ForceConstants

    d = DATA / name
    born = d / "BORN"
    return ForceConstants.from_phonopy(phonopy.load(
        str(d / "phonopy_disp.yaml"),
        force_sets_filename=str(d / "FORCE_SETS"),
        born_filename=str(born) if born.is_file() else None,
        log_level=0,
    ))


def _al108():
    """A 108-atom primitive cell with EMT force constants (phonopy, one displacement)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    a = bulk("Al", "fcc", a=4.05, cubic=True).repeat((3, 3, 3))
    ph = Phonopy(
        PhonopyAtoms(symbols=a.get_chemical_symbols(), positions=a.positions, cell=a.cell[:]),
        primitive_matrix=np.eye(3),
        supercell_matrix=np.eye(3, dtype=int),
    )
    ph.generate_displacements(distance=0.01)
    forces = []
    for sc in ph.supercells_with_displacements:
        from ase import Atoms

        at = Atoms(sc.symbols, positions=sc.positions, cell=sc.cell, pbc=True)
        at.calc = EMT()
        forces.append(at.get_forces())
    ph.forces = np.array(forces)
    ph.produce_force_constants()
    from atomvib.harmonic.force_constants import ForceConstants

    return ForceConstants.from_phonopy(ph)


def gamma_grid(n):
    return np.array(np.meshgrid(*[np.arange(n) / n] * 3, indexing="ij")).reshape(3, -1).T


def bench_dos(repeat):
    from euphonic import ureg

    from atomvib.spectra.coherent import euphonic_force_constants
    from atomvib.spectra.dos import phonon_dos

    ph = _phonopy("MgO")
    fc = euphonic_force_constants(ph)
    bins = np.linspace(0, 90, 301)
    fwhm = 1.0

    def eu():
        f = fc.calculate_qpoint_frequencies(gamma_grid(20), asr="reciprocal")
        w = np.full(f.frequencies.shape, fwhm / 2.3548) * ureg("meV")
        return f.calculate_dos(bins * ureg("meV"), mode_widths=w).y_data.to("1/meV").magnitude

    def av():
        return phonon_dos(ph, bins=bins, fwhm=fwhm, mesh=20).total

    t_eu, d_eu = _best(eu, repeat)
    t_av, d_av = _best(av, repeat)
    diff = np.abs(d_av / 2 - d_eu).max() / d_eu.max()
    return {"case": "DOS, MgO, 20³ mesh", "euphonic_s": t_eu, "atomvib_s": t_av, "max_rel_diff": diff}


def bench_map(repeat):
    from euphonic import ureg
    from euphonic.cli.utils._dw import _get_debye_waller
    from euphonic.powder import sample_sphere_structure_factor

    from atomvib.spectra.coherent import coherent_powder_map, euphonic_force_constants
    from atomvib.spectra.ins import direct_powder_map, incoherent_modes

    ph = _phonopy("MgO")
    fc = euphonic_force_constants(ph)
    q = np.arange(0.5, 7.8, 0.25)
    ebins = np.arange(0.0, 90.5, 0.5)

    def eu(npts=1000):
        dw = _get_debye_waller(5 * ureg("K"), fc, grid_spacing=0.1 * ureg("1/angstrom"), asr="reciprocal")
        z = []
        for qq in q:
            sf = sample_sphere_structure_factor(
                fc,
                qq * ureg("1/angstrom"),
                dw=dw,
                temperature=5 * ureg("K"),
                sampling="golden",
                npts=npts,
                jitter=False,
                energy_bins=ebins * ureg("meV"),
            )
            z.append(sf.y_data.magnitude)
        return np.array(z), dw

    def av(npts=10000):
        return coherent_powder_map(ph, q, ebins, temperature_k=5.0, dw_mesh=6, npts=npts, fc=fc)

    import contextlib
    import io

    # two pairs at equal accuracy: Euphonic's default 1000 directions vs atomvib at npts=2400 (≈ 50
    # wedge directions), and Euphonic at 4000 vs atomvib's default npts=10000 (≈ 200)
    with contextlib.redirect_stdout(io.StringIO()):
        t_eu, (z_eu, dw_eu) = _best(eu, max(1, repeat - 1))
        t_eu4, (z_eu4, _) = _best(lambda: eu(4000), max(1, repeat - 1))
    t_av, m = _best(av, repeat)
    t_av24, m24 = _best(lambda: av(2400), repeat)
    # DW convergence: coarse 6³ grid vs Euphonic's default grid
    from atomvib.spectra.coherent import _debye_waller

    t_dw6, dw6 = _best(lambda: _debye_waller(fc, 5.0, 6), repeat)
    with contextlib.redirect_stdout(io.StringIO()):
        t_dwd, _ = _best(
            lambda: _get_debye_waller(
                5 * ureg("K"), fc, grid_spacing=0.1 * ureg("1/angstrom"), asr="reciprocal"
            ),
            repeat,
        )
    w6 = dw6.debye_waller.to("angstrom**2").magnitude
    wd = dw_eu.debye_waller.to("angstrom**2").magnitude
    dw_diff = np.abs(np.trace(w6, axis1=1, axis2=2) / np.trace(wd, axis1=1, axis2=2) - 1).max()
    # sampling accuracy of both maps against a converged full-sphere map (Euphonic, 16000 directions)
    sub = slice(None, None, 5)
    ref = coherent_powder_map(
        ph, q[sub], ebins, temperature_k=5.0, dw_mesh=6, npts=16000, fc=fc, symmetry=False
    ).intensity
    sel = ebins[:-1] >= 5.0

    def l1(z):
        return np.abs(z - ref)[:, sel].sum() / ref[:, sel].sum()

    def inc():
        modes = incoherent_modes(ph, temperature_k=5.0)
        return direct_powder_map(
            ph, "arcs", 100.0, order=3, modes=modes, q_range_ainv=(0.5, 7.75), dq_ainv=0.25
        )

    t_inc, _ = _best(inc, repeat)
    return {
        "case": "powder S(\\|Q\\|,E) with DW, MgO, 30 \\|Q\\| shells",
        "euphonic_s": t_eu,
        "atomvib_s": t_av,
        "dw_rel_diff": dw_diff,
        "l1_euphonic": l1(z_eu[sub]),
        "l1_atomvib": l1(m.intensity[sub]),
        "dirs_per_shell": _wedge_count(fc, 10000),
        "euphonic4000_s": t_eu4,
        "atomvib2400_s": t_av24,
        "l1_euphonic4000": l1(z_eu4[sub]),
        "l1_atomvib2400": l1(m24.intensity[sub]),
        "dirs_per_shell2400": _wedge_count(fc, 2400),
        "incoherent_map_s": t_inc,
        "dw_default_s": t_dwd,
        "dw_coarse_s": t_dw6,
    }


def _wedge_count(fc, npts):
    from atomvib.spectra.coherent import laue_rotations_cart, wedge_directions

    return len(wedge_directions(npts, laue_rotations_cart(fc.crystal)))


def bench_vision(repeat):
    from atomvib.spectra.ins import vision_spectrum

    out = []
    for label, ph in (("Al2O3, 10 atoms", _phonopy("Al2O3")), ("Al 3×3×3, 108 atoms", _al108())):
        t, s = _best(lambda ph=ph: vision_spectrum(ph, order=3, temperature_k=5.0), repeat)
        out.append({"case": f"VISION order 3, {label}", "atomvib_s": t, "mesh": "×".join(map(str, s.mesh))})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--md", type=Path, default=None, help="write a markdown section here")
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"reference data not found at {DATA}")
    import euphonic

    rows = [bench_dos(args.repeat), bench_map(args.repeat)]
    vis = bench_vision(args.repeat)
    lines = [
        "## INS and DOS: atomvib vs Euphonic",
        "",
        f"`python benchmarks/spectra.py --repeat {args.repeat}` (Euphonic {euphonic.__version__}, 1 thread, "
        "shared 2-core machine, best of repeats; force constants identical, built outside the timings).",
        "",
        "| case | Euphonic (s) | atomvib (s) | speed-up | agreement |",
        "|---|---:|---:|---:|---|",
    ]
    d, m = rows
    lines.append(
        f"| {d['case']} | {d['euphonic_s']:.2f} | {d['atomvib_s']:.2f} | {d['euphonic_s'] / d['atomvib_s']:.1f}× "
        f"| DOS max diff {100 * d['max_rel_diff']:.2f} % of peak |"
    )
    for eu_n, t_e, t_a, l_e, l_a, n_a in (
        (
            1000,
            m["euphonic_s"],
            m["atomvib2400_s"],
            m["l1_euphonic"],
            m["l1_atomvib2400"],
            m["dirs_per_shell2400"],
        ),
        (
            4000,
            m["euphonic4000_s"],
            m["atomvib_s"],
            m["l1_euphonic4000"],
            m["l1_atomvib"],
            m["dirs_per_shell"],
        ),
    ):
        lines.append(
            f"| {m['case']}: Euphonic {eu_n} directions/shell vs atomvib {n_a} wedge directions"
            f"{' (default)' if n_a == m['dirs_per_shell'] else ''} | {t_e:.2f} | {t_a:.2f} | {t_e / t_a:.1f}× "
            f"| L1 error vs converged map (E ≥ 5 meV): Euphonic {100 * l_e:.0f} %, atomvib {100 * l_a:.0f} %; "
            f"DW (6³ vs default grid) {100 * m['dw_rel_diff']:.2f} % |"
        )
    lines.append(
        f"| Debye–Waller factor alone (Euphonic default 0.1 Å⁻¹ grid vs 6³) | {m['dw_default_s']:.2f} "
        f"| {m['dw_coarse_s']:.3f} | {m['dw_default_s'] / m['dw_coarse_s']:.0f}× | {100 * m['dw_rel_diff']:.2f} % |"
    )
    lines.append(
        f"| incoherent ARCS map, orders 1–3, same Q/E grid (other approximation) | – | {m['incoherent_map_s']:.2f} | – | – |"
    )
    for v in vis:
        lines.append(
            f"| {v['case']} (mesh {v['mesh']}, irreducible) | – | {v['atomvib_s']:.2f} | – | target < 1 s (10 atoms) |"
        )
    lines += [
        "",
        "The coherent powder map evaluates phonons only in one fundamental domain of the crystal's Laue "
        "group (1/48 of the sphere for MgO; S(Q,ω) is invariant under it, tested mode by mode with "
        "Euphonic), interpolates ω and S linearly over the triangles between directions (a 2-D "
        "tetrahedron method, which converges much faster than binning delta functions), sends all "
        "shells to Euphonic in one call, and takes the Debye–Waller factor from a 6×6×6 grid instead of "
        "Euphonic's default 0.1 Å⁻¹ grid. Each pair is at equal accuracy: both maps are compared with a "
        "16000-direction full-sphere map (Euphonic, same 6³ DW; its own sampling noise is ≈ 4 %), on 6 of "
        "the 30 shells. At the same number of evaluated directions the symmetric set alone (histogram "
        "binning) is *less* accurate than Euphonic's golden set, which already samples npts distinct "
        "orbits: the gain comes from the triangle interpolation in the wedge and from batching. "
        "Convergence plot: docs/figures/coherent_powder_mgo.png (scripts/coherent_powder_figure.py). "
        "The "
        "incoherent-approximation map (what OCLIMAX's TASK=0 gives) is a sum of outer products and needs no "
        "sampling at all.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text)


if __name__ == "__main__":
    main()
