"""Figure of an identification: the best candidates' fitted spectra over the measurement, with residuals.

Like :mod:`atomvib.spectra.plots`: a :class:`matplotlib.figure.Figure` drawn straight to a file, no pyplot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plot import new_figure


def plot_identification(result, path, n: int = 3, title: str | None = None) -> Path:
    """Measured points (with error bars), the fitted model of each of the ``n`` best-ranked candidates that kept a
    fit, and their residuals (one row of residuals per candidate), PNG."""
    names = [c["name"] for c in result.candidates if c["name"] in result.fits][: max(int(n), 1)]
    rows = {c["name"]: c for c in result.candidates}
    m = result.measured
    label = {"meV": "Energy (meV)", "cm-1": "Wavenumber (cm$^{-1}$)", "THz": "Frequency (THz)"}[m.unit]
    fig = new_figure(figsize=(7.5, 4.2 + 1.0 * len(names)))
    axes = fig.subplots(1 + len(names), 1, sharex=True,
                        gridspec_kw={"height_ratios": [3.2] + [1] * len(names), "hspace": 0.08})
    ax = axes[0]
    if m.error is not None:
        ax.errorbar(m.x, m.y, m.error, fmt="o", ms=2.5, color="k", lw=0.6, label="measured", zorder=3)
    else:
        ax.plot(m.x, m.y, "o", ms=2.5, color="k", label="measured", zorder=3)
    for k, name in enumerate(names):
        f = result.fits[name]
        c = rows[name]
        s, ds = f.frequency_scale
        p = c["probability"]
        ptxt = f"p = {p:.4g}" if p is not None and np.isfinite(p) else "p –"
        which = (c["second_pass"].get("engine") or "phonons") if c["second_pass"] else "DOS predictor"
        ax.plot(f.x, f.model, color=f"C{k}", lw=1.5,
                label=f"#{c['rank']} {name} ({which}): s = {s:.3f} ± {ds:.3f}, χ²$_{{red}}$ = {f.chi2_red:.3g}, {ptxt}")
        r = axes[1 + k]
        if f.error is not None:
            r.errorbar(f.x, f.residual, f.error, fmt="o", ms=1.8, color=f"C{k}", lw=0.4)
        else:
            r.plot(f.x, f.residual, "o", ms=1.8, color=f"C{k}")
        r.axhline(0, color="k", lw=0.6)
        r.set_ylabel(f"#{c['rank']}", fontsize=8)
        r.tick_params(labelsize=7)
    axes[-1].set_xlabel(label)
    ax.set_ylabel("Intensity (arb. units)")
    ax.set_title(title or f"{Path(m.source).name or 'measurement'}: best {len(names)} of {len(result.candidates)} "
                 f"candidates ({result.mode}{', ' + result.instrument.upper() if result.instrument else ''})",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return Path(path)
