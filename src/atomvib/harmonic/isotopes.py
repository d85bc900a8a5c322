"""Isotopes: atomic masses other than the natural ones, for an element or for single sites.

Force constants (crystals) and the Hessian (molecules) do not depend on the masses: an isotope changes only the
dynamical matrix. :func:`with_isotopes` therefore recomputes the modes of a saved result from its force constants
with new masses and no new force evaluation, and ``atomvib.phonons(..., isotopes={"H": 2})`` applies the masses
after the forces, whose checkpoint is keyed by the natural-mass structure: a re-run with another isotope reuses
every displaced cell.

Specification
-------------
A sequence of ``(target, mass number)`` pairs (:func:`normalise_isotopes` also takes a dict, or the CLI's
``"H=2"`` strings); a target is

* an element symbol, ``"H"``: every atom of that element;
* a site index, ``"5"``: atom 5, counted from 0 as ASE and atomvib's messages count, in the cell the phonons are
  computed in (a molecule as given; a crystal's cell after the primitive reduction, the ``structure`` of its
  result: ``atomvib phonons --no-primitive`` keeps the input cell);
* both, ``"5:O"``: atom 5, which must be an O (a guard against counting from 1).

They are applied in order, a later one winning where they overlap (``[("H", 2), ("3", 1)]`` deuterates every H
but site 3). In a crystal, sites that symmetry maps onto each other must get the same mass, since the phonons
use the crystal's symmetry (force constants, irreducible q-mesh): a label that breaks it is refused.

Masses: the relative atomic masses of the stable isotopes from NIST's "Atomic Weights and Isotopic Compositions"
(masses of the AME2012 evaluation: M. Wang et al., Chinese Phys. C 36, 1603 (2012)), the static table that
phonopy ships (``phonopy.structure.atomic_data``; nothing is downloaded: ``ase.data.isotopes`` holds only a
downloader), plus ³H (3.01604928 amu, AME2016, as in Sears' table of Euphonic).

Species labels: neutron cross-sections depend on the isotope. Results keep no isotope labels, only masses; the
label of an atom (:func:`species_label`) is the element symbol, or ``"<A><symbol>"`` (``"2H"``, ``"18O"``)
where its mass is an isotope's (the closest of the natural and isotopic masses, within 0.01 amu), so that any
route that sets masses (``--isotope``, a phonopy.yaml with an isotope's mass) gets the isotope's cross-section.
"""

from __future__ import annotations

import dataclasses
import re
from functools import lru_cache

import numpy as np

from ..errors import InputError

#: atoms whose mass is within this of an isotope's (and closer to it than to the natural mass) carry its label, amu
LABEL_TOL_AMU = 0.01
#: isotopes beside phonopy's table of stable ones: (Z, A) -> (mass amu, natural abundance)
_EXTRA_ISOTOPES = {(1, 3): (3.01604928132, 0.0)}  # tritium, AME2016 (Sears/Euphonic's table)

_SITE = re.compile(r"^(\d+)(?::([A-Za-z]{1,3}))?$")
_FIX = "give ELEMENT=A, SITE=A or SITE:ELEMENT=A with a mass number A and sites counted from 0, e.g. --isotope H=2"


# ------------------------------------------------------------------------------------------------- the table
@lru_cache(maxsize=1)
def isotope_table() -> dict[int, dict[int, tuple[float, float]]]:
    """Z -> {mass number: (mass amu, natural abundance)} of the stable isotopes (and ³H)."""
    from ase.data import atomic_numbers

    try:
        from phonopy.structure.atomic_data import get_atomic_data

        data = get_atomic_data().isotope_data
    except ImportError:  # phonopy < 2.44: the same table as a module-level dict
        from phonopy.structure.atoms import isotope_data as data
    table: dict[int, dict[int, tuple[float, float]]] = {}
    for sym, rows in data.items():
        z = atomic_numbers.get(sym)
        if z is None or not rows:
            continue
        table[z] = {int(a): (float(m), float(x)) for a, m, x in rows}
    for (z, a), v in _EXTRA_ISOTOPES.items():
        table.setdefault(z, {})[a] = v
    return table


