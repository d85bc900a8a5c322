"""Fine-tuning a SevenNet model on shared DFT force sets: wall time, peak memory, and the phonons it gives.

One run of ``atomvib.learn.finetune.finetune`` with its defaults on a crystal of
``../shared/data/phonopy-examples`` (default MgO: 2 displaced 64-atom cells, one trains, one validates), timed, with
the process's peak resident memory; then the phonons of every shared crystal against its DFT force set, for the base
model and the fine-tuned one. Like with like: each model's forces are computed on the DFT's own displaced supercells
(the DFT cell, no relaxation, the same displacements), written as a FORCE_SETS and analysed exactly as the DFT
FORCE_SETS is (``atomvib.phonons(phonopy_disp.yaml, forces=...)``: same supercell, same q-points, no NAC).

    python benchmarks/finetune.py [--crystal MgO] [--threads 2]        # writes docs/benchmarks/finetune.md
    python benchmarks/finetune.py --loo NaCl                            # fine-tune on the other four, test NaCl
    python benchmarks/finetune.py --loo NaCl --valid-fraction 0 --epochs 8   # ... 8 decayed epochs, no validation
    python benchmarks/finetune.py --base sevennet:7net-l3i5 --no-write       # fine-tune SevenNet-l3i5 instead

``--loo NAME`` writes docs/benchmarks/finetune_loo_NAME.md (unless ``--no-write``); the default run (no option
but ``--crystal``/``--threads``) writes docs/benchmarks/finetune.md.

Metrics against DFT: ω_max (max over the q-mesh and the band path), Cv and S at 300 K (per mole of primitive
cells), and the dispersion RMS: the root-mean-square frequency difference over the seekpath band path (all
branches), THz.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "phonopy-examples"
#: crystal → (input, FORCE_SETS, supercell for a unit-cell input)
CRYSTALS = {
    "NaCl": ("phonopy_disp.yaml", None),
    "MgO": ("phonopy_disp.yaml", None),
    "Al2O3": ("phonopy_disp.yaml", None),
    "CaTiO3": ("phonopy_disp.yaml", None),
    "Si": ("POSCAR-unitcell", (2, 2, 2)),  # phonopy's older layout (Si-gruneisen-orig)
}
FOLDER = {"Si": "Si-gruneisen-orig"}
MESH = 40.0
#: base-model specs → the name the tables give them
BASE_LABELS = {
    "sevennet": "SevenNet-0",
    "sevennet:7net-0": "SevenNet-0",
    "sevennet:7net-l3i5": "SevenNet-l3i5",
}


def files(name):
    d = DATA / FOLDER.get(name, name)
    inp, sc = CRYSTALS[name]
    return d / inp, d / "FORCE_SETS", sc


def dft_phonons(name, forces=None):
    import atomvib

    inp, fs, sc = files(name)
    kw = {"supercell": sc} if sc else {}
    return atomvib.phonons(inp, forces=forces or fs, mesh_density=MESH, **kw)


def model_phonons(name, engine):
    """Phonons of ``engine`` on the DFT's own displaced supercells, analysed as the DFT FORCE_SETS is."""
    from phonopy.file_IO import parse_FORCE_SETS, write_FORCE_SETS

    from atomvib.learn.finetune import read_training_data

    inp, fs, sc = files(name)
    cells = read_training_data(inp, forces=fs, supercell=sc)
    evs = engine.evaluate([c.atoms for c in cells])
    ds = parse_FORCE_SETS(filename=str(fs))
    for first, ev in zip(ds["first_atoms"], evs):
        first["forces"] = np.asarray(ev.forces)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "FORCE_SETS"
        write_FORCE_SETS(ds, filename=str(out))
        return dft_phonons(name, forces=out)


