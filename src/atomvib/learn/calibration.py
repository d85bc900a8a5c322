"""Intervals that widen away from the training data, and an out-of-distribution flag that says why.

The ensemble spread alone is too narrow for crystals unlike the training set: on 31 thermoelectrics outside the
Petretto data the 90 % Cv interval held only 68 % of the DFT values, and the flag (embedding distance or ensemble
disagreement above the 97.5th percentile of valid) fired for none. This module adds, on top of the model's own
scale factors (set on valid by :func:`atomvib.learn.train.calibrate`):

* **shift features** of every crystal (:func:`shift_features`): the embedding distance to the nearest training
  crystal and the ensemble disagreement, both divided by the model's own 97.5th-percentile thresholds (so they mean
  the same for any model), the training count of its rarest element, the distance of its composition to the nearest
  training composition, and the training count of its rarest local environment (element and the kind of its nearest
  neighbour: metal, O, halogen, …);
* a **difficulty score** ``u``, a linear combination of those features (non-negative weights fitted to
  log(|error| / std), :func:`fit_weights`), and a **factor** on the std per crystal and quantity (DOS bins, Cv, S, F;
  :class:`AdaptiveCalibration`): ``exp(u − u₀)`` times a split-conformal table per bin — of the score, or of the
  flag (in distribution / flagged) — so that the 90 % interval holds 90 % of held-out crystals in each bin, close to
  the training data as far from it; clipped to [floor, ceiling];
* a **flag with reasons** (:func:`flag`): unseen element, element rare in training, unusual local environment, far
  in the embedding, ensemble disagreement; the *sensitive* flag (:meth:`FlagRules.sensitive`) adds unusual bonding:
  half the sites with a nearest-shell element pair (``Li–Te``) that no training crystal has. It catches more of the
  worst crystals of a new chemistry at more false alarms in distribution (15 % instead of 10 %; docs/predictor.md).

NumPy and ASE only (no torch): :mod:`atomvib.learn.predictor` applies it, ``scripts/calibrate_shift.py`` fits it on
leave-cluster-out experiments (docs/predictor.md).
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .ensemble import Z90

__all__ = [
    "CALIBRATION_FORMAT",
    "FLAG_LEVELS",
    "QUANTITIES",
    "SENSITIVE_BOND_SHARE",
    "AdaptiveCalibration",
    "FlagRules",
    "bond_keys",
    "ShiftFeatures",
    "conformal_factor",
    "environment_keys",
    "fit_adaptive",
    "fit_weights",
    "flag",
    "load_shift_calibration",
    "shift_calibration_dict",
    "shift_features",
    "training_stats",
]

CALIBRATION_FORMAT = "atomvib-dos-calibration/1"
#: the quantities with an interval: DOS bins, Cv, S, F (one conformal table each)
QUANTITIES = ("dos", "cv", "s", "f")
#: neighbours are searched up to this distance, Å
ENV_CUTOFF_A = 6.0


# ---- what the training set holds ---------------------------------------------------------------------------------


#: classes of a site's nearest neighbour (anything else: "metal")
NEIGHBOUR_CLASSES = {
    "H": "H", "B": "B/C/N", "C": "B/C/N", "N": "B/C/N", "O": "O",
    "F": "halogen", "Cl": "halogen", "Br": "halogen", "I": "halogen",
    "S": "chalcogen", "Se": "chalcogen", "Te": "chalcogen",
    "P": "pnictogen", "As": "pnictogen", "Sb": "pnictogen", "Bi": "pnictogen",
}


#: which class names a site's environment when its nearest shell holds several (the more anion-like first)
_CLASS_ORDER = ("H", "B/C/N", "O", "halogen", "chalcogen", "pnictogen", "metal")
#: neighbours within this fraction beyond the nearest distance are in the nearest shell
SHELL_TOLERANCE = 0.02


def _nearest_shells(atoms):
    """Per site, the indices of its nearest shell: every neighbour within :data:`SHELL_TOLERANCE` of the nearest
    distance (periodic, searched up to :data:`ENV_CUTOFF_A`; a site with none gets an empty list)."""
    from ase.neighborlist import neighbor_list

    n = len(atoms)
    shells: list = [None] * n
    for cutoff in (3.5, ENV_CUTOFF_A):  # a short search first (fast); the full one only if a site has no neighbour
        i, j, d = neighbor_list("ijd", atoms, cutoff)
        if len(i):
            dmin = np.full(n, np.inf)
            np.minimum.at(dmin, i, d)
            lim = dmin * (1.0 + SHELL_TOLERANCE)
            keep = d <= lim[i]
            order = np.argsort(i[keep], kind="stable")
            ii, jj = i[keep][order], j[keep][order]
            starts = np.searchsorted(ii, np.arange(n + 1))
            for a in range(n):
                if shells[a] is None and lim[a] <= cutoff:  # else its shell may reach past this search
                    shells[a] = jj[starts[a] : starts[a + 1]].tolist()
        if all(x is not None for x in shells):
            break
    return [[] if x is None else x for x in shells]


def _as_atoms(structure):
    return structure.to_ase() if hasattr(structure, "to_ase") else structure


def environment_keys(structure, shells=None) -> list[str]:
    """The local environment of every site: ``"El|class of its nearest neighbour"`` (:data:`NEIGHBOUR_CLASSES`,
    else ``"metal"``), e.g. ``"H|metal"`` in a hydride and ``"H|O"`` in a hydroxide.

    The nearest shell is every neighbour within :data:`SHELL_TOLERANCE` of the nearest distance (periodic, searched
    up to :data:`ENV_CUTOFF_A`); when it holds several classes the more anion-like one names the site
    (:data:`_CLASS_ORDER`), so that ties do not depend on the order of the neighbour list. A site without a
    neighbour gets ``"El|none"``. (The element with its nearest neighbour's element, or with its coordination
    number, is too fine a key for a rule that fires on one site: half of the valid crystals would hold one never
    seen in the 1191 training crystals. :func:`bond_keys` uses it for the share of sites instead.)
    """
    atoms = _as_atoms(structure)
    sym = atoms.get_chemical_symbols()
    shells = _nearest_shells(atoms) if shells is None else shells
    rank = {c: k for k, c in enumerate(_CLASS_ORDER)}
    out = []
    for el, shell in zip(sym, shells):
        classes = [NEIGHBOUR_CLASSES.get(sym[b], "metal") for b in shell]
        out.append(f"{el}|{min(classes, key=rank.__getitem__) if classes else 'none'}")
    return out


def bond_keys(structure, shells=None) -> list[set]:
    """Per site, the element pairs of its nearest shell, ``{"Li|Te", …}`` (the site's element first)."""
    atoms = _as_atoms(structure)
    sym = atoms.get_chemical_symbols()
    shells = _nearest_shells(atoms) if shells is None else shells
    return [{f"{sym[a]}|{sym[b]}" for b in shell} for a, shell in enumerate(shells)]


def _fractions(structure) -> dict:
    c = Counter(_symbols(structure))
    n = sum(c.values())
    return {el: v / n for el, v in c.items()}


def _symbols(structure) -> list[str]:
    from ase.data import chemical_symbols

    return [chemical_symbols[int(z)] for z in structure.numbers]


def training_stats(structures) -> dict:
    """What :func:`shift_features` needs to know of the training crystals (JSON-able).

    ``element_counts`` (crystals holding each element), ``environment_counts`` (crystals holding each
    :func:`environment_keys` key), ``bond_counts`` (crystals holding each :func:`bond_keys` pair),
    ``compositions`` (atom fractions of every crystal, 4 decimals), ``n_train``.
    """
    el, env, bonds, comps = Counter(), Counter(), Counter(), []
    for s in structures:
        atoms = _as_atoms(s)
        shells = _nearest_shells(atoms)
        el.update(set(_symbols(s)))
        env.update(set(environment_keys(atoms, shells)))
        bonds.update(set().union(*bond_keys(atoms, shells)))
        comps.append({k: round(v, 4) for k, v in sorted(_fractions(s).items())})
    return {
        "n_train": len(comps),
        "element_counts": dict(sorted(el.items())),
        "environment_counts": dict(sorted(env.items())),
        "bond_counts": dict(sorted(bonds.items())),
        "compositions": comps,
    }


class _CompositionIndex:
    """Nearest training composition in L1 distance of atom fractions (0: the same, 2: no element in common)."""

    def __init__(self, compositions):
        self.elements = sorted({e for c in compositions for e in c})
        self.col = {e: k for k, e in enumerate(self.elements)}
        self.matrix = np.zeros((len(compositions), len(self.elements)))
        for r, c in enumerate(compositions):
            for e, v in c.items():
                self.matrix[r, self.col[e]] = v

    def distance(self, fractions: dict) -> float:
        if not len(self.matrix):
            return 2.0
        x = np.zeros(len(self.elements))
        outside = 0.0
        for e, v in fractions.items():
            if e in self.col:
                x[self.col[e]] = v
            else:
                outside += v
        return float(np.abs(self.matrix - x).sum(1).min() + outside)


def _composition_index(stats) -> _CompositionIndex:
    """The index of ``stats``' compositions (built once by :func:`load_shift_calibration`, else here)."""
    idx = stats.get("composition_index")
    return idx if idx is not None else _CompositionIndex(stats["compositions"])


# ---- features of a crystal ---------------------------------------------------------------------------------------


_ARRAYS = ("latent", "disagreement", "rarity", "composition", "environment", "bond_novelty")
_LISTS = ("rarest_element", "rarest_environment", "unseen_elements", "novel_bonds")


@dataclass(frozen=True)
class ShiftFeatures:
    """Shift features of n crystals (arrays of shape (n,)) and what the flag's reasons need to name."""

    latent: np.ndarray  # embedding distance to the nearest training crystal / the model's 97.5th pct of valid
    disagreement: np.ndarray  # ensemble disagreement / the model's 97.5th pct of valid
    rarity: np.ndarray  # training crystals holding the crystal's rarest element (0: unseen)
    composition: np.ndarray  # L1 distance of atom fractions to the nearest training composition (0..2)
    environment: np.ndarray  # training crystals holding the crystal's rarest local environment
    rarest_element: list = field(default_factory=list)
    rarest_environment: list = field(default_factory=list)
    unseen_elements: list = field(default_factory=list)
    #: share of the sites whose nearest shell holds an element pair no training crystal has (NaN: not known)
    bond_novelty: np.ndarray | None = None
    novel_bonds: list = field(default_factory=list)  # per crystal, those pairs ("Li–Te", …)

    def __post_init__(self):
        if self.bond_novelty is None:  # features of a calibration file without bond counts
            object.__setattr__(self, "bond_novelty", np.full(len(self.latent), np.nan))
        if not self.novel_bonds:
            object.__setattr__(self, "novel_bonds", [[] for _ in range(len(self.latent))])

    def __len__(self):
        return len(self.latent)

    def take(self, idx) -> ShiftFeatures:
        idx = np.asarray(idx)
        pick = (lambda v: [v[k] for k in idx]) if idx.dtype != bool else (lambda v: [x for x, m in zip(v, idx) if m])
        return ShiftFeatures(**{k: getattr(self, k)[idx] for k in _ARRAYS}, **{k: pick(getattr(self, k)) for k in _LISTS})

    @staticmethod
    def concat(parts) -> ShiftFeatures:
        parts = list(parts)
        arr = {k: np.concatenate([getattr(p, k) for p in parts]) for k in _ARRAYS}
        lst = {k: [x for p in parts for x in getattr(p, k)] for k in _LISTS}
        return ShiftFeatures(**arr, **lst)

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else list(v)) for k, v in self.__dict__.items()}

    @staticmethod
    def from_dict(d) -> ShiftFeatures:
        return ShiftFeatures(**{k: (np.asarray(v, float) if k in _ARRAYS else list(v)) for k, v in d.items()})


