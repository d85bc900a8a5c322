"""``atomvib ir`` and ``atomvib raman``: optical spectra from a structure or an ``atomvib phonons`` result."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..results import _json_safe
from .common import add_phonon_options, settings_from_args

IR_EPILOG = """examples:
  atomvib ir water.xyz --out water_ir                    # GFN2-xTB modes + dipole derivatives
  atomvib ir water.xyz --engine pyscf:b3lyp/def2-svp     # DFT dipoles (PySCF)
  atomvib ir water_atomvib/ --fwhm 8 --shape gaussian    # reuse an `atomvib phonons` result directory
  atomvib ir phonopy_disp.yaml --forces FORCE_SETS --born BORN --out nacl_ir   # crystal, your DFT forces
  atomvib ir nacl_atomvib/ --born BORN                   # crystal result + Born charges
  atomvib ir nacl_atomvib/ --becs becs.npy               # Born charges (n_atoms, 3, 3) as an array
  atomvib ir water_atomvib/ --isotope H=2 --out d2o_ir   # D2O from the H2O Hessian (no new forces)

outputs (in DIR, default INPUT_ir next to the input):
  ir.csv         wavenumber_cm1, intensity: the broadened spectrum (km/mol or e²/amu per cm^-1)
  ir_modes.csv   wavenumber_cm1 and intensity of each mode (molecules km/mol; crystals Γ TO modes, e²/amu)
  ir.png         the spectrum with the mode sticks;  ir_summary.json  strongest modes, units, provenance
exit codes: 0 done, 1 computation failed, 2 bad input (message says how to fix it)"""

RAMAN_EPILOG = """examples:
  atomvib raman water.xyz --out water_raman              # GFN2-xTB, finite-field polarizabilities
  atomvib raman water.xyz --engine pyscf:hf/6-31g        # HF polarizabilities (PySCF)
  atomvib raman benzene_atomvib/ --laser-nm 532 --temperature 298   # cross-sections instead of activities

outputs (in DIR, default INPUT_raman next to the input):
  raman.csv        wavenumber_cm1, intensity: the broadened spectrum (Å⁴/amu per cm^-1, or arb. with --laser-nm)
  raman_modes.csv  wavenumber_cm1, activity (Å⁴/amu) and depolarization ratio of each mode
  raman.png        the spectrum with the mode sticks;  raman_summary.json  strongest modes, provenance
