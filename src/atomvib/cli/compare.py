"""``atomvib compare``: a computed spectrum against a measured one — similarity scores and a fit."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

EPILOG = """examples:
  atomvib compare al_arcs Al-iqe.h5 --q-range 3 9 --range 10 70 --out al_vs_arcs   # an `atomvib ins --ei` map
  atomvib compare al Al-iqe.h5 --ei 80 --temperature 300 --range 10 70 --out al_vs_arcs   # phonons: map made here
  atomvib compare al_arcs/ins.csv Al-iqe.h5 --range 10 70 --out al_cut_vs_arcs     # the map's 1D cut
  atomvib compare water_ir/ir.csv water_exp.csv --units cm-1 --fit scale,linear,broadening --out water_cmp
  atomvib compare si/dos.csv si_measured.txt --fit none --out si_cmp      # similarity only

inputs:
  COMPUTED   a result directory written by atomvib (`atomvib ins/ir/raman ... --out DIR`, or a phonons
             result), atomvib's ins_map.h5, or a csv written by atomvib: ins.csv (energy_meV,intensity,...),
             ir.csv/raman.csv (wavenumber_cm1,intensity), dos.csv (frequency_thz,total,...)
  MEASURED   two/three text columns x, y[, error] ('#' comments, optional header naming the unit),
             CSV with header, an S(Q,E) histogram .h5 (iqe/data, iqe/errors = variances), or a
             Mantid-saved NeXus 1D workspace. NaNs are dropped, an unsorted axis sorted, a non-uniform
             one resampled, negative intensities kept: each is reported.

