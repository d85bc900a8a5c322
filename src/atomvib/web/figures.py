"""Plotly figures (plain JSON dicts, drawn by plotly.js in the browser) from atomvib's typed results.

Only data in, figure dicts out: the numbers come from the results' own methods (``band_structure()``,
``dos()``, ``thermal_``, spectra functions); nothing is computed here but the layout. Values are rounded to
what a screen shows (5 significant digits) to keep the JSON small.
"""

from __future__ import annotations

import numpy as np

#: imaginary frequencies (negative, THz) shown in red, with the band below zero shaded
IMAGINARY_COLOR = "#d62728"
BRANCH_COLOR = "#1f4e79"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def _r(a, digits: int = 5):
    """A float array as (nested) lists rounded to ``digits`` significant digits; NaN and inf become None."""
    a = np.asarray(a, dtype=float)
    finite = np.isfinite(a)
    a = np.where(finite & (np.abs(a) < 1e-200), 0.0, a)  # subnormal tails (a Gaussian's): 10**-mag would overflow
    mag = np.floor(np.log10(np.abs(np.where(finite & (a != 0), a, 1.0))))
    scale = 10.0 ** (digits - 1 - mag)
    out = np.where(finite, np.round(a * scale) / scale, np.nan)
    obj = out.astype(object)
    obj[~finite] = None
    return obj.tolist()


def _area(y, x) -> float:
    """Trapezoid integral (numpy ≥ 1.24 has no ``trapezoid``, numpy ≥ 2 no ``trapz``)."""
    y, x = np.asarray(y, float), np.asarray(x, float)
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x))) if len(x) > 1 else 0.0


def _round(a, decimals: int = 4):
    a = np.round(np.asarray(a, dtype=float), decimals)
    return a.tolist()


def _config(name: str) -> dict:
    """plotly.js config: the mode bar's camera button saves PNG; SVG through the extra button (result.js)."""
    return {"responsive": True, "displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": name, "scale": 2}}


def dispersion_figure(result) -> dict:
    """Dispersion (one trace per branch, meta.kind = "branch") with the DOS and partial DOS beside it.

    ``customdata`` of a branch point is the q-point's index into ``qpoints`` (sent once), so a hover or click
    finds q without a copy per point. Imaginary modes (below −imaginary_tol) are drawn in red over the branch,
    and the region below zero is shaded when the crystal has any.
    """
    bands = result.band_structure()
    dos = result.dos()
    x = np.asarray(bands.distances)
    f = np.asarray(bands.frequencies_thz)
    nq, nb = f.shape
    # a gap (None) between segments: the path jumps where one segment's end is not the next one's start
    ends = [e for e in bands.segment_ends if e < nq]
    order = np.arange(nq)
    idx = np.insert(order, ends, -1)  # -1 marks a gap
    xs = [None if i < 0 else round(float(x[i]), 5) for i in idx]
    cd = [None if i < 0 else int(i) for i in idx]
    traces = []
    tol = float(getattr(result.settings, "imaginary_tol_thz", 0.1))
    for b in range(nb):
        ys = [None if i < 0 else round(float(f[i, b]), 4) for i in idx]
        traces.append({
            "type": "scatter", "mode": "lines", "x": xs, "y": ys, "customdata": cd, "xaxis": "x", "yaxis": "y",
            "line": {"color": BRANCH_COLOR, "width": 1.5}, "name": f"branch {b + 1}", "showlegend": False,
            "meta": {"kind": "branch", "band": b},
            "hovertemplate": f"branch {b + 1}<br>%{{y:.3f}} THz<extra></extra>",
        })
    imag = f < -tol
    if imag.any():
        qi, bi = np.nonzero(imag)
        traces.append({
            "type": "scatter", "mode": "markers", "x": _round(x[qi], 5), "y": _round(f[qi, bi], 4),
            "customdata": qi.tolist(), "marker": {"color": IMAGINARY_COLOR, "size": 4}, "name": "imaginary modes",
            "xaxis": "x", "yaxis": "y", "meta": {"kind": "imaginary"},
            "hovertemplate": "imaginary mode<br>%{y:.3f} THz (i|ν|)<extra></extra>",
        })
    # DOS beside it: total and per element, sideways on the same frequency axis
    fd = np.asarray(dos.frequencies_thz)
    traces.append({
        "type": "scatter", "mode": "lines", "x": _r(dos.total), "y": _round(fd, 4), "xaxis": "x2", "yaxis": "y",
        "name": "total DOS", "line": {"color": "black", "width": 1.5}, "meta": {"kind": "dos"},
        "hovertemplate": "%{y:.3f} THz<br>%{x:.3g} states/THz<extra>total</extra>",
    })
    for k, (el, v) in enumerate(dos.partial.items()):
        if len(dos.partial) < 2:
            break
        traces.append({
            "type": "scatter", "mode": "lines", "x": _r(v), "y": _round(fd, 4), "xaxis": "x2", "yaxis": "y",
            "name": f"{el}", "line": {"color": PALETTE[k % len(PALETTE)], "width": 1},
            "meta": {"kind": "pdos", "element": el}, "legendgroup": "pdos",
            "hovertemplate": f"%{{y:.3f}} THz<br>%{{x:.3g}} states/THz<extra>{el}</extra>",
        })
        if k == 0:
            traces[-1]["legendgrouptitle"] = {"text": "partial DOS (click to hide/show)"}
    ymin = min(0.0, float(f.min()), float(fd.min()))
    ymax = max(float(f.max()), 0.0) * 1.05 + 1e-3
    layout = _band_dos_layout(bands, x, ymin, ymax, f"{result.primitive.formula}: dispersion and DOS")
    if imag.any():
        layout["shapes"].append({"type": "rect", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": ymin, "y1": 0,
                                 "fillcolor": IMAGINARY_COLOR, "opacity": 0.08, "line": {"width": 0},
                                 "layer": "below"})
    toggles = _dos_toggles(traces)
    layout["margin"]["t"] = 64 if toggles else 30
    layout["updatemenus"] = toggles
    layout["legend"]["groupclick"] = "toggleitem"
    return {"data": traces, "layout": layout, "config": _config("dispersion"),
            "qpoints": _round(bands.qpoints, 4), "n_branches": nb}