def shift_features(structures, latent_distance, disagreement, ood: dict, stats: dict | None) -> ShiftFeatures:
    """Shift features of ``structures`` (see :class:`ShiftFeatures`).

    ``latent_distance`` and ``disagreement`` are the predictor's raw measures, ``ood`` the model's thresholds
    (``distance_threshold``, ``disagreement_threshold``). Without ``stats`` (a model without a calibration file) the
    element, composition and environment features are NaN.
    """
    n = len(structures)
    lat = np.asarray(latent_distance, float) / float(ood["distance_threshold"])
    dis = np.asarray(disagreement, float) / float(ood["disagreement_threshold"])
    rar, comp, env, bond = (np.full(n, np.nan) for _ in range(4))
    rel, renv, unseen, novel = [""] * n, [""] * n, [[] for _ in range(n)], [[] for _ in range(n)]
    if stats is not None:
        ec, vc, bc = stats["element_counts"], stats["environment_counts"], stats.get("bond_counts")
        index = _composition_index(stats)
        for k, s in enumerate(structures):
            atoms = _as_atoms(s)
            shells = _nearest_shells(atoms)
            els = sorted(set(_symbols(s)))
            counts = {e: int(ec.get(e, 0)) for e in els}
            rel[k] = min(els, key=lambda e: (counts[e], e))
            rar[k] = counts[rel[k]]
            unseen[k] = [e for e in els if counts[e] == 0]
            keys = set(environment_keys(atoms, shells))
            kc = {key: int(vc.get(key, 0)) for key in keys}
            renv[k] = min(keys, key=lambda x: (kc[x], x))
            env[k] = kc[renv[k]]
            comp[k] = index.distance(_fractions(s))
            if bc is not None:  # calibration files before the bond counts leave it NaN
                sites = bond_keys(atoms, shells)
                new = [{key for key in site if int(bc.get(key, 0)) == 0} for site in sites]
                bond[k] = float(np.mean([bool(x) for x in new])) if sites else 0.0
                novel[k] = sorted({"–".join(sorted(key.split("|"))) for x in new for key in x})
    return ShiftFeatures(lat, dis, rar, comp, env, rel, renv, unseen, bond, novel)


