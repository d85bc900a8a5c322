"""Second- and third-order force constants with the cells that define them (phono3py's fc2 and fc3).

The frozen value behind :class:`~atomvib.anharmonic.conductivity.ThermalConductivity`: it rebuilds a
:class:`phono3py.Phono3py` on demand, so κ can be recomputed at another mesh, temperature or method without a
single force call. phono3py does the physics (its own fc2/fc3, symmetrisation, interaction strengths); this
module only keeps the arrays and the cells together and saves them without pickle.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ..harmonic.force_constants import NacParams
from ..results import Result
from ..structure import Structure


@dataclass(frozen=True, eq=False)
class AnharmonicForceConstants(Result):
    """fc2 and fc3 of a crystal (phono3py's compact layout).

    Attributes
    ----------
    unitcell : Structure
        The cell the supercell matrices refer to.
    supercell_matrix : ndarray, shape (3, 3), int
        fc3 supercell (phonopy's convention).
    phonon_supercell_matrix : ndarray, shape (3, 3), int, or None
        fc2 supercell where it differs from the fc3 one.
    primitive_matrix : ndarray, shape (3, 3), float
    fc2 : ndarray, shape (n_prim, n_super2, 3, 3), eV/Å²
    fc3 : ndarray, shape (n_prim, n_super, n_super, 3, 3, 3), eV/Å³
    nac : NacParams or None
        Born charges and dielectric tensor (LO–TO splitting in the harmonic part).
    symprec : float
        Symmetry tolerance, Å.
    """

    unitcell: Structure
    supercell_matrix: np.ndarray
    phonon_supercell_matrix: np.ndarray | None
    primitive_matrix: np.ndarray
    fc2: np.ndarray
    fc3: np.ndarray
    nac: NacParams | None = None
    symprec: float = 1e-5

    kind = "force_constants_3"

    @classmethod
    def from_phono3py(cls, ph3, unitcell: Structure | None = None, symprec: float | None = None):
        """The force constants of a :class:`phono3py.Phono3py` that has fc2 and fc3."""
        from ..harmonic.force_constants import from_phonopy_atoms

        psm = ph3.phonon_supercell_matrix
        same = psm is None or np.array_equal(np.asarray(psm), np.asarray(ph3.supercell_matrix))
        return cls(
            unitcell=unitcell if unitcell is not None else from_phonopy_atoms(ph3.unitcell, source="phono3py"),
            supercell_matrix=np.array(ph3.supercell_matrix, dtype=np.int64),
            phonon_supercell_matrix=None if same else np.array(psm, dtype=np.int64),
            primitive_matrix=np.array(ph3.primitive_matrix if ph3.primitive_matrix is not None else np.eye(3), float),
            fc2=np.array(ph3.fc2, dtype=float),
            fc3=np.array(ph3.fc3, dtype=float),
            nac=NacParams.from_phonopy(ph3.nac_params),
            symprec=float(symprec if symprec is not None else ph3.symmetry.tolerance),
        )

    def phono3py(self):
        """A new :class:`phono3py.Phono3py` with these force constants (and NAC) set; a deep copy of a cached
        template, so callers may change what they get (the symmetry search runs once per object)."""
        template = self.__dict__.get("_template")
        if template is None:
            template = new_phono3py(self.unitcell, self.supercell_matrix, self.primitive_matrix,
                                    self.phonon_supercell_matrix, self.symprec)
            template.fc2 = np.array(self.fc2)
            template.fc3 = np.array(self.fc3)
            if self.nac is not None:
                template.nac_params = self.nac.to_phonopy()
            object.__setattr__(self, "_template", template)
        return copy.deepcopy(template)

    @property
    def n_supercell_atoms(self) -> int:
        return int(round(abs(np.linalg.det(self.supercell_matrix)))) * self.unitcell.natoms

    def summary(self) -> dict:
        sc = np.asarray(self.supercell_matrix)
        return {
            "structure": {"formula": self.unitcell.formula, "cell_formula": self.unitcell.cell_formula,
                          "natoms": self.unitcell.natoms, "source": self.unitcell.source},
            "fc3_supercell_matrix": sc.tolist(),
            "fc2_supercell_matrix": (np.asarray(self.phonon_supercell_matrix) if self.phonon_supercell_matrix
                                     is not None else sc).tolist(),
            "fc2_shape": list(np.shape(self.fc2)),
            "fc3_shape": list(np.shape(self.fc3)),
            "nac": self.nac is not None,
        }


def new_phono3py(unitcell: Structure, supercell_matrix, primitive_matrix="auto", phonon_supercell_matrix=None,
                 symprec: float = 1e-5):
    """A :class:`phono3py.Phono3py` for ``unitcell`` (no files read, nothing written)."""
    import warnings

    from phono3py import Phono3py
    from phonopy.structure.atoms import PhonopyAtoms

    pm = primitive_matrix if isinstance(primitive_matrix, str) else np.array(primitive_matrix, dtype=float)
    # fractional coordinates as the files give them: Cartesian → fractional round-off (1e-16) is enough to move
    # phono3py's tetrahedron integration of κ by ~2e-4 (Si, 11³ mesh), so it is snapped off at 1e-12
    frac = np.round(np.asarray(unitcell.positions) @ np.linalg.inv(np.asarray(unitcell.cell)), 12)
    cell = PhonopyAtoms(numbers=unitcell.numbers, scaled_positions=frac, cell=unitcell.cell, masses=unitcell.masses)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Phono3py(
            cell, supercell_matrix=np.array(supercell_matrix), primitive_matrix=pm,
            phonon_supercell_matrix=None if phonon_supercell_matrix is None else np.array(phonon_supercell_matrix),
            symprec=symprec, log_level=0,
        )  # fmt: skip