def compare(res, dft) -> dict:
    k = int(np.argmin(np.abs(dft.thermal_.temperatures_k - 300.0)))
    assert np.allclose(res.bands.qpoints, dft.bands.qpoints)
    cv, cv_dft = res.thermal_.heat_capacity_j_per_k_per_mol[k], dft.thermal_.heat_capacity_j_per_k_per_mol[k]
    return {
        "omega_max": res.omega_max_thz / dft.omega_max_thz - 1,
        "cv": cv / cv_dft - 1,
        "s": res.thermal_.entropy_j_per_k_per_mol[k] / dft.thermal_.entropy_j_per_k_per_mol[k] - 1,
        "rms_thz": float(np.sqrt(np.mean((res.bands.frequencies_thz - dft.bands.frequencies_thz) ** 2))),
        "omega_max_thz": res.omega_max_thz,
    }


def validation_rows(engines: dict, names) -> list[dict]:
    rows = []
    for name in names:
        dft = dft_phonons(name)
        for label, eng in engines.items():
            rows.append({"crystal": name, "model": label, "dft_omega_max_thz": dft.omega_max_thz,
                         **compare(model_phonons(name, eng), dft)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows, trained) -> str:
    out = ["| crystal | model | ω_max (THz) | ω_max vs DFT | Cv(300 K) | S(300 K) | dispersion RMS (THz) |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        tag = " (trained on)" if r["crystal"] in trained else ""
        out.append(
            f"| {r['crystal']}{tag} | {r['model']} | {r['omega_max_thz']:.2f} (DFT {r['dft_omega_max_thz']:.2f}) | "
            f"{100 * r['omega_max']:+.1f} % | {100 * r['cv']:+.2f} % | {100 * r['s']:+.2f} % | {r['rms_thz']:.3f} |"
        )
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crystal", default="MgO", choices=list(CRYSTALS))
    ap.add_argument("--loo", choices=list(CRYSTALS), help="fine-tune on the other crystals, test this one")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None, help="max epochs (default: FinetuneConfig's)")
    ap.add_argument("--freeze", type=int, default=None, help="freeze_layers (default: FinetuneConfig's)")
    ap.add_argument("--valid-fraction", type=float, default=None,
                    help="valid_fraction (default: FinetuneConfig's); 0 = no validation split: --epochs epochs on "
                    "every cell, learning rate decayed")  # fmt: skip
    ap.add_argument(
        "--base", default="sevennet", help="base model to fine-tune (default: sevennet = SevenNet-0)"
    )
    ap.add_argument("--no-write", action="store_true", help="print only, do not write docs/benchmarks/*.md")
    args = ap.parse_args()
    os.environ["ATOMVIB_THREADS"] = str(args.threads)
    os.environ.setdefault("ATOMVIB_WORKERS", "1")
    import torch

    try:  # launching numba's OpenMP layer (the SevenNet engines' fused kernels) resets torch's thread count to
        import numba  # every core: launch it now, then pin torch, so that the phonon evaluations keep --threads

        numba.get_num_threads()
    except ImportError:
        pass
    torch.set_num_threads(args.threads)

    from atomvib.engines import get_engine
    from atomvib.learn.finetune import FinetuneConfig, finetune

    trained = [n for n in CRYSTALS if n != args.loo] if args.loo else [args.crystal]
    cfg = FinetuneConfig()
    if args.epochs is not None:
        cfg = replace(cfg, max_epochs=args.epochs)
    if args.freeze is not None:
        cfg = replace(cfg, freeze_layers=args.freeze)
    if args.valid_fraction is not None:
        cfg = replace(cfg, valid_fraction=args.valid_fraction)
    base_label = BASE_LABELS.get(args.base, args.base)
    inputs, forces, supercells = [], [], set()
    for n in trained:
        inp, fs, sc = files(n)
        inputs.append(inp)
        forces.append(fs)
        supercells.add(sc)
    if len(supercells - {None}) > 1:
        sys.exit("one --supercell for all unit-cell inputs")
    sc = next(iter(supercells - {None}), None)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ft.pth"
        epochs_s: list[list[float]] = []  # per phase (selection, refit): seconds per epoch
        last = [time.perf_counter()]

        def tick(epoch, model, rec):
            now = time.perf_counter()
            if epoch == 0:
                epochs_s.append([])
            else:
                epochs_s[-1].append(now - last[0])
            last[0] = now

        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        r = finetune(
            inputs,
            path,
            base=args.base,
            config=cfg,
            forces=forces,
            supercell=sc,
            progress=True,
            on_epoch=tick,
        )
        wall = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        load1 = os.getloadavg()[0]
        print(r.describe(), flush=True)
        engines = {base_label: get_engine(args.base),
                   "fine-tuned": get_engine(f"sevennet:{path}", trust_model_file=True)}  # fmt: skip
        names = [args.loo] if args.loo else list(CRYSTALS)
        rows = validation_rows(engines, names)

    n_cells = r.n_train + r.n_valid

    def med(phases, i):
        return float(np.median(phases[i])) if len(phases) > i and phases[i] else float("nan")

    default_cfg = cfg == FinetuneConfig()
    if r.n_valid:
        settings = (f"lr {cfg.learning_rate:g}, at most {cfg.max_epochs} epochs, patience {cfg.patience},\n"
                    f"{'every weight trained' if not cfg.freeze_layers else f'first {cfg.freeze_layers} blocks frozen'}"
                    f", {'refit on all cells' if cfg.refit else 'no refit'}")  # fmt: skip
        epoch_rows = (
            f"| epochs run / best epoch / refit epochs | {r.epochs_run} / {r.best_epoch}"
            f"{' (stopped early)' if r.stopped_early else ''} / {r.refit_epochs} |\n"
            f"| time per epoch, selection (median; {r.n_train} training cell(s) + validation) | "
            f"{med(epochs_s, 0):.1f} s |\n"
            f"| time per epoch, refit (median; all {n_cells} cells) | {med(epochs_s, 1):.1f} s |"
        )
    else:
        settings = (f"lr {cfg.learning_rate:g}, {cfg.max_epochs} epochs on every cell, no validation split, "
                    f"{'learning rate decayed linearly to 1 %' if cfg.lr_decay else 'constant learning rate'},\n"
                    f"{'every weight trained' if not cfg.freeze_layers else f'first {cfg.freeze_layers} blocks frozen'}")  # fmt: skip
        epoch_rows = (
            f"| epochs run | {r.epochs_run} (no validation split) |\n"
            f"| time per epoch (median; all {n_cells} cells) | {med(epochs_s, 0):.1f} s |"
        )
    valid_row = (
        f"\n| validation force RMSE (vector), before → after | {r.valid_force_rmse_before:.2e} → "
        f"{r.valid_force_rmse_after:.2e} eV/Å |"
        if r.n_valid
        else ""
    )
    md = f"""## Fine-tuning {base_label} on {"the other four crystals, testing " + args.loo if args.loo else args.crystal}'s DFT forces (`atomvib finetune`)

Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, torch threads
{torch.get_num_threads()}, load average {load0:.1f} at the start and {load1:.1f} at the end (a shared machine:
absolute times are pessimistic). Data: {", ".join(trained)} (`../shared/data/phonopy-examples`, VASP PBE),
{n_cells} displaced supercells, {r.n_train} trained on, {r.n_valid} validated on; {"defaults" if default_cfg else "settings"}
(`FinetuneConfig({"" if default_cfg else "..."})`: {settings}, Huber δ {cfg.huber_delta:g} eV/Å, forces only: FORCE_SETS hold no energies).

| measure | value |
|---|---|
| wall time of `finetune` (load, base-model check, training, checkpoint) | {wall:.0f} s |
{epoch_rows}
| peak resident memory of the process | {peak_mb:.0f} MB |{valid_row}
| train force RMSE (vector), before → after | {r.train_force_rmse_before:.2e} → {r.train_force_rmse_after:.2e} eV/Å |

Phonons against DFT (each model's forces on the DFT's own displaced cells, analysed as the DFT FORCE_SETS,
mesh density {MESH:g} Å, no NAC):

{table(rows, trained)}
"""
    print(md)
    if args.no_write:
        return
    if args.loo:
        (ROOT / "docs" / "benchmarks" / f"finetune_loo_{args.loo}.md").write_text(md)
    elif (args.freeze, args.epochs, args.valid_fraction, args.base) == (None, None, None, "sevennet"):
        (ROOT / "docs" / "benchmarks" / "finetune.md").write_text(md)


if __name__ == "__main__":
    main()
