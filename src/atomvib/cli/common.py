"""Options shared by several subcommands, mapped onto :class:`~atomvib.settings.PhononSettings`."""

from __future__ import annotations

from ..settings import PhononSettings, temperature_grid


def add_phonon_options(p) -> None:
    add_engine_options(p)
    g = p.add_argument_group("harmonic phonons")
    g.add_argument("--supercell", type=int, nargs="+", metavar="N",
                   help="supercell of the conventional/input cell: 3 integers or a 3×3 matrix (9 integers); default: automatic")
    g.add_argument("--min-length", type=float, default=10.0, metavar="A",
                   help="automatic supercell: minimum width in Å (default 10)")
    g.add_argument("--displacement", type=float, default=0.01, metavar="A", help="displacement amplitude in Å (default 0.01)")
    g.add_argument("--no-primitive", action="store_true", help="do not reduce a crystal to its primitive cell first")
    g.add_argument("--symprec", type=float, default=1e-3, metavar="A", help="symmetry tolerance in Å (default 1e-3)")
    g.add_argument("--mesh-density", type=float, default=100.0, metavar="L",
                   help="q-mesh density (phonopy length, Å) for DOS and thermal properties (default 100)")
    g.add_argument("--dos-step", type=float, default=0.02, metavar="THZ", help="DOS frequency step in THz (default 0.02)")
    g.add_argument("--dos-sigma", type=float, default=None, metavar="THZ", help="Gaussian DOS smearing in THz (default: tetrahedron method)")
    g.add_argument("--temperature", type=float, default=None, metavar="K",
                   help="temperature reported in summary.json (default: 300 K for crystals, 298.15 K for molecules)")
    g.add_argument("--tmax", type=float, default=1000.0, metavar="K", help="highest temperature of thermal.csv (default 1000)")
    g.add_argument("--tstep", type=float, default=10.0, metavar="K", help="temperature step of thermal.csv (default 10)")
    g.add_argument("--max-supercell-atoms", type=int, default=2000, metavar="N", help="refuse larger supercells (default 2000)")
    add_isotope_option(g)


ISOTOPE_HELP = ("isotope masses (repeatable): H=2 every H, 5=18 site 5 (counted from 0), 5:O=18 site 5 checked to be O; "
                "applied in order, to the force constants: no force is computed again (docs/isotopes.md)")


def add_isotope_option(group) -> None:
    """``--isotope TARGET=A`` (repeatable); :func:`isotopes_from_args` reads it."""
    group.add_argument("--isotope", action="append", metavar="TARGET=A", help=ISOTOPE_HELP)


def isotopes_from_args(args) -> tuple:
    """The normalised ``--isotope`` specification (``()`` for none); one-line errors for bad ones."""
    from ..harmonic.isotopes import normalise_isotopes

    return normalise_isotopes(getattr(args, "isotope", None) or ())


def with_isotope_masses(source, isotopes):
    """The phonon source of a spectrum with ``isotopes`` applied (no force evaluated): a crystal's force constants
    (all a spectrum needs: the dispersion, DOS and thermal analysis are not redone), a molecule's modes, or every
    member of a committee; ``source`` itself without isotopes."""
    if not isotopes:
        return source
    from ..harmonic.crystal import CrystalPhonons
    from ..harmonic.isotopes import refuse_fitted, with_isotopes

    if isinstance(source, CrystalPhonons):
        refuse_fitted(source)
        return with_isotopes(source.force_constants, isotopes)
    return with_isotopes(source, isotopes)


def add_engine_options(p, crystal_only: bool = False, engine_help: str | None = None,
                       fixed_cell: bool = False) -> None:
    """Engine and relaxation options (shared by phonons, kappa, qha, identify). ``fixed_cell``: the command keeps
    the cell by default and offers ``--relax-cell`` instead of ``--fix-cell``."""
    g = p.add_argument_group("force engine and relaxation")
    g.add_argument("--engine", "-e", help=engine_help or "force engine (see `atomvib engines`); default "
                   "sevennet:7net-l3i5 for crystals, xtb for molecules")
    add_trust_flag(g)
    g.add_argument("--no-relax", action="store_true", help="keep the input geometry (no relaxation)")
    if fixed_cell:
        g.add_argument("--relax-cell", action="store_true", help="relax the cell too (default: positions only, "
                       "each candidate's cell kept)")
    else:
        g.add_argument("--fix-cell", action="store_true", help="relax positions only, keep the cell")
    g.add_argument("--fmax", type=float, default=1e-3, metavar="EV_PER_A", help="relaxation force threshold in eV/Å (default 1e-3)")
    g.add_argument("--relax-steps", type=int, default=300, metavar="N", help="maximum relaxation steps (default 300)")
    if crystal_only:
        g.add_argument("--no-primitive", action="store_true", help="do not reduce the crystal to its primitive cell first")
        g.add_argument("--symprec", type=float, default=1e-3, metavar="A", help="symmetry tolerance in Å (default 1e-3)")


def engine_settings_from_args(args) -> PhononSettings:
    """PhononSettings from the options of :func:`add_engine_options` (the rest at their defaults)."""
    apply_trust_flag(args)
    return PhononSettings(
        engine=args.engine, relax=not args.no_relax,
        relax_cell=args.relax_cell if hasattr(args, "relax_cell") else not args.fix_cell, fmax_ev_per_a=args.fmax,
        relax_steps=args.relax_steps, primitive=not getattr(args, "no_primitive", False),
        symprec=getattr(args, "symprec", 1e-3),
    )


TRUST_HELP = ("load the model file of --engine sevennet:PATH, chgnet:PATH or mace:PATH although that unpickles it, "
              "which can run any code the file holds: only for a file whose source you trust (bundled models need "
              "no flag)")


def add_trust_flag(group) -> None:
    """``--trust-model-file`` (for a command's engine options); :func:`apply_trust_flag` acts on it."""
    group.add_argument("--trust-model-file", action="store_true", help=TRUST_HELP)


def apply_trust_flag(args) -> None:
    """With ``--trust-model-file``, trust the model file named by ``--engine`` (engines.registry)."""
    if getattr(args, "trust_model_file", False):
        from ..engines.registry import trust_engine_model_file

        trust_engine_model_file(getattr(args, "engine", None))


def settings_from_args(args) -> PhononSettings:
    apply_trust_flag(args)
    # --tmax/--tstep are checked before the grid is built (a zero step would never end); every other number is
    # checked once, by PhononSettings itself
    temps = temperature_grid(args.tmax, args.tstep, extra=args.temperature)
    return PhononSettings(
        engine=args.engine,
        relax=not args.no_relax,
        relax_cell=not args.fix_cell,
        fmax_ev_per_a=args.fmax,
        relax_steps=args.relax_steps,
        supercell=tuple(args.supercell) if args.supercell else None,
        min_supercell_length_a=args.min_length,
        displacement_a=args.displacement,
        primitive=not args.no_primitive,
        symprec=args.symprec,
        mesh_density=args.mesh_density,
        dos_step_thz=args.dos_step,
        dos_sigma_thz=args.dos_sigma,
        temperatures_k=tuple(temps),
        summary_temperature_k=args.temperature,
        max_supercell_atoms=args.max_supercell_atoms,
        isotopes=isotopes_from_args(args),
    )
