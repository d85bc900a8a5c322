"""Figure for docs/batch.md: a screening batch queried back from the database as a DataFrame.

Runs ``run_batch`` on 7 EMT fcc metals × 5 lattice constants (0.97–1.03 of the experimental value) with
2 workers, then plots the stored ``omega_max_thz`` against the volume change: the quasi-harmonic trend
(frequencies fall as the lattice expands) read straight from ``Store.calculations()``. From the slope,
the mean mode Grüneisen parameter γ ≈ −d ln ω / d ln V is printed for each metal.

Usage: python scripts/batch_figures.py  → docs/figures/batch_omega_max.png
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

for _k in ("ATOMVIB_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("PYTHONWARNINGS", "ignore")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.io import write  # noqa: E402

from atomvib.batch import run_batch  # noqa: E402
from atomvib.settings import PhononSettings  # noqa: E402
from atomvib.store import Store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METALS = {"Al": 4.05, "Cu": 3.61, "Ni": 3.52, "Au": 4.08, "Ag": 4.09, "Pd": 3.89, "Pt": 3.92}
SCALES = np.linspace(0.97, 1.03, 5)


def main():
    tmp = Path(tempfile.mkdtemp(prefix="atomvib-batch-fig-"))
    for el, a in METALS.items():
        for s in SCALES:
            write(tmp / f"{el}_{s:.3f}.cif", bulk(el, "fcc", a=a * s))
    settings = PhononSettings(engine="emt", relax=False, min_supercell_length_a=8.0, mesh_density=10.0)
    summary = run_batch([tmp], settings=settings, db=tmp / "screen.db", workers=2, progress=True)
    print(summary.describe())
    df = Store(tmp / "screen.db").calculations(status="done")
    df["scale"] = [float(Path(s).stem.split("_")[1]) for s in df["source"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for el in METALS:
        d = df[df["formula"] == el].sort_values("scale")
        dv = d["scale"].to_numpy() ** 3 - 1
        ax.plot(100 * dv, d["omega_max_thz"], "o-", label=el)
        gamma = -np.polyfit(np.log(d["scale"].to_numpy() ** 3), np.log(d["omega_max_thz"].to_numpy()), 1)[0]
        print(f"{el}: omega_max {d['omega_max_thz'].iloc[2]:.2f} THz at a0, gamma(omega_max) = {gamma:.2f}")
    ax.set_xlabel("volume change (%)")
    ax.set_ylabel(r"$\omega_{max}$ (THz)")
    ax.set_title(f"atomvib batch: {len(df)} EMT phonon calculations from the database")
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    out = ROOT / "docs" / "figures" / "batch_omega_max.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} kB)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
