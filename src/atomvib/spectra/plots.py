"""Figures of INS spectra and maps (matplotlib, Agg backend; no state kept between calls)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_indirect(spectra, path, title: str | None = None) -> Path:
    """Total and per-order lines of one or more :class:`~atomvib.spectra.ins.InsSpectrum` (one panel each)."""
    plt = _plt()
    spectra = list(spectra)
    fig, axes = plt.subplots(
        len(spectra), 1, figsize=(7, 2.6 * len(spectra) + 0.6), sharex=True, squeeze=False
    )
    emax = max(s.energy_mev[np.nonzero(s.intensity > 1e-3 * s.intensity.max())[0][-1]] for s in spectra)
    for ax, s in zip(axes[:, 0], spectra):
        ax.plot(s.energy_mev, s.intensity, color="k", lw=1.2, label="total")
        for n, v in enumerate(s.by_order, start=1):
            if n > 1:
                ax.plot(s.energy_mev, v, lw=0.9, label=f"{n}-phonon")
        for el, v in s.by_element.items():
            if len(s.by_element) > 1:
                ax.plot(s.energy_mev, v, lw=0.8, ls="--", label=el)
        ax.set_ylabel("S (1/eV)")
        ax.set_title(f"{s.instrument.upper()} {s.bank} bank, {s.temperature_k:g} K", fontsize=9)
        ax.legend(fontsize=7, ncol=3, frameon=False)
        ax.set_xlim(0, 1.05 * emax)
    axes[-1, 0].set_xlabel("Energy transfer (meV)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_map(m, path, title: str | None = None) -> Path:
    """S(|Q|, E) colour map (log scale) of an :class:`~atomvib.spectra.ins.InsMap` or coherent map."""
    plt = _plt()
    from matplotlib.colors import LogNorm

    z = np.ma.masked_invalid(m.intensity)
    vmax = float(z.max()) if z.count() else 1.0
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    x = getattr(m, "q_ainv", None)
    x = m.x if x is None else x
    pc = ax.pcolormesh(
        x, m.energy_mev, z.T, shading="auto", norm=LogNorm(vmin=vmax * 1e-4, vmax=vmax), cmap="viridis"
    )
    fig.colorbar(pc, ax=ax, label="S(Q,E) (1/eV)")
    ax.set_xlabel("|Q| (1/Å)")
    ax.set_ylabel("Energy transfer (meV)")
    label = (
        f"{getattr(m, 'instrument', '').upper()} Ei = {getattr(m, 'ei_mev', 0):g} meV, {m.temperature_k:g} K"
    )
    ax.set_title(title or label, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