def _band_dos_layout(bands, x, ymin: float, ymax: float, title: str) -> dict:
    """Plotly layout of a dispersion (x axis: path distance, high-symmetry labels as grey lines) beside a DOS panel
    (xaxis2), frequencies from ``ymin`` to ``ymax`` THz."""
    return {
        "margin": {"l": 60, "r": 10, "t": 30, "b": 40}, "height": 460, "hovermode": "closest",
        "xaxis": {"domain": [0, 0.74], "tickvals": [float(d) for d, _ in bands.labels],
                  "ticktext": [lab for _, lab in bands.labels], "range": [float(x[0]), float(x[-1])],
                  "showgrid": False, "zeroline": False},
        "yaxis": {"title": {"text": "frequency (THz)"}, "range": [ymin, ymax], "zeroline": True},
        "xaxis2": {"domain": [0.77, 1.0], "title": {"text": "DOS (states/THz)"}, "rangemode": "tozero",
                   "showgrid": False},
        "shapes": [{"type": "line", "xref": "x", "yref": "y", "x0": float(d), "x1": float(d), "y0": ymin,
                    "y1": ymax, "line": {"color": "#bbb", "width": 1}} for d, _ in bands.labels],
        "legend": {"x": 1.0, "xanchor": "right", "y": 1.0},
        "title": {"text": title, "font": {"size": 14}},
    }


def _dos_toggles(traces) -> list:
    """Buttons over the DOS panel: total and partial, total only, partial only (partial DOS per element; each
    element's trace also toggles by a click on its legend entry). None when there is no partial DOS."""
    kinds = [t.get("meta", {}).get("kind") for t in traces]
    if "pdos" not in kinds:
        return []

    def visible(total: bool, partial: bool) -> list:
        return [total if k in ("dos", "dos_band") else partial if k == "pdos" else True for k in kinds]

    return [{"type": "buttons", "direction": "right", "x": 1.0, "xanchor": "right", "y": 1.0, "yanchor": "bottom",
             "showactive": True, "pad": {"r": 0, "t": 0, "b": 4}, "font": {"size": 11},
             "buttons": [{"label": "total + partial", "method": "restyle", "args": [{"visible": visible(True, True)}]},
                         {"label": "total", "method": "restyle", "args": [{"visible": visible(True, False)}]},
                         {"label": "partial", "method": "restyle", "args": [{"visible": visible(False, True)}]}]}]


