"""``atomvib ins``: inelastic neutron scattering spectra (incoherent approximation, powder)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

EPILOG = """examples:
  atomvib ins NaCl_atomvib --instrument vision --out nacl_ins           # from an `atomvib phonons` result
  atomvib ins NaCl_atomvib --instrument tosca --order 5 --temperature 20 --out tosca
  atomvib ins water_atomvib --instrument vision --emax 500 --out water_vision   # an isolated molecule
  atomvib ins MgO_atomvib --instrument arcs --ei 100 --out mgo_arcs     # direct geometry: S(|Q|,E) map
  atomvib ins al --instrument arcs --ei 80 --temperature 300 --q-range 3 9 --out al_arcs   # map + cut
  atomvib ins MgO_atomvib --instrument generic --ei 60 --resolution 1.5 --angles 5 90 --out gen
  atomvib ins phonopy_disp.yaml --forces FORCE_SETS --born BORN --instrument vision --out v
  atomvib ins Al.cif --engine emt --instrument arcs --ei 50 --out al    # runs `atomvib phonons` first
  atomvib ins water_atomvib --isotope H=2 --out d2o_vision   # D2O from the H2O force constants (no forces)

instruments: vision, tosca (indirect geometry: 1D spectrum per bank, backward and forward);
             arcs, sequoia, maps, mari, merlin, generic (direct geometry: --ei needed, 2D map)
INPUT may be a crystal or an isolated molecule (`atomvib phonons molecule.xyz`): the molecule's
3N-6 (linear 3N-5) normal modes are one Γ point of the same incoherent model (no --mesh).

