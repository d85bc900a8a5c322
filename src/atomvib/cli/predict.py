"""``atomvib predict`` and ``atomvib train``: the learned phonon-DOS predictor."""

from __future__ import annotations

import argparse
import json
import sys

PREDICT_EPILOG = """examples:
  atomvib predict examples/Si.cif --out si.jsonl                  # shipped model
  atomvib predict cifs/*.cif --out screen.jsonl                    # a batch: model loaded once
  atomvib predict a.cif --model runs/my-model/model.pt --out a.jsonl
  atomvib predict a.cif --ins vision --out a.jsonl                 # + predicted VISION spectrum (5 K)
  atomvib predict new_chemistry/*.cif --ood sensitive --out s.jsonl   # screening unlike the training set

output (FILE.jsonl, one JSON object per input structure):
  input, formula, formula_units, natoms
  frequencies_cm1   bin centres (5 cm^-1 bins, 0-4000 cm^-1)
  dos, dos_std      states per cm^-1 per input cell (integrates to 3*natoms), calibrated ensemble std
  thermal           temperature_K, heat_capacity_J_per_K_per_mol, entropy_J_per_K_per_mol,
                    free_energy_kJ_per_mol, each with _std; per mole of the input cell
  in_distribution   false: far from the training data, run `atomvib phonons` instead
  ood_reason        why not in distribution (unseen/rare element, unusual coordination, far in latent space,
                    unusual bonding, ...)
  ood_flag          which flag decided: standard or sensitive (--ood)
  ins_energy_meV, ins_intensity   with --ins: powder INS spectrum (backward bank, orders 1-3,
                    instrument resolution, 1/eV) from the predicted partial DOS per element,
                    incoherent isotropic approximation (see docs/predictor.md)
  error             instead of the above when the input cannot be used (molecule, unseen element)
exit codes: 0 all predicted, 2 some inputs failed (their lines say why; the others are written)"""

TRAIN_EPILOG = """examples:
  atomvib train --data ../shared/data/petretto-dfpt --out runs/dos-model --jobs 2   # the shipped model, ~25 min on 2 cores
  atomvib train --data ../shared/data/petretto-dfpt --out runs/quick --members 2 --epochs 10
  atomvib train --data my_phonon_results/ --out runs/mine    # a directory of `atomvib phonons` outputs

data: a directory with train.jsonl.gz and valid.jsonl.gz (Petretto format), or a directory searched
for `atomvib phonons` results (dos.csv + structure.cif [+ summary.json]); every 10th is held out as valid.
outputs (in DIR): member_K.pt, member_K.log (per-epoch valid metrics, JSON lines), model.pt (use with --model)."""


def add_parser(sub):
    p = sub.add_parser(
        "predict",
        help="phonon DOS, Cv, S, F of crystals in milliseconds from a trained model (with uncertainty)",
        description="Predict the phonon density of states of crystals straight from the structure with an "
        "E(3)-equivariant graph-network ensemble trained on DFPT phonons (Petretto et al. 2018).",
        epilog=PREDICT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs", nargs="+", metavar="STRUCTURE", help="structure file(s): CIF, POSCAR, extxyz, ..."
    )
    p.add_argument(
        "--model", metavar="PATH", help="model.pt from `atomvib train` (default: the shipped model)"
    )
    p.add_argument(
        "--trust-model-file",
        action="store_true",
        help="load a --model file that needs pickle (one written by an older atomvib); unpickling can run any "
        "code the file holds, so only for a file whose source you trust",
    )
    p.add_argument(
        "--out", "-o", metavar="FILE.jsonl", required=True, help="output file, one JSON line per structure"
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument(
        "--tmax", type=float, default=1000.0, metavar="K", help="highest temperature (default 1000)"
    )
    p.add_argument("--tstep", type=float, default=10.0, metavar="K", help="temperature step (default 10)")
    p.add_argument(
        "--ins",
        choices=("vision", "tosca"),
        help="also write the predicted INS spectrum of this instrument (ins_energy_meV, ins_intensity)",
    )
    p.add_argument(
        "--ins-temperature",
        type=float,
        default=5.0,
        metavar="K",
        help="sample temperature of the INS spectrum (default 5)",
    )
    p.add_argument(
        "--ood",
        choices=("standard", "sensitive"),
        default="standard",
        help="out-of-distribution flag: standard (default; about 10 %% of crystals like the training set are "
        "flagged) or sensitive (also flags crystals where half the sites have an element pair in contact that no "
        "training crystal has, e.g. Li-Te: on held-out chemistries it catches 67-100 %% of the worst predictions "
        "instead of 42-100 %%, at about 15 %% false alarms; docs/predictor.md)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no summary on stdout")
    p.set_defaults(func=run)

    t = sub.add_parser(
        "train",
        help="train a DOS-predictor ensemble (seeded; reproduces the shipped model)",
        description="Train the deep ensemble of the DOS predictor, calibrate its uncertainty on the valid split "
        "and set its out-of-distribution thresholds.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("--data", required=True, metavar="DIR", help="training data directory (see below)")
    t.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory")
    t.add_argument("--members", type=int, default=5, metavar="N", help="ensemble members (default 5)")
    t.add_argument("--epochs", type=int, default=None, metavar="N", help="epochs per member (default 70)")
    t.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of member 0; member k uses S+k (default 0)"
    )
    t.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="members trained in parallel processes (default 1)"
    )
    t.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    t.set_defaults(func=run_train)


