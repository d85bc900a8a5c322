"""Matplotlib figures of phonon results. With :mod:`atomvib.spectra.plots` the only modules that import
matplotlib, and only inside their functions.

Figures are plain :class:`matplotlib.figure.Figure` objects saved straight to a file (Agg canvas): no pyplot,
no ``matplotlib.use``, so nothing changes in matplotlib's global state and a user's interactive backend is
left alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def new_figure(**kw):
    """A :class:`matplotlib.figure.Figure` outside pyplot (not registered anywhere; garbage-collected after use)."""
    from matplotlib.figure import Figure

    return Figure(**kw)


def _engine_name(info) -> str:
    """The engine's registry name from a result's ``engine`` (an EngineInfo, or a plain dict in old results)."""
    if isinstance(info, dict):
        return str(info.get("name", ""))
    return str(getattr(info, "name", "") or "")


def plot_band_dos(result, path: Path, title: str | None = None) -> Path:
    """Dispersion (left) and total/partial DOS (right) of a crystal result, THz."""
    bands, dos = result.band_structure(), result.dos()
    fig = new_figure(figsize=(9, 4.5))
    ax, axd = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 1], "wspace": 0.05})
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
    eng = _engine_name(result.engine)
    ax.set_title(title or f"{prim.formula} ({prim.spacegroup()}) — {eng}", fontsize=10)
    if result.has_imaginary:
        ax.text(0.01, 0.02, "imaginary modes (unstable)", transform=ax.transAxes, color="C3", fontsize=9)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return Path(path)


def plot_committee(result, path: Path, title: str | None = None) -> Path:
    """Dispersion and DOS of a committee: the members' mean with the calibrated 90 % band (shaded), THz."""
    bands, spread = result.band_structure()
    f, dos = result.dos()
    fig = new_figure(figsize=(9, 4.5))
    ax, axd = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 1], "wspace": 0.05})
    lo, hi = spread.interval()
    start = 0
    for end in bands.segment_ends:
        x = bands.distances[start:end]
        for b in range(spread.mean.shape[1]):
            ax.fill_between(x, lo[start:end, b], hi[start:end, b], color="C0", alpha=0.25, lw=0)
        ax.plot(x, spread.mean[start:end], color="C0", lw=1.1)
        start = end
    for d, _lab in bands.labels:
        ax.axvline(d, color="0.7", lw=0.6)
    ax.set_xticks([d for d, _ in bands.labels])
    ax.set_xticklabels([lab for _, lab in bands.labels])
    ax.set_xlim(bands.distances[0], bands.distances[-1])
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("Frequency (THz)")
    dlo, dhi = dos.interval()
    axd.fill_betweenx(f, np.clip(dlo, 0, None), dhi, color="C0", alpha=0.25, lw=0, label="90 % band")
    axd.plot(dos.mean, f, color="k", lw=1.1, label="mean")
    axd.set_xlabel("DOS (states/THz)")
    axd.set_xlim(0, 1.3 * float(np.max(dos.mean)))  # the band's spikes would squash the mean
    axd.legend(fontsize=8, loc="upper right")
    prim = result.primitive
    ax.set_title(title or f"{prim.formula} ({prim.spacegroup()}) — committee: {', '.join(result.engines)}", fontsize=9)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return Path(path)


def plot_molecule_modes(result, path: Path) -> Path:
    """Stick spectrum of the normal-mode frequencies (cm^-1)."""
    f = result.frequencies_cm1
    fig = new_figure(figsize=(8, 3))
    ax = fig.subplots()
    ax.vlines(f, 0, 1, color=np.where(f < 0, "C3", "C0"))
    ax.set_xlabel("Wavenumber (cm$^{-1}$)")
    ax.set_yticks([])
    ax.set_title(f"{result.structure.cell_formula} normal modes — {_engine_name(result.engine)}", fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return Path(path)