def _band(x, lo, hi, **kw) -> dict:
    """A filled band between ``lo`` and ``hi`` over ``x`` (one closed polygon; None in x splits segments)."""
    xs, ys = [], []
    seg_x, seg_lo, seg_hi = [], [], []
    for a, b, c in list(zip(x, lo, hi)) + [(None, None, None)]:
        if a is None or b is None:
            if seg_x:
                xs += seg_x + seg_x[::-1] + [seg_x[0], None]
                ys += seg_hi + seg_lo[::-1] + [seg_hi[0], None]
            seg_x, seg_lo, seg_hi = [], [], []
            continue
        seg_x.append(a)
        seg_lo.append(b)
        seg_hi.append(c)
    return {"type": "scatter", "mode": "lines", "x": xs, "y": ys, "fill": "toself", "line": {"width": 0},
            "hoverinfo": "skip", **kw}


def committee_dispersion_figure(result) -> dict:
    """A committee's dispersion and DOS: the members' mean with the 90 % band (mean ± 1.645 σ, σ calibrated where the
    set of engines was fitted) around each branch and around the DOS, each member's DOS as a legend entry to show
    (``atomvib.harmonic.committee``)."""
    from ..harmonic.committee import Z90

    bands, spread = result.band_structure()
    x = np.asarray(bands.distances)
    mean, std = np.asarray(spread.mean), np.asarray(spread.std)
    nq, nb = mean.shape
    ends = [e for e in bands.segment_ends if e < nq]
    idx = np.insert(np.arange(nq), ends, -1)
    xs = [None if i < 0 else round(float(x[i]), 5) for i in idx]
    traces = []
    for b in range(nb):
        lo = [None if i < 0 else round(float(mean[i, b] - Z90 * std[i, b]), 4) for i in idx]
        hi = [None if i < 0 else round(float(mean[i, b] + Z90 * std[i, b]), 4) for i in idx]
        traces.append(_band(xs, lo, hi, xaxis="x", yaxis="y", fillcolor="rgba(31,78,121,0.18)",
                            name="90 % band", legendgroup="band", showlegend=b == 0,
                            meta={"kind": "branch_band", "band": b}))
    for b in range(nb):
        ys = [None if i < 0 else round(float(mean[i, b]), 4) for i in idx]
        traces.append({"type": "scatter", "mode": "lines", "x": xs, "y": ys, "xaxis": "x", "yaxis": "y",
                       "line": {"color": BRANCH_COLOR, "width": 1.5}, "name": "committee mean",
                       "legendgroup": "mean", "showlegend": b == 0, "meta": {"kind": "branch_mean", "band": b},
                       "hovertemplate": f"branch {b + 1}<br>%{{y:.3f}} THz (mean)<extra></extra>"})
    f, dos = result.dos()
    fd = _round(f, 4)
    lo, hi = np.clip(dos.mean - Z90 * dos.std, 0, None), dos.mean + Z90 * dos.std
    traces.append({"type": "scatter", "mode": "lines", "x": _r(np.concatenate([hi, lo[::-1], hi[:1]])),
                   "y": fd + fd[::-1] + fd[:1], "fill": "toself", "line": {"width": 0}, "hoverinfo": "skip",
                   "fillcolor": "rgba(0,0,0,0.15)", "xaxis": "x2", "yaxis": "y", "name": "DOS 90 % band",
                   "meta": {"kind": "dos_band"}})
    traces.append({"type": "scatter", "mode": "lines", "x": _r(dos.mean), "y": fd, "xaxis": "x2", "yaxis": "y",
                   "name": "DOS mean", "line": {"color": "black", "width": 1.5}, "meta": {"kind": "dos"},
                   "hovertemplate": "%{y:.3f} THz<br>%{x:.3g} states/THz<extra>mean</extra>"})
    for k, (name, v) in enumerate(zip(result.engines, dos.members)):
        traces.append({"type": "scatter", "mode": "lines", "x": _r(v), "y": fd, "xaxis": "x2", "yaxis": "y",
                       "name": name, "visible": "legendonly", "legendgroup": "members",
                       "line": {"color": PALETTE[(k + 1) % len(PALETTE)], "width": 1, "dash": "dot"},
                       "meta": {"kind": "member_dos", "engine": name},
                       "hovertemplate": f"%{{y:.3f}} THz<br>%{{x:.3g}} states/THz<extra>{name}</extra>"})
    ymin = min(0.0, float((mean - Z90 * std).min()))
    ymax = float((mean + Z90 * std).max()) * 1.05 + 1e-3
    layout = _band_dos_layout(bands, x, ymin, ymax, f"{result.primitive.formula}: committee of {len(result.members)} "
                              f"({', '.join(result.engines)}), mean and {_calibrated(result)}90 % band")
    return {"data": traces, "layout": layout, "config": _config("committee_dispersion"),
            "qpoints": _round(bands.qpoints, 4), "n_branches": nb}