def isotope_mass(z: int, mass_number: int, spec: str | None = None) -> float:
    """Mass (amu) of the isotope ``mass_number`` of element ``z``; InputError if the table has none (``spec``: the
    specification the message names, default ``SYMBOL=A``)."""
    from ase.data import chemical_symbols

    sym = chemical_symbols[int(z)]
    known = isotope_table().get(int(z), {})
    if int(mass_number) not in known:
        have = ", ".join(f"{a}{sym}" for a in sorted(known)) or "none"
        raise InputError(
            f"isotope {spec or f'{sym}={mass_number}'}: there is no isotope {mass_number}{sym} in the isotope mass table "
            f"({sym} has {have})",
            fix=f"give one of the mass numbers of {sym} ({', '.join(str(a) for a in sorted(known)) or 'none'})",
        )
    return known[int(mass_number)][0]


# ---------------------------------------------------------------------------------------------- the specification
def parse_isotope_option(text: str) -> list[tuple[str, int]]:
    """``"H=2"``, ``"5:O=18"`` or ``"H=2,O=18"`` (the CLI's ``--isotope``) as (target, mass number) pairs."""
    out = []
    for part in str(text).split(","):
        target, eq, a = part.strip().partition("=")
        if not eq or not target.strip() or not a.strip():
            raise InputError(f"--isotope {text!r} is not TARGET=A", fix=_FIX)
        out.append((target.strip(), a.strip()))
    return out


def normalise_isotopes(isotopes) -> tuple[tuple[str, int], ...]:
    """The canonical form of an isotope specification: ``(("H", 2), ("5:O", 18))``, each target once (a repeated
    target keeps its last value, at its last place), checked as far as it can be without a structure (element
    symbols, mass numbers of element targets).

    ``isotopes`` is None, a dict ``{"H": 2, 5: 18, "5:O": 18}``, or a sequence of pairs or ``"H=2"`` strings.
    """
    if isotopes is None or (not isinstance(isotopes, str) and len(isotopes) == 0):
        return ()
    if isinstance(isotopes, str):
        items = parse_isotope_option(isotopes)
    elif isinstance(isotopes, dict):
        items = list(isotopes.items())
    else:
        items = []
        for it in isotopes:
            if isinstance(it, str):
                items.extend(parse_isotope_option(it))
            elif isinstance(it, (tuple, list)) and len(it) == 2:
                items.append((it[0], it[1]))
            else:
                raise InputError(f"isotope {it!r} is not a (target, mass number) pair", fix=_FIX)
    out: dict[str, int] = {}
    for target, a in items:
        t = _target(target, a)
        n = _mass_number(a, t)
        if not t[0].isdigit():
            from ase.data import atomic_numbers

            isotope_mass(atomic_numbers[t], n)
        elif ":" in t:
            from ase.data import atomic_numbers

            isotope_mass(atomic_numbers[t.split(":")[1]], n, f"{t}={n}")
        out.pop(t, None)
        out[t] = n
    return tuple(out.items())


def _target(target, a) -> str:
    from ase.data import chemical_symbols

    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if int(target) < 0:
            raise InputError(f"isotope {target}={a}: site {target} is negative", fix=_FIX)
        return str(int(target))
    t = str(target).strip()
    m = _SITE.match(t)
    if m:
        idx, sym = m.groups()
        if sym is not None and sym not in chemical_symbols[1:]:
            raise InputError(f"isotope {t}={a}: {sym} is not an element symbol", fix=_FIX)
        return str(int(idx)) + (f":{sym}" if sym else "")
    if t in chemical_symbols[1:]:
        return t
    raise InputError(f"isotope {t}={a}: {t} is neither an element symbol nor a site index", fix=_FIX)


