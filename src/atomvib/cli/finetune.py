"""``atomvib finetune``: fine-tune a SevenNet model on your own DFT forces (atomvib.learn.finetune)."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  atomvib finetune phonopy_disp.yaml --forces FORCE_SETS --out mgo.pth
  atomvib phonons POSCAR --engine sevennet:mgo.pth --trust-model-file --no-relax -o mgo-ft
  atomvib finetune a/phonopy_disp.yaml b/phonopy_disp.yaml --forces a/FORCE_SETS b/FORCE_SETS --out ab.pth
  atomvib finetune POSCAR-unitcell --forces FORCE_SETS --supercell 2 2 2 --out si.pth --valid-fraction 0 --epochs 10
  atomvib finetune md.extxyz vasprun.xml --base sevennet:7net-l3i5 --out mine.pth

data: phonopy_disp.yaml with --forces FORCE_SETS (one per yaml, same order), phonopy_params.yaml, a unit cell
with --forces and --supercell, extxyz with energies/forces(/stress), VASP vasprun.xml. Units: eV, eV/Å, eV/Å³.
FORCE_SETS hold no energies: such data train on forces alone (energy loss weight 0).
whole cells (for phonopy sets: whole displacements) are held out for validation; training stops when their
force error has not improved for --patience epochs; then the model is trained again from the base weights on
every cell, held-out ones too, for the best number of epochs (learning rate decayed to 1 %), and written.
the checkpoint is sevenn's own format (a pickle, like every SevenNet checkpoint): it is yours, just written, so
load it with --trust-model-file. Defaults were chosen by measurement, see docs/finetune.md."""


def add_parser(sub):
    from ..learn.finetune import FinetuneConfig

    d = FinetuneConfig()
    p = sub.add_parser(
        "finetune",
        help="fine-tune a SevenNet model on your own DFT forces (phonopy sets, extxyz, vasprun.xml)",
        description="Fine-tune a SevenNet model on DFT forces you have, with sevenn's own trainer, and write a "
        "checkpoint that --engine sevennet:FILE loads.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", nargs="+", metavar="DATA",
                   help="phonopy_disp.yaml, phonopy_params.yaml, unit cell, extxyz or vasprun.xml files")
    p.add_argument("--forces", "-f", nargs="+", metavar="FORCE_SETS",
                   help="FORCE_SETS for each phonopy input that holds no forces, in the same order")
    p.add_argument("--supercell", type=int, nargs="+", metavar="N",
                   help="supercell of a unit-cell input with --forces: 3 integers or 9 (a matrix)")
    p.add_argument("--out", "-o", required=True, metavar="FILE.pth", help="the fine-tuned checkpoint to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--base", "-b", default="sevennet", metavar="SPEC",
                   help="model to start from: sevennet (SevenNet-0, default), sevennet:7net-l3i5, sevennet:PATH")
    p.add_argument("--trust-model-file", action="store_true",
                   help="load the checkpoint of --base sevennet:PATH although that unpickles it (only for a file "
                   "whose source you trust; bundled models need no flag)")
    g = p.add_argument_group("training (defaults measured, docs/finetune.md)")
    g.add_argument("--epochs", type=int, default=d.max_epochs, metavar="N",
                   help=f"most epochs (default {d.max_epochs})")
    g.add_argument("--patience", type=int, default=d.patience, metavar="N",
                   help=f"stop after N epochs without a lower validation force error (default {d.patience})")
    g.add_argument("--lr", type=float, default=d.learning_rate, metavar="LR",
                   help=f"Adam learning rate (default {d.learning_rate:g})")
    g.add_argument("--freeze", type=int, default=d.freeze_layers, metavar="N",
                   help=f"keep the first N interaction blocks fixed (default {d.freeze_layers}: train every weight)")
    g.add_argument("--valid-fraction", type=float, default=d.valid_fraction, metavar="F",
                   help=f"share of the cells held out for validation (at least one; default {d.valid_fraction:g}; "
                   "0: train on all, no early stopping)")
    g.add_argument("--no-refit", action="store_true",
                   help="write the best epoch's model instead of retraining on every cell (held-out ones too) for "
                   "the number of epochs validation chose")
    g.add_argument("--energy-weight", type=float, default=d.energy_weight, metavar="W",
                   help=f"energy loss weight where the data have energies (default {d.energy_weight:g})")
    g.add_argument("--stress-weight", type=float, default=d.stress_weight, metavar="W",
                   help=f"stress loss weight (kbar) where the data have stress (default {d.stress_weight:g})")
    g.add_argument("--seed", type=int, default=d.seed, metavar="S", help="seed of the split and the shuffling")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..learn.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(
        learning_rate=args.lr,
        max_epochs=args.epochs,
        patience=args.patience,
        freeze_layers=args.freeze,
        valid_fraction=args.valid_fraction,
        refit=not args.no_refit,
        energy_weight=args.energy_weight,
        stress_weight=args.stress_weight,
        seed=args.seed,
    )
    result = finetune(
        args.data,
        args.out,
        base=args.base,
        config=cfg,
        forces=args.forces,
        supercell=args.supercell,
        trust_model_file=args.trust_model_file,
        force=args.force,
        progress=not args.quiet,
    )
    print(result.describe())
    return 0