def _calibrated(result) -> str:
    """"calibrated " when the committee's σ has a fitted scale, "uncalibrated " otherwise."""
    return "uncalibrated " if "uncalibrated" in str(result.calibration.get("note", "")) else "calibrated "


def committee_thermal_figure(result) -> dict:
    """A committee's F, S, Cv against T: mean with the 90 % band (mean ± 1.645 σ)."""
    from ..harmonic.committee import Z90

    th = result.thermal()
    t = _round(th["temperatures_k"], 3)
    cols = (("free_energy_kj_per_mol", "F (kJ/mol)"), ("entropy_j_per_k_per_mol", "S (J/K/mol)"),
            ("heat_capacity_j_per_k_per_mol", "C<sub>v</sub> (J/K/mol)"))
    data, layout = [], {"margin": {"l": 60, "r": 10, "t": 40, "b": 40}, "height": 300, "showlegend": False,
                        "title": {"text": f"thermal properties per mole of {result.primitive.cell_formula}: committee "
                                          f"mean and {_calibrated(result)}90 % band", "font": {"size": 14}}}
    for k, (attr, label) in enumerate(cols):
        ax = "" if k == 0 else str(k + 1)
        sp = th[attr]
        lo, hi = np.asarray(sp.mean) - Z90 * np.asarray(sp.std), np.asarray(sp.mean) + Z90 * np.asarray(sp.std)
        data.append(_band(t, _r(lo), _r(hi), xaxis=f"x{ax}", yaxis=f"y{ax}", fillcolor="rgba(31,119,180,0.2)",
                          meta={"kind": "band"}))
        data.append({"type": "scatter", "mode": "lines", "x": t, "y": _r(sp.mean), "xaxis": f"x{ax}",
                     "yaxis": f"y{ax}", "name": label, "line": {"color": PALETTE[k]}, "meta": {"kind": "mean"},
                     "hovertemplate": f"%{{x:.0f}} K<br>%{{y:.4g}}<extra>{label}</extra>"})
        lo_, hi_ = k / 3 + 0.04, (k + 1) / 3 - 0.04
        layout[f"xaxis{ax}"] = {"domain": [lo_, hi_], "title": {"text": "T (K)"}, "anchor": f"y{ax}"}
        layout[f"yaxis{ax}"] = {"title": {"text": label}, "anchor": f"x{ax}"}
    return {"data": data, "layout": layout, "config": _config("committee_thermal")}


def thermal_figure(result) -> dict:
    """F, S, Cv (per mole of the analysed cell) against T, one panel each."""
    th = result.thermal_
    t = _round(th.temperatures_k, 3)
    cols = (("free_energy_kj_per_mol", "F (kJ/mol)"), ("entropy_j_per_k_per_mol", "S (J/K/mol)"),
            ("heat_capacity_j_per_k_per_mol", "C<sub>v</sub> (J/K/mol)"))
    data, layout = [], {"margin": {"l": 60, "r": 10, "t": 40, "b": 40}, "height": 300, "showlegend": False,
                        "title": {"text": f"thermal properties per mole of {result.primitive.cell_formula}",
                                  "font": {"size": 14}}}
    for k, (attr, label) in enumerate(cols):
        ax = "" if k == 0 else str(k + 1)
        data.append({"type": "scatter", "mode": "lines", "x": t, "y": _r(getattr(th, attr)),
                     "xaxis": f"x{ax}", "yaxis": f"y{ax}", "name": label, "line": {"color": PALETTE[k]},
                     "hovertemplate": f"%{{x:.0f}} K<br>%{{y:.4g}}<extra>{label}</extra>"})
        lo, hi = k / 3 + 0.04, (k + 1) / 3 - 0.04
        layout[f"xaxis{ax}"] = {"domain": [lo, hi], "title": {"text": "T (K)"}, "anchor": f"y{ax}"}
        layout[f"yaxis{ax}"] = {"title": {"text": label}, "anchor": f"x{ax}"}
    return {"data": data, "layout": layout, "config": _config("thermal")}


