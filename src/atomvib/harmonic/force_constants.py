"""Force constants of a crystal and the phonopy object built from them.

:class:`ForceConstants` is the frozen hand-off between the force evaluation and every analysis
(dispersion, DOS, thermal properties, spectra). phonopy does the symmetry and the Fourier
interpolation; this module only keeps its mutable object out of our results: each call of
:meth:`ForceConstants.phonopy` builds a fresh, fully initialised :class:`phonopy.Phonopy`.

Arrays: ``force_constants`` (n_prim or n_super, n_super, 3, 3) eV/Å² (phonopy's compact or full
layout); ``supercell_matrix`` (3, 3) int and ``primitive_matrix`` (3, 3) float in phonopy's
column convention (supercell lattice columns = unit-cell lattice columns @ matrix).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..results import Result
from ..structure import Structure


def to_phonopy_atoms(s: Structure):
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(numbers=s.numbers, positions=s.positions, cell=s.cell, masses=s.masses)


def from_phonopy_atoms(a, source: str = "") -> Structure:
    return Structure(
        numbers=a.numbers, positions=a.positions, cell=a.cell, pbc=(True, True, True), masses=a.masses, source=source
    )


def new_phonopy(unitcell: Structure, supercell_matrix, primitive_matrix="auto", symprec: float = 1e-5):
    """A :class:`phonopy.Phonopy` for ``unitcell`` (phonopy's notice about its 'auto' default silenced)."""
    import warnings

    from phonopy import Phonopy

    pm = primitive_matrix if isinstance(primitive_matrix, str) else np.array(primitive_matrix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Phonopy(to_phonopy_atoms(unitcell), supercell_matrix=np.array(supercell_matrix), primitive_matrix=pm, symprec=symprec)


@dataclass(frozen=True, eq=False)
class NacParams:
    """Non-analytic correction: Born charges ``born`` (n_prim, 3, 3) e, ``dielectric`` (3, 3), phonopy ``factor``."""

    born: np.ndarray
    dielectric: np.ndarray
    factor: float | None = None

    def to_phonopy(self) -> dict:
        d = {"born": np.array(self.born), "dielectric": np.array(self.dielectric)}
        if self.factor is not None:
            d["factor"] = self.factor
        return d

    @classmethod
    def from_phonopy(cls, d: dict | None) -> NacParams | None:
        if not d:
            return None
        return cls(born=np.array(d["born"]), dielectric=np.array(d["dielectric"]), factor=d.get("factor"))


@dataclass(frozen=True, eq=False)
class ForceConstants(Result):
    """Harmonic force constants with the cells that define them.

    Attributes
    ----------
    unitcell : Structure
        The cell the supercell matrix refers to.
    supercell_matrix : ndarray, shape (3, 3), int
    primitive_matrix : ndarray, shape (3, 3), float
    force_constants : ndarray, shape (n_prim or n_super, n_super, 3, 3), eV/Å²
    nac : NacParams or None
        Born charges and dielectric tensor for the LO–TO (non-analytic) correction.
    symprec : float
        Symmetry tolerance (Å) used with these force constants.
    """

    unitcell: Structure
    supercell_matrix: np.ndarray
    primitive_matrix: np.ndarray
    force_constants: np.ndarray
    nac: NacParams | None = None
    symprec: float = 1e-5

    def phonopy(self):
        """A new :class:`phonopy.Phonopy` with these force constants (and NAC) set.

        The symmetry search of a phonopy object costs ~0.3–1 s; it is done once per ForceConstants and
        each call returns a deep copy (~1 ms), so callers may mutate what they get.
        """
        import copy

        template = self.__dict__.get("_phonopy_template")
        if template is None:
            template = new_phonopy(self.unitcell, self.supercell_matrix, self.primitive_matrix, self.symprec)
            template.force_constants = np.array(self.force_constants)
            if self.nac is not None:
                template.nac_params = self.nac.to_phonopy()
            object.__setattr__(self, "_phonopy_template", template)
        return copy.deepcopy(template)

    def summary(self) -> dict:
        """What ``summary.json`` of saved force constants says."""
        sc = np.asarray(self.supercell_matrix)
        return {
            "structure": {"formula": self.unitcell.formula, "cell_formula": self.unitcell.cell_formula,
                          "natoms": self.unitcell.natoms, "source": self.unitcell.source},
            "supercell_matrix": sc.tolist(),
            "n_supercell_atoms": int(round(abs(np.linalg.det(sc)))) * self.unitcell.natoms,
            "force_constants_shape": list(np.shape(self.force_constants)),
            "nac": self.nac is not None,
        }

    def _write_files(self, out) -> None:
        self.phonopy().save(str(out / "phonopy.yaml"), settings={"force_constants": True})

    @property
    def primitive(self) -> Structure:
        """The primitive cell in which modes are computed (phonopy's ``primitive``)."""
        return from_phonopy_atoms(self.phonopy().primitive, self.unitcell.source)

    @classmethod
    def from_phonopy(cls, ph) -> ForceConstants:
        """Snapshot an initialised phonopy object with force constants."""
        if ph.force_constants is None:
            from ..errors import InputError

            raise InputError("the phonopy object has no force constants", fix="give FORCE_SETS or force constants")
        return cls(
            unitcell=from_phonopy_atoms(ph.unitcell),
            supercell_matrix=np.array(ph.supercell_matrix, dtype=int),
            primitive_matrix=np.array(ph.primitive_matrix, dtype=float),
            force_constants=np.array(ph.force_constants),
            nac=NacParams.from_phonopy(ph.nac_params),
            symprec=float(ph.symmetry.tolerance),
        )
