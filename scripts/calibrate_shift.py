"""Calibration of the DOS predictor's intervals and OOD flag under distribution shift (issue 18).

Leave-cluster-out experiments on Petretto train+valid (the test split is never read):

* ``in-distribution``: the standard train/valid split (the like-for-like reference);
* ``tellurides``: every crystal with a Te atom whose nearest neighbour is not O or a halogen (Te²⁻); tellurates and
  Te(IV) halides stay in training, so Te is rare but seen;
* ``rocksalt``: the rock-salt prototype (space group 225, AB, Wyckoff a + b; PbTe, PbSe, SnSe, …);
* ``hydrides``: every crystal with an H atom bonded to a metal (nearest neighbour not B, C, N, O, P, S, halogen);
  hydroxides, amides and hydrosulfides stay, so H is seen only in other coordinations;
* ``heavy-chalcogenides``: crystals with an element Z > 50 and a chalcogen or pnictogen, and no H, B, C, N, O or
  halogen (the thermoelectric-like chemistry: PbTe, Bi2Te3-like, half-Heuslers, …).

For each split a reduced ensemble (:data:`REDUCED`, :data:`MEMBERS` members) is trained on train minus the cluster,
with valid minus the cluster for the best epoch and the base calibration (as ``atomvib train`` does), and evaluated on
that valid (in distribution) and on the whole held-out cluster. The adaptive calibration
(:mod:`atomvib.learn.calibration`) is then fitted nested: for split k only on the other splits' data, with the
crystals of cluster k removed.

    python scripts/calibrate_shift.py train      # ~30 min CPU, one thread, resumable (runs in --runs)
    python scripts/calibrate_shift.py collect    # predictions and features of every split (npz in --runs)
    python scripts/calibrate_shift.py report     # nested fits, scripts/validation_cache/predictor_shift.json
    python scripts/calibrate_shift.py figures    # docs/figures/predictor_shift_*.png from the cache
    python scripts/calibrate_shift.py ship       # the calibration of the shipped model (learn/weights/calibration.json)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("ATOMVIB_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "petretto-dfpt"
CACHE = ROOT / "scripts" / "validation_cache" / "predictor_shift.json"
FIGS = ROOT / "docs" / "figures"
RUNS = Path(os.environ.get("ATOMVIB_SHIFT_RUNS", "/tmp/atomvib_shift_runs"))

SPLITS = ("in-distribution", "tellurides", "rocksalt", "hydrides", "heavy-chalcogenides")
MEMBERS = 3
#: the reduced TrainConfig of every split (the shipped model: 128x0e + 32x1o, 4 interactions, 128 scalars, emb 64,
#: 16 radial functions, 70 epochs, 5 members)
REDUCED = dict(hidden="64x0e + 16x1o", ninteractions=3, nscalars_out=64, emb_dim=32, nbasis=8, epochs=35)

ANIONS_STRONG = {"O", "F", "Cl", "Br", "I"}
H_PARTNERS = {"B", "C", "N", "O", "P", "S", "Se", "F", "Cl", "Br", "I"}
CHALC_PNICT = {"S", "Se", "Te", "P", "As", "Sb", "Bi"}
LIGHT_ANIONS = {"H", "B", "C", "N", "O", "F", "Cl", "Br", "I"}


def _nearest_elements(structure, symbol):
    """Element symbols of the nearest neighbour of every ``symbol`` atom (periodic)."""
    from ase.neighborlist import neighbor_list

    atoms = structure.to_ase()
    i, j, d = neighbor_list("ijd", atoms, 6.0)
    sym = atoms.get_chemical_symbols()
    out = []
    for a, s in enumerate(sym):
        if s != symbol:
            continue
        m = i == a
        if m.any():
            out.append(sym[j[m][np.argmin(d[m])]])
    return out


def prototype_key(structure):
    """(space group, anonymised formula, Wyckoff letters) of a cell, a proxy for its structure prototype."""
    import spglib
    from pymatgen.core import Composition

    a = structure.to_ase()
    ds = spglib.get_symmetry_dataset((a.cell[:], a.get_scaled_positions(), a.numbers), symprec=1e-3)
    comp = Composition(structure.formula)
    return int(ds.number), comp.anonymized_formula, "".join(sorted(set(ds.wyckoffs)))


def in_cluster(split: str, sample) -> bool:
    s = sample.structure
    from ase.data import chemical_symbols

    els = {chemical_symbols[int(z)] for z in s.numbers}
    if split == "tellurides":
        return "Te" in els and any(e not in ANIONS_STRONG for e in _nearest_elements(s, "Te"))
    if split == "hydrides":
        return "H" in els and any(e not in H_PARTNERS for e in _nearest_elements(s, "H"))
    if split == "rocksalt":
        return prototype_key(s) == (225, "AB", "ab")
    if split == "heavy-chalcogenides":
        return max(int(z) for z in s.numbers) > 50 and bool(els & CHALC_PNICT) and not (els & LIGHT_ANIONS)
    return False


def load_pool(cfg):
    from atomvib.learn.data import read_dataset

    grid = cfg.grid()
    return read_dataset(DATA, "train", grid), read_dataset(DATA, "valid", grid)


def clusters(train_s, valid_s) -> dict:
    """Material ids of every split's held-out cluster (cached in --runs)."""
    p = RUNS / "clusters.json"
    if p.exists():
        return json.loads(p.read_text())
    out = {k: sorted({s.id for s in train_s + valid_s if in_cluster(k, s)}) for k in SPLITS}
    RUNS.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(out, indent=1))
    return out


def reduced_config():
    from atomvib.learn.train import TrainConfig

    return TrainConfig(**REDUCED)


