"""``atomvib md``: molecular dynamics with an atomvib engine; the VACF DOS and effective phonons at T."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .common import add_engine_options, apply_trust_flag

EPILOG = """examples:
  atomvib md examples/Si.cif --temperature 300 --steps 10000            # NVT Langevin, 1 fs, default engine
  atomvib md Al.cif -e emt --temperature 20 --time 20 --timestep 4 --dos --tdep   # low-T check vs harmonic
  atomvib md Si.cif --temperature 600 --time 10 --tdep                  # effective (renormalised) phonons at 600 K
  atomvib md Si.cif --temperature 300 --ensemble nve --equilibration 2000 --dos   # NVE production, energy drift
  atomvib md Si.cif --temperature 300 --ensemble npt --pressure 0       # MTK barostat + Nosé–Hoover chain
  atomvib md Si.cif --temperature 300 --steps 20000 ...                 # run again with the same options: resumes
  atomvib md POSCAR --trajectory XDATCAR --timestep 2 --dos --tdep      # your own trajectory (2 fs between frames)

what it does: reads and relaxes the structure (as `atomvib phonons`), builds the MD cell (the supercell
`atomvib phonons` would use: every width ≥ --min-length; or --supercell), draws Maxwell–Boltzmann velocities at T
(--seed), equilibrates (--equilibration steps, always thermostatted) and runs the production (--steps, or --time
in ps) with ASE's integrators: Langevin (default), Bussi or Nosé–Hoover chain for NVT, VelocityVerlet for NVE,
IsotropicMTKNPT for NPT. Forces come from the engine's fast path (SevenNet's neighbour list reused across steps).
The trajectory is appended to DIR/trajectory.extxyz every --write-every steps (positions, momenta, forces,
energy); a killed run keeps it, and the same command again continues from the last frame, with the same random
numbers (the thermostat is re-seeded from (seed, step) at every frame). A larger --steps extends a finished run.

  --dos    vibrational DOS from the mass-weighted velocity autocorrelation (total and per element; Gaussian lines
           of σ = --dos-sigma), beside the harmonic DOS of the same engine (computed in DIR/harmonic unless
           --no-harmonic); --quantum-correction adds the harmonic quantum correction factor.
  --tdep   effective harmonic force constants at T: a symmetry-constrained least-squares fit (symfc) to the MD
           displacements and forces → dispersion, DOS, thermal properties at T, an ordinary phonon result
           (`atomvib ins DIR/tdep` works on it).

outputs (in DIR, default INPUT_atomvib_md next to the input):
  trajectory.extxyz (+ .checkpoint.npz)   frames; ASE reads them: ase.io.read(path, index=':')
  summary.json   T mean ± std (± standard error), energy drift per atom per ps (NVE), steps/s, ns/day,
                 atom-steps/s; result.json, arrays.npz: the trajectory as a result (atomvib.load(DIR))
  dos/           the VACF DOS result (dos.csv, md_dos.png)      [--dos]
  tdep/          the effective phonons (phonopy.yaml, dos.csv, band.json, thermal.csv, band_dos.png,
                 md_dispersion.png with the harmonic dispersion dashed)   [--tdep]
  harmonic/      the harmonic phonons of the same engine and supercell (for the comparisons)