measured S(Q,E) maps: both sides are averaged over the same --q-range (default 3 9, or the range a
  cut ins.csv was made over). A computed map (ins result directory or ins_map.h5) is cut on the same
  (Q,E) bins as the measurement. A phonons result (crystal or molecule) is turned into the direct-
  geometry map of the measurement first: --ei and --temperature (unless the file records them),
  --instrument (default: the file's, else arcs), --order. A VISION/TOSCA spectrum is compared with
  a warning (its |Q| weighting is not the map's).

fit model (in the measured unit):
  measured(E) = A * [computed(E/s) (x) Gaussian(sigma)] + b0 [+ b1*(E - Eref)]
  --fit picks the free parameters: scale (s), background (b0), linear (b0 and b1), broadening (sigma);
  A is always free. frequency_scale s is defined so that measured energy = s * computed energy.

poor fits: with error bars, chi2_red > 5 (the model misses the data by more than 2 error bars rms)
  prints a warning line naming the likely causes and sets "poor_fit": true in compare.json.

outputs (in DIR):
  compare.json   similarities before and after the fit (cosine, pearson, wasserstein in the measured unit,
                 sis), frequency_scale {value, std}, every fitted value ± standard uncertainty, chi2_red,
                 poor_fit, warnings, how the computed side was made and what was done to the measured data
  compare.csv    x, measured, error, model, residual over the fitted range
  compare.png    overlay with residuals
exit codes: 0 done, 1 computation failed, 2 bad input (message says how to fix it)"""


def add_parser(sub):
    p = sub.add_parser(
        "compare",
        help="compare and fit a computed spectrum to a measurement (INS, IR, Raman, DOS)",
        description="Put a computed and a measured spectrum on one axis, report how similar they are and fit a "
        "frequency scale, intensity scale, background and extra broadening, with uncertainties.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "computed",
        metavar="COMPUTED",
        help="atomvib result directory, ins_map.h5, or csv (ins.csv, ir.csv, raman.csv, dos.csv)",
    )
    p.add_argument("measured", metavar="MEASURED", help="measured spectrum: text/CSV, S(Q,E) .h5 or NeXus 1D")
    p.add_argument(
        "--fit",
        default="scale,background,broadening",
        metavar="LIST",
        help="comma-separated free parameters among scale, background, linear, broadening; "
        "'none' for similarity only (default scale,background,broadening)",
    )
    p.add_argument(
        "--units",
        choices=["meV", "cm-1", "THz"],
        help="unit of the measured axis when its header does not say",
    )
    p.add_argument(
        "--q-range",
        type=float,
        nargs=2,
        metavar=("QMIN", "QMAX"),
        default=None,
        help="|Q| range in Å^-1 to average S(Q,E) maps over (default 3 9, or that of a cut ins.csv)",
    )
    g = p.add_argument_group("a phonons result against a measured S(Q,E) map (the direct-geometry map is computed)")
    g.add_argument("--ei", type=float, metavar="MEV", help="incident energy of the measurement in meV (if the "
                   "file does not record it)")
    g.add_argument("--temperature", type=float, metavar="K", help="sample temperature in K (if the file does not "
                   "record it)")
    g.add_argument("--instrument", metavar="NAME", help="arcs (default), sequoia, maps, mari, merlin, generic")
    g.add_argument("--order", type=int, default=3, metavar="N", help="highest phonon order (default 3)")
    p.add_argument(
        "--range",
        type=float,
        nargs=2,
        metavar=("XMIN", "XMAX"),
        default=None,
        dest="x_range",
        help="compared/fitted range in the measured unit (default: positive energies the computed "
        "spectrum can reach; exclude an elastic line)",
    )
    p.add_argument("--out", "-o", metavar="DIR", required=True, help="output directory")
    p.add_argument("--force", action="store_true", help="overwrite an existing compare.json")
    p.add_argument("--no-plot", action="store_true", help="skip compare.png")
    p.set_defaults(func=run)


def run(args) -> int:
    import math

    import numpy as np

    from ..errors import InputError
    from ..output import OutputDir
    from ..results import _json_safe
    from ..spectra.compare import compare

    out = Path(args.out)
    for path in (args.computed, args.measured):
        if not Path(path).exists():
            raise InputError(f"{path} not found", fix="check the path")
    if Path(args.measured).is_dir():
        raise InputError(f"measured spectrum {args.measured} is a directory",
                         fix="give the measured file itself (text/CSV columns, S(Q,E) .h5 or NeXus)")
    for opt, v in (("--ei", args.ei), ("--temperature", args.temperature)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise InputError(f"{opt} {v} must be a finite number > 0", fix=f"e.g. {opt} {80 if opt == '--ei' else 300}")
    if not 1 <= args.order <= 20:
        raise InputError(f"--order {args.order} out of range", fix="use 1..20")
    for opt, pair in (("--range", args.x_range), ("--q-range", args.q_range)):
        if pair is not None and not (all(math.isfinite(v) for v in pair) and pair[0] < pair[1]):
            raise InputError(f"{opt} {pair[0]} {pair[1]} is not an interval MIN < MAX of finite numbers",
                             fix=f"e.g. {opt} {'10 70' if opt == '--range' else '3 9'}")
    # before any computation: no overwrite without --force, never over an input, a place that can be written
    od = OutputDir(out, "compare", inputs=[args.computed, args.measured], force=args.force).check()
    fit = None if args.fit.strip().lower() in ("none", "") else args.fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cleaning notes are printed below and kept in compare.json
        res = compare(
            args.computed,
            args.measured,
            fit=fit,
            x_range=args.x_range,
            units=args.units,
            q_range=tuple(args.q_range) if args.q_range else None,
            ei_mev=args.ei,
            temperature_k=args.temperature,
            instrument=args.instrument,
            order=args.order,
        )
    f = res.fit
    with od:  # written into a staging directory, moved into place at the end
        stage = od.stage
        d = _json_safe(json.loads(json.dumps(res.to_dict(), default=float)))  # NaN/inf → null: strict JSON
        (stage / "compare.json").write_text(json.dumps(d, indent=2, ensure_ascii=False, allow_nan=False))
        res.save(stage)  # atomvib.load(out) gives the CompareResult (spectra, similarities, fit)
        if f is not None:
            err = f.error if f.error is not None else np.full(len(f.x), np.nan)
            np.savetxt(
                stage / "compare.csv",
                np.column_stack([f.x, f.measured, err, f.model, f.residual]),
                delimiter=",",
                header=f"x_{f.unit},measured,error,model,residual",
                comments="",
                fmt="%.8g",
            )
        if not args.no_plot:
            from ..spectra.plots import plot_fit  # matplotlib only when a figure is drawn

            plot_fit(res, stage / "compare.png")
    m = res.measured
    lines = [f"{args.computed} vs {args.measured} ({m.unit}, {res.x_range[0]:g}–{res.x_range[1]:g})"]
    lines += [f"  note: {n}" for n in res.notes]
    lines += [f"  measured: {n}" for n in m.notes]
    s = res.similarity
    lines.append(
        f"  as computed: cosine {s.cosine:.3f}, pearson {s.pearson:.3f}, "
        f"wasserstein {s.wasserstein:.3g} {m.unit}, SIS {s.sis:.3f}"
    )
    if f is not None:
        sv, sd = f.frequency_scale
        sf = res.similarity_fitted
        lines.append(
            f"  fit: frequency_scale {sv:.4f} ± {sd:.4f}, chi2_red {f.chi2_red:.3g}; after fit cosine "
            f"{sf.cosine:.3f}, SIS {sf.sis:.3f}"
        )
    lines += [f"  warning: {a}" for a in res.alerts]
    lines.append(f"  written to {out}/")
    print("\n".join(lines))
    return 0
