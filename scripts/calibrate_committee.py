"""Calibrate the committee's spread against DFPT: one scale factor for the standard deviation.

Reads the per-crystal validation results of each member engine (``scripts/validation_cache/petretto_<engine>.json``,
written by ``scripts/validate.py`` on the Petretto **valid** split) and, for the crystals every member has, compares
the committee's mean ± σ with the DFPT value of ω_max, Cv, S and F (300 K, per formula unit). The scale k is the
90th percentile of |mean − DFT| / σ over all four quantities, divided by 1.645, so that ``mean ± 1.645·k·σ`` holds
90 % of the DFT values; it is checked by two-fold cross-validation (fit on one half, count on the other).

Writes ``src/atomvib/harmonic/committee_calibration.json`` (one entry per set of members, replaced when re-run).

Usage: python scripts/calibrate_committee.py [--members sevennet sevennet:7net-l3i5 chgnet]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from atomvib.harmonic import committee

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validate import SLUG  # noqa: E402  (the cache names of scripts/validate.py)

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "scripts" / "validation_cache"
OUT = ROOT / "src" / "atomvib" / "harmonic" / "committee_calibration.json"
Z90 = committee.Z90
QUANTITIES = {"omega_max_thz": "ω_max", "cv": "Cv", "s": "S", "f_kj": "F"}


def cache_file(spec: str) -> Path:
    """The validation cache of an engine spec, named as ``scripts/validate.py`` names it: ``sevennet`` →
    petretto_sevennet.json, ``sevennet:7net-l3i5`` → petretto_7net-l3i5.json, ``sevennet:7net-mf-0`` →
    petretto_7net-mf-0-pbe.json."""
    spec = {"sevennet:7net-mf-0": "sevennet:7net-mf-0:pbe"}.get(spec, spec)
    slug = SLUG.get(spec, spec.replace(":", "_").replace("/", "_"))
    return CACHE / f"petretto_{slug}.json"


def committee_errors(members) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(crystal ids, |mean − DFT| per quantity, σ per quantity) over the crystals every member has, stable in DFPT
    and in every member (no imaginary modes: thermal properties of an unstable crystal are not comparable)."""
    data = []
    for spec in members:
        f = cache_file(spec)
        if not f.is_file():
            raise SystemExit(f"{f} missing: run scripts/validate.py for engine {spec} first")
        data.append(json.loads(f.read_text()))
    ids = sorted(set.intersection(*(set(d) for d in data)))
    ids = [i for i in ids if all(not d[i].get("imaginary") and d[i].get("cv") is not None for d in data)
           and data[0][i].get("dft", {}).get("cv") is not None]
    err, sig = {}, {}
    for q in QUANTITIES:
        vals = np.array([[d[i][q] for i in ids] for d in data])  # the caches hold values per formula unit
        dft = np.array([data[0][i]["dft"][q] for i in ids])
        err[q] = np.abs(vals.mean(axis=0) - dft)
        sig[q] = np.maximum(vals.std(axis=0, ddof=1), 1e-12)
    return ids, err, sig


def fit_scale(err: dict, sig: dict, mask=None) -> float:
    """One k for all quantities (pooled), on the crystals of ``mask``."""
    sl = mask if mask is not None else slice(None)
    return committee.fit_scale(np.concatenate([err[q][sl] for q in err]), np.concatenate([sig[q][sl] for q in err]))


def coverage(err: dict, sig: dict, k: float, zq: float, mask=None) -> dict:
    sl = mask if mask is not None else slice(None)
    return {QUANTITIES[q]: committee.interval_coverage(err[q][sl], sig[q][sl], k, zq) for q in err}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", nargs="+", default=["sevennet", "sevennet:7net-l3i5", "chgnet"])
    a_ = ap.parse_args(argv)
    ids, err, sig = committee_errors(a_.members)
    if len(ids) < 10:
        raise SystemExit(f"only {len(ids)} crystals common to {a_.members}: too few to calibrate")
    k = fit_scale(err, sig)
    # one factor per quantity: the pooled one leaves Cv/S under-covered and ω_max/F over-covered (their spreads
    # relate differently to their errors); each is checked by two-fold cross-validation over many random halves
    scales = {QUANTITIES[q]: committee.fit_scale(err[q], sig[q]) for q in err}
    rng = np.random.default_rng(0)
    cv_pooled, cv_each = {QUANTITIES[q]: [] for q in err}, {QUANTITIES[q]: [] for q in err}
    for _ in range(200):
        half = rng.permutation(len(ids)) < len(ids) // 2
        for a, b in ((half, ~half), (~half, half)):
            kp = fit_scale(err, sig, a)
            for q in err:
                cv_pooled[QUANTITIES[q]].append(committee.interval_coverage(err[q][b], sig[q][b], kp, Z90))
                kq = committee.fit_scale(err[q][a], sig[q][a])
                cv_each[QUANTITIES[q]].append(committee.interval_coverage(err[q][b], sig[q][b], kq, Z90))
    each = {QUANTITIES[q]: (err[q], sig[q]) for q in err}
    entry = {
        "members": list(a_.members),
        "scale": k,
        "scales": scales,
        "n_crystals": len(ids),
        "crystals": ids,
        "data": "Petretto DFPT valid split (PBEsol), 300 K per formula unit; crystals stable in DFPT and every member",
        "coverage_90_uncalibrated": coverage(err, sig, 1.0, Z90),
        "coverage_1sigma_uncalibrated": coverage(err, sig, 1.0, 1.0),
        "coverage_2sigma_uncalibrated": coverage(err, sig, 1.0, 2.0),
        "coverage_90_pooled_scale": coverage(err, sig, k, Z90),
        "coverage_90_calibrated": {n: committee.interval_coverage(e, s_, scales[n], Z90) for n, (e, s_) in each.items()},
        "coverage_1sigma_calibrated": {n: committee.interval_coverage(e, s_, scales[n], 1.0) for n, (e, s_) in each.items()},
        "coverage_2sigma_calibrated": {n: committee.interval_coverage(e, s_, scales[n], 2.0) for n, (e, s_) in each.items()},
        "cross_validated_coverage_90": {n: float(np.mean(v)) for n, v in cv_each.items()},
        "cross_validated_coverage_90_pooled_scale": {n: float(np.mean(v)) for n, v in cv_pooled.items()},
        "note": f"scales fitted on {len(ids)} Petretto valid crystals (scripts/calibrate_committee.py); "
                "cross-validated: fit on a random half, count on the other, 200 splits",
    }
    table = json.loads(OUT.read_text()) if OUT.is_file() else {"committees": []}
    table["committees"] = [e for e in table["committees"] if sorted(e["members"]) != sorted(a_.members)] + [entry]
    OUT.write_text(json.dumps(table, indent=2) + "\n")
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