exit codes: 0 done, 1 computation failed, 2 bad input (a timestep that makes the energy blow up, a molecule
asked for NPT, a trajectory whose atoms do not match the structure, T ≤ 0, ...): one line saying how to fix it"""


def add_parser(sub):
    from ..dynamics.settings import MDSettings

    d = MDSettings()
    p = sub.add_parser(
        "md",
        help="molecular dynamics at temperature T; VACF DOS and effective (TDEP) phonons from the trajectory",
        description="Molecular dynamics of a crystal or molecule with any atomvib engine (ASE's integrators), and "
        "what a trajectory gives: the vibrational DOS from the velocity autocorrelation and temperature-dependent "
        "effective force constants.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", help="structure file (CIF, POSCAR, extxyz, ...)")
    p.add_argument("--out", "-o", metavar="DIR", help="output directory (default INPUT_atomvib_md)")
    p.add_argument("--force", action="store_true",
                   help="start again over a trajectory of another run in DIR (and replace other results there)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress, only errors")
    p.add_argument("--no-plot", action="store_true", help="no figures")
    p.add_argument("--format", metavar="FMT", help="ASE format of the input (or of --trajectory) when the name does not tell")
    g = p.add_argument_group("molecular dynamics")
    g.add_argument("--temperature", "-T", type=float, metavar="K",
                   help="temperature in K (> 0); required to run MD (not with --trajectory)")
    n = g.add_mutually_exclusive_group()
    n.add_argument("--steps", type=int, metavar="N", help=f"production steps (default {d.steps})")
    n.add_argument("--time", type=float, metavar="PS", help="production time in ps (instead of --steps)")
    g.add_argument("--timestep", type=float, metavar="FS",
                   help=f"timestep in fs (default {d.timestep_fs:g}; ≤ 10); with --trajectory: the time between frames")
    g.add_argument("--equilibration", type=int, default=d.equilibration_steps, metavar="N",
                   help=f"thermostatted steps before the production (default {d.equilibration_steps})")
    g.add_argument("--ensemble", choices=("nvt", "nve", "npt"), default=d.ensemble, help="default nvt")
    g.add_argument("--thermostat", choices=("langevin", "bussi", "nose-hoover"),
                   help="default langevin (nose-hoover for npt, the only one it runs)")
    g.add_argument("--friction", type=float, default=d.friction_per_ps, metavar="PER_PS",
                   help=f"Langevin friction of the production, 1/ps (default {d.friction_per_ps:g}; it broadens the "
                   "VACF DOS lines by γ/2π)")
    g.add_argument("--thermostat-time", type=float, default=d.thermostat_time_fs, metavar="FS",
                   help=f"Bussi / Nosé–Hoover time constant, fs (default {d.thermostat_time_fs:g})")
    g.add_argument("--pressure", type=float, default=d.pressure_gpa, metavar="GPA", help="NPT pressure, GPa (default 0)")
    g.add_argument("--write-every", type=int, default=d.write_every, metavar="N",
                   help=f"write a frame every N steps (default {d.write_every})")
    g.add_argument("--seed", type=int, default=d.seed, metavar="N", help="seed of velocities and thermostat noise")
    g.add_argument("--supercell", type=int, nargs="+", metavar="N",
                   help="MD supercell of the primitive cell: 3 integers or 9 (a matrix); default automatic")
    g.add_argument("--min-length", type=float, default=d.min_supercell_length_a, metavar="A",
                   help=f"automatic supercell: minimum width in Å (default {d.min_supercell_length_a:g}, as phonons)")
    g.add_argument("--max-supercell-atoms", type=int, default=d.max_supercell_atoms, metavar="N",
                   help=f"refuse larger MD cells (default {d.max_supercell_atoms})")
    g.add_argument("--no-primitive", action="store_true", help="do not reduce a crystal to its primitive cell first")
    g.add_argument("--symprec", type=float, default=d.symprec, metavar="A", help="symmetry tolerance, Å (default 1e-3)")
    g.add_argument("--trajectory", metavar="FILE",
                   help="analyse this trajectory instead of running MD (extxyz, ASE traj, XDATCAR, vasprun.xml, "
                   "LAMMPS dump; INPUT is the structure it was run from)")
    add_engine_options(p)
    g = p.add_argument_group("analyses")
    g.add_argument("--dos", action="store_true", help="vibrational DOS from the velocity autocorrelation")
    g.add_argument("--dos-sigma", type=float, default=0.1, metavar="THZ",
                   help="line width (Gaussian σ) of the VACF DOS, THz (default 0.1; needs ≥ 8/(2πσ) of production)")
    g.add_argument("--quantum-correction", action="store_true",
                   help="also the DOS times the harmonic quantum correction factor (for experiment)")
    g.add_argument("--tdep", action="store_true", help="effective force constants at T (symfc fit) and their phonons")
    g.add_argument("--modes", type=float, nargs="*", metavar="Q",
                   help="line shapes of the phonon modes at one q-point from the MD velocities (peak, shift from "
                   "the harmonic frequency, width): no value = Γ (the Raman-active optical modes), or 3 reduced "
                   "coordinates commensurate with the supercell")
    g.add_argument("--mode-sigma", type=float, default=0.1, metavar="THZ",
                   help="window width (Gaussian σ) of the mode spectra, THz (default 0.1)")
    g.add_argument("--ir", action="store_true",
                   help="IR absorption from the dipole autocorrelation (an engine that gives dipoles: xtb, pyscf), in "
                   "km/mol per cm-1 on the same scale as `atomvib ir`, beside the harmonic IR of the same engine")
    g.add_argument("--ir-sigma", type=float, default=10.0, metavar="CM1",
                   help="line width (Gaussian σ) of the MD IR spectrum, cm-1 (default 10)")
    g.add_argument("--sqe", action="store_true",
                   help="powder S(|Q|,E) directly from the trajectory (dynasor: coherent + incoherent, neutron-"
                   "weighted, every anharmonic and multiphonon process of the MD), DIR/sqe/sqe.h5 (compare reads it)")
    g.add_argument("--sqe-qmax", type=float, default=8.0, metavar="AINV", help="largest |Q|, 1/Å (default 8)")
    g.add_argument("--sqe-window", type=float, default=1.0, metavar="PS",
                   help="correlation window, ps (default 1; energy resolution ≈ 4.1 meV/window)")
    g.add_argument("--sqe-qpoints", type=int, default=2000, metavar="N", help="q-points drawn (default 2000)")
    g.add_argument("--sqe-path", action="store_true",
                   help="coherent (and incoherent) S(Q,E) along seekpath's band path at the MD cell's q-points "
                   "(dynasor), over the effective or harmonic dispersion: DIR/sqe_path/ (sqe_path.h5, .png)")
    g.add_argument("--sqe-zone", type=int, nargs=3, default=(0, 0, 0), metavar=("H", "K", "L"),
                   help="Brillouin zone G of --sqe-path, Q = G + q (default 0 0 0: the longitudinal branches of a "
                   "Bravais crystal; a G ⊥ q shows the transverse ones)")
    g.add_argument("--no-harmonic", action="store_true", help="do not compute the harmonic phonons for comparison")
    g.add_argument("--mesh-density", type=float, default=100.0, metavar="L",
                   help="q-mesh density of the effective/harmonic DOS and thermal properties (default 100)")
    from ..dynamics.sampling import SamplingSettings

    sd = SamplingSettings()
    g = p.add_argument_group("harmonic sampling instead of MD (--sampling)")
    g.add_argument("--sampling", action="store_true",
                   help="effective phonons at T without MD: self-consistent sampling of the harmonic phonon "
                   "distribution (thermal displacements, forces, symfc fit, repeat), into DIR/sampling")
    g.add_argument("--snapshots", type=int, default=sd.n_snapshots, metavar="N",
                   help=f"displaced supercells per iteration (default {sd.n_snapshots})")
    g.add_argument("--iterations", type=int, default=sd.max_iterations, metavar="N",
                   help=f"iterations at most (default {sd.max_iterations})")
    g.add_argument("--mixing", type=float, default=sd.mixing, metavar="A",
                   help=f"share of the new fit in the next force constants (default {sd.mixing:g})")
    g.add_argument("--tolerance", type=float, default=sd.tolerance_thz, metavar="THZ",
                   help=f"converged when no commensurate frequency changes by more (default {sd.tolerance_thz:g} THz)")
    g.add_argument("--statistics", choices=("quantum", "classical"), default=sd.statistics,
                   help="thermal amplitudes with zero-point motion (quantum, default) or k_BT/(mω²) as MD")
    p.set_defaults(func=run)


def md_settings_from_args(args):
    from .. import units
    from ..dynamics.settings import MDSettings
    from ..errors import InputError

    d = MDSettings()
    # with --trajectory, --timestep is the time between the file's frames (read_trajectory), not an MD setting
    dt = args.timestep if (args.timestep is not None and not args.trajectory) else d.timestep_fs
    steps = args.steps if args.steps is not None else d.steps
    if args.time is not None:
        if not (args.time == args.time and 0 < args.time < 1e7):
            raise InputError(f"--time must be a positive time in ps, got {args.time!r}", fix="give e.g. --time 10")
        if not (dt == dt and 0 < dt <= 10):
            MDSettings(timestep_fs=dt)  # the one message for a bad timestep
        steps = int(round(args.time / units.FS_TO_PS / dt))
    if args.temperature is None and not args.trajectory:
        raise InputError("--temperature is required to run MD", fix="give a temperature in K, e.g. --temperature 300")
    return MDSettings(
        temperature_k=args.temperature if args.temperature is not None else d.temperature_k, timestep_fs=dt, steps=steps, equilibration_steps=args.equilibration,
        ensemble=args.ensemble, thermostat=args.thermostat, friction_per_ps=args.friction,
        thermostat_time_fs=args.thermostat_time, pressure_gpa=args.pressure, write_every=args.write_every,
        supercell=tuple(args.supercell) if args.supercell else None, min_supercell_length_a=args.min_length,
        max_supercell_atoms=args.max_supercell_atoms, seed=args.seed, engine=args.engine, relax=not args.no_relax,
        relax_cell=not args.fix_cell, fmax_ev_per_a=args.fmax, relax_steps=args.relax_steps,
        primitive=not args.no_primitive, symprec=args.symprec,
    )


def run(args) -> int:
    from ..errors import InputError, OutputExistsError
    from ..progress import as_progress
    from ..results import is_result_dir, read_summary

    apply_trust_flag(args)
    settings = md_settings_from_args(args)
    inp = Path(args.input)
    out = Path(args.out) if args.out else inp.with_name(f"{inp.stem}_atomvib_md")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a directory", fix="give a directory for the results")
    if is_result_dir(out) and read_summary(out).get("kind") != "md_trajectory" and not args.force:
        raise OutputExistsError(f"{out} holds another command's results ({read_summary(out).get('kind')})",
                                fix="give another --out directory, or --force")
    progress = as_progress(not args.quiet)
    if args.sampling:
        return _sampling(args, settings, out, progress)
    if args.dos and not args.trajectory:
        _check_dos_length(settings, args.dos_sigma)
    if args.modes is not None and not args.trajectory:
        _check_dos_length(settings, args.mode_sigma, "--mode-sigma", "mode line width")
    if args.trajectory:
        traj = _user_trajectory(args, settings, progress)
    else:
        from ..dynamics.md import run_md

        traj = run_md(args.input, settings=settings, out=out / "trajectory.extxyz", progress=progress,
                      force=args.force, fmt=args.format)
    out.mkdir(parents=True, exist_ok=True)
    traj.save(out, force=True)
    need = args.dos or args.tdep or args.modes is not None or args.sqe_path
    harmonic = _harmonic(args, traj, settings, out, progress) if need else None
    lines = [report(args.input, traj)]
    if args.dos:
        lines.append(_dos(args, traj, harmonic, out, progress))
    eff = None
    if args.tdep:
        line, eff = _tdep(args, traj, harmonic, out, progress)
        lines.append(line)
    if args.modes is not None:
        lines.append(_modes(args, traj, eff if eff is not None else harmonic, out))
    if args.ir:
        lines.append(_ir(args, traj, out, progress))
    if args.sqe:
        lines.append(_sqe(args, traj, out, progress))
    if args.sqe_path:
        lines.append(_sqe_path(args, traj, eff if eff is not None else harmonic, out, progress))
    lines.append(f"  written to {out}/")
    if not args.quiet:
        print("\n".join(x for x in lines if x))
    return 0


def _check_dos_length(settings, sigma_thz, option: str = "--dos-sigma", what: str = "DOS line width") -> None:
    """Refuse, before the MD, a production too short for the DOS line width asked for (see vacf_dos)."""
    import math

    from .. import units
    from ..dynamics.vacf import WINDOW_SIGMAS
    from ..errors import InputError

    if not (sigma_thz == sigma_thz and sigma_thz > 0):
        raise InputError(f"{option} must be > 0 THz, got {sigma_thz!r}", fix="give a width such as 0.1 THz")
    length_ps = settings.steps * settings.timestep_fs * units.FS_TO_PS
    need_ps = 2 * WINDOW_SIGMAS / (2 * math.pi * sigma_thz)
    if length_ps < need_ps:
        raise InputError(
            f"a production of {length_ps:.3g} ps is too short for a {what} of {sigma_thz:g} THz "
            f"(it needs {need_ps:.3g} ps)",
            fix=f"give --time {math.ceil(need_ps * 10) / 10:g} or more, or {option} "
            f"{math.ceil(2 * WINDOW_SIGMAS / (2 * math.pi * max(length_ps, 1e-9)) * 100) / 100:g}",
        )


def _user_trajectory(args, settings, progress):
    import dataclasses

    from ..dynamics.md import read_trajectory
    from ..workflow import load_input

    structure = load_input(args.input, fmt=None)
    with progress.stage(f"reading {args.trajectory}"):
        traj = read_trajectory(args.trajectory, None, timestep_fs=args.timestep, fmt=args.format)
    unit = structure.primitive(settings.symprec) if (settings.primitive and not structure.is_molecule) else structure
    return dataclasses.replace(traj, unitcell=None if structure.is_molecule else unit, settings=None)


def _harmonic(args, traj, settings, out, progress):
    """Harmonic phonons of the same engine in the MD supercell (None for molecules, user trajectories without an
    engine, or --no-harmonic)."""
    if args.no_harmonic or traj.unitcell is None or traj.engine is None or traj.supercell_matrix is None:
        return None
    import atomvib

    from ..results import is_result_dir, load

    d = out / "harmonic"
    smat = tuple(int(x) for x in traj.supercell_matrix.ravel())
    if is_result_dir(d):
        r = load(d)
        if tuple(int(x) for x in r.force_constants.supercell_matrix.ravel()) == smat and \
                r.engine.identity() == traj.engine.identity() and r.settings.mesh_density == args.mesh_density:
            return r
    progress.message("harmonic phonons of the same engine and supercell, for comparison")
    r = atomvib.phonons(traj.unitcell, engine=traj.engine.spec or settings.engine, relax=False, primitive=False,
                        supercell=smat, symprec=settings.symprec, mesh_density=args.mesh_density,
                        checkpoint_dir=d, progress=progress)
    r.save(d, force=True)
    return r


def _dos(args, traj, harmonic, out, progress) -> str:
    from ..dynamics.vacf import commensurate_frequencies, harmonic_md_spectrum, vacf_dos

    with progress.stage("VACF DOS"):
        d = vacf_dos(traj, sigma_thz=args.dos_sigma, quantum_correction=args.quantum_correction)
    d.save(out / "dos", force=True)
    ref = None
    if harmonic is not None:
        fr = commensurate_frequencies(harmonic, traj.supercell_matrix)
        fric = traj.settings.friction_per_ps if (traj.settings and traj.settings.ensemble == "nvt"
                                                 and traj.settings.thermostat_name == "langevin") else 0.0
        ref = harmonic_md_spectrum(fr, d.frequencies_thz, d.sigma_thz, fric)
    if not args.no_plot:
        from ..dynamics.plots import plot_md_dos

        plot_md_dos(d, out / "dos" / "md_dos.png", harmonic=harmonic, reference=ref)
    line = f"  VACF DOS: {d.n_frames} frames at {d.temperature_k:.1f} K, σ {d.sigma_thz:g} THz, highest peak " \
           f"{d.omega_max_thz:.3f} THz"
    if ref is not None:
        from ..dynamics.vacf import dos_overlap, highest_peak

        line += (f" (harmonic, same cell and width: {highest_peak(d.frequencies_thz, ref):.3f} THz; DOS overlap "
                 f"{dos_overlap(d.frequencies_thz, d.total, d.frequencies_thz, ref):.3f})")
    for note in d.notes:
        line += f"\n  WARNING: {note}"
    return line


def _tdep(args, traj, harmonic, out, progress) -> str:
    from ..dynamics.tdep import effective_phonons
    from ..settings import PhononSettings

    ps = PhononSettings(symprec=traj.settings.symprec if traj.settings else args.symprec,
                        mesh_density=args.mesh_density, primitive=not args.no_primitive)
    structure = args.input if traj.settings is None else None
    eff = effective_phonons(traj, structure, settings=ps, progress=progress)
    eff.save(out / "tdep", force=True)
    if not args.no_plot:
        from ..dynamics.plots import plot_effective_dispersion
        from ..plot import plot_band_dos

        plot_band_dos(eff, out / "tdep" / "band_dos.png")
        plot_effective_dispersion(eff, out / "tdep" / "md_dispersion.png", harmonic=harmonic)
    line = (f"  effective phonons at {eff.temperature_k:.1f} K ({eff.n_frames} frames, force residual "
            f"{100 * eff.force_residual:.1f} %): omega_max {eff.omega_max_thz:.3f} THz, lowest "
            f"{eff.min_frequency_thz:.3f} THz")
    if harmonic is not None:
        line += f" (harmonic: {harmonic.omega_max_thz:.3f}, lowest {harmonic.min_frequency_thz:.3f} THz)"
    if eff.has_imaginary:
        line += f"\n  effective phonons still unstable: {eff.instability.describe()}"
    if eff.distorted:
        line += (f"\n  WARNING: the atoms sit {eff.site_offset_max_a:.2f} Å off their reference sites on average: the "
                 "trajectory is in a distorted phase (e.g. frozen tilts), and these force constants describe "
                 "fluctuations about the high-symmetry structure it does not have")
    return line, eff


def _modes(args, traj, phonons, out) -> str:
    """Line shapes at one q-point (DIR/modes) from the velocities projected on ``phonons``' eigenvectors."""
    from ..dynamics.modes import mode_spectra
    from ..errors import InputError

    if phonons is None:
        raise InputError("--modes needs phonons of the same crystal to project on",
                         fix="drop --no-harmonic (or add --tdep)")
    q = tuple(args.modes) if args.modes else (0.0, 0.0, 0.0)
    if len(q) != 3:
        raise InputError(f"--modes takes 3 reduced coordinates, got {len(q)}", fix="give e.g. --modes 0 0 0")
    m = mode_spectra(traj, phonons, q, sigma_thz=args.mode_sigma,
                     structure=args.input if traj.settings is None else None)
    m.save(out / "modes", force=True)
    if not args.no_plot:
        from ..dynamics.plots import plot_mode_spectra

        plot_mode_spectra(m, out / "modes" / "modes.png")
    lines = [f"  modes at q = {list(q)} ({m.n_frames} frames at {m.temperature_k:.1f} K, window σ {m.sigma_thz:g} THz):"]
    for h, p, w in zip(m.harmonic_frequencies_thz, m.peak_frequencies_thz, m.fwhm_thz):
        if p == p:
            lines.append(f"    {h:8.3f} THz harmonic → peak {p:8.3f} THz ({p - h:+.3f}), FWHM {w:.3f} THz")
    return "\n".join(lines)