# ---- the difficulty score and the conformal tables ---------------------------------------------------------------

#: how each feature enters the difficulty score (every term grows away from the training data)
TERMS = {
    "latent": lambda f: f.latent,
    "disagreement": lambda f: f.disagreement,
    "rarity": lambda f: 1.0 / np.sqrt(1.0 + f.rarity),
    "composition": lambda f: f.composition,
    "environment": lambda f: 1.0 / np.sqrt(1.0 + f.environment),
}


def conformal_factor(ratios, coverage: float = 0.9, weights=None) -> float:
    """The factor on the std that makes ``coverage`` of ``ratios`` (|error| / std) fall inside ±z₉₀·factor·std.

    Split-conformal: the ⌈(n + 1)·coverage⌉-th smallest ratio over z₉₀ (so a new exchangeable point is covered with
    probability ≥ coverage); 1.0 when there are no ratios. With ``weights`` (e.g. 1 / number of DOS bins of the
    point's crystal, so that every crystal counts once) n is the sum of the weights and the rank is taken on
    their running sum.
    """
    r = np.asarray(ratios, float)
    w = np.ones(len(r)) if weights is None else np.asarray(weights, float)
    ok = np.isfinite(r)
    r, w = r[ok], w[ok]
    if not len(r):
        return 1.0
    order = np.argsort(r, kind="stable")
    r, cum = r[order], np.cumsum(w[order])
    k = min(int(np.searchsorted(cum, coverage * (cum[-1] + 1.0) - 1e-9)), len(r) - 1)
    return float(r[k] / Z90)



