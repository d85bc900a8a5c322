"""``atomvib kappa``: lattice thermal conductivity (phono3py) from a structure and an engine, or from DFT forces."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_engine_options, engine_settings_from_args

EPILOG = """examples:
  atomvib kappa examples/Si.cif                            # default engine, RTA, κ(T) 50–1000 K
  atomvib kappa Si.cif --mesh 19 19 19 --temperatures 300  # phono3py's mesh for Si, one temperature
  atomvib kappa AlN.cif --born BORN --method lbte          # LO–TO from DFT Born charges, full LBTE
  atomvib kappa big.cif --fc-calculator symfc              # random displacements fitted by symfc: fewer cells
  atomvib kappa phono3py_disp.yaml --forces FORCES_FC3     # your own DFT forces (phono3py's κ, same numbers)
  atomvib kappa phono3py_disp.yaml --forces FORCES_FC3 --fc2-forces FORCES_FC2 --born BORN

what it does: relaxes the crystal (symmetry kept), lets phono3py choose the displaced supercells (pairs of
displaced atoms; --cutoff-pair skips distant pairs; --fc-calculator symfc uses random displacements), computes
their forces with the engine (checkpointed: an interrupted run resumes, a re-run with another --mesh, --method or
--temperatures computes no force), builds fc2/fc3 and solves the phonon Boltzmann equation with phono3py.
A force stage estimated above --max-hours, an LBTE collision matrix above the memory, or imaginary harmonic modes
are refused before the work, with the fix.

outputs (in DIR, default INPUT_atomvib_kappa next to the input):
  summary.json   κ at 300 K (tensor and average), method, mesh, supercells, engine, settings
  kappa.csv      T, κ_xx, κ_yy, κ_zz, κ_yz, κ_xz, κ_xy, average (W/m-K) [+ κ_C for wigner, κ_RTA for lbte]
  kappa.json     the same table;  kappa-phono3py.hdf5  phono3py's per-mode datasets (frequency, gamma,
                 group_velocity, heat_capacity, mode_kappa, mean_free_path, ...), readable by phono3py-kaccum
  kappa.png      κ(T) (log axes), cumulative κ vs frequency and mean free path, linewidths vs frequency
  result.json, arrays.npz   the whole result with fc2/fc3: atomvib.load(DIR)
