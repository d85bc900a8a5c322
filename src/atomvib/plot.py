"""Matplotlib figures. Nothing else in atomvib imports matplotlib."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_band_dos(result, path: Path, title: str | None = None) -> Path:
    """Dispersion (left) and total/partial DOS (right) of a crystal result, THz."""
    plt = _plt()
    bands, dos = result.band_structure(), result.dos()
    fig, (ax, axd) = plt.subplots(1, 2, figsize=(9, 4.5), sharey=True, gridspec_kw={"width_ratios": [3, 1], "wspace": 0.05})
    start = 0
    for end in bands.segment_ends:
        ax.plot(bands.distances[start:end], bands.frequencies_thz[start:end], color="C0", lw=1.2)
        start = end
    for d, _lab in bands.labels:
        ax.axvline(d, color="0.7", lw=0.6)
    ax.set_xticks([d for d, _ in bands.labels])
    ax.set_xticklabels([lab.replace("GAMMA", "Γ") for _, lab in bands.labels])
    ax.set_xlim(bands.distances[0], bands.distances[-1])
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("Frequency (THz)")
    axd.plot(dos.total, dos.frequencies_thz, color="k", lw=1.2, label="total")
    for k, (el, g) in enumerate(dos.partial.items()):
        axd.plot(g, dos.frequencies_thz, lw=1.0, label=el, color=f"C{k + 1}")
    axd.set_xlabel("DOS (states/THz)")
    axd.legend(fontsize=8, loc="upper right")
    axd.set_xlim(0, None)
    prim = result.primitive
    eng = result.engine.get("name", "")
    ax.set_title(title or f"{prim.formula} ({prim.spacegroup()}) — {eng}", fontsize=10)
    if result.has_imaginary:
        ax.text(0.01, 0.02, "imaginary modes (unstable)", transform=ax.transAxes, color="C3", fontsize=9)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def plot_molecule_modes(result, path: Path) -> Path:
    """Stick spectrum of the normal-mode frequencies (cm^-1)."""
    plt = _plt()
    f = result.frequencies_cm1
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.vlines(f, 0, 1, color=np.where(f < 0, "C3", "C0"))
    ax.set_xlabel("Wavenumber (cm$^{-1}$)")
    ax.set_yticks([])
    ax.set_title(f"{result.structure.cell_formula} normal modes — {result.engine.get('name', '')}", fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
