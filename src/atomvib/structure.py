"""Read, validate and standardise structures; decide crystal vs molecule.

A :class:`Structure` is a frozen snapshot (numbers, positions, cell, pbc) with the few derived
facts every later step needs (formula, kind, space group). File reading is ASE's; symmetry is
spglib's. Arrays: ``positions`` (natoms, 3) Å Cartesian, ``cell`` (3, 3) Å row vectors,
``numbers`` (natoms,) atomic numbers, ``masses`` (natoms,) amu.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path

import numpy as np

from .errors import InputError

MIN_DISTANCE_A = 0.5
#: an atom of a periodic structure with no neighbour (periodic images included) this close is isolated: no
#: condensed phase has nearest neighbours this far apart (Cs, the widest, has 5.3 Å)
ISOLATED_A = 7.0
#: occupancies this close to 1 count as full (rounding in refined CIFs)
OCCUPANCY_TOL = 0.005


def _frozen(a, dtype) -> np.ndarray:
    arr = np.array(a, dtype=dtype, copy=True)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Structure:
    """An immutable atomic structure.

    Attributes
    ----------
    numbers : ndarray, shape (natoms,), int
        Atomic numbers.
    positions : ndarray, shape (natoms, 3), Å
        Cartesian positions.
    cell : ndarray, shape (3, 3), Å
        Lattice vectors as rows (zeros for a molecule).
    pbc : tuple of 3 bool
        Periodicity along each cell vector; all False for a molecule.
    masses : ndarray, shape (natoms,), amu
        Atomic masses (ASE's standard isotopic averages unless the file set others).
    source : str
        Where the structure came from (a path, or a description).
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: tuple[bool, bool, bool]
    masses: np.ndarray
    source: str = ""
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "numbers", _frozen(self.numbers, int))
        object.__setattr__(self, "positions", _frozen(self.positions, float).reshape(-1, 3))
        object.__setattr__(self, "cell", _frozen(self.cell, float).reshape(3, 3))
        object.__setattr__(self, "masses", _frozen(self.masses, float))
        object.__setattr__(self, "pbc", tuple(bool(p) for p in np.broadcast_to(self.pbc, 3)))

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_ase(cls, atoms, source: str = "") -> Structure:
        """Snapshot an :class:`ase.Atoms` (the Atoms object is not kept)."""
        _check_occupancy(getattr(atoms, "info", None) or {}, source)
        pbc = tuple(bool(p) for p in atoms.pbc)
        cell = np.array(atoms.cell[:]) if any(pbc) else np.zeros((3, 3))
        if any(pbc) and abs(np.linalg.det(cell)) < 1e-6:
            raise InputError(
                f"{source or 'structure'} is marked periodic but its cell has zero volume",
                fix="give the lattice vectors, or remove the cell/pbc to treat it as a molecule",
            )
        return cls(
            numbers=atoms.numbers,
            positions=atoms.positions,
            cell=cell,
            pbc=pbc,
            masses=atoms.get_masses(),
            source=source,
        )

    def to_ase(self):
        """A new :class:`ase.Atoms` (no calculator attached)."""
        from ase import Atoms

        return Atoms(
            numbers=self.numbers,
            positions=self.positions,
            cell=self.cell,
            pbc=self.pbc,
            masses=self.masses,
        )

    def with_positions(self, positions, cell=None) -> Structure:
        """A copy with new positions (and optionally a new cell), same atoms and masses."""
        return Structure(
            numbers=self.numbers,
            positions=positions,
            cell=self.cell if cell is None else cell,
            pbc=self.pbc,
            masses=self.masses,
            source=self.source,
            info=dict(self.info),
        )

    def with_masses(self, masses) -> Structure:
        """A copy with other atomic masses (amu, shape (natoms,)): isotopes (:mod:`atomvib.harmonic.isotopes`)."""
        m = np.asarray(masses, dtype=float)
        if m.shape != (self.natoms,) or not np.all(np.isfinite(m)) or np.any(m <= 0):
            raise InputError(f"masses must be {self.natoms} finite positive numbers (amu)", fix="give one mass per atom")
        return Structure(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc, masses=m,
                         source=self.source, info=dict(self.info))

    # ---- facts ----------------------------------------------------------------------------
    @property
    def natoms(self) -> int:
        return len(self.numbers)

    @property
    def symbols(self) -> list[str]:
        from ase.data import chemical_symbols

        return [chemical_symbols[z] for z in self.numbers]

    @property
    def is_molecule(self) -> bool:
        """True when no direction is periodic (no cell/pbc in the input)."""
        return not any(self.pbc)

    @property
    def kind(self) -> str:
        return "molecule" if self.is_molecule else "crystal"

    @property
    def elements(self) -> list[str]:
        """Distinct element symbols in order of first appearance."""
        return list(dict.fromkeys(self.symbols))

    @property
    def formula_units(self) -> int:
        """Number of formula units in this cell (gcd of the element counts); 1 for a molecule."""
        if self.is_molecule:
            return 1 if self.natoms else 0
        counts = [self.symbols.count(s) for s in self.elements]
        return int(reduce(math.gcd, counts)) if counts else 0

    @property
    def formula(self) -> str:
        """The formula as chemists write it: reduced for a crystal (``NaCl``, ``Al2O3``, ``CaCO3``), the whole
        molecule for a molecule (``H2O``, ``C6H6``). See :func:`chemical_formula` for the order."""
        z = self.formula_units or 1
        return chemical_formula({s: self.symbols.count(s) // z for s in self.elements}, hill=self._hill)

    @property
    def cell_formula(self) -> str:
        """Formula of the whole cell in the same order, e.g. ``Na4Cl4``, ``Al4O6``."""
        return chemical_formula({s: self.symbols.count(s) for s in self.elements}, hill=self._hill)

    @property
    def _hill(self) -> bool:
        return self.is_molecule and "C" in self.elements

    def spglib_cell(self):
        return (self.cell, self.scaled_positions(), self.numbers)

    def scaled_positions(self) -> np.ndarray:
        """Fractional coordinates, shape (natoms, 3)."""
        if self.is_molecule:
            raise InputError("a molecule has no fractional coordinates", fix="give a periodic structure")
        return np.linalg.solve(self.cell.T, self.positions.T).T

    def spacegroup(self, symprec: float = 1e-3) -> str:
        """International symbol and number, e.g. ``Fd-3m (227)``; ``P1 (1)`` if spglib finds none."""
        if self.is_molecule:
            return ""
        import spglib

        ds = spglib.get_symmetry_dataset(self.spglib_cell(), symprec=symprec)
        if ds is None:
            return "P1 (1)"
        return f"{ds.international} ({ds.number})"

    def primitive(self, symprec: float = 1e-3) -> Structure:
        """spglib's standardized primitive cell (the structure itself for molecules)."""
        if self.is_molecule:
            return self
        import spglib

        res = spglib.standardize_cell(self.spglib_cell(), to_primitive=True, no_idealize=False, symprec=symprec)
        if res is None:
            return self
        lattice, frac, numbers = res
        if len(numbers) == self.natoms:
            # keep the user's setting when it is already primitive: fewer surprises in the output
            return self
        from ase import Atoms

        atoms = Atoms(numbers=numbers, scaled_positions=frac, cell=lattice, pbc=True)
        # carry over custom masses per element
        mass_of = {int(z): float(m) for z, m in zip(self.numbers, self.masses)}
        atoms.set_masses([mass_of[int(z)] for z in numbers])
        return Structure.from_ase(atoms, source=self.source)

    def content_hash(self) -> str:
        """Hash of numbers, rounded positions and cell: equal for the same cell in the same setting."""
        h = hashlib.sha256()
        h.update(self.numbers.tobytes())
        h.update(np.round(self.positions, 5).tobytes())
        h.update(np.round(self.cell, 5).tobytes())
        h.update(np.round(self.masses, 4).tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> str:
        """One line for the user: formula, atoms, kind and space group."""
        sg = f", space group {self.spacegroup()}" if not self.is_molecule else ""
        return f"{self.cell_formula} ({self.natoms} atoms, {self.kind}{sg})"

    def validate(self, min_distance_a: float = MIN_DISTANCE_A) -> Structure:
        """Check the structure is usable; return it. Raises :class:`InputError` otherwise."""
        if self.natoms == 0:
            raise InputError(f"{self.source or 'structure'} contains no atoms", fix="check the file content")
        if np.any(self.numbers <= 0):
            raise InputError(
                f"{self.source or 'structure'} contains dummy atoms (atomic number 0)",
                fix="replace 'X' sites by real elements",
            )
        if not np.all(np.isfinite(self.positions)) or not np.all(np.isfinite(self.cell)):
            raise InputError(f"{self.source or 'structure'} has non-finite coordinates", fix="check the file")
        if self.natoms == 1 and self.is_molecule:
            raise InputError(
                f"{self.source or 'structure'} is a single {self.symbols[0]} atom: it has no vibrations "
                "(three translations, no normal modes)",
                fix="give a molecule of two or more atoms, or a crystal with its cell (CIF, POSCAR)",
            )
        _check_isolated(self)
        d, i, j = _shortest_distance(self)
        if d < min_distance_a:
            s = self.symbols
            raise InputError(
                f"atoms {i} ({s[i]}) and {j} ({s[j]}) are {d:.3f} Å apart, closer than {min_distance_a} Å",
                fix="check the coordinates/units (fractional vs Cartesian) and remove duplicated sites",
            )
        return self


def chemical_formula(counts: dict, hill: bool = False) -> str:
    """A formula from element counts, written as chemists do.

    Inorganic compounds: elements by increasing Pauling electronegativity (``NaCl``, ``Al2O3``, ``H2O``,
    ``CaCO3``; pymatgen's convention); ``hill`` (organic molecules): C, H, then alphabetical (``C2H6O``).
    """
    syms = [s for s, n in counts.items() if n > 0]
    if hill:
        first = [s for s in ("C", "H") if s in syms]
        order = first + sorted(s for s in syms if s not in first)
    else:
        order = sorted(syms, key=lambda s: (_electronegativity(s), s))
    return "".join(s if counts[s] == 1 else f"{s}{counts[s]}" for s in order)


def _electronegativity(symbol: str) -> float:
    try:
        import warnings

        from pymatgen.core.periodic_table import Element

        with warnings.catch_warnings():  # pymatgen warns for elements without a value (He, Ne, Ar)
            warnings.simplefilter("ignore")
            x = Element(symbol).X
        return float(x) if math.isfinite(x) else 99.0
    except Exception:  # pymatgen missing or no value (noble gases): after everything else
        return 99.0


def _check_occupancy(info: dict, source: str) -> None:
    """Refuse partially occupied sites (ASE's ``info['occupancy']`` from the CIF ``_atom_site_occupancy``):
    reading keeps one species per site at full occupancy, which is another, ordered crystal."""
    occ = info.get("occupancy")
    if not isinstance(occ, dict):
        return
    where = source or "structure"
    for species in occ.values():
        try:
            sp = {str(el): float(x) for el, x in dict(species).items() if float(x) > OCCUPANCY_TOL}
        except (TypeError, ValueError):
            continue
        if not sp:
            continue
        total = sum(sp.values())
        site = "".join(f"{el}{x:g}" for el, x in sp.items())
        if len(sp) > 1:
            raise InputError(
                f"{where}: a site is shared by {site} (partial occupancy, a disordered crystal); reading it would "
                "keep one species per site, an ordered crystal of another composition",
                fix="order the structure, e.g. with a supercell of the ordered arrangement (pymatgen's "
                "OrderDisorderedStructureTransformation, or a special quasirandom structure), and give that file",
            )
        if abs(total - 1.0) > OCCUPANCY_TOL:
            el, x = next(iter(sp.items()))
            raise InputError(
                f"{where}: the {el} site has occupancy {x:g} (vacancies or a split site); reading it would fill it",
                fix="order the structure: a supercell with the vacancies placed explicitly (atoms removed), or set "
                "_atom_site_occupancy to 1 if the site is full",
            )


def _check_isolated(s: Structure) -> None:
    """Refuse a periodic structure with an atom that has no neighbour within :data:`ISOLATED_A` (periodic images
    included): an atom in a vacuum box has no phonons (every frequency zero), whatever the engine says."""
    if s.is_molecule:
        return
    from ase.neighborlist import neighbor_list

    ii = neighbor_list("i", s.to_ase(), ISOLATED_A)
    lonely = np.flatnonzero(np.bincount(ii, minlength=s.natoms) == 0)
    if len(lonely) == 0:
        return
    k = int(lonely[0])
    what = f"its only atom ({s.symbols[k]})" if s.natoms == 1 else f"atom {k} ({s.symbols[k]})"
    raise InputError(
        f"{s.source or 'structure'} is periodic but {what} has no neighbour within {ISOLATED_A:g} Å, periodic images "
        "included: an isolated atom in a vacuum box has no phonons",
        fix="give the crystal's real cell (bulk lattice vectors); a molecule goes in a file without a cell (.xyz), "
        "and a single atom has no vibrations",
    )


def _shortest_distance(s: Structure) -> tuple[float, int, int]:
    if s.natoms == 1 and s.is_molecule:
        return math.inf, 0, 0
    from ase.neighborlist import neighbor_list

    atoms = s.to_ase()
    ii, jj, dd = neighbor_list("ijd", atoms, MIN_DISTANCE_A * 4)
    if len(dd) == 0:
        return math.inf, 0, 0
    k = int(np.argmin(dd))
    return float(dd[k]), int(ii[k]), int(jj[k])


def read_structures(path, index: str | int = ":", fmt: str | None = None) -> list[Structure]:
    """Read every structure in a file ASE can read (CIF, POSCAR, extxyz, XYZ, ...).

    Raises
    ------
    InputError
        Missing, empty, unreadable or unknown-format file, or no atoms in it.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file", fix="check the path")
    if p.is_dir():
        raise InputError(f"{path} is a directory, not a structure file", fix="give a structure file")
    if p.stat().st_size == 0:
        raise InputError(f"{path} is empty", fix="give a file that contains a structure")
    import warnings

    from ase.io import read

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            images = read(str(p), index=index, format=fmt)
    except Exception as exc:  # ASE raises many types for bad files; all mean "cannot read"
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        from ase.io.formats import UnknownFileTypeError

        if isinstance(exc, UnknownFileTypeError) or "Could not guess file type" in msg:
            raise InputError(
                f"{path}: unknown structure format",
                fix="name the format with --format (e.g. --format vasp), or use a usual extension (.cif, POSCAR, .xyz)",
            ) from None
        raise InputError(f"{path}: cannot read structure ({msg})", fix="check that the file is a valid structure file") from None
    if not isinstance(images, list):
        images = [images]
    if not images:
        raise InputError(f"{path} contains no structure", fix="check the file content")
    out = []
    for k, a in enumerate(images):
        src = str(p) if len(images) == 1 else f"{p}@{k}"
        out.append(Structure.from_ase(a, source=src).validate())
    return out


def read_structure(path, fmt: str | None = None) -> Structure:
    """Read the last structure in a file (the usual meaning of "the structure" in a trajectory)."""
    return read_structures(path, index=-1, fmt=fmt)[0]