def _mass_number(a, target: str) -> int:
    try:
        f = float(a)
        ok = not isinstance(a, bool) and np.isfinite(f) and f == int(f) and int(f) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"isotope {target}={a}: the mass number must be a positive integer", fix=_FIX)
    return int(float(a))


def format_isotopes(isotopes) -> str:
    """``"H=2, 5:O=18"``: the specification as the CLI writes it ("" for none)."""
    return ", ".join(f"{t}={a}" for t, a in normalise_isotopes(isotopes))


# ------------------------------------------------------------------------------------------ applying them
def isotope_masses(structure, isotopes) -> np.ndarray:
    """The masses (amu, shape (natoms,)) of ``structure`` with ``isotopes`` applied in order."""
    iso = normalise_isotopes(isotopes)
    masses = np.array(structure.masses, dtype=float)
    symbols = structure.symbols
    n = structure.natoms
    what = structure.cell_formula or "the structure"
    for t, a in iso:
        if t[0].isdigit():
            idx_s, _, sym = t.partition(":")
            idx = int(idx_s)
            if idx >= n:
                raise InputError(
                    f"isotope {t}={a}: site {idx} is out of range: {what} has {n} atoms, sites 0–{n - 1}",
                    fix="count sites from 0 in the cell the phonons are computed in (RESULT/summary.json names it)",
                )
            if sym and symbols[idx] != sym:
                raise InputError(
                    f"isotope {t}={a}: site {idx} is {symbols[idx]}, not {sym}",
                    fix="count sites from 0 in the cell the phonons are computed in, or drop the element check",
                )
            masses[idx] = isotope_mass(structure.numbers[idx], a, f"{t}={a}")
        else:
            sel = np.array([s == t for s in symbols])
            if not sel.any():
                raise InputError(f"isotope {t}={a}: there is no {t} in {what}",
                                 fix=f"name an element of {what} ({', '.join(structure.elements)})")
            masses[sel] = isotope_mass(structure.numbers[sel][0], a)
    return masses


def apply_isotopes(structure, isotopes, symprec: float | None = None):
    """``structure`` with the masses of ``isotopes``; a crystal's labels must respect its symmetry (found with
    ``symprec``, Å; None: not checked)."""
    iso = normalise_isotopes(isotopes)
    if not iso:
        return structure
    masses = isotope_masses(structure, iso)
    if not structure.is_molecule and symprec is not None:
        check_symmetric_masses(structure, masses, symprec, iso)
    return structure.with_masses(masses)


def check_symmetric_masses(structure, masses, symprec: float, isotopes=()) -> None:
    """Refuse masses that differ between symmetry-equivalent sites of a crystal (spglib at ``symprec``)."""
    import spglib

    ds = spglib.get_symmetry_dataset(structure.spglib_cell(), symprec=symprec)
    if ds is None:
        return
    eq = np.asarray(ds.equivalent_atoms)
    for rep in np.unique(eq):
        sites = np.flatnonzero(eq == rep)
        m = np.asarray(masses)[sites]
        if np.ptp(m) > 1e-9:
            sym = structure.symbols[int(rep)]
            shown = ", ".join(map(str, sites[:8])) + (", ..." if len(sites) > 8 else "")
            a = next((n for t, n in normalise_isotopes(isotopes) if t[0].isdigit() and int(t.split(":")[0]) in sites),
                     "A")
            raise InputError(
                f"isotopes {format_isotopes(isotopes)}: sites {shown} ({sym}) are equivalent by the crystal's symmetry "
                "but would get different masses; the phonons use that symmetry",
                fix=f"give every equivalent site the same isotope (e.g. --isotope {sym}={a}), or a cell in which these "
                "sites are not equivalent",
            )