def run(args) -> int:
    import numpy as np

    from ..errors import AtomvibError, InputError
    from ..learn.predictor import load_model
    from ..output import atomic_file, check_output_file
    from ..settings import temperature_grid
    from ..structure import read_structure

    temps = temperature_grid(args.tmax, args.tstep)  # finite, ≥ 0, a positive step: checked before the grid
    if not (np.isfinite(args.ins_temperature) and args.ins_temperature >= 0):
        raise InputError(f"--ins-temperature {args.ins_temperature} is not a temperature in K ≥ 0",
                         fix="e.g. --ins-temperature 5")
    # never over an input (the structures, the model), no overwrite without --force, a place that can be written;
    # the lines go to a temporary file beside it that replaces it at the end
    out = check_output_file(args.out, inputs=[*args.inputs, args.model], force=getattr(args, "force", False))
    model = load_model(args.model, trust_model_file=args.trust_model_file)
    ood = getattr(args, "ood", "standard")
    model.flag_rules(ood)  # a model that cannot give the sensitive flag: one error before any input is read
    failures = 0
    with atomic_file(out) as fh:
        for inp in args.inputs:
            try:
                s = read_structure(inp)
                r = model.predict([s], [inp], temps, ood=ood)[0]
                line = r.to_dict()
                if getattr(args, "ins", None):
                    from ..learn.spectra import predicted_ins_spectrum

                    sp = predicted_ins_spectrum(r, args.ins, temperature_k=args.ins_temperature)
                    line["ins_instrument"] = f"{sp.instrument} {sp.bank}, {sp.temperature_k:g} K"
                    line["ins_energy_meV"] = np.round(sp.energy_mev, 6).tolist()
                    line["ins_intensity"] = sp.intensity.tolist()
                if not args.quiet:
                    k = int(np.argmin(np.abs(r.temperatures_k - 300.0)))
                    why = f" ({r.ood_reason})" if r.ood_reason else ""
                    flag = "" if r.in_distribution else f"  OUT OF DISTRIBUTION{why}: run `atomvib phonons`"
                    z = r.formula_units or 1
                    cell = f"; the input cell {r.structure.cell_formula} has {z}" if z != 1 else ""
                    print(
                        f"{inp}: {r.structure.formula}, Cv({r.temperatures_k[k]:g} K) "
                        f"{r.heat_capacity_j_per_k_per_mol[k] / z:.2f} ± {r.heat_capacity_j_per_k_per_mol_std[k] / z:.2f}"
                        f" J/K/mol per mol {r.structure.formula} (formula unit{cell}){flag}"
                    )
            except AtomvibError as exc:
                line = {"input": inp, "error": str(exc)}
                print(f"atomvib predict: {inp}: error: {exc}", file=sys.stderr)
                failures += 1
            fh.write(json.dumps(line) + "\n")
    return 2 if failures else 0


def run_train(args) -> int:
    from dataclasses import replace

    from ..learn.train import TrainConfig, train

    cfg = TrainConfig()
    if args.epochs:
        cfg = replace(cfg, epochs=args.epochs)
    path = train(
        args.data,
        args.out,
        members=args.members,
        seed=args.seed,
        cfg=cfg,
        jobs=args.jobs,
        progress=not args.quiet,
    )
    print(f"model written to {path}")
    return 0