def cmd_train(args):
    import torch

    from atomvib.learn.train import _load_member, _tensors, assemble, train_member

    torch.set_num_threads(1)
    cfg = reduced_config()
    train_s, valid_s = load_pool(cfg)
    cl = clusters(train_s, valid_s)
    for name in args.splits:
        out = RUNS / name
        out.mkdir(parents=True, exist_ok=True)
        held = set(cl[name])
        tr = [s for s in train_s if s.id not in held]
        va = [s for s in valid_s if s.id not in held]
        trt = vat = None
        for k in range(MEMBERS):
            p = out / f"member_{k}.pt"
            if p.exists() and _load_member(p).get("train_config") == cfg.__dict__:
                continue
            if trt is None:
                trt, vat = _tensors(tr, cfg), _tensors(va, cfg)
            c0, t0 = time.process_time(), time.time()
            with open(out / f"member_{k}.log", "a") as log:
                train_member(trt, vat, cfg, k, p, progress=False, log=log)
            rec = {"split": name, "member": k, "cpu_s": time.process_time() - c0, "wall_s": time.time() - t0,
                   "n_train": len(tr), "n_valid": len(va), "n_cluster": len(held)}
            with open(RUNS / "timing.jsonl", "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            print(json.dumps(rec), flush=True)
        if not (out / "model.pt").exists():
            assemble(out, MEMBERS, tr, va, cfg)


def _thermo300(sample):
    """Petretto's Cv, S (J/K/mol) and F (kJ/mol) at 300 K per formula unit, NaN when unstable/absent."""
    th = sample.thermo
    if th and 300.0 in th["temperature_K"]:
        i = th["temperature_K"].index(300.0)
        return th["heat_capacity_cv_J_per_K"][i], th["entropy_J_per_K"][i], th["helmholtz_J"][i] / 1000.0
    return np.nan, np.nan, np.nan


def predict_set(model, samples, stats):
    """Everything the calibration needs of ``samples`` under ``model`` (a Predictor): raw members, errors, features."""
    from atomvib.learn.calibration import shift_features
    from atomvib.learn.ensemble import disagreement, nn_distance
    from atomvib.learn.metrics import AXIS_CM1, on_axis, wasserstein_cm1

    structures = [s.structure for s in samples]
    states, emb, _ = model.raw_atoms(structures)
    b = model.blob
    d_nn = nn_distance((emb - b["embedding_mean"]) / b["embedding_std"], np.asarray(b["train_embedding"], float))
    dis = disagreement(states)
    feats = shift_features(structures, d_nn, dis, model.ood, stats)
    kcv, ks, kf = (k[0] for k in model._kernels((300.0,)))
    z = np.array([s.formula_units for s in samples], float)
    grid = model.grid
    mean = states.mean(0)
    ref = np.stack([s.states_per_bin for s in samples])
    fmax = np.array([s.dos_freqs_cm1[s.dos_per_cm1 > 1e-6 * s.dos_per_cm1.max()].max() for s in samples])
    w = np.array([
        wasserstein_cm1(grid.density_on(m, AXIS_CM1), on_axis(s.dos_freqs_cm1, s.dos_per_cm1))
        for m, s in zip(mean, samples)
    ])
    pub = np.array([_thermo300(s) for s in samples])
    return {
        "ids": np.array([s.id for s in samples]),
        "formula": np.array([s.structure.formula for s in samples]),
        "states": states.astype(np.float32),  # (members, n, nbins) per cell
        "ref": ref,
        "fmax": fmax,
        "z": z,
        "cv_members": states @ kcv / z, "s_members": states @ ks / z, "f_members": states @ kf / z,  # (members, n)
        "cv_ref": pub[:, 0], "s_ref": pub[:, 1], "f_ref": pub[:, 2],
        "wasserstein": w,
        "dos_std_scale": model.calibration["dos_std_scale"], "cv_std_scale": model.calibration["cv_std_scale"],
        "features": json.dumps(feats.to_dict()),
    }


def cmd_collect(args):
    import torch

    from atomvib.learn.calibration import training_stats
    from atomvib.learn.predictor import load_model

    torch.set_num_threads(1)
    cfg = reduced_config()
    train_s, valid_s = load_pool(cfg)
    cl = clusters(train_s, valid_s)
    (RUNS / "valid_ids.json").write_text(json.dumps([s.id for s in valid_s]))
    for name in args.splits:
        out = RUNS / name
        if not (out / "model.pt").exists():
            print(f"{name}: not trained yet")
            continue
        held = set(cl[name])
        c0 = time.process_time()
        stats = training_stats([s.structure for s in train_s if s.id not in held])
        (out / "stats.json").write_text(json.dumps(stats))
        model = load_model(out / "model.pt")
        sets = {"valid": [s for s in valid_s if s.id not in held],
                "cluster": [s for s in train_s + valid_s if s.id in held]}
        for part, samples in sets.items():
            if samples:
                np.savez_compressed(out / f"{part}.npz", **predict_set(model, samples, stats))
        print(name, "collected", f"{time.process_time() - c0:.0f} s CPU", flush=True)


def cmd_collect_shipped(args):
    """The shipped model on valid (its own in-distribution set), for the calibration file and the re-measure."""
    import torch

    from atomvib.learn.calibration import training_stats
    from atomvib.learn.data import read_dataset
    from atomvib.learn.predictor import load_model

    torch.set_num_threads(1)
    model = load_model()
    train_s = read_dataset(DATA, "train", model.grid)
    valid_s = read_dataset(DATA, "valid", model.grid)
    stats = training_stats([s.structure for s in train_s])
    out = RUNS / "shipped"
    out.mkdir(parents=True, exist_ok=True)
    (out / "stats.json").write_text(json.dumps(stats))
    np.savez_compressed(out / "valid.npz", **predict_set(model, valid_s, stats))


# ---- the nested calibration ----------------------------------------------------------------------------------------


class EvalSet:
    """One split's crystals of one part (valid or cluster) under that split's model, in calibration terms."""

    def __init__(self, path, split, part, fold_of):
        from atomvib.learn.calibration import ShiftFeatures

        d = np.load(path)
        self.split, self.part = split, part
        self.ids, self.formula = d["ids"], d["formula"]
        self.feats = ShiftFeatures.from_dict(json.loads(str(d["features"])))
        st = d["states"].astype(float)
        self.mean, self.std = st.mean(0), st.std(0, ddof=1)
        self.ref = d["ref"]
        nb = self.ref.shape[1]
        centers = (np.arange(nb) + 0.5) * 5.0
        self.mask = centers[None, :] <= d["fmax"][:, None] + 50.0
        self.err, self.sd = {}, {}
        self.err["dos"] = np.abs(self.mean - self.ref)
        self.sd["dos"] = self.std
        for q in ("cv", "s", "f"):
            m = d[f"{q}_members"]
            self.err[q] = np.abs(m.mean(0) - d[f"{q}_ref"])  # NaN where Petretto has no thermo
            self.sd[q] = m.std(0, ddof=1)
        self.wasserstein = d["wasserstein"]
        self.natoms_fu = self.ref.sum(1) / 3.0 / d["z"]  # atoms per formula unit
        self.cv_err = self.err["cv"]
        self.blob_scale = {"dos": float(d["dos_std_scale"]), "thermal": float(d["cv_std_scale"])}
        self.fold = np.array([fold_of.get(i, -1) for i in self.ids])  # valid fold (0/1), -1 outside valid
        self.unseen = np.array([bool(u) for u in self.feats.unseen_elements])

    def __len__(self):
        return len(self.ids)

    def raw_ratios(self, q, rows=None):
        """(ratio, crystal) of quantity q over ``rows`` (bool mask of crystals), ratio = |error| / raw ensemble std."""
        rows = np.ones(len(self), bool) if rows is None else rows
        sd = self.sd
        if q == "dos":
            m = self.mask & rows[:, None]
            r = self.err["dos"][m] / np.maximum(sd["dos"][m], 1e-12)
            return r, np.nonzero(m)[0]
        ok = rows & np.isfinite(self.err[q])
        return self.err[q][ok] / np.maximum(sd[q][ok], 1e-12), np.nonzero(ok)[0]


def base_scales(ev: EvalSet, rows=None) -> dict:
    """The model's own scale factors as ``atomvib train`` sets them (90 % quantile / z90), from ``rows`` of valid:
    one for the DOS, the Cv one for all thermal quantities."""
    from atomvib.learn.ensemble import Z90

    sdos = float(np.quantile(ev.raw_ratios("dos", rows)[0], 0.9) / Z90)
    scv = float(np.quantile(ev.raw_ratios("cv", rows)[0], 0.9) / Z90)
    return {"dos": sdos, "cv": scv, "s": scv, "f": scv}


def scaled_ratios(ev: EvalSet, scales: dict, rows=None) -> dict:
    """{q: (|error| / calibrated std, crystal)} with the model's base scales applied."""
    out = {}
    for q in ("dos", "cv", "s", "f"):
        r, c = ev.raw_ratios(q, rows)
        out[q] = (r / scales[q], c)
    return out


def coverage(ratios: dict, factor=None, crystals=None) -> dict:
    """90 % interval coverage per quantity; ``factor[q]`` per crystal multiplies the interval. DOS coverage is the
    mean over crystals of each crystal's fraction of covered bins (every crystal counts once)."""
    from atomvib.learn.ensemble import Z90

    out = {}
    for q, (r, c) in ratios.items():
        if crystals is not None:
            keep = np.isin(c, crystals)
            r, c = r[keep], c[keep]
        if not len(r):
            out[q] = float("nan")
            continue
        f = 1.0 if factor is None else factor[q][c]
        hit = (r <= Z90 * f).astype(float)
        if q == "dos":
            uc, inv = np.unique(c, return_inverse=True)
            out[q] = float(np.mean(np.bincount(inv, hit) / np.bincount(inv)))
        else:
            out[q] = float(hit.mean())
    return out


def per_crystal_target(ratios: dict, n: int) -> np.ndarray:
    """Per crystal, the mean log of (|error| / calibrated std) over Cv, S, F and the 90th percentile of its DOS bins
    (NaN where none): what the difficulty score's weights are fitted to."""
    acc, cnt = np.zeros(n), np.zeros(n)
    for q, (r, c) in ratios.items():
        if q == "dos":
            vals = np.full(n, np.nan)
            for k in np.unique(c):
                vals[k] = np.quantile(r[c == k], 0.9)
        else:
            vals = np.full(n, np.nan)
            vals[c] = r
        ok = np.isfinite(vals) & (vals > 0)
        acc[ok] += np.log(vals[ok])
        cnt[ok] += 1
    return np.where(cnt > 0, acc / np.maximum(cnt, 1), np.nan)


def fold_map(valid_ids) -> dict:
    """Valid crystals in two folds, alternating in the file's order (as ``atomvib train``'s 2-fold check)."""
    return {i: k % 2 for k, i in enumerate(valid_ids)}


def load_sets(splits, fold_of) -> dict:
    sets = {}
    for name in splits:
        for part in ("valid", "cluster"):
            p = RUNS / name / f"{part}.npz"
            if p.exists():
                sets[(name, part)] = EvalSet(p, name, part, fold_of)
    return sets


def fit_on(pool, weights, nbins, slope=None, by_flag=None):
    """The adaptive calibration fitted on ``pool``: a list of (EvalSet, rows, base scales, the model's valid set,
    the rows of that valid set the model's score centre comes from)."""
    from atomvib.learn.calibration import AdaptiveCalibration, ShiftFeatures, fit_adaptive, fit_weights

    feats, ratios, target, models, off = [], {q: ([], []) for q in ("dos", "cv", "s", "f")}, [], [], 0
    for ev, rows, sc, va, vrows in pool:
        idx = np.nonzero(rows)[0]
        feats.append(ev.feats.take(idx))
        models.append((len(idx), va, vrows))
        rr = scaled_ratios(ev, sc, rows)
        remap = np.full(len(ev), -1)
        remap[idx] = np.arange(len(idx)) + off
        for q, (r, c) in rr.items():
            ratios[q][0].append(r)
            ratios[q][1].append(remap[c])
        target.append(per_crystal_target({q: (r, remap[c] - off) for q, (r, c) in rr.items()}, len(idx)))
        off += len(idx)
    feats = ShiftFeatures.concat(feats)
    ratios = {q: (np.concatenate(a), np.concatenate(b)) for q, (a, b) in ratios.items()}
    target = np.concatenate(target)
    w = fit_weights(feats, target, weights) if isinstance(weights, (list, tuple)) else weights
    probe = AdaptiveCalibration(w, np.zeros(0), {})
    centers = np.concatenate([np.full(n, model_center(probe, va, vrows)) for n, va, vrows in models])
    by_flag = BY_FLAG if by_flag is None else by_flag
    return fit_adaptive(feats, ratios, w, nbins=nbins, slope=SLOPE if slope is None else slope,
                        flag_rules=flag_rules() if by_flag else None, centers=centers)


def model_center(cal, va, rows=None) -> float:
    """Median difficulty score of a model's valid crystals (``rows`` of them): the score of a typical crystal in
    distribution for that model."""
    rows = np.ones(len(va), bool) if rows is None else rows
    return float(np.median(cal.score(va.feats.take(np.nonzero(rows)[0]))))


def centred(cal, va, rows=None):
    """``cal`` applied to the model of ``va``: its score centre, the floor :data:`FLOOR` and ceiling :data:`CEILING`."""
    import dataclasses

    return dataclasses.replace(cal, center=model_center(cal, va, rows), floor=FLOOR, ceiling=CEILING)


def _blob_scales(ev) -> dict:
    return {"dos": ev.blob_scale["dos"], **dict.fromkeys(("cv", "s", "f"), ev.blob_scale["thermal"])}


LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def _effective(ratios: dict, factor=None) -> dict:
    """{q: (ratio / factor, crystal)}: a point is inside the level-p interval when this is ≤ z_p."""
    return {q: (r / (1.0 if factor is None else factor[q][c]), c) for q, (r, c) in ratios.items()}


def _merge(parts) -> dict:
    out = {}
    for p in parts:
        for q, (r, c) in p.items():
            a = out.setdefault(q, ([], []))
            a[0].append(r)
            a[1].append(c)
    return {q: (np.concatenate(a), np.concatenate(b)) for q, (a, b) in out.items()}


def reliability(eff: dict) -> dict:
    """Observed coverage of the central level-p interval at every p of :data:`LEVELS`, per quantity."""
    from scipy.stats import norm

    from atomvib.learn.ensemble import Z90

    out = {}
    for p in LEVELS:
        z = float(norm.ppf(0.5 + p / 2))
        cov = coverage({q: (r * Z90 / z, c) for q, (r, c) in eff.items()})
        for q, v in cov.items():
            out.setdefault(q, []).append(v)
    return out


def nested(sets, split, weights, nbins):
    """Coverage of ``split`` before and after; the adaptive calibration is fitted without that split's cluster and
    without the valid fold evaluated (2 folds: fit with fold f, evaluate fold 1-f); returns a dict of numbers."""
    va, cl = sets[(split, "valid")], sets.get((split, "cluster"))
    eff = {("before", "valid"): [], ("after", "valid"): [], ("before", "cluster"): [], ("after", "cluster"): []}
    cals = _nested_cals(sets, split, weights, nbins)
    for f, cal in zip((0, 1), cals):
        # valid: fold 1-f under the model's scales from fold f (as atomvib train's 2-fold check) and calibration f
        rv = scaled_ratios(va, base_scales(va, va.fold == f), va.fold == 1 - f)
        eff[("before", "valid")].append(_effective(rv))
        eff[("after", "valid")].append(_effective(rv, {q: cal.factor(q, va.feats) for q in rv}))
        if cl is not None:  # the scales of the model file (from all of its valid: no cluster crystal there)
            rc = scaled_ratios(cl, _blob_scales(cl), ~cl.unseen)
            if f == 0:
                eff[("before", "cluster")].append(_effective(rc))
            eff[("after", "cluster")].append(_effective(rc, {q: cal.factor(q, cl.feats) for q in rc}))
    res = {"before": {}, "after": {}, "reliability": {}}
    for (when, part), parts in eff.items():
        if parts:
            e = _merge(parts)
            res[when][part] = coverage(e)
            res["reliability"][f"{when}/{part}"] = reliability(e)
    res["calibrations"] = [c.to_dict() for c in cals]
    return res


#: the difficulty score's terms (weights fitted, non-negative, on each nested pool) and the number of bins
TERMS = ("latent", "disagreement", "rarity", "composition", "environment")
NBINS = 1  # not used with BY_FLAG
#: 1: normalised conformal (the factor grows as the fitted error scale exp(u), bins correct it); 0: bins only
SLOPE = 1.0
#: the conformal bins are the flag (in distribution / flagged) instead of score ranges
BY_FLAG = True
#: the factor never goes below this (1: the adaptive interval is never narrower than the model's own)
FLOOR = 1.0
#: ... and never above this (see AdaptiveCalibration.ceiling)
CEILING = 5.0
#: the flag before (the model file's rule: embedding distance or disagreement above the 97.5th percentile of valid;
#: an unseen element was already an error) and after
FLAG_BEFORE = dict(rare_element=0, rare_environment=0, latent=1.0, disagreement=1.0)


def flag_rules():
    from atomvib.learn.calibration import FlagRules

    return FlagRules()


def accuracy(ev, rows=None) -> dict:
    rows = np.ones(len(ev), bool) if rows is None else rows
    cv = ev.err["cv"][rows]
    return {
        "n": int(rows.sum()),
        "n_thermo": int(np.isfinite(cv).sum()),
        "wasserstein_cm1": float(ev.wasserstein[rows].mean()),
        "cv300_mae": float(np.nanmean(cv)) if np.isfinite(cv).any() else float("nan"),
        "s300_mae": float(np.nanmean(ev.err["s"][rows])) if np.isfinite(cv).any() else float("nan"),
    }


def bad_crystals(ev, ref) -> np.ndarray:
    """Crystals whose error is among the worst 10 % of the in-distribution reference: Wasserstein distance or
    |ΔCv(300 K)| per atom above the 90th percentile of the reduced model's valid split."""
    cv_atom = ev.err["cv"] / ev.natoms_fu
    return (ev.wasserstein > ref["w90"]) | (np.nan_to_num(cv_atom, nan=0.0) > ref["cv90"])


def flag_stats(ev, rules, bad=None) -> dict:
    from atomvib.learn.calibration import flag

    ok, why = flag(ev.feats, rules)
    out = {"flagged": float(np.mean(~ok)), "n": len(ev)}
    if bad is not None:
        out["n_bad"] = int(bad.sum())
        out["recall_bad"] = float(np.mean(~ok[bad])) if bad.any() else float("nan")
    kinds = {}
    for w in why:
        for part in filter(None, w.split("; ")):
            k = part.split(":")[0].split(" (")[0]
            kinds[k] = kinds.get(k, 0) + 1
    out["reasons"] = kinds
    return out


def cmd_report(args):
    from atomvib.learn.calibration import FlagRules

    valid_ids = [s for s in json.loads((RUNS / "valid_ids.json").read_text())]
    fold_of = fold_map(valid_ids)
    sets = load_sets(SPLITS, fold_of)
    ref = sets[("in-distribution", "valid")]
    cv_atom = ref.err["cv"] / ref.natoms_fu
    worst = {"w90": float(np.percentile(ref.wasserstein, 90)), "cv90": float(np.nanpercentile(cv_atom, 90))}
    out = {"config": {"reduced": REDUCED, "members": MEMBERS, "terms": list(TERMS), "nbins": NBINS,
                      "flag_rules": flag_rules().to_dict(), "worst_10pct": worst}, "splits": {}}
    timing = [json.loads(x) for x in (RUNS / "timing.jsonl").read_text().splitlines()]
    out["config"]["train_cpu_s"] = float(sum(t["cpu_s"] for t in timing))
    out["config"]["train_wall_s"] = float(sum(t["wall_s"] for t in timing))
    for split in SPLITS:
        if (split, "valid") not in sets:
            continue
        va, cl = sets[(split, "valid")], sets.get((split, "cluster"))
        r = nested(sets, split, list(TERMS), NBINS)
        r["accuracy"] = {"valid": accuracy(va)}
        r["flag"] = {"before": {"valid": flag_stats(va, FlagRules(**FLAG_BEFORE))},
                     "after": {"valid": flag_stats(va, flag_rules())}}
        if cl is not None:
            r["accuracy"]["cluster"] = accuracy(cl)
            bad = bad_crystals(cl, worst)
            r["flag"]["before"]["cluster"] = flag_stats(cl, FlagRules(**FLAG_BEFORE), bad)
            r["flag"]["after"]["cluster"] = flag_stats(cl, flag_rules(), bad)
            r["n_unseen_element"] = int(cl.unseen.sum())
        out["splits"][split] = r
        print(split, json.dumps({k: r[k] for k in ("before", "after")}, indent=None)[:2000])
        print("  flag", json.dumps(r["flag"])[:1500])
    old = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    out.update({k: old[k] for k in ("shipped", "functional") if k in old})  # written by other steps
    CACHE.write_text(json.dumps(out, indent=1))
    return out


def _pool_all(sets, exclude_ids=(), fold=None):
    """Every reduced model's valid and cluster crystals (unseen elements left out), with each model's scales from
    its valid (fold ``fold`` only, when given, and then only that fold of valid is pooled)."""
    pool = []
    for (name, part), ev in sets.items():
        if name == "shipped":
            continue
        rows = ~np.isin(ev.ids, list(exclude_ids)) & ~ev.unseen
        v = sets[(name, "valid")]
        if fold is None:
            sc, vrows = _blob_scales(v), np.ones(len(v), bool)
        else:
            sc, vrows = base_scales(v, v.fold == fold), v.fold == fold
            rows &= ev.fold != 1 - fold
            if part == "valid":
                rows &= ev.fold == fold
        pool.append((ev, rows, sc, v, vrows))
    return pool


def cmd_ship(args):
    """Fit the shipped model's calibration on all leave-cluster-out data, write learn/weights/calibration.json and
    re-measure the shipped model on valid (2-fold: the calibration and the model's scales fitted without the fold
    evaluated)."""
    from atomvib.learn.calibration import FlagRules, shift_calibration_dict
    from atomvib.learn.predictor import DEFAULT_MODEL, load_torch_file

    valid_ids = json.loads((RUNS / "valid_ids.json").read_text())
    fold_of = fold_map(valid_ids)
    sets = load_sets(SPLITS, fold_of)
    sh = EvalSet(RUNS / "shipped" / "valid.npz", "shipped", "valid", fold_of)
    cal = centred(fit_on(_pool_all(sets), list(TERMS), NBINS), sh)
    blob = load_torch_file(DEFAULT_MODEL)
    stats = json.loads((RUNS / "shipped" / "stats.json").read_text())
    doc = shift_calibration_dict(
        blob["ood"], stats, cal, flag_rules(),
        provenance={
            "fitted_by": "scripts/calibrate_shift.py ship",
            "data": "leave-cluster-out ensembles (reduced config) on Petretto train+valid: "
            + ", ".join(SPLITS) + "; their valid and held-out crystals",
            "reduced_config": REDUCED, "members": MEMBERS,
        },
    )
    out = ROOT / "src" / "atomvib" / "learn" / "weights" / "calibration.json"
    out.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB)", cal.to_dict())
    # re-measure on valid, 2-fold
    effs = {"before": [], "after": []}
    for f in (0, 1):
        c = fit_on(_pool_all(sets, exclude_ids=[i for i in valid_ids if fold_of[i] == 1 - f], fold=f), list(TERMS), NBINS)
        c = centred(c, sh, sh.fold == f)
        rv = scaled_ratios(sh, base_scales(sh, sh.fold == f), sh.fold == 1 - f)
        effs["before"].append(_effective(rv))
        effs["after"].append(_effective(rv, {q: c.factor(q, sh.feats) for q in rv}))
    res = {"accuracy": accuracy(sh), "calibration": cal.to_dict()}
    for when, parts in effs.items():
        e = _merge(parts)
        res[when] = coverage(e)
        res[f"reliability_{when}"] = reliability(e)
    # the interval the shipped model now gives on all of valid (its own scales, the shipped calibration): as used
    rv = scaled_ratios(sh, _blob_scales(sh))
    res["as_shipped_in_sample"] = coverage(_effective(rv, {q: cal.factor(q, sh.feats) for q in rv}))
    res["factor_median"] = {q: float(np.median(cal.factor(q, sh.feats))) for q in ("dos", "cv", "s", "f")}
    res["flag"] = {"before": flag_stats(sh, FlagRules(**FLAG_BEFORE)), "after": flag_stats(sh, flag_rules())}
    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    cache["shipped"] = res
    CACHE.write_text(json.dumps(cache, indent=1))
    print(json.dumps({k: res[k] for k in ("accuracy", "before", "after", "as_shipped_in_sample", "flag")}, indent=1))