def _sqe(args, traj, out, progress) -> str:
    """Powder S(|Q|, E) from the trajectory (DIR/sqe)."""
    from ..dynamics.sqw import trajectory_sqe

    with progress.stage(f"S(|Q|,E) from the trajectory (dynasor, {args.sqe_qpoints} q-points)"):
        s = trajectory_sqe(traj, q_max_ainv=args.sqe_qmax, window_ps=args.sqe_window, max_qpoints=args.sqe_qpoints)
    s.save(out / "sqe", force=True)
    if not args.no_plot:
        from ..dynamics.plots import plot_md_sqe

        plot_md_sqe(s, out / "sqe" / "sqe.png")
    line = (f"  S(|Q|,E) from {s.n_frames} frames at {s.temperature_k:.1f} K: |Q| {s.q_ainv.min():.2f}–"
            f"{s.q_ainv.max():.2f} 1/Å in {len(s.q_ainv)} shells, E to {s.energy_mev.max():.1f} meV "
            f"(window {s.window_ps:g} ps)")
    for note in s.notes:
        line += f"\n  note: {note}"
    return line


def _ir(args, traj, out, progress) -> str:
    """IR from the dipole autocorrelation (DIR/ir), with the harmonic IR of the same engine for a molecule."""
    from ..dynamics.dipole import dipole_ir

    with progress.stage("IR from the dipole autocorrelation"):
        ir = dipole_ir(traj, sigma_cm1=args.ir_sigma)
    ir.save(out / "ir", force=True)
    ref = None
    if not args.no_harmonic and traj.unitcell is None and traj.engine is not None and traj.settings is not None:
        import atomvib

        from ..spectra.ir import ir_spectrum

        progress.message("harmonic IR of the same engine, for comparison")
        vib = atomvib.phonons(traj.structure, engine=traj.engine.spec or traj.settings.engine, relax=True,
                              checkpoint_dir=out / "harmonic", progress=progress)
        ref = ir_spectrum(vib)
    if not args.no_plot:
        from ..dynamics.plots import plot_md_ir

        plot_md_ir(ir, out / "ir" / "ir_md.png", harmonic=ref)
    top = ir.wavenumbers_cm1[np.argsort(ir.intensity)[::-1][:1]]
    line = (f"  IR from the dipole autocorrelation ({ir.n_frames} frames at {ir.temperature_k:.1f} K, σ {ir.sigma_cm1:g} "
            f"cm-1): total {ir.band(0, np.inf):.1f} km/mol, strongest at {float(top[0]):.0f} cm-1")
    if ref is not None:
        line += f" (harmonic: total {float(np.sum(ref.intensities)):.1f} km/mol)"
    for note in ir.notes:
        line += f"\n  WARNING: {note}"
    return line


