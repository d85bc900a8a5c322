"""Figures and numbers for docs/compare.md: aluminium (EMT and SevenNet-0) against ARCS powder data.

Usage: python scripts/compare_figures.py [--engines emt sevennet] [--temperature 300]
Writes docs/figures/compare_al_<engine>.png and prints the fitted numbers used in the docs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ase.build import bulk

import atomvib
from atomvib.spectra.compare import compare, incoherent_powder_spectrum, plot_fit
from atomvib.spectra.measured import read_sqe_map

ROOT = Path(__file__).resolve().parents[1]
AL_IQE = ROOT.parent / "shared" / "data" / "ins-experiment" / "Al-iqe.h5"


def al_compare(engine: str, temperature_k: float, q_range=(3.0, 9.0), e_range=(10.0, 70.0)):
    r = atomvib.phonons(bulk("Al", "fcc", a=4.05), engine=engine, relax=True, mesh_density=40)
    d = r.dos()
    mp = read_sqe_map(AL_IQE)
    qm = (mp.q_invA >= q_range[0]) & (mp.q_invA <= q_range[1])
    ef = np.arange(0.05, 80.0, 0.1)
    ie = np.clip(np.searchsorted(mp.energy_mev, ef), 0, len(mp.energy_mev) - 1)
    cov = np.isfinite(mp.intensity[qm])[:, ie]  # average the model over the Q bins that were measured
    ip = incoherent_powder_spectrum(
        d.frequencies_thz, d.total, 26.9815, temperature_k, mp.q_invA[qm], ef, coverage=cov
    )
    res = compare(
        ip.spectrum(), mp.reduce(*q_range), fit=("scale", "background", "broadening"), x_range=e_range
    )
    return r, ip, res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--engines", nargs="+", default=["emt", "sevennet"])
    ap.add_argument("--temperature", type=float, default=300.0)
    args = ap.parse_args()
    figs = ROOT / "docs" / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    for eng in args.engines:
        r, ip, res = al_compare(eng, args.temperature)
        s, ds = res.fit.frequency_scale
        path = figs / f"compare_al_{eng}.png"
        plot_fit(
            res,
            path,
            title=f"Al, {eng} ({r.omega_max_thz:.2f} THz max) vs ARCS, |Q| 3–9 Å$^{{-1}}$, "
            f"{args.temperature:.0f} K: s = {s:.3f} ± {ds:.3f}",
        )
        d = res.to_dict()
        mp_frac = float(ip.orders[1:].sum() / ip.total.sum())
        print(
            json.dumps(
                {
                    "engine": eng,
                    "omega_max_thz": r.omega_max_thz,
                    "msd_A2": ip.msd_a2,
                    "multiphonon_fraction": mp_frac,
                    "frequency_scale": d["frequency_scale"],
                    "chi2_red": d["chi2_red"],
                    "similarity": d["similarity"],
                    "similarity_fitted": d["similarity_fitted"],
                    "broadening_sigma_meV": res.fit.parameters["broadening_sigma"],
                },
                indent=1,
            )
        )
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