crystals: Raman needs Raman tensors (dielectric derivatives), which no atomvib engine gives: error, exit 2
exit codes: 0 done, 1 computation failed, 2 bad input (message says how to fix it)"""


def add_parser(sub):
    for name, help_, desc, epilog in (
        (
            "ir",
            "infrared spectrum (crystals: Born charges; molecules: dipole derivatives)",
            "IR intensities and a broadened spectrum from a structure (phonons are computed first) or from an "
            "`atomvib phonons` result directory.",
            IR_EPILOG,
        ),
        (
            "raman",
            "Raman spectrum of a molecule (polarizability derivatives from xtb or pyscf)",
            "Raman activities and a broadened spectrum from a molecule's structure or `atomvib phonons` result.",
            RAMAN_EPILOG,
        ),
    ):
        p = sub.add_parser(
            name,
            help=help_,
            description=desc,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument(
            "input",
            metavar="INPUT",
            help="structure file, phonopy_disp.yaml, or an `atomvib phonons` result directory",
        )
        p.add_argument("--out", "-o", metavar="DIR", help=f"output directory (default INPUT_{name})")
        p.add_argument("--force", action="store_true", help="overwrite an existing output directory")
        g = p.add_argument_group("spectrum")
        g.add_argument(
            "--fwhm", type=float, default=10.0, metavar="CM1", help="line width (FWHM) in cm^-1 (default 10)"
        )
        g.add_argument(
            "--shape",
            choices=("lorentzian", "gaussian"),
            default="lorentzian",
            help="line shape (default lorentzian)",
        )
        g.add_argument(
            "--xmax",
            type=float,
            default=None,
            metavar="CM1",
            help="upper end of the wavenumber axis (default: highest mode + 10 FWHM)",
        )
        g.add_argument(
            "--step", type=float, default=1.0, metavar="CM1", help="axis step in cm^-1 (default 1)"
        )
        g.add_argument(
            "--fd-step",
            type=float,
            default=0.01,
            metavar="A",
            help="finite-difference step for dipoles/polarizabilities, Å (default 0.01)",
        )
        if name == "ir":
            g.add_argument(
                "--born", metavar="BORN", help="crystals: phonopy BORN file (Born charges, dielectric tensor), or "
                "'predicted' (learned Born charges, docs/born.md; the IR intensities then carry the ensemble spread)"
            )
            g.add_argument(
                "--becs",
                metavar="FILE",
                help="crystals: Born charges as .npy or text, shape (n_atoms, 3, 3) in the primitive cell's order",
            )
        else:
            g.add_argument(
                "--laser-nm",
                type=float,
                default=None,
                metavar="NM",
                help="excitation wavelength: give cross-sections instead of activities",
            )
            g.add_argument("--born", metavar="BORN", help=argparse.SUPPRESS)
        p.add_argument(
            "--forces", metavar="FORCE_SETS", help="phonopy FORCE_SETS for a phonopy_disp.yaml input"
        )
        p.add_argument("--no-plot", action="store_true", help=f"skip {name}.png")
        p.add_argument("--quiet", "-q", action="store_true", help="no progress messages")
        p.add_argument("--format", metavar="FMT", help="ASE format of a structure file whose name does not tell (e.g. vasp)")
        add_phonon_options(p)
        p.set_defaults(func=run, optical=name)


def _check_before_computing(inp: Path, args) -> None:
    """Refuse, before any phonon calculation, a crystal the command cannot give a spectrum for."""
    from ..errors import InputError
    from ..results import read_summary
    from ..workflow import PHONOPY_INPUT_SUFFIXES, yaml_has_nac

    if inp.is_dir():
        s = read_summary(inp)
        kind = s.get("kind")
        has_born = bool(s.get("nac"))
    elif inp.suffix.lower() in PHONOPY_INPUT_SUFFIXES:
        kind, has_born = "crystal", yaml_has_nac(inp)
    else:
        from ..structure import read_structure

        # a structure computed here: --born defaults to auto (predicted Born charges for polar compounds)
        kind, has_born = read_structure(inp, fmt=getattr(args, "format", None)).kind, args.born is None
    if kind not in ("crystal", "force_constants", "effective_phonons"):  # every result a crystal's spectrum comes from
        return
    if args.optical == "raman":
        from ..spectra.raman import crystal_raman_error

        raise crystal_raman_error()
    if not (has_born or args.born or args.becs):
        raise InputError(
            f"{inp}: IR intensities of a crystal need Born effective charges",
            fix="add --born BORN (phonopy format), --born predicted (learned), or --becs FILE with an (n_atoms, 3, 3) array",
        )


def _check_numbers(args) -> None:
    """The spectrum's numeric options, checked before anything is computed (NaN and infinities included)."""
    import math

    from ..errors import InputError

    for opt, v, example in (("--fwhm", args.fwhm, "10"), ("--step", args.step, "1"), ("--xmax", args.xmax, "4000"),
                            ("--fd-step", args.fd_step, "0.01"), ("--laser-nm", getattr(args, "laser_nm", None), "532")):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise InputError(f"{opt} {v} must be a finite number > 0", fix=f"e.g. {opt} {example}")
    if args.xmax is not None and args.xmax / args.step > 1e7:
        raise InputError(f"--xmax {args.xmax:g} with --step {args.step:g} makes over 10⁷ points", fix="give a larger --step")