def _sampling(args, settings, out, progress) -> int:
    """--sampling: effective phonons at T by self-consistent harmonic sampling, into DIR/sampling."""
    from ..dynamics.sampling import SamplingSettings, sampled_phonons
    from ..settings import PhononSettings

    sampling = SamplingSettings(n_snapshots=args.snapshots, max_iterations=args.iterations, mixing=args.mixing,
                                tolerance_thz=args.tolerance, statistics=args.statistics, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    ps = PhononSettings(symprec=settings.symprec, mesh_density=args.mesh_density, primitive=False)
    eff = sampled_phonons(args.input, settings=settings, sampling=sampling, phonon_settings=ps,
                          checkpoint_dir=out / "checkpoint", progress=progress, fmt=args.format)
    eff.save(out / "sampling", force=True)
    if not args.no_plot:
        from ..dynamics.plots import plot_sampling_convergence
        from ..plot import plot_band_dos

        plot_band_dos(eff, out / "sampling" / "band_dos.png")
        plot_sampling_convergence(eff, out / "sampling" / "convergence.png")
    rep = eff.sampling
    it = rep["iterations"][-1]
    lines = [f"{args.input}: effective phonons at {settings.temperature_k:g} K by harmonic sampling "
             f"({sampling.statistics}, {sampling.n_snapshots} snapshots × {len(rep['iterations'])} iterations, "
             f"{'converged' if rep['converged'] else 'NOT converged'}: max |Δω| {it['max_abs_dfreq_thz']:.3f} THz)",
             f"  omega_max {eff.omega_max_thz:.3f} THz, lowest {eff.min_frequency_thz:.3f} THz, force residual "
             f"{100 * eff.force_residual:.1f} %, u_rms {eff.displacement_rms_a:.3f} Å"]
    for note in rep.get("notes", ()):
        lines.append(f"  WARNING: {note}")
    if eff.has_imaginary:
        lines.append(f"  effective phonons still unstable: {eff.instability.describe()}")
    lines.append(f"  written to {out}/sampling/")
    if not args.quiet:
        print("\n".join(lines))
    return 0


def report(inp, traj) -> str:
    s = traj.statistics()
    st = traj.settings
    head = f"{inp}: {traj.structure.formula}, {traj.natoms} atoms"
    if traj.engine is not None:
        head += f", {traj.engine.describe()}"
    lines = [head]
    if st is not None:
        lines.append(f"  {st.ensemble.upper()} ({st.thermostat_name if st.ensemble != 'nve' else 'NVE production'}), "
                     f"{st.timestep_fs:g} fs, {st.equilibration_steps} + {st.steps} steps, frame every {st.write_every}")
    if "temperature_mean_K" in s:
        lines.append(f"  T = {s['temperature_mean_K']:.1f} ± {s['temperature_std_K']:.1f} K (standard error "
                     f"{s['temperature_sem_K']:.1f} K) over {s['n_frames']} frames, {s['time_ps']:.3g} ps")
    if "energy_drift_ev_per_atom_per_ps" in s and st is not None and st.ensemble == "nve":
        lines.append(f"  energy drift {s['energy_drift_ev_per_atom_per_ps']:+.2e} eV/atom/ps")
    perf = traj.timings
    if perf.get("steps_per_s"):
        lines.append(f"  {perf['steps_per_s']:.1f} steps/s, {perf['ns_per_day']:.3g} ns/day, "
                     f"{perf['atom_steps_per_s']:.3g} atom-steps/s")
    return "\n".join(lines)


def _sqe_path(args, traj, phonons, out, progress) -> str:
    """Coherent S(Q, E) along the band path (DIR/sqe_path), over the dispersion of ``phonons``."""
    from ..dynamics.sqw import trajectory_sqe_path

    with progress.stage("S(Q,E) along the band path from the trajectory (dynasor)"):
        s = trajectory_sqe_path(traj, zone=tuple(args.sqe_zone), window_ps=args.sqe_window,
                                structure=None if traj.unitcell is not None else args.input)
    s.save(out / "sqe_path", force=True)
    if not args.no_plot:
        from ..dynamics.plots import plot_md_sqe_path

        disp = None
        if phonons is not None:
            b = phonons.band_structure()
            disp = (b.distances, b.frequencies_thz)
        plot_md_sqe_path(s, out / "sqe_path" / "sqe_path.png", disp)
    line = (f"  S(Q,E) along {' '.join(s.label_names)}: {len(s.distances_ainv)} q-points of the MD cell, "
            f"zone {tuple(int(v) for v in s.zone)}, window {s.window_ps:g} ps")
    for note in s.notes:
        line += f"\n  note: {note}"
    return line
