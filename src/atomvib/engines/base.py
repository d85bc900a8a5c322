"""The force-engine interface.

An :class:`Engine` turns many structures into forces (and energies) at once, so an engine that can
batch (a GPU model) does. The base class evaluates one structure at a time through an ASE
calculator; MLIP engines override :meth:`Engine.evaluate` with a faster path.

Shapes and units: ``forces`` (natoms, 3) eV/Å float64; ``energy`` eV.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..errors import EngineError

Progress = Callable[[int], None]


#: the identity fields of :class:`EngineInfo` (what determines the forces), in order
_IDENTITY_FIELDS = ("name", "spec", "version", "model", "model_sha256", "packages", "kernel_path", "settings")

_KERNEL_WORDS = {"stock": "stock kernels", "rewritten": "rewritten kernels", "fused": "fused kernels",
                 "cuda-batched": "CUDA, batched"}  # fmt: skip


@dataclass(frozen=True)
class EngineInfo:
    """Provenance of an engine: everything that determines its forces, as plain data.

    ``name``: registry name ('sevennet', 'chgnet', 'xtb', 'emt', 'phonopy-files', ...); ``version``:
    the engine package's version; ``spec``: the spec that recreates the engine with
    ``get_engine(info.spec)`` ("" where it cannot be recreated by name, e.g. a calculator object);
    ``model``: model identity (name, or the path of a user's model file); ``model_sha256``: sha256 of
    the weights file actually loaded ("" where there is none); ``packages``: versions of the packages
    the forces depend on; ``kernel_path``: which code path computes them ('stock', 'rewritten',
    'fused', 'cuda-batched'; '' where not applicable or before :meth:`Engine.load`);
    ``settings``: engine settings that change the forces (dtype, method, ...).
    """

    name: str
    version: str
    spec: str = ""
    model: str = ""
    model_sha256: str = ""
    packages: dict = field(default_factory=dict)
    kernel_path: str = ""
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """All fields as plain JSON types (dicts copied)."""
        return {
            "name": self.name,
            "version": self.version,
            "spec": self.spec,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "packages": dict(self.packages),
            "kernel_path": self.kernel_path,
            "settings": dict(self.settings),
        }

    @classmethod
    def from_dict(cls, d: dict | EngineInfo) -> EngineInfo:
        """Inverse of :meth:`to_dict`; also accepts older records with only name/version/model/settings
        (missing fields get their defaults, unknown keys are ignored)."""
        if isinstance(d, EngineInfo):
            return d
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known and v is not None}
        for k, v in kw.items():
            kw[k] = dict(v) if k in ("packages", "settings") else str(v)
        kw.setdefault("name", "")
        kw.setdefault("version", "")
        return cls(**kw)

    def identity(self) -> dict:
        """Only what determines the forces (for checkpoint and cache keys): name, spec, version, model,
        model_sha256, packages, kernel_path, settings. No timings, no host."""
        d = self.to_dict()
        return {k: d[k] for k in _IDENTITY_FIELDS}

    def describe(self) -> str:
        """One line for users, e.g. ``sevennet 0.13.0 (SevenNet_0__11Jul2024, fused kernels)``."""
        model = self.model
        if Path(model).is_absolute():  # a user's file: its name is enough here
            model = Path(model).name
        detail = [x for x in (model, _KERNEL_WORDS.get(self.kernel_path, self.kernel_path)) if x]
        return f"{self.name} {self.version}" + (f" ({', '.join(detail)})" if detail else "")


@dataclass(frozen=True)
class Evaluation:
    """Energy (eV), forces ((natoms, 3) eV/Å) and, where the engine gives it, the dipole ((3,) e·Å) of one structure."""

    energy: float
    forces: np.ndarray
    dipole: np.ndarray | None = None


class Engine(ABC):
    """A force engine. Subclasses set ``periodic``/``molecular`` support and build an ASE calculator.

    The model is loaded once, lazily, on first use (or by :meth:`load`), and kept for the life of the
    engine object, together with the engine's caches (neighbour lists, kernels, worker pool); the
    registry keeps one engine object per spec per process (:func:`~atomvib.engines.get_engine`).
    """

    #: can handle periodic cells
    periodic: bool = True
    #: can handle isolated molecules
    molecular: bool = True
    #: atomic numbers covered; None = all
    elements: frozenset[int] | None = None
    #: shares large jobs with worker processes (engines/parallel.py): give it several cells per call
    uses_worker_pool: bool = False

    def __init__(self):
        self._calc = None

    @property
    @abstractmethod
    def info(self) -> EngineInfo:
        """Provenance; fields decided at model load (``kernel_path``, some ``settings``) are final only
        after :meth:`load`."""

    @abstractmethod
    def _make_calculator(self):
        """Build the ASE calculator (loads the model)."""

    def calculator(self):
        """The engine's ASE calculator (created once)."""
        if self._calc is None:
            self._calc = self._make_calculator()
        return self._calc

    def load(self) -> Engine:
        """Load the model now and decide the code path (idempotent; returns ``self``).

        Callers that need the full identity (force-checkpoint keys) call ``engine.load()`` and then read
        ``engine.info``: the kernel path is only known once the model is loaded.
        """
        self.calculator()
        return self

    @property
    def loaded(self) -> bool:
        """True once the model is loaded."""
        return self._calc is not None

    def check(self, structure) -> None:
        """Raise :class:`EngineError` if this engine cannot handle ``structure``."""
        name = self.info.name
        if structure.is_molecule and not self.molecular:
            raise EngineError(
                f"engine '{name}' is for periodic crystals; {structure.source or 'the input'} is a molecule (no cell)",
                fix="use --engine xtb (or pyscf) for molecules, or give the structure a cell and pbc",
            )
        if not structure.is_molecule and not self.periodic:
            raise EngineError(
                f"engine '{name}' handles isolated molecules only; the input is periodic",
                fix="use an MLIP engine (e.g. sevennet) for crystals, or remove the cell to treat it as a molecule",
            )
        if self.elements is not None:
            missing = sorted({s for s, z in zip(structure.symbols, structure.numbers) if int(z) not in self.elements})
            if missing:
                raise EngineError(
                    f"engine '{name}' does not cover element(s) {', '.join(missing)}",
                    fix="choose an engine that covers them (see `atomvib engines`)",
                )

    def evaluate(self, atoms_list: Sequence, progress: Progress | None = None) -> list[Evaluation]:
        """Energies and forces for many structures (ASE Atoms), in order.

        Parameters
        ----------
        atoms_list : sequence of ase.Atoms
        progress : callable, optional
            Called with the number of structures finished since the last call.
        """
        calc = self.calculator()
        out = []
        for atoms in atoms_list:
            a = atoms.copy()
            a.calc = calc
            forces = np.array(a.get_forces(), dtype=np.float64)
            energy = float(a.get_potential_energy())
            # calculators that compute the dipole with the forces (xtb, PySCF) have it cached: free
            dipole = calc.results.get("dipole")
            out.append(Evaluation(energy=energy, forces=forces, dipole=None if dipole is None else np.array(dipole, float)))
            if progress:
                progress(1)
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.info.describe()}>"


def package_version(dist: str) -> str:
    """Installed version of a distribution, or ``"unknown"``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def package_versions(*dists: str) -> dict[str, str]:
    """``{distribution: version}`` of those of ``dists`` that are installed."""
    out = {}
    for d in dists:
        v = package_version(d)
        if v != "unknown":
            out[d] = v
    return out


def file_sha256(path) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
