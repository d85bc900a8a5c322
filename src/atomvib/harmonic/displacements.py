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
        """Symmetrised force constants (acoustic sum rule imposed, and the rotational sum rule of their first
        moment: :func:`impose_rotational_sum_rule`) from forces (n_disp, n_super, 3) eV/Å."""
        ph = self._phonopy()
        forces = np.asarray(forces, dtype=float)
        # Remove the net force of each set (drift from model noise or a non-conservative engine);
        # zero for any translation-invariant energy model.
        forces = forces - forces.mean(axis=1, keepdims=True)
        ph.forces = forces
        produce_symmetrized_fc(ph)
        impose_rotational_sum_rule(ph)
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


def _mean_shortest_vectors(primitive) -> np.ndarray:
    """Cartesian vector (Å) from each primitive atom to each supercell atom, shape (n_prim, n_super, 3): the
    shortest one, averaged over equidistant images — the vectors phonopy's dynamical matrix puts in its phases."""
    svecs, multi = primitive.get_smallest_vectors()
    multi = np.asarray(multi)
    if multi.ndim != 3:  # phonopy's older, non-dense layout: not handled
        raise ValueError("unsupported shortest-vector layout")
    cart = np.asarray(svecs, float) @ np.asarray(primitive.cell, float)
    count, start = multi[..., 0].T.ravel(), multi[..., 1].T.ravel()  # pairs (prim i, super j), flattened
    # the images of a pair are consecutive from its address: sum them per pair
    starts = np.sort(start)
    sums = np.add.reduceat(cart, starts, axis=0)[np.searchsorted(starts, start)]
    return (sums / count[:, None]).reshape(multi.shape[1], multi.shape[0], 3)


def rotational_violation(fc: np.ndarray, dbar: np.ndarray) -> np.ndarray:
    """The part of the force constants' first moment that breaks rotational invariance, shape (3, 3, 3):
    ``T[a,b,g] − T[b,a,g]`` with ``T[a,b,g] = Σ_ij Φ_ab(i,j) d_g(i,j)`` (eV/Å). Zero for force constants of a
    rotationally invariant energy at equilibrium; where not, the acoustic block of the dynamical matrix gets a
    term linear in q, so ω² ∝ ±|q| and one acoustic branch turns imaginary next to Γ."""
    t = np.einsum("ijab,ijg->abg", fc, dbar)
    return t - t.transpose(1, 0, 2)


def impose_rotational_sum_rule(ph, max_iter: int = 10, tol: float = 1e-6) -> float:
    """Make compact force constants satisfy the rotational sum rule of their first moment (in place).

    Why: an MLIP's force constants reach beyond a ~10 Å supercell (SevenNet: 5 message-passing layers of a 5 Å
    cutoff), so interactions with periodic images fold onto the pair's shortest vector. The first moment
    ``Σ Φ(i,j) d(i,j)`` over those vectors then has an antisymmetric part (:func:`rotational_violation`), which
    gives the acoustic branches ω² ∝ ±|q| next to Γ: one of them imaginary by 0.1–0.2 THz at the first band-path
    point, on crystals the model finds stable (measured on the Petretto validation crystals, docs/validation.md).
    Neither phonopy's symmetrisation (translational sum rule, index permutation) nor a bigger displacement touch it;
    a bigger supercell only shrinks it.

    How: the smallest change (least squares over all compact force-constant elements) that zeroes the violation
    while keeping the translational sum rule; then phonopy's translational/permutation symmetrisation; repeated
    until the violation is below ``tol`` (relative to its start; usually 1–2 rounds). The constraint sets are
    invariant under the space group and index permutation, so the change keeps those symmetries. On Γ and on
    everything but the acoustic branches next to Γ the change is invisible (measured: ≤ 0.006 eV/Å² per element,
    ω_max and S(300 K) unchanged to 1e-3); centrosymmetric crystals have no violation and are left as they are.

    Returns the violation before (eV/Å, max over components). Full (non-compact) force constants are left alone.
    """
    import scipy.sparse as sp
    from phonopy.harmonic.force_constants import symmetrize_compact_force_constants

    fc = np.array(ph.force_constants, dtype=float)
    prim = ph.primitive
    if fc.ndim != 4 or fc.shape[0] != len(prim) or fc.shape[1] != len(ph.supercell):
        return 0.0
    try:
        dbar = _mean_shortest_vectors(prim)
    except ValueError:
        return 0.0
    before = float(np.abs(rotational_violation(fc, dbar)).max())
    if before <= 1e-10 * max(1.0, float(np.abs(fc).max())):
        return before
    n_prim, n_super = fc.shape[:2]
    idx = np.arange(fc.size).reshape(fc.shape)
    rows, cols, vals = [], [], []
    r = 0
    for i in range(n_prim):  # translational sum rule: Σ_j Φ_ab(i, j) = 0
        for a in range(3):
            for b in range(3):
                rows.append(np.full(n_super, r))
                cols.append(idx[i, :, a, b])
                vals.append(np.ones(n_super))
                r += 1
    for g in range(3):  # rotational sum rule of the first moment: T[a,b,g] − T[b,a,g] = 0
        for a, b in ((0, 1), (0, 2), (1, 2)):
            for aa, bb, sign in ((a, b, 1.0), (b, a, -1.0)):
                rows.append(np.full(n_prim * n_super, r))
                cols.append(idx[:, :, aa, bb].ravel())
                vals.append(sign * dbar[:, :, g].ravel())
            r += 1
    c = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r, fc.size))
    cct = (c @ c.T).toarray()
    for _ in range(max_iter):
        phi = fc.ravel()
        lam = np.linalg.lstsq(cct, c @ phi, rcond=None)[0]
        fc = (phi - c.T @ lam).reshape(fc.shape)
        symmetrize_compact_force_constants(fc, prim)
        if np.abs(rotational_violation(fc, dbar)).max() <= tol * before:
            break
    ph.force_constants = fc
    return before


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