@dataclass(frozen=True)
class FloorCalibration:
    """Calibrated 1σ of a tensor prediction from its ensemble std: σ = factor[group] · √(std² + floor²).

    An ensemble of a few members agrees where it is confidently wrong as often as where it is right: its std alone
    covers the small-spread components too rarely and the large-spread ones too often. The ``floor`` (the
    quantity's own unit, e.g. e for Born charges) is the error the ensemble cannot see; it is chosen so that the
    coverage is the same across spread quartiles, then ``factor`` per group (0: in distribution, 1: flagged; the
    flagged factor is never below the other) is the split-conformal 90 % factor (:func:`conformal_factor`).
    """

    floor: float
    factors: tuple  # (in distribution, flagged)

    def sigma(self, std, flagged: bool = False) -> np.ndarray:
        """Calibrated 1σ, same shape and unit as ``std``."""
        return self.factors[int(bool(flagged))] * np.sqrt(np.asarray(std, float) ** 2 + self.floor ** 2)

    def to_dict(self) -> dict:
        return {"floor": float(self.floor), "factors": [float(f) for f in self.factors]}

    @staticmethod
    def from_dict(d) -> FloorCalibration:
        return FloorCalibration(float(d["floor"]), tuple(float(f) for f in d["factors"]))


def fit_floor_calibration(errors, stds, weights, flagged, floors, coverage: float = 0.9) -> FloorCalibration:
    """Fit a :class:`FloorCalibration` on components: |error|, ensemble std, weight (e.g. 1 / components of the
    component's crystal, so that each crystal counts once) and the crystal's flag, 1D arrays of one length.

    The floor is the one of ``floors`` whose calibrated coverage varies least (weighted std) over the four quartiles
    of the ensemble std; the factors are conformal per group, the flagged one at least the in-distribution one (the
    in-distribution factor alone when fewer than 10 flagged crystals' worth of weight)."""
    e, sd, w = (np.asarray(a, float) for a in (errors, stds, weights))
    fl = np.asarray(flagged, bool)
    edges = np.quantile(sd, [0.25, 0.5, 0.75])
    q = np.searchsorted(edges, sd)
    best = None
    for f0 in floors:
        r = e / np.sqrt(sd ** 2 + f0 ** 2)
        k = conformal_factor(r, coverage, w)
        hit = (r <= Z90 * k).astype(float)
        cov = [np.average(hit[q == i], weights=w[q == i]) for i in range(4) if w[q == i].sum() > 0]
        spread = float(np.std(cov))
        if best is None or spread < best[0] - 1e-12:
            best = (spread, float(f0))
    f0 = best[1]
    r = e / np.sqrt(sd ** 2 + f0 ** 2)
    k_in = conformal_factor(r[~fl], coverage, w[~fl])
    k_fl = conformal_factor(r[fl], coverage, w[fl]) if w[fl].sum() >= 10 else k_in
    return FloorCalibration(f0, (k_in, max(k_in, k_fl)))

