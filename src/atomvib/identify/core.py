"""Which structure did I measure? Candidate structures ranked against a measured vibrational spectrum.

Two passes, both scored with the fit of :func:`atomvib.spectra.compare.compare` (frequency scale s, intensity
scale, background, extra Gaussian broadening, each ± σ, and χ²):

1. **Screening** — every candidate through the direct DOS predictor (:func:`atomvib.learn.predict`, one batch,
   milliseconds per crystal). The predictor gives a DOS per element and a calibrated 1σ band, no eigenvectors,
   so the spectrum it stands for is the one the incoherent isotropic approximation builds from a DOS per
   element (:func:`atomvib.spectra.ins.modes_from_partial_dos`, exact for sites of cubic symmetry, the same
   approximation as :mod:`atomvib.learn.spectra`): the VISION/TOSCA spectrum (:func:`~atomvib.spectra.ins.
   indirect_spectrum`), the direct-geometry powder map cut like the measurement (:func:`~atomvib.spectra.ins.
   direct_powder_map`, :func:`~atomvib.spectra.compare.matched_cuts`), or for ``kind="dos"`` the DOS itself.
   The predictor has no IR or Raman intensities: for those kinds the screening compares the predicted DOS with
   the measured spectrum (frequencies only, a weak screen; say ``first_pass=False`` to skip it).
2. **Refinement** — the ``top_k`` best through full phonons with an engine (:func:`atomvib.phonons`, or
   :func:`atomvib.batch.run_batch` with ``db=``: many workers, a scheduler, results kept in the store; by default
   the atoms relaxed in each candidate's own cell), and the instrument's spectrum from those phonons (the
   ``atomvib ins`` / ``compare`` code), fitted again. With several engines (``committee``) each is fitted on
   its own and their probabilities are pooled (:func:`pool_probabilities`). It goes in rounds and stops early
   once the best candidate's final probability exceeds ``decisive``.

Relative probability (:func:`probabilities`). For candidate i with fit residuals r (measured − model) on the
common measured points, error bars e (1 without them) and model spread δ_i (the predictor's calibrated 1σ DOS
band carried through the one-phonon term — linear in the DOS, Debye–Waller from the mean DOS — then scaled,
stretched and broadened with the fitted parameters; 0 in the second pass). The spread is one coherent error of the whole spectrum (an ensemble's DOS is off over a whole
band, not bin by bin independently): model = fit + ξ·δ_i with ξ ~ N(0, 1), marginalised, so the covariance is
C_i = B + δ_iδ_iᵀ with B = diag(b²τ·e²):

    ln L_i = −½ rᵀC_i⁻¹r − ½ ln(det C_i / det B) − ½ (ln s_i / σ_s)²,      p_i = exp(ln L_i) / Σ_j exp(ln L_j)

(rᵀC⁻¹r = Σ r²/B − (Σ rδ/B)² / (1 + Σ δ²/B), det C / det B = 1 + Σ δ²/B: Sherman–Morrison). The error bars are
inflated by two factors taken from the best fit of the pass (``rescale``): b², the Birge factor (its χ²_red, at
least 1 with error bars; without error bars it turns the unit weights into its residual scatter), because every
calculated spectrum misses real data by more than the counting errors (χ²_red 30–50 for aluminium on ARCS); and
τ, the integrated autocorrelation length of its residuals in bins (:func:`residual_correlation_length`): such a
misfit is smooth, spans τ neighbouring bins, and a χ² that counts each bin as independent evidence would turn a
difference of shape of a fraction of a per cent into probabilities of exactly 0 and 1. For a right model on
counting noise both are ≈ 1 and change nothing. The log-determinant keeps a vague prediction from winning by its
vagueness; the last term is a broad prior on the frequency scale (σ_s = 0.15 by default: calculated frequencies
are off by 5–15 %, rarely 30 %), which keeps the free scale from mapping one element's spectrum onto another's.
The final probability of a refined candidate is the screening probability mass of the refined set times its
refined probability within the set; the others keep their screening probability. The early stop uses the same
number, and refines a candidate the predictor flags as out of distribution (or cannot screen) in any case.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import AtomvibError, InputError
from ..results import Result
from ..spectra.measured import Spectrum1D
from ..units import frequency_factor
from .candidates import Candidate, duplicate_candidates, read_candidates

KINDS = ("ins", "ir", "raman", "dos")
#: default prior width σ_s of ln(frequency scale)
SCALE_PRIOR = 0.15
#: fine energy bins (meV) of the spectra made from a predicted DOS (its own bins are 5 cm⁻¹ = 0.62 meV)
_SCREEN_DE_MEV = 0.25
#: default free fit parameters: a 1D spectrum, a measured S(Q,E) map (see :func:`identify`)
DEFAULT_FIT = {"1d": ("scale", "linear", "broadening"), "map": ("scale", "background", "broadening")}
#: fits of the first pass's scale profile (see :func:`_profile_scale`; the second pass makes 25)
SCREEN_PROFILE_POINTS = 3
#: most measured points the first pass fits (a longer 1D spectrum is rebinned for it)
SCREEN_POINTS = 200
#: how much of the predicted DOS to keep (cumulative): the tail of the 0–4000 cm⁻¹ axis above it is cut
_DOS_KEEP = 1.0 - 1e-4


@dataclass(frozen=True, eq=False)
class Target:
    """The measurement and how candidates are compared with it (see :func:`identify` for the fields)."""

    kind: str
    mode: str  # "indirect", "direct-map", "direct-1d", "spectrum"
    measured: object  # Spectrum1D or SQEMap
    instrument: str
    ei_mev: float | None
    temperature_k: float
    order: int
    q_range: tuple | None
    x_range: tuple
    fit: tuple
    unit: str
    plausible: tuple = (0.3, 3.0)  # frequency scales a fit may end at (see _compare)

    @property
    def source(self) -> str:
        return str(getattr(self.measured, "source", ""))


def _target(measured, kind, instrument, ei_mev, temperature_k, q_range, x_range, units, order, fit) -> Target:
    from ..spectra.compare import DEFAULT_Q_RANGE, parse_fit, read_measured
    from ..spectra.instruments import get_instrument
    from ..spectra.measured import SQEMap

    kind = str(kind).lower()
    if kind not in KINDS:
        raise InputError(f"unknown --kind {kind!r}", fix=f"use one of {', '.join(KINDS)}")
    if isinstance(measured, (str, Path)):
        p = Path(measured)
        if not p.exists():
            raise InputError(f"measured spectrum {p} not found", fix="check the path")
        if p.is_dir():
            raise InputError(f"measured spectrum {p} is a directory",
                             fix="give the measured file itself (text/CSV columns, S(Q,E) .h5 or NeXus)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = read_measured(p, units=units)
    else:
        m = measured
    if not isinstance(m, (Spectrum1D, SQEMap)):
        raise InputError(f"a {type(m).__name__} is not a measured spectrum", fix="give a file or a Spectrum1D")
    if fit is None:
        fit = DEFAULT_FIT["map" if isinstance(m, SQEMap) else "1d"]
    fit = tuple(sorted(parse_fit(fit or ())))
    if not fit:
        raise InputError("identify needs a fit to score candidates", fix="give e.g. fit='scale,linear,broadening'")
    q = tuple(float(v) for v in q_range) if q_range is not None else None
    if isinstance(m, SQEMap):
        if kind != "ins":
            raise InputError(f"{m.source} is an S(Q,E) map: an INS measurement", fix="use --kind ins")
        name = instrument or m.instrument or "arcs"
        inst = get_instrument(name)
        if inst.kind != "direct":
            raise InputError(f"{inst.name} is an indirect-geometry instrument, but {m.source} is a direct-geometry "
                             "S(Q,E) map", fix="use --instrument arcs, sequoia, maps, mari, merlin or generic")
        mode, unit = "direct-map", "meV"
        q = q or DEFAULT_Q_RANGE
    elif kind == "ins":
        inst = get_instrument(instrument or "vision")
        mode, unit = ("indirect" if inst.kind == "indirect" else "direct-1d"), m.unit
        if mode == "direct-1d":
            q = q or DEFAULT_Q_RANGE
    else:
        if instrument:
            raise InputError(f"--instrument applies to --kind ins, not {kind}", fix="drop --instrument")
        inst, mode, unit = None, "spectrum", m.unit
    ei = ei_mev
    t = temperature_k
    if mode.startswith("direct"):
        ei = ei if ei is not None else getattr(m, "ei_mev", None)
        t = t if t is not None else getattr(m, "temperature_k", None)
        if ei is None:
            raise InputError(f"{m.source}: a direct-geometry measurement needs its incident energy",
                             fix="add --ei MEV (e.g. --ei 80 for the ARCS aluminium data)")
        if t is None:
            raise InputError(f"{m.source} does not record the sample temperature (Bose and Debye–Waller factors)",
                             fix="add --temperature K (e.g. --temperature 300)")
    elif t is None:
        t = 5.0  # VISION and TOSCA measure at base temperature
    for what, v in (("--ei", ei), ("--temperature", t)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise InputError(f"{what} {v} must be a finite number > 0", fix=f"e.g. {what} {80 if what == '--ei' else 300}")
    if x_range is None:
        if mode == "direct-map":
            x_range = (0.1 * ei, 0.9 * ei)
        else:
            x0 = float(m.x[m.x > 0][0]) if np.any(m.x > 0) else float(m.x[0])
            x_range = (x0, float(m.x[-1]))
            if mode == "direct-1d":
                f = frequency_factor("meV", unit)
                x_range = (max(x_range[0], 0.1 * ei * f), min(x_range[1], 0.9 * ei * f))
    x_range = (float(x_range[0]), float(x_range[1]))
    if not (all(math.isfinite(v) for v in x_range) and x_range[0] < x_range[1]):
        raise InputError(f"--range {x_range[0]} {x_range[1]} is not an interval MIN < MAX", fix="e.g. --range 10 70")
    if not 1 <= int(order) <= 10:
        raise InputError(f"--order {order} out of range", fix="use 1..10")
    return Target(kind, mode, m, inst.name if inst is not None else "", None if ei is None else float(ei),
                  float(t), int(order), q, x_range, fit, unit)


def _screening_target(target: Target, max_points: int) -> Target:
    """The target of the first pass: a 1D measurement cropped to the fitted range and, when it has more than
    ``max_points`` points there, rebinned by an integer factor (means of neighbouring bins, errors added in
    quadrature): the screen needs the shape, not every bin, and the fit's cost grows with the points."""
    m = target.measured
    if not isinstance(m, Spectrum1D) or max_points <= 0:
        return target
    c = m.crop(*target.x_range)
    k = int(math.ceil(len(c.x) / max_points))
    if k <= 1:
        return target
    n = (len(c.x) // k) * k
    x = c.x[:n].reshape(-1, k).mean(1)
    y = c.y[:n].reshape(-1, k).mean(1)
    e = None if c.error is None else np.sqrt((c.error[:n].reshape(-1, k) ** 2).sum(1)) / k
    note = f"rebinned by {k} for the first pass"
    return dataclasses.replace(target, measured=Spectrum1D(x, y, e, c.unit, (*c.notes, note), c.source),
                               x_range=(float(x[0]), float(x[-1])))


# ------------------------------------------------------------------------------------------ fitting
def _compare(computed, target: Target, phonons: bool = False, profile_points: int = 25):
    """:func:`atomvib.spectra.compare.compare` of ``computed`` with the measurement, with the target's settings.

    A free frequency scale that leaves the plausible range (``target.plausible``, ±3σ of the scale prior) is a
    degenerate fit, not a physical one: a spectrum squeezed to a third, washed out by the broadening and the
    background, can fit a broad measurement best. The scale is then profiled within the range instead
    (:func:`_profile_scale`, ``profile_points`` fits), so that the candidate is judged at a scale its prior
    allows.
    """
    from ..spectra.compare import compare

    kw = {"fit": target.fit, "x_range": target.x_range}
    if target.mode == "direct-map":
        kw["q_range"] = target.q_range
        if phonons:
            kw.update(ei_mev=target.ei_mev, temperature_k=target.temperature_k, instrument=target.instrument,
                      order=target.order)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # poor-fit alerts are kept in the CompareResult
        res = compare(computed, target.measured, **kw)
    lo, hi = target.plausible
    if "scale" in target.fit and not lo <= res.fit.frequency_scale[0] <= hi:
        res = _profile_scale(res, target, profile_points)
    return res


def _profile_scale(res, target: Target, n: int = 25):
    """``res`` refitted with the frequency scale on a grid within ``target.plausible`` (the other parameters free
    at each point; the computed spectrum, or the cut of a computed map, stretched beforehand), the best point
    refined by a parabola; its standard uncertainty from the profile's curvature (Δχ² = χ²_red, as the fit's).
    ``n`` ≤ 1: one fit at the bound the free fit ran past (the first pass), no uncertainty."""
    from ..spectra.compare import fit_spectrum, similarity_arrays

    lo, hi = target.plausible
    comp = res.computed
    meas = res.measured.crop(*res.x_range)
    toks = tuple(t for t in target.fit if t != "scale")

    def at(sc):
        c = Spectrum1D(comp.x * sc, comp.y, None, comp.unit, (), comp.source)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                f = fit_spectrum(c, meas, toks)
        except InputError:  # nothing like the measurement at this scale (best intensity scale ≤ 0)
            return None, math.inf
        return f, float(f.chi2_red * f.dof)

    if n <= 1:  # a screen: one fit at the bound the free fit ran past (its descent was monotone up to it)
        best, sd = (lo if res.fit.frequency_scale[0] < lo else hi), float("nan")
        f, chi2 = at(best)
        if f is None:
            raise InputError(f"the spectrum fits the measurement at neither end of {lo:.2f}–{hi:.2f}",
                             fix="check the units (--units) and the fitted range (--range)")
    else:
        u = np.linspace(math.log(lo), math.log(hi), n)
        cost = np.array([at(math.exp(v))[1] for v in u])
        k = int(np.argmin(cost))
        best, sd, a = math.exp(u[k]), float("nan"), 0.0
        if 0 < k < n - 1 and np.all(np.isfinite(cost[k - 1: k + 2])):
            a, b, _ = np.polyfit(u[k - 1: k + 2], cost[k - 1: k + 2], 2)
            if a > 0:
                best = math.exp(min(max(-b / (2 * a), u[k - 1]), u[k + 1]))
        f, chi2 = at(best)
        if f is None:
            raise InputError("the spectrum fits the measurement at no frequency scale in "
                             f"{lo:.2f}–{hi:.2f}", fix="check the units (--units) and the fitted range (--range)")
        if a > 0:
            dof = max(len(f.x) - len(f.fitted) - 1, 1)
            sd = best * math.sqrt(chi2 / dof / a)  # Δ(ln s) of Δχ² = χ²_red, back to s
    dof = max(len(f.x) - len(f.fitted) - 1, 1)
    params = {**f.parameters, "frequency_scale": (best, sd)}
    fit = dataclasses.replace(f, parameters=params, fitted=("frequency_scale", *f.fitted), chi2_red=chi2 / dof)
    return dataclasses.replace(
        res, fit=fit, similarity_fitted=similarity_arrays(fit.x, fit.model, fit.measured, fit.unit),
        notes=(*res.notes, f"the free fit took the frequency scale outside {lo:.2f}–{hi:.2f}: profiled within it"))


def model_spread(delta: Spectrum1D | None, fit) -> np.ndarray:
    """The model's 1σ spread on the fitted points: ``delta`` (a spectrum of standard deviations, same unit and
    normalisation as the computed spectrum) stretched, broadened and scaled with the fitted parameters of ``fit``
    (a :class:`~atomvib.spectra.compare.FitResult`), shape (n,); zeros when ``delta`` is None."""
    from ..spectra.compare import FitModel

    if delta is None or not np.any(np.asarray(delta.y) > 0):
        return np.zeros(len(fit.x))
    p = fit.parameters
    s, sig, a = p["frequency_scale"][0], p["broadening_sigma"][0], p["intensity_scale"][0]
    step = float(np.median(np.diff(fit.x))) if len(fit.x) > 1 else 1.0
    model = FitModel(delta, np.asarray(fit.x, float), fit.unit, sigma_max=max(sig, step))
    return np.abs(a) * np.clip(model.shape(s, sig), 0, None)


def probabilities(fits, spreads=None, *, scale_prior: float = SCALE_PRIOR, rescale: bool = True) -> dict:
    """Relative probabilities of candidates from their fits to one measurement (see the module docstring).

    Parameters
    ----------
    fits : list of FitResult, all on the same measured points
    spreads : list of ndarray (n,) or None, the model spread of each (see :func:`model_spread`)
    scale_prior : float, σ_s of the Gaussian prior on ln s (0: none)
    rescale : bool, inflate the errors by the best fit's Birge factor b² and residual correlation length τ
        (without error bars b² is always applied)

    Returns
    -------
    dict of arrays (len(fits),): ``chi2`` (plain, Σ r²/e²), ``chi2_inflated`` (rᵀC⁻¹r), ``log_likelihood``,
    ``probability``; and the floats ``birge`` (b²) and ``correlation_length`` (τ)
    """
    n = len(fits)
    if n == 0:
        return {"chi2": np.zeros(0), "chi2_inflated": np.zeros(0), "log_likelihood": np.zeros(0),
                "probability": np.zeros(0), "birge": 1.0, "correlation_length": 1.0}
    npts = {len(f.x) for f in fits}
    if len(npts) != 1:
        raise InputError(f"the candidates' fits cover different numbers of points ({sorted(npts)})",
                         fix="give --range inside what every candidate's spectrum reaches")
    spreads = spreads or [None] * n
    weighted = fits[0].weighted
    chi2r = np.array([f.chi2_red for f in fits])
    b2 = float(np.min(chi2r))
    if weighted:
        b2 = max(1.0, b2) if rescale else 1.0
    b2 = b2 if b2 > 0 else 1.0
    tau = 1.0
    if rescale:
        best = fits[int(np.argmin(chi2r))]
        tau = residual_correlation_length(best.residual / (best.error if best.error is not None else 1.0))
    birge = b2
    b2 *= tau
    chi2, chi2i, lnl = np.zeros(n), np.zeros(n), np.zeros(n)
    for i, f in enumerate(fits):
        e2 = (np.asarray(f.error, float) ** 2) if f.error is not None else np.ones(len(f.x))
        d = np.asarray(spreads[i], float) if spreads[i] is not None else np.zeros(len(f.x))
        r = np.asarray(f.residual, float)
        base = b2 * e2
        chi2[i] = float(np.sum(r**2 / e2))
        # C = diag(base) + δδᵀ (Sherman–Morrison): rᵀC⁻¹r and ln det C − ln det diag(base)
        dd, rd = float(np.sum(d**2 / base)), float(np.sum(r * d / base))
        chi2i[i] = float(np.sum(r**2 / base)) - rd**2 / (1.0 + dd)
        s = f.parameters["frequency_scale"][0]
        prior = 0.5 * (math.log(s) / scale_prior) ** 2 if scale_prior and s > 0 else 0.0
        lnl[i] = -0.5 * chi2i[i] - 0.5 * math.log1p(dd) - prior
    p = np.exp(lnl - lnl.max())
    return {"chi2": chi2, "chi2_inflated": chi2i, "log_likelihood": lnl, "probability": p / p.sum(), "birge": birge,
            "correlation_length": tau}


def residual_correlation_length(z) -> float:
    """Integrated autocorrelation length τ = 1 + 2 Σ_k ρ_k of residuals ``z`` (in bins; ≥ 1), the sum stopped at
    the first lag whose autocorrelation ρ_k is ≤ 0 (Geyer's initial positive sequence). White noise gives ≈ 1;
    a smooth systematic misfit spanning m bins gives ≈ m: the χ² of such residuals counts every independent
    misfit τ times."""
    z = np.asarray(z, float)
    z = z - z.mean()
    n = len(z)
    var = float(z @ z)
    if n < 4 or var <= 0:
        return 1.0
    tau = 1.0
    for k in range(1, n // 2):
        rho = float(z[:-k] @ z[k:]) / var
        if rho <= 0:
            break
        tau += 2.0 * rho
    return max(tau, 1.0)


# ------------------------------------------------------------------------------------------ first pass
def _element_data(structure) -> tuple[dict, dict]:
    masses: dict = {}
    counts: dict = {}
    for el, m in zip(structure.symbols, structure.masses):
        masses[el] = masses.get(el, 0.0) + float(m)
        counts[el] = counts.get(el, 0) + 1
    return {el: masses[el] / counts[el] for el in masses}, counts


def predicted_modes(prediction, temperature_k: float, de_mev: float = _SCREEN_DE_MEV):
    """INS input of a :class:`~atomvib.learn.predictor.DosPrediction`: (modes of the mean DOS, modes of its 1σ band).

    The band (total DOS std, shared among the elements in proportion to their partial DOS in each bin) is turned
    into modes like a DOS, with the Debye–Waller factor of the mean: its one-phonon spectrum is the spread of the
    mean's one-phonon spectrum (linear in the DOS). The tail of the 0–4000 cm⁻¹ axis beyond 99.99 % of the states
    is cut (it only slows the multiphonon convolutions).
    """
    from ..spectra.ins import modes_from_partial_dos

    f = np.asarray(prediction.frequencies_cm1, float)
    w = float(f[1] - f[0])
    edges = np.append(f - 0.5 * w, f[-1] + 0.5 * w) * frequency_factor("cm-1", "meV")
    states = {el: np.clip(np.asarray(g, float), 0, None) * w for el, g in prediction.partial_dos.items()}
    total = sum(states.values())
    cum = np.cumsum(total) / max(float(total.sum()), 1e-300)
    nb = min(int(np.searchsorted(cum, _DOS_KEEP)) + 3, len(f))
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = {el: np.where(total > 0, g / total, 1.0 / len(states)) for el, g in states.items()}
    std = np.asarray(prediction.dos_std, float) * w
    std_states = {el: std * frac[el] for el in states}
    masses, counts = _element_data(prediction.structure)
    kw = {"temperature_k": temperature_k, "de_mev": de_mev, "debye_first_bin": True}
    mean = modes_from_partial_dos(edges[: nb + 1], {el: g[:nb] for el, g in states.items()}, masses, counts, **kw)
    band = modes_from_partial_dos(edges[: nb + 1], {el: g[:nb] for el, g in std_states.items()}, masses, counts, **kw)
    return mean, dataclasses.replace(band, msd_a2=mean.msd_a2)


@lru_cache(maxsize=16)
def _resolution_table(name: str, ei_mev: float) -> tuple[np.ndarray, np.ndarray]:
    """The instrument's resolution σ (meV) on 2001 energies from −Ei to Ei (``resins`` reads its instrument files
    at every call: once per incident energy here)."""
    from ..spectra.instruments import get_instrument

    e = np.linspace(-ei_mev, ei_mev, 2001)
    return e, get_instrument(name).sigma_mev(e, ei_mev)


def _screening_instrument(name: str):
    """``name``'s direct-geometry instrument with its resolution interpolated from :func:`_resolution_table`: the
    first pass makes a map per candidate, and the smooth σ(E) interpolated on 2001 points is as good as exact."""
    from ..spectra.instruments import DirectInstrument, get_instrument

    base = get_instrument(name)

    class _Interpolated(DirectInstrument):
        def sigma_mev(self, energy_mev, ei_mev):
            e_tab, s_tab = _resolution_table(name, float(ei_mev))
            return np.interp(np.asarray(energy_mev, float), e_tab, s_tab)

    return _Interpolated(base.name, base.angle_range_deg, base.resins_name, base.resolution_fwhm_mev,
                         dict(base.options))


def _top_mev(target: Target) -> float:
    return float(target.x_range[1] * frequency_factor(target.unit, "meV"))


def screening_spectrum(prediction, target: Target):
    """(computed, spread) of a predicted DOS for ``target``: what :func:`_compare` takes (a Spectrum1D, or an
    InsMap against a measured map) and the model's 1σ spread as a Spectrum1D (or None)."""
    from ..spectra.compare import matched_cuts
    from ..spectra.ins import default_map_de, direct_powder_map, indirect_spectrum

    name = prediction.input
    if target.mode == "spectrum":
        f = prediction.frequencies_cm1
        return (Spectrum1D(f, prediction.dos, None, "cm-1", (), f"{name}: predicted DOS"),
                Spectrum1D(f, prediction.dos_std, None, "cm-1", (), f"{name}: predicted DOS 1σ"))
    mean, band = predicted_modes(prediction, target.temperature_k)
    if target.mode == "indirect":
        top = max(min(250.0, 1.4 * _top_mev(target) + 5.0), 5.0)
        kw = {"energy_range_mev": (0.5, top), "de_mev": 2 * _SCREEN_DE_MEV}
        s = indirect_spectrum(None, target.instrument, order=target.order, modes=mean, **kw)
        d = indirect_spectrum(None, target.instrument, order=1, modes=band, **kw)
        src = f"{name}: predicted DOS → {target.instrument.upper()}"
        return (Spectrum1D(s.energy_mev, s.intensity, None, "meV", (), src),
                Spectrum1D(d.energy_mev, d.intensity, None, "meV", (), src + " 1σ"))
    emax = 0.9 * target.ei_mev
    kw = {"temperature_k": target.temperature_k, "energy_range_mev": (0.5, emax), "de_mev": default_map_de(emax)}
    inst = _screening_instrument(target.instrument)
    mp = direct_powder_map(None, inst, target.ei_mev, order=target.order, modes=mean, **kw)
    dm = direct_powder_map(None, inst, target.ei_mev, order=1, modes=band, resolution=False, **kw)
    if target.mode == "direct-map":
        dcut = matched_cuts(dm, target.measured, target.q_range)[0]
        return mp, dcut
    e, y, _ = mp.q_cut(*target.q_range)
    ed, yd, _ = dm.q_cut(*target.q_range)
    src = f"{name}: predicted DOS → {target.instrument.upper()} map, |Q| {target.q_range[0]:g}–{target.q_range[1]:g}"
    return Spectrum1D(e, y, None, "meV", (), src), Spectrum1D(ed, yd, None, "meV", (), src + " 1σ")


# ------------------------------------------------------------------------------------------ second pass
def _gamma_sticks(phonons) -> tuple[np.ndarray, np.ndarray, str]:
    """Γ optical modes (cm⁻¹) with IR intensities when the phonons carry Born charges, else equal weights."""
    from ..spectra.ins import as_phonopy
    from ..spectra.ir import crystal_ir, gamma_modes
    from ..units import THZ_TO_CM1

    ph = as_phonopy(phonons)
    if ph.nac_params is not None and ph.nac_params.get("born") is not None:
        r = crystal_ir(phonons)
        return r.frequencies_cm1, r.intensities, "IR intensities from the Born charges"
    f, _, acoustic = gamma_modes(ph)
    keep = ~acoustic & (f > 0)
    return f[keep] * THZ_TO_CM1, np.ones(int(keep.sum())), "Γ optical modes, equal intensities (no Born charges or Raman tensors)"


def refined_spectrum(phonons, target: Target):
    """(computed, note) of a phonon result for ``target``: a Spectrum1D, or the phonons themselves against a
    measured map (:func:`atomvib.spectra.compare.compare` makes the map with the measurement's settings)."""
    from ..spectra.compare import as_spectrum
    from ..spectra.ins import default_map_de, direct_powder_map, indirect_spectrum
    from ..spectra.lineshape import broaden

    if target.mode == "direct-map":
        return phonons, f"{target.instrument.upper()} map at Ei {target.ei_mev:g} meV, {target.temperature_k:g} K"
    if target.mode == "indirect":
        s = indirect_spectrum(phonons, target.instrument, order=target.order, temperature_k=target.temperature_k)
        return Spectrum1D(s.energy_mev, s.intensity, None, "meV", (), f"{target.instrument.upper()}"), \
            f"{target.instrument.upper()} backward bank, {target.temperature_k:g} K, orders 1–{target.order}"
    if target.mode == "direct-1d":
        emax = 0.9 * target.ei_mev
        m = direct_powder_map(phonons, target.instrument, target.ei_mev, order=target.order,
                              temperature_k=target.temperature_k, energy_range_mev=(0.5, emax),
                              de_mev=default_map_de(emax))
        e, y, _ = m.q_cut(*target.q_range)
        return Spectrum1D(e, y, None, "meV", (), "map cut"), f"{target.instrument.upper()} map cut"
    if target.kind == "dos":
        return as_spectrum(phonons), "phonon DOS"
    f, w, note = _gamma_sticks(phonons)
    if len(f) == 0:
        raise InputError("no optical Γ mode", fix="a one-atom cell has no IR/Raman spectrum")
    axis = np.arange(0.0, float(f.max()) * 1.5 + 100.0, 1.0)
    return Spectrum1D(axis, broaden(f, w, axis, 10.0), None, "cm-1", (), note), note


# ------------------------------------------------------------------------------------------ the result
@dataclass(frozen=True, eq=False)
class Identification(Result):
    """Candidates ranked against one measurement.

    Attributes
    ----------
    measured : Spectrum1D, the measured points every candidate was fitted to (a cut of a map), with errors
    kind : str, ``ins``, ``ir``, ``raman`` or ``dos``
    mode : str, ``indirect`` (VISION/TOSCA), ``direct-map`` (a measured S(Q,E) map), ``direct-1d`` (a 1D cut
        of a direct-geometry measurement), ``spectrum`` (DOS, IR, Raman)
    instrument : str
    x_range : (float, float), the fitted range in ``measured.unit``
    candidates : tuple of dict, in rank order: ``rank``, ``name``, ``path``, ``formula``, ``natoms``,
        ``spacegroup``, ``status``, ``probability`` (final), ``first_pass`` and ``second_pass`` (each None or a
        dict: ``frequency_scale`` [value, std], ``chi2_red``, ``chi2``, ``chi2_inflated``, ``probability``
        within the pass, ``model_spread_rel`` (rms model spread / rms measured signal), ``cosine``, ``pearson``,
        ``sis``, ``wasserstein`` after the fit, ``poor_fit``; the first pass adds ``in_distribution``,
        ``ood_reason``; the second ``engine``, ``has_imaginary``, ``omega_max_thz``, ``seconds``, ``spectrum``, and
        with several engines ``members``: per engine ``engine``, ``frequency_scale``, ``chi2_red``,
        ``probability``, ``has_imaginary``, ``omega_max_thz``; the row's fit values are the first engine's)
    fits : dict name -> FitResult, the last-pass fits of the best ranked candidates (for the figure)
    settings : dict, how the ranking was made (engine, top_k, decisive, scale prior, ...)
    early_stop : bool, the second pass stopped before its last candidate
    notes : tuple of str
    timings : dict, seconds per stage
    """

    measured: Spectrum1D
    kind: str
    mode: str
    instrument: str
    x_range: tuple
    candidates: tuple
    fits: dict
    settings: dict
    early_stop: bool = False
    notes: tuple = ()
    timings: dict = field(default_factory=dict)

    @property
    def best(self) -> dict:
        """The top-ranked candidate's row."""
        return self.candidates[0]

    def ranking(self) -> list[str]:
        """Candidate names, best first."""
        return [c["name"] for c in self.candidates]

    def table(self, n: int = 10) -> str:
        """The ranked table as text (the first ``n`` rows)."""
        head = f"{'rank':>4}  {'candidate':<28} {'pass':>4}  {'scale ± σ':>17}  {'χ²_red':>8}  {'cosine':>6}  " \
               f"{'p(1st)':>7}  {'p(2nd)':>7}  {'p':>7}"
        lines = [head]
        for c in self.candidates[:n]:
            last = c["second_pass"] or c["first_pass"]
            p1 = c["first_pass"]["probability"] if c["first_pass"] else float("nan")
            p2 = c["second_pass"]["probability"] if c["second_pass"] else float("nan")
            if last is not None:
                s, ds = last["frequency_scale"]
                fitted = f"{s:.4f} ± {ds:.4f}" if ds is not None and np.isfinite(ds) else f"{s:.4f} (edge)"
                chi, cos = f"{last['chi2_red']:.3g}", f"{last['cosine']:.3f}"
            else:
                fitted, chi, cos = "–", "–", "–"
            lines.append(f"{c['rank']:>4}  {c['name'][:28]:<28} {2 if c['second_pass'] else (1 if c['first_pass'] else 0):>4}  "
                         f"{fitted:>17}  {chi:>8}  {cos:>6}  {_p(p1):>7}  {_p(p2):>7}  {_p(c['probability']):>7}")
        if len(self.candidates) > n:
            lines.append(f"      ... {len(self.candidates) - n} more in ranking.csv")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        from ..results import _json_safe

        return _json_safe({
            "measured": self.measured.source,
            "kind": self.kind,
            "mode": self.mode,
            "instrument": self.instrument,
            "unit": self.measured.unit,
            "range": list(self.x_range),
            "best": self.best["name"],
            "best_probability": self.best["probability"],
            "early_stop": self.early_stop,
            "settings": self.settings,
            "n_candidates": len(self.candidates),
            "candidates": list(self.candidates),
            "notes": list(self.notes),
            "timings_s": self.timings,
            "probability_model": "p_i ∝ exp(-chi2_inflated/2) (1 + δᵀB⁻¹δ)^(-1/2) exp(-(ln s / σ_s)²/2), "
            "chi2_inflated = rᵀ(B + δδᵀ)⁻¹r, B = b²τ·e²: b² the Birge factor (the pass's smallest chi2_red, ≥ 1 "
            "with error bars), τ the best fit's residual correlation length in bins, δ the model's own 1σ spread "
            "(predictor band; 0 in the second pass) on the fitted points, a coherent error of the whole spectrum; "
            "several engines: the geometric mean of their p, normalised; refined candidates: the first-pass "
            "probability mass of the refined set times the second-pass probability",
        })

    def summary(self) -> dict:
        d = self.to_dict()
        d["candidates"] = d["candidates"][:20]
        return d

    def to_csv(self, path) -> Path:
        """``ranking.csv``: one row per candidate, best first."""
        import csv

        cols = ["rank", "name", "path", "formula", "natoms", "spacegroup", "status", "probability"]
        sub = ["frequency_scale", "frequency_scale_std", "chi2_red", "chi2_inflated", "probability", "cosine",
               "sis", "wasserstein", "model_spread_rel"]
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cols + [f"p1_{k}" for k in sub] + [f"p2_{k}" for k in sub])
            for c in self.candidates:
                row = [c[k] for k in cols]
                for ps in ("first_pass", "second_pass"):
                    d = c[ps] or {}
                    fs = d.get("frequency_scale", [None, None])
                    vals = {"frequency_scale": fs[0], "frequency_scale_std": fs[1], **d}
                    row += [_fmt(vals.get(k)) for k in sub]
                w.writerow(row)
        return Path(path)

    def _write_files(self, out: Path) -> None:
        import json

        (out / "identify.json").write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False))
        self.to_csv(out / "ranking.csv")

    def plot(self, path, n: int = 3, title: str | None = None) -> Path:
        """Overlay of the best ``n`` candidates' fitted spectra on the measurement, with residuals (PNG)."""
        from .plots import plot_identification

        return plot_identification(self, path, n=n, title=title)


