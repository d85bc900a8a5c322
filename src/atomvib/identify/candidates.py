"""Candidate structures for :func:`atomvib.identify.identify`: reading them, and generating the common sets.

Reading: files, directories (structure files inside, recursively) and glob patterns, as ``atomvib batch`` takes
them (:func:`atomvib.batch.runner.expand_inputs`); every frame of a multi-structure file is one candidate.

Generating (written as candidate files by :func:`write_candidates`):

* :func:`hydrogen_placements` — ``count`` H (or D, or any element) on given sites of a host (interstitials,
  acid sites): every symmetry-distinct way to occupy ``count`` of the sites;
* :func:`ordered_configurations` — ordered versions of a disordered site: ``count`` atoms of one element on the
  sites of another (substitution) or removed (vacancies), in a supercell;
* :func:`from_disordered_cif` — the same, with the site and the numbers read from a CIF with partial
  occupancies (read by pymatgen).

The enumerator is ours, and deliberately small: :func:`itertools.combinations` over the sites, and duplicates
removed with the space group of the decorated lattice (spglib). Two configurations are the same candidate when
a symmetry operation of the host supercell with all its candidate sites marked (translations of the supercell
included) maps one set of occupied sites onto the other. Why not a library: pymatgen's enumerator
(``EnumerateStructureTransformation``) needs the enumlib binaries (``enum.x``, ``makestr.x``), which are not
installed with pymatgen, and pyxtal is not a dependency; the brute-force orbit computation is exact and fast
for the cells that phonon calculations afford (its limit, :data:`MAX_COMBINATIONS`, is checked before work).
pymatgen's ``StructureMatcher`` gives the same counts on the tested cases (``tests/test_identify.py``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..structure import Structure

#: the most site combinations an enumeration may visit (a guard: C(32, 4) = 35 960, C(64, 4) = 635 376)
MAX_COMBINATIONS = 2_000_000


@dataclass(frozen=True, eq=False)
class Candidate:
    """One candidate structure.

    Attributes
    ----------
    name : str, unique among the candidates of a run (file stem, ``@k`` for frame k of a multi-structure file)
    structure : Structure
    path : str, the file it was read from ("" for one made in memory)
    """

    name: str
    structure: Structure
    path: str = ""


def read_candidates(inputs) -> list[Candidate]:
    """Candidates from files, directories and glob patterns (and Structure / ase.Atoms objects, named by formula).

    Raises
    ------
    InputError
        No candidates; a file that cannot be read; a molecule (the ranking is for crystals).
    """
    from ..batch.runner import expand_inputs
    from ..structure import read_structures

    if isinstance(inputs, (str, Path, Structure)) or hasattr(inputs, "get_positions"):
        inputs = [inputs]
    out: list[Candidate] = []
    files = []
    for inp in inputs or ():
        if isinstance(inp, Structure):
            out.append(Candidate(inp.source or inp.formula, inp))
        elif hasattr(inp, "get_positions"):  # ase.Atoms
            s = Structure.from_ase(inp)
            out.append(Candidate(s.formula, s))
        elif isinstance(inp, Candidate):
            out.append(inp)
        else:
            files += expand_inputs([inp])
    for f in files:
        if not Path(f).exists():
            raise InputError(f"candidate {f}: no such file or directory (or the pattern matched nothing)",
                             fix="check the --candidates paths")
        frames = read_structures(f)
        stem = Path(f).stem if Path(f).suffix else Path(f).name
        for k, s in enumerate(frames):
            out.append(Candidate(stem if len(frames) == 1 else f"{stem}@{k}", s, str(f)))
    if not out:
        raise InputError("no candidate structures", fix="give structure files, a directory or a glob with --candidates")
    seen: dict[str, int] = {}
    named = []
    for c in out:
        if c.structure.is_molecule:
            raise InputError(f"candidate {c.name} is a molecule (no periodic cell)",
                             fix="identify ranks crystals; give periodic structures (CIF, POSCAR, extxyz with a cell)")
        n = seen.get(c.name, 0)
        seen[c.name] = n + 1
        named.append(c if n == 0 else Candidate(f"{c.name}#{n}", c.structure, c.path))
    return named


#: tolerances of "the same structure" (pymatgen StructureMatcher, no volume scaling): numerical noise of one
#: structure written twice, far below a real distortion (a 0.02 Å rattle, rutile vs CaCl2-type, a 1 % strain)
SAME_LTOL, SAME_STOL, SAME_ANGLE_TOL, SAME_VOLUME_RTOL = 0.005, 0.005, 0.1, 0.002


def duplicate_candidates(cands: list[Candidate], spacegroups: dict | None = None) -> dict[str, str]:
    """Candidates that are the same structure as an earlier one: ``{name: name of the first}``.

    Databases list one crystal under several identifiers (Materials Project has many such pairs), and two
    copies of a candidate split its probability in half. Candidates are compared only within the same reduced
    formula, space group and volume per atom (0.2 %), then with pymatgen's ``StructureMatcher`` at tight
    tolerances (:data:`SAME_LTOL` ...; no volume scaling, supercells allowed), so thousands of candidates cost
    little. ``spacegroups``: name -> space group symbol already known (else spglib finds it).
    """
    def key(c: Candidate):
        try:
            sg = spacegroups[c.name] if spacegroups and c.name in spacegroups else c.structure.spacegroup()
        except Exception:  # spglib failure on a pathological cell: compare it with everything of its formula
            sg = ""
        return c.structure.formula, sg  # the reduced formula, elements in a fixed order

    groups: dict = {}
    for c in cands:
        groups.setdefault(key(c), []).append(c)
    out: dict[str, str] = {}
    matcher = None
    for members in groups.values():
        if len(members) < 2:
            continue
        vpa = [abs(float(np.linalg.det(m.structure.cell))) / m.structure.natoms for m in members]
        for j in range(1, len(members)):
            for i in range(j):
                if members[i].name in out or abs(vpa[i] - vpa[j]) > SAME_VOLUME_RTOL * vpa[i]:
                    continue
                if matcher is None:
                    from pymatgen.analysis.structure_matcher import StructureMatcher

                    matcher = StructureMatcher(ltol=SAME_LTOL, stol=SAME_STOL, angle_tol=SAME_ANGLE_TOL,
                                               scale=False, attempt_supercell=True)
                if matcher.fit(_pmg(members[i].structure), _pmg(members[j].structure)):
                    out[members[j].name] = members[i].name
                    break
    return out


def _pmg(structure: Structure):
    from pymatgen.core import Structure as PmgStructure

    return PmgStructure(np.asarray(structure.cell, float), structure.symbols, structure.scaled_positions())


# ------------------------------------------------------------------------------------------ enumeration
@dataclass(frozen=True, eq=False)
class Configuration:
    """One symmetry-distinct configuration.

    Attributes
    ----------
    structure : Structure
    occupied : dict species -> tuple of int, the candidate-site indices given to each species
    multiplicity : int, how many of the enumerated configurations are equivalent to this one
    """

    structure: Structure
    occupied: dict
    multiplicity: int


def _site_permutations(lattice, frac_host, numbers_host, frac_sites, symprec: float) -> np.ndarray:
    """Permutations of the candidate sites under the space group of host + sites (sites marked as one dummy
    species), shape (n_ops, n_sites)."""
    import spglib

    dummy = 0 if 0 not in set(numbers_host) else max(numbers_host) + 1
    pos = np.vstack([frac_host, frac_sites]) if len(frac_host) else np.asarray(frac_sites, float)
    nums = list(numbers_host) + [dummy] * len(frac_sites)
    ds = spglib.get_symmetry((np.asarray(lattice, float), pos, nums), symprec=symprec)
    if ds is None:
        raise InputError("spglib could not find the symmetry of the host with its sites",
                         fix="check the structure and the sites (overlapping atoms?)")
    perms = []
    fs = np.asarray(frac_sites, float)
    for R, t in zip(ds["rotations"], ds["translations"]):
        img = fs @ R.T + t
        d = img[:, None, :] - fs[None, :, :]
        d -= np.round(d)
        dist = np.linalg.norm(d @ np.asarray(lattice, float), axis=2)
        j = np.argmin(dist, axis=1)
        if np.all(dist[np.arange(len(fs)), j] < max(10 * symprec, 1e-3)) and len(set(j)) == len(fs):
            perms.append(j)
    return np.unique(np.array(perms, dtype=int), axis=0)


def _canonical(perms: np.ndarray, groups) -> tuple:
    """The smallest image of a configuration (tuple of sorted site-index tuples, one per species) under ``perms``."""
    best = None
    for p in perms:
        img = tuple(tuple(sorted(p[list(g)])) for g in groups)
        if best is None or img < best:
            best = img
    return best


def enumerate_configurations(
    lattice,
    frac_sites,
    species_counts: dict,
    *,
    host_frac=(),
    host_numbers=(),
    symprec: float = 1e-3,
    max_combinations: int = MAX_COMBINATIONS,
) -> list[tuple[dict, int]]:
    """Symmetry-distinct ways to put ``species_counts`` (species → count) on ``frac_sites``.

    Parameters
    ----------
    lattice : (3, 3) array, Å, rows are the cell vectors
    frac_sites : (n, 3) array, fractional coordinates of the candidate sites
    species_counts : dict str -> int; the sites not given a species stay empty (or keep what the caller puts there)
    host_frac, host_numbers : the fixed atoms (fractional coordinates, atomic numbers) whose symmetry counts
    symprec : float, Å

    Returns
    -------
    list of (occupied, multiplicity): ``occupied`` species → tuple of site indices, one entry per orbit, in the
    order first met (lexicographic over the site combinations)
    """
    fs = np.asarray(frac_sites, float).reshape(-1, 3)
    n = len(fs)
    species = [str(k) for k in species_counts]
    counts = [int(species_counts[k]) for k in species]
    if any(c < 0 for c in counts) or sum(counts) > n:
        raise InputError(f"cannot place {dict(zip(species, counts))} on {n} sites",
                         fix="use counts ≥ 0 whose sum is at most the number of sites")
    total = 1
    left = n
    for c in counts:
        total *= math.comb(left, c)
        left -= c
    if total > max_combinations:
        raise InputError(
            f"{total:,} configurations to enumerate ({n} sites, counts {dict(zip(species, counts))}): too many",
            fix=f"use a smaller supercell or fewer sites (limit {max_combinations:,})",
        )
    perms = _site_permutations(lattice, np.asarray(host_frac, float).reshape(-1, 3), list(host_numbers), fs, symprec)
    seen: set = set()
    out: list[tuple[dict, int]] = []

    def assignments(free, k):
        if k == len(counts):
            yield ()
            return
        for comb in itertools.combinations(free, counts[k]):
            rest = [i for i in free if i not in comb]
            for tail in assignments(rest, k + 1):
                yield (comb, *tail)

    for groups in assignments(list(range(n)), 0):
        key = tuple(tuple(sorted(g)) for g in groups)
        if key in seen:
            continue
        orbit = {tuple(tuple(sorted(p[list(g)])) for g in groups) for p in perms}
        seen |= orbit
        out.append(({sp: key[i] for i, sp in enumerate(species)}, len(orbit)))
    return out


def _supercell(atoms, supercell):
    from ase.build import make_supercell

    if supercell is None:
        return atoms.copy()
    m = np.asarray(supercell, int)
    m = np.diag(m) if m.shape == (3,) else m.reshape(3, 3)
    if round(abs(np.linalg.det(m))) < 1:
        raise InputError(f"supercell {supercell} has no volume", fix="give three positive integers, e.g. 2 2 1")
    return make_supercell(atoms, m)


def _as_atoms(host):
    if isinstance(host, Structure):
        return host.to_ase()
    if isinstance(host, (str, Path)):
        from ..structure import read_structure

        return read_structure(host).to_ase()
    return host.copy()


def hydrogen_placements(host, sites, count: int = 1, *, element: str = "H", supercell=None,
                        min_distance_a: float = 1.0, symprec: float = 1e-3) -> list[Configuration]:
    """Every symmetry-distinct placement of ``count`` atoms of ``element`` on candidate ``sites`` of a host.

    Parameters
    ----------
    host : Structure, ase.Atoms or path
    sites : (n, 3) array, fractional coordinates in the **host** cell (repeated with ``supercell``)
    count : int, how many atoms to place
    element : str, "H" by default ("D" is written as H; set deuterium masses with ``--isotopes H=2`` later)
    supercell : 3 ints or 3×3 ints, optional, repeat the host (and its sites) first
    min_distance_a : float, configurations with two placed atoms closer than this (Å) are dropped
    symprec : float, Å

    Returns
    -------
    list of Configuration (the multiplicities count every placement, dropped ones included)
    """
    from ase import Atoms

    atoms0 = _as_atoms(host)
    sites = np.asarray(sites, float).reshape(-1, 3)
    if len(sites) == 0:
        raise InputError("no sites to place atoms on", fix="give fractional coordinates, e.g. --sites '0.5,0.5,0.5'")
    element = "H" if element in ("D", "T") else element
    marker = atoms0.copy()
    marker.extend(Atoms(["X"] * len(sites), positions=sites @ atoms0.cell.array))
    big = _supercell(marker, supercell)
    is_site = np.array([s == "X" for s in big.get_chemical_symbols()])
    host_big = big[~is_site]
    lattice = big.cell.array
    frac_sites = big.get_scaled_positions(wrap=True)[is_site]
    confs = enumerate_configurations(lattice, frac_sites, {element: count},
                                     host_frac=host_big.get_scaled_positions(wrap=True),
                                     host_numbers=host_big.numbers, symprec=symprec)
    out = []
    for occ, mult in confs:
        idx = list(occ[element])
        at = host_big.copy()
        cart = frac_sites[idx] @ lattice
        if len(idx) > 1 and min_distance_a > 0:
            from ase.geometry import get_distances

            _, d = get_distances(cart, cell=lattice, pbc=True)
            if np.min(d[np.triu_indices(len(idx), 1)]) < min_distance_a:
                continue
        at.extend(Atoms([element] * len(cart), positions=cart))
        out.append(Configuration(Structure.from_ase(at), {element: tuple(idx)}, mult))
    return out


def ordered_configurations(structure, site, substitute: dict, *, supercell=None,
                           symprec: float = 1e-3) -> list[Configuration]:
    """Ordered configurations of a disordered site: some atoms of one sublattice replaced or removed.

    Parameters
    ----------
    structure : Structure, ase.Atoms or path, the parent with the site fully occupied by one element
    site : str or sequence of int, the element symbol of the sublattice (every atom of it), or atom indices
        (of the parent; repeated with ``supercell``)
    substitute : dict element -> int, how many sublattice atoms become each element; ``"X"`` or ``"vac"`` removes
        them (vacancies). E.g. ``{"Au": 2}``, ``{"vac": 1}``, ``{"Ga": 1, "vac": 1}``.
    supercell : 3 ints or 3×3 ints, optional
    symprec : float, Å
    """
    atoms0 = _as_atoms(structure)
    if isinstance(site, str):
        mark = np.array([s == site for s in atoms0.get_chemical_symbols()])
        if not mark.any():
            raise InputError(f"no {site} atom in the parent structure", fix="name an element of the structure")
    else:
        mark = np.zeros(len(atoms0), bool)
        idx = np.asarray(list(site), int)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= len(atoms0):
            raise InputError(f"site indices {list(site)} outside 0–{len(atoms0) - 1}", fix="give atom indices of the parent")
        mark[idx] = True
    tagged = atoms0.copy()
    tagged.set_tags(mark.astype(int))
    big = _supercell(tagged, supercell)
    on = big.get_tags() == 1
    lattice = big.cell.array
    frac = big.get_scaled_positions(wrap=True)
    species = {("vac" if k in ("X", "vac", "Va") else k): int(v) for k, v in substitute.items()}
    confs = enumerate_configurations(lattice, frac[on], species, host_frac=frac[~on],
                                     host_numbers=big.numbers[~on], symprec=symprec)
    site_idx = np.flatnonzero(on)
    out = []
    for occ, mult in confs:
        at = big.copy()
        symbols = at.get_chemical_symbols()
        drop = []
        for sp, ids in occ.items():
            for i in ids:
                if sp == "vac":
                    drop.append(int(site_idx[i]))
                else:
                    symbols[int(site_idx[i])] = sp
        at.set_chemical_symbols(symbols)
        at.set_tags(0)
        if drop:
            del at[drop]
        out.append(Configuration(Structure.from_ase(at), dict(occ), mult))
    return out


def from_disordered_cif(path, supercell=None, symprec: float = 1e-3) -> list[Configuration]:
    """Ordered configurations of a CIF with one partially occupied site (read with pymatgen).

    The majority species of the site becomes the parent; each minority species (or vacancy) gets
    round(occupancy × number of sites in the supercell) of its sites, which must be close to a whole number
    (within 0.05 of a site): otherwise pick a supercell that makes it one.
    """
    try:
        from pymatgen.core import Structure as PmgStructure
    except ImportError:  # pragma: no cover - pymatgen is installed with atomvib's extras
        raise InputError("reading a disordered CIF needs pymatgen", fix="pip install pymatgen") from None
    try:
        s = PmgStructure.from_file(str(path))
    except Exception as exc:  # pymatgen raises many types for bad files
        raise InputError(f"{path}: cannot read it as a CIF ({str(exc).splitlines()[0] if str(exc) else exc})",
                         fix="check the file") from None
    disordered = [i for i, site in enumerate(s) if not site.is_ordered]
    if not disordered:
        raise InputError(f"{path} has no partially occupied site", fix="it is already ordered: use it as a candidate")
    occ0 = s[disordered[0]].species.as_dict()
    if any(s[i].species.as_dict() != occ0 for i in disordered):
        raise InputError(f"{path} has more than one kind of disordered site",
                         fix="order the others first (one disordered sublattice at a time)")
    major = max(occ0, key=occ0.get)
    from pymatgen.io.ase import AseAtomsAdaptor

    parent = s.copy()
    for i in disordered:
        parent.replace(i, major)
    atoms = AseAtomsAdaptor.get_atoms(parent)
    m = np.asarray(supercell if supercell is not None else (1, 1, 1), int)
    n_sites = len(disordered) * round(abs(np.linalg.det(np.diag(m) if m.shape == (3,) else m.reshape(3, 3))))
    counts = {}
    vac = 1.0 - sum(occ0.values())
    for sp, x in [*((k, v) for k, v in occ0.items() if k != major), *([("vac", vac)] if vac > 1e-6 else [])]:
        k = x * n_sites
        if abs(k - round(k)) > 0.05:
            raise InputError(f"occupancy {x:g} of {sp} on {n_sites} sites is {k:.3g} atoms, not a whole number",
                             fix="choose a supercell in which every occupancy gives whole atoms (--supercell)")
        counts[str(sp)] = int(round(k))
    return ordered_configurations(atoms, list(disordered), counts, supercell=supercell, symprec=symprec)


def write_candidates(configurations, out_dir, prefix: str = "cand", fmt: str = "cif") -> list[Path]:
    """Write each configuration as ``{out_dir}/{prefix}_{i:03d}.{fmt}`` and a ``candidates.csv`` index
    (file, formula, natoms, multiplicity, occupied sites); returns the structure files."""
    from ase.io import write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, rows = [], ["file,formula,natoms,multiplicity,occupied"]
    for i, c in enumerate(configurations):
        p = out / f"{prefix}_{i:03d}.{fmt}"
        write(str(p), c.structure.to_ase(), format=fmt)
        paths.append(p)
        occ = " ".join(f"{sp}:{'/'.join(map(str, ids))}" for sp, ids in c.occupied.items())
        rows.append(f"{p.name},{c.structure.formula},{c.structure.natoms},{c.multiplicity},{occ}")
    (out / "candidates.csv").write_text("\n".join(rows) + "\n")
    return paths
