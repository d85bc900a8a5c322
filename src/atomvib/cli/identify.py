"""``atomvib identify``: rank candidate structures against a measured spectrum; ``atomvib candidates``: make them."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """examples:
  atomvib identify Al-iqe.h5 --candidates cands/ --ei 80 --temperature 300 --range 10 70 --engine emt --out al_id
  atomvib identify vision.csv --candidates 'polymorphs/*.cif' --instrument vision --top 5 --out which
  atomvib identify vision.csv -c 'polymorphs/*.cif' --committee sevennet,sevennet:7net-l3i5 --out which2
  atomvib identify dos.csv --candidates cands/ --kind dos --no-screen --engine emt --out id_dos
  atomvib identify vision.csv --candidates big/ --top 20 --db id.db --workers 8 --out big_id   # batch runner

what it does:
  1. first pass (every candidate, milliseconds each): the DOS predictor's DOS per element, turned into the
     instrument's spectrum (incoherent approximation: VISION/TOSCA, or the direct-geometry map cut like the
     measurement), or the DOS itself (--kind dos; also the stand-in for ir/raman, which the predictor has no
     intensities for), fitted to the measurement (frequency scale, intensity, background, broadening) and scored;
  2. second pass (the --top K best): full phonons with --engine (default sevennet:7net-l3i5; positions relaxed
     in each candidate's own cell, --relax-cell to relax the cell too; --db for the batch runner), or with each
     engine of --committee, and the instrument's spectrum from them, fitted again; stops once the best has
     probability > --decisive.
  Probabilities: p ∝ exp(-chi2/2) with the errors inflated by the model's own spread (the predictor's
  calibrated band) and by the Birge factor (the best fit's chi2_red), times a prior on the frequency scale
  (--scale-prior, σ of ln s); with several engines each engine's p, then their geometric mean (normalised).
  docs/identify.md explains each step.

outputs (in DIR):
  identify.json  ranked candidates: frequency_scale [value, std], chi2_red, chi2, similarity scores, model
                 spread, probability of each pass and final, statuses, settings, notes
  ranking.csv    the same, one row per candidate
  identify.png   the best candidates' fits over the measurement, with residuals
  the result     atomvib.load(DIR) gives the Identification
exit codes: 0 done, 1 computation failed, 2 bad input (message says how to fix it)"""

CANDIDATES_EPILOG = """examples:
  atomvib candidates hydrogen Pd.cif --sites '0.25,0.25,0.25;0.75,0.75,0.75' --count 1 --supercell 2 2 2 --out pdh
  atomvib candidates order CuAu.cif --site Cu --substitute Au=2 --supercell 2 1 1 --out orderings
  atomvib candidates order Cu.cif --site Cu --substitute vac=1 --out vacancies
  atomvib candidates disordered alloy.cif --supercell 2 2 1 --out orderings   # partial occupancies read by pymatgen

Every symmetry-distinct configuration (the space group of the decorated supercell, translations included) is
written as DIR/cand_NNN.cif, with DIR/candidates.csv (file, formula, natoms, multiplicity, occupied sites).
Then: atomvib identify MEASURED --candidates DIR ..."""


def add_parser(sub):
    from .common import add_engine_options

    p = sub.add_parser(
        "identify",
        help="which structure did I measure? rank candidate structures against a measured spectrum",
        description="Screen candidate structures with the DOS predictor, refine the best with full phonons, fit "
        "each computed spectrum to the measurement and rank the candidates by relative probability.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("measured", metavar="MEASURED", help="measured spectrum: text/CSV, S(Q,E) .h5 or NeXus 1D")
    p.add_argument("--candidates", "-c", nargs="+", required=True, metavar="PATH",
                   help="candidate structure files, directories or glob patterns (every frame of a multi-structure "
                   "file is one candidate)")
    p.add_argument("--kind", choices=("ins", "ir", "raman", "dos"), default="ins", help="what was measured (default ins)")
    g = p.add_argument_group("measurement")
    g.add_argument("--instrument", metavar="NAME", help="vision (default for a 1D INS spectrum), tosca, or arcs (default "
                   "for an S(Q,E) map), sequoia, maps, mari, merlin, generic")
    g.add_argument("--ei", type=float, metavar="MEV", help="incident energy, meV (direct geometry; unless the file says)")
    g.add_argument("--temperature", type=float, metavar="K", help="sample temperature, K (direct geometry: required "
                   "unless the file says; VISION/TOSCA default 5)")
    g.add_argument("--q-range", type=float, nargs=2, metavar=("QMIN", "QMAX"), help="|Q| range of direct-geometry "
                   "cuts, Å^-1 (default 3 9)")
    g.add_argument("--range", type=float, nargs=2, metavar=("XMIN", "XMAX"), dest="x_range",
                   help="fitted range in the measured unit, the same for every candidate (default: 0.1–0.9 Ei for a "
                   "map, else the positive part of the axis); exclude an elastic line")
    g.add_argument("--units", choices=["meV", "cm-1", "THz"], help="unit of the measured axis when its header does not say")
    g.add_argument("--order", type=int, default=3, metavar="N", help="highest phonon order of INS spectra (default 3)")
    g.add_argument("--fit", default=None, metavar="LIST",
                   help="free fit parameters among scale, background (flat), linear (flat + slope), broadening "
                   "(default scale,linear,broadening; scale,background,broadening for an S(Q,E) map)")
    g = p.add_argument_group("ranking")
    g.add_argument("--top", type=int, default=5, metavar="K", help="candidates refined with full phonons (default 5)")
    g.add_argument("--decisive", type=float, default=0.99, metavar="P",
                   help="stop refining once the best has probability > P (default 0.99; 1 never stops early)")
    g.add_argument("--no-screen", action="store_true", help="skip the DOS predictor: refine every candidate")
    g.add_argument("--scale-prior", type=float, default=0.15, metavar="SIGMA",
                   help="σ of the Gaussian prior on ln(frequency scale) (default 0.15; 0 for none)")
    g.add_argument("--no-birge", action="store_true", help="do not inflate the error bars by the best fit's chi2_red")
    g.add_argument("--model", metavar="PATH", help="DOS predictor model (default: the shipped one)")
    g.add_argument("--committee", metavar="ENGINES", help="second pass with several engines (comma-separated, e.g. "
                   "sevennet,sevennet:7net-l3i5), each fitted on its own, their probabilities pooled (geometric mean)")
    add_engine_options(p, crystal_only=True, fixed_cell=True)
    g = p.add_argument_group("second-pass phonons")
    g.add_argument("--min-length", type=float, default=10.0, metavar="A", help="automatic supercell: minimum width in "
                   "Å (default 10)")
    g.add_argument("--mesh-density", type=float, default=100.0, metavar="L", help="q-mesh density of the phonon "
                   "DOS (default 100)")
    g.add_argument("--born", choices=["auto", "predicted", "none"], default=None,
                   help="learned Born charges and eps_inf (docs/born.md) for LO-TO splitting and IR intensities: "
                   "auto (polar non-metals), predicted (every crystal), none. Default: auto for --kind ir (IR "
                   "intensities need them; without, every Γ mode counts the same), none otherwise")
    g = p.add_argument_group("second pass with the batch runner (many candidates, many workers)")
    g.add_argument("--db", metavar="URL", help="run the second pass with `atomvib batch` into this database")
    g.add_argument("--results", metavar="DIR", help="directory for the batch result files (default: <db>_results)")
    g.add_argument("--workers", "-j", type=int, metavar="N", help="local worker processes (default: available cores)")
    g.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--out", "-o", metavar="DIR", required=True, help="output directory")
    p.add_argument("--force", action="store_true", help="overwrite an existing identify.json")
    p.add_argument("--no-plot", action="store_true", help="skip identify.png")
    p.add_argument("--show", type=int, default=3, metavar="N", help="candidates in the figure (default 3)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    p.set_defaults(func=run)

    c = sub.add_parser(
        "candidates",
        help="generate candidate structures: H placements, ordered configurations of a disordered site",
        description="Write every symmetry-distinct configuration as a candidate file for `atomvib identify`.",
        epilog=CANDIDATES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("how", choices=("hydrogen", "order", "disordered"), metavar="HOW",
                   help="hydrogen (atoms on given sites), order (substitute or remove atoms of one sublattice), "
                   "disordered (a CIF with partial occupancies)")
    c.add_argument("structure", metavar="STRUCTURE", help="host / parent structure file")
    c.add_argument("--sites", metavar="'x,y,z;...'", help="hydrogen: fractional coordinates in the host cell")
    c.add_argument("--count", type=int, default=1, metavar="N", help="hydrogen: how many atoms to place (default 1)")
    c.add_argument("--element", default="H", metavar="EL", help="hydrogen: the element placed (default H)")
    c.add_argument("--min-distance", type=float, default=1.0, metavar="A",
                   help="hydrogen: drop configurations with placed atoms closer than this, Å (default 1)")
    c.add_argument("--site", metavar="EL_OR_INDICES", help="order: the sublattice, an element or indices '0,3,5'")
    c.add_argument("--substitute", action="append", metavar="EL=N", help="order: N sublattice atoms become EL "
                   "(vac=N: vacancies); repeatable")
    c.add_argument("--supercell", type=int, nargs=3, metavar="N", help="repeat the structure first (3 integers)")
    c.add_argument("--symprec", type=float, default=1e-3, metavar="A", help="symmetry tolerance, Å (default 1e-3)")
    c.add_argument("--out", "-o", metavar="DIR", required=True, help="output directory for the candidate files")
    c.add_argument("--force", action="store_true", help="write into a directory that already holds candidates")
    c.set_defaults(func=run_candidates)


def run(args) -> int:
    import dataclasses
    import math
    import warnings

    from ..errors import InputError
    from ..identify import identify
    from .common import engine_settings_from_args

    if not Path(args.measured).exists():
        raise InputError(f"measured spectrum {args.measured} not found", fix="check the path")
    for opt, pair in (("--range", args.x_range), ("--q-range", args.q_range)):
        if pair is not None and not (all(math.isfinite(v) for v in pair) and pair[0] < pair[1]):
            raise InputError(f"{opt} {pair[0]} {pair[1]} is not an interval MIN < MAX of finite numbers",
                             fix=f"e.g. {opt} {'10 70' if opt == '--range' else '3 9'}")
    if args.top < 0:
        raise InputError(f"--top {args.top} must be ≥ 0", fix="e.g. --top 5")
    from ..output import OutputDir

    od = OutputDir(args.out, "identify", inputs=[args.measured], force=args.force).check()
    base = engine_settings_from_args(args)
    settings = dataclasses.replace(base, min_supercell_length_a=args.min_length, mesh_density=args.mesh_density)
    committee = None
    if args.committee:
        from ..harmonic.committee import split_specs

        committee = split_specs(args.committee)
    fit = [t for t in args.fit.split(",") if t.strip()] if args.fit else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = identify(
            args.measured, args.candidates, kind=args.kind, instrument=args.instrument, ei_mev=args.ei,
            temperature_k=args.temperature, q_range=args.q_range, x_range=args.x_range, units=args.units,
            order=args.order, fit=fit, settings=settings, committee=committee, top_k=args.top,
            decisive=args.decisive, first_pass=not args.no_screen, born=args.born, model=args.model,
            scale_prior=args.scale_prior, rescale_errors=not args.no_birge, db=args.db, results_dir=args.results,
            workers=args.workers, scheduler=args.scheduler, progress=not args.quiet,
        )
        with od:
            res.save(od.stage)  # result.json, arrays.npz, summary.json, identify.json, ranking.csv
            if not args.no_plot:
                res.plot(od.stage / "identify.png", n=args.show)
    b = res.best
    lines = [f"{args.measured}: {len(res.candidates)} candidates ({res.mode}"
             f"{', ' + res.instrument.upper() if res.instrument else ''}, "
             f"{res.x_range[0]:g}–{res.x_range[1]:g} {res.measured.unit})", res.table(10)]
    lines += [f"  note: {n}" for n in res.notes]
    lines.append(f"  best: {b['name']} (p = {b['probability']:.4g}); written to {args.out}/")
    print("\n".join(lines))
    return 0


def run_candidates(args) -> int:
    import numpy as np

    from ..errors import InputError
    from ..identify import candidates as gen

    out = Path(args.out)
    if out.exists() and any(out.glob("cand_*")) and not args.force:
        raise InputError(f"{out} already holds candidates", fix="give another --out directory, or --force")
    if not Path(args.structure).exists():
        raise InputError(f"{args.structure} not found", fix="check the path")
    if args.how == "hydrogen":
        if not args.sites:
            raise InputError("hydrogen placements need --sites", fix="e.g. --sites '0.5,0.5,0.5;0.25,0.25,0.25'")
        try:
            sites = np.array([[float(v) for v in s.split(",")] for s in args.sites.split(";") if s.strip()])
        except ValueError:
            raise InputError(f"--sites {args.sites!r} is not 'x,y,z;x,y,z;...'", fix="e.g. --sites '0.5,0.5,0.5'") from None
        if sites.ndim != 2 or sites.shape[1] != 3:
            raise InputError(f"--sites {args.sites!r}: each site needs three coordinates", fix="e.g. --sites '0.5,0.5,0.5'")
        confs = gen.hydrogen_placements(args.structure, sites, args.count, element=args.element,
                                        supercell=args.supercell, min_distance_a=args.min_distance,
                                        symprec=args.symprec)
    elif args.how == "order":
        if not args.site or not args.substitute:
            raise InputError("ordered configurations need --site and --substitute", fix="e.g. --site Cu --substitute Au=2")
        site = args.site
        if all(t.strip().isdigit() for t in site.split(",")):
            site = [int(t) for t in site.split(",")]
        subs = {}
        for item in args.substitute:
            el, _, n = item.partition("=")
            if not el or not n.strip().isdigit():
                raise InputError(f"--substitute {item!r} is not EL=N", fix="e.g. --substitute Au=2 or vac=1")
            subs[el.strip()] = int(n)
        confs = gen.ordered_configurations(args.structure, site, subs, supercell=args.supercell, symprec=args.symprec)
    else:
        confs = gen.from_disordered_cif(args.structure, supercell=args.supercell, symprec=args.symprec)
    if not confs:
        raise InputError("no configuration passes the checks", fix="lower --min-distance or change the sites")
    paths = gen.write_candidates(confs, out)
    total = sum(c.multiplicity for c in confs)
    print(f"{len(confs)} symmetry-distinct configurations (of {total} placements) written to {out}/ "
          f"({paths[0].name} … {paths[-1].name}, candidates.csv)")
    return 0
