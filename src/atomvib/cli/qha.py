"""``atomvib qha``: quasi-harmonic thermal properties (thermal expansion, B(T), Cp, G) of a crystal."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from .common import add_phonon_options, settings_from_args

EPILOG = """examples:
  atomvib qha examples/Si.cif                          # SevenNet-l3i5, 7 volumes from -5 % to +5 %
  atomvib qha Cu.cif --engine emt --volumes 9 --volume-range 0.08 --out cu_qha
  atomvib qha examples/Si.cif --temperatures 0:600:5   # a finer grid, up to 600 K
  atomvib qha NaCl.cif --supercell 2 2 2 --mesh-density 60 --force

what it does:
  relaxes the crystal (cell and positions, space group kept), scales the relaxed cell isotropically to
  --volumes volumes within ±--volume-range of it, relaxes the positions at each fixed volume, computes
  the harmonic phonons there (one engine load, one supercell and q-mesh for all volumes), and runs
  phonopy's QHA on E(V) + F_phonon(V, T): equilibrium volume V(T), volumetric thermal expansion α(T)
  (linear α/3 for cubic crystals), bulk modulus B(T), Gibbs energy G(T, p = 0), Cp(T) and Cv(T) at V(T).
  Results stop where the free-energy minimum reaches the edge of the sampled volumes (said in the report
  and summary.json 'truncation'; widen --volume-range to go higher).

