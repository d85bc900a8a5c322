"""Compare a computed spectrum with a measurement: similarity scores and a least-squares fit.

SciPy does the heavy lifting (``scipy.optimize.least_squares`` for the fit); :func:`wasserstein` (the
earth mover's distance, the same number as ``scipy.stats.wasserstein_distance`` on a common axis) is
the one W1 of atomvib, also used by the DOS predictor's metrics and training. We wrote the model
ourselves because none of the libraries offers the one spectroscopists use:
``measured(E) ≈ A · [computed(E/s) ⊗ G(σ)](E) + b0 + b1·(E − E_ref)``, with a frequency scale ``s``
(measured energy ≈ s × computed energy; universal MLIPs soften frequencies by 5–15 %), an intensity
scale ``A``, a flat or linear background and an extra Gaussian broadening ``σ`` (the instrument
resolution or lifetimes the calculation lacks).

The Gaussian convolution is done in Fourier space (multiplication by exp(−2π²σ²k²),
:func:`~atomvib.spectra.lineshape.gaussian_ft`), which is smooth in σ down to σ = 0, so the
finite-difference Jacobian of ``least_squares`` stays well-behaved. A coarse scan of ``s`` (with the
linear parameters solved exactly at each step) picks the starting point, so the fit does not lock onto
a wrong peak. Standard uncertainties come from the Jacobian at the optimum,
cov = (JᵀJ)⁻¹ · χ²_red, so they are honest even when the error bars are only approximate.

:func:`incoherent_powder_spectrum` applies the INS model of :mod:`atomvib.spectra.ins` (incoherent isotropic
approximation, one phonon + multiphonon by self-convolution) to a monatomic crystal given by its phonon DOS,
with the energy-gain side, averaged over the measured |Q| bins. It is what the aluminium validation uses.
Figures of the fit are drawn by :func:`atomvib.spectra.plots.plot_fit`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..results import Result
from ..units import THZ_TO_MEV, frequency_factor
from .lineshape import gaussian_ft
from .measured import Spectrum1D, canonical_unit, q_range_mask, read_columns, read_spectrum

#: tokens accepted by ``fit=``; intensity scale is always fitted
FIT_TOKENS = ("scale", "background", "linear", "broadening")

#: χ²_red above which a fit weighted by the measurement errors is reported as poor. χ²_red ≈ 1 + (rms systematic
#: misfit / error bar)², so 5 means the model misses the data by more than twice the error bars on average: the
#: residual is a shape the model lacks, not counting noise (with 70 points the p-value of χ²_red = 5 is < 1e-30,
#: while any threshold a p-value would set, ≈ 1.5, flags every model of real data). Observed: 1 for a correct
#: model (synthetic tests), 30–50 for EMT aluminium against ARCS (right shape, peak widths off), 180–210 for
#: the wrong instrument or a wrong branch (a VISION spectrum or SevenNet-0's LA branch against the same data).
POOR_FIT_CHI2_RED = 5.0


# --------------------------------------------------------------------------------------------- similarity
def _on_axis(computed: Spectrum1D, x: np.ndarray, unit: str) -> np.ndarray:
    """Computed intensity linearly interpolated onto ``x`` (in ``unit``); zero outside its range."""
    xc = computed.x * frequency_factor(computed.unit, unit)
    return np.interp(x, xc, computed.y, left=0.0, right=0.0)


def spectral_information_similarity(a, b, floor: float = 1e-8) -> float:
    """Spectral information similarity SIS = 1 / (1 + SID) of two spectra on the same axis.

    SID (spectral information divergence; Chang, IEEE Trans. Inf. Theory 46, 1927 (2000)) is the symmetrised
    Kullback–Leibler divergence of the two spectra read as probability distributions,
    SID = Σ p ln(p/q) + Σ q ln(q/p), with p = a/Σa, q = b/Σb. As in chemprop-IR (McGill et al., J. Chem. Inf.
    Model. 61, 2594 (2021), the IR-spectrum SID loss and SIS metric), values below ``floor`` (after
    normalising) are raised to it, so empty bins do not make the divergence infinite; negative values are
    clipped to zero first. SIS is 1 for identical shapes and falls towards 0.
    """
    p = np.clip(np.asarray(a, float), 0, None)
    q = np.clip(np.asarray(b, float), 0, None)
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    p = np.maximum(p / p.sum(), floor)
    q = np.maximum(q / q.sum(), floor)
    p, q = p / p.sum(), q / q.sum()
    sid = float(np.sum(p * np.log(p / q)) + np.sum(q * np.log(q / p)))
    return 1.0 / (1.0 + sid)


@dataclass(frozen=True, eq=False)
class Similarity:
    """Shape agreement of two spectra on one axis (intensity scale does not matter).

    Attributes
    ----------
    cosine : float, a·b / (|a||b|), 1 = same shape
    pearson : float, correlation coefficient of the two intensity arrays
    wasserstein : float, earth mover's distance between the spectra read as distributions over energy, in ``unit``
        (negative intensities clipped to zero)
    sis : float, spectral information similarity (see :func:`spectral_information_similarity`)
    unit : str, unit of the axis and of ``wasserstein``
    n_points : int
    """

    cosine: float
    pearson: float
    wasserstein: float
    sis: float
    unit: str
    n_points: int

    def to_dict(self) -> dict:
        return {
            "cosine": self.cosine,
            "pearson": self.pearson,
            f"wasserstein_{_u(self.unit)}": self.wasserstein,
            "sis": self.sis,
            "unit": self.unit,
            "n_points": self.n_points,
        }


def _u(unit: str) -> str:
    return {"meV": "meV", "cm-1": "cm1", "THz": "thz"}[unit]


def wasserstein(x, a, b):
    """Wasserstein-1 (earth mover's) distance between ``a`` and ``b`` read as distributions over the axis ``x``.

    Parameters
    ----------
    x : array, shape (n,), increasing (any spacing), unit X
    a, b : array, shape (..., n)
        Non-negative weights at the points ``x`` (negative values are clipped to zero), normalised here to
        unit sum; leading dimensions are batched.

    Returns
    -------
    float or ndarray of shape (...), X
        W1 = ∫|F_a − F_b| dx = Σ_{i<n−1} |F_a(x_i) − F_b(x_i)| (x_{i+1} − x_i), with F the cumulative sums:
        the same number as ``scipy.stats.wasserstein_distance(x, x, a, b)``. NaN where a or b sums to zero.
    """
    x = np.asarray(x, float)
    a = np.clip(np.asarray(a, float), 0, None)
    b = np.clip(np.asarray(b, float), 0, None)
    sa, sb = a.sum(-1, keepdims=True), b.sum(-1, keepdims=True)
    ok = (sa > 0) & (sb > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cdf = np.cumsum(np.where(ok, a / np.where(ok, sa, 1.0) - b / np.where(ok, sb, 1.0), 0.0), axis=-1)
    w = np.where(ok[..., 0], np.abs(cdf[..., :-1]) @ np.diff(x), np.nan)
    return float(w) if w.ndim == 0 else w


def similarity_arrays(x, a, b, unit: str) -> Similarity:
    """Similarity scores of intensities ``a`` and ``b`` (shape (n,)) on the common axis ``x`` (shape (n,), ``unit``)."""
    a, b, x = (np.asarray(v, float) for v in (a, b, x))
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cos = float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")
    pear = float(np.corrcoef(a, b)[0, 1]) if np.std(a) > 0 and np.std(b) > 0 else float("nan")
    return Similarity(cos, pear, wasserstein(x, a, b), spectral_information_similarity(a, b), unit, len(x))


def similarity(computed: Spectrum1D, measured: Spectrum1D, x_range=None) -> Similarity:
    """Similarity of a computed and a measured spectrum on the measured axis (``x_range`` in the measured unit)."""
    m = measured.crop(*x_range) if x_range else measured
    return similarity_arrays(m.x, _on_axis(computed, m.x, m.unit), m.y, m.unit)


# --------------------------------------------------------------------------------------------- fit model
class FitModel:
    """computed(E/s) ⊗ G(σ) evaluated at the measured energies, on a fine uniform grid, via FFT."""

    def __init__(self, computed: Spectrum1D, x: np.ndarray, unit: str, sigma_max: float):
        from scipy.fft import next_fast_len

        self.xc = computed.x * frequency_factor(computed.unit, unit)
        self.yc = computed.y
        self.x = x
        step_m = float(np.min(np.diff(x)))
        step_c = float(np.min(np.diff(self.xc)))
        # the computed axis sets the detail worth keeping; half a measured bin is enough otherwise
        h = min(step_m / 2.0, step_c)
        # Only the measured range matters, plus a margin of 5 σ_max into which the Gaussian may reach. The FFT
        # convolution is circular: wrap-around only corrupts the margin, never the measured range.
        pad = 5.0 * sigma_max + 2 * step_m
        lo, hi = x[0] - pad, x[-1] + pad
        n = int(np.ceil((hi - lo) / h)) + 1
        if n > 2**18:  # a very fine computed axis on a wide measured one: coarsen, it is still ≪ σ
            n = 2**18
            h = (hi - lo) / (n - 1)
        self.grid = lo + h * np.arange(n)
        self.nfft = next_fast_len(n, real=True)
        self.k = np.fft.rfftfreq(self.nfft, h)

    def shape(self, s: float, sigma: float) -> np.ndarray:
        """Model shape at the measured energies, shape (n,)."""
        return self.shapes(np.array([s]), sigma)[0]

    def shapes(self, s: np.ndarray, sigma: float) -> np.ndarray:
        """Model shapes for several frequency scales at once (one batched FFT), shape (len(s), n)."""
        from scipy.fft import irfft, rfft

        f = np.interp(self.grid[None, :] / s[:, None], self.xc, self.yc, left=0.0, right=0.0)
        if sigma > 0:
            F = rfft(f, self.nfft, axis=1) * gaussian_ft(self.k, sigma)
            f = irfft(F, self.nfft, axis=1)[:, : len(self.grid)]
        # the measured points sit on the grid's step pattern: linear interpolation via index and weight
        pos = (self.x - self.grid[0]) / (self.grid[1] - self.grid[0])
        i = np.clip(np.floor(pos).astype(int), 0, len(self.grid) - 2)
        w = pos - i
        return f[:, i] * (1 - w) + f[:, i + 1] * w


@dataclass(frozen=True, eq=False)
class FitResult(Result):
    """Least-squares fit of ``A · computed(E/s) ⊗ G(σ) + b0 + b1·(E − E_ref)`` to a measured spectrum.

    Attributes
    ----------
    parameters : dict name → (value, standard uncertainty); names ``frequency_scale`` (dimensionless,
        measured energy ≈ s × computed energy), ``intensity_scale``, ``background`` (at E_ref),
        ``background_slope`` (per ``unit``), ``broadening_sigma`` (Gaussian σ in ``unit``); parameters not
        fitted are fixed (1, 0) and have uncertainty 0
    fitted : tuple of str, the names that were free
    chi2_red : float, χ² per degree of freedom (weighted by the errors when given, else by 1)
    x : ndarray, shape (n,), the fitted energies in ``unit``
    measured, model : ndarray, shape (n,), intensities
    error : ndarray, shape (n,) or None
    unit : str
    x_ref : float, E_ref of the linear background (the centre of the fitted range), ``unit``
    weighted : bool, whether measurement errors were used as weights
    """

    parameters: dict
    fitted: tuple
    chi2_red: float
    x: np.ndarray
    measured: np.ndarray
    model: np.ndarray
    error: np.ndarray | None
    unit: str
    x_ref: float
    weighted: bool

    @property
    def frequency_scale(self) -> tuple[float, float]:
        """(value, standard uncertainty) of s: measured energy ≈ s × computed energy."""
        return self.parameters["frequency_scale"]

    @property
    def residual(self) -> np.ndarray:
        """measured − model, shape (n,)."""
        return self.measured - self.model

    @property
    def dof(self) -> int:
        """Degrees of freedom of χ²: points − free parameters (at least 1)."""
        return max(len(self.x) - len(self.fitted), 1)

    @property
    def p_value(self) -> float | None:
        """Probability of a χ² at least this large if the model were exact and the errors right; None unweighted."""
        if not self.weighted:
            return None
        from scipy.stats import chi2

        return float(chi2.sf(self.chi2_red * self.dof, self.dof))

    @property
    def poor(self) -> bool | None:
        """χ²_red > :data:`POOR_FIT_CHI2_RED` (a misfit well beyond the error bars); None without error bars,
        where χ²_red carries the intensity unit and says nothing about the goodness of fit."""
        return None if not self.weighted else bool(self.chi2_red > POOR_FIT_CHI2_RED)

    def to_dict(self) -> dict:
        d = {k: {"value": v, "std": e, "fitted": k in self.fitted} for k, (v, e) in self.parameters.items()}
        d["broadening_sigma"]["unit"] = self.unit
        d["background_slope"]["unit"] = f"per {self.unit}"
        d["background"]["at"] = self.x_ref
        return {
            **d,
            "chi2_red": self.chi2_red,
            "chi2_p_value": self.p_value,
            "poor_fit": self.poor,
            "poor_fit_threshold_chi2_red": POOR_FIT_CHI2_RED,
            "n_points": len(self.x),
            "weighted_by_errors": self.weighted,
            "range": [float(self.x[0]), float(self.x[-1])],
            "unit": self.unit,
            "model": "measured(E) = intensity_scale * [computed(E/frequency_scale) (x) Gaussian(broadening_sigma)]"
            " + background + background_slope*(E - at)",
        }


def parse_fit(fit) -> set:
    """The free fit parameters named by ``fit`` (a comma-separated string or tokens), checked against FIT_TOKENS."""
    if isinstance(fit, str):
        fit = [t for t in fit.replace(" ", "").split(",") if t]
    toks = set(fit or ())
    unknown = toks - set(FIT_TOKENS) - {"intensity"}
    if unknown:
        raise InputError(
            f"unknown fit parameter(s) {', '.join(sorted(unknown))}",
            fix=f"choose from {', '.join(FIT_TOKENS)} (intensity scale is always fitted)",
        )
    return toks


def fit_spectrum(
    computed: Spectrum1D,
    measured: Spectrum1D,
    fit=("scale", "background", "broadening"),
    x_range=None,
    scale_bounds=(0.7, 1.3),
    sigma0: float | None = None,
) -> FitResult:
    """Fit a computed spectrum to a measured one; see :class:`FitResult` for the model.

    Parameters
    ----------
    computed, measured : Spectrum1D
        Any units; the fit runs in the measured unit.
    fit : iterable of str or "a,b,c"
        ``scale`` (frequency scale s), ``background`` (flat), ``linear`` (flat + slope), ``broadening`` (extra
        Gaussian σ). The intensity scale is always free.
    x_range : (float, float), optional
        Fitted range in the measured unit (exclude the elastic line of INS data). Default: the measured axis.
    scale_bounds : (float, float)
        Range scanned for the starting value of s; the fit itself may leave it.
    sigma0 : float, optional
        Starting σ (measured unit); default two measured bins.
    """
    from scipy.optimize import least_squares

    toks = parse_fit(fit)
    m = measured.crop(*x_range) if x_range else measured
    x, y, err = m.x, m.y, m.error
    unit = m.unit
    w = 1.0 / err if err is not None else np.ones_like(y)
    free_s, free_sig = "scale" in toks, "broadening" in toks
    n_bg = 2 if "linear" in toks else (1 if "background" in toks else 0)
    x_ref = float(0.5 * (x[0] + x[-1]))
    step = float(np.median(np.diff(x)))
    sig0 = (sigma0 if sigma0 is not None else 2.0 * step) if free_sig else 0.0
    span = float(x[-1] - x[0])
    model = FitModel(computed, x, unit, sigma_max=max(sig0, 0.2 * span))

    def linear_design(shape):
        cols = [shape] + [np.ones_like(x), x - x_ref][:n_bg]
        return np.stack(cols, axis=1)

    def solve_linear(shape):
        D = linear_design(shape)
        coef, *_ = np.linalg.lstsq(D * w[:, None], y * w, rcond=None)
        return coef, float(np.sum(((D @ coef - y) * w) ** 2))

    # Starting point: scan s with the linear parameters (A, background) solved exactly.
    s_grid = np.arange(scale_bounds[0], scale_bounds[1] + 1e-9, 0.005) if free_s else np.array([1.0])
    shapes = model.shapes(s_grid, sig0)
    # batched weighted normal equations for (A, background) at every s of the scan
    D = (
        np.stack(
            [shapes] + [np.broadcast_to(c, shapes.shape) for c in (np.ones_like(x), x - x_ref)[:n_bg]], axis=2
        )
        * w[None, :, None]
    )
    yw = y * w
    coef = np.linalg.pinv(np.einsum("sni,snj->sij", D, D)) @ np.einsum("sni,n->si", D, yw)[..., None]
    chis = np.sum((np.einsum("sni,si->sn", D, coef[..., 0]) - yw) ** 2, axis=1)
    # only scales where the spectrum enters with a positive intensity: at others the fit is the background
    # minus the spectrum, which can beat a right but imperfect shape and start the fit where it cannot recover
    chis = np.where(coef[:, 0, 0] > 0, chis, np.inf)
    s0 = float(s_grid[int(np.argmin(chis))])
    lin0, _ = solve_linear(model.shape(s0, sig0))
    if not np.isfinite(chis).any() or lin0[0] <= 0:
        raise InputError(
            "the computed spectrum does not resemble the measurement anywhere in the scanned "
            f"frequency scales {scale_bounds[0]}–{scale_bounds[1]} (best intensity scale ≤ 0)",
            fix="check units (--units) and the fitted range (--range)",
        )

    names = (
        (["frequency_scale"] if free_s else [])
        + (["broadening_sigma"] if free_sig else [])
        + ["intensity_scale", "background", "background_slope"][: 1 + n_bg]
    )

    def unpack(p):
        i = 0
        s = p[i] if free_s else 1.0
        i += free_s
        sig = p[i] if free_sig else 0.0
        i += free_sig
        return s, sig, p[i:]

    def resid(p):
        s, sig, lin = unpack(p)
        return (linear_design(model.shape(s, sig)) @ lin - y) * w

    p0 = np.array(([s0] if free_s else []) + ([sig0] if free_sig else []) + list(lin0))
    lo = np.array(([0.3] if free_s else []) + ([0.0] if free_sig else []) + [-np.inf] * (1 + n_bg))
    hi = np.array(([3.0] if free_s else []) + ([0.2 * span] if free_sig else []) + [np.inf] * (1 + n_bg))
    p0 = np.clip(p0, lo, hi)
    # relative finite-difference step: s and σ move the spectrum by a fraction of a bin
    res = least_squares(resid, p0, bounds=(lo, hi), x_scale="jac", diff_step=1e-4)
    dof = max(len(y) - len(p0), 1)
    chi2_red = float(np.sum(res.fun**2) / dof)
    J = res.jac
    try:
        cov = np.linalg.pinv(J.T @ J) * chi2_red
        std = np.sqrt(np.clip(np.diag(cov), 0, None))
    except np.linalg.LinAlgError:
        std = np.full(len(p0), np.nan)
    params = {
        "frequency_scale": (1.0, 0.0),
        "intensity_scale": (0.0, 0.0),
        "background": (0.0, 0.0),
        "background_slope": (0.0, 0.0),
        "broadening_sigma": (0.0, 0.0),
    }
    for name, v, e in zip(names, res.x, std, strict=True):
        params[name] = (float(v), float(e))
    s, sig, lin = unpack(res.x)
    yfit = linear_design(model.shape(s, sig)) @ lin
    return FitResult(params, tuple(names), chi2_red, x, y, yfit, err, unit, x_ref, err is not None)


# --------------------------------------------------------------------------------------------- top level
@dataclass(frozen=True, eq=False)
class CompareResult(Result):
    """Outcome of :func:`compare`.

    Attributes
    ----------
    computed, measured : Spectrum1D, as compared (measured cleaned, see its ``notes``; for two S(Q,E) maps,
        both cuts over the same |Q| range and the same (Q, E) bins)
    similarity : Similarity, computed as is vs measured, on the measured axis in the compared range
    fit : FitResult or None
    similarity_fitted : Similarity or None, the fitted model vs measured
    x_range : (float, float), compared range in ``measured.unit``
    notes : tuple of str, how the computed side was obtained (map cut, instrument, Ei, temperature)
    alerts : tuple of str, warnings a reader must see: a poor fit (χ²_red > :data:`POOR_FIT_CHI2_RED`), an
        indirect-geometry spectrum compared with a direct-geometry map
    """

    computed: Spectrum1D
    measured: Spectrum1D
    similarity: Similarity
    fit: FitResult | None
    similarity_fitted: Similarity | None
    x_range: tuple
    notes: tuple = ()
    alerts: tuple = ()

    @property
    def poor_fit(self) -> bool | None:
        """See :attr:`FitResult.poor`; None without a fit."""
        return None if self.fit is None else self.fit.poor

    def to_dict(self) -> dict:
        d = {
            "computed": self.computed.source,
            "measured": self.measured.source,
            "unit": self.measured.unit,
            "range": list(self.x_range),
            "computed_notes": list(self.notes),
            "measured_notes": list(self.measured.notes),
            "warnings": list(self.alerts),
            "similarity": self.similarity.to_dict(),
        }
        if self.fit is not None:
            f = self.fit.to_dict()
            d["frequency_scale"] = {
                "value": f["frequency_scale"]["value"],
                "std": f["frequency_scale"]["std"],
                "definition": "measured energy ≈ frequency_scale × computed energy",
            }
            d["chi2_red"] = f["chi2_red"]
            d["poor_fit"] = f["poor_fit"]
            d["fit"] = f
            d["similarity_fitted"] = self.similarity_fitted.to_dict()
        return d


#: default |Q| range (Å^-1) over which S(Q,E) maps are averaged: where ARCS powder coverage is good
DEFAULT_Q_RANGE = (3.0, 9.0)

_Q_TAG = re.compile(r"q_range_ainv=([-+0-9.eE]+),([-+0-9.eE]+)")


def _csv_head(path) -> str:
    """The first two lines of a text file (comment and header), '' if unreadable."""
    try:
        with open(path, errors="replace") as fh:
            return fh.readline() + fh.readline()
    except OSError:
        return ""


def read_computed(path, units: str | None = None):
    """A computed spectrum: a result directory (read with :func:`atomvib.load`; an INS spectrum or map and a phonon
    result as they are, any other 1D result as by :func:`as_spectrum`), atomvib's own
    ``ins_map.h5`` (an InsMap), or a csv written by atomvib (``ins.csv``, ``ir.csv``, ``raman.csv``,
    ``dos.csv``: x and the first intensity column; the unit from the header, ``energy_meV``,
    ``wavenumber_cm1``, ``frequency_thz``)."""
    import warnings

    from ..harmonic.crystal import CrystalPhonons
    from ..harmonic.force_constants import ForceConstants
    from ..harmonic.molecule import MoleculeVibrations
    from ..results import is_result_dir, load
    from .ins import InsMap, InsSpectrum

    if is_result_dir(path):
        r = load(path)
        if isinstance(r, (InsMap, InsSpectrum, CrystalPhonons, ForceConstants, MoleculeVibrations)):
            return r
        return as_spectrum(r)
    p = Path(path)
    if p.is_file():
        with open(p, "rb") as fh:
            hdf5 = fh.read(8) == b"\x89HDF\r\n\x1a\n"
        if hdf5:
            return InsMap.from_hdf5(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_columns(path, units)


def read_measured(path, units: str | None = None):
    """A measured spectrum as read: an :class:`~atomvib.spectra.measured.SQEMap` for an S(Q,E) histogram
    (``.h5`` with ``iqe``), else a :class:`Spectrum1D` (see :func:`~atomvib.spectra.measured.read_spectrum`)."""
    from .measured import read_sqe_map

    p = Path(path)
    if p.is_file():
        with open(p, "rb") as fh:
            hdf5 = fh.read(8) == b"\x89HDF\r\n\x1a\n"
        if hdf5:
            import h5py

            try:
                with h5py.File(p, "r") as f:
                    is_map = "iqe" in f
            except OSError as exc:
                raise InputError(f"{p}: not a readable HDF5 file ({exc})", fix="check the file") from None
            if is_map:
                return read_sqe_map(p)
    return read_spectrum(path, units=units)


def as_spectrum(result, fwhm_cm1: float = 10.0) -> Spectrum1D:
    """The 1D spectrum of a typed result: INS (backward bank, meV), IR/Raman (broadened with ``fwhm_cm1``,
    cm^-1), a DOS or a crystal's phonon DOS (THz), or a Spectrum1D itself."""
    from ..harmonic.crystal import CrystalPhonons
    from .dos import DosSpectrum
    from .ins import InsSpectrum
    from .ir import OpticalSpectrum

    if isinstance(result, Spectrum1D):
        return result
    if isinstance(result, InsSpectrum):
        return Spectrum1D(result.energy_mev, result.intensity, None, "meV", source=f"{result.instrument} INS")
    if isinstance(result, OpticalSpectrum):
        x, y = result.curve(fwhm_cm1=fwhm_cm1)
        return Spectrum1D(np.asarray(x), np.asarray(y), None, "cm-1", source=f"{result.kind} spectrum")
    if isinstance(result, DosSpectrum):
        return Spectrum1D(result.energy, result.total, None, canonical_unit(result.unit), source="phonon DOS")
    if isinstance(result, CrystalPhonons):
        d = result.dos()
        keep = d.frequencies_thz >= 0
        return Spectrum1D(d.frequencies_thz[keep], d.total[keep], None, "THz", source="phonon DOS")
    raise InputError(
        f"a {type(result).__name__} result has no 1D spectrum to compare",
        fix="give an INS, IR/Raman, DOS or phonons result directory, or a csv",
    )


def matched_cuts(computed, measured, q_range) -> tuple[Spectrum1D, Spectrum1D, int]:
    """1D cuts of a computed :class:`~atomvib.spectra.ins.InsMap` and a measured
    :class:`~atomvib.spectra.measured.SQEMap` over the same |Q| range and the same (Q, E) bins.

    The bins are the measured ones in ``q_range``; a bin counts when it was measured (finite) and the computed
    map covers it (finite after linear interpolation in |Q| onto the measured bin centre, at the computed energy
    nearest the bin centre). The measured cut is the mean over those bins at each measured energy
    (:meth:`SQEMap.reduce`); the computed cut keeps its own, finer energy axis (the fit stretches it) and at
    each computed energy averages the map, interpolated to the measured |Q| centres, over the bins counted for
    the measured energy bin it falls in. The kinematic limits of the two then cannot bias the comparison.

    Returns
    -------
    computed_cut, measured_cut : Spectrum1D (meV)
    n_bins : int, the number of (Q, E) bins both cover
    """
    q0, q1 = q_range
    qm = q_range_mask(measured.q_invA, q0, q1, f"bin of {measured.source}")
    qs = measured.q_invA[qm]
    z = computed.intensity  # (nq_c, ne_c)
    # the map at the measured |Q| centres, for every computed energy: (nq_m, ne_c); NaN outside the map
    zq = np.stack([np.interp(qs, computed.q_ainv, z[:, j], left=np.nan, right=np.nan) for j in range(z.shape[1])], 1)
    em, ec = measured.energy_mev, computed.energy_mev
    half = 0.5 * float(np.median(np.diff(em))) if len(em) > 1 else 0.5
    # measured bins that the computed energy axis reaches, and the computed energy nearest each bin centre
    reach = (em >= ec[0] - half) & (em <= ec[-1] + half)
    jc = np.clip(np.searchsorted(ec, em), 1, len(ec) - 1)
    jc = np.where(np.abs(ec[jc - 1] - em) <= np.abs(ec[jc] - em), jc - 1, jc)
    both = np.isfinite(measured.intensity[qm]) & np.isfinite(zq[:, jc]) & reach[None, :]  # (nq_m, ne_m)
    if measured.error is not None:
        both &= np.isfinite(measured.error[qm])
    if both.sum() < 3:
        raise InputError(
            f"the computed map ({computed.energy_mev[0]:.3g}–{computed.energy_mev[-1]:.3g} meV) and "
            f"{measured.source} share no measured bins in |Q| {q0:g}–{q1:g} Å^-1",
            fix="check the incident energy and --q-range",
        )
    mcut = measured.reduce(q0, q1, mask=both)
    # each computed energy takes the bin mask of the measured energy bin it falls in
    im = np.clip(np.searchsorted(em + half, ec), 0, len(em) - 1)
    cov = both[:, im] & np.isfinite(zq)
    n = cov.sum(axis=0)
    keep = n > 0
    y = np.where(cov, zq, 0.0).sum(axis=0)[keep] / n[keep]
    src = f"{computed.instrument} map" + (f" Ei {computed.ei_mev:g} meV" if np.isfinite(computed.ei_mev) else "")
    ccut = Spectrum1D(ec[keep], y, None, "meV", (), f"{src}, |Q| {q0:g}–{q1:g} Å^-1 on the measured bins")
    return ccut, mcut, int(both.sum())


def _map_for(source, measured, *, ei_mev, temperature_k, instrument, order):
    """The direct-geometry map of a phonon result for a measured S(Q,E) map: the settings of `atomvib ins`."""
    from .ins import default_map_de, direct_powder_map
    from .instruments import get_instrument

    ei = ei_mev if ei_mev is not None else measured.ei_mev
    if ei is None:
        raise InputError(
            f"{measured.source} does not record the incident energy, needed to compute the direct-geometry map",
            fix="add --ei MEV (the Ei of the measurement, e.g. --ei 80 for the ARCS aluminium data)",
        )
    t = temperature_k if temperature_k is not None else measured.temperature_k
    if t is None:
        raise InputError(
            f"{measured.source} does not record the sample temperature, which sets the Bose and Debye–Waller "
            "factors of the computed map",
            fix="add --temperature K (e.g. --temperature 300)",
        )
    name = instrument or measured.instrument or "arcs"
    inst = get_instrument(name)
    if inst.kind != "direct":
        raise InputError(
            f"{inst.name} is an indirect-geometry instrument, but {measured.source} is a direct-geometry S(Q,E) map",
            fix="use --instrument arcs, sequoia, maps, mari, merlin or generic",
        )
    emax = 0.9 * ei
    m = direct_powder_map(
        source, inst, ei, order=order, temperature_k=t, energy_range_mev=(0.5, emax), de_mev=default_map_de(emax)
    )
    note = (
        f"computed: {inst.name.upper()} powder map at Ei {ei:g} meV"
        f"{'' if ei_mev is not None else ' (from the measured file)'}, {t:g} K"
        f"{'' if temperature_k is not None else ' (from the measured file)'}, orders 1–{order}, incoherent "
        "approximation"
        + ("" if instrument or measured.instrument else " (instrument not in the file: ARCS assumed, --instrument)")
    )
    return m, note


def _map_mismatch(c, ei_mev, temperature_k) -> list[str]:
    """Warnings when a computed map was made for another Ei or temperature than the measurement's (given or
    recorded); nothing when those are unknown."""
    out = []
    for what, mine, ref, unit in (("incident energy", c.ei_mev, ei_mev, "meV"), ("temperature", c.temperature_k,
                                                                              temperature_k, "K")):
        if ref is not None and np.isfinite(mine) and abs(mine - ref) > 0.01 * ref:
            out.append(f"the computed map was made for {what} {mine:g} {unit}, the measurement's is {ref:g} {unit}: "
                       f"recompute it (atomvib ins ... {'--ei' if unit == 'meV' else '--temperature'} {ref:g})")
    return out


def compare(
    computed,
    measured,
    fit=("scale", "background", "broadening"),
    x_range=None,
    *,
    units=None,
    q_range=None,
    ei_mev: float | None = None,
    temperature_k: float | None = None,
    instrument: str | None = None,
    order: int = 3,
) -> CompareResult:
    """Put a computed and a measured spectrum on one axis, score their similarity and fit one to the other.

    With a measured S(Q,E) map (an ARCS-like ``iqe`` histogram), both sides are cut over the same |Q| range:
    a computed :class:`~atomvib.spectra.ins.InsMap` on the same (Q, E) bins (:func:`matched_cuts`); a phonon
    result (crystal or molecule) is first turned into the direct-geometry map of the measurement
    (``ei_mev``/``temperature_k`` from the arguments or the file, else an error). A 1D computed spectrum (a cut
    ``ins.csv``, a VISION/TOSCA spectrum, a DOS) is compared with the measured cut; an indirect-geometry
    spectrum then gets a warning in :attr:`CompareResult.alerts`, as does a poor fit.

    Parameters
    ----------
    computed : Spectrum1D, a typed result (see :func:`as_spectrum`; InsMap and phonon results too), or the path
        of a result directory, ``ins_map.h5`` or csv
    measured : Spectrum1D, SQEMap or path (text/CSV, S(Q,E) histogram .h5, Mantid NeXus 1D)
    fit : iterable of str, "a,b" string, or None/() for similarity only; see :func:`fit_spectrum`
    x_range : (float, float), optional, in the measured unit; default: where the measured axis is > 0 and
        the computed spectrum (stretched by up to 30 %) can reach
    units : str, optional, the measured file's unit when its header does not say
    q_range : (float, float), optional, |Q| range (Å^-1) of the cuts of S(Q,E) maps; default that of a cut
        ``ins.csv`` (its first line says), else :data:`DEFAULT_Q_RANGE`
    ei_mev, temperature_k, instrument, order : for a phonon result against a measured map (see above;
        instrument default: the file's, else ARCS)
    """
    import warnings

    from ..harmonic.crystal import CrystalPhonons
    from ..harmonic.force_constants import ForceConstants
    from ..harmonic.molecule import MoleculeVibrations
    from .ins import InsMap, InsSpectrum
    from .measured import SQEMap

    notes: list[str] = []
    alerts: list[str] = []
    cut_q = None  # the |Q| range a computed csv cut was averaged over (its first line)
    indirect = None  # the name of an indirect-geometry instrument whose spectrum is compared
    if isinstance(computed, (str, Path)):
        head = _csv_head(computed) if Path(computed).is_file() else ""
        tag = _Q_TAG.search(head)
        if tag:
            cut_q = (float(tag.group(1)), float(tag.group(2)))
        if "intensity_forward" in head:
            indirect = "VISION/TOSCA"
        c = read_computed(computed)
    else:
        c = computed
    if isinstance(c, InsSpectrum):
        indirect = c.instrument.upper()
    phonons = isinstance(c, (CrystalPhonons, ForceConstants, MoleculeVibrations))
    m = measured if isinstance(measured, (Spectrum1D, SQEMap)) else read_measured(measured, units=units)
    if q_range is not None:
        q_range = (float(q_range[0]), float(q_range[1]))
    if cut_q is not None:
        if q_range is not None and not np.allclose(q_range, cut_q, atol=1e-6):
            raise InputError(
                f"{computed} is a cut over |Q| {cut_q[0]:g}–{cut_q[1]:g} Å^-1 but --q-range {q_range[0]:g} "
                f"{q_range[1]:g} was asked",
                fix=f"use --q-range {cut_q[0]:g} {cut_q[1]:g}, recompute the cut (atomvib ins ... --q-range "
                f"{q_range[0]:g} {q_range[1]:g}) or give the ins result directory (the whole map)",
            )
        q_range = cut_q
    if isinstance(m, SQEMap):
        qr = q_range or DEFAULT_Q_RANGE
        if phonons:
            c, note = _map_for(
                c, m, ei_mev=ei_mev, temperature_k=temperature_k, instrument=instrument, order=order
            )
            notes.append(note)
        elif isinstance(c, InsMap):
            alerts += _map_mismatch(c, ei_mev or m.ei_mev, temperature_k or m.temperature_k)
        if isinstance(c, InsMap):
            c, m, nbins = matched_cuts(c, m, qr)
            notes.append(
                f"computed and measured maps averaged over |Q| {qr[0]:g}–{qr[1]:g} Å^-1 on the same {nbins} "
                "(Q, E) bins (measured and covered by the computed map)"
            )
        else:
            m = m.reduce(*qr)
            if cut_q is not None:
                notes.append(f"computed cut over |Q| {qr[0]:g}–{qr[1]:g} Å^-1 (its own detector coverage)")
            if indirect:
                alerts.append(
                    f"a {indirect} spectrum (each energy seen at one |Q|, fixed by the instrument) is compared with "
                    f"a direct-geometry S(Q,E) map averaged over |Q| {qr[0]:g}–{qr[1]:g} Å^-1: the |Q| weighting "
                    "of the fundamentals, overtones and Debye–Waller factor differs; give the phonons result with "
                    "--ei (or an `atomvib ins --instrument arcs --ei E` result) instead"
                )
    else:
        if phonons and not isinstance(c, CrystalPhonons):
            raise InputError(
                f"a {type(c).__name__} has no 1D spectrum to compare with {m.source}",
                fix="run `atomvib ins`, `ir` or `raman` on it first and compare that result",
            )
        if isinstance(c, InsMap):
            qr = q_range or DEFAULT_Q_RANGE
            e, y, _ = c.q_cut(*qr)
            c = Spectrum1D(e, y, None, "meV", (), f"{c.instrument} map, |Q| {qr[0]:g}–{qr[1]:g} Å^-1")
            notes.append(f"computed map averaged over |Q| {qr[0]:g}–{qr[1]:g} Å^-1 (its own detector coverage)")
    c = as_spectrum(c)
    if x_range is None:
        cmax = float(c.x[-1] * frequency_factor(c.unit, m.unit)) * 1.3
        lo = max(float(m.x[0]), 0.0)
        x_range = (lo, min(float(m.x[-1]), cmax))
    x_range = (float(x_range[0]), float(x_range[1]))
    if x_range[0] >= x_range[1]:
        raise InputError(
            f"empty comparison range {x_range[0]:g}–{x_range[1]:g} {m.unit}",
            fix="give --range EMIN EMAX inside both spectra",
        )
    mc = m.crop(*x_range)
    sim = similarity(c, mc)
    toks = parse_fit(fit) if fit else set()
    fr = sf = None
    if toks:
        fr = fit_spectrum(c, mc, toks)
        sf = similarity_arrays(fr.x, fr.model, fr.measured, fr.unit)
        if fr.poor:
            alerts.append(poor_fit_message(fr))
        elif fr.poor is None:
            notes.append("the measurement has no error bars: chi2_red is not a goodness of fit (poor_fit null)")
    for a in alerts:
        warnings.warn(a, UserWarning, stacklevel=2)
    return CompareResult(c, m, sim, fr, sf, x_range, tuple(notes), tuple(alerts))


def poor_fit_message(f: FitResult) -> str:
    """The one-line warning of a fit with χ²_red > :data:`POOR_FIT_CHI2_RED`."""
    return (
        f"poor fit: chi2_red {f.chi2_red:.3g} > {POOR_FIT_CHI2_RED:g}, the model misses the measurement by "
        f"≈ {np.sqrt(f.chi2_red):.2g} error bars rms, a difference of shape beyond the noise, so the fitted values "
        "are only indicative. Likely causes: wrong instrument or incident energy (e.g. a VISION/TOSCA spectrum "
        "against a direct-geometry map), wrong temperature, missing multiphonon orders (--order), resolution, "
        "or phonons that are off"
    )


def plot_fit(result: CompareResult, path, title: str | None = None) -> Path:
    """Overlay and residuals of a :class:`CompareResult`; see :func:`atomvib.spectra.plots.plot_fit`."""
    from .plots import plot_fit as _plot_fit

    return _plot_fit(result, path, title)


# --------------------------------------------------------------------------------------------- Al stand-in
@dataclass(frozen=True, eq=False)
class IncoherentPowder:
    """Incoherent-approximation powder spectrum, |Q|-averaged.

    Attributes
    ----------
    energy_mev : ndarray, shape (ne,), meV (positive: neutron energy loss)
    orders : ndarray, shape (norder, ne), 1/meV: contribution of 1, 2, ... phonons
    msd_a2 : float, mean-square displacement along one direction ⟨u_x²⟩ in Å²
    temperature_k : float
    """

    energy_mev: np.ndarray
    orders: np.ndarray
    msd_a2: float
    temperature_k: float

    @property
    def total(self) -> np.ndarray:
        """Sum over orders, shape (ne,)."""
        return self.orders.sum(axis=0)

    def spectrum(self) -> Spectrum1D:
        return Spectrum1D(self.energy_mev, self.total, None, "meV", (), "incoherent powder model")


def incoherent_powder_spectrum(
    frequencies_thz,
    dos,
    mass_amu: float,
    temperature_k: float,
    q_invA,
    energy_mev,
    coverage=None,
    max_order: int = 4,
    step_mev: float = 0.05,
) -> IncoherentPowder:
    """S(E) averaged over |Q| bins, incoherent approximation for a monatomic crystal given by its DOS.

    The model of :mod:`atomvib.spectra.ins` (which does the work): with g(E) the phonon DOS per mode
    (∫g = 1), n(E) the Bose occupation and ħ²/2M the recoil, A₁(E) = (ħ²/2M) g(|E|)/|E| · [n(|E|) + 1] for
    energy loss (E > 0) and · n(|E|) for gain; its integral is ⟨u_x²⟩. The n-phonon term is the n-fold
    self-convolution and S(Q, E) = exp(−Q²⟨u_x²⟩) Σₙ (Q²)ⁿ/n! · A₁^{*n}(E)
    (Sjölander, Arkiv Fysik 14, 315 (1958); Squires, *Thermal Neutron Scattering*, ch. 3). For Al
    (σ_coh = 1.495 b, σ_inc = 0.008 b) using it for coherent scattering is the standard "incoherent
    approximation" of powder data averaged over a wide |Q| range (e.g. the ``multiphonon`` package for ARCS).

    Parameters
    ----------
    frequencies_thz, dos : ndarray, shape (nf,): phonon DOS on a THz axis (any normalisation; read as
        a piecewise-linear density, negative frequencies ignored)
    mass_amu : float
    temperature_k : float
    q_invA : ndarray, shape (nq,), |Q| bin centres in Å^-1
    energy_mev : ndarray, shape (ne,), energies in meV where the spectrum is wanted
    coverage : ndarray of bool, shape (nq, ne), optional
        Which (Q, E) bins count in the average (the measured ones); default all.
    max_order : int, number of phonons summed (1 = one-phonon only)
    step_mev : float, internal grid step in meV
    """
    from .ins import modes_from_partial_dos, q_averaged_orders

    if max_order < 1:
        raise InputError("max_order must be ≥ 1", fix="use 1 for one-phonon only")
    e_dos = np.asarray(frequencies_thz, float) * THZ_TO_MEV
    g = np.clip(np.asarray(dos, float), 0, None)
    if not np.any((g > 0) & (e_dos > 0)):
        raise InputError("the phonon DOS has no states at positive frequency", fix="check the DOS columns")
    # the DOS sampled at the centres of bins of step_mev from 0: one "mode" per bin, 3 states per atom
    nb = int(np.ceil(float(e_dos[g > 0].max()) / step_mev)) + 1
    edges = step_mev * np.arange(nb + 1)
    states = np.interp(edges[:-1] + 0.5 * step_mev, e_dos, g, left=0.0, right=0.0)
    states *= 3.0 / states.sum()
    el = "atom"  # one element; its cross-section cancels in Σσ S / Σσ
    modes = modes_from_partial_dos(
        edges,
        {el: states},
        {el: float(mass_amu)},
        {el: 1},
        temperature_k=temperature_k,
        de_mev=step_mev,
        cutoff_mev=0.0,
    )
    e = np.asarray(energy_mev, float)
    orders = q_averaged_orders(
        modes,
        q_invA,
        e,
        order=max_order,
        de_mev=step_mev,
        energy_gain=True,
        coverage=coverage,
        cross_sections={el: 1.0},
    )
    return IncoherentPowder(e, orders, float(modes.debye_waller_alpha_a2[0]), float(temperature_k))
