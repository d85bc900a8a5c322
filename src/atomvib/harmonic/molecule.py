"""Normal modes of a molecule from a finite-difference Hessian.

The Hessian comes from central differences of forces (6N displaced geometries, evaluated as one
batch by the engine), is symmetrised, mass-weighted, and projected onto the space orthogonal to
the rigid translations and rotations (Eckart conditions) before diagonalisation, so the 5 (linear)
or 6 zero modes are exactly zero and never mix into vibrations. Thermochemistry is ASE's ideal-gas
model (:class:`ase.thermochemistry.IdealGasThermo`), with the rotational symmetry number from
pymatgen's point-group analysis.

Units: Hessian eV/Å²; frequencies cm^-1 (imaginary as negative); modes (nmodes, natoms, 3)
Cartesian displacement patterns normalised to 1 (mass-weighted eigenvectors divided by √m).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import units
from ..engines.base import EngineInfo
from ..results import Result
from ..settings import PhononSettings
from ..structure import Structure


def hessian_from_forces(forces_plus: np.ndarray, forces_minus: np.ndarray, step_a: float) -> np.ndarray:
    """Symmetric Hessian (3N, 3N) eV/Å² from forces at +δ and −δ of each of the 3N coordinates.

    ``forces_plus[k]`` (N, 3) are the forces with coordinate k displaced by +δ.
    """
    n3 = forces_plus.shape[0]
    h = -(forces_plus - forces_minus).reshape(n3, n3) / (2.0 * step_a)
    return 0.5 * (h + h.T)


def dipole_derivatives_from_dipoles(dipoles_pm: np.ndarray, step_a: float) -> np.ndarray:
    """Atomic polar tensors (N, 3, 3) e, ``[κ, α (dipole component), β (displacement)]``, from the dipoles
    (6N, 3) e·Å at the geometries of :func:`displaced_geometries` (+x0, −x0, +y0, ...)."""
    dips = np.asarray(dipoles_pm, float)
    d = (dips[0::2] - dips[1::2]) / (2.0 * step_a)  # (3N, 3): [κβ, α]
    return d.reshape(-1, 3, 3).transpose(0, 2, 1)


def rigid_body_basis(positions: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Orthonormal basis (3N, k) of mass-weighted translations and rotations (k = 5 linear, 6 otherwise, 3 atom)."""
    n = len(masses)
    sqm = np.sqrt(masses)
    com = (masses[:, None] * positions).sum(0) / masses.sum()
    r = positions - com
    vecs = []
    for a in range(3):
        v = np.zeros((n, 3))
        v[:, a] = sqm
        vecs.append(v.ravel())
    for a in range(3):
        axis = np.zeros(3)
        axis[a] = 1.0
        v = np.cross(axis, r) * sqm[:, None]
        vecs.append(v.ravel())
    m = np.array(vecs).T
    u, s, _ = np.linalg.svd(m, full_matrices=False)
    return u[:, s > 1e-6 * s.max()]


