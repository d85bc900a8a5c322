"""Predicting the phonon DOS (and Cv, S, F) of crystals with the shipped deep ensemble.

The network is ours (:mod:`atomvib.learn.model`, e3nn inside); thermal properties come from
:func:`atomvib.harmonic.thermal.thermal_from_dos`, the same code the phonon workflow uses, so a
predicted DOS and a computed one give thermal numbers on exactly the same footing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..results import Result
from ..structure import Structure
from .calibration import FLAG_LEVELS, QUANTITIES, FlagRules, flag, load_shift_calibration, shift_features
from .ensemble import Z90, disagreement, nn_distance, thermal_kernels

__all__ = ["Z90", "DosPrediction", "Predictor", "load_model", "predict", "disagreement", "save_model"]

#: the shipped model
DEFAULT_MODEL = Path(__file__).parent / "weights" / "model.pt"
#: the model format written now: plain dicts, lists, str, int, float, bool, None and torch tensors only, so a model
#: file loads with ``torch.load(weights_only=True)`` (no pickle of arbitrary objects, no code run by loading it)
from .modelfile import LEGACY_MODEL_FORMAT, MODEL_FORMAT, load_torch_file, save_model  # noqa: E402,F401

#: format 1 (atomvib ≤ the DOS predictor v3) held numpy arrays: it loads only with pickle (--trust-model-file)
#: the model's arrays that are numpy in memory and torch tensors on disk (bit for bit the same numbers)
_ARRAY_KEYS = ("train_embedding", "embedding_mean", "embedding_std")
#: the flag of a model without a calibration file: embedding distance or disagreement above the model's thresholds
MODEL_FILE_RULES = FlagRules(rare_element=0, rare_environment=0, latent=1.0, disagreement=1.0)
#: temperatures of the thermal output, K
DEFAULT_TEMPERATURES_K = tuple(float(t) for t in np.arange(0, 1001, 10))


@dataclass(frozen=True, eq=False)
class DosPrediction(Result):
    """Predicted DOS of one crystal (ensemble mean ± calibrated std).

    Attributes
    ----------
    input : str
    structure : Structure
    frequencies_cm1 : ndarray, shape (nbins,), cm^-1 — bin centres
    dos : ndarray, shape (nbins,), states per cm^-1 per cell; integrates (Σ dos · Δν) to 3·natoms
    dos_std : ndarray, shape (nbins,), states per cm^-1 per cell — calibrated ensemble std
    temperatures_k : ndarray, shape (nt,), K
    heat_capacity_j_per_k_per_mol, entropy_j_per_k_per_mol : ndarray, shape (nt,), J/K/mol of the input cell
    free_energy_kj_per_mol : ndarray, shape (nt,), kJ/mol of the input cell (includes zero-point energy)
    ..._std : the same shapes, calibrated ensemble std
    in_distribution : bool
        False when the crystal is far from the training data: run ``atomvib phonons`` instead. With the model's
        calibration file (:mod:`atomvib.learn.calibration`): an element rare in training, a local environment
        no training crystal has, embedding distance or ensemble disagreement above the thresholds set on
        valid; without it, only the last two.
    ood_distance, ood_disagreement : float
    partial_dos : dict element -> ndarray (nbins,), states per cm^-1 per cell
        Ensemble-mean contribution of each element's atoms (each atom carries exactly 3 states);
        sums to ``dos``. Input of :mod:`atomvib.learn.spectra` (neutron-weighted DOS, INS).
    ood_reason : str
        Why ``in_distribution`` is False (every rule that fired, ``"; "``-separated); ``""`` when in distribution.
    ood_flag : str
        Which flag set ``in_distribution``: ``"standard"`` (≤ 10 % false alarms in distribution) or
        ``"sensitive"`` (also unusual bonding; more of a new chemistry's worst crystals caught, 15 % false alarms).
    """

    input: str
    structure: Structure
    frequencies_cm1: np.ndarray
    dos: np.ndarray
    dos_std: np.ndarray
    temperatures_k: np.ndarray
    heat_capacity_j_per_k_per_mol: np.ndarray
    heat_capacity_j_per_k_per_mol_std: np.ndarray
    entropy_j_per_k_per_mol: np.ndarray
    entropy_j_per_k_per_mol_std: np.ndarray
    free_energy_kj_per_mol: np.ndarray
    free_energy_kj_per_mol_std: np.ndarray
    in_distribution: bool
    ood_distance: float
    ood_disagreement: float
    partial_dos: dict | None = None
    ood_reason: str = ""
    ood_flag: str = "standard"

    @property
    def formula_units(self) -> int:
        return self.structure.formula_units

    def _thermal_dict(self) -> dict:
        """Thermal properties per mole of the input cell and per formula unit, each basis named."""
        z = self.formula_units or 1
        s = self.structure
        keys = {
            "heat_capacity_J_per_K_per_mol": self.heat_capacity_j_per_k_per_mol,
            "heat_capacity_J_per_K_per_mol_std": self.heat_capacity_j_per_k_per_mol_std,
            "entropy_J_per_K_per_mol": self.entropy_j_per_k_per_mol,
            "entropy_J_per_K_per_mol_std": self.entropy_j_per_k_per_mol_std,
            "free_energy_kJ_per_mol": self.free_energy_kj_per_mol,
            "free_energy_kJ_per_mol_std": self.free_energy_kj_per_mol_std,
        }
        return {
            "basis": f"per mole of {s.cell_formula} (the input cell, {z} formula unit{'s' if z != 1 else ''})",
            "temperature_K": self.temperatures_k.tolist(),
            **{k: np.asarray(v).tolist() for k, v in keys.items()},
            "per_formula_unit": {
                "basis": f"per mole of {s.formula} (formula unit)",
                **{k: (np.asarray(v) / z).tolist() for k, v in keys.items()},
            },
        }

    def summary(self) -> dict:
        """What ``summary.json`` of a saved prediction says (the JSON line without the DOS arrays)."""
        d = self.to_dict()
        for k in ("frequencies_cm1", "dos", "dos_std"):
            d.pop(k)
        return d

    def to_dict(self) -> dict:
        """The JSON line of ``atomvib predict``."""
        return {
            "input": self.input,
            "formula": self.structure.formula,
            "formula_units": self.formula_units,
            "natoms": self.structure.natoms,
            "frequencies_cm1": np.round(self.frequencies_cm1, 6).tolist(),
            "dos": self.dos.tolist(),
            "dos_std": self.dos_std.tolist(),
            "dos_unit": "states per cm^-1 per cell",
            "thermal": self._thermal_dict(),
            "in_distribution": bool(self.in_distribution),
            "ood_distance": self.ood_distance,
            "ood_disagreement": self.ood_disagreement,
            "ood_reason": self.ood_reason,
            "ood_flag": self.ood_flag,
        }


def _fast_kernels(nets) -> str:
    """Rewrite the members' e3nn kernels (engines/graph_rewrite.py) where the versions are tested and the
    rewritten first member predicts what the stock one does on a probe cell; else keep stock, warn once.

    Returns the kernel path used. The probe (2-atom Si, one member, both paths) costs ~0.2 s, ~0.9 s on first
    use of a machine (the compiled kernels load then instead of at the first prediction).
    """
    import copy

    from ase.build import bulk

    from ..engines.graph_rewrite import optimise_model
    from ..engines.guards import version_problems, warn_fallback
    from .data import build_graph
    from .model import predict_states

    path = "fused" if not version_problems("fused") else "rewritten"
    problems = version_problems(path)
    if problems:
        warn_fallback("DOS predictor", path, problems)
        return "stock"
    graph = build_graph(Structure.from_ase(bulk("Si", "diamond", a=5.43)))
    stock = copy.deepcopy(nets[0])
    optimise_model(nets[0], fused=path == "fused")
    ref, fast = predict_states(stock, [graph]), predict_states(nets[0], [graph])
    diff = float(np.abs(fast - ref).max() / max(np.abs(ref).max(), 1e-12))
    if diff > 1e-4:
        nets[0] = stock
        warn_fallback("DOS predictor", path, [f"the probe DOS differs by {diff:.1e} (relative) from the stock model"])
        return "stock"
    for net in nets[1:]:
        optimise_model(net, fused=path == "fused")  # e3nn's kernels without dead code (same arithmetic)
    return path


class Predictor:
    """A loaded ensemble. Load once (:func:`load_model`), call :meth:`predict` many times."""

    def __init__(self, blob: dict, path: str = ""):
        import torch

        from .data import DosGrid
        from .model import DosNet

        if not isinstance(blob, dict) or blob.get("format") not in (MODEL_FORMAT, LEGACY_MODEL_FORMAT):
            raise InputError(
                f"{path}: not an atomvib DOS model", fix="give a model.pt written by `atomvib train`"
            )
        blob = {**blob, **{k: _as_numpy(blob[k]) for k in _ARRAY_KEYS if k in blob}}
        self.path = str(path)
        self.blob = blob
        self.grid = DosGrid(**blob["grid"])
        self.cutoff_a = blob["cutoff_a"]
        self.elements = set(blob["elements"])
        self.nets = []
        for m in blob["members"]:
            net = DosNet(**m["config"])
            net.load_state_dict(m["state_dict"])
            net.eval()
            self.nets.append(net)
        #: which code path the interactions run: 'fused', 'rewritten' or 'stock' (see engines/guards.py)
        self.kernel_path = _fast_kernels(self.nets)
        self.calibration = blob["calibration"]
        self.ood = blob["ood"]
        #: the adaptive intervals and the flag's rules (calibration.json beside the model file), or None
        self.shift = load_shift_calibration(Path(path).with_name("calibration.json"), blob) if path else None
        self._torch = torch

    @property
    def n_members(self) -> int:
        return len(self.nets)

    def flag_rules(self, ood: str = "standard") -> FlagRules:
        """The rules of the ``ood`` flag (``"standard"`` or ``"sensitive"``) for this model."""
        if ood not in FLAG_LEVELS:
            raise InputError(f"unknown out-of-distribution flag {ood!r}", fix=f"use one of {', '.join(FLAG_LEVELS)}")
        if not self.shift:
            if ood == "sensitive":
                raise InputError(
                    f"{self.path or 'this model'}: the sensitive flag needs the model's calibration.json (training "
                    "element, environment and bond counts), which this model file has not",
                    fix="use the shipped model, or the standard flag (--ood standard)",
                )
            return MODEL_FILE_RULES
        rules = self.shift["rules"]
        if ood == "sensitive":
            if "bond_counts" not in self.shift["stats"]:
                raise InputError(
                    f"{self.path}: its calibration.json has no training bond counts (written before the sensitive "
                    "flag)", fix="re-run `python scripts/calibrate_shift.py ship`, or use --ood standard")
            return rules.sensitive()
        return rules

    def check(self, structure: Structure, name: str = "") -> None:
        """Raise InputError for inputs the model cannot be used on (molecules, unseen elements)."""
        from ase.data import chemical_symbols

        if structure.is_molecule:
            raise InputError(
                f"{name or structure.formula}: a molecule (no periodic cell)",
                fix="the DOS predictor is for crystals; use `atomvib phonons` for molecules",
            )
        unseen = sorted({int(z) for z in structure.numbers} - self.elements)
        if unseen:
            names = ", ".join(chemical_symbols[z] for z in unseen)
            raise InputError(
                f"{name or structure.formula}: element(s) {names} never seen in training",
                fix="run `atomvib phonons` for this structure",
            )

    @lru_cache(maxsize=8)  # noqa: B019 (one predictor per model file, cached itself)
    def _kernels(self, temperatures_k: tuple):
        """Cv, S (J/K/mol) and F (kJ/mol) of one state in each bin, each shape (nt, nbins); see
        :func:`atomvib.learn.ensemble.thermal_kernels`."""
        return thermal_kernels(self.grid.centers_cm1, temperatures_k)

    def raw_atoms(self, structures: list[Structure], batch_size: int = 64):
        """One pass of every member, keeping the atoms apart.

        Returns ``states`` (members, n, nbins) per cell, ``embedding`` (n, d) of member 0 (the mean
        of its atom features, as :func:`~atomvib.learn.model.predict_states` returns it) and ``atom_states`` (Σ natoms, nbins): ensemble-mean states per bin of every
        atom (3 per atom). The arithmetic is that of :meth:`DosNet.forward` (softplus, normalise to
        3, sum over the cell), redone here because the partial DOS needs the atoms before the sum.
        """
        from .data import build_graph
        from .model import collate

        torch = self._torch
        graphs = [build_graph(s, self.cutoff_a) for s in structures]
        counts = np.array([len(g.numbers) for g in graphs])
        owner = np.repeat(np.arange(len(graphs)), counts)
        states, atom_sum, emb = [], None, None
        with torch.no_grad():
            for m, net in enumerate(self.nets):
                parts, feats = [], []
                for k in range(0, len(graphs), batch_size):
                    h = net.atom_features(collate(graphs[k : k + batch_size]))
                    parts.append(net.atom_spectra(h).numpy().astype(float))
                    if m == 0:
                        feats.append(h.numpy().astype(float))
                a = np.concatenate(parts)
                cell = np.zeros((len(graphs), a.shape[1]))
                np.add.at(cell, owner, a)
                states.append(cell)
                atom_sum = a if atom_sum is None else atom_sum + a
                if m == 0:
                    f = np.concatenate(feats)
                    emb = np.zeros((len(graphs), f.shape[1]))
                    np.add.at(emb, owner, f)
                    emb /= counts[:, None]
        return np.stack(states), emb, atom_sum / self.n_members

    def predict(self, structures, names=None, temperatures_k=DEFAULT_TEMPERATURES_K,
                ood: str = "standard") -> list[DosPrediction]:
        """Predict every structure (all must pass :meth:`check`); ``ood``: ``"standard"`` or ``"sensitive"``
        flag (:data:`~atomvib.learn.calibration.FLAG_LEVELS`)."""
        rules = self.flag_rules(ood)
        structures = list(structures)
        names = names or [s.source or s.formula for s in structures]
        for s, n in zip(structures, names):
            self.check(s, n)
        if not structures:
            return []
        states, emb, atom_states = self.raw_atoms(structures)
        offsets = np.cumsum([0] + [s.natoms for s in structures])
        b = self.blob
        d_nn = nn_distance(
            (emb - b["embedding_mean"]) / b["embedding_std"], np.asarray(b["train_embedding"], float)
        )
        dis = disagreement(states) if self.n_members > 1 else np.zeros(len(structures))
        feats = shift_features(structures, d_nn, dis, self.ood, self.shift["stats"] if self.shift else None)
        ks, kc = self.calibration["dos_std_scale"], self.calibration["cv_std_scale"]
        ok, reasons = flag(feats, rules)
        if self.shift:  # intervals that widen with the difficulty score (fitted with the standard flag's groups)
            adaptive = self.shift["adaptive"]
            u = adaptive.score(feats)
            flagged = ~ok if ood == "standard" else ~flag(feats, self.shift["rules"])[0]
            fac = {q: adaptive.factor(q, feats, u=u, flagged=flagged) for q in QUANTITIES}
        else:  # the model file alone: its own scale factors and thresholds
            fac = {q: np.ones(len(structures)) for q in QUANTITIES}
        w = self.grid.width_cm1
        f_cm1 = self.grid.centers_cm1
        t = np.asarray(temperatures_k, float)
        kcv, ks_, kf = self._kernels(tuple(t))
        multi = self.n_members > 1
        out = []
        for i, s in enumerate(structures):
            st = states[:, i, :]  # (members, nbins) states per bin
            mean = st.mean(0)
            cv, S, F = st @ kcv.T, st @ ks_.T, st @ kf.T  # (members, nt)

            from ase.data import chemical_symbols

            per_atom = atom_states[offsets[i] : offsets[i + 1]]
            partial: dict = {}
            for z, row in zip(s.numbers, per_atom):
                el = chemical_symbols[int(z)]
                partial[el] = partial.get(el, 0.0) + row / w

            def sd(a, q, i=i):
                return a.std(0, ddof=1) * (kc * fac[q][i]) if multi else np.zeros(a.shape[1])

            out.append(
                DosPrediction(
                    input=names[i],
                    structure=s,
                    frequencies_cm1=f_cm1,
                    dos=mean / w,
                    dos_std=(st.std(0, ddof=1) * (ks * fac["dos"][i]) / w) if multi else np.zeros_like(mean),
                    temperatures_k=t,
                    heat_capacity_j_per_k_per_mol=mean @ kcv.T,
                    heat_capacity_j_per_k_per_mol_std=sd(cv, "cv"),
                    entropy_j_per_k_per_mol=mean @ ks_.T,
                    entropy_j_per_k_per_mol_std=sd(S, "s"),
                    free_energy_kj_per_mol=mean @ kf.T,
                    free_energy_kj_per_mol_std=sd(F, "f"),
                    in_distribution=bool(ok[i]),
                    ood_distance=float(d_nn[i]),
                    ood_disagreement=float(dis[i]),
                    partial_dos=partial,
                    ood_reason=reasons[i],
                    ood_flag=ood,
                )
            )
        return out


def _load_cached(path: str, trust_model_file: bool = False) -> Predictor:
    """The predictor of ``path``, loaded once per version of the file (cached on path, size and mtime)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such model file", fix="train one with `atomvib train` or omit --model")
    st = p.stat()
    return _load_file(path, st.st_size, st.st_mtime_ns, bool(trust_model_file))


@lru_cache(maxsize=4)
def _load_file(path: str, size: int, mtime_ns: int, trust_model_file: bool = False) -> Predictor:
    blob = load_torch_file(path, trust_model_file=trust_model_file, what="model")
    return Predictor(blob, path)


def _as_numpy(x):
    """A model array as numpy: tensors (format 2) converted without a copy of their bits; numpy (format 1) kept."""
    return x.numpy() if hasattr(x, "numpy") and not isinstance(x, np.ndarray) else np.asarray(x)


def load_model(model=None, trust_model_file: bool = False) -> Predictor:
    """The shipped model (``model=None``), a path to a ``model.pt`` / its directory, or a Predictor.

    Model files are read with ``torch.load(weights_only=True)``; one that needs pickle (a model written by an
    older atomvib) is refused unless ``trust_model_file=True``.
    """
    if isinstance(model, Predictor):
        return model
    p = Path(model) if model is not None else DEFAULT_MODEL
    if p.is_dir():
        p = p / "model.pt"
    return _load_cached(str(p.resolve()), trust_model_file)


def predict(structures, model=None, temperatures_k=DEFAULT_TEMPERATURES_K, ood: str = "standard") -> list[DosPrediction]:
    """Predict the phonon DOS, Cv, S and F of crystals.

    Parameters
    ----------
    structures : Structure, ase.Atoms, path, or a list of them
    model : None (shipped model), path, or :class:`Predictor`
    ood : ``"standard"`` (the default flag: ≤ 10 % false alarms in distribution) or ``"sensitive"`` (also flags
        unusual bonding, for screening a chemistry unlike the training set; docs/predictor.md)

    Raises
    ------
    InputError
        A molecule, or an element never seen in training (use ``atomvib phonons`` instead).
    """
    from ..structure import read_structure

    if not isinstance(structures, (list, tuple)):
        structures = [structures]
    items, names = [], []
    for s in structures:
        if isinstance(s, Structure):
            items.append(s)
            names.append(s.source or s.formula)
        elif isinstance(s, (str, Path)):
            items.append(read_structure(s))
            names.append(str(s))
        else:  # ase.Atoms
            st = Structure.from_ase(s)
            items.append(st)
            names.append(st.formula)
    return load_model(model).predict(items, names, temperatures_k, ood=ood)