def molecule_figure(result, ir=None) -> dict:
    """Normal-mode frequencies of a molecule as sticks (cm⁻¹), one trace per mode (``meta.mode`` = its index, so a
    click animates that mode); heights are the IR intensities (km/mol) when ``ir`` (an OpticalSpectrum) is given."""
    f = np.asarray(result.frequencies_cm1, dtype=float)
    inten = np.asarray(ir.intensities, dtype=float) if ir is not None else None
    data = []
    for i, v in enumerate(f):
        h = float(inten[i]) if inten is not None else 1.0
        label = f"mode {i + 1}: {v:.1f} cm⁻¹" + (f", IR {h:.3g} km/mol" if inten is not None else "")
        data.append({"type": "scatter", "mode": "lines+markers", "x": [round(float(v), 2)] * 2, "y": [0, _r([h])[0]],
                     "customdata": [i, i], "name": f"mode {i + 1}", "showlegend": False,
                     "line": {"color": IMAGINARY_COLOR if v < 0 else BRANCH_COLOR, "width": 2},
                     "marker": {"size": [0, 7], "color": IMAGINARY_COLOR if v < 0 else BRANCH_COLOR},
                     "meta": {"kind": "mode", "mode": i}, "hovertemplate": label + "<extra></extra>"})
    ylabel = "IR intensity (km/mol)" if inten is not None else ""
    return {"data": data,
            "layout": {"height": 300, "margin": {"l": 60, "r": 10, "t": 30, "b": 40}, "hovermode": "closest",
                       "xaxis": {"title": {"text": "frequency (cm⁻¹)"}},
                       "yaxis": {"visible": inten is not None, "title": {"text": ylabel}, "rangemode": "tozero"},
                       "title": {"text": f"{result.structure.formula}: normal modes (click one to animate it)",
                                 "font": {"size": 14}}},
            "config": _config("modes")}


def molecule_mode_xyz(result, index: int, max_displacement_a: float = 0.5) -> dict:
    """Normal mode ``index`` of a molecule as XYZ with per-atom displacement vectors (3Dmol.js ``vibrate``), scaled
    so that the largest is ``max_displacement_a`` Å; the mode is the result's own (no force is computed)."""
    s = result.structure
    pos = np.asarray(s.positions, dtype=float)
    d = np.asarray(result.modes[index], dtype=float)
    big = float(np.linalg.norm(d, axis=1).max()) or 1.0
    d = d * (max_displacement_a / big)
    text = [str(len(pos)), "Properties=species:S:1:pos:R:3:vib:R:3"]
    for sym, r, u in zip(s.symbols, pos, d):
        text.append(f"{sym} {r[0]:.6f} {r[1]:.6f} {r[2]:.6f} {u[0]:.5f} {u[1]:.5f} {u[2]:.5f}")
    return {"xyz": "\n".join(text) + "\n", "index": int(index),
            "frequency_cm1": round(float(result.frequencies_cm1[index]), 3)}


