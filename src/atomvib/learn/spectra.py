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
bin and atom) by :func:`atomvib.spectra.ins.modes_from_partial_dos` and handed to
:func:`atomvib.spectra.ins.indirect_spectrum`, which does the
multiphonon self-convolutions, the instrument kinematics Q²(E) and the resolution. For a site of
cubic symmetry the partial DOS carries the whole information, and the result equals the
eigenvector-based spectrum to the binning (tested on NaCl to < 1 %).

The neutron-weighted DOS uses the weights of :func:`atomvib.spectra.dos.phonon_dos`
(:func:`atomvib.spectra.neutron_data.neutron_dos_weights`, Euphonic's convention):
Σ_el σ_el ⟨M⟩/M_el · g_el(E) / N, barn per energy per atom.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..spectra.ins import InsSpectrum, indirect_spectrum, modes_from_partial_dos
from ..spectra.neutron_data import neutron_dos_weights
from ..units import frequency_factor

__all__ = [
    "neutron_weighted_dos",
    "modes_from_partial_dos",
    "spectrum_from_partial_dos",
    "predicted_neutron_dos",
    "predicted_ins_spectrum",
    "predicted_vision_spectrum",
]


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
    atoms = [el for el in counts for _ in range(counts[el])]
    w = neutron_dos_weights(atoms, [masses_amu[el] for el in atoms], weighting, cross_sections)
    per_el = dict(zip(atoms, w))  # atoms of one element share one weight
    partial = {el: np.asarray(g, float) * per_el[el] for el, g in partial_dos.items()}
    return sum(partial.values()), partial


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
