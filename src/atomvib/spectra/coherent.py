"""Coherent one-phonon S(Q, E) (single crystal along a path, and powder-averaged) through Euphonic.

Euphonic (Fair et al., J. Appl. Cryst. 55, 1689 (2022)) does the work: Fourier interpolation with
the dipole (LO–TO) correction when Born charges are present, structure factors with the Debye–Waller
factor, spherical powder averaging. This module only converts our force constants into Euphonic's
and returns plain arrays in atomvib's units. The Debye–Waller factor is computed on a coarse,
symmetry-reduced Monkhorst–Pack grid (``dw_mesh``), which converges far sooner than the S(Q,E)
sampling itself.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .ins import as_phonopy


def euphonic_force_constants(source):
    """``euphonic.ForceConstants`` (with Born charges if present) from any atomvib phonon source."""
    from euphonic import ForceConstants

    if (
        isinstance(source, (str, Path))
        and Path(source).is_dir()
        and (Path(source) / "phonopy.yaml").is_file()
    ):
        return ForceConstants.from_phonopy(path=str(source), summary_name="phonopy.yaml")
    ph = as_phonopy(source)
    with tempfile.TemporaryDirectory() as tmp:
        ph.save(str(Path(tmp) / "phonopy.yaml"), settings={"force_constants": True})
        return ForceConstants.from_phonopy(path=tmp, summary_name="phonopy.yaml")


@dataclass(frozen=True, eq=False)
class CoherentMap:
    """Coherent one-phonon S(Q, E).

    Attributes
    ----------
    x : ndarray, shape (nx,)
        Path coordinate (Å⁻¹, cumulative |ΔQ|) for a path, or |Q| (Å⁻¹) for a powder map.
    energy_mev : ndarray, shape (ne,), meV (bin centres)
    intensity : ndarray, shape (nx, ne)
        Euphonic's S(Q, ω) in mbarn per meV per cell (powder: averaged over the sphere).
    kind : "path" or "powder"
    qpoints : ndarray, shape (nx, 3) or None
        Reciprocal-lattice coordinates of a path.
    temperature_k : float
    """

    x: np.ndarray
    energy_mev: np.ndarray
    intensity: np.ndarray
    kind: str
    qpoints: np.ndarray | None
    temperature_k: float


def _debye_waller(fc, temperature_k, dw_mesh):
    from euphonic import ureg

    if temperature_k is None:
        return None
    grid = fc.calculate_qpoint_phonon_modes(_mp_grid(dw_mesh), asr="reciprocal")
    return grid.calculate_debye_waller(temperature_k * ureg("K"), symmetrise=True)


def _mp_grid(mesh):
    from euphonic.util import mp_grid

    return mp_grid(list(np.broadcast_to(np.atleast_1d(mesh), 3)))


def coherent_path(source, qpoints, energy_bins_mev, *, temperature_k=5.0, dw_mesh=6, fwhm_mev=None):
    """S(Q, E) at the reciprocal-lattice points ``qpoints`` (n, 3) with the DW factor at ``temperature_k``."""
    from euphonic import ureg

    fc = euphonic_force_constants(source)
    q = np.asarray(qpoints, dtype=float)
    modes = fc.calculate_qpoint_phonon_modes(q, asr="reciprocal")
    dw = _debye_waller(fc, temperature_k, dw_mesh)
    sf = modes.calculate_structure_factor(dw=dw)
    ebins = np.asarray(energy_bins_mev, dtype=float) * ureg("meV")
    t = None if temperature_k is None else temperature_k * ureg("K")
    sqw = sf.calculate_sqw_map(ebins, calc_bose=t is not None, temperature=t)
    if fwhm_mev:
        sqw = sqw.broaden(y_width=fwhm_mev * ureg("meV"), shape="gauss")
    cart = q @ fc.crystal.reciprocal_cell.to("1/angstrom").magnitude
    x = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(cart, axis=0), axis=1))])
    eb = sqw.y_data.to("meV").magnitude
    e = 0.5 * (eb[1:] + eb[:-1]) if len(eb) == sqw.z_data.shape[1] + 1 else eb
    return CoherentMap(x, e, sqw.z_data.magnitude, "path", q, temperature_k)


def coherent_powder_map(
    source, q_ainv, energy_bins_mev, *, temperature_k=5.0, dw_mesh=6, npts=1000, sampling="golden", fc=None
):
    """Powder-averaged coherent S(|Q|, E) at the |Q| values ``q_ainv`` (Å⁻¹), Euphonic's sphere sampling."""
    from euphonic import ureg
    from euphonic.powder import sample_sphere_structure_factor

    fc = fc or euphonic_force_constants(source)
    dw = _debye_waller(fc, temperature_k, dw_mesh)
    ebins = np.asarray(energy_bins_mev, dtype=float)
    out = np.zeros((len(q_ainv), len(ebins) - 1))
    for k, qq in enumerate(q_ainv):
        sf = sample_sphere_structure_factor(
            fc,
            qq * ureg("1/angstrom"),
            dw=dw,
            temperature=None if temperature_k is None else temperature_k * ureg("K"),
            sampling=sampling,
            npts=npts,
            jitter=False,
            energy_bins=ebins * ureg("meV"),
        )
        out[k] = sf.y_data.magnitude
    return CoherentMap(
        np.asarray(q_ainv, float), 0.5 * (ebins[1:] + ebins[:-1]), out, "powder", None, temperature_k
    )
