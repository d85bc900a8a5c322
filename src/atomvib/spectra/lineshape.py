"""Line shapes: stick spectra (positions, intensities) → broadened curves.

The one home of Gaussian broadening in atomvib: :func:`gaussian_sum` (a sum of area-normalised
Gaussians, fixed or per-peak width, optionally truncated at a few σ on a uniform axis) serves the
INS spectra and maps (:mod:`atomvib.spectra.ins`), the DOS (:mod:`atomvib.spectra.dos`) and the
optical spectra here; :data:`FWHM_PER_SIGMA` converts widths for the instrument models. (The fit in
:mod:`atomvib.spectra.compare` convolves a sampled curve in Fourier space with the transform of the
same Gaussian, :func:`gaussian_ft`, so that the model stays smooth in σ down to 0.)

Optical spectra: plain NumPy, a sum of area-normalised Lorentzians or Gaussians with a settable full
width at half maximum in cm^-1. Each peak integrates to its stick intensity (on an axis wide and
fine enough), so the broadened curve has units of (stick unit) per cm^-1 and the integrated band
intensity is kept.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

SHAPES = ("lorentzian", "gaussian")

#: FWHM / σ of a Gaussian, 2√(2 ln 2) ≈ 2.3548
FWHM_PER_SIGMA: float = float(2.0 * np.sqrt(2.0 * np.log(2.0)))


def gaussian(x, sigma) -> np.ndarray:
    """Area-normalised Gaussian exp(−x²/2σ²)/(σ√(2π)) (broadcasting ``x`` and ``sigma``), 1/unit of x."""
    x = np.asarray(x, dtype=float)
    sigma = np.asarray(sigma, dtype=float)
    return np.exp(-0.5 * (x / sigma) ** 2) / (sigma * np.sqrt(2.0 * np.pi))


def gaussian_ft(k, sigma) -> np.ndarray:
    """Fourier transform of :func:`gaussian` at ordinary frequency ``k`` (1/unit of x): exp(−2π²σ²k²)."""
    return np.exp(-2.0 * np.pi**2 * np.asarray(sigma, dtype=float) ** 2 * np.asarray(k, dtype=float) ** 2)


def gaussian_sum(
    centers, weights, axis, sigma, *, nsigma: float | None = None, chunk: int = 4096
) -> np.ndarray:
    """Σ_k weights[..., k] · G(axis − centers[k]; σ_k): a sum of area-normalised Gaussians.

    Parameters
    ----------
    centers : array, shape (nsrc,)
        Peak positions (any unit X).
    weights : array, shape (..., nsrc)
        Peak areas; leading dimensions are kept (e.g. one row per atom or per orbit).
    axis : array, shape (nout,), X
        Where the sum is evaluated.
    sigma : float or array, shape (nsrc,), X
        Standard deviation of each peak (> 0).
    nsigma : float, optional
        Only evaluate each peak within ``nsigma``·σ_k of its centre (``axis`` must then be uniform):
        work (2·nsigma·max σ/Δ + 1) × nsrc instead of nout × nsrc. None: the exact sum.
    chunk : int
        Peaks per block of the exact sum (memory O(chunk × nout)).

    Returns
    -------
    ndarray, shape (..., nout), (weight unit) per X
    """
    c = np.asarray(centers, dtype=float)
    values = np.asarray(weights, dtype=float)
    axis = np.asarray(axis, dtype=float)
    s = np.broadcast_to(np.asarray(sigma, dtype=float), c.shape)
    lead = values.shape[:-1]
    flat = values.reshape(-1, values.shape[-1])
    out = np.zeros((flat.shape[0], len(axis)))
    if nsigma is None:
        for a in range(0, len(c), chunk):
            g = gaussian(axis[None, :] - c[a : a + chunk, None], s[a : a + chunk, None])
            out += flat[:, a : a + chunk] @ g
        return out.reshape(lead + (len(axis),))
    nz = np.nonzero(np.any(flat != 0, axis=0))[0]
    if nz.size == 0:
        return out.reshape(lead + (len(axis),))
    es, s, v = c[nz], s[nz], flat[:, nz]
    de = axis[1] - axis[0]
    j0 = np.rint((es - axis[0]) / de).astype(int)
    width = int(np.ceil(nsigma * s.max() / de)) + 1
    for d in range(-width, width + 1):
        j = j0 + d
        ok = (j >= 0) & (j < len(axis))
        if not ok.any():
            continue
        g = gaussian(axis[j[ok]] - es[ok], s[ok])
        for r in range(flat.shape[0]):
            out[r] += np.bincount(j[ok], v[r, ok] * g, minlength=len(axis))
    return out.reshape(lead + (len(axis),))


def lineshape(axis_cm1, center_cm1: float, fwhm_cm1: float, shape: str = "lorentzian") -> np.ndarray:
    """One area-normalised peak on ``axis_cm1`` (shape (n,), cm^-1); returns shape (n,), 1/cm^-1."""
    x = np.asarray(axis_cm1, dtype=float) - center_cm1
    if shape == "lorentzian":
        g = 0.5 * fwhm_cm1
        return g / np.pi / (x * x + g * g)
    if shape == "gaussian":
        return gaussian(x, fwhm_cm1 / FWHM_PER_SIGMA)
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
    if shape == "gaussian":
        return gaussian_sum(c, w, axis, fwhm_cm1 / FWHM_PER_SIGMA)
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