def cmd_figures(args):
    """One calibration plot per split (observed against nominal coverage, Cv and DOS bins), from the cache only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cache = json.loads(CACHE.read_text())
    items = [(k, v["reliability"]) for k, v in cache["splits"].items()]
    if "shipped" in cache:
        sh = cache["shipped"]
        items.append(("shipped", {"before/valid": sh["reliability_before"], "after/valid": sh["reliability_after"]}))
    style = {
        "before/valid": dict(color="0.55", ls="--", label="before, in distribution (valid)"),
        "after/valid": dict(color="C0", ls="--", label="after, in distribution (valid)"),
        "before/cluster": dict(color="0.55", ls="-", marker="o", ms=3, label="before, held-out cluster"),
        "after/cluster": dict(color="C3", ls="-", marker="o", ms=3, label="after, held-out cluster"),
    }
    x = np.asarray(LEVELS)
    for name, rel in items:
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), sharey=True)
        for ax, q, title in zip(axes, ("cv", "s", "dos"), ("Cv(300 K)", "S(300 K)", "DOS bins")):
            ax.plot([0, 1], [0, 1], color="k", lw=0.6)
            ax.axhspan(0.85, 0.95, xmin=0.85, xmax=0.95, color="C2", alpha=0.15)
            for key, st in style.items():
                if key in rel:
                    ax.plot(x, rel[key][q], **st)
            ax.set_title(title)
            ax.set_xlabel("nominal coverage")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
        axes[0].set_ylabel("observed coverage")
        axes[-1].legend(fontsize=7, loc="lower right")
        label = {"shipped": "shipped model, valid (2-fold)", "in-distribution": "reduced model, standard split"}
        fig.suptitle(label.get(name, f"leave-cluster-out: {name}"), fontsize=10)
        fig.tight_layout()
        out = FIGS / f"predictor_shift_{name}.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        print("wrote", out)


def _pct(x):
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.0f}"


def cmd_table(args):
    """The markdown tables of docs/predictor.md, from the cache only."""
    cache = json.loads(CACHE.read_text())
    rows = [
        "| split | crystals held out (thermo) | W (cm⁻¹) | Cv MAE (J/K/mol) | Cv cov. before → after | "
        "S cov. | F cov. | DOS cov. | flagged before → after | recall of the worst 10 % before → after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in cache["splits"].items():
        for part in ("valid", "cluster"):
            if part not in r["before"]:
                continue
            acc = r["accuracy"][part]
            b, a = r["before"][part], r["after"][part]
            fb, fa = r["flag"]["before"][part], r["flag"]["after"][part]
            rec = (f"{_pct(fb['recall_bad'])} → {_pct(fa['recall_bad'])} (of {fb['n_bad']})"
                   if "recall_bad" in fb else "")
            what = f"{name}: in distribution (valid)" if part == "valid" else f"**{name}: held out**"
            nuns = f", {r['n_unseen_element']} with an unseen element" if part == "cluster" and r.get(
                "n_unseen_element") else ""
            rows.append(
                f"| {what} | {acc['n']} ({acc['n_thermo']}){nuns} | {acc['wasserstein_cm1']:.1f} | {acc['cv300_mae']:.2f} | "
                f"{_pct(b['cv'])} → {_pct(a['cv'])} | {_pct(b['s'])} → {_pct(a['s'])} | {_pct(b['f'])} → {_pct(a['f'])} | "
                f"{_pct(b['dos'])} → {_pct(a['dos'])} | {_pct(fb['flagged'])} → {_pct(fa['flagged'])} | {rec} |"
            )
    print("\n".join(rows))
    if "shipped" in cache:
        sh = cache["shipped"]
        acc, b, a = sh["accuracy"], sh["before"], sh["after"]
        print()
        print("| shipped model, valid | W (cm⁻¹) | Cv MAE | Cv cov. | S cov. | F cov. | DOS cov. | flagged |")
        print("|---|---|---|---|---|---|---|---|")
        for when, c in (("before", b), ("after", a)):
            fl = sh["flag"][when]
            print(f"| {when} | {acc['wasserstein_cm1']:.1f} | {acc['cv300_mae']:.2f} | {_pct(c['cv'])} | {_pct(c['s'])} | "
                  f"{_pct(c['f'])} | {_pct(c['dos'])} | {_pct(fl['flagged'])} % ({fl['reasons']}) |")


# ---- the functional offset (PBE vs PBEsol) -------------------------------------------------------------------------

#: the held-out clusters of the functional check; every DFPT-stable crystal of them with thermo and ≤ 8 sites is run
#: (~3 s each), in a seeded order whose first FUNCTIONAL_N per cluster form the headline sample of ~20
FUNCTIONAL_SPLITS = ("tellurides", "heavy-chalcogenides")
FUNCTIONAL_N = 10
FUNCTIONAL_SEED = 18
FUNCTIONAL_MAX_SITES = 8
FUNCTIONAL_ENGINE = "sevennet:7net-l3i5"
FUNCTIONAL_SETTINGS = dict(min_supercell_length_a=9.0, mesh_density=30.0)
#: per crystal: both MLIP runs (relaxed, DFT cell), the record format of scripts/validate.py's Petretto caches
FUNCTIONAL_RUNS = ROOT / "scripts" / "validation_cache" / "shift_functional_7net-l3i5.json"
#: the same pair for 20 valid crystals, from scripts/validate.py (relaxed / at the DFT cell)
VALID_PAIR = ("petretto_7net-l3i5.json", "petretto_fixed_7net-l3i5.json")
QTY = (("cv", "cv"), ("s", "s"), ("f", "f_kj"))  # (calibration name, record key)
#: multiples of the measured shift at which the held-out Cv coverage is re-measured (how large it would need to be)
SHIFT_MULTIPLES = (1.0, 2.0, 4.0, 8.0, 16.0)


def functional_sample(cl) -> list[tuple[str, dict, bool]]:
    """(cluster, Petretto row, in the headline sample) of the crystals of the functional check: DFPT-stable, with
    thermo, ≤ 8 sites; per cluster a seeded order (tellurides first; a crystal counts once), its first
    :data:`FUNCTIONAL_N` the headline sample."""
    from atomvib.learn.data import petretto_records

    want = set().union(*(cl[k] for k in FUNCTIONAL_SPLITS))
    rows = {}
    for part in ("train", "valid"):
        for _, r in petretto_records(DATA / f"{part}.jsonl.gz"):
            if (r["material_id"] in want and not r["has_neg_freq"] and r.get("thermo_per_mol_formula_unit")
                    and r["nsites"] <= FUNCTIONAL_MAX_SITES):
                rows[r["material_id"]] = r
    rng = np.random.default_rng(FUNCTIONAL_SEED)
    out, taken = [], set()
    for k in FUNCTIONAL_SPLITS:
        pool = sorted(set(cl[k]) & set(rows) - taken)
        for n, mid in enumerate(rng.permutation(pool)):
            out.append((k, rows[str(mid)], n < FUNCTIONAL_N))
            taken.add(str(mid))
    return out


def _validate_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_atomvib_validate", ROOT / "scripts" / "validate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def functional_runs(sample, timeout_s: float = 600.0) -> dict:
    """The MLIP's phonons of every crystal of ``sample`` twice, relaxed (its own, PBE-like, cell) and at the DFT
    (PBEsol) cell as given; cached per crystal in :data:`FUNCTIONAL_RUNS` (a re-run only does the missing ones)."""
    import io
    import signal

    from ase.io import read

    import atomvib
    from atomvib import PhononSettings
    from atomvib.errors import ConvergenceError

    val = _validate_module()
    done = json.loads(FUNCTIONAL_RUNS.read_text()) if FUNCTIONAL_RUNS.exists() else {}
    for split, row, _ in sample:
        mid = row["material_id"]
        if mid in done and all(k in done[mid] for k in ("relaxed", "fixed")):
            done[mid]["cluster"] = split  # the label of the current draw order
            continue
        atoms = read(io.StringIO(row["cif"]), format="cif")
        rec = done.get(mid) or {
            "cluster": split, "formula": row["formula"], "nsites": row["nsites"], "z_cif": val._cif_z(row),
            "dft": val._petretto_ref(row), "dft_volume_per_atom": float(atoms.get_volume() / len(atoms)),
        }
        for kind, relax in (("relaxed", True), ("fixed", False)):
            if kind in rec:
                continue
            st = PhononSettings(engine=FUNCTIONAL_ENGINE, relax=relax, **FUNCTIONAL_SETTINGS)
            t0 = time.perf_counter()
            signal.signal(signal.SIGALRM, val._timeout)
            signal.alarm(int(timeout_s))
            out = {}
            try:
                try:
                    r = atomvib.phonons(atoms, settings=st)
                    out["relax_converged"] = True
                except ConvergenceError as err:  # the partially relaxed cell, flagged (as scripts/validate.py)
                    rel = err.partial["relaxation"]
                    out["relax_converged"] = False
                    r = atomvib.phonons(rel.structure, settings=PhononSettings(
                        engine=FUNCTIONAL_ENGINE, relax=False, **FUNCTIONAL_SETTINGS))
                out.update(val.petretto_record(r))
            except Exception as err:  # noqa: BLE001 - a failed run is a row too
                out["error"] = f"{type(err).__name__}: {err}"
            finally:
                signal.alarm(0)
            out["wall_s"] = time.perf_counter() - t0
            rec[kind] = out
            done[mid] = rec
            FUNCTIONAL_RUNS.write_text(json.dumps(done, indent=1, default=float))
            print(f"functional {split:20s} {mid:10s} {row['formula']:10s} {kind:7s} cv {out.get('cv', np.nan):6.2f} "
                  f"(DFT {rec['dft']['cv']:6.2f})  {out['wall_s']:.0f} s", flush=True)
    FUNCTIONAL_RUNS.write_text(json.dumps(done, indent=1, default=float))
    return done


def _shift_rows(runs: dict) -> dict:
    """Per crystal with both runs: ΔX = X(relaxed) − X(DFT cell) for Cv, S (J/K/mol) and F (kJ/mol) per formula
    unit, relative to the DFT value, per atom, and the volume ratio (relaxed / DFT cell)."""
    out = {}
    for mid, rec in runs.items():
        a, b = rec.get("relaxed", rec), rec.get("fixed")
        if b is None or "error" in a or "error" in b or "cv" not in a or "cv" not in b:
            continue
        natoms_fu = rec["nsites"] / rec["z_cif"]
        row = {"formula": rec["formula"], "cluster": rec.get("cluster", "valid"),
               "volume_ratio": a["volume_per_atom"] / rec["dft_volume_per_atom"],
               "imaginary": bool(a.get("imaginary") or b.get("imaginary")), "natoms_fu": natoms_fu}
        for q, key in QTY:
            d = a[key] - b[key]
            row[f"d_{q}"] = d
            row[f"d_{q}_rel"] = d / abs(rec["dft"][key])
            row[f"d_{q}_atom"] = d / natoms_fu
            row[f"{q}_relaxed_err"] = a[key] - rec["dft"][key]
            row[f"{q}_fixed_err"] = b[key] - rec["dft"][key]
        out[mid] = row
    return out


def _stats(x) -> dict:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if not len(x):
        return {"n": 0}
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    return {"n": int(len(x)), "median": float(med), "q25": float(q1), "q75": float(q3), "min": float(x.min()),
            "max": float(x.max())}


def _summary(rows: dict) -> dict:
    out = {"n": len(rows), "volume_ratio": _stats([r["volume_ratio"] for r in rows.values()])}
    for q, _ in QTY:
        for suffix in ("", "_rel", "_atom"):
            out[f"d_{q}{suffix}"] = _stats([r[f"d_{q}{suffix}"] for r in rows.values()])
        out[f"{q}_mae_relaxed"] = float(np.mean([abs(r[f"{q}_relaxed_err"]) for r in rows.values()]))
        out[f"{q}_mae_fixed"] = float(np.mean([abs(r[f"{q}_fixed_err"]) for r in rows.values()]))
    return out


def _nested_cals(sets, split, weights=None, nbins=None) -> list:
    """The two nested calibrations of ``split``: fitted without that split's cluster and without valid fold 1 − f
    (f = 0, 1), each centred on the split's model's valid fold f."""
    va, cl = sets[(split, "valid")], sets.get((split, "cluster"))
    held = set(cl.ids) if cl is not None else set()
    weights = list(TERMS) if weights is None else weights
    cals = []
    for f in (0, 1):
        pool = []
        for (name, part), ev in sets.items():
            if name in (split, "shipped"):
                continue
            rows = ~np.isin(ev.ids, list(held)) & ~(ev.fold == 1 - f) & ~ev.unseen
            if part == "valid":
                rows &= ev.fold == f
            v = sets[(name, "valid")]
            pool.append((ev, rows, base_scales(v, v.fold == f), v, v.fold == f))
        cals.append(centred(fit_on(pool, weights, NBINS if nbins is None else nbins), va, va.fold == f))
    return cals


def _cluster_coverage(cl, cals, shift=None, crystals=None) -> dict:
    """Held-out coverage of Cv, S, F after the nested calibration (both folds' calibrations, as :func:`nested`),
    against the DFT value plus ``shift[q]`` (per crystal; None: the DFT value itself)."""
    import copy

    ev = cl
    if shift is not None:
        ev = copy.copy(cl)
        ev.err = dict(cl.err)
        for q in ("cv", "s", "f"):
            ev.err[q] = np.abs(cl.pred[q] - (cl.ref_q[q] + shift[q]))
    parts = []
    for cal in cals:
        rc = scaled_ratios(ev, _blob_scales(ev), ~ev.unseen)
        rc = {q: rc[q] for q in ("cv", "s", "f")}
        parts.append(_effective(rc, {q: cal.factor(q, ev.feats) for q in rc}))
    e = _merge(parts)
    return coverage(e, crystals=crystals)


def cmd_functional(args):
    """The PBE-vs-PBEsol offset: the MLIP's (PBE) phonons relaxed and at the DFT (PBEsol) cell on a sample of the
    held-out tellurides and heavy chalcogenides (plus the 20 valid crystals of scripts/validate.py), and the held-out
    coverage of the nested-calibrated interval against the DFT value and against DFT + that offset."""
    cl_ids = json.loads((RUNS / "clusters.json").read_text())
    sample = functional_sample(cl_ids)
    runs = functional_runs(sample) if not args.no_run else (
        json.loads(FUNCTIONAL_RUNS.read_text()) if FUNCTIONAL_RUNS.exists() else {})
    ids_all = {row["material_id"] for _, row, _ in sample}
    ids20 = {row["material_id"] for _, row, first in sample if first}
    held_rows = _shift_rows({m: r for m, r in runs.items() if m in ids_all})
    vcache = [json.loads((ROOT / "scripts" / "validation_cache" / n).read_text()) for n in VALID_PAIR]
    valid_pair = {m: {**vcache[0][m], "fixed": vcache[1][m]} for m in vcache[1] if m in vcache[0]}
    valid_rows = _shift_rows(valid_pair)
    res = {"engine": FUNCTIONAL_ENGINE, "settings": FUNCTIONAL_SETTINGS, "seed": FUNCTIONAL_SEED,
           "sample20": sorted(ids20), "n_run": len(held_rows),
           "shift": {"held_out": _summary(held_rows),
                     "held_out_sample20": _summary({m: r for m, r in held_rows.items() if m in ids20}),
                     "valid20": _summary(valid_rows),
                     "all": _summary({**held_rows, **valid_rows})},
           "per_crystal": held_rows, "coverage": {}}
    med_rel = {q: res["shift"]["held_out"][f"d_{q}_rel"]["median"] for q in ("cv", "s")}
    med_atom_f = res["shift"]["held_out"]["d_f_atom"]["median"]
    valid_ids = json.loads((RUNS / "valid_ids.json").read_text())
    sets = load_sets(SPLITS, fold_map(valid_ids))
    for split in FUNCTIONAL_SPLITS:
        cl = sets[(split, "cluster")]
        d = np.load(RUNS / split / "cluster.npz")
        cl.pred = {q: d[f"{q}_members"].mean(0) for q in ("cv", "s", "f")}
        cl.ref_q = {q: d[f"{q}_ref"] for q in ("cv", "s", "f")}
        cals = _nested_cals(sets, split)
        run = np.array([i in held_rows for i in cl.ids])
        shift = {}
        for q in ("cv", "s", "f"):
            if q == "f":  # F changes sign: the median shift per atom, times the atoms per formula unit
                est = med_atom_f * cl.natoms_fu
            else:
                est = med_rel[q] * np.abs(cl.ref_q[q])
            own = np.array([held_rows[i][f"d_{q}"] if i in held_rows else np.nan for i in cl.ids])
            shift[q] = np.where(run, own, est)
        idx = np.nonzero(run)[0]
        res["coverage"][split] = {
            "n_cluster_thermo": int(np.isfinite(cl.err["cv"][~cl.unseen]).sum()), "n_mlip": int(run.sum()),
            "dft": _cluster_coverage(cl, cals), "pbe_like": _cluster_coverage(cl, cals, shift),
            "dft_mlip_only": _cluster_coverage(cl, cals, crystals=idx),
            "pbe_like_mlip_only": _cluster_coverage(cl, cals, shift, crystals=idx),
            "report_after": json.loads(CACHE.read_text())["splits"][split]["after"]["cluster"],
            "cv_vs_shift_multiple": {str(k): _cluster_coverage(cl, cals, {q: k * v for q, v in shift.items()})["cv"]
                                     for k in SHIFT_MULTIPLES},
            "bias_median": {q: float(np.nanmedian(cl.pred[q] - cl.ref_q[q])) for q in ("cv", "s", "f")},
            "bias_median_rel": {q: float(np.nanmedian((cl.pred[q] - cl.ref_q[q]) / np.abs(cl.ref_q[q])))
                                for q in ("cv", "s")},
        }
        print(split, json.dumps(res["coverage"][split]), flush=True)
    for k in ("held_out", "held_out_sample20", "valid20"):
        s = res["shift"][k]
        print(k, "n", s["n"], "V ratio", s["volume_ratio"].get("median"),
              {q: (s[f"d_{q}"].get("median"), s[f"d_{q}_rel"].get("median")) for q, _ in QTY})
    cache = json.loads(CACHE.read_text())
    cache["functional"] = res
    CACHE.write_text(json.dumps(cache, indent=1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("clusters", "train", "collect", "collect-shipped", "report", "ship", "figures",
                                        "table", "functional"))
    ap.add_argument("--splits", nargs="+", default=list(SPLITS))
    ap.add_argument("--no-run", action="store_true", help="functional: only the cached MLIP runs")
    args = ap.parse_args(argv)
    if args.command == "clusters":
        cfg = reduced_config()
        cl = clusters(*load_pool(cfg))
        print({k: len(v) for k, v in cl.items()})
        return
    {"train": cmd_train, "collect": cmd_collect, "collect-shipped": cmd_collect_shipped, "report": cmd_report,
     "ship": cmd_ship, "figures": cmd_figures, "table": cmd_table,
     "functional": cmd_functional}[
        args.command
    ](args)


if __name__ == "__main__":
    main()
