"""Metrics of predicted phonon DOS against reference DOS (numpy only).

All on the reference data's own 1 cm^-1 axis (0–4000 cm^-1) after interpolating the model's
5 cm^-1 bins (piecewise linear through bin centres, number of states conserved):

* Wasserstein-1 distance (cm^-1) between the two DOS normalised to unit area
  (:func:`atomvib.spectra.compare.wasserstein`, the one W1 of atomvib);
* Cv, S, F at 300 K per mole of formula units (the cell value divided by Z), from
  :func:`atomvib.harmonic.thermal.thermal_from_dos` for both, compared with the reference's own
  thermodynamics where present;
* MSE on 51 points over 0–1000 cm^-1 with each curve divided by its maximum there — the published
  metric of Chen et al. (Adv. Sci. 2021), for comparability only (it ignores everything above 1000 cm^-1).
"""

from __future__ import annotations

import numpy as np

from .. import units

#: the 1 cm^-1 metric axis, cm^-1
AXIS_CM1 = np.arange(0.0, 4000.0, 1.0)


def on_axis(freqs_cm1, dos_per_cm1, axis=AXIS_CM1) -> np.ndarray:
    """Reference DOS interpolated onto ``axis`` (zero outside its range), shape (len(axis),)."""
    return np.interp(axis, freqs_cm1, dos_per_cm1, left=0.0, right=0.0)


def wasserstein_cm1(p, q, step_cm1: float = 1.0) -> float:
    """W1 distance (cm^-1) between two non-negative densities on the same uniform axis (normalised here);
    :func:`atomvib.spectra.compare.wasserstein` on an axis of step ``step_cm1``."""
    from ..spectra.compare import wasserstein

    return wasserstein(np.arange(np.shape(p)[-1]) * step_cm1, p, q)


def mse_max_normalised(p_axis, q_axis, axis=AXIS_CM1) -> float:
    """Chen et al.'s metric: 51 points on 0–1000 cm^-1, each curve divided by its max there."""
    x = np.linspace(0.0, 1000.0, 51)
    a = np.interp(x, axis, p_axis)
    b = np.interp(x, axis, q_axis)
    a = a / a.max() if a.max() > 0 else a
    b = b / b.max() if b.max() > 0 else b
    return float(np.mean((a - b) ** 2))


def thermal_300(axis_cm1, dos_per_cm1, z: int, temperature_k: float = 300.0) -> dict:
    """Cv, S (J/K/mol) and F (kJ/mol) per mole of formula units from a DOS per cell on a uniform axis."""
    from ..harmonic.thermal import thermal_from_dos

    th = thermal_from_dos(
        units.convert_frequency(axis_cm1, "cm-1", "THz"),
        np.asarray(dos_per_cm1) * units.THZ_TO_CM1,
        [temperature_k],
    )
    return {
        "cv": th.heat_capacity_j_per_k_per_mol[0] / z,
        "s": th.entropy_j_per_k_per_mol[0] / z,
        "f": th.free_energy_kj_per_mol[0] / z,
    }


def evaluate(predictions, samples) -> dict:
    """Per-crystal metrics of predictions (:class:`DosPrediction` list) against :class:`DosSample` list.

    Returns a dict of arrays, shape (n,): ``wasserstein_cm1``, ``mse51``, ``cv_pred``, ``cv_ref``
    (from the reference DOS), ``cv_std``, ``s_pred``, ``s_ref``, ``f_pred``, ``f_ref`` (per formula
    unit), ``cv_published`` (reference thermo, NaN where absent), ``in_distribution``.
    """
    from .data import DosGrid

    out = {
        k: []
        for k in (
            "wasserstein_cm1",
            "mse51",
            "cv_pred",
            "cv_ref",
            "cv_std",
            "s_pred",
            "s_ref",
            "f_pred",
            "f_ref",
            "cv_published",
            "s_published",
            "f_published",
            "in_distribution",
        )
    }
    for r, s in zip(predictions, samples):
        w = r.frequencies_cm1[1] - r.frequencies_cm1[0]
        grid = DosGrid(w, r.frequencies_cm1[-1] + 0.5 * w)
        p = grid.density_on(r.dos * w, AXIS_CM1)
        q = on_axis(s.dos_freqs_cm1, s.dos_per_cm1)
        out["wasserstein_cm1"].append(wasserstein_cm1(p, q))
        out["mse51"].append(mse_max_normalised(p, q))
        z = s.formula_units
        tp = thermal_300(AXIS_CM1, p, z)
        tq = thermal_300(AXIS_CM1, q, z)
        k300 = int(np.argmin(np.abs(r.temperatures_k - 300.0)))
        out["cv_std"].append(r.heat_capacity_j_per_k_per_mol_std[k300] / z)
        for key in ("cv", "s", "f"):
            out[f"{key}_pred"].append(tp[key])
            out[f"{key}_ref"].append(tq[key])
        th = s.thermo
        if th and 300.0 in th["temperature_K"]:
            i = th["temperature_K"].index(300.0)
            out["cv_published"].append(th["heat_capacity_cv_J_per_K"][i])
            out["s_published"].append(th["entropy_J_per_K"][i])
            out["f_published"].append(th["helmholtz_J"][i] / 1000.0)
        else:
            out["cv_published"].append(np.nan)
            out["s_published"].append(np.nan)
            out["f_published"].append(np.nan)
        out["in_distribution"].append(r.in_distribution)
    return {k: np.asarray(v) for k, v in out.items()}


def summarise(m: dict) -> dict:
    """Headline numbers from :func:`evaluate` output (MAE against the published thermo where present)."""
    has = np.isfinite(m["cv_published"])
    ind = m["in_distribution"].astype(bool)
    return {
        "n": int(len(m["wasserstein_cm1"])),
        "wasserstein_cm1_mean": float(m["wasserstein_cm1"].mean()),
        "wasserstein_cm1_median": float(np.median(m["wasserstein_cm1"])),
        "mse51_mean": float(m["mse51"].mean()),
        "n_thermo": int(has.sum()),
        "cv300_mae_J_per_K_per_mol_fu": float(np.abs(m["cv_pred"] - m["cv_published"])[has].mean()),
        "s300_mae_J_per_K_per_mol_fu": float(np.abs(m["s_pred"] - m["s_published"])[has].mean()),
        "f300_mae_kJ_per_mol_fu": float(np.abs(m["f_pred"] - m["f_published"])[has].mean()),
        "cv300_mae_vs_dos_J_per_K_per_mol_fu": float(np.abs(m["cv_pred"] - m["cv_ref"]).mean()),
        "target_check_cv300_max_rel_err": float(
            np.nanmax(np.abs(m["cv_ref"] - m["cv_published"])[has] / m["cv_published"][has])
        ),
        "n_in_distribution": int(ind.sum()),
        "cv300_mae_in_distribution": float(np.abs(m["cv_pred"] - m["cv_published"])[has & ind].mean())
        if (has & ind).any()
        else float("nan"),
        "cv300_mae_flagged": float(np.abs(m["cv_pred"] - m["cv_published"])[has & ~ind].mean())
        if (has & ~ind).any()
        else float("nan"),
    }