@dataclass(frozen=True, eq=False)
class MoleculeVibrations(Result):
    """Harmonic vibrations of a molecule.

    Attributes
    ----------
    structure : Structure
    hessian : ndarray, shape (3N, 3N), eV/Å²
    frequencies_cm1 : ndarray, shape (nvib,), cm^-1, ascending; imaginary as negative
    modes : ndarray, shape (nvib, N, 3)
        Cartesian displacement of each normal mode (unit norm).
    energy_ev : float
        Potential energy of the structure, eV.
    engine : EngineInfo
    settings : PhononSettings
    relaxation : dict or None
    n_displacements : int
    timings : dict
        Seconds per stage.
    dipole_derivatives : ndarray, shape (N, 3, 3), e, or None
        Atomic polar tensors ``[κ, α (dipole), β (displacement)]`` where the engine gives dipoles (xtb, PySCF).

    ``save(dir)`` / ``atomvib.load(dir)`` round-trip every field (:mod:`atomvib.results`).
    """

    structure: Structure
    hessian: np.ndarray
    frequencies_cm1: np.ndarray
    modes: np.ndarray
    energy_ev: float
    engine: EngineInfo
    settings: PhononSettings
    relaxation: dict | None = None
    n_displacements: int = 0
    timings: dict = field(default_factory=dict)
    dipole_derivatives: np.ndarray | None = None

    kind = "molecule"

    @property
    def frequencies_thz(self) -> np.ndarray:
        return self.frequencies_cm1 / units.THZ_TO_CM1

    @property
    def is_linear(self) -> bool:
        return len(self.frequencies_cm1) == 3 * self.structure.natoms - 5

    @property
    def has_imaginary(self) -> bool:
        tol_cm1 = self.settings.imaginary_tol_thz * units.THZ_TO_CM1
        return bool(np.any(self.frequencies_cm1 < -tol_cm1))

    @property
    def omega_max_thz(self) -> float:
        return float(self.frequencies_thz.max()) if len(self.frequencies_cm1) else 0.0

    @property
    def min_frequency_thz(self) -> float:
        return float(self.frequencies_thz.min()) if len(self.frequencies_cm1) else 0.0

    @property
    def zero_point_energy_ev(self) -> float:
        """½ Σ hν over real modes, eV."""
        nu = self.frequencies_thz[self.frequencies_thz > 0]
        return float(0.5 * units.H_EV_S * 1e12 * nu.sum())

    def symmetry_number(self) -> int:
        """Rotational symmetry number from the point group (pymatgen); 1 if it cannot be determined.

        Isotopes count as different species (HDO: σ = 1, D₂O: σ = 2)."""
        try:
            from pymatgen.core import Molecule
            from pymatgen.symmetry.analyzer import PointGroupAnalyzer

            mol = Molecule(_symmetry_species(self.structure), self.structure.positions)
            return int(PointGroupAnalyzer(mol, tolerance=0.1).get_rotational_symmetry_number())
        except Exception:  # pymatgen is optional here; 1 is the conservative fallback
            return 1

    def thermochemistry(self, temperature_k: float = 298.15, pressure_pa: float = 101325.0, spin: float = 0) -> dict:
        """Ideal-gas enthalpy, entropy and Gibbs energy (eV, eV/K) with ASE's IdealGasThermo."""
        from ase.thermochemistry import IdealGasThermo

        n = self.structure.natoms
        geometry = "monatomic" if n == 1 else ("linear" if self.is_linear else "nonlinear")
        real = self.frequencies_thz[self.frequencies_thz > 0] * units.H_EV_S * 1e12
        sigma = self.symmetry_number()
        import contextlib
        import io

        thermo = IdealGasThermo(
            vib_energies=real,
            geometry=geometry,
            potentialenergy=self.energy_ev,
            atoms=self.structure.to_ase(),
            symmetrynumber=sigma,
            spin=spin,
        )
        with contextlib.redirect_stdout(io.StringIO()):
            h = thermo.get_enthalpy(temperature_k)
            s = thermo.get_entropy(temperature_k, pressure_pa)
            g = thermo.get_gibbs_energy(temperature_k, pressure_pa)
        return {
            "temperature_K": temperature_k,
            "pressure_Pa": pressure_pa,
            "symmetry_number": sigma,
            "geometry": geometry,
            "enthalpy_eV": h,
            "entropy_eV_per_K": s,
            "gibbs_energy_eV": g,
            "entropy_J_per_K_per_mol": s * units.EV_J * units.AVOGADRO,
        }

    def summary(self) -> dict:
        from ..output import molecule_summary

        return molecule_summary(self)

    def _write_files(self, out) -> None:
        from ..output import write_molecule_files

        write_molecule_files(self, out)


def _symmetry_species(structure: Structure) -> list[str]:
    """Element symbols for a point-group search in which each isotope is a species of its own: an isotope label
    (:func:`atomvib.harmonic.isotopes.species_labels`) is replaced by a noble gas absent from the molecule (only
    which atoms are alike matters to the symmetry operations found)."""
    from .isotopes import species_labels

    labels = species_labels(structure.numbers, structure.masses)
    symbols = structure.symbols
    if labels == symbols:
        return symbols
    spare = [x for x in ("He", "Ne", "Ar", "Kr", "Xe", "Rn", "Og") if x not in symbols]
    stand_in = {lab: spare[k] for k, lab in enumerate(dict.fromkeys(x for x, s in zip(labels, symbols) if x != s))
                if k < len(spare)}
    return [stand_in.get(x, s) for x, s in zip(labels, symbols)]


def normal_modes(structure: Structure, hessian: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (cm^-1) and Cartesian modes (nvib, N, 3) with translations/rotations projected out."""
    m = structure.masses
    n = structure.natoms
    inv_sqm = 1.0 / np.sqrt(np.repeat(m, 3))
    hmw = hessian * inv_sqm[:, None] * inv_sqm[None, :]  # eV/Å²/amu
    rb = rigid_body_basis(structure.positions, m)
    # orthonormal complement of the rigid-body space: vibrations live there exactly
    q, _ = np.linalg.qr(np.hstack([rb, np.eye(3 * n)]))
    vib = q[:, rb.shape[1] : 3 * n]
    hv = vib.T @ hmw @ vib
    evals, evecs = np.linalg.eigh(0.5 * (hv + hv.T))
    freqs_thz = np.sign(evals) * np.sqrt(np.abs(evals)) * units.EV_A2_AMU_TO_THZ
    mw_modes = vib @ evecs  # (3N, nvib), mass-weighted
    cart = (mw_modes * inv_sqm[:, None]).T.reshape(-1, n, 3)
    cart /= np.linalg.norm(cart.reshape(len(cart), -1), axis=1)[:, None, None]
    return freqs_thz * units.THZ_TO_CM1, cart


def displaced_geometries(structure: Structure, step_a: float) -> list:
    """The 6N geometries ±δ along each Cartesian coordinate, as ase.Atoms: [+x0, -x0, +y0, -y0, ...]."""
    base = structure.to_ase()
    out = []
    for k in range(3 * structure.natoms):
        for sign in (1.0, -1.0):
            a = base.copy()
            pos = a.positions.copy()
            pos[k // 3, k % 3] += sign * step_a
            a.positions = pos
            out.append(a)
    return out
