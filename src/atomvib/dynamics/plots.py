"""Figures of MD results: the VACF DOS beside the harmonic DOS, the effective-phonon dispersion beside the
harmonic one. matplotlib only inside the functions, no pyplot (as :mod:`atomvib.plot`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _per_atom(dos, natoms_prim: int):
    """phonopy's DOS (∫ = 3 n_prim) per atom (∫ = 3)."""
    return np.asarray(dos.total) / max(1, natoms_prim)


def plot_md_dos(vdos, path, harmonic=None, reference=None, title: str | None = None) -> Path:
    """VACF DOS (total and per element) with, where given, the harmonic DOS of the same engine on its full q-mesh
    (``harmonic``: CrystalPhonons) and the harmonic spectrum of the MD cell's own modes with the same line shape
    (``reference``: array on ``vdos.frequencies_thz``)."""
    from ..plot import new_figure

    fig = new_figure(figsize=(7, 4.2))
    ax = fig.subplots()
    x = vdos.frequencies_thz
    ax.plot(x, vdos.total, color="k", lw=1.5, label=f"MD (VACF), {vdos.temperature_k:.0f} K")
    if len(vdos.partial) > 1:
        for k, (el, g) in enumerate(sorted(vdos.partial.items())):
            ax.plot(x, g, lw=1.0, color=f"C{k + 2}", label=f"MD {el}")
    if vdos.quantum_factor is not None:
        ax.plot(x, vdos.corrected(), color="0.5", lw=1.0, ls=":", label="MD × quantum correction")
    if reference is not None:
        ax.plot(x, reference, color="C1", lw=1.2, ls="--", label="harmonic, modes of the MD cell, same width")
    if harmonic is not None:
        d = harmonic.dos()
        ax.plot(d.frequencies_thz, _per_atom(d, harmonic.primitive.natoms), color="C0", lw=1.0, alpha=0.8,
                label="harmonic, full q-mesh")
    ax.set_xlabel("Frequency (THz)")
    ax.set_ylabel("DOS (states/THz per atom)")
    top = x[np.flatnonzero(vdos.total > 1e-2 * vdos.total.max())[-1]] if vdos.total.max() > 0 else x[-1]
    ax.set_xlim(0, min(x[-1], 1.15 * top + 3 * vdos.sigma_thz))
    ax.set_ylim(0, None)
    ax.legend(fontsize=8)
    ax.set_title(title or f"vibrational DOS from the velocity autocorrelation (σ = {vdos.sigma_thz:g} THz)", fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return Path(path)


def plot_effective_dispersion(eff, path, harmonic=None, title: str | None = None) -> Path:
    """Dispersion and DOS of effective phonons (``EffectivePhonons``), the harmonic ones (same band path) dashed."""
    from ..plot import draw_bands, new_figure

    bands, dos = eff.band_structure(), eff.dos()
    fig = new_figure(figsize=(9, 4.5))
    ax, axd = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 1], "wspace": 0.05})
    draw_bands(ax, bands, color="C3", lw=1.3)
    ax.plot([], [], color="C3", lw=1.3, label=f"effective, {eff.temperature_k:.0f} K")
    if harmonic is not None and harmonic.band_structure().frequencies_thz.shape == bands.frequencies_thz.shape:
        draw_bands(ax, bands, harmonic.band_structure().frequencies_thz, color="C0", lw=1.0, ls="--")
        ax.plot([], [], color="C0", lw=1.0, ls="--", label="harmonic (0 K)")
        hd = harmonic.dos()
        axd.plot(hd.total, hd.frequencies_thz, color="C0", lw=1.0, ls="--")
    for d, _lab in bands.labels:
        ax.axvline(d, color="0.7", lw=0.6)
    ax.set_xticks([d for d, _ in bands.labels])
    ax.set_xticklabels([lab.replace("GAMMA", "Γ") for _, lab in bands.labels])
    ax.set_xlim(bands.distances[0], bands.distances[-1])
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("Frequency (THz)")
    ax.legend(fontsize=8, loc="lower right")
    axd.plot(dos.total, dos.frequencies_thz, color="C3", lw=1.2)
    axd.set_xlabel("DOS (states/THz)")
    axd.set_xlim(0, None)
    prim = eff.primitive
    ax.set_title(title or f"{prim.formula}: effective phonons from MD ({eff.n_frames} frames, force residual "
                 f"{100 * eff.force_residual:.1f} %)", fontsize=10)
    if eff.has_imaginary:
        ax.text(0.01, 0.02, "imaginary modes (unstable)", transform=ax.transAxes, color="C3", fontsize=9)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return Path(path)


