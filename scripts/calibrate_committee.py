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
from pathlib import Path

import numpy as np

from atomvib.harmonic import committee

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "scripts" / "validation_cache"
OUT = ROOT / "src" / "atomvib" / "harmonic" / "committee_calibration.json"
Z90 = committee.Z90
QUANTITIES = {"omega_max_thz": "ω_max", "cv": "Cv", "s": "S", "f_kj": "F"}


def cache_file(spec: str) -> Path:
    """The validation cache of an engine spec: ``sevennet`` → petretto_sevennet.json,
    ``sevennet:7net-l3i5`` → petretto_sevennet_7net-l3i5.json."""
    return CACHE / f"petretto_{spec.replace(':', '_').replace('/', '_')}.json"


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
        vals = np.array([[d[i][q] / (d[i].get("formula_units") or 1) if q != "omega_max_thz" else d[i][q]
                          for i in ids] for d in data])
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
    a = ap.parse_args(argv)
    ids, err, sig = committee_errors(a.members)
    if len(ids) < 10:
        raise SystemExit(f"only {len(ids)} crystals common to {a.members}: too few to calibrate")
    k = fit_scale(err, sig)
    rng = np.random.default_rng(0)
    half = rng.permutation(len(ids)) < len(ids) // 2
    k_a, k_b = fit_scale(err, sig, half), fit_scale(err, sig, ~half)
    cv_a, cv_b = coverage(err, sig, k_a, Z90, ~half), coverage(err, sig, k_b, Z90, half)
    entry = {
        "members": list(a.members),
        "scale": k,
        "n_crystals": len(ids),
        "data": "Petretto DFPT valid split (PBEsol), 300 K per formula unit; crystals stable in DFPT and every member",
        "coverage_90_uncalibrated": coverage(err, sig, 1.0, Z90),
        "coverage_90_calibrated": coverage(err, sig, k, Z90),
        "coverage_1sigma_calibrated": coverage(err, sig, k, 1.0),
        "coverage_2sigma_calibrated": coverage(err, sig, k, 2.0),
        "cross_validated_coverage_90": {q: 0.5 * (cv_a[q] + cv_b[q]) for q in cv_a},
        "cross_validated_scales": [k_a, k_b],
        "note": f"scale fitted on {len(ids)} Petretto valid crystals (scripts/calibrate_committee.py)",
    }
    table = json.loads(OUT.read_text()) if OUT.is_file() else {"committees": []}
    table["committees"] = [e for e in table["committees"] if sorted(e["members"]) != sorted(a.members)] + [entry]
    OUT.write_text(json.dumps(table, indent=2) + "\n")
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