@dataclass
class AdaptiveCalibration:
    """Multiplicative factors on the calibrated std, per quantity, growing with the difficulty score.

    ``u = score(features) = Σ weights[t] · TERMS[t](features)``; the factor of quantity q is
    ``exp(slope · (u − center)) · factors[q][b]`` where bin b holds scores in ``[edges[b-1], edges[b])`` and
    ``factors[q]`` is non-decreasing in b. With ``slope = 0`` the factor is piecewise constant (a score beyond the
    last edge keeps the last bin's); with ``slope = 1`` and weights fitted to log(|error| / std) (:func:`fit_weights`)
    ``exp(u)`` is the predicted scale of the error, and the bins correct it (normalised conformal prediction): it
    keeps growing beyond the data it was fitted on. With ``flag_rules`` the bins are not score ranges but the flag:
    bin 0 in distribution, bin 1 flagged by :func:`flag` under those rules (Mondrian conformal by flag).
    """

    weights: dict
    edges: np.ndarray
    factors: dict
    counts: list = field(default_factory=list)
    slope: float = 0.0
    center: float = 0.0
    flag_rules: dict | None = None
    #: no factor below this: 1.0 never narrows the model's own interval (set on its valid split)
    floor: float = 0.0
    #: no factor above this: an interval wider than a few times the model's own says no more than the flag does,
    #: and a pool with one badly predicted cluster (hydrides' H stretches where every member predicts ~0 states)
    #: would otherwise make it hundreds of times wider
    ceiling: float = float("inf")

    def score(self, features: ShiftFeatures) -> np.ndarray:
        u = np.zeros(len(features))
        for t, w in self.weights.items():
            x = TERMS[t](features)
            u = u + w * np.where(np.isfinite(x), x, 0.0)  # a model without training stats: that term is 0
        return u

    def bin_of(self, u) -> np.ndarray:
        return np.searchsorted(self.edges, np.asarray(u, float), side="right")

    def trend(self, u) -> np.ndarray:
        return np.exp(self.slope * (np.asarray(u, float) - self.center))

    def bins(self, features: ShiftFeatures | None, u, flagged=None) -> np.ndarray:
        if self.flag_rules is None:
            return self.bin_of(u)
        if flagged is None:
            flagged = ~flag(features, FlagRules(**self.flag_rules))[0]
        return np.asarray(flagged, bool).astype(int)

    def factor(self, quantity: str, features: ShiftFeatures | None = None, u=None, flagged=None) -> np.ndarray:
        """The factor of every crystal (from ``features``, or from its score ``u`` and, when the bins are the flag,
        ``flagged``)."""
        u = self.score(features) if u is None else np.asarray(u, float)
        f = np.asarray(self.factors[quantity], float)[self.bins(features, u, flagged)] * self.trend(u)
        return np.clip(f, self.floor, self.ceiling)

    def to_dict(self) -> dict:
        return {
            "weights": dict(self.weights),
            "edges": np.asarray(self.edges, float).tolist(),
            "factors": {q: np.asarray(v, float).tolist() for q, v in self.factors.items()},
            "counts": list(self.counts),
            "slope": float(self.slope),
            "center": float(self.center),
            "flag_rules": self.flag_rules,
            "floor": float(self.floor),
            "ceiling": float(self.ceiling) if np.isfinite(self.ceiling) else None,
        }

    @staticmethod
    def from_dict(d) -> AdaptiveCalibration:
        return AdaptiveCalibration(
            dict(d["weights"]), np.asarray(d["edges"], float), {q: list(v) for q, v in d["factors"].items()},
            list(d.get("counts", [])), float(d.get("slope", 0.0)), float(d.get("center", 0.0)),
            d.get("flag_rules"), float(d.get("floor", 0.0)),
            float("inf") if d.get("ceiling") is None else float(d["ceiling"]),
        )


