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


def draw_bands(ax, bands, frequencies_thz=None, **style) -> None:
    """Branches of a band path on ``ax``, one line per path segment (no line across a jump between segments);
    ``frequencies_thz`` (nq, nb) on the same path replaces the path's own."""
    f = bands.frequencies_thz if frequencies_thz is None else frequencies_thz
    start = 0
    for end in bands.segment_ends:
        ax.plot(bands.distances[start:end], f[start:end], **style)
        start = end


def plot_band_dos(result, path: Path, title: str | None = None) -> Path:
    """Dispersion (left) and total/partial DOS (right) of a crystal result, THz."""
    bands, dos = result.band_structure(), result.dos()
    fig = new_figure(figsize=(9, 4.5))
    ax, axd = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 1], "wspace": 0.05})
    draw_bands(ax, bands, color="C0", lw=1.2)
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


def plot_kappa(result, path: Path, temperature_k: float = 300.0) -> Path:
    """κ(T) on log axes, cumulative κ vs frequency and vs mean free path, linewidths vs frequency of a
    :class:`~atomvib.anharmonic.conductivity.ThermalConductivity` (four panels)."""
    t = temperature_k if np.any(np.isclose(result.temperatures_k, temperature_k)) else float(result.temperatures_k[0])
    fig = new_figure(figsize=(16, 3.8))
    ax_t, ax_c, ax_m, ax_g = fig.subplots(1, 4, gridspec_kw={"wspace": 0.32})
    temps = result.temperatures_k
    ok = temps > 0
    labels = {0: "xx", 1: "yy", 2: "zz"}
    k = result.kappa_w_per_mk
    distinct = [i for i in range(3) if i == 0 or not np.allclose(k[ok, i], k[ok, 0], rtol=1e-3)]
    for i in distinct:
        ax_t.loglog(temps[ok], k[ok, i], "o-", ms=3, lw=1.5, label=f"κ_{labels[i]}" if len(distinct) > 1 else "κ")
    if result.kappa_coherent_w_per_mk is not None:
        ax_t.loglog(temps[ok], result.kappa_coherent_w_per_mk[ok, :3].mean(axis=1), "--", lw=1.2,
                    label="coherences κ_C")
    ax_t.set_xlabel("Temperature (K)")
    ax_t.set_ylabel("κ (W/m·K)")
    ax_t.legend(fontsize=8)
    ax_t.set_title(f"{result.structure.formula} — {result.method.upper()}, mesh {'x'.join(map(str, result.mesh))}",
                   fontsize=10)
    f, cf = result.cumulative_kappa("frequency", t)
    ax_c.plot(f, cf, color="C0", lw=1.5)
    ax_c.set_xlabel("Frequency (THz)")
    ax_c.set_ylabel(f"cumulative κ at {t:g} K (W/m·K)")
    mfp, cm = result.cumulative_kappa("mfp", t)
    mfp_nm = mfp / 10.0  # Å → nm
    total = cm[-1] if len(cm) else 0.0
    # from where the first 0.1 % of κ is reached: modes with no speed (acoustic at Γ) have no meaningful path
    start = int(np.searchsorted(cm, 1e-3 * total)) if total > 0 else 0
    ax_m.semilogx(mfp_nm[start:], cm[start:], color="C3", lw=1.5)
    ax_m.set_xlabel("Mean free path (nm)")
    ax_m.set_ylabel(f"cumulative κ at {t:g} K (W/m·K)")
    it = int(np.argmin(np.abs(temps - t)))
    w = result.linewidths_thz[it]
    freq = np.broadcast_to(result.frequencies_thz, w.shape)
    pos = (w > 0) & (freq > 1e-3)
    ax_g.semilogy(freq[pos], w[pos], ".", ms=3, color="k")
    ax_g.set_xlabel("Frequency (THz)")
    ax_g.set_ylabel(f"Linewidth 2Γ at {t:g} K (THz)")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return Path(path)
