"""One typed settings object shared by the API, the CLI and the batch runner.

All fields have units in their names or docstrings. Settings are frozen; derive a variant with
:func:`dataclasses.replace`. :meth:`PhononSettings.digest` is the stable hash used to key caches
and database rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError

DEFAULT_TEMPERATURES_K: tuple[float, ...] = tuple(float(t) for t in np.arange(0.0, 1001.0, 10.0))


@dataclass(frozen=True)
class PhononSettings:
    """Settings of the harmonic workflow.

    Attributes
    ----------
    engine : str or None
        Engine spec (see ``atomvib engines``); None picks the default for the structure kind.
    relax : bool
        Relax positions (and the cell for crystals) before the phonon calculation.
    relax_cell : bool
        Let the cell relax (crystals only), keeping the space group.
    fmax_ev_per_a : float
        Force convergence threshold of the relaxation, eV/Å.
    relax_steps : int
        Maximum optimizer steps.
    supercell : tuple of 9 ints or None
        Supercell matrix (row-major 3×3) applied to the primitive/unit cell; None → automatic.
    min_supercell_length_a : float
        Automatic supercell: smallest perpendicular width of the supercell in Å.
    displacement_a : float
        Finite-displacement amplitude in Å.
    primitive : bool
        Reduce crystals to the spglib primitive cell before the calculation.
    symprec : float
        Symmetry tolerance in Å (spglib/phonopy).
    mesh_density : float
        q-mesh density for DOS/thermal properties: points per Å^-1 along each reciprocal vector
        (phonopy's ``length`` convention, ``n_i = max(1, round(length·|b_i|))`` with |b_i| without 2π).
    dos_mesh_density : float or None
        q-mesh density of the (partial) DOS, which needs eigenvectors on the full grid; None → half of
        ``mesh_density``.
    dos_step_thz : float
        Frequency bin of the DOS in THz.
    dos_sigma_thz : float or None
        Gaussian smearing of the DOS in THz; None → tetrahedron method.
    temperatures_k : tuple of float
        Temperature grid for thermal properties, K.
    summary_temperature_k : float or None
        The temperature reported in ``summary.json``; None → 300 K for crystals (on the default grid),
        298.15 K (standard conditions) for molecular thermochemistry.
    imaginary_tol_thz : float
        Modes below ``-imaginary_tol_thz`` count as imaginary (numerical noise near Γ is above it).
    max_supercell_atoms : int
        Refuse supercells larger than this (memory guard).
    """

    engine: str | None = None
    relax: bool = True
    relax_cell: bool = True
    fmax_ev_per_a: float = 1e-3
    relax_steps: int = 300
    supercell: tuple[int, ...] | None = None
    min_supercell_length_a: float = 10.0
    displacement_a: float = 0.01
    primitive: bool = True
    symprec: float = 1e-3
    mesh_density: float = 100.0
    dos_mesh_density: float | None = None
    dos_step_thz: float = 0.02
    dos_sigma_thz: float | None = None
    temperatures_k: tuple[float, ...] = field(default=DEFAULT_TEMPERATURES_K)
    summary_temperature_k: float | None = None
    imaginary_tol_thz: float = 0.1
    max_supercell_atoms: int = 2000

    def __post_init__(self):
        if self.supercell is not None:
            sc = tuple(int(x) for x in np.asarray(self.supercell).ravel())
            if len(sc) == 3:
                sc = (sc[0], 0, 0, 0, sc[1], 0, 0, 0, sc[2])
            if len(sc) != 9 or round(abs(np.linalg.det(np.reshape(sc, (3, 3))))) < 1:
                raise InputError(
                    f"supercell {self.supercell} is not a valid 3 or 3×3 integer matrix",
                    fix="give three positive integers, e.g. --supercell 2 2 2",
                )
            object.__setattr__(self, "supercell", sc)
        object.__setattr__(self, "temperatures_k", tuple(float(t) for t in self.temperatures_k))
        if not 1e-4 <= self.displacement_a <= 0.2:
            raise InputError(
                f"displacement {self.displacement_a} Å is outside 1e-4–0.2 Å",
                fix="use a displacement around 0.01 Å",
            )
        if self.min_supercell_length_a <= 0 or self.mesh_density <= 0:
            raise InputError("supercell length and mesh density must be positive", fix="use the defaults")

    def summary_temperature(self, kind: str) -> float:
        """The temperature (K) reported for a ``kind`` ("crystal" or "molecule") result."""
        if self.summary_temperature_k is not None:
            return float(self.summary_temperature_k)
        return 298.15 if kind == "molecule" else 300.0

    def to_dict(self) -> dict:
        """Plain-JSON form of the settings."""
        d = dataclasses.asdict(self)
        d["temperatures_k"] = list(self.temperatures_k)
        if self.supercell is not None:
            d["supercell"] = list(self.supercell)
        return d

    def digest(self, exclude: tuple[str, ...] = ("engine",)) -> str:
        """SHA-256 (16 hex chars) of the settings that change the physics; ``engine`` is keyed separately."""
        d = {k: v for k, v in self.to_dict().items() if k not in exclude}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
