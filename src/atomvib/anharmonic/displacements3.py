"""The displaced supercells whose forces make fc2 and fc3: phono3py's displacements, atomvib's forces.

phono3py chooses the cells (symmetry-reduced pairs of displaced atoms, optionally only pairs closer than a
cutoff; or random displacements of every atom for symfc's fit) and builds the force constants; this module
holds that choice as a frozen plan with a digest (the force checkpoint's key), hands the cells to an engine
and the forces back to phono3py. A cell beyond the pair cutoff is never computed (phono3py marks it ``None``;
its forces are zeros it does not use).
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..harmonic.displacements import auto_supercell_matrix
from ..structure import Structure
from .force_constants3 import AnharmonicForceConstants, new_phono3py


@dataclass(frozen=True, eq=False)
class Fc3Plan:
    """The displaced supercells of one κ calculation.

    Attributes
    ----------
    unitcell : Structure
    supercell_matrix : ndarray, shape (3, 3), int
        fc3 supercell.
    phonon_supercell_matrix : ndarray, shape (3, 3), int, or None
        Separate fc2 supercell (None: fc2 from the fc3 cells).
    displacement_a : float
        Amplitude, Å.
    fc_calculator : str
        "traditional" or "symfc".
    dataset, phonon_dataset : dict
        phono3py's displacement datasets (fc3; fc2 where separate).
    symprec : float
    """

    unitcell: Structure
    supercell_matrix: np.ndarray
    phonon_supercell_matrix: np.ndarray | None
    displacement_a: float
    fc_calculator: str
    dataset: dict
    phonon_dataset: dict | None
    symprec: float

    def _phono3py(self):
        template = self.__dict__.get("_template")
        if template is None:
            template = new_phono3py(self.unitcell, self.supercell_matrix, "auto", self.phonon_supercell_matrix,
                                    self.symprec)
            template.dataset = copy.deepcopy(self.dataset)
            if self.phonon_dataset is not None:
                template.phonon_dataset = copy.deepcopy(self.phonon_dataset)
            object.__setattr__(self, "_template", template)
        return copy.deepcopy(template)

    # ----------------------------------------------------------------------------- the cells
    def _fc3_cells(self) -> list:
        """phono3py's fc3 supercells in dataset order (``None`` where the pair is beyond the cutoff)."""
        cached = self.__dict__.get("_cells3")
        if cached is None:
            cached = self._phono3py().supercells_with_displacements
            object.__setattr__(self, "_cells3", cached)
        return cached

    @property
    def n_displacements(self) -> int:
        """fc3 supercells that need forces."""
        return sum(c is not None for c in self._fc3_cells())

    @property
    def n_fc2_displacements(self) -> int:
        """Separate fc2 supercells (0 when fc2 comes from the fc3 cells)."""
        return 0 if self.phonon_supercell_matrix is None else len(self._phono3py().phonon_supercells_with_displacements)

    @property
    def n_supercell_atoms(self) -> int:
        return int(round(abs(np.linalg.det(self.supercell_matrix)))) * self.unitcell.natoms

    @property
    def n_fc2_supercell_atoms(self) -> int:
        m = self.supercell_matrix if self.phonon_supercell_matrix is None else self.phonon_supercell_matrix
        return int(round(abs(np.linalg.det(m)))) * self.unitcell.natoms

    def supercells(self) -> list:
        """The fc3 supercells that need forces, as :class:`ase.Atoms`."""
        return [_to_ase(c) for c in self._fc3_cells() if c is not None]

    def fc2_supercells(self) -> list:
        """The separate fc2 supercells (empty when fc2 comes from the fc3 cells)."""
        if self.phonon_supercell_matrix is None:
            return []
        return [_to_ase(c) for c in self._phono3py().phonon_supercells_with_displacements]

    def perfect_supercell(self, fc2: bool = False):
        """The undisplaced fc3 (or, with ``fc2``, fc2) supercell: residual forces, the time of one force call."""
        ph3 = self._phono3py()
        return _to_ase(ph3.phonon_supercell if fc2 else ph3.supercell)

    def digest(self) -> str:
        """SHA-256 (24 hex) of what fixes the displaced cells (the force checkpoint's key, with the engine)."""
        h = hashlib.sha256(self.unitcell.content_hash().encode())
        for m in (self.supercell_matrix, self.phonon_supercell_matrix):
            h.update(b"-" if m is None else np.asarray(m, dtype=np.int64).tobytes())
        h.update(self.fc_calculator.encode())
        cells2 = self._phono3py().phonon_supercells_with_displacements if self.phonon_supercell_matrix is not None \
            else []
        for cells in (self._fc3_cells(), cells2):
            for c in cells:
                h.update(b"skip" if c is None else np.round(np.asarray(c.positions, float), 8).tobytes())
        return h.hexdigest()[:24]

    # ----------------------------------------------------------------------------- force constants
    def force_constants(self, forces, fc2_forces=None, nac=None) -> AnharmonicForceConstants:
        """fc2 and fc3 from forces (n_displacements, n_super, 3) eV/Å in the order of :meth:`supercells`
        (and ``fc2_forces`` (n_fc2_displacements, n_super2, 3) for a separate fc2 supercell)."""
        ph3 = self._phono3py()
        cells = self._fc3_cells()
        forces = np.asarray(forces, dtype=float)
        # the net force of each cell is drift (model noise); zero for a translation-invariant energy
        forces = forces - forces.mean(axis=1, keepdims=True)
        full = np.zeros((len(cells), self.n_supercell_atoms, 3))
        full[[i for i, c in enumerate(cells) if c is not None]] = forces
        ph3.forces = full
        if self.phonon_supercell_matrix is not None:
            f2 = np.asarray(fc2_forces, dtype=float)
            ph3.phonon_forces = f2 - f2.mean(axis=1, keepdims=True)
        if nac is not None:
            ph3.nac_params = nac.to_phonopy()
        produce_force_constants(ph3, self.fc_calculator)
        return AnharmonicForceConstants.from_phono3py(ph3, unitcell=self.unitcell, symprec=self.symprec)


