"""What training and prediction of the DOS ensemble share (NumPy only, no torch).

:mod:`atomvib.learn.train` sets the calibration and the out-of-distribution thresholds with these
functions and :mod:`atomvib.learn.predictor` applies them, so both import from here and neither from
the other.
"""

from __future__ import annotations

import numpy as np

from .. import units

#: two-sided 90 % quantile of the standard normal distribution
Z90 = 1.6448536269514722


def nn_distance(x, ref) -> np.ndarray:
    """Euclidean distance of each row of ``x`` (n, d) to its nearest row of ``ref`` (m, d), shape (n,)."""
    d2 = (x**2).sum(1)[:, None] + (ref**2).sum(1)[None, :] - 2 * x @ ref.T
    return np.sqrt(np.clip(d2.min(1), 0, None))


def disagreement(states) -> np.ndarray:
    """Ensemble disagreement of each crystal: Σ std / Σ mean over bins; states shape (members, n, nbins) → (n,)."""
    return states.std(0, ddof=1).sum(-1) / states.mean(0).sum(-1)


def thermal_kernels(centers_cm1, temperatures_k) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cv, S (J/K/mol) and F (kJ/mol) of one state in each bin, each shape (nt, nbins).

    Cv, S and F are linear in the DOS, so ``states @ kernel.T`` equals
    :func:`~atomvib.harmonic.thermal.thermal_from_dos` on the bin centres; built from
    ``thermal_from_spectrum`` itself so the formulas exist in one place only. Bins at 0 K give 0.
    """
    from ..harmonic.thermal import thermal_from_spectrum

    nu = units.convert_frequency(centers_cm1, "cm-1", "THz")
    ths = [thermal_from_spectrum([v], [1.0], temperatures_k) for v in nu]
    return (
        np.stack([x.heat_capacity_j_per_k_per_mol for x in ths], 1),
        np.stack([x.entropy_j_per_k_per_mol for x in ths], 1),
        np.stack([x.free_energy_kj_per_mol for x in ths], 1),
    )