def optical_figure(spec, x, y, fwhm_cm1: float, shape: str) -> dict:
    """A broadened IR or Raman curve (``x`` cm⁻¹, ``y`` per cm⁻¹) with the mode sticks scaled to its maximum
    (hover gives each mode's own intensity), as :func:`atomvib.spectra.plots.plot_optical` draws it."""
    color = PALETTE[0] if spec.kind == "ir" else IMAGINARY_COLOR
    unit = spec.intensity_unit
    what = "IR" if spec.kind == "ir" else "Raman"
    data = [{"type": "scatter", "mode": "lines", "x": _round(x, 3), "y": _r(y), "name": f"{shape}, FWHM {fwhm_cm1:g} cm⁻¹",
             "line": {"color": color, "width": 1.6}, "meta": {"kind": "curve"},
             "hovertemplate": "%{x:.1f} cm⁻¹<br>%{y:.4g} " + unit + " per cm⁻¹<extra></extra>"}]
    f, i = np.asarray(spec.frequencies_cm1, float), np.asarray(spec.intensities, float)
    ymax = float(np.max(y)) if len(y) else 0.0
    sel = (f > 0) & (f >= x[0]) & (f <= x[-1])
    if sel.any() and i.max() > 0 and ymax > 0:
        xs, ys, cd = [], [], []
        for k in np.nonzero(sel)[0]:
            h = float(i[k] / i.max() * ymax)
            xs += [round(float(f[k]), 2), round(float(f[k]), 2), None]
            ys += [0, h, None]
            cd += [float(i[k]), float(i[k]), None]
        data.append({"type": "scatter", "mode": "lines", "x": xs, "y": _r(ys), "customdata": _r(cd),
                     "name": "modes (scaled)", "line": {"color": "#444", "width": 1}, "opacity": 0.7,
                     "meta": {"kind": "sticks"},
                     "hovertemplate": "%{x:.1f} cm⁻¹<br>%{customdata:.4g} " + unit + "<extra>mode</extra>"})
    layout = {"height": 360, "margin": {"l": 65, "r": 10, "t": 40, "b": 45}, "hovermode": "closest",
              "xaxis": {"title": {"text": "wavenumber (cm⁻¹)"}, "range": [float(x[0]), float(x[-1])]},
              "yaxis": {"title": {"text": f"{what} ({unit} per cm⁻¹)"}, "rangemode": "tozero"},
              "legend": {"x": 1, "xanchor": "right", "y": 1},
              "title": {"text": f"{what} spectrum", "font": {"size": 14}}}
    return {"data": data, "layout": layout, "config": _config(f"{spec.kind}_spectrum")}


def prediction_figures(pred) -> dict:
    """The direct predictor's DOS ± band (THz) and Cv ± band against T, for the preview."""
    from ..units import THZ_TO_CM1

    f = np.asarray(pred.frequencies_cm1) / THZ_TO_CM1
    dos = np.asarray(pred.dos) * THZ_TO_CM1  # states per cm⁻¹ → per THz, per cell
    sd = np.asarray(pred.dos_std) * THZ_TO_CM1
    keep = dos > 1e-3 * max(float(dos.max()), 1e-30)  # the axis ends where the predicted states end
    last = min(len(f), int(np.nonzero(keep)[0].max() * 1.1) + 3) if keep.any() else len(f)
    f, dos, sd = f[:last], dos[:last], sd[:last]
    fx = _round(f, 4)
    dos_fig = {
        "data": [
            {"type": "scatter", "mode": "lines", "x": fx, "y": _r(dos + sd), "line": {"width": 0},
             "hoverinfo": "skip", "showlegend": False},
            {"type": "scatter", "mode": "lines", "x": fx, "y": _r(np.clip(dos - sd, 0, None)), "fill": "tonexty",
             "fillcolor": "rgba(31,119,180,0.25)", "line": {"width": 0}, "name": "± σ (calibrated)",
             "hoverinfo": "skip"},
            {"type": "scatter", "mode": "lines", "x": fx, "y": _r(dos), "line": {"color": PALETTE[0]},
             "name": "predicted DOS", "hovertemplate": "%{x:.2f} THz<br>%{y:.3g} states/THz<extra></extra>"},
        ],
        "layout": {"height": 260, "margin": {"l": 55, "r": 10, "t": 30, "b": 40},
                   "xaxis": {"title": {"text": "frequency (THz)"}},
                   "yaxis": {"title": {"text": "DOS (states/THz)"}, "rangemode": "tozero"},
                   "legend": {"x": 1, "xanchor": "right", "y": 1},
                   "title": {"text": "direct predictor: phonon DOS", "font": {"size": 13}}},
        "config": _config("predicted_dos"),
    }
    t = np.asarray(pred.temperatures_k)
    cv, cvs = np.asarray(pred.heat_capacity_j_per_k_per_mol), np.asarray(pred.heat_capacity_j_per_k_per_mol_std)
    tx = _round(t, 2)
    cv_fig = {
        "data": [
            {"type": "scatter", "mode": "lines", "x": tx, "y": _r(cv + cvs), "line": {"width": 0},
             "hoverinfo": "skip", "showlegend": False},
            {"type": "scatter", "mode": "lines", "x": tx, "y": _r(np.clip(cv - cvs, 0, None)), "fill": "tonexty",
             "fillcolor": "rgba(255,127,14,0.25)", "line": {"width": 0}, "name": "± σ", "hoverinfo": "skip"},
            {"type": "scatter", "mode": "lines", "x": tx, "y": _r(cv), "line": {"color": PALETTE[1]},
             "name": "C<sub>v</sub>", "hovertemplate": "%{x:.0f} K<br>%{y:.3f} J/K/mol<extra></extra>"},
        ],
        "layout": {"height": 260, "margin": {"l": 55, "r": 10, "t": 30, "b": 40},
                   "xaxis": {"title": {"text": "T (K)"}},
                   "yaxis": {"title": {"text": f"C<sub>v</sub> (J/K per mol {pred.structure.cell_formula})"},
                             "rangemode": "tozero"},
                   "showlegend": False,
                   "title": {"text": "direct predictor: heat capacity", "font": {"size": 13}}},
        "config": _config("predicted_cv"),
    }
    return {"dos": dos_fig, "cv": cv_fig}