def species_label(z: int, mass: float) -> str:
    """The element symbol, or ``"<A><symbol>"`` (``"2H"``) when ``mass`` is an isotope's: the closest of the
    natural mass (ASE's) and the isotope masses, within :data:`LABEL_TOL_AMU`. A monoisotopic element is always
    its symbol (its natural data are the isotope's)."""
    from ase.data import atomic_masses, chemical_symbols

    sym = chemical_symbols[int(z)]
    best, label = abs(float(mass) - float(atomic_masses[int(z)])), sym
    for a, (m, abundance) in isotope_table().get(int(z), {}).items():
        d = abs(float(mass) - m)
        if d < best and abundance < 0.9999:
            best, label = d, f"{a}{sym}"
    return label if best <= LABEL_TOL_AMU else sym


def species_labels(numbers, masses) -> list[str]:
    """:func:`species_label` of every atom."""
    return [species_label(z, m) for z, m in zip(np.asarray(numbers), np.asarray(masses, dtype=float))]


# ------------------------------------------------------------------------------------------ results
def merged_settings(settings, isotopes):
    """``settings`` with ``isotopes`` appended to those it records (later ones win)."""
    if settings is None:
        return None
    return dataclasses.replace(settings, isotopes=normalise_isotopes(tuple(settings.isotopes) + tuple(isotopes)))


def refuse_fitted(result) -> None:
    """Refuse a subclass of CrystalPhonons (effective phonons fitted to MD or to harmonic sampling): its force
    constants were fitted at the masses of its run (harmonic sampling displaces atoms by their masses)."""
    from .crystal import CrystalPhonons

    if isinstance(result, CrystalPhonons) and type(result) is not CrystalPhonons:
        raise InputError(
            f"isotopes apply to harmonic phonons computed from forces; this result is {type(result).__name__}, "
            "whose force constants were fitted at the masses of its run",
            fix="give an `atomvib phonons` result (or phonopy files), or drop --isotope",
        )


def with_isotopes(result, isotopes):
    """``result`` with isotope masses: the modes recomputed from its force constants (crystal) or Hessian
    (molecule), no force evaluated; the specification is added to the result's settings (provenance).

    Parameters
    ----------
    result : CrystalPhonons, MoleculeVibrations, ForceConstants or CommitteePhonons
    isotopes : see :func:`normalise_isotopes`; sites count from 0 in the result's cell (its ``structure``).

    Returns
    -------
    The same type; a CrystalPhonons is analysed again (dispersion, DOS, thermal properties) with the new masses.
    """
    from .committee import CommitteePhonons
    from .crystal import CrystalPhonons, analyse_crystal
    from .force_constants import ForceConstants
    from .molecule import MoleculeVibrations, normal_modes

    iso = normalise_isotopes(isotopes)
    if not iso:
        return result
    if isinstance(result, ForceConstants):
        return dataclasses.replace(result, unitcell=apply_isotopes(result.unitcell, iso, symprec=result.symprec))
    if isinstance(result, MoleculeVibrations):
        st = apply_isotopes(result.structure, iso)
        freqs, modes = normal_modes(st, result.hessian)
        return dataclasses.replace(result, structure=st, frequencies_cm1=freqs, modes=modes,
                                   settings=merged_settings(result.settings, iso))
    if isinstance(result, CrystalPhonons):
        refuse_fitted(result)
        fc = with_isotopes(result.force_constants, iso)
        st = result.structure
        if st.natoms == fc.unitcell.natoms and np.array_equal(st.numbers, fc.unitcell.numbers):
            st = st.with_masses(fc.unitcell.masses)
        return analyse_crystal(fc, merged_settings(result.settings, iso), structure=st, engine=result.engine,
                               n_displacements=result.n_displacements, relaxation=result.relaxation,
                               timings=dict(result.timings))
    if isinstance(result, CommitteePhonons):
        return dataclasses.replace(result, members=tuple(with_isotopes(m, iso) for m in result.members))
    kind = getattr(result, "kind", type(result).__name__)
    raise InputError(f"isotopes apply to harmonic phonons (a crystal, a molecule or force constants), not to a "
                     f"{kind} result", fix="give an `atomvib phonons` result directory or phonopy files, or drop --isotope")
