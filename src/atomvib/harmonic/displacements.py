"""Symmetry-reduced finite displacements (phonopy) and the automatic supercell.

The automatic supercell is a multiple of the *conventional standard* cell (as phonopy's own
examples use: 2×2×2 conventional for Si), expressed relative to the user's cell so that the user's
orientation (and any Born charges given in it) is kept: ``S = P⁻¹ · diag(n)`` with spglib's
transformation matrix ``P`` and ``n_i = ceil(L / w_i)``, ``w_i`` the perpendicular widths of the
conventional cell. When ``P⁻¹`` is not an integer matrix (the input is already a non-standard
supercell), a diagonal multiple of the input cell is used instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ResourceError
from ..settings import PhononSettings
from ..structure import Structure
from .force_constants import ForceConstants, new_phonopy


def perpendicular_widths(lattice_rows: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of a cell (Å), shape (3,)."""
    a = np.asarray(lattice_rows, float)
    vol = abs(np.linalg.det(a))
    return np.array([vol / np.linalg.norm(np.cross(a[(i + 1) % 3], a[(i + 2) % 3])) for i in range(3)])


def auto_supercell_matrix(structure: Structure, min_length_a: float, symprec: float = 1e-3) -> np.ndarray:
    """Supercell matrix (3, 3) int, phonopy column convention, with every width ≥ ``min_length_a``."""
    import spglib

    ds = spglib.get_symmetry_dataset(structure.spglib_cell(), symprec=symprec)
    if ds is not None:
        pinv = np.linalg.inv(ds.transformation_matrix)
        if np.allclose(pinv, np.round(pinv), atol=1e-6) and round(abs(np.linalg.det(pinv))) >= 1:
            pinv = np.round(pinv).astype(int)
            conv_rows = pinv.T @ structure.cell
            n = np.maximum(1, np.ceil(min_length_a / perpendicular_widths(conv_rows) - 1e-6)).astype(int)
            return pinv @ np.diag(n)
    n = np.maximum(1, np.ceil(min_length_a / perpendicular_widths(structure.cell) - 1e-6)).astype(int)
    return np.diag(n)


@dataclass(frozen=True, eq=False)
class DisplacementPlan:
    """The displaced supercells whose forces make the force constants.

    Attributes
    ----------
    unitcell : Structure
    supercell_matrix : ndarray, shape (3, 3), int
    displacement_a : float
        Amplitude, Å.
    dataset : dict
        phonopy's displacement dataset (atom index and displacement vector of each supercell).
    symprec : float
    """

    unitcell: Structure
    supercell_matrix: np.ndarray
    displacement_a: float
    dataset: dict
    symprec: float

    def _phonopy(self):
        """A fresh phonopy object with the displacement dataset (symmetry searched once, then copied)."""
        import copy

        template = self.__dict__.get("_phonopy_template")
        if template is None:
            template = new_phonopy(self.unitcell, self.supercell_matrix, "auto", self.symprec)
            template.dataset = self.dataset
            object.__setattr__(self, "_phonopy_template", template)
        return copy.deepcopy(template)

    @property
    def n_displacements(self) -> int:
        return len(self.dataset["first_atoms"])

    @property
    def n_supercell_atoms(self) -> int:
        return int(round(abs(np.linalg.det(self.supercell_matrix)))) * self.unitcell.natoms

    def digest(self) -> str:
        """SHA-256 (24 hex) of what fixes the displaced cells: unit cell, supercell matrix, displacements.

        Together with the engine's identity this keys the force checkpoint, so settings that only
        change the analysis (mesh, temperatures, DOS step) reuse every displaced cell's forces.
        """
        import hashlib

        h = hashlib.sha256(self.unitcell.content_hash().encode())
        h.update(np.asarray(self.supercell_matrix, dtype=np.int64).tobytes())
        for d in self.dataset["first_atoms"]:
            h.update(np.int64(d["number"]).tobytes())
            h.update(np.round(np.asarray(d["displacement"], float), 10).tobytes())
        return h.hexdigest()[:24]

    def supercells(self) -> list:
        """The displaced supercells as :class:`ase.Atoms`, in the dataset's order."""
        from ase import Atoms

        out = []
        for sc in self._phonopy().supercells_with_displacements:
            out.append(Atoms(numbers=sc.numbers, positions=sc.positions, cell=sc.cell, masses=sc.masses, pbc=True))
        return out

    def force_constants(self, forces: np.ndarray, nac=None) -> ForceConstants:
        """Symmetrised force constants (acoustic sum rule imposed) from forces (n_disp, n_super, 3) eV/Å."""
        ph = self._phonopy()
        forces = np.asarray(forces, dtype=float)
        # Remove the net force of each set (drift from model noise or a non-conservative engine);
        # zero for any translation-invariant energy model.
        forces = forces - forces.mean(axis=1, keepdims=True)
        ph.forces = forces
        produce_symmetrized_fc(ph)
        if nac is not None:
            ph.nac_params = nac.to_phonopy()
        return ForceConstants.from_phonopy(ph)


def produce_symmetrized_fc(ph) -> None:
    """Force constants exactly as ``phonopy.load`` makes them (compact layout, symmetrised, ASR).

    phonopy.load's own helper (``phonopy.cui.load_helper``, not phonopy's public API) is used within the
    tested phonopy versions; outside them, the public ``produce_force_constants`` and
    ``symmetrize_force_constants`` (same steps, one warning says so).
    """
    import contextlib
    import io

    from ..engines.guards import version_problems, warn_fallback

    problems = version_problems("phonopy-load-helper")
    with contextlib.redirect_stdout(io.StringIO()):  # phonopy prints the residual drift
        if not problems:
            from phonopy.cui.load_helper import produce_force_constants

            produce_force_constants(ph, symmetrize_fc=True, is_compact_fc=True)
            return
        warn_fallback("force constants", "phonopy.load helper", problems, used="public Phonopy")
        ph.produce_force_constants(calculate_full_force_constants=False)
        ph.symmetrize_force_constants()


def plan_displacements(structure: Structure, settings: PhononSettings) -> DisplacementPlan:
    """Choose the supercell and generate the symmetry-reduced displacements."""
    if settings.supercell is not None:
        smat = np.reshape(settings.supercell, (3, 3)).astype(int)
    else:
        smat = auto_supercell_matrix(structure, settings.min_supercell_length_a, settings.symprec)
    n_super = int(round(abs(np.linalg.det(smat)))) * structure.natoms
    if n_super > settings.max_supercell_atoms:
        raise ResourceError(
            f"the supercell would have {n_super} atoms (limit {settings.max_supercell_atoms})",
            fix="give a smaller --supercell or --min-length, or raise --max-supercell-atoms if memory allows "
            f"(force constants alone need {n_super**2 * 72 / 1e9:.1f} GB)",
        )
    ph = new_phonopy(structure, smat, "auto", settings.symprec)
    ph.generate_displacements(distance=settings.displacement_a)
    return DisplacementPlan(
        unitcell=structure,
        supercell_matrix=np.array(smat, dtype=int),
        displacement_a=settings.displacement_a,
        dataset=ph.dataset,
        symprec=settings.symprec,
    )
