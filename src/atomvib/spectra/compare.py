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

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..results import Result
from ..units import THZ_TO_MEV, frequency_factor
from .lineshape import gaussian_ft
from .measured import Spectrum1D, canonical_unit, read_columns, read_spectrum

#: tokens accepted by ``fit=``; intensity scale is always fitted
FIT_TOKENS = ("scale", "background", "linear", "broadening")


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
class _Model:
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

    def to_dict(self) -> dict:
        d = {k: {"value": v, "std": e, "fitted": k in self.fitted} for k, (v, e) in self.parameters.items()}
        d["broadening_sigma"]["unit"] = self.unit
        d["background_slope"]["unit"] = f"per {self.unit}"
        d["background"]["at"] = self.x_ref
        return {
            **d,
            "chi2_red": self.chi2_red,
            "n_points": len(self.x),
            "weighted_by_errors": self.weighted,
            "range": [float(self.x[0]), float(self.x[-1])],
            "unit": self.unit,
            "model": "measured(E) = intensity_scale * [computed(E/frequency_scale) (x) Gaussian(broadening_sigma)]"
            " + background + background_slope*(E - at)",
        }


def _parse_fit(fit) -> set:
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

    toks = _parse_fit(fit)
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
    model = _Model(computed, x, unit, sigma_max=max(sig0, 0.2 * span))

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
    s0 = float(s_grid[int(np.argmin(chis))])
    lin0, _ = solve_linear(model.shape(s0, sig0))
    if lin0[0] <= 0:
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
    computed, measured : Spectrum1D, as read (measured cleaned, see its ``notes``)
    similarity : Similarity, computed as is vs measured, on the measured axis in the compared range
    fit : FitResult or None
    similarity_fitted : Similarity or None, the fitted model vs measured
    x_range : (float, float), compared range in ``measured.unit``
    """

    computed: Spectrum1D
    measured: Spectrum1D
    similarity: Similarity
    fit: FitResult | None
    similarity_fitted: Similarity | None
    x_range: tuple

    def to_dict(self) -> dict:
        d = {
            "computed": self.computed.source,
            "measured": self.measured.source,
            "unit": self.measured.unit,
            "range": list(self.x_range),
            "measured_notes": list(self.measured.notes),
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
            d["fit"] = f
            d["similarity_fitted"] = self.similarity_fitted.to_dict()
        return d


def read_computed(path, units: str | None = None) -> Spectrum1D:
    """A computed spectrum: a result directory (read with :func:`atomvib.load`, see :func:`as_spectrum`) or a
    csv written by atomvib (``ins.csv``, ``ir.csv``, ``raman.csv``, ``dos.csv``: x and the first intensity
    column; the unit from the header, ``energy_meV``, ``wavenumber_cm1``, ``frequency_thz``)."""
    import warnings

    from ..results import is_result_dir, load

    if is_result_dir(path):
        return as_spectrum(load(path))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_columns(path, units)


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


def compare(
    computed, measured, fit=("scale", "background", "broadening"), x_range=None, *, units=None, q_range=None
) -> CompareResult:
    """Put a computed and a measured spectrum on one axis, score their similarity and fit one to the other.

    Parameters
    ----------
    computed : Spectrum1D, a typed result (see :func:`as_spectrum`), or the path of a result directory or csv
    measured : Spectrum1D or path (text/CSV, S(Q,E) histogram .h5, Mantid NeXus 1D)
    fit : iterable of str, "a,b" string, or None/() for similarity only; see :func:`fit_spectrum`
    x_range : (float, float), optional, in the measured unit; default: where the measured axis is > 0 and
        the computed spectrum (stretched by up to 30 %) can reach
    units : str, optional, the measured file's unit when its header does not say
    q_range : (float, float), optional, |Q| range (Å^-1) to reduce an S(Q,E) map over
    """
    if isinstance(computed, (str, Path)):
        c = read_computed(computed)
    else:
        c = as_spectrum(computed)
    m = (
        measured
        if isinstance(measured, Spectrum1D)
        else read_spectrum(measured, units=units, q_range=q_range)
    )
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
    toks = _parse_fit(fit) if fit else set()
    fr = sf = None
    if toks:
        fr = fit_spectrum(c, mc, toks)
        sf = similarity_arrays(fr.x, fr.model, fr.measured, fr.unit)
    return CompareResult(c, m, sim, fr, sf, x_range)


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
