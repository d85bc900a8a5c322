"""``atomvib phonons``: harmonic vibrations of crystals and molecules."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import add_phonon_options, settings_from_args

EPILOG = """examples:
  atomvib phonons examples/Si.cif                      # SevenNet-0, relaxed, automatic supercell
  atomvib phonons NaCl.cif --engine chgnet --out nacl  # another engine, chosen output directory
  atomvib phonons water.xyz                            # a molecule: GFN2-xTB normal modes
  atomvib phonons phonopy_disp.yaml --forces FORCE_SETS --born BORN   # your own DFT forces
  atomvib phonons a.cif b.cif c.cif --out results      # several inputs, model loaded once
  atomvib phonons water.xyz --isotope H=2 --out d2o    # D2O: deuterium masses (force constants unchanged)
  atomvib phonons water.xyz --isotope 1=2 --out hdo    # HDO: site 1 (counted from 0) only

outputs (in DIR, default INPUT_atomvib next to the input):
  summary.json   engine, structure, supercell, omega_max_thz, imaginary modes, thermal at --temperature
                 per mole of the analysed primitive cell and per formula unit, or molecular frequencies
                 and ideal-gas thermochemistry (298.15 K by default)
  result.json, arrays.npz   the whole result: atomvib.load(DIR) (or `atomvib ins DIR`, `ir DIR`) reads it
  dos.csv        frequency_thz, total and per-element DOS (states/THz per primitive cell)
  band.json      dispersion along seekpath's standard path;  thermal.csv  F, S, Cv, E vs T
  phonopy.yaml   loadable by phonopy (force constants inside);  band_dos.png  the figure
  *_checkpoint.npz  relaxed structure and forces, keyed by what determines them: a re-run with
                 --force and other --mesh-density/--temperature/--dos-step/--isotope reuses them (seconds)
environment:
  ATOMVIB_THREADS  torch threads per process (default: the cores this process may use)
  ATOMVIB_WORKERS  processes sharing the displaced cells of MLIP engines on CPU: this one + workers
                   (default: the cores; 1 disables; each worker loads its own copy of the model; used
                   only when it pays)
