"""Does the calibrated spread of the learned Born charges hold away from the training data? (issues 16, 18)

The shipped Born-charge ensemble's spread is calibrated on valid (``train_born.py --calibrate``): a floor and a
split-conformal factor per flag group (:class:`atomvib.learn.calibration.FloorCalibration`). Valid is drawn from
the training distribution, so this measures it where it matters: leave-cluster-out ensembles, as
``calibrate_shift.py`` does for the DOS predictor (same clusters; train + valid only, the test split is never read).

For each split a reduced ensemble (:data:`CONFIG`, :data:`HYPER`, seeds 0–2) is trained on train minus the cluster,
with valid minus the cluster for the best epoch. Its spread is calibrated on that valid exactly as the shipped
model's (the flag group of every crystal is the standard flag of the same split's reduced DOS model), and measured
on valid (2-fold: fitted on one half, measured on the other) and on the whole held-out cluster::

    OMP_NUM_THREADS=1 python scripts/born_shift.py train --split rocksalt --seed 0 &   # seeds 0-2, each split
    python scripts/born_shift.py report      # scripts/validation_cache/born_shift.json and the table
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("ATOMVIB_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import calibrate_shift as cs  # noqa: E402
import train_born as tb  # noqa: E402

SPLITS = ("in-distribution", "rocksalt", "heavy-chalcogenides", "hydrides", "tellurides")
MEMBERS = (0, 1, 2)
#: the reduced recipe: the width of born.pt 1.0 (4× fewer parameters than the shipped 2.0) and 30 epochs
CONFIG = dict(tb.CONFIG, hidden="32x0e + 8x1o + 8x1e + 8x2e", emb_dim=32)
HYPER = dict(tb.HYPER, epochs=30, max_minutes=25.0)
CACHE = cs.ROOT / "scripts" / "validation_cache" / "born_shift.json"


def _parts(split):
    """(train, valid, cluster) BornSamples of a split (the cluster: its held-out crystals from train and valid)."""
    held = set(json.loads((cs.RUNS / "clusters.json").read_text())[split])
    train, valid = tb.samples("train"), tb.samples("valid")
    return ([s for s in train if s.id not in held], [s for s in valid if s.id not in held],
            [s for s in train + valid if s.id in held])


def cmd_train(args):
    import time

    import torch

    from atomvib.learn.born import train_member
    from atomvib.learn.modelfile import save_torch_file

    torch.set_num_threads(1)
    train, valid, _ = _parts(args.split)
    out = cs.RUNS / f"born_{args.split}"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    state, hist = train_member(train, valid, args.seed, CONFIG, log=lambda m: print(m, flush=True), **HYPER)
    save_torch_file({"config": CONFIG, "state_dict": state, "seed": args.seed, "history": hist,
                     "train_minutes": (time.perf_counter() - t0) / 60}, out / f"member{args.seed}.pt")


def _flags(split, part, ids, sensitive: bool = False) -> np.ndarray:
    """The flag of the split's reduced DOS model for these crystals (flagged = True): the standard rules, or the
    sensitive flag (bond novelty from ``flag_study.py collect``)."""
    from dataclasses import replace

    from atomvib.learn.calibration import FlagRules, flag

    ev = cs.EvalSet(cs.RUNS / split / f"{part}.npz", split, part, {})
    feats, rules = ev.feats, FlagRules()
    if sensitive:
        study = np.load(cs.RUNS / split / "flagstudy.npz")
        assert (study[f"{part}_ids"] == ev.ids).all()
        feats, rules = replace(feats, bond_novelty=study[f"{part}_bond_novelty"]), rules.sensitive()
    flagged = dict(zip(ev.ids, ~flag(feats, rules)[0]))
    return np.array([bool(flagged[i]) for i in ids])


def _components(samples, preds, flagged):
    """tb._components with the flag group given (the predictions carry no flag of their own here)."""
    from dataclasses import replace

    return tb._components(samples, [replace(p, in_distribution=not f) for p, f in zip(preds, flagged)])


def cmd_report(args):
    import torch

    from atomvib.learn.born import assemble, component_mae, load_born_model, save_born_model
    from atomvib.learn.calibration import fit_floor_calibration

    torch.set_num_threads(1)
    res = {"config": CONFIG, "hyper": HYPER, "members": list(MEMBERS), "splits": {}}
    for split in SPLITS:
        out = cs.RUNS / f"born_{split}"
        if not all((out / f"member{k}.pt").exists() for k in MEMBERS):
            print(f"{split}: not trained")
            continue
        train, valid, cluster = _parts(split)
        members = [torch.load(out / f"member{k}.pt", weights_only=True) for k in MEMBERS]
        path = save_born_model(assemble([{k: m[k] for k in ("config", "state_dict", "seed")} for m in members],
                                        train, "shift", {}, CONFIG["cutoff_a"]), out / "born.pt")
        model = load_born_model(path)
        r = {"n_train": len(train), "train_minutes": [round(m["train_minutes"], 1) for m in members]}
        comps, sens = {}, {}
        for part, smp in (("valid", valid), ("cluster", cluster)):
            seen = [s for s in smp if {int(z) for z in s.structure.numbers} <= model.elements]
            if not seen:
                continue
            preds = model.predict([s.structure for s in seen], ood=False)
            flagged = _flags(split, part, [s.id for s in seen])
            comps[part] = _components(seen, preds, flagged)
            sens[part] = _components(seen, preds, _flags(split, part, [s.id for s in seen], sensitive=True))
            mae = component_mae(seen, [(p.born, p.dielectric) for p in preds])
            r[part] = {"n": len(seen), "n_unseen_element": len(smp) - len(seen), "born_mae_e": mae["born_mae_e"],
                       "eps_mae": mae["eps_mae"],
                       "n_flagged": int(flagged.sum())}
        for q in ("born", "dielectric"):
            a = comps["valid"][q]
            fold = a[:, 4].astype(int) % 2
            hits = {"valid_before": tb._coverage(a)}
            cv = []
            for f in (0, 1):  # in distribution: fitted on one half of valid, measured on the other
                fit = a[fold != f]
                cal = fit_floor_calibration(fit[:, 0], fit[:, 1], fit[:, 2], fit[:, 3] > 0, tb.FLOORS[q])
                part = a[fold == f]
                cv.append((tb._coverage(part, cal), part[:, 2].sum()))
            hits["valid_after"] = sum(c * w for c, w in cv) / sum(w for _, w in cv)
            full = fit_floor_calibration(a[:, 0], a[:, 1], a[:, 2], a[:, 3] > 0, tb.FLOORS[q])
            hits["calibration"] = full.to_dict()
            if "cluster" in comps:
                c = comps["cluster"][q]
                hits["cluster_before"] = tb._coverage(c)
                hits["cluster_after"] = tb._coverage(c, full)
                for name, m in (("flagged", c[:, 3] > 0), ("in_distribution", c[:, 3] == 0)):
                    hits[f"cluster_after_{name}"] = tb._coverage(c[m], full) if m.any() else float("nan")
                    hits[f"cluster_n_{name}"] = int(len(np.unique(c[m, 4])))
                # the same, with the sensitive flag deciding the group (fitted and applied)
                sv, sc = sens["valid"][q], sens["cluster"][q]
                scal = fit_floor_calibration(sv[:, 0], sv[:, 1], sv[:, 2], sv[:, 3] > 0, tb.FLOORS[q])
                hits["cluster_after_sensitive_groups"] = tb._coverage(sc, scal)
                hits["cluster_n_flagged_sensitive"] = int(len(np.unique(sc[sc[:, 3] > 0, 4])))
                hits["calibration_sensitive_groups"] = scal.to_dict()
            r[q] = hits
        res["splits"][split] = r
        print(split, json.dumps(r, default=float)[:1500], flush=True)
    CACHE.write_text(json.dumps(res, indent=1, default=float))
    table(res)


def table(res=None):
    res = res or json.loads(CACHE.read_text())

    def pct(x):
        return "–" if x is None or not np.isfinite(x) else f"{100 * x:.0f}"

    print("| split | crystals: valid / held out | Z* MAE (e): valid / held out | Z* 90 % cov. valid, before → after | "
          "Z* held out, before → after (flagged / not) | Z* held out, sensitive groups | ε∞ valid, before → after | "
          "ε∞ held out, before → after | ε∞ held out, sensitive groups |")
    print("|---|---|---|---|---|---|---|---|---|")
    for split, r in res["splits"].items():
        z, e = r["born"], r["dielectric"]
        cl = r.get("cluster")
        print(f"| {split} | {r['valid']['n']} / {cl['n'] if cl else '–'} | {r['valid']['born_mae_e']:.3f} / "
              f"{cl['born_mae_e']:.3f} | " if cl else f"| {split} | {r['valid']['n']} / – | {r['valid']['born_mae_e']:.3f} / – | ",
              end="")
        print(f"{pct(z['valid_before'])} → {pct(z['valid_after'])} | "
              + (f"{pct(z['cluster_before'])} → **{pct(z['cluster_after'])}** ({pct(z['cluster_after_flagged'])} of "
                 f"{z['cluster_n_flagged']} / {pct(z['cluster_after_in_distribution'])} of "
                 f"{z['cluster_n_in_distribution']}) | {pct(z['cluster_after_sensitive_groups'])} "
                 f"({z['cluster_n_flagged_sensitive']} flagged) | " if cl else "– | – | ")
              + f"{pct(e['valid_before'])} → {pct(e['valid_after'])} | "
              + (f"{pct(e['cluster_before'])} → **{pct(e['cluster_after'])}** | "
                 f"{pct(e['cluster_after_sensitive_groups'])} |" if cl else "– | – |"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("train", "report", "table"))
    ap.add_argument("--split", choices=SPLITS)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    {"train": cmd_train, "report": cmd_report, "table": lambda a: table()}[args.command](args)


if __name__ == "__main__":
    main()
