"""Universal machine-learning interatomic potentials: SevenNet, CHGNet, MACE.

SevenNet-0 and CHGNet ship their weights inside their PyPI packages; MACE and other SevenNet models
are accepted as model files by path. Nothing is downloaded: a name that would need a download is
refused at once with the way to get the file.

Precision: SevenNet and CHGNet compute in float32 (SevenNet's e3nn kernels are compiled for the
dtype they were built with, so the model cannot simply be cast). Forces are returned as float64 and all
phonon algebra is float64. SevenNet-0's float32 forces are clean enough for 0.01 Å displacements
(Si optical mode stable to 0.01 THz over 0.003–0.06 Å, see docs/validation.md); CHGNet's are not,
which is why its frequencies drift with the amplitude. MACE runs in float64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import EngineError, EngineUnavailable
from ..runtime import configure_threads
from .base import Engine, EngineInfo, package_version

_BUNDLED_SEVENNET = {
    "7net-0": "SevenNet_0__11Jul2024",
    "sevennet-0": "SevenNet_0__11Jul2024",
    "7net-0_11july2024": "SevenNet_0__11Jul2024",
    "7net-l3i5": "SevenNet_l3i5",
    "sevennet-l3i5": "SevenNet_l3i5",
}


def _torch_device(device: str | None) -> str:
    import torch

    if device and device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


class SevenNetEngine(Engine):
    """SevenNet: ``sevennet`` (SevenNet-0, bundled), ``sevennet:7net-l3i5`` (bundled) or ``sevennet:PATH``."""

    molecular = False

    def __init__(self, model: str | None = None, device: str | None = None):
        super().__init__()
        self.model_arg = model or "7net-0"
        self.device = device
        key = self.model_arg.lower()
        if key in _BUNDLED_SEVENNET:
            self._model_id = _BUNDLED_SEVENNET[key]
            self._source = key
        else:
            p = Path(self.model_arg).expanduser()
            if not p.is_file():
                raise EngineUnavailable(
                    f"SevenNet model '{self.model_arg}' is neither a bundled model nor a file",
                    fix="use 'sevennet' (SevenNet-0, bundled) or download the checkpoint yourself and pass sevennet:/path/to/checkpoint.pth",
                )
            self._model_id = str(p.resolve())
            self._source = str(p.resolve())
        try:
            import sevenn  # noqa: F401
        except ImportError:
            raise EngineUnavailable("the 'sevenn' package is not installed", fix="pip install sevenn") from None

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(
            "sevennet",
            package_version("sevenn"),
            self._model_id,
            {"dtype": "float32"},
        )

    def _make_calculator(self):
        import warnings

        configure_threads()
        import torch
        from sevenn.calculator import SevenNetCalculator

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calc = SevenNetCalculator(self._source, device=_torch_device(self.device))
        self.elements = frozenset(_atomic_numbers(calc.type_map))
        return calc

    def check(self, structure) -> None:
        self.calculator()  # element coverage is known once the model is loaded
        super().check(structure)

    def evaluate(self, atoms_list, progress=None):
        """Forces without the ASE calculator layer (no per-call results dict, no stress copy):
        the graph is built in numpy and the model is called directly."""
        from sevenn import _keys as KEY
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph

        from .base import Evaluation

        calc = self.calculator()
        model, cutoff = calc.model, calc.cutoff
        device = next(model.parameters()).device
        out = []
        for atoms in atoms_list:
            data = AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(atoms, cutoff))
            data.to(device)
            res = model(data)
            forces = res[KEY.PRED_FORCE].detach().cpu().numpy().astype(np.float64)[: len(atoms)]
            energy = float(res[KEY.PRED_TOTAL_ENERGY].detach().cpu().item())
            out.append(Evaluation(energy=energy, forces=forces))
            if progress:
                progress(1)
        return out


def _atomic_numbers(type_map) -> list[int]:
    return [int(z) for z in type_map]


class CHGNetEngine(Engine):
    """CHGNet (version 0.3.0 weights, bundled in the ``chgnet`` package). float32 only."""

    molecular = False
    elements = frozenset(range(1, 95))

    def __init__(self, model: str | None = None, device: str | None = None):
        super().__init__()
        self.model_arg = model or "0.3.0"
        self.device = device
        if self.model_arg not in ("0.3.0", "0.2.0") and not Path(self.model_arg).is_file():
            raise EngineUnavailable(
                f"CHGNet model '{self.model_arg}' is not bundled",
                fix="use 'chgnet' (0.3.0, bundled), 'chgnet:0.2.0', or chgnet:/path/to/model.pth.tar",
            )
        try:
            import chgnet  # noqa: F401
        except ImportError:
            raise EngineUnavailable("the 'chgnet' package is not installed", fix="pip install chgnet") from None

    @property
    def info(self) -> EngineInfo:
        return EngineInfo("chgnet", package_version("chgnet"), f"CHGNet {self.model_arg}", {"dtype": "float32"})

    def _make_calculator(self):
        import contextlib
        import io
        import warnings

        configure_threads()
        from chgnet.model import CHGNet
        from chgnet.model.dynamics import CHGNetCalculator

        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if Path(self.model_arg).is_file():
                model = CHGNet.from_file(self.model_arg)
            else:
                model = CHGNet.load(model_name=self.model_arg, use_device="cpu", verbose=False)
            return CHGNetCalculator(model=model, use_device=_torch_device(self.device), stress_weight=1 / 160.21766208)

    def evaluate(self, atoms_list, progress=None):
        # CHGNet prints its device choice on every call in some versions; keep stdout clean
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            return super().evaluate(atoms_list, progress)


class MACEEngine(Engine):
    """MACE from a model file the user has: ``mace:PATH`` (optional extra, float64)."""

    molecular = True

    def __init__(self, model: str | None = None, device: str | None = None):
        super().__init__()
        if not model:
            raise EngineError("MACE needs a model file", fix="use mace:/path/to/model.model")
        p = Path(model).expanduser()
        if not p.is_file():
            raise EngineUnavailable(
                f"MACE model file '{model}' not found",
                fix="download a MACE model (e.g. MACE-MP-0 from its GitHub releases) and pass mace:/path/to/file.model",
            )
        self.path = str(p.resolve())
        self.device = device
        try:
            import mace  # noqa: F401
        except ImportError:
            raise EngineUnavailable(
                "the 'mace-torch' package is not installed",
                fix="pip install 'atomvib[mace]' in a separate environment (mace-torch pins e3nn 0.4.4, sevenn needs >=0.5)",
            ) from None

    @property
    def info(self) -> EngineInfo:
        return EngineInfo("mace", package_version("mace-torch"), self.path, {"dtype": "float64"})

    def _make_calculator(self):
        configure_threads()
        from mace.calculators import MACECalculator

        return MACECalculator(model_paths=self.path, device=_torch_device(self.device), default_dtype="float64")
