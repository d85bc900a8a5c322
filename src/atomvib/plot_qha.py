"""The figure of a quasi-harmonic result (``qha.png``), in the style of :mod:`atomvib.plot` (plain
:class:`matplotlib.figure.Figure`, no pyplot, matplotlib imported only inside the function)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .plot import _engine_name, new_figure


def plot_qha(result, path: Path, n_curves: int = 5) -> Path:
    """Four panels of a :class:`~atomvib.harmonic.qha.QuasiHarmonic`: E(V) with the fitted EOS and F(V) curves at a
    few temperatures (V(T) marked), α(T) (linear for cubic crystals), B(T), and C_p, C_v per formula unit."""
    from phonopy.qha.eos import get_eos

    from . import units

    eos = get_eos(result.static_eos["eos"])
    z = result.formula_units
    v, t = result.volumes_a3, result.temperatures_k
    vv = np.linspace(v.min(), v.max(), 200)
    fig = new_figure(figsize=(10, 7.5))
    (ax_ev, ax_a), (ax_b, ax_c) = fig.subplots(2, 2)

    def params(e0, b_gpa, bp, v0):  # phonopy's EOS parameters: B in eV/Å³
        return np.array([e0, b_gpa / units.EV_PER_A3_TO_GPA, bp, v0])

    # E(V) and F(V, T): eV per formula unit, relative to the static minimum
    se = result.static_eos
    e0 = se["energy_ev"]
    ax_ev.plot(v / z, (result.energies_ev - e0) / z, "o", color="k", ms=4, label="E(V) static")
    static = params(e0, se["bulk_modulus_gpa"], se["bulk_modulus_prime"], se["volume_a3"])
    ax_ev.plot(vv / z, (eos(vv, static) - e0) / z, "-", color="k", lw=1.0)
    picks = np.unique(np.linspace(0, t.size - 1, n_curves).round().astype(int))
    for k, j in enumerate(picks):
        c = f"C{k + 1}"
        f = result.energies_ev + result.free_energies_kj_per_mol[:, j] / units.EV_TO_KJ_PER_MOL
        ax_ev.plot(v / z, (f - e0) / z, "o", color=c, ms=3)
        ax_ev.plot(vv / z, (eos(vv, params(*result.eos_t[j])) - e0) / z, "-", color=c, lw=1.0, label=f"F(V), {t[j]:g} K")
    fmin = np.array([eos(np.array([p[3]]), params(*p))[0] for p in result.eos_t])
    ax_ev.plot(result.volume_t_a3 / z, (fmin - e0) / z, "--", color="0.4", lw=0.8, label="V(T)")
    ax_ev.set_xlabel(f"Volume (Å³ per {result.primitive.formula})")
    ax_ev.set_ylabel("E, F − E₀ (eV per formula unit)")
    ax_ev.legend(fontsize=7)

    if result.is_cubic:
        ax_a.plot(t, result.thermal_expansion_per_k / 3.0 * 1e6, color="C0")
        ax_a.set_ylabel("linear α (10⁻⁶/K)")
    else:
        ax_a.plot(t, result.thermal_expansion_per_k * 1e6, color="C0")
        ax_a.set_ylabel("volumetric α (10⁻⁶/K)")
    ax_a.axhline(0, color="k", lw=0.5)
    ax_a.set_xlabel("Temperature (K)")

    ax_b.plot(t, result.bulk_modulus_gpa, color="C2")
    ax_b.set_xlabel("Temperature (K)")
    ax_b.set_ylabel("Bulk modulus (GPa)")

    ax_c.plot(t[1:], result.cp_j_per_k_per_mol[1:] / z, color="C3", label="C_p")
    ax_c.plot(t, result.cv_j_per_k_per_mol / z, color="C0", ls="--", label="C_v at V(T)")
    ax_c.axhline(3 * result.primitive.natoms / z * units.GAS_CONSTANT_J_PER_K_PER_MOL, color="0.6", lw=0.6,
                 label="3nR")
    ax_c.set_xlabel("Temperature (K)")
    ax_c.set_ylabel(f"Heat capacity (J/K per mol {result.primitive.formula})")
    ax_c.legend(fontsize=8)
    for ax in (ax_a, ax_b, ax_c):
        ax.set_xlim(t[0], t[-1])
    engine = getattr(result.engine, "spec", "") or _engine_name(result.engine)
    fig.suptitle(f"{result.primitive.formula}, {result.structure.spacegroup(result.settings.symprec)}, quasi-harmonic "
                 f"— {engine}, {v.size} volumes", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return Path(path)
