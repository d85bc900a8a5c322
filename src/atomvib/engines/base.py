"""The force-engine interface.

An :class:`Engine` turns many structures into forces (and energies) at once, so an engine that can
batch (a GPU model) does. The base class evaluates one structure at a time through an ASE
calculator; MLIP engines override :meth:`Engine.evaluate` with a faster path.

Shapes and units: ``forces`` (natoms, 3) eV/Å float64; ``energy`` eV.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import EngineError

Progress = Callable[[int], None]


@dataclass(frozen=True)
class EngineInfo:
    """Provenance of an engine: registry name, package version and model identity."""

    name: str
    version: str
    model: str = ""
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "model": self.model, "settings": dict(self.settings)}


@dataclass(frozen=True)
class Evaluation:
    """Energy (eV), forces ((natoms, 3) eV/Å) and, where the engine gives it, the dipole ((3,) e·Å) of one structure."""

    energy: float
    forces: np.ndarray
    dipole: np.ndarray | None = None


class Engine(ABC):
    """A force engine. Subclasses set ``periodic``/``molecular`` support and build an ASE calculator.

    The model is loaded once, lazily, on first use, and kept for the life of the engine object; the
    registry keeps one engine object per spec per process.
    """

    #: can handle periodic cells
    periodic: bool = True
    #: can handle isolated molecules
    molecular: bool = True
    #: atomic numbers covered; None = all
    elements: frozenset[int] | None = None

    def __init__(self):
        self._calc = None

    @property
    @abstractmethod
    def info(self) -> EngineInfo: ...

    @abstractmethod
    def _make_calculator(self):
        """Build the ASE calculator (loads the model)."""

    def calculator(self):
        """The engine's ASE calculator (created once)."""
        if self._calc is None:
            self._calc = self._make_calculator()
        return self._calc

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

    def forces(self, atoms_list: Sequence, progress: Progress | None = None) -> np.ndarray:
        """Forces for many structures with the same number of atoms: (n, natoms, 3) eV/Å."""
        return np.stack([e.forces for e in self.evaluate(atoms_list, progress)])

    def __repr__(self) -> str:
        i = self.info
        return f"<{type(self).__name__} {i.name} {i.version} {i.model}>"


def package_version(dist: str) -> str:
    """Installed version of a distribution, or ``"unknown"``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"