def fit_adaptive(
    features: ShiftFeatures,
    ratios: dict,
    weights: dict,
    nbins: int = 4,
    coverage: float = 0.9,
    min_crystals: int = 30,
    slope: float = 0.0,
    flag_rules: FlagRules | None = None,
    centers=None,
) -> AdaptiveCalibration:
    """Conformal factors per bin of the difficulty score, fitted on held-out crystals.

    ``ratios[q]`` is ``(r, crystal)``: |error| / calibrated std of every point of quantity q and the index (into
    ``features``) of the crystal it belongs to (one point per crystal for Cv, S, F; many for the DOS). Bin edges
    are quantiles of the crystals' scores, merged until each bin holds ``min_crystals``; the factor of a bin is
    :func:`conformal_factor` of its points (each crystal weighing 1 in all), then made non-decreasing along the score (a crystal further out
    never gets a narrower interval than one closer in). With ``slope`` the ratios are first divided by
    ``exp(slope · (u − median u))`` (see :class:`AdaptiveCalibration`). With ``flag_rules`` the two bins are the
    crystals in distribution and the flagged ones (``nbins`` is not used). ``centers`` (per crystal) is the score
    of a typical in-distribution crystal of the model that predicted it (the median over its valid crystals): the
    trend is then relative to each model's own data, and the result's ``center`` must be set to the median score of
    the valid crystals of the model it is applied to.
    """
    cal = AdaptiveCalibration(dict(weights), np.zeros(0), {}, slope=float(slope),
                              flag_rules=None if flag_rules is None else flag_rules.to_dict())
    u = cal.score(features)
    cal.center = float(np.median(u)) if len(u) else 0.0
    trend = cal.trend(u) if centers is None else np.exp(cal.slope * (u - np.asarray(centers, float)))
    n = len(u)
    if flag_rules is None:
        nb = max(1, min(nbins, n // max(min_crystals, 1)))
        cal.edges = np.unique(np.quantile(u, np.arange(1, nb) / nb)) if nb > 1 else np.zeros(0)
    b = cal.bins(features, u)
    nbin = 2 if flag_rules is not None else len(cal.edges) + 1
    cal.counts = [int(np.sum(b == k)) for k in range(nbin)]
    for q, (r, crystal) in ratios.items():
        r, crystal = np.asarray(r, float), np.asarray(crystal, int)
        r = r / trend[crystal]
        w = 1.0 / np.bincount(crystal, minlength=n)[crystal]  # every crystal counts once (the DOS has many bins)
        fb = [conformal_factor(r[b[crystal] == k], coverage, w[b[crystal] == k]) for k in range(nbin)]
        cal.factors[q] = np.maximum.accumulate(np.asarray(fb)).tolist()
    return cal


# ---- the flag ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlagRules:
    """When a crystal is out of distribution (each rule is one reason).

    ``rare_element``: its rarest element is in fewer training crystals than this; ``rare_environment``: its rarest
    local environment likewise; ``latent`` and ``disagreement``: above this multiple of the model's 97.5th
    percentile of valid (1.0 is the flag of the model file alone); ``bond_share``: at least this share of the sites
    has a nearest-shell element pair no training crystal has (None: the rule is off, as in the standard flag).
    """

    rare_element: int = 10
    rare_environment: int = 1
    latent: float = 1.0
    disagreement: float = 1.0
    bond_share: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def sensitive(self) -> FlagRules:
        """These rules plus the bond rule at :data:`SENSITIVE_BOND_SHARE` (``atomvib predict --ood sensitive``)."""
        return replace(self, bond_share=SENSITIVE_BOND_SHARE)


#: the bond rule of the sensitive flag: half the sites with a contact never seen in training. On the
#: leave-cluster-out models it lifts the recall of the worst 10 % of rock salts from 42 to 67 % and of heavy
#: chalcogenides from 42 to 92 %, at 15 % false alarms in distribution instead of 10 % (scripts/flag_study.py)
SENSITIVE_BOND_SHARE = 0.5
#: ``ood=`` of the predictor: the standard flag (≤ 10 % false alarms) or the sensitive one
FLAG_LEVELS = ("standard", "sensitive")


def flag(features: ShiftFeatures, rules: FlagRules = FlagRules()) -> tuple[np.ndarray, list[str]]:
    """``(in_distribution, reason)`` of every crystal: reason is ``""`` in distribution, else every rule that fired,
    ``"; "``-separated, e.g. ``"element rare in training: Te (9 training crystals); far in latent space (1.4× the
    97.5th percentile of valid)"``."""
    n = len(features)
    ok = np.ones(n, bool)
    reasons = []
    for k in range(n):
        why = []
        unseen = features.unseen_elements[k] if features.unseen_elements else []
        if unseen:
            why.append(f"unseen element: {', '.join(unseen)} (never in training)")
        elif np.isfinite(features.rarity[k]) and features.rarity[k] < rules.rare_element:
            c = int(features.rarity[k])
            why.append(f"element rare in training: {features.rarest_element[k]} ({c} training crystal{'s' * (c != 1)})")
        if not unseen and np.isfinite(features.environment[k]) and features.environment[k] < rules.rare_environment:
            el, nn = features.rarest_environment[k].split("|")
            c = int(features.environment[k])
            seen = "in no training crystal" if c == 0 else f"in {c} training crystal{'s' * (c != 1)}"
            why.append(f"unusual coordination: {el} with {'an' if nn[0] in 'HO' else 'a'} {nn} nearest neighbour ({seen})")
        if features.latent[k] > rules.latent:
            why.append(f"far in latent space ({features.latent[k]:.2f}× the 97.5th percentile of valid)")
        if features.disagreement[k] > rules.disagreement:
            why.append(f"ensemble members disagree ({features.disagreement[k]:.2f}× the 97.5th percentile of valid)")
        b = features.bond_novelty[k]
        if rules.bond_share is not None and np.isfinite(b) and b >= rules.bond_share:
            pairs = features.novel_bonds[k]
            shown = ", ".join(pairs[:4]) + (f" and {len(pairs) - 4} more" if len(pairs) > 4 else "")
            why.append(f"unusual bonding: {shown} contacts (in no training crystal) on {100 * b:.0f} % of the sites")
        ok[k] = not why
        reasons.append("; ".join(why))
    return ok, reasons


def fit_weights(features: ShiftFeatures, target, terms) -> dict:
    """Non-negative weights of ``terms`` (keys of :data:`TERMS`) for the difficulty score: least squares of
    ``target`` (per crystal, log of |error| / calibrated std) on the centred terms, each weight ≥ 0 (every term may
    only widen the interval away from the training data). Crystals with a non-finite target or term are left out."""
    from scipy.optimize import nnls

    x = np.column_stack([TERMS[t](features) for t in terms])
    y = np.asarray(target, float)
    ok = np.isfinite(y) & np.isfinite(x).all(1)
    x, y = x[ok], y[ok]
    w, _ = nnls(x - x.mean(0), y - y.mean())
    return {t: float(v) for t, v in zip(terms, w)}


# ---- the calibration file ----------------------------------------------------------------------------------------


def shift_calibration_dict(blob_ood: dict, stats: dict, adaptive: AdaptiveCalibration, rules: FlagRules,
                           provenance: dict | None = None) -> dict:
    """The content of ``calibration.json`` (written beside a ``model.pt``; JSON, no code)."""
    return {
        "format": CALIBRATION_FORMAT,
        "model": {k: float(blob_ood[k]) for k in ("distance_threshold", "disagreement_threshold")},
        "adaptive": adaptive.to_dict(),
        "flag_rules": rules.to_dict(),
        "training": {k: v for k, v in stats.items() if k != "composition_index"},
        "provenance": provenance or {},
    }


def load_shift_calibration(path, blob: dict) -> dict | None:
    """``calibration.json`` beside a model file as ``{"stats", "adaptive", "rules"}``; None when there is none.

    A file written for another model (its OOD thresholds differ from ``blob``'s) or in another format is ignored
    with a warning: the model's own scale factors and thresholds are used then.
    """
    p = Path(path)
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text())
        if d.get("format") != CALIBRATION_FORMAT:
            raise ValueError(f"format {d.get('format')!r}, not {CALIBRATION_FORMAT!r}")
        same = all(np.isclose(float(d["model"][k]), float(blob["ood"][k]), rtol=1e-9, atol=0.0)
                   for k in ("distance_threshold", "disagreement_threshold"))
        if not same:
            raise ValueError("it was fitted for another model (its OOD thresholds differ)")
        stats = dict(d["training"])
        stats["composition_index"] = _CompositionIndex(stats["compositions"])
        return {"stats": stats, "adaptive": AdaptiveCalibration.from_dict(d["adaptive"]),
                "rules": FlagRules(**d["flag_rules"])}
    except (ValueError, KeyError, TypeError) as exc:
        warnings.warn(f"{p}: not used ({exc}); the model's own intervals and flag apply", stacklevel=2)
        return None