def ins_figure(spec, forward=None) -> dict:
    """An indirect-geometry INS spectrum (backward bank; forward too when given) with its phonon orders."""
    e = _round(spec.energy_mev, 3)
    data = [{"type": "scatter", "mode": "lines", "x": e, "y": _r(spec.intensity), "name": f"{spec.bank} bank",
             "line": {"color": "black", "width": 1.6}, "meta": {"kind": "total"},
             "hovertemplate": "%{x:.2f} meV<br>%{y:.4g} 1/eV<extra>" + spec.bank + "</extra>"}]
    if forward is not None:
        data.append({"type": "scatter", "mode": "lines", "x": _round(forward.energy_mev, 3), "y": _r(forward.intensity),
                     "name": "forward bank", "line": {"color": "#888", "width": 1, "dash": "dot"},
                     "meta": {"kind": "forward"}})
    for n, v in enumerate(spec.by_order, start=1):
        data.append({"type": "scatter", "mode": "lines", "x": e, "y": _r(v), "name": f"{n}-phonon",
                     "line": {"color": PALETTE[(n - 1) % len(PALETTE)], "width": 1}, "meta": {"kind": "order"},
                     "visible": True if n == 1 else "legendonly"})
    layout = {"height": 420, "margin": {"l": 60, "r": 10, "t": 40, "b": 45},
              "xaxis": {"title": {"text": "energy transfer (meV)"}},
              "yaxis": {"title": {"text": "S(Q(E),E) (1/eV)"}, "rangemode": "tozero"},
              "title": {"text": f"{spec.instrument.upper()} INS, {spec.temperature_k:g} K, up to {spec.order} phonons",
                        "font": {"size": 14}}}
    return {"data": data, "layout": layout, "config": _config(f"{spec.instrument}_ins")}


def ins_map_figure(m) -> dict:
    """A direct-geometry powder map S(|Q|, E) as a heatmap (NaN outside the detectors)."""
    z = np.asarray(m.intensity, dtype=float)  # (nq, ne)
    return {
        "data": [{"type": "heatmap", "x": _round(m.q_ainv, 3), "y": _round(m.energy_mev, 3), "z": _r(z.T, 4),
                  "colorscale": "Viridis", "colorbar": {"title": {"text": "1/eV"}},
                  "hovertemplate": "|Q| %{x:.2f} Å⁻¹<br>%{y:.2f} meV<br>%{z:.3g}<extra></extra>"}],
        "layout": {"height": 460, "margin": {"l": 60, "r": 10, "t": 40, "b": 45},
                   "xaxis": {"title": {"text": "|Q| (Å⁻¹)"}}, "yaxis": {"title": {"text": "energy transfer (meV)"}},
                   "title": {"text": f"{m.instrument.upper()} powder map, E<sub>i</sub> = {m.ei_mev:g} meV",
                             "font": {"size": 14}}},
        "config": _config(f"{m.instrument}_map"),
    }


