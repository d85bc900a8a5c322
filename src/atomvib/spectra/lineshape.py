"""Line shapes for optical spectra: stick spectra (mode wavenumbers, intensities) → broadened curves.

Plain NumPy: a sum of area-normalised Lorentzians or Gaussians with a settable full width at half
maximum in cm^-1. Each peak integrates to its stick intensity (on an axis wide and fine enough), so
the broadened curve has units of (stick unit) per cm^-1 and the integrated band intensity is kept.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

SHAPES = ("lorentzian", "gaussian")


def lineshape(axis_cm1, center_cm1: float, fwhm_cm1: float, shape: str = "lorentzian") -> np.ndarray:
    """One area-normalised peak on ``axis_cm1`` (shape (n,), cm^-1); returns shape (n,), 1/cm^-1."""
    x = np.asarray(axis_cm1, dtype=float) - center_cm1
    if shape == "lorentzian":
        g = 0.5 * fwhm_cm1
        return g / np.pi / (x * x + g * g)
    if shape == "gaussian":
        sigma = fwhm_cm1 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        return np.exp(-0.5 * (x / sigma) ** 2) / (sigma * np.sqrt(2.0 * np.pi))
    raise InputError(f"unknown line shape {shape!r}", fix=f"use one of {', '.join(SHAPES)}")


def broaden(centers_cm1, weights, axis_cm1, fwhm_cm1: float = 10.0, shape: str = "lorentzian") -> np.ndarray:
    """Sum of area-normalised peaks.

    Parameters
    ----------
    centers_cm1 : array, shape (nmodes,), cm^-1
    weights : array, shape (nmodes,)
        Stick intensities (any unit U).
    axis_cm1 : array, shape (n,), cm^-1
    fwhm_cm1 : float
        Full width at half maximum, cm^-1 (> 0).
    shape : {"lorentzian", "gaussian"}

    Returns
    -------
    ndarray, shape (n,), U per cm^-1
    """
    if not fwhm_cm1 > 0:
        raise InputError(f"line width must be positive, got {fwhm_cm1}", fix="give --fwhm in cm^-1, e.g. 10")
    if shape not in SHAPES:
        raise InputError(f"unknown line shape {shape!r}", fix=f"use one of {', '.join(SHAPES)}")
    c = np.asarray(centers_cm1, dtype=float)
    w = np.asarray(weights, dtype=float)
    axis = np.asarray(axis_cm1, dtype=float)
    out = np.zeros_like(axis)
    for ci, wi in zip(c, w):  # nmodes is small (≤ a few hundred): a loop keeps memory at O(n)
        if wi != 0.0:
            out += wi * lineshape(axis, ci, fwhm_cm1, shape)
    return out


def default_axis_cm1(centers_cm1, fwhm_cm1: float, step_cm1: float = 1.0) -> np.ndarray:
    """Axis from 0 to the highest mode plus 10 widths (at least 100 cm^-1 margin), shape (n,), cm^-1."""
    c = np.asarray(centers_cm1, dtype=float)
    top = (c.max() if c.size else 0.0) + max(10.0 * fwhm_cm1, 100.0)
    return np.arange(0.0, top + step_cm1, step_cm1)