def _p(v) -> str:
    return "–" if v is None or not np.isfinite(v) else (f"{v:.3f}" if v >= 1e-3 else f"{v:.0e}")


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else ""
    return v


def _pass_row(res, spread, extra: dict) -> dict:
    f = res.fit
    sf = res.similarity_fitted
    rms = float(np.sqrt(np.mean(np.asarray(f.measured, float) ** 2))) or 1.0
    return {
        "frequency_scale": list(f.frequency_scale),
        "chi2_red": f.chi2_red,
        "poor_fit": f.poor,
        "cosine": sf.cosine,
        "pearson": sf.pearson,
        "sis": sf.sis,
        "wasserstein": sf.wasserstein,
        "cosine_before_fit": res.similarity.cosine,
        "model_spread_rel": float(np.sqrt(np.mean(spread**2))) / rms,
        **extra,
    }


# ------------------------------------------------------------------------------------------ identify
def identify(
    measured,
    candidates,
    *,
    kind: str = "ins",
    instrument: str | None = None,
    ei_mev: float | None = None,
    temperature_k: float | None = None,
    q_range=None,
    x_range=None,
    units: str | None = None,
    order: int = 3,
    fit=None,
    engine: str | None = None,
    settings=None,
    committee=None,
    top_k: int = 5,
    decisive: float = 0.99,
    first_pass: bool = True,
    born: str | None = None,
    model=None,
    scale_prior: float = SCALE_PRIOR,
    rescale_errors: bool = True,
    db=None,
    results_dir=None,
    workers: int | None = None,
    scheduler: str | None = None,
    keep_fits: int = 5,
    screen_points: int = SCREEN_POINTS,
    progress=False,
) -> Identification:
    """Rank candidate structures by how well their spectra fit a measurement (see the module docstring).

    Parameters
    ----------
    measured : path (text/CSV columns, S(Q,E) histogram .h5, NeXus 1D), Spectrum1D or SQEMap
    candidates : paths, directories, globs, Structures, ase.Atoms or Candidates (:func:`read_candidates`)
    kind : ``ins`` (default), ``ir``, ``raman`` or ``dos``
    instrument : INS instrument: ``vision`` (default for a 1D spectrum), ``tosca``, or a direct-geometry one
        (``arcs``, the default for an S(Q,E) map; ``sequoia``, ``maps``, ``mari``, ``merlin``, ``generic``)
    ei_mev, temperature_k : incident energy and sample temperature (direct geometry: required unless the file
        records them; indirect: temperature default 5 K)
    q_range : (float, float), |Q| range (Å⁻¹) of the direct-geometry cuts; default 3–9
    x_range : (float, float), fitted range in the measured unit; the same points for every candidate. Default:
        0.1–0.9 Ei for a map, else the positive part of the measured axis. Exclude an elastic line.
    units : the measured file's energy unit when its header does not say
    order : highest phonon order of the INS spectra
    fit : free fit parameters (:func:`atomvib.spectra.compare.fit_spectrum`); the intensity scale always is.
        Default :data:`DEFAULT_FIT`: a sloping background for 1D spectra (a flat one leaves a misfit that can
        favour a wrong candidate), a flat one for a measured S(Q,E) map (reduced maps are background-subtracted
        and the model has the multiphonon terms a slope would mimic)
    engine, settings : engine spec and :class:`~atomvib.settings.PhononSettings` of the second pass (default:
        the default engine, atoms relaxed in each candidate's own cell, ``relax_cell=False``)
    committee : sequence of engine specs, optional: the second pass runs each (with ``db``: each through the
        batch runner), fits each engine's spectrum on its own and pools their probabilities
        (:func:`pool_probabilities`); each candidate's ``second_pass`` row then lists the ``members``
    top_k : how many of the best screened candidates go to the second pass (0: none)
    decisive : stop the second pass once the best refined candidate's probability exceeds this (with the
        screening only: without it every candidate is refined)
    first_pass : screen with the DOS predictor (False: every candidate goes to the second pass)
    born : ``"auto"``, ``"predicted"`` or ``"none"``: Born charges and ε∞ of the learned model
        (:func:`atomvib.workflow.resolve_born`) for the refined candidates' LO–TO splitting and IR intensities.
        Default ``"auto"`` (polar non-metals) for ``kind="ir"``, whose intensities need them, ``"none"`` otherwise
        (on the DFPT polymorph groups of docs/identify.md LO–TO splitting did not change the ranking)
    model : DOS predictor model (default the shipped one)
    scale_prior : σ of the prior on ln(frequency scale); 0 for none
    rescale_errors : apply the Birge factor (see :func:`probabilities`)
    db, results_dir, workers, scheduler : run the second pass with :func:`atomvib.batch.run_batch` (``db`` set):
        the store, where result files go, local worker processes, a Dask scheduler address
    keep_fits : how many of the best candidates keep their fit in the result (for the figure)
    screen_points : a 1D measurement with more points in the range is rebinned to at most this many for the
        first pass (0: never)
    progress : print what each stage does on stderr

    Returns
    -------
    Identification
    """
    from ..engines import default_engine_spec
    from ..progress import as_progress
    from ..settings import PhononSettings

    prog = as_progress(progress)
    t_all = time.perf_counter()
    timings: dict = {}
    if not (0.0 < float(decisive) <= 1.0):
        raise InputError(f"decisive {decisive} must be in (0, 1]", fix="e.g. --decisive 0.99 (1 never stops early)")
    if int(top_k) < 0:
        raise InputError(f"top_k {top_k} must be ≥ 0", fix="e.g. --top 5")
    if scale_prior < 0:
        raise InputError(f"scale prior {scale_prior} must be ≥ 0", fix="e.g. --scale-prior 0.15, or 0 for none")
    target = _target(measured, kind, instrument, ei_mev, temperature_k, q_range, x_range, units, order, fit)
    if scale_prior > 0:
        target = dataclasses.replace(target, plausible=(math.exp(-3 * scale_prior), math.exp(3 * scale_prior)))
    cands = read_candidates(candidates)
    # the candidates' own cells by default: they come from diffraction or a DFT database, and a potential's
    # relaxed cell (PBE-like, 1-3 % larger) softens each candidate by its own amount: on the DFPT polymorph groups
    # of docs/identify.md relaxing the cell gave fewer right answers in every draw
    settings = settings or PhononSettings(relax_cell=False)
    born = _born_mode(born, target.kind)
    if engine is not None:
        settings = dataclasses.replace(settings, engine=engine)
    members = tuple(committee) if committee else (settings.engine,)  # None: the default engine
    if len(set(members)) < len(members):
        raise InputError(f"the committee {', '.join(members)} names an engine twice", fix="name each engine once")
    notes: list[str] = []
    rows = {c.name: {"name": c.name, "path": c.path, "formula": c.structure.formula, "natoms": c.structure.natoms,
                     "spacegroup": _spacegroup(c.structure), "status": "", "first_pass": None,
                     "second_pass": None} for c in cands}
    fits: dict = {}
    same = duplicate_candidates(cands, {n: r["spacegroup"] for n, r in rows.items()})
    if same:
        # one crystal listed twice would split its probability in half
        for n, first in same.items():
            rows[n]["status"] = f"same structure as {first}: not scored separately"
        cands = [c for c in cands if c.name not in same]
        notes.append(f"{len(same)} candidate(s) are the same structure as an earlier one, not scored separately: "
                     + ", ".join(f"{n} = {f}" for n, f in list(same.items())[:5]) + (" ..." if len(same) > 5 else ""))

    # ---------------------------------------------------------------- first pass
    p1: dict[str, float] = {}
    unscreened: list[Candidate] = []
    order_1: list[Candidate] = list(cands)
    if first_pass:
        t0 = time.perf_counter()
        with prog.stage(f"first pass: DOS predictor on {len(cands)} candidates"):
            screened, res1 = _first_pass(cands, _screening_target(target, screen_points), model, rows, unscreened)
        if screened:
            pr = probabilities([r.fit for r, _ in res1], [s for _, s in res1], scale_prior=scale_prior,
                               rescale=rescale_errors)
            for k, (c, (r, _)) in enumerate(zip(screened, res1)):
                rows[c.name]["first_pass"].update(chi2=float(pr["chi2"][k]), chi2_inflated=float(pr["chi2_inflated"][k]),
                                                  probability=float(pr["probability"][k]))
                p1[c.name] = float(pr["probability"][k])
                fits[c.name] = r.fit
            notes.append(f"first pass: Birge factor b² = {pr['birge']:.3g}, residual correlation length "
                         f"τ = {pr['correlation_length']:.3g} bins")
        order_1 = sorted(screened, key=lambda c: -p1[c.name])
        timings["first_pass"] = time.perf_counter() - t0
        if unscreened:
            notes.append(f"{len(unscreened)} candidate(s) not screened (the predictor cannot take them): "
                         f"{', '.join(c.name for c in unscreened[:5])}{' ...' if len(unscreened) > 5 else ''}; "
                         "they go to the second pass")
        ood = [c.name for c in screened if not rows[c.name]["first_pass"]["in_distribution"]]
        if ood:
            notes.append(f"{len(ood)} of {len(screened)} screened candidates are outside the predictor's training "
                         "distribution: their screening is uncertain (the model spread widens their error bars; "
                         "those in the top K are refined even if the second pass stops early)")
        queue = order_1[: int(top_k)] + unscreened
    else:
        queue = list(cands)

    # ---------------------------------------------------------------- second pass
    t0 = time.perf_counter()
    done: list[str] = []
    res2: dict = {}
    early = False
    if queue and (top_k > 0 or not first_pass):
        step0 = 2 if db is None else max(2, int(workers or 2))
        i = 0
        while i < len(queue):
            step = step0 if i == 0 or db is not None else 1
            chunk = queue[i: i + step]
            i += len(chunk)
            for c, out in _second_pass(chunk, target, settings, members, db, results_dir, workers, scheduler, prog,
                                      born):
                if isinstance(out, str):
                    rows[c.name]["status"] = f"second pass failed: {out}"
                    continue
                res, extra = out[0]
                row = _pass_row(res, np.zeros(len(res.fit.x)), extra)  # no model spread: engines are pooled
                if len(members) > 1:
                    row["engine"] = " + ".join(e["engine"] for _, e in out)
                    row["seconds"] = sum(e["seconds"] or 0.0 for _, e in out) if extra["seconds"] is not None \
                        else None
                    row["members"] = [{"engine": e["engine"], "frequency_scale": list(r.fit.frequency_scale),
                                       "chi2_red": r.fit.chi2_red, "has_imaginary": e["has_imaginary"],
                                       "omega_max_thz": e["omega_max_thz"]} for r, e in out]
                rows[c.name]["second_pass"] = row
                res2[c.name] = [r for r, _ in out]
                done.append(c.name)
                prog.message(f"second pass {len(done)}: {c.name}: "
                             + "; ".join(f"{e['engine']} s = {r.fit.frequency_scale[0]:.4f} ± "
                                         f"{r.fit.frequency_scale[1]:.4f}, chi2_red {r.fit.chi2_red:.3g}"
                                         for r, e in out))
            # without a screening nothing vouches for the candidates not yet refined: no early stop then
            if first_pass and len(done) >= 2 and i < len(queue) and not early:
                pr = _pooled(done, res2, scale_prior, rescale_errors)
                best = float(pr["probability"].max())
                if p1 and all(n in p1 for n in done):  # what the final probability of the best would be now
                    best *= sum(p1[n] for n in done)
                if best > decisive:
                    # skip the rest whose screening the predictor vouches for; those it flags (or could not
                    # screen) are refined all the same: their first-pass probability means little
                    rest = queue[i:]
                    keep = [c for c in rest if not _trusted(rows[c.name])]
                    if len(keep) < len(rest):
                        early = True
                        for c in rest:
                            if c not in keep:
                                rows[c.name]["status"] = "second pass skipped (early stop)"
                        notes.append(f"second pass: after {i} of {len(queue)} candidates "
                                     f"{done[int(np.argmax(pr['probability']))]} has probability {best:.4f} > "
                                     f"{decisive:g}: {len(rest) - len(keep)} skipped"
                                     + (f"; {len(keep)} the predictor flags as out of distribution are refined "
                                        "all the same" if keep else ""))
                        queue = queue[:i] + keep
    timings["second_pass"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- final ranking
    p2: dict[str, float] = {}
    if done:
        pr = _pooled(done, res2, scale_prior, rescale_errors)
        for m, prm in zip(members, pr["members"]):
            notes.append(f"second pass{' (' + str(m) + ')' if len(members) > 1 else ''}: Birge factor b² = "
                         f"{prm['birge']:.3g}, residual correlation length τ = {prm['correlation_length']:.3g} bins")
        if len(members) > 1:
            notes.append(f"second pass: the probabilities of {len(members)} engines ({', '.join(map(str, members))}), "
                         "each fitted on its own, pooled (geometric mean, normalised)")
        for k, n in enumerate(done):
            pm = pr["members"][0]
            rows[n]["second_pass"].update(chi2=float(pm["chi2"][k]), chi2_inflated=float(pm["chi2_inflated"][k]),
                                          probability=float(pr["probability"][k]))
            for j, prm in enumerate(pr["members"] if len(members) > 1 else ()):
                rows[n]["second_pass"]["members"][j]["probability"] = float(prm["probability"][k])
            p2[n] = float(pr["probability"][k])
            fits[n] = res2[n][0].fit
    unscreened_names = {c.name for c in unscreened}
    nan = float("nan")
    if p1 and not any(n in unscreened_names for n in p2):
        # the screening's probability mass of the refined set, shared out by the second pass
        mass = sum(p1[n] for n in p2)
        final = {n: mass * p2[n] if n in p2 else p1.get(n, nan) for n in rows}
    else:
        final = {n: p2.get(n, nan) for n in rows}
        if p1 and p2:
            notes.append("unscreened candidates were refined: final probabilities are the second pass's, among the "
                         "refined candidates only")
    for n, r in rows.items():
        r["probability"] = final[n]
        if not r["status"]:
            r["status"] = "second pass" if n in p2 else ("first pass" if n in p1 else "not scored")
    ranked = sorted(rows, key=lambda n: (-(final[n] if np.isfinite(final[n]) else -1.0), -p1.get(n, -1.0)))
    table = []
    for k, n in enumerate(ranked, start=1):
        table.append({"rank": k, **rows[n]})
    if not any(r["first_pass"] or r["second_pass"] for r in table):
        raise InputError("no candidate could be scored", fix="check the candidates and the engine (see the statuses)")
    keep = {n: fits[n] for n in [n for n in ranked if n in fits][:max(int(keep_fits), 1)]}
    # the measured points as fitted: a second-pass fit's when there is one (the first pass may fit them rebinned)
    best_fit = next((fits[n] for n in ranked if n in p2), next(iter(keep.values())))
    meas = Spectrum1D(np.asarray(best_fit.x), np.asarray(best_fit.measured), best_fit.error, best_fit.unit, (),
                      target.source)
    timings["total"] = time.perf_counter() - t_all
    sett = {
        "engine": settings.engine,
        "engines": [m or default_engine_spec(False) for m in members],
        "relax": settings.relax,
        "born": born,
        "top_k": int(top_k),
        "decisive": float(decisive),
        "first_pass": bool(first_pass),
        "scale_prior": float(scale_prior),
        "rescale_errors": bool(rescale_errors),
        "fit": list(target.fit),
        "order": target.order,
        "temperature_k": target.temperature_k,
        "ei_mev": target.ei_mev,
        "q_range": list(target.q_range) if target.q_range else None,
        "batch_db": str(db) if db is not None else None,
        "phonon_settings": settings.to_dict(),
    }
    return Identification(meas, target.kind, target.mode, target.instrument, target.x_range, tuple(table), keep,
                          sett, early, tuple(notes), timings)


def _pooled(done, res2, scale_prior, rescale) -> dict:
    """Second-pass probabilities of the refined candidates ``done``: each engine's (:func:`probabilities` on its
    own fits) and their pool (:func:`pool_probabilities`): ``{"probability": (n,), "members": [dict per engine]}``."""
    from scipy.special import logsumexp

    prs = [probabilities([res2[n][j].fit for n in done], scale_prior=scale_prior, rescale=rescale)
           for j in range(len(res2[done[0]]))]
    logp = [pr["log_likelihood"] - logsumexp(pr["log_likelihood"]) for pr in prs]
    return {"probability": pool_probabilities(logp), "members": prs}


def _trusted(row: dict) -> bool:
    """Whether a candidate's screening can be trusted enough to skip its refinement: screened, in distribution."""
    fp = row.get("first_pass")
    return bool(fp) and bool(fp.get("in_distribution"))


def _spacegroup(structure) -> str:
    try:
        return structure.spacegroup()
    except Exception:  # spglib failure on a pathological cell: not worth stopping a ranking for
        return ""


def _first_pass(cands, target: Target, model, rows, unscreened: list):
    """Predict every candidate the model takes (one batch), fit each; returns (screened, [(CompareResult, spread)])."""
    from ..learn.predictor import load_model

    pred = load_model(model)
    ok = []
    for c in cands:
        try:
            pred.check(c.structure, c.name)
            ok.append(c)
        except InputError as exc:
            unscreened.append(c)
            rows[c.name]["status"] = f"not screened: {exc.problem}"
    if not ok:
        return [], []
    # one temperature: the thermal properties of the prediction are not used here (101 of them cost as much as
    # the network)
    preds = pred.predict([c.structure for c in ok], names=[c.name for c in ok], temperatures_k=(300.0,))
    screened, res = [], []
    for c, p in zip(ok, preds):
        try:
            computed, delta = screening_spectrum(p, target)
            r = _compare(computed, target, profile_points=SCREEN_PROFILE_POINTS)
        except AtomvibError as exc:
            unscreened.append(c)
            rows[c.name]["status"] = f"not screened: {exc.problem}"
            continue
        spread = model_spread(delta, r.fit)
        rows[c.name]["first_pass"] = _pass_row(r, spread, {"in_distribution": bool(p.in_distribution),
                                                           "ood_reason": p.ood_reason})
        screened.append(c)
        res.append((r, spread))
    return screened, res


def _born_mode(born, kind: str) -> str:
    """identify's ``born``: auto/predicted/none (any case); None: auto for IR (its intensities), else none."""
    from ..workflow import BORN_MODES, born_mode

    if born is None:
        return "auto" if kind == "ir" else "none"
    mode = born_mode(born)
    if mode is None:
        raise InputError(f"--born {born}: identify takes the learned Born charges or none, not a BORN file",
                         fix=f"use --born {'|'.join(BORN_MODES)}")
    return mode


def _second_pass(chunk, target: Target, settings, members, db, results_dir, workers, scheduler, prog,
                 born: str = "none"):
    """Yield (candidate, [(CompareResult, extra) per engine of ``members``] or an error message) for each
    candidate of ``chunk``: every engine's phonons (its own relaxation, Born charges as ``born`` says), spectrum
    and fit, separately."""
    from ..harmonic.crystal import CrystalPhonons
    from ..workflow import phonons, reanalysed_with_born

    per_member = []
    for m in members:
        sm = dataclasses.replace(settings, engine=m)
        per_member.append((sm, _batch_phonons(chunk, sm, db, results_dir, workers, scheduler) if db is not None
                           else None))
    for k, c in enumerate(chunk):
        outs, err = [], None
        for sm, results in per_member:
            t0 = time.perf_counter()
            try:
                if results is not None:
                    ph = results[k]
                    if isinstance(ph, str):
                        err = ph
                        break
                    if isinstance(ph, CrystalPhonons):  # the batch runner's phonons carry no LO-TO splitting
                        ph = reanalysed_with_born(ph, born)
                else:
                    with prog.stage(f"second pass: phonons of {c.name} ({sm.engine or 'default engine'})"):
                        ph = phonons(c.structure, settings=sm, born=born)
                if not isinstance(ph, CrystalPhonons):
                    err = f"not a crystal phonon result ({type(ph).__name__})"
                    break
                computed, note = refined_spectrum(ph, target)
                res = _compare(computed, target, phonons=computed is ph)
            except AtomvibError as exc:
                err = str(exc)
                break
            info = ph.engine
            extra = {"engine": getattr(info, "spec", "") or getattr(info, "name", ""), "spectrum": note,
                     "has_imaginary": bool(ph.has_imaginary), "omega_max_thz": float(ph.omega_max_thz),
                     "born_charges": ph.force_constants.nac is not None,
                     "seconds": time.perf_counter() - t0 if results is None else None}
            outs.append((res, extra))
        if err is not None:
            yield c, (err if len(members) == 1 else f"{sm.engine}: {err}")
        else:
            yield c, outs


def pool_probabilities(log_probabilities) -> np.ndarray:
    """The logarithmic opinion pool of several engines' probabilities over the same candidates: p ∝ Π_m p_m^(1/M)
    (the geometric mean, normalised). ``log_probabilities``: shape (M, n), each row a normalised ln p of one
    engine; returns p, shape (n,).

    Why a pool and not one spectrum: each universal potential misses DFT by its own structure-dependent error,
    and polytypes (zincblende/wurtzite, 2H/3R) differ by less than that error. Fitted one by one, two engines
    err on different candidates; the pool keeps the ranking on which they agree and is undecided where they
    conflict. Averaging their spectra first blurs the very features that tell polytypes apart (on the 50
    development groups of docs/identify.md: 39 of 50 right with the mean spectrum, 46 with the pool).
    """
    lp = np.mean(np.atleast_2d(np.asarray(log_probabilities, float)), axis=0)
    p = np.exp(lp - lp.max())
    return p / p.sum()


def _batch_phonons(chunk, settings, db, results_dir, workers, scheduler) -> list:
    """Phonons of ``chunk`` through :func:`atomvib.batch.run_batch`: a CrystalPhonons or an error message each."""
    import json
    import tempfile

    from ..batch import run_batch
    from ..engines import default_engine_spec
    from ..results import load
    from ..store import Store, canonical_hash

    spec = settings.engine or default_engine_spec(False)
    files = []
    tmp = None
    for c in chunk:
        if c.path and "@" not in c.name and "#" not in c.name:
            files.append(c.path)
        else:  # a frame of a multi-structure file, or a structure made in memory: its own file
            if tmp is None:
                base = Path(results_dir) if results_dir else Path(str(db)).with_suffix("").parent
                base.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=".identify-", dir=base))
            p = tmp / ("".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in c.name) + ".extxyz")
            c.structure.to_ase().write(str(p), format="extxyz")
            files.append(str(p))
    run_batch(files, tasks=("phonons",), settings=settings, db=db, results_dir=results_dir, workers=workers,
              scheduler=scheduler, quiet=True, command=f"atomvib identify (second pass, {len(files)} candidates)")
    want = json.dumps(dataclasses.replace(settings, engine=spec).to_dict())
    store = Store(db)
    try:
        df = store.calculations(task="phonons", engine=spec)
        out = []
        for c in chunk:
            h = canonical_hash(c.structure, settings.symprec)
            rows = df[df["structure_hash"] == h]
            row = None
            for _, r in rows.iterrows():
                calc = store.get_calculation(r["key"])
                if calc is not None and calc.settings_json == want:
                    row = r
            if row is None:
                out.append("no phonons row for it in the store")
            elif row["status"] != "done":
                out.append(f"phonons {row['status']}: {row['error']}")
            else:
                out.append(load(row["result_dir"]))
    finally:
        store.close()
    return out