def compare_figure(res) -> dict:
    """Measured against computed (as computed, scaled to the measurement) and the fit with its residual."""
    m = res.measured
    lo, hi = res.x_range
    keep = (m.x >= lo) & (m.x <= hi)
    data = [{"type": "scatter", "mode": "markers", "x": _r(m.x[keep]), "y": _r(m.y[keep]), "name": "measured",
             "marker": {"color": "black", "size": 4}, "xaxis": "x", "yaxis": "y"}]
    f = res.fit
    if f is not None:
        data.append({"type": "scatter", "mode": "lines", "x": _r(f.x), "y": _r(f.model), "name": "fitted model",
                     "line": {"color": IMAGINARY_COLOR, "width": 1.8}, "xaxis": "x", "yaxis": "y"})
        data.append({"type": "scatter", "mode": "lines", "x": _r(f.x), "y": _r(f.residual), "name": "residual",
                     "line": {"color": "#555", "width": 1}, "xaxis": "x", "yaxis": "y2"})
    # the computed spectrum as given, on the measured axis, scaled to the measurement's area (shape only)
    from ..units import frequency_factor

    c = res.computed
    xm = np.asarray(m.x[keep])
    yc = np.interp(xm, c.x * frequency_factor(c.unit, m.unit), c.y, left=0.0, right=0.0)
    area_c, area_m = _area(yc, xm), _area(m.y[keep], xm)
    if area_c > 0:
        yc = yc * (area_m / area_c)
    data.insert(1, {"type": "scatter", "mode": "lines", "x": _r(xm), "y": _r(yc), "name": "computed (area-scaled)",
                    "line": {"color": PALETTE[0], "width": 1.2, "dash": "dot"}, "xaxis": "x", "yaxis": "y"})
    layout = {"height": 480, "margin": {"l": 60, "r": 10, "t": 40, "b": 45}, "hovermode": "x unified",
              "xaxis": {"title": {"text": f"energy ({m.unit})"}, "anchor": "y2"},
              "yaxis": {"domain": [0.32, 1.0], "title": {"text": "intensity"}},
              "yaxis2": {"domain": [0.0, 0.24], "title": {"text": "residual"}, "zeroline": True},
              "legend": {"x": 1, "xanchor": "right", "y": 1},
              "title": {"text": "measured vs computed", "font": {"size": 14}}}
    return {"data": data, "layout": layout, "config": _config("compare")}


def mode_xyz(result, qpoint, band: int, max_displacement_a: float = 0.5) -> dict:
    """Mode ``band`` at ``qpoint`` (fractional, reciprocal primitive basis) of a crystal as extended XYZ with
    per-atom displacement vectors (3Dmol.js ``vibrate``), on a supercell of the primitive cell (2×2×2 for cells up
    to 16 atoms, else 1×1×1).

    Displacement of atom j in cell R: Re[e_j exp(2πi q·(x_j + R))]/√m_j (phonopy's phase convention: the
    eigenvector's phases refer to the atoms' own positions), scaled so the largest is ``max_displacement_a`` Å.
    """
    ph = result.to_phonopy()
    ph.run_qpoints([list(qpoint)], with_eigenvectors=True)
    d = ph.get_qpoints_dict()
    vec = np.asarray(d["eigenvectors"])[0][:, band]
    freq = float(np.asarray(d["frequencies"])[0][band])
    prim = ph.primitive
    frac = np.asarray(prim.scaled_positions)
    cell = np.asarray(prim.cell)
    masses = np.asarray(prim.masses, dtype=float)
    symbols = list(prim.symbols)
    n = 2 if len(symbols) <= 16 else 1
    q = np.asarray(qpoint, dtype=float)
    lines, disp = [], []
    for R in np.ndindex(n, n, n):
        R = np.array(R, dtype=float)
        for j, sym in enumerate(symbols):
            phase = np.exp(2j * np.pi * float(q @ (frac[j] + R)))
            u = np.real(vec[3 * j : 3 * j + 3] * phase) / np.sqrt(masses[j])
            lines.append((sym, (frac[j] + R) @ cell))
            disp.append(u)
    disp = np.array(disp)
    big = float(np.linalg.norm(disp, axis=1).max()) or 1.0
    disp *= max_displacement_a / big
    lat = " ".join(f"{x:.6f}" for x in (cell * n).ravel())
    text = [str(len(lines)), f'Lattice="{lat}" Properties=species:S:1:pos:R:3:vib:R:3']
    for (sym, r), u in zip(lines, disp):
        text.append(f"{sym} {r[0]:.6f} {r[1]:.6f} {r[2]:.6f} {u[0]:.5f} {u[1]:.5f} {u[2]:.5f}")
    return {"xyz": "\n".join(text) + "\n", "frequency_thz": freq, "qpoint": [round(float(x), 4) for x in q],
            "band": int(band), "supercell": n}