outputs (in DIR):
  ins.csv       indirect: energy_meV, intensity (backward bank), intensity_forward, one column per
                element and per phonon order (backward bank); intensities in 1/eV per total
                scattering cross-section of the cell (OCLIMAX's normalisation)
                direct: the map averaged over --q-range (covered points only): energy_meV,
                intensity, n_q_points; its first line (#) says the |Q| range, Ei and temperature
  ins_map.h5    direct: q_ainv, energy_mev, intensity (nq × ne, 1/eV, NaN outside the detectors);
                `atomvib compare DIR measured.h5` (or ins_map.h5 itself) fits it to a measured map
  ins.json      settings, mean-square displacements per element (Å²), cross-sections (barn), isotopes
isotopes: --isotope H=2 (or SITE=A, SITE:ELEMENT=A) recomputes the modes with those masses from the
  saved force constants and takes the isotope's Sears (1992) cross-section (columns then say 2H);
  an isotope without tabulated neutron data is refused (docs/isotopes.md lists them)
  summary.json, result.json, arrays.npz   the spectrum (backward bank) or map as a result: atomvib.load(DIR)
  ins.png       the figure
exit codes: 0 done, 1 computation failed, 2 bad input (message says how to fix it)"""


def add_parser(sub):
    p = sub.add_parser(
        "ins",
        help="INS spectra: VISION/TOSCA 1D spectra or direct-geometry S(|Q|,E) powder maps",
        description="Powder inelastic neutron scattering in the incoherent approximation: fundamentals, "
        "overtones and combinations up to --order, Debye-Waller factor, Bose occupation, Sears (1992) "
        "cross-sections, the instrument's kinematics and energy resolution.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "input",
        metavar="INPUT",
        help="atomvib phonons result directory (crystal or molecule), phonopy yaml, or a structure file",
    )
    p.add_argument(
        "--instrument",
        "-i",
        default="vision",
        metavar="NAME",
        help="vision (default), tosca, arcs, sequoia, maps, mari, merlin, generic",
    )
    p.add_argument(
        "--ei", type=float, metavar="MEV", help="incident energy in meV (direct-geometry instruments)"
    )
    p.add_argument("--order", type=int, default=3, metavar="N", help="highest phonon order (default 3)")
    p.add_argument(
        "--temperature", type=float, default=5.0, metavar="K", help="sample temperature in K (default 5)"
    )
    p.add_argument(
        "--mesh",
        type=int,
        nargs="+",
        metavar="N",
        help="Γ-centred q-mesh (1 or 3 integers; default: phonopy length 50 Å)",
    )
    p.add_argument(
        "--emax",
        type=float,
        metavar="MEV",
        help="highest energy transfer of the output (default 250 meV indirect, 0.9·Ei direct)",
    )
    p.add_argument(
        "--resolution",
        type=float,
        metavar="FWHM_MEV",
        help="generic instrument: Gaussian FWHM in meV (default 1%% of Ei)",
    )
    p.add_argument(
        "--q-range",
        type=float,
        nargs=2,
        metavar=("QMIN", "QMAX"),
        help="direct geometry: |Q| range in Å^-1 of the 1D cut written to ins.csv (default 3 9, the range "
        "`atomvib compare` uses, clipped to the map's coverage)",
    )
    p.add_argument(
        "--angles",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        help="direct geometry: detector angle range in degrees",
    )
    p.add_argument("--out", "-o", metavar="DIR", help="output directory (default INPUT_ins)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output directory")
    p.add_argument("--no-plot", action="store_true", help="skip ins.png")
    g = p.add_argument_group("phonons from a structure or from forces")
    g.add_argument("--engine", "-e", help="force engine for a structure input (see `atomvib engines`)")
    from .common import add_trust_flag

    add_trust_flag(g)
    g.add_argument("--no-relax", action="store_true", help="keep the input geometry")
    g.add_argument("--format", metavar="FMT", help="ASE format of a structure file whose name does not tell (e.g. vasp)")
    g.add_argument("--forces", metavar="FORCE_SETS", help="phonopy FORCE_SETS for a phonopy_disp.yaml input")
    g.add_argument("--born", metavar="BORN", help="phonopy BORN file")
    from .common import add_isotope_option

    add_isotope_option(p)
    p.set_defaults(func=run)


def _load(args):
    """The typed phonon source of INPUT: a saved result, phonopy files' force constants, or new phonons."""
    from ..errors import InputError
    from ..workflow import PHONOPY_INPUT_SUFFIXES, load_phonons, phonons
    from .common import isotopes_from_args, with_isotope_masses

    isotopes = isotopes_from_args(args)
    inp = Path(args.input)
    if inp.is_dir():
        return with_isotope_masses(load_phonons(inp, born=args.born), isotopes)
    if not inp.is_file():
        raise InputError(f"{inp}: no such file or directory", fix="check the path")
    if inp.suffix.lower() in PHONOPY_INPUT_SUFFIXES:
        return with_isotope_masses(load_phonons(inp, forces=args.forces, born=args.born), isotopes)
    from .common import apply_trust_flag

    apply_trust_flag(args)
    return phonons(str(inp), engine=args.engine, born=args.born, relax=not args.no_relax,
                   fmt=getattr(args, "format", None), progress=True, isotopes=isotopes)


def run(args) -> int:
    from ..errors import InputError
    from ..output import OutputDir
    from ..spectra.ins import incoherent_modes
    from ..spectra.instruments import get_instrument
    from ..spectra.neutron_data import total_cross_sections_barn
    from .common import isotopes_from_args

    _check_numbers(args)
    isotopes_from_args(args)  # a bad --isotope is refused before anything is loaded
    inst = get_instrument(args.instrument, resolution_fwhm_mev=args.resolution, angle_range_deg=args.angles)
    if args.order < 1 or args.order > 20:
        raise InputError(f"--order {args.order} out of range", fix="use 1..20")
    if inst.kind == "indirect" and args.q_range is not None:
        raise InputError(f"--q-range cuts direct-geometry maps; {inst.name} records one |Q| per energy",
                         fix="drop --q-range, or use a direct-geometry instrument (--instrument arcs --ei E)")
    if inst.kind == "direct" and args.ei is None:
        raise InputError(
            f"{inst.name} is a direct-geometry instrument and needs an incident energy", fix="add --ei MEV"
        )
    out = Path(args.out) if args.out else Path(args.input).with_name(Path(args.input).stem + "_ins")
    # before any computation: no overwrite without --force, never over an input, a place that can be written
    od = OutputDir(out, "ins", inputs=[args.input, args.forces, args.born], force=args.force).check()
    source = _load(args)
    molecule = getattr(source, "kind", None) == "molecule"
    if molecule and args.mesh is not None:
        raise InputError(
            "--mesh was given for a molecule, whose normal modes have no wave vector", fix="drop --mesh"
        )
    if getattr(source, "kind", None) == "committee":
        with od:
            files = _committee_spectrum(args, inst, source, od.stage)
        print(f"{args.input}: {inst.name.upper()} INS of a committee of {len(source.members)} engines, order "
              f"{args.order}, {args.temperature:g} K -> {out}/ ({', '.join(files)}; mean and calibrated spread)")
        return 0
    ph = source
    modes = incoherent_modes(source, temperature_k=args.temperature, mesh=args.mesh)
    total_cross_sections_barn(modes.elements)  # fail early on an element without data
    meta = {
        "instrument": inst.name,
        "order": args.order,
        "temperature_K": args.temperature,
        "source": (
            f"isolated molecule {source.structure.formula}: {len(modes.energies_mev)} normal modes (translations "
            "and rotations excluded) as one Γ point"
            if molecule
            else "crystal: phonons on a Γ-centred q-mesh"
        ),
        "mesh": list(modes.mesh),
        "msd_A2": {
            el: float(modes.msd_a2[[i for i, x in enumerate(modes.elements) if x == el]].mean())
            for el in dict.fromkeys(modes.elements)
        },
        "cross_sections_barn": total_cross_sections_barn(modes.elements),
        "cross_section_source": "Sears, Neutron News 3(3), 26 (1992): total (coherent + incoherent) bound",
        "isotopes": dict(isotopes_from_args(args)),
        "approximation": "incoherent, isotropic Debye-Waller, powder; neutron energy loss",
        "intensity_unit": "1/eV, per total scattering cross-section of the cell",
    }
    with od:
        files = _compute_and_write(args, inst, ph, modes, meta, od.stage)
    where = (
        f"molecule, {len(modes.energies_mev)} normal modes" if molecule else f"mesh {'x'.join(map(str, modes.mesh))}"
    )
    lines = [
        f"{args.input}: {inst.name.upper()} INS, order {args.order}, {args.temperature:g} K, {where} -> {out}/ "
        f"({', '.join(files + ['ins.json'])})"
    ]
    if meta["isotopes"]:
        from ..harmonic.isotopes import format_isotopes

        sig = ", ".join(f"{k} {v:g} b" for k, v in meta["cross_sections_barn"].items())
        lines.append(f"  isotopes {format_isotopes(meta['isotopes'])}: their masses in the dynamical matrix of the "
                     f"same force constants; σ_total {sig}")
    if molecule and getattr(source, "has_imaginary", False):
        lines.append("  note: imaginary modes of the molecule are left out (relax it further)")
    if "q_cut" in meta:
        q = meta["q_cut"]["q_range_ainv"]
        lines.append(f"  ins.csv: the map averaged over |Q| {q[0]:g}–{q[1]:g} Å^-1 (compare it with `atomvib compare`)")
    print("\n".join(lines))
    return 0


def _check_numbers(args) -> None:
    """The numeric options, checked before anything is computed (NaN and infinities included)."""
    import math

    from ..errors import InputError

    def bad(x, least=0.0, strict=True):
        return x is not None and not (math.isfinite(x) and (x > least if strict else x >= least))

    if bad(args.temperature, strict=False):
        raise InputError(f"--temperature {args.temperature} is not a temperature in K ≥ 0", fix="e.g. --temperature 5")
    for opt, v in (("--ei", args.ei), ("--emax", args.emax), ("--resolution", args.resolution)):
        if bad(v):
            raise InputError(f"{opt} {v} must be a finite number > 0 (meV)", fix=f"e.g. {opt} 50")
    if args.angles is not None and (not all(math.isfinite(a) for a in args.angles) or not
                                    0 <= args.angles[0] < args.angles[1] <= 180):
        raise InputError(f"--angles {args.angles[0]} {args.angles[1]} is not a range in 0–180°", fix="e.g. --angles 5 90")
    if args.mesh is not None and (len(args.mesh) not in (1, 3) or min(args.mesh) < 1):
        raise InputError(f"--mesh {' '.join(map(str, args.mesh))}: give 1 or 3 positive integers", fix="e.g. --mesh 16")
    if args.q_range is not None and (not all(math.isfinite(v) for v in args.q_range) or not
                                     0 <= args.q_range[0] < args.q_range[1]):
        raise InputError(f"--q-range {args.q_range[0]} {args.q_range[1]} is not an interval 0 ≤ QMIN < QMAX in Å^-1",
                         fix="e.g. --q-range 3 9")
    if args.ei is not None and args.emax is not None and args.emax >= args.ei:
        raise InputError(
            f"--emax {args.emax:g} meV is not below the incident energy {args.ei:g} meV", fix="lower --emax"
        )


def _committee_spectrum(args, inst, committee, out: Path) -> list[str]:
    """VISION/TOSCA spectra of every member: ins.csv with the mean, the calibrated spread and each member; the mean
    saved as the result (an InsSpectrum), the band in ins.png."""
    import dataclasses

    import pandas as pd

    from ..errors import InputError
    from ..harmonic.committee import Spread
    from ..results import _json_safe
    from ..spectra.ins import indirect_spectrum

    if inst.kind != "indirect":
        raise InputError(
            f"committee bands are computed for the 1D spectra of indirect instruments, not {inst.name}'s map",
            fix="use --instrument vision or tosca, or run `atomvib ins` on one engine's phonons",
        )
    emax = args.emax or 250.0
    specs = [indirect_spectrum(m, inst, "backward", order=args.order, temperature_k=args.temperature, mesh=args.mesh,
                               energy_range_mev=(0.5, emax)) for m in committee.members]
    spread = Spread.of([s.intensity for s in specs], committee.scale)
    cols = {"energy_meV": specs[0].energy_mev, "intensity": spread.mean, "intensity_std": spread.std}
    cols.update({f"intensity_{e}": s.intensity for e, s in zip(committee.engines, specs)})
    pd.DataFrame(cols).to_csv(out / "ins.csv", index=False, float_format="%.8g")
    mean = dataclasses.replace(
        specs[0], intensity=spread.mean, by_order=np.mean([s.by_order for s in specs], axis=0),
        by_element={k: np.mean([s.by_element[k] for s in specs], axis=0) for k in specs[0].by_element})
    mean.save(out, force=True)
    meta = {"instrument": inst.name, "bank": "backward", "order": args.order, "temperature_K": args.temperature,
            "committee": committee.engines, "scale": committee.scale, "calibration": committee.calibration,
            "columns": "intensity = mean over the members; intensity_std = their sample std × scale; one column each"}
    (out / "ins.json").write_text(json.dumps(_json_safe(meta), indent=2, allow_nan=False))
    files = ["ins.csv", "ins.json"]
    if not args.no_plot:
        from ..spectra.plots import plot_indirect_band

        plot_indirect_band(specs[0].energy_mev, spread, committee.engines, out / "ins.png", inst.name)
        files.append("ins.png")
    return files


def _compute_and_write(args, inst, ph, modes, meta, out: Path) -> list[str]:
    """The spectrum or map and its files, written into ``out`` (the staging directory); returns the file names."""
    from ..results import _json_safe
    from ..spectra.ins import default_map_de, direct_powder_map, indirect_spectrum

    if inst.kind == "indirect":
        emax = args.emax or 250.0
        back = indirect_spectrum(
            ph, inst, "backward", order=args.order, modes=modes, energy_range_mev=(0.5, emax)
        )
        fwd = indirect_spectrum(
            ph, inst, "forward", order=args.order, modes=modes, energy_range_mev=(0.5, emax)
        )
        import pandas as pd

        cols = {
            "energy_meV": back.energy_mev,
            "intensity": back.intensity,
            "intensity_forward": fwd.intensity,
        }
        cols.update(back.by_element)
        cols.update({f"order_{n}": v for n, v in enumerate(back.by_order, start=1)})
        pd.DataFrame(cols).to_csv(out / "ins.csv", index=False, float_format="%.8g")
        meta["banks"] = {
            b.name: {"angle_deg": b.angle_deg, "final_energy_meV": b.final_energy_mev} for b in inst.banks
        }
        meta["resolution_sigma_meV"] = "c0 + c1*E + c2*E^2 with " + str(list(inst.sigma_coeffs_mev))
        back.save(out, force=True)  # the backward bank as a result: atomvib.load(out), `atomvib compare out ...`
        files = ["ins.csv"]
        if not args.no_plot:
            from ..spectra.plots import plot_indirect

            plot_indirect([back, fwd], out / "ins.png")
            files.append("ins.png")
    else:
        emax = args.emax or 0.9 * args.ei
        m = direct_powder_map(
            ph,
            inst,
            args.ei,
            order=args.order,
            modes=modes,
            energy_range_mev=(0.5, emax),
            de_mev=default_map_de(emax),
        )
        m.to_hdf5(out / "ins_map.h5")
        m.save(out, force=True)
        meta["ei_meV"] = args.ei
        meta["angle_range_deg"] = list(inst.angle_range_deg)
        meta["q_cut"] = _write_cut(args, m, out / "ins.csv")
        files = ["ins_map.h5", "ins.csv"]
        if not args.no_plot:
            from ..spectra.plots import plot_map

            plot_map(m, out / "ins.png")
            files.append("ins.png")
    (out / "ins.json").write_text(json.dumps(_json_safe(meta), indent=2, allow_nan=False))
    return files


def _cut_range(args, m) -> tuple[float, float]:
    """--q-range, or 3–9 Å^-1 (compare's default) clipped to the |Q| the map covers; the whole covered range when
    that leaves less than 1 Å^-1."""
    from ..spectra.compare import DEFAULT_Q_RANGE

    if args.q_range is not None:
        return float(args.q_range[0]), float(args.q_range[1])
    lo, hi = m.covered_q_range()
    a, b = max(DEFAULT_Q_RANGE[0], lo), min(DEFAULT_Q_RANGE[1], hi)
    return (a, b) if b - a >= 1.0 else (lo, hi)


def _write_cut(args, m, path: Path) -> dict:
    """The map averaged over |Q| (detector-covered points only) as ins.csv; the first line names the range in a
    form `atomvib compare` reads back (``q_range_ainv=a,b``)."""
    q0, q1 = _cut_range(args, m)
    e, y, n = m.q_cut(q0, q1)
    head = (
        f"# atomvib ins: {m.instrument.upper()} powder map at Ei {m.ei_mev:g} meV, {m.temperature_k:g} K, orders "
        f"1-{m.order}, averaged over |Q| {q0:g}-{q1:g} 1/Angstrom on the detector-covered points "
        f"(q_range_ainv={q0:g},{q1:g}); intensity in 1/eV per total scattering cross-section\n"
        "energy_meV,intensity,n_q_points\n"
    )
    body = "\n".join(f"{a:.8g},{b:.8g},{int(c)}" for a, b, c in zip(e, y, n))
    path.write_text(head + body + "\n")
    return {"file": "ins.csv", "q_range_ainv": [q0, q1], "columns": "energy_meV, intensity (1/eV), n_q_points"}