def _read_becs(path):
    from ..errors import InputError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such becs file", fix="check the path")
    try:
        a = np.load(p) if p.suffix == ".npy" else np.loadtxt(p)
        return np.asarray(a, dtype=float).reshape(-1, 3, 3)
    except ValueError:
        raise InputError(
            f"{path}: cannot read Born charges",
            fix="give .npy or text with 9 numbers per atom (3×3 row by row)",
        ) from None


def run(args) -> int:
    from ..errors import InputError
    from ..output import OutputDir
    from ..spectra.ir import ir_spectrum
    from ..spectra.lineshape import default_axis_cm1
    from ..spectra.raman import raman_spectrum
    from ..workflow import load_phonons, phonons

    inp = Path(args.input)
    if not inp.exists():
        raise InputError(f"{inp}: no such file or directory", fix="check the path")
    out = Path(args.out) if args.out else inp.parent / f"{inp.stem or inp.name}_{args.optical}"
    _check_numbers(args)
    settings = settings_from_args(args)  # every phonon option checked, also for a saved result (same CLI)
    # before any computation: no overwrite without --force, never over an input, a place that can be written
    from .phonons import _born_file

    od = OutputDir(out, args.optical, inputs=[inp, args.forces, _born_file(args.born), getattr(args, "becs", None)],
                   force=args.force).check()
    _check_before_computing(inp, args)
    if inp.is_dir():
        from .common import with_isotope_masses

        # saved dipole derivatives and settings come with it; --isotope: new modes from the same force constants
        result = with_isotope_masses(load_phonons(inp, born=args.born), settings.isotopes)
    else:
        result = phonons(inp, settings=settings, forces=args.forces, born=args.born or "auto", progress=not args.quiet,
                         fmt=args.format)
    # an --engine given with a saved result computes what the result lacks (dipoles) with that engine;
    # otherwise the engine that made the modes is used
    engine = args.engine
    if args.optical == "ir":
        becs = _read_becs(args.becs) if args.becs else None
        spec = ir_spectrum(result, engine, becs=becs, step_a=args.fd_step)
    else:
        spec = raman_spectrum(
            result, engine, laser_nm=args.laser_nm,
            temperature_k=args.temperature if args.temperature is not None else 298.15, step_a=args.fd_step
        )
    f = spec.frequencies_cm1[spec.frequencies_cm1 > 0]
    if len(f) == 0:
        raise InputError(
            f"{inp}: no vibrational mode with a positive frequency to give an {args.optical.upper()} spectrum "
            "(a one-atom primitive cell, for one, has only the acoustic modes at Γ)",
            fix="give a structure with optical modes (two or more atoms in the primitive cell), or a molecule",
        )
    axis = default_axis_cm1(f, args.fwhm, args.step)
    if args.xmax:
        axis = np.arange(0.0, args.xmax + args.step, args.step)
    summary = {
        "kind": spec.kind,
        "system": spec.system,
        "intensity_unit": spec.intensity_unit,
        "fwhm_cm1": args.fwhm,
        "shape": args.shape,
        "strongest": [{"wavenumber_cm1": w, "intensity": i} for w, i in spec.strongest(5)],
        "source": {k: v for k, v in spec.source.items()},
        "isotopes": dict(settings.isotopes),
    }
    with od:  # written into a staging directory, moved into place at the end
        spec.write(od.stage, fwhm_cm1=args.fwhm, shape=args.shape, axis_cm1=axis, plot=not args.no_plot)
        spec.save(od.stage)  # the modes and intensities as a result: atomvib.load(out)
        (od.stage / f"{spec.kind}_summary.json").write_text(
            json.dumps(_json_safe(summary), indent=2, default=str, allow_nan=False))
    if not getattr(args, "quiet", False):
        top = ", ".join(f"{w:.0f} ({i:.3g})" for w, i in spec.strongest(3))
        print(
            f"{inp}: {spec.kind.upper()} of {spec.system}, {len(spec.frequencies_cm1)} modes; strongest "
            f"cm^-1 ({spec.intensity_unit}): {top}\n  written to {out}/"
        )
    return 0
