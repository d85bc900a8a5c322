"""Bound-atom neutron scattering cross-sections of the elements (natural isotopic abundance) and of isotopes.

Source: V. F. Sears, "Neutron scattering lengths and cross sections", Neutron News 3(3), 26-37
(1992), as transcribed (machine-readable) in Euphonic's ``isotopes/data/sears-1992.csv``; the
natural-abundance rows for H..Bi (Z = 1..83) and deuterium (``"D"``, the ²H row) are copied here so
that atomvib does not depend on Euphonic's private data layout. Values in barn.

Isotopes (:data:`_SEARS_1992_ISOTOPES`, same source and transcription, rows copied by hand and checked against
the CSV in ``tests/test_isotopes.py``) are named by mass number and symbol, ``"2H"``, ``"6Li"``, ``"18O"``
(``"D"`` and ``"T"`` are accepted for ``"2H"`` and ``"3H"``): the species labels that
:func:`atomvib.harmonic.isotopes.species_labels` gives atoms whose mass is an isotope's. An isotope that is
not in the table has no neutron data here: neutron spectra refuse it (phonons, IR and Raman need only its mass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

#: element -> (coherent, incoherent, total scattering) cross-section in barn (Sears 1992)
_SEARS_1992_BARN: dict[str, tuple[float, float, float]] = {
    "H": (1.7568, 80.26, 82.02),
    "D": (5.592, 2.05, 7.64),
    "He": (1.34, 0.0, 1.34),
    "Li": (0.454, 0.92, 1.37),
    "B": (3.54, 1.7, 5.24),
    "C": (5.55, 0.001, 5.551),
    "N": (11.01, 0.5, 11.51),
    "O": (4.232, 0.0, 4.232),
    "Ne": (2.62, 0.008, 2.628),
    "Mg": (3.631, 0.08, 3.71),
    "Si": (2.1633, 0.004, 2.167),
    "S": (1.0186, 0.007, 1.026),
    "Cl": (11.526, 5.3, 16.8),
    "Ar": (0.458, 0.225, 0.683),
    "K": (1.69, 0.27, 1.96),
    "Ca": (2.78, 0.05, 2.83),
    "Ti": (1.485, 2.87, 4.35),
    "V": (0.01838, 5.08, 5.1),
    "Cr": (1.66, 1.83, 3.49),
    "Fe": (11.22, 0.4, 11.62),
    "Ni": (13.3, 5.2, 18.5),
    "Cu": (7.485, 0.55, 8.03),
    "Zn": (4.054, 0.077, 4.131),
    "Ga": (6.675, 0.16, 6.83),
    "Ge": (8.42, 0.18, 8.6),
    "Se": (7.98, 0.32, 8.3),
    "Br": (5.8, 0.1, 5.9),
    "Kr": (7.67, 0.01, 7.68),
    "Rb": (6.32, 0.5, 6.8),
    "Sr": (6.19, 0.06, 6.25),
    "Zr": (6.44, 0.02, 6.46),
    "Mo": (5.67, 0.04, 5.71),
    "Ru": (6.21, 0.4, 6.6),
    "Rh": (4.34, 0.3, 4.6),
    "Pd": (4.39, 0.093, 4.48),
    "Ag": (4.407, 0.58, 4.99),
    "Cd": (3.04, 3.46, 6.5),
    "In": (2.08, 0.54, 2.62),
    "Sn": (4.87, 0.022, 4.892),
    "Sb": (3.9, 0.0, 3.9),
    "Te": (4.23, 0.09, 4.32),
    "Xe": (3.04, 0.0, 0.0),
    "Ba": (3.23, 0.15, 3.38),
    "La": (8.53, 1.13, 9.66),
    "Ce": (2.94, 0.0, 2.94),
    "Nd": (7.43, 9.2, 16.6),
    "Sm": (0.422, 39.0, 39.0),
    "Eu": (6.75, 2.5, 9.2),
    "Gd": (29.3, 151.0, 180.0),
    "Dy": (35.9, 54.4, 90.3),
    "Er": (7.63, 1.1, 8.7),
    "Yb": (19.42, 4.0, 23.4),
    "Lu": (6.53, 0.7, 7.2),
    "Hf": (7.6, 2.6, 10.2),
    "Ta": (6.0, 0.01, 6.01),
    "W": (2.97, 1.63, 4.6),
    "Re": (10.6, 0.9, 11.5),
    "Os": (14.4, 0.3, 14.7),
    "Ir": (14.1, 0.0, 14.0),
    "Pt": (11.58, 0.13, 11.71),
    "Hg": (20.24, 6.6, 26.8),
    "Tl": (9.678, 0.21, 9.89),
    "Pb": (11.115, 0.003, 11.118),
    "Be": (7.63, 0.0018, 7.63),
    "F": (4.017, 0.0008, 4.018),
    "Na": (1.66, 1.62, 3.28),
    "Al": (1.495, 0.0082, 1.503),
    "P": (3.307, 0.005, 3.312),
    "Sc": (19.0, 4.5, 23.5),
    "Mn": (1.75, 0.4, 2.15),
    "Co": (0.779, 4.8, 5.6),
    "As": (5.44, 0.06, 5.5),
    "Y": (7.55, 0.15, 7.7),
    "Nb": (6.253, 0.0024, 6.255),
    "Tc": (5.8, 0.5, 6.3),
    "I": (3.5, 0.31, 3.81),
    "Cs": (3.69, 0.21, 3.9),
    "Pr": (2.64, 0.015, 2.66),
    "Pm": (20.0, 1.3, 21.3),
    "Tb": (6.84, 0.004, 6.84),
    "Ho": (8.06, 0.36, 8.42),
    "Tm": (6.28, 0.1, 6.38),
    "Au": (7.32, 0.43, 7.75),
    "Bi": (9.148, 0.0084, 9.156),
}


#: isotope -> (coherent, incoherent, total scattering cross-section in barn, coherent scattering length b_c in fm)
#: (Sears 1992; blank incoherent entries are 0; b_c is complex for the absorbing ⁶Li and ¹⁰B)
_SEARS_1992_ISOTOPES: dict[str, tuple[float, float, float, complex]] = {
    "1H": (1.7583, 80.27, 82.03, -3.7406),
    "2H": (5.592, 2.05, 7.64, 6.671),
    "3H": (2.89, 0.14, 3.03, 4.792),
    "6Li": (0.51, 0.46, 0.97, 2.0 - 0.261j),
    "7Li": (0.619, 0.78, 1.4, -2.22),
    "10B": (0.144, 3.0, 3.1, -0.1 - 1.066j),
    "11B": (5.56, 0.21, 5.77, 6.65),
    "12C": (5.559, 0.0, 5.559, 6.6511),
    "13C": (4.81, 0.034, 4.84, 6.19),
    "14N": (11.03, 0.5, 11.53, 9.37),
    "15N": (5.21, 5e-05, 5.21, 6.44),
    "16O": (4.232, 0.0, 4.232, 5.803),
    "17O": (4.2, 0.004, 4.2, 5.78),
    "18O": (4.29, 0.0, 4.29, 5.84),
    "58Ni": (26.1, 0.0, 26.1, 14.4),
    "60Ni": (0.99, 0.0, 0.99, 2.8),
    "61Ni": (7.26, 1.9, 9.2, 7.6),
    "62Ni": (9.5, 0.0, 9.5, -8.7),
    "64Ni": (0.017, 0.0, 0.017, -0.37),
}
#: other names of isotopes
_ISOTOPE_ALIASES = {"D": "2H", "T": "3H"}


def tabulated_isotopes() -> list[str]:
    """The isotopes with neutron data here (labels such as ``"2H"``), in table order."""
    return list(_SEARS_1992_ISOTOPES)


def is_isotope_label(label: str) -> bool:
    """True for a label of the form ``"<mass number><symbol>"`` (``"2H"``, ``"56Fe"``) or ``"D"``/``"T"``."""
    return label in _ISOTOPE_ALIASES or bool(label[:1].isdigit())


def coherent_scattering_length_fm(label: str) -> complex:
    """Coherent scattering length b_c (fm) of a tabulated isotope (``"2H"``, ``"D"``, ``"62Ni"``).

    Natural elements are Euphonic's own (its ``"Sears1992"`` data, the same source); this gives the isotopes.
    """
    key = _ISOTOPE_ALIASES.get(label, label)
    if key not in _SEARS_1992_ISOTOPES:
        raise _no_isotope_data(label)
    return _SEARS_1992_ISOTOPES[key][3]


def _no_isotope_data(label: str) -> InputError:
    return InputError(
        f"no neutron cross-section for the isotope {label} (Sears 1992 isotopes tabulated here: "
        f"{', '.join(_SEARS_1992_ISOTOPES)})",
        fix="use a tabulated isotope for neutron spectra (phonons, IR and Raman take any isotope), or pass "
        f"cross_sections={{'{label}': barn}} in the Python API",
    )


@dataclass(frozen=True, eq=False)
class CrossSection:
    """Bound scattering cross-sections of one element or isotope, barn (Sears 1992)."""

    element: str
    coherent_barn: float
    incoherent_barn: float
    total_barn: float


def cross_section(element: str) -> CrossSection:
    """Sears (1992) cross-sections of ``element`` (natural abundance; ``"D"`` for deuterium) or of an isotope
    (``"2H"``, ``"7Li"``, ``"18O"``: :data:`_SEARS_1992_ISOTOPES`).

    Raises
    ------
    InputError
        When the element or isotope is not in the table (Z > 83, an isotope not tabulated, or not a symbol).
    """
    if is_isotope_label(element) and element != "D":
        key = _ISOTOPE_ALIASES.get(element, element)
        if key not in _SEARS_1992_ISOTOPES:
            raise _no_isotope_data(element)
        coh, inc, tot, _ = _SEARS_1992_ISOTOPES[key]
        return CrossSection(element, coh, inc, tot)
    try:
        coh, inc, tot = _SEARS_1992_BARN[element]
    except KeyError:
        raise InputError(
            f"no neutron cross-section for element {element!r} (table: Sears 1992, H..Bi and D)",
            fix="use elements H..Bi, or pass cross_sections={element: total_barn} explicitly",
        ) from None
    return CrossSection(element, coh, inc, tot)


#: weighting name -> CrossSection attribute
WEIGHTINGS = {"coherent": "coherent_barn", "incoherent": "incoherent_barn", "total": "total_barn"}


def cross_sections_barn(
    elements, weighting: str = "total", overrides: dict | None = None
) -> dict[str, float]:
    """Scattering cross-section per element, barn: the one place where a neutron weighting is chosen.

    Parameters
    ----------
    elements : iterable of str
        Element symbols or isotope labels (``"2H"``; repeats allowed; the result has each once, in order of
        appearance).
    weighting : "coherent", "incoherent" or "total" (coherent + incoherent)
    overrides : dict element -> barn, optional
        Take precedence over the Sears (1992) table (isotopic samples); they replace the cross-section
        of the chosen ``weighting``.
    """
    if weighting not in WEIGHTINGS:
        raise InputError(f"unknown weighting {weighting!r}", fix="use coherent, incoherent or total")
    overrides = dict(overrides or {})
    key = WEIGHTINGS[weighting]
    return {
        el: float(overrides[el]) if el in overrides else float(getattr(cross_section(el), key))
        for el in dict.fromkeys(elements)
    }


def total_cross_sections_barn(elements, overrides: dict | None = None) -> dict[str, float]:
    """Total (coherent + incoherent) scattering cross-section per element, barn.

    ``overrides`` maps element -> barn and takes precedence over the table (e.g. isotopic samples).
    """
    return cross_sections_barn(elements, "total", overrides)


def neutron_dos_weights(elements, masses_amu, weighting: str = "total", overrides: dict | None = None):
    """Per-atom factor of the neutron-weighted DOS, σ_κ ⟨M⟩ / M_κ / N, shape (natom,), barn.

    Euphonic's convention (``QpointPhononModes.calculate_pdos``): the partial DOS of atom κ times its
    cross-section σ_κ (of ``weighting``) and ⟨M⟩/M_κ (⟨M⟩ the mean atomic mass of the cell), divided
    by the number N of atoms, so the weighted DOS is in barn per energy per atom. Used by
    :func:`atomvib.spectra.dos.phonon_dos` and :func:`atomvib.learn.spectra.neutron_weighted_dos`.

    Parameters
    ----------
    elements : sequence of str, length natom
    masses_amu : array, shape (natom,), amu
    weighting, overrides : see :func:`cross_sections_barn`
    """
    m = np.asarray(masses_amu, dtype=float)
    sig = cross_sections_barn(elements, weighting, overrides)
    return np.array([sig[el] for el in elements]) * m.mean() / m / len(m)