exit codes: 0 done, 1 computation failed, 2 bad input or refused (the message says how to fix it)"""


def add_parser(sub):
    from ..settings import KappaSettings

    d = KappaSettings()
    p = sub.add_parser(
        "kappa",
        help="lattice thermal conductivity κ(T) with phono3py (RTA, LBTE, Wigner)",
        description="Lattice thermal conductivity of a crystal: second- and third-order force constants from the "
        "engine's forces on phono3py's displaced supercells (or from your DFT FORCES_FC3), then phono3py's "
        "Boltzmann transport.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", help="crystal structure file, or phono3py_disp.yaml / phono3py_params.yaml")
    p.add_argument("--out", "-o", metavar="DIR", help="output directory (default INPUT_atomvib_kappa)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output directory")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress, only errors")
    p.add_argument("--no-plot", action="store_true", help="skip kappa.png")
    p.add_argument("--format", metavar="FMT", help="ASE format of the input when its name does not tell")
    g = p.add_argument_group("DFT forces you have (phono3py files)")
    g.add_argument("--forces", metavar="FORCES_FC3", help="FORCES_FC3 for a phono3py_disp.yaml input")
    g.add_argument("--fc2-forces", metavar="FORCES_FC2", help="FORCES_FC2 where the yaml has a separate fc2 supercell")
    g.add_argument("--born", metavar="BORN", help="BORN file: Born charges and dielectric tensor (LO–TO splitting)")
    add_engine_options(p, crystal_only=True)
    g = p.add_argument_group("thermal conductivity")
    g.add_argument("--method", choices=("rta", "lbte", "wigner"), default=d.method,
                   help="rta: relaxation-time approximation (default); lbte: direct solution of the linearised "
                   "Boltzmann equation; wigner: RTA plus the coherences' κ_C (Simoncelli–Marzari–Mauri)")
    g.add_argument("--temperatures", "--ts", type=float, nargs="+", metavar="K",
                   help="temperatures in K (default 50, 100, ..., 1000)")
    g.add_argument("--mesh", type=int, nargs=3, metavar="N", help="q-point mesh (default: from --mesh-density)")
    g.add_argument("--mesh-density", type=float, default=d.mesh_density, metavar="L",
                   help=f"automatic mesh, phonopy length in Å (default {d.mesh_density:g}: 19x19x19 for Si)")
    g.add_argument("--isotope", action="store_true", help="add isotope scattering (natural abundances)")
    g.add_argument("--boundary-mfp", type=float, metavar="UM", help="boundary scattering mean free path (grain size), µm")
    g.add_argument("--allow-imaginary", action="store_true",
                   help="compute κ although the harmonic phonons have imaginary modes (they are left out)")
    g.add_argument("--max-memory", type=float, metavar="GB", help="LBTE: largest collision matrix (default 80%% of free memory)")
    g = p.add_argument_group("displacements and force constants")
    g.add_argument("--supercell", type=int, nargs="+", metavar="N",
                   help="fc3 supercell of the primitive cell: 3 integers or 9 (a matrix); default automatic")
    g.add_argument("--min-length", type=float, default=d.fc3_min_length_a, metavar="A",
                   help=f"automatic fc3 supercell: minimum width in Å (default {d.fc3_min_length_a:g})")
    g.add_argument("--fc2-supercell", type=int, nargs="+", metavar="N", help="a larger supercell for fc2 (3 or 9 integers)")
    g.add_argument("--fc2-min-length", type=float, metavar="A", help="automatic fc2 supercell of this minimum width, Å")
    g.add_argument("--displacement", type=float, default=d.displacement_a, metavar="A",
                   help=f"displacement amplitude, Å (default {d.displacement_a:g}, phono3py's)")
    g.add_argument("--cutoff-pair", type=float, metavar="A", help="skip displaced pairs farther apart than this, Å")
    g.add_argument("--fc-calculator", choices=("traditional", "symfc"), default=d.fc_calculator,
                   help="traditional: phono3py's finite differences (default); symfc: fit to random displacements")
    g.add_argument("--snapshots", type=int, metavar="N", help="symfc: number of randomly displaced supercells")
    g.add_argument("--max-hours", type=float, default=d.max_force_hours, metavar="H",
                   help=f"refuse a force stage estimated longer than this (default {d.max_force_hours:g} h)")
    p.set_defaults(func=run)


def kappa_settings_from_args(args):
    from ..settings import KappaSettings

    kw = {}
    if args.temperatures:
        kw["temperatures_k"] = tuple(args.temperatures)
    return KappaSettings(
        method=args.method, mesh=tuple(args.mesh) if args.mesh else None, mesh_density=args.mesh_density,
        fc3_supercell=tuple(args.supercell) if args.supercell else None, fc3_min_length_a=args.min_length,
        fc2_supercell=tuple(args.fc2_supercell) if args.fc2_supercell else None,
        fc2_min_length_a=args.fc2_min_length, displacement_a=args.displacement, cutoff_pair_a=args.cutoff_pair,
        fc_calculator=args.fc_calculator, n_snapshots=args.snapshots, isotope=args.isotope,
        boundary_mfp_um=args.boundary_mfp, allow_imaginary=args.allow_imaginary, max_force_hours=args.max_hours,
        max_memory_gb=args.max_memory, **kw,
    )  # fmt: skip


def run(args) -> int:
    from ..output import OutputDir, write_result
    from ..workflow import kappa

    settings = engine_settings_from_args(args)
    ks = kappa_settings_from_args(args)
    inp = Path(args.input)
    out = Path(args.out) if args.out else inp.with_name(f"{inp.stem}_atomvib_kappa")
    od = OutputDir(out, "kappa", inputs=[args.input, args.forces, args.fc2_forces, args.born], force=args.force)
    with od:
        result = kappa(args.input, settings=settings, kappa_settings=ks, forces=args.forces,
                       fc2_forces=args.fc2_forces, born=args.born, checkpoint_dir=out, progress=not args.quiet,
                       fmt=args.format)
        write_result(result, od.stage, plot=not args.no_plot)
    if not args.quiet:
        print(report(args.input, result, out))
    return 0


def report(inp, r, out) -> str:
    s = r.summary()
    k = s["kappa_W_per_mK"]
    lines = [
        f"{inp}: {s['structure']['formula']} ({s['structure']['spacegroup']}), {r.engine.describe() if hasattr(r.engine, 'describe') else r.engine}",
        f"  {r.method.upper()}, mesh {'x'.join(map(str, r.mesh))}, {r.n_displacements} displaced supercells, "
        f"fc3 supercell {r.force_constants.n_supercell_atoms} atoms" + (", NAC" if s["nac"] else ""),
        f"  κ at {s['temperature_K']:g} K: xx {k['xx']:.2f}, yy {k['yy']:.2f}, zz {k['zz']:.2f} W/m-K "
        f"(average {s['kappa_average_W_per_mK']:.2f})",
    ]
    if "kappa_coherent_W_per_mK" in s:
        c = s["kappa_coherent_W_per_mK"]
        lines.append(f"  of which coherences κ_C: {(c['xx'] + c['yy'] + c['zz']) / 3:.3f} W/m-K")
    if "kappa_rta_W_per_mK" in s:
        c = s["kappa_rta_W_per_mK"]
        lines.append(f"  RTA of the same calculation: {(c['xx'] + c['yy'] + c['zz']) / 3:.2f} W/m-K")
    if r.has_negative_linewidths:
        lines.append("  WARNING: negative linewidths (numerical noise in fc3): check the supercell and displacement")
    lines.append(f"  written to {out}/")
    return "\n".join(lines)