def plot_mode_spectra(m, path, title: str | None = None) -> Path:
    """Spectra of the modes at one q-point (``ModeSpectra``), each with its harmonic frequency marked."""
    from ..plot import new_figure

    fig = new_figure(figsize=(7, 4))
    ax = fig.subplots()
    x = m.frequencies_thz
    top = 0.0
    for k, (g, h, p) in enumerate(zip(m.spectra, m.harmonic_frequencies_thz, m.peak_frequencies_thz)):
        if p != p:  # acoustic at Γ
            continue
        ax.plot(x, g, lw=1.2, color=f"C{k % 10}", label=f"mode {k}: {h:.2f} → {p:.2f} THz")
        ax.axvline(h, color=f"C{k % 10}", lw=0.8, ls="--")
        top = max(top, p)
    ax.set_xlim(0, min(x[-1], 1.2 * top + 5 * m.sigma_thz) if top > 0 else x[-1])
    ax.set_ylim(0, None)
    ax.set_xlabel("Frequency (THz)")
    ax.set_ylabel("mode spectrum (1/THz)")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title or f"modes at q = {np.round(m.qpoint, 3).tolist()}, MD at {m.temperature_k:.0f} K "
                 "(dashed: harmonic)", fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return Path(path)


def plot_sampling_convergence(eff, path) -> Path:
    """Self-consistent harmonic sampling: max |Δω| and the lowest frequency per iteration."""
    from ..plot import new_figure

    rows = eff.sampling["iterations"]
    it = [r["iteration"] for r in rows]
    fig = new_figure(figsize=(7, 3.5))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.semilogy(it, [r["max_abs_dfreq_thz"] for r in rows], "o-", label="max |Δω|")
    ax1.semilogy(it, [r["rms_dfreq_thz"] for r in rows], "s-", label="RMS |Δω|")
    ax1.axhline(eff.sampling["settings"]["tolerance_thz"], color="0.5", ls="--", lw=0.8, label="tolerance")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("fit − sampled (THz)")
    ax1.legend(fontsize=8)
    ax2.plot(it, [r["min_freq_thz"] for r in rows], "o-", color="C3", label="lowest")
    ax2.plot(it, [r["max_freq_thz"] for r in rows], "o-", color="C0", label="highest")
    ax2.axhline(0, color="k", lw=0.5)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("commensurate frequencies (THz)")
    ax2.legend(fontsize=8)
    fig.suptitle(f"harmonic sampling at {eff.temperature_k:g} K", fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return Path(path)


def plot_md_ir(ir, path, harmonic=None) -> Path:
    """IR from the dipole autocorrelation, with the harmonic IR (OpticalSpectrum) broadened to the same σ."""
    from ..plot import new_figure

    fig = new_figure(figsize=(7, 4))
    ax = fig.subplots()
    x = ir.wavenumbers_cm1
    ax.plot(x, ir.intensity, color="k", lw=1.3, label=f"MD, {ir.temperature_k:.0f} K")
    if harmonic is not None:
        from .vacf import broadened_dos

        g = broadened_dos(harmonic.frequencies_cm1, x, ir.sigma_cm1, weights=harmonic.intensities)
        ax.plot(x, g, color="C0", lw=1.0, ls="--", label="harmonic (same engine, same σ)")
    top = x[np.flatnonzero(ir.intensity > 1e-3 * ir.intensity.max())[-1]] if ir.intensity.max() > 0 else x[-1]
    ax.set_xlim(0, min(x[-1], top + 10 * ir.sigma_cm1))
    ax.set_ylim(0, None)
    ax.set_xlabel("Wavenumber (cm$^{-1}$)")
    ax.set_ylabel("IR intensity (km/mol per cm$^{-1}$)")
    ax.legend(fontsize=8)
    ax.set_title(f"IR from the dipole autocorrelation (σ = {ir.sigma_cm1:g} cm$^{{-1}}$)", fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return Path(path)


def plot_md_sqe(s, path) -> Path:
    """Powder S(|Q|, E) from a trajectory: total (log colour scale) and its incoherent share."""
    from matplotlib.colors import LogNorm

    from ..plot import new_figure

    fig = new_figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    tot = np.clip(s.total, 1e-12, None)
    hi = float(np.nanpercentile(tot, 99.5))
    m = ax1.pcolormesh(s.q_ainv, s.energy_mev, tot.T, shading="nearest", norm=LogNorm(vmin=hi * 1e-3, vmax=hi))
    fig.colorbar(m, ax=ax1, label="S(|Q|,E) (arb.)")
    ax1.set_xlabel("|Q| (1/Å)")
    ax1.set_ylabel("Energy (meV)")
    ax1.set_title(f"coherent + incoherent, MD {s.temperature_k:.0f} K", fontsize=10)
    share = s.incoherent / np.where(s.total > 0, s.total, np.inf)
    m2 = ax2.pcolormesh(s.q_ainv, s.energy_mev, share.T, shading="nearest", vmin=0, vmax=1, cmap="viridis")
    fig.colorbar(m2, ax=ax2, label="incoherent share")
    ax2.set_xlabel("|Q| (1/Å)")
    ax2.set_title("incoherent / total", fontsize=10)
    top = s.energy_mev[np.flatnonzero(s.total.max(axis=0) > 1e-3 * s.total.max())[-1]] if s.total.max() > 0 else None
    if top is not None:
        ax1.set_ylim(0, 1.1 * top)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return Path(path)


def plot_md_sqe_path(s, path, dispersion=None) -> Path:
    """Coherent S(Q, E) along the band path from a trajectory (log colour scale, one column per q-point of the MD
    cell), with ``dispersion`` (distances, frequencies THz (nq, nbands)) of a phonon result drawn over it."""
    from matplotlib.colors import LogNorm

    from .. import units
    from ..plot import new_figure

    fig = new_figure(figsize=(7, 4.5))
    ax = fig.subplots()
    y = np.clip(s.coherent, 1e-12, None)
    hi = float(np.nanpercentile(y, 99.5))
    edges = np.concatenate([[s.distances_ainv[0] - 0.05], (s.distances_ainv[1:] + s.distances_ainv[:-1]) / 2,
                            [s.distances_ainv[-1] + 0.05]])
    width = np.minimum(np.diff(edges), 0.25)
    e = s.energy_mev
    e_edges = np.concatenate([[e[0]], (e[1:] + e[:-1]) / 2, [e[-1]]])
    norm = LogNorm(vmin=hi * 1e-3, vmax=hi)
    for k, x in enumerate(s.distances_ainv):
        if np.linalg.norm(s.q_cart_ainv[k]) < 1e-6:
            continue  # Q = 0: the uniform density, no phonon
        ax.pcolormesh([x - width[k] / 2, x + width[k] / 2], e_edges, y[k][:, None], shading="flat", norm=norm)
    if dispersion is not None:
        d, f = dispersion
        ax.plot(d, np.asarray(f) * units.THZ_TO_MEV, color="w", lw=0.7, alpha=0.8)
    for x in s.label_positions_ainv:
        ax.axvline(x, color="0.6", lw=0.5)
    ax.set_xticks(s.label_positions_ainv)
    ax.set_xticklabels(s.label_names)
    ax.set_xlim(s.label_positions_ainv[0], s.label_positions_ainv[-1])
    moving = np.linalg.norm(s.q_cart_ainv, axis=1) > 1e-6  # at Q = 0 nothing scatters coherently but noise
    top = (np.max(np.asarray(dispersion[1])) * units.THZ_TO_MEV if dispersion is not None
           else np.max(s.peak_energies_mev()[moving], initial=float(s.energy_mev[-1]) / 1.3))
    ax.set_ylim(0, 1.3 * top)
    ax.set_ylabel("Energy (meV)")
    ax.set_title(f"coherent S(Q,E) from MD at {s.temperature_k:.0f} K (zone {tuple(int(v) for v in s.zone)}); "
                 "lines: phonons", fontsize=9)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return Path(path)