def produce_force_constants(ph3, fc_calculator: str = "traditional") -> None:
    """fc3 and fc2 of a phono3py object whose datasets hold forces, as ``phono3py-load`` makes them (its own
    function: finite differences symmetrised with symfc's projector, or symfc's fit); outside the tested phono3py
    versions, the public ``produce_fc3``/``produce_fc2`` (one warning)."""
    from ..engines.guards import version_problems, warn_fallback

    calc = None if fc_calculator == "traditional" else fc_calculator
    problems = version_problems("phono3py-load-helper")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not problems:
            from phono3py.cui.load import compute_force_constants_from_datasets

            compute_force_constants_from_datasets(ph3, fc_calculator=calc, use_symfc_projector=True)
            return
    warn_fallback("fc2/fc3", "phono3py.load helper", problems, used="public Phono3py")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ph3.produce_fc3(fc_calculator=calc)
        if ph3.phonon_supercell_matrix is not None:
            ph3.produce_fc2(fc_calculator=calc)


def plan_fc3(structure: Structure, settings, symprec: float = 1e-5) -> Fc3Plan:
    """Choose the supercells (``settings``: :class:`~atomvib.settings.KappaSettings`) and let phono3py generate
    the displacements."""
    sc = (np.reshape(settings.fc3_supercell, (3, 3)) if settings.fc3_supercell is not None
          else auto_supercell_matrix(structure, settings.fc3_min_length_a, symprec))
    if settings.fc2_supercell is not None:
        sc2 = np.reshape(settings.fc2_supercell, (3, 3))
    elif settings.fc2_min_length_a is not None:
        sc2 = auto_supercell_matrix(structure, settings.fc2_min_length_a, symprec)
    else:
        sc2 = None
    if sc2 is not None and np.array_equal(np.asarray(sc2), np.asarray(sc)):
        sc2 = None
    ph3 = new_phono3py(structure, sc, "auto", sc2, symprec)
    if settings.fc_calculator == "symfc":
        n = settings.n_snapshots if settings.n_snapshots is not None else "auto"
        ph3.generate_displacements(distance=settings.displacement_a, number_of_snapshots=n,
                                   random_seed=settings.seed, cutoff_pair_distance=settings.cutoff_pair_a)
        if sc2 is not None:
            ph3.generate_fc2_displacements(distance=settings.displacement_a, number_of_snapshots="auto",
                                           random_seed=settings.seed)
    else:
        ph3.generate_displacements(distance=settings.displacement_a, cutoff_pair_distance=settings.cutoff_pair_a)
        if sc2 is not None:
            ph3.generate_fc2_displacements(distance=settings.displacement_a)
    if ph3.dataset is None:
        raise InputError("phono3py generated no displacements", fix="check the structure")
    return Fc3Plan(
        unitcell=structure, supercell_matrix=np.array(sc, dtype=np.int64),
        phonon_supercell_matrix=None if sc2 is None else np.array(sc2, dtype=np.int64),
        displacement_a=settings.displacement_a, fc_calculator=settings.fc_calculator,
        dataset=copy.deepcopy(ph3.dataset), phonon_dataset=copy.deepcopy(ph3.phonon_dataset) if sc2 is not None
        else None, symprec=symprec,
    )  # fmt: skip


def _to_ase(c):
    from ase import Atoms

    return Atoms(numbers=c.numbers, positions=c.positions, cell=c.cell, masses=c.masses, pbc=True)
