"""Figures of spectra: INS spectra and maps, IR/Raman curves, fits to measurements.

With :mod:`atomvib.plot` the only modules that import matplotlib (lazily, inside the functions). The
figures are :class:`matplotlib.figure.Figure` objects drawn straight to a file: no pyplot, no backend
switch, nothing left in matplotlib's global state (a user's interactive backend is untouched).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plot import new_figure


def plot_indirect(spectra, path, title: str | None = None) -> Path:
    """Total and per-order lines of one or more :class:`~atomvib.spectra.ins.InsSpectrum` (one panel each)."""
    spectra = list(spectra)
    fig = new_figure(figsize=(7, 2.6 * len(spectra) + 0.6))
    axes = fig.subplots(len(spectra), 1, sharex=True, squeeze=False)
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
    return Path(path)


def plot_map(m, path, title: str | None = None) -> Path:
    """S(|Q|, E) colour map (log scale) of an :class:`~atomvib.spectra.ins.InsMap` or coherent map."""
    from matplotlib.colors import LogNorm

    z = np.ma.masked_invalid(m.intensity)
    vmax = float(z.max()) if z.count() else 1.0
    fig = new_figure(figsize=(6.4, 4.6))
    ax = fig.subplots()
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
    return Path(path)


def plot_optical(
    spectrum, path, fwhm_cm1: float = 10.0, shape: str = "lorentzian", axis_cm1=None, title: str | None = None
) -> Path:
    """Broadened IR/Raman curve of an :class:`~atomvib.spectra.ir.OpticalSpectrum` with the mode sticks
    (scaled to the curve's maximum), PNG."""
    x, y = spectrum.curve(axis_cm1, fwhm_cm1, shape)
    fig = new_figure(figsize=(7, 3.6), dpi=110)
    ax = fig.subplots()
    ax.plot(
        x,
        y,
        color="C0" if spectrum.kind == "ir" else "C3",
        lw=1.4,
        label=f"{shape}, FWHM {fwhm_cm1:g} cm$^{{-1}}$",
    )
    f, i = np.asarray(spectrum.frequencies_cm1), np.asarray(spectrum.intensities)
    if i.size and len(y) and i.max() > 0 and y.max() > 0:  # a spectrum without modes plots empty axes
        sel = (f > 0) & (f >= x[0]) & (f <= x[-1])
        ax.vlines(f[sel], 0, i[sel] / i.max() * y.max(), color="k", lw=0.8, alpha=0.6, label="modes (scaled)")
    ax.set_xlabel("wavenumber (cm$^{-1}$)")
    ax.set_ylabel(
        f"{'IR intensity' if spectrum.kind == 'ir' else 'Raman'} ({spectrum.intensity_unit} per cm$^{{-1}}$)"
    )
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(bottom=0)
    ax.set_title(title or f"{spectrum.kind.upper()} spectrum ({spectrum.system})")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def plot_fit(result, path, title: str | None = None) -> Path:
    """Overlay of a :class:`~atomvib.spectra.compare.CompareResult` (measured with error bars, computed as is
    scaled to the same area, fitted model) and residuals, PNG."""
    from ..units import frequency_factor

    m = result.measured.crop(*result.x_range)
    unit_label = {"meV": "Energy (meV)", "cm-1": "Wavenumber (cm$^{-1}$)", "THz": "Frequency (THz)"}[m.unit]
    fig = new_figure(figsize=(7, 5.2))
    ax, axr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})
    if m.error is not None:
        ax.errorbar(m.x, m.y, m.error, fmt="o", ms=2.5, color="k", lw=0.6, label="measured")
    else:
        ax.plot(m.x, m.y, "o", ms=2.5, color="k", label="measured")
    # the computed spectrum on its own (finer) axis, scaled to the measured area over the compared range
    xc = result.computed.x * frequency_factor(result.computed.unit, m.unit)
    inr = (xc >= m.x[0]) & (xc <= m.x[-1])
    if inr.sum() > 1 and np.trapezoid(result.computed.y[inr], xc[inr]) > 0:
        area = np.trapezoid(np.clip(m.y, 0, None), m.x) / np.trapezoid(result.computed.y[inr], xc[inr])
        ax.plot(
            xc[inr],
            result.computed.y[inr] * area,
            color="0.55",
            lw=1,
            ls="--",
            label="computed as is (area-matched)",
        )
    f = result.fit
    if f is not None:
        s, ds = f.frequency_scale
        ax.plot(
            f.x,
            f.model,
            color="C3",
            lw=1.6,
            label=f"fit: s = {s:.3f} ± {ds:.3f}, χ²$_{{red}}$ = {f.chi2_red:.2f}",
        )
        r = f.residual
        if f.error is not None:
            axr.errorbar(f.x, r, f.error, fmt="o", ms=2, color="C3", lw=0.5)
        else:
            axr.plot(f.x, r, "o", ms=2, color="C3")
        axr.axhline(0, color="k", lw=0.6)
    axr.set_ylabel("residual")
    axr.set_xlabel(unit_label)
    ax.set_ylabel("Intensity (arb. units)")
    sim = result.similarity_fitted or result.similarity
    ax.set_title(
        title
        or f"cosine {sim.cosine:.3f}, SIS {sim.sis:.3f}, Wasserstein {sim.wasserstein:.2f} {m.unit}"
        + (" (after fit)" if result.fit else ""),
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return Path(path)


def plot_indirect_band(energy_mev, spread, engines, path, instrument: str = "") -> Path:
    """A committee's INS spectrum: the members' mean with the calibrated 90 % band and each member (thin), PNG."""
    fig = new_figure(figsize=(7, 3.6), dpi=110)
    ax = fig.subplots()
    lo, hi = spread.interval()
    ax.fill_between(energy_mev, np.clip(lo, 0, None), hi, color="C0", alpha=0.3, lw=0, label="90 % band")
    for k, (e, y) in enumerate(zip(engines, spread.members)):
        ax.plot(energy_mev, y, lw=0.7, color=f"C{k + 1}", alpha=0.8, label=e)
    ax.plot(energy_mev, spread.mean, color="k", lw=1.3, label="committee mean")
    ax.set_xlabel("energy transfer (meV)")
    ax.set_ylabel("S (1/eV)")
    ax.set_xlim(energy_mev[0], energy_mev[-1])
    ax.set_ylim(bottom=0)
    ax.set_title(f"{instrument.upper()} INS, committee of {len(engines)}")
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
