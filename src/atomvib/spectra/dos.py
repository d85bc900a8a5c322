"""Phonon DOS, partial DOS per element and neutron-weighted DOS on any energy axis (meV, cm⁻¹, THz).

phonopy provides the modes on a Γ-centred mesh (through :func:`atomvib.spectra.ins.incoherent_modes`,
so that the DOS and the INS spectra come from the very same eigenvectors); the histogram or
Gaussian sum (:func:`atomvib.spectra.lineshape.gaussian_sum`) is a few lines of NumPy. The
neutron weighting follows Euphonic's definition (``QpointPhononModes.calculate_pdos``):
PDOS_κ σ_κ ⟨M⟩ / M_κ per atom, with the Sears (1992) cross-sections, both in
:func:`atomvib.spectra.neutron_data.neutron_dos_weights`; tests check it against Euphonic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..results import Result
from ..units import frequency_factor
from .lineshape import FWHM_PER_SIGMA, gaussian_sum
from .neutron_data import WEIGHTINGS, neutron_dos_weights


@dataclass(frozen=True, eq=False)
class DosSpectrum(Result):
    """A (partial, optionally neutron-weighted) phonon DOS.

    Attributes
    ----------
    energy : ndarray, shape (ne,)
        Bin centres in ``unit``.
    unit : str
        ``"meV"``, ``"cm-1"`` or ``"THz"``.
    total : ndarray, shape (ne,)
        Unweighted: states per ``unit`` per primitive cell (integrates to 3·natom). Weighted:
        barn per ``unit`` per atom (Euphonic's convention).
    partial : dict element -> ndarray (ne,)
        Contribution of each element; sums to ``total``.
    weighting : str or None
        None, ``"coherent"``, ``"incoherent"`` or ``"total"`` (coherent + incoherent).
    """

    energy: np.ndarray
    unit: str
    total: np.ndarray
    partial: dict
    weighting: str | None

    def to_csv(self, path) -> Path:
        import pandas as pd

        name = {"meV": "energy_meV", "cm-1": "wavenumber_cm1", "THz": "frequency_thz"}[self.unit]
        cols = {name: self.energy, "total": self.total, **self.partial}
        pd.DataFrame(cols).to_csv(path, index=False, float_format="%.8g")
        return Path(path)


def phonon_dos(
    source,
    *,
    unit: str = "meV",
    bins=None,
    fwhm=None,
    weighting: str | None = None,
    mesh=None,
    cross_sections: dict | None = None,
    modes=None,
) -> DosSpectrum:
    """Phonon DOS on a Γ-centred mesh, total and per element, optionally neutron-weighted.

    Parameters
    ----------
    source : CrystalPhonons, ForceConstants, phonopy.Phonopy, result directory or phonopy.yaml
    unit : "meV", "cm-1" or "THz"
        Axis unit of ``bins``, ``fwhm`` and the result.
    bins : array of bin edges in ``unit``, optional
        Default: 0 to 1.05 × the highest mode in 400 bins.
    fwhm : float, optional
        Gaussian full width at half maximum in ``unit``; None: a plain histogram.
    weighting : None, "coherent", "incoherent" or "total"
    mesh : mesh for :func:`~atomvib.spectra.ins.incoherent_modes` (default phonopy length 50 Å)
    cross_sections : dict element -> barn, optional
        Override the Sears (1992) cross-section used for the chosen weighting.
    modes : IncoherentModes, optional
        Reuse a mesh already computed.
    """
    from .ins import incoherent_modes

    if weighting is not None and weighting not in WEIGHTINGS:
        raise InputError(f"unknown weighting {weighting!r}", fix="use coherent, incoherent or total")
    unit = {"mev": "meV", "cm-1": "cm-1", "cm1": "cm-1", "thz": "THz"}.get(unit.lower(), unit)
    to_unit = frequency_factor("meV", unit)
    if modes is None:
        modes = incoherent_modes(source, temperature_k=0.0, mesh=mesh, cutoff_mev=1e-6)
    e = modes.energies_mev * to_unit
    if bins is None:
        bins = np.linspace(0.0, 1.05 * e.max(), 401)
    bins = np.asarray(bins, dtype=float)
    centres = 0.5 * (bins[1:] + bins[:-1])
    natom = len(modes.elements)
    # each mode: weight w_q (the q-point's share) times |e_i|² on each atom
    w = modes.qpoint_weights[:, None] * modes.eigvec_weights  # (nmodes, natom)
    if weighting is not None:
        w = w * neutron_dos_weights(modes.elements, modes.masses_amu, weighting, cross_sections)[None, :]
    if fwhm is None:
        per_atom = np.stack([np.histogram(e, bins, weights=w[:, i])[0] for i in range(natom)])
        per_atom = per_atom / np.diff(bins)[None, :]
    else:
        per_atom = gaussian_sum(e, w.T, centres, fwhm / FWHM_PER_SIGMA)
    partial: dict = {}
    for i, el in enumerate(modes.elements):
        partial[el] = partial.get(el, 0.0) + per_atom[i]
    return DosSpectrum(centres, unit, per_atom.sum(axis=0), partial, weighting)
