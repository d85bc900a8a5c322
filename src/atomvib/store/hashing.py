"""Canonical, symmetry-aware structure hashes: the same crystal in any setting gets the same key.

spglib does the heavy lifting: :func:`spglib.standardize_cell` maps any cell (supercell,
conventional cell, rotated, permuted, shifted) onto its standardized primitive cell in the standard
orientation. What spglib leaves open is the choice of origin among equivalent ones (in rock salt, Na
or Cl at the origin depending on the input), so we try every atom of the rarest species as origin
and keep the lexicographically smallest description. Lattice lengths are rounded to 1 mÅ, angles to
0.01°, fractional coordinates to 1e-3: tight enough to tell apart two relaxations that differ
physically, loose enough that a round trip through a CIF file does not change the hash.

Molecules (no periodicity) are keyed by their sorted atomic numbers and sorted interatomic
distances, which do not depend on orientation, origin or atom order.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

#: hash length in hex characters (64 bits: no collisions expected below ~10^9 structures)
HASH_CHARS = 16
LENGTH_DECIMALS = 3  # Å
ANGLE_DECIMALS = 2  # degrees
FRAC_DECIMALS = 3


def _round_frac(frac: np.ndarray) -> np.ndarray:
    # Round first, then wrap, so that 0.99999 and 0.0 become the same 0.0.
    f = np.round(np.asarray(frac, dtype=float), FRAC_DECIMALS) % 1.0
    return np.round(f, FRAC_DECIMALS) % 1.0


def _lattice_parameters(lattice: np.ndarray) -> list[float]:
    a, b, c = (float(np.linalg.norm(v)) for v in lattice)

    def ang(u, v):
        return float(
            np.degrees(np.arccos(np.clip(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v), -1, 1)))
        )

    angles = [ang(lattice[1], lattice[2]), ang(lattice[0], lattice[2]), ang(lattice[0], lattice[1])]
    return [round(x, LENGTH_DECIMALS) for x in (a, b, c)] + [round(x, ANGLE_DECIMALS) for x in angles]


def canonical_form(structure, symprec: float = 1e-3) -> dict:
    """The setting-independent description that :func:`canonical_hash` hashes (JSON-able)."""
    if structure.is_molecule:
        numbers = np.sort(structure.numbers)
        pos = structure.positions
        d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)[np.triu_indices(len(pos), 1)]
        return {
            "kind": "molecule",
            "numbers": numbers.tolist(),
            "distances": np.round(np.sort(d), 2).tolist(),
        }
    import spglib

    cell = (
        np.asarray(structure.cell),
        np.asarray(structure.scaled_positions()),
        np.asarray(structure.numbers),
    )
    std = spglib.standardize_cell(cell, to_primitive=True, no_idealize=False, symprec=symprec)
    if std is None:  # spglib found no symmetry at this tolerance: fall back to the cell as given (P1)
        std = cell
    lattice, frac, numbers = (np.asarray(x) for x in std)
    species, counts = np.unique(numbers, return_counts=True)
    rarest = species[np.argmin(counts)]
    best = None
    for origin in frac[numbers == rarest]:
        f = _round_frac(frac - origin)
        order = np.lexsort((f[:, 2], f[:, 1], f[:, 0], numbers))
        key = [[int(numbers[i]), *map(float, f[i])] for i in order]
        if best is None or key < best:
            best = key
    return {"kind": "crystal", "lattice": _lattice_parameters(lattice), "sites": best}


def canonical_hash(structure, symprec: float = 1e-3) -> str:
    """SHA-256 (first :data:`HASH_CHARS` hex chars) of :func:`canonical_form`.

    Parameters
    ----------
    structure : atomvib.structure.Structure
    symprec : float
        spglib tolerance in Å.
    """
    payload = json.dumps(canonical_form(structure, symprec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:HASH_CHARS]