exit codes: 0 done, 1 computation failed, 2 bad input (message says how to fix it)"""


def add_parser(sub):
    p = sub.add_parser(
        "phonons",
        help="phonon dispersion, DOS and thermal properties (crystals) or normal modes (molecules)",
        description="Harmonic vibrations from a structure file (CIF, POSCAR, extxyz, XYZ, any ASE format) "
        "with a force engine, or from forces you already have (phonopy_disp.yaml + FORCE_SETS).",
        epilog=EPILOG,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="structure file(s), or phonopy_disp.yaml/phonopy_params.yaml")
    p.add_argument("--out", "-o", metavar="DIR", help="output directory (several inputs: one subdirectory each)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output directory")
    p.add_argument("--forces", metavar="FORCE_SETS", help="phonopy FORCE_SETS for a phonopy_disp.yaml input")
    p.add_argument("--born", metavar="BORN|predicted|none", default="auto",
                   help="Born charges and dielectric tensor for the LO-TO splitting: a phonopy BORN file; 'predicted' "
                   "(the shipped learned model, docs/born.md); 'none'. Default: predicted for compounds with a "
                   "non-metal element when an engine computes the forces, none otherwise (DFT force files, metals)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, only errors")
    p.add_argument("--no-plot", action="store_true", help="skip band_dos.png")
    p.add_argument("--format", metavar="FMT",
                   help="ASE format of the input when its name does not tell, e.g. vasp for zno_unitcell")
    p.add_argument("--committee", nargs="?", const="default", metavar="ENGINES",
                   help="crystals: run several engines (comma-separated specs; default sevennet,sevennet:7net-l3i5,"
                   "chgnet; also --engine committee) and report every quantity as mean ± calibrated spread")
    add_phonon_options(p)
    p.set_defaults(func=run)


def _born_file(born):
    """The BORN file named by ``--born`` (None for auto, predicted, none)."""
    from ..workflow import born_mode

    return None if born is None or born_mode(born) else born


def _out_dir(inp: str, args, multiple: bool) -> Path:
    from ..output import default_out_dir

    if args.out:
        return Path(args.out) / Path(inp).stem if multiple else Path(args.out)
    return default_out_dir(inp)


def run(args) -> int:
    from ..errors import AtomvibError
    from ..output import OutputDir, write_result
    from ..workflow import phonons

    settings = settings_from_args(args)
    members = _committee_members(args)
    if members:
        from ..harmonic.committee import committee_phonons
    multiple = len(args.inputs) > 1
    failures = 0
    for inp in args.inputs:
        out = _out_dir(inp, args, multiple)
        try:
            # refuses an existing result (without --force), an --out that would replace an input, an unwritable
            # place; the files are staged and moved in at the end, and a new directory left empty is removed
            od = OutputDir(out, "phonons", inputs=[*args.inputs, args.forces, _born_file(args.born)], force=args.force)
            with od:
                try:
                    if members:
                        result = committee_phonons(inp, members, settings, checkpoint_dir=out,
                                                   progress=not args.quiet, fmt=args.format)
                    else:
                        result = phonons(
                            inp, settings=settings, forces=args.forces, born=args.born,
                            checkpoint_dir=out, progress=not args.quiet, fmt=args.format,
                        )
                except AtomvibError as exc:
                    _keep_partial(exc, out)
                    raise
                write_result(result, od.stage, plot=not args.no_plot)
            # the checkpoints stay: a re-run with --force and other analysis settings (mesh, temperatures)
            # reuses the relaxed structure and every displaced cell's forces
        except AtomvibError as exc:
            if not multiple:
                raise
            print(f"atomvib phonons: {inp}: error: {exc}", file=sys.stderr)
            failures += 1
            continue
        if not args.quiet:
            print(_report(inp, result, out))
    return 2 if failures else 0


def _committee_members(args) -> tuple[str, ...]:
    """The engines of ``--committee [A,B,...]`` or ``--engine committee`` (empty: a single engine)."""
    from ..errors import InputError
    from ..harmonic.committee import DEFAULT_MEMBERS, split_specs

    spec = args.committee
    if args.engine == "committee":
        spec = spec or "default"
    elif spec and args.engine:
        raise InputError("--engine and --committee both name engines", fix="give the engines in --committee A,B,C")
    if not spec:
        return ()
    if args.forces or _born_file(args.born):
        raise InputError("a committee runs its own engines; --forces/--born are DFT inputs",
                         fix="drop --committee to analyse your DFT forces")
    return DEFAULT_MEMBERS if spec == "default" else split_specs(spec)


def _keep_partial(exc, out: Path) -> None:
    """Write whatever the failed step had computed (e.g. the unconverged relaxed structure)."""
    partial = getattr(exc, "partial", None) or {}
    rel = partial.get("relaxation")
    if rel is not None and out.exists():
        from ase.io import write

        from ..output import atomic_file

        with atomic_file(out / "relaxed_unconverged.extxyz") as fh:
            write(fh, rel.structure.to_ase(), format="extxyz")


def _committee_report(inp, r, out: Path) -> str:
    s = r.summary()
    om, th = s["omega_max_thz"], s["thermal"]["per_formula_unit"]
    pm = lambda e, f: f"{e['mean']:{f}} ± {e['std']:{f}}"  # noqa: E731
    lines = [
        f"{inp}: {s['structure']['formula']} (committee of {len(r.members)}: {', '.join(r.engines)})",
        f"  omega_max {pm(om, '.3f')} THz (members {', '.join(f'{x:.3f}' for x in om['members'])})",
        f"  at {th['temperature_K']:g} K per mol {s['structure']['formula']} (formula unit): "
        f"F {pm(th['free_energy_kJ_per_mol'], '.3f')} kJ/mol, S {pm(th['entropy_J_per_K_per_mol'], '.2f')} J/K/mol, "
        f"Cv {pm(th['heat_capacity_J_per_K_per_mol'], '.2f')} J/K/mol",
        "  ± is the calibrated 1σ spread ("
        + (", ".join(f"{q} ×{k:.2f}" for q, k in r.calibration["scales"].items()) + f"; bands, DOS ×{r.scale:.2f}: "
           if r.calibration.get("scales") else f"scale {r.scale:.2f}: ")
        + f"{r.calibration.get('note', 'see summary.json')}); 90 % intervals in summary.json",
    ]
    if r.has_imaginary:
        lines.append("  UNSTABLE in: " + ", ".join(e for e, m in zip(r.engines, r.members) if m.has_imaginary))
    lines.append(f"  written to {out}/")
    return "\n".join(lines)


def _report(inp, r, out: Path) -> str:
    if getattr(r, "kind", "") == "committee":
        return _committee_report(inp, r, out)
    s = r.summary()
    lines = [f"{inp}: {s['structure']['formula']} ({s['kind']}, {r.engine.describe()})"]
    if r.settings.isotopes:
        from ..harmonic.isotopes import format_isotopes

        lines.append(f"  isotopes {format_isotopes(r.settings.isotopes)} (masses; forces as computed for the input)")
    if s["kind"] == "crystal":
        th = s["thermal"]
        fu = th["per_formula_unit"]
        z = s["formula_units"]
        lines.append(
            f"  space group {s['structure']['spacegroup']}, supercell {s['n_supercell_atoms']} atoms, "
            f"{s['n_displacements']} displacements, mesh {'x'.join(map(str, s['mesh']))}"
        )
        lowest = s["min_frequency_thz"] if abs(s["min_frequency_thz"]) >= 5e-4 else 0.0  # no "-0.000"
        lines.append(f"  omega_max {s['omega_max_thz']:.3f} THz, lowest {lowest:.3f} THz")
        lines.append(
            f"  at {th['temperature_K']:g} K per mol {s['structure']['formula']} (formula unit): "
            f"F {fu['free_energy_kJ_per_mol']:.3f} kJ/mol, S {fu['entropy_J_per_K_per_mol']:.3f} J/K/mol, "
            f"Cv {fu['heat_capacity_J_per_K_per_mol']:.3f} J/K/mol"
        )
        if z != 1:
            lines.append(
                f"  per mol {s['structure']['cell_formula']} (analysed cell, {z} formula units): "
                f"F {th['free_energy_kJ_per_mol']:.3f} kJ/mol, S {th['entropy_J_per_K_per_mol']:.3f} J/K/mol, "
                f"Cv {th['heat_capacity_J_per_K_per_mol']:.3f} J/K/mol"
            )
        if s["has_imaginary"]:
            lines.append(f"  UNSTABLE: {s['instability']['message']}")
    else:
        f = s["frequencies_cm1"]
        tc = s["thermochemistry"]
        lines.append(f"  {len(f)} modes, {min(f):.1f}–{max(f):.1f} cm^-1, ZPE {s['zero_point_energy_eV']:.4f} eV")
        lines.append(
            f"  ideal gas at {tc['temperature_K']:g} K, {tc['pressure_Pa'] / 1e5:g} bar, per mol {s['structure']['formula']}: "
            f"S {tc['entropy_J_per_K_per_mol']:.2f} J/K/mol, G {tc['gibbs_energy_eV']:.4f} eV"
        )
        if s["has_imaginary"]:
            lines.append("  WARNING: imaginary modes (not a minimum: check the relaxation)")
    lines.append(f"  written to {out}/")
    return "\n".join(lines)
