"""Figures for docs/ins.md: atomvib's VISION spectra over OCLIMAX 3.0's, and an ARCS S(|Q|,E) map.

Usage::

    python scripts/ins_figures.py   # writes docs/figures/ins_vision_oclimax.png, docs/figures/ins_arcs_mgo.png
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

for _v in ("ATOMVIB_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FIG = ROOT / "docs" / "figures"


def _phonopy(name):
    import phonopy

    from atomvib.harmonic.force_constants import ForceConstants

    d = DATA / "phonopy-examples" / name
    return ForceConstants.from_phonopy(phonopy.load(
        str(d / "phonopy_disp.yaml"),
        force_sets_filename=str(d / "FORCE_SETS"),
        born_filename=str(d / "BORN"),
        log_level=0,
    ))


def _oclimax(name):
    f = DATA / "oclimax-reference" / f"{name}_vis_o3__vis_inc_5K.csv"
    return np.array([[float(x) for x in ln.split(",")] for ln in f.read_text().splitlines() if "#" not in ln])


def vision_figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from atomvib.spectra import vision_spectrum

    fig, axes = plt.subplots(2, 1, figsize=(7, 5.4))
    for ax, name, emax in zip(axes, ("NaCl", "MgO"), (70, 180)):
        s = vision_spectrum(_phonopy(name), order=3, temperature_k=5.0, mesh=16)
        ref = _oclimax(name)
        e_ref = ref[:, 0] / 0.999966 + 0.05
        ax.plot(e_ref, ref[:, 1], color="0.6", lw=3.0, label="OCLIMAX 3.0, total")
        ax.plot(s.energy_mev, s.intensity, color="k", lw=1.0, label="atomvib, total")
        ax.plot(e_ref, ref[:, 4] + ref[:, 5], color="#f4a582", lw=3.0, label="OCLIMAX, 2+3-phonon")
        ax.plot(
            s.energy_mev, s.by_order[1] + s.by_order[2], color="#b2182b", lw=1.0, label="atomvib, 2+3-phonon"
        )
        ours = np.interp(e_ref, s.energy_mev, s.intensity)
        rel = np.linalg.norm(ours - ref[:, 1]) / np.linalg.norm(ref[:, 1])
        ax.set_title(
            f"{name}, VISION backward bank, 5 K, same DFT force constants (difference {100 * rel:.2f} % rms)",
            fontsize=9,
        )
        ax.set_xlim(0, emax)
        ax.set_ylabel("S (1/eV)")
        ax.legend(fontsize=7, frameon=False)
    axes[-1].set_xlabel("Energy transfer (meV)")
    fig.tight_layout()
    out = FIG / "ins_vision_oclimax.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def arcs_figure():
    from atomvib.spectra import direct_powder_map
    from atomvib.spectra.plots import plot_map

    m = direct_powder_map(
        _phonopy("MgO"), "arcs", 120.0, order=3, temperature_k=5.0, q_range_ainv=(0.1, 11.0)
    )
    return plot_map(m, FIG / "ins_arcs_mgo.png", title="MgO, ARCS Ei = 120 meV, 5 K, incoherent, orders 1-3")


if __name__ == "__main__":
    FIG.mkdir(parents=True, exist_ok=True)
    for p in (vision_figure(), arcs_figure()):
        print(p, p.stat().st_size // 1024, "kB")