outputs (in DIR, default INPUT_qha next to the input):
  summary.json   static EOS (V0, B0, B0'), zero-point expansion, values at --temperature (300 K) per
                 mole of the analysed cell and per formula unit, imaginary modes per volume, truncation
  result.json, arrays.npz   the whole result (every volume's phonons included): atomvib.load(DIR)
  qha.csv        T, V, α (volumetric, linear for cubic), B, G, Cp, Cv (per cell and per formula unit)
  e-v.csv        volume, static energy, lowest and highest frequency of each volume
  qha.png        E(V) with the fitted EOS and F(V) at a few T, α(T), B(T), Cp and Cv
  checkpoints/   relaxations and forces of every volume: a re-run with --force and another
                 --temperatures/--mesh-density reuses them
exit codes: 0 done, 1 computation failed, 2 bad input (message says how to fix it)"""

def add_parser(sub):
    from ..harmonic.qha import EOS_NAMES, MAX_VOLUME_RANGE, MIN_VOLUMES, QhaSettings

    d = QhaSettings()
    p = sub.add_parser(
        "qha",
        help="quasi-harmonic thermal expansion, bulk modulus, Cp and Gibbs energy of a crystal",
        description="Quasi-harmonic thermal properties of a crystal from harmonic phonons at several volumes "
        "(phonopy's QHA on a force engine's energies and phonons).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", help="crystal structure file (CIF, POSCAR, extxyz, any ASE format)")
    p.add_argument("--out", "-o", metavar="DIR", help="output directory (default INPUT_qha next to the input)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output directory")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr, only errors")
    p.add_argument("--format", metavar="FMT", help="ASE format of the input when its name does not tell")
    g = p.add_argument_group("quasi-harmonic")
    g.add_argument("--volumes", type=int, default=d.n_volumes, metavar="N",
                   help=f"number of volumes, evenly spaced in V (default {d.n_volumes}; at least {MIN_VOLUMES})")
    g.add_argument("--volume-range", type=float, default=d.volume_range, metavar="F",
                   help=f"half-width of the volume grid as a fraction of the relaxed volume (default {d.volume_range:g}: "
                   f"-{100 * d.volume_range:g} %% to +{100 * d.volume_range:g} %%; at most {MAX_VOLUME_RANGE:g})")
    g.add_argument("--eos", choices=EOS_NAMES, default=d.eos, help=f"equation of state of the fits (default {d.eos})")
    g.add_argument("--temperatures", metavar="START:STOP:STEP",
                   help="temperature grid in K, e.g. 0:800:5, or a comma list 0,50,100,...; default the --tmax/--tstep "
                   "grid (0:1000:10)")
    g.add_argument("--max-imaginary-fraction", type=float, default=d.max_imaginary_fraction, metavar="F",
                   help="refuse when more than this share of the q-mesh is imaginary at any volume "
                   f"(default {d.max_imaginary_fraction:g}); smaller instabilities are reported and kept")
    add_phonon_options(p)
    p.set_defaults(func=run)


def parse_temperatures(text: str) -> tuple[float, ...]:
    """``START:STOP:STEP`` (STOP included) or ``T1,T2,...`` → temperatures in K (checked by the settings)."""
    from ..errors import InputError
    from ..settings import temperature_grid

    fix = "give --temperatures START:STOP:STEP in K (e.g. 0:800:5) or a comma list (0,50,100,150,200)"
    try:
        if ":" in text:
            parts = [float(x) for x in text.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            grid = temperature_grid(stop, step, options=("--temperatures STOP", "--temperatures STEP"))
            return tuple(t for t in grid if t >= start)
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"--temperatures {text!r} is not START:STOP:STEP or a comma list", fix=fix) from None


def run(args) -> int:
    from ..harmonic.qha import QhaSettings, quasi_harmonic
    from ..output import OutputDir

    settings = settings_from_args(args)
    if args.temperatures:
        settings = dataclasses.replace(settings, temperatures_k=parse_temperatures(args.temperatures))
    qs = QhaSettings(n_volumes=args.volumes, volume_range=args.volume_range, eos=args.eos,
                     max_imaginary_fraction=args.max_imaginary_fraction)
    inp = Path(args.input)
    out = Path(args.out) if args.out else inp.with_name(f"{inp.stem}_qha")
    od = OutputDir(out, "qha", inputs=[inp], force=args.force)
    with od:
        result = quasi_harmonic(inp, settings=settings, qha_settings=qs, checkpoint_dir=out / "checkpoints",
                                progress=not args.quiet, fmt=args.format)
        result.save(od.stage, force=True)
    if not args.quiet:
        print(report(str(inp), result, out))
    return 0


def report(inp: str, r, out: Path) -> str:
    """The short printed report: V0, B0, zero-point expansion, α, B and Cp − Cv at the summary temperature."""
    s = r.summary()
    st, eos = s["structure"], s["static_eos"]
    z = s["formula_units"]
    v = r.volumes_a3
    lines = [
        f"{inp}: {st['formula']} ({st['spacegroup']}), quasi-harmonic, {r.engine.describe()}",
        f"  {v.size} volumes {v.min():.3f}–{v.max():.3f} Å³ per {st['cell_formula']} "
        f"({100 * (v.min() / eos['volume_a3'] - 1):+.1f} % … {100 * (v.max() / eos['volume_a3'] - 1):+.1f} %), "
        f"supercell {s['supercell_matrix']}, mesh {'x'.join(map(str, s['mesh']))}",
        f"  static: V0 {eos['volume_a3']:.3f} Å³ per {st['cell_formula']}"
        + (f" ({eos['volume_a3'] / z:.3f} per {st['formula']})" if z != 1 else "")
        + f", B0 {eos['bulk_modulus_gpa']:.1f} GPa, B0' {eos['bulk_modulus_prime']:.2f} ({eos['eos']})",
        f"  0 K: V {s['volume_0K_A3']:.3f} Å³ (zero-point expansion {100 * s['zero_point_expansion']:+.2f} %)",
    ]
    at = s["at_temperature"]
    ext = at["extensive"]["per_formula_unit"]
    alpha = (f"α_lin {at['thermal_expansion_linear_per_K']:.3g} /K (α_V {at['thermal_expansion_volumetric_per_K']:.3g})"
             if "thermal_expansion_linear_per_K" in at else f"α_V {at['thermal_expansion_volumetric_per_K']:.3g} /K")
    lines.append(
        f"  {at['temperature_K']:g} K: V {at['extensive']['volume_A3']:.3f} Å³, {alpha}, B {at['bulk_modulus_GPa']:.1f} GPa, "
        f"per mol {st['formula']}: Cp − Cv {ext['cp_minus_cv_J_per_K_per_mol']:.3f} J/K/mol "
        f"(Cp {ext['heat_capacity_p_J_per_K_per_mol']:.2f}, Cv {ext['heat_capacity_v_J_per_K_per_mol']:.2f}), "
        f"G {ext['gibbs_energy_kJ_per_mol']:.2f} kJ/mol"
    )
    lines.append(f"  {r.truncation}")
    for inst in s["instabilities"]:
        lines.append(f"  imaginary modes at V/V0 = {inst['volume_ratio']:.3f}: {inst['message']}")
    lines.append(f"  written to {out}/")
    return "\n".join(lines)
