"""A harmonic toy engine from known force constants: exact reference for the pipeline's tests.

:class:`SpringEngine` gives forces of pair springs ``E = Σ k/2 (|r_ij| - r0_ij)²`` between every pair
closer than ``cutoff_a`` in the reference geometry; with central springs on fcc nearest neighbours
the phonon frequencies are known in closed form (see the tests). Being exactly harmonic only in the
limit of small displacements, finite displacements of 1e-3–1e-2 Å reproduce the analytic answer to
O(δ²).
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from .base import Engine, EngineInfo, package_version


class SpringCalculator(Calculator):
    """Central pair springs with constant ``k`` (eV/Å²) and rest length ``r0`` (Å) for pairs within ``cutoff``."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, k: float, r0: float, cutoff: float, **kw):
        super().__init__(**kw)
        self.k, self.r0, self.cutoff = k, r0, cutoff

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        from ase.neighborlist import neighbor_list

        i, j, d, D = neighbor_list("ijdD", self.atoms, self.cutoff)
        stretch = d - self.r0
        energy = 0.25 * self.k * np.sum(stretch**2)  # each pair appears twice
        # force on i from the pair (i, j): +k (d - r0) * D/d (pulls i towards j when stretched)
        fij = (self.k * stretch / d)[:, None] * D
        forces = np.zeros((len(self.atoms), 3))
        np.add.at(forces, i, fij)
        self.results["energy"] = float(energy)
        self.results["forces"] = forces


class SpringEngine(Engine):
    """Engine over :class:`SpringCalculator`; pass it as ``engine=`` in the API."""

    def __init__(self, k: float = 1.0, r0: float = 2.5, cutoff: float = 3.0):
        super().__init__()
        self.k, self.r0, self.cutoff = k, r0, cutoff

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(
            "springs", package_version("atomvib"), model="central pair springs",
            settings={"k": self.k, "r0": self.r0, "cutoff": self.cutoff},
        )  # fmt: skip

    def _make_calculator(self):
        return SpringCalculator(self.k, self.r0, self.cutoff)
