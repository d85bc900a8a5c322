"""Neutron spectra from a phonon DOS per element: neutron-weighted DOS and VISION/TOSCA INS.

The DOS predictor (:mod:`atomvib.learn.predictor`) gives no eigenvectors, only a DOS per element.
In the isotropic incoherent approximation (Cheng et al., J. Chem. Theory Comput. 15, 1974 (2019))
that is all an indirect-geometry INS spectrum needs: for an atom of mass m with per-atom DOS g(E)
(3 states),

* one-phonon weight A(E) = ħ²/(2 m E) · g(E)/3 · (n(E) + 1)   (Å² per meV),
* mean-square displacement ⟨u²⟩ = ∫ ħ²/(2 m E) g(E) coth(E / 2k_BT) dE,

which are exactly the per-atom mesh sums of :func:`atomvib.spectra.ins.incoherent_modes` with the
mode sum written as an integral over the partial DOS. So we do not rewrite the INS: the DOS is
turned into an :class:`~atomvib.spectra.ins.IncoherentModes` on a fine energy grid (one "mode" per
bin and atom) and handed to :func:`atomvib.spectra.ins.indirect_spectrum`, which does the
multiphonon self-convolutions, the instrument kinematics Q²(E) and the resolution. For a site of
cubic symmetry the partial DOS carries the whole information, and the result equals the
eigenvector-based spectrum to the binning (tested on NaCl to < 1 %).

The neutron-weighted DOS follows :func:`atomvib.spectra.dos.phonon_dos` (Euphonic's convention):
Σ_el σ_el ⟨M⟩/M_el · g_el(E) / N, barn per energy per atom.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..harmonic.thermal import bose_occupation
from ..spectra.ins import _HB2_2M, IncoherentModes, InsSpectrum, indirect_spectrum
from ..spectra.neutron_data import cross_section
from ..units import frequency_factor

_WEIGHT_KEYS = {"coherent": "coherent_barn", "incoherent": "incoherent_barn", "total": "total_barn"}


def _element_masses(structure) -> tuple[dict, dict]:
    """Mean mass (amu) and atom count of each element of a Structure, in order of appearance."""
    from ase.data import chemical_symbols

    masses: dict = {}
    counts: dict = {}
    for z, m in zip(structure.numbers, structure.masses):
        el = chemical_symbols[int(z)]
        masses[el] = masses.get(el, 0.0) + float(m)
        counts[el] = counts.get(el, 0) + 1
    return {el: masses[el] / counts[el] for el in masses}, counts


def neutron_weighted_dos(
    partial_dos: dict,
    masses_amu: dict,
    counts: dict,
    *,
    weighting: str = "total",
    cross_sections: dict | None = None,
) -> tuple[np.ndarray, dict]:
    """Neutron-weighted DOS from a DOS per element.

    Parameters
    ----------
    partial_dos : dict element -> ndarray (ne,)
        States per energy unit per cell of each element (any energy axis, shared by all).
    masses_amu : dict element -> float
        Mass of the element's atoms, amu.
    counts : dict element -> int
        Number of atoms of the element in the cell.
    weighting : "coherent", "incoherent" or "total"
        Which Sears (1992) cross-section σ_el to use.
    cross_sections : dict element -> barn, optional
        Overrides of σ_el (isotopes).

    Returns
    -------
    total : ndarray, shape (ne,), barn per energy unit per atom
    partial : dict element -> ndarray (ne,), the same unit; sums to ``total``
        σ_el ⟨M⟩/M_el · g_el / N with ⟨M⟩ the mean atomic mass and N the number of atoms of the
        cell, as :func:`atomvib.spectra.dos.phonon_dos` and Euphonic's ``calculate_pdos``.
    """
    if weighting not in _WEIGHT_KEYS:
        raise InputError(f"unknown weighting {weighting!r}", fix="use coherent, incoherent or total")
    natom = sum(counts.values())
    mean_mass = sum(masses_amu[el] * counts[el] for el in counts) / natom
    partial = {}
    for el, g in partial_dos.items():
        if cross_sections and el in cross_sections:
            sig = float(cross_sections[el])
        else:
            sig = getattr(cross_section(el), _WEIGHT_KEYS[weighting])
        partial[el] = np.asarray(g, float) * sig * mean_mass / masses_amu[el] / natom
    return sum(partial.values()), partial


def _fine_states(edges_mev, states, de_mev: float, debye_first_bin: bool):
    """Spread states per coarse bin (nel, nb) over bins of ``de_mev`` from 0: (nel, nfine), centres.

    The DOS is taken constant inside each coarse bin (cumulative states interpolated linearly at
    the fine edges, so every state is kept). With ``debye_first_bin`` the first coarse bin is
    filled as g ∝ E² (Debye) instead, since the acoustic branches vanish at E = 0 and a flat DOS
    down to 0 would overweight ⟨u²⟩ ∝ ∫ g/E.
    """
    edges = np.asarray(edges_mev, float)
    nfine = int(np.ceil(edges[-1] / de_mev - 1e-9))
    fine_edges = np.arange(nfine + 1) * de_mev
    cum = np.concatenate([np.zeros((states.shape[0], 1)), np.cumsum(states, axis=1)], axis=1)
    out = np.stack([np.interp(fine_edges, edges, c) for c in cum])
    if debye_first_bin and edges[0] == 0.0:
        inside = fine_edges <= edges[1]
        out[:, inside] = states[:, :1] * (fine_edges[inside] / edges[1])[None, :] ** 3
    return np.diff(out, axis=1), fine_edges[:-1] + 0.5 * de_mev


def modes_from_partial_dos(
    edges_mev,
    partial_states: dict,
    masses_amu: dict,
    counts: dict,
    *,
    temperature_k: float = 5.0,
    de_mev: float = 0.1,
    cutoff_mev: float = 0.124,
    debye_first_bin: bool = False,
) -> IncoherentModes:
    """The INS input (:class:`~atomvib.spectra.ins.IncoherentModes`) from a DOS per element.

    Parameters
    ----------
    edges_mev : ndarray, shape (nb+1,), meV
        Bin edges of the DOS (uniform or not); the first edge should be 0.
    partial_states : dict element -> ndarray (nb,)
        States in each bin per cell for each element (Σ over bins = 3 × the element's atom count).
    masses_amu, counts : dict element -> float / int
    temperature_k : float
    de_mev : float
        Width of the fine bins the DOS is spread over, meV (use the INS output bin width).
    cutoff_mev : float
        Bins centred below this are left out (as the acoustic Γ modes in ``incoherent_modes``).
    debye_first_bin : bool
        Fill the first coarse bin as g ∝ E² (for coarse predicted DOS; see :func:`_fine_states`).

    Returns
    -------
    IncoherentModes
        One pseudo-atom per atom of the cell (atoms of an element share their element's per-atom
        DOS), each element one symmetry class; energies are the fine bin centres.
    """
    els = list(partial_states)
    states = np.stack([np.clip(np.asarray(partial_states[el], float), 0, None) for el in els])
    fine, centres = _fine_states(edges_mev, states, de_mev, debye_first_bin)
    keep = centres > cutoff_mev
    e = centres[keep]
    per_atom = fine[:, keep] / np.array([counts[el] for el in els])[:, None]  # states per bin per atom
    m = np.array([masses_amu[el] for el in els])
    base = _HB2_2M / (m[:, None] * e[None, :]) * per_atom  # Å² per bin, (nel, ne)
    n = bose_occupation(e, temperature_k)
    msd_el = (base * (2.0 * n + 1.0)[None, :]).sum(axis=1)
    one_el = base * (n + 1.0)[None, :] / 3.0
    atom_el = np.repeat(np.arange(len(els)), [counts[el] for el in els])
    reps = np.searchsorted(atom_el, np.arange(len(els)))
    elements = [els[k] for k in atom_el]
    return IncoherentModes(
        energies_mev=e,
        weights_a2=one_el[atom_el].T.copy(),
        msd_a2=msd_el[atom_el],
        elements=elements,
        masses_amu=m[atom_el],
        representatives=reps,
        multiplicity=np.array([counts[el] for el in els]),
        temperature_k=float(temperature_k),
        mesh=(),
        qpoint_weights=np.ones(len(e)),
        eigvec_weights=per_atom[atom_el].T.copy(),  # so phonon_dos(modes=...) gives the DOS back
    )


def spectrum_from_partial_dos(
    edges_mev,
    partial_states: dict,
    masses_amu: dict,
    counts: dict,
    instrument: str = "vision",
    bank: str = "backward",
    *,
    order: int = 3,
    temperature_k: float = 5.0,
    energy_range_mev=(0.5, 250.0),
    de_mev: float = 0.1,
    resolution: bool = True,
    cross_sections: dict | None = None,
    debye_first_bin: bool = False,
) -> InsSpectrum:
    """Indirect-geometry (VISION, TOSCA) powder INS spectrum from a DOS per element.

    Same physics, normalisation (1/eV, Σ σ_i S_i / Σ σ_i) and options as
    :func:`atomvib.spectra.ins.indirect_spectrum`, which does the work; see
    :func:`modes_from_partial_dos` for the inputs.
    """
    modes = modes_from_partial_dos(
        edges_mev,
        partial_states,
        masses_amu,
        counts,
        temperature_k=temperature_k,
        de_mev=de_mev,
        debye_first_bin=debye_first_bin,
    )
    return indirect_spectrum(
        None,
        instrument,
        bank,
        order=order,
        energy_range_mev=energy_range_mev,
        de_mev=de_mev,
        resolution=resolution,
        cross_sections=cross_sections,
        modes=modes,
    )


def _prediction_inputs(prediction):
    if getattr(prediction, "partial_dos", None) is None:
        raise InputError(
            "this prediction has no partial DOS per element",
            fix="predict it again with atomvib.learn.predict",
        )
    masses, counts = _element_masses(prediction.structure)
    width_cm1 = float(prediction.frequencies_cm1[1] - prediction.frequencies_cm1[0])
    edges_cm1 = np.append(
        prediction.frequencies_cm1 - 0.5 * width_cm1, prediction.frequencies_cm1[-1] + 0.5 * width_cm1
    )
    states = {el: np.asarray(g) * width_cm1 for el, g in prediction.partial_dos.items()}
    return edges_cm1, states, masses, counts


def predicted_neutron_dos(prediction, *, weighting: str = "total", unit: str = "meV"):
    """Neutron-weighted DOS of a :class:`~atomvib.learn.predictor.DosPrediction`.

    Returns
    -------
    energy : ndarray, shape (nbins,), bin centres in ``unit`` ("meV", "cm-1" or "THz")
    total : ndarray, shape (nbins,), barn per ``unit`` per atom
    partial : dict element -> ndarray (nbins,), the same unit
    """
    edges_cm1, states, masses, counts = _prediction_inputs(prediction)
    f = frequency_factor("cm-1", unit)
    per_unit = {el: s / (np.diff(edges_cm1) * f) for el, s in states.items()}
    total, partial = neutron_weighted_dos(per_unit, masses, counts, weighting=weighting)
    return prediction.frequencies_cm1 * f, total, partial


def predicted_ins_spectrum(
    prediction,
    instrument: str = "vision",
    bank: str = "backward",
    *,
    order: int = 3,
    temperature_k: float = 5.0,
    **kw,
) -> InsSpectrum:
    """VISION/TOSCA spectrum of a predicted DOS (incoherent, isotropic approximation).

    The 5 cm⁻¹ bins of the prediction are spread evenly over the INS bins (the first one as
    g ∝ E²); other options as :func:`spectrum_from_partial_dos`. The model's DOS is smooth on the
    scale of its 5 cm⁻¹ (0.62 meV) bins, so sharp peaks of the true spectrum come out broadened.
    """
    edges_cm1, states, masses, counts = _prediction_inputs(prediction)
    kw.setdefault("debye_first_bin", True)
    return spectrum_from_partial_dos(
        edges_cm1 * frequency_factor("cm-1", "meV"),
        states,
        masses,
        counts,
        instrument,
        bank,
        order=order,
        temperature_k=temperature_k,
        **kw,
    )


def predicted_vision_spectrum(prediction, **kw) -> InsSpectrum:
    """VISION (backward bank by default) spectrum of a predicted DOS; see :func:`predicted_ins_spectrum`."""
    return predicted_ins_spectrum(prediction, "vision", **kw)
