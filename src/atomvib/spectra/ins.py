"""Inelastic neutron scattering in the incoherent approximation, powder average, orders 1..N.

phonopy diagonalises the dynamical matrix on a Γ-centred mesh (eigenvectors included); everything
after that is written here, because the quantity is a few array operations and neither phonopy nor
Euphonic computes the incoherent multiphonon spectrum (Euphonic's coherent S(Q,ω) is wrapped in
:mod:`atomvib.spectra.coherent`).

Theory (the "isotropic incoherent approximation" of OCLIMAX and AbINS: Y. Q. Cheng, L. L. Daemen,
A. I. Kolesnikov, A. J. Ramirez-Cuesta, J. Chem. Theory Comput. 15, 1974 (2019), eqs. 4-10;
K. Dymkowski et al., Physica B 551, 443 (2018)). For atom i of mass m_i, mode (q, ν) of energy E_qν
and mass-weighted eigenvector e_iqν, on a mesh with weights w_q (Σ w_q = 1):

* one-phonon spectral weight, Å² per energy,
  A_i(E) = Σ_qν w_q ħ²/(2 m_i E_qν) |e_iqν|²/3 (n_qν + 1) δ(E − E_qν)   (n: Bose occupation);
* mean-square displacement ⟨u_i²⟩ = Σ_qν w_q ħ²/(2 m_i E_qν) |e_iqν|² coth(E_qν / 2k_BT) and the
  Debye–Waller exponent 2W_i = Q²⟨u_i²⟩/3 (isotropic; exact for cubic site symmetry);
* the n-phonon term S_i^n(Q, E) = (Q²)^n / n! · (A_i * A_i * ... n times)(E) · exp(−2W_i);
* with σ_i the total (coherent + incoherent) bound scattering cross-section (Sears 1992) of atom i's element,
  or of its isotope where its mass is one (:func:`atomvib.harmonic.isotopes.species_labels`),
  S(Q, E) = Σ_i σ_i S_i(Q, E) / Σ_i σ_i, i.e. OCLIMAX's ``NORM=1`` normalisation (1/energy).

Summing n = 0..∞ at T = 0 gives exactly 1 for every Q (exp(Q²⟨u²⟩/3) · exp(−2W)), which the tests
check order by order. The instrument spectra compute the neutron-energy-loss (Stokes) side only, as
OCLIMAX does; :func:`q_averaged_orders` can add the energy-gain (anti-Stokes) side, A_i(−E) =
A_i(E) n/(n + 1), which matters at room temperature (the comparison with measured powder data in
:mod:`atomvib.spectra.compare`). Modes below ``cutoff_mev`` (acoustic modes at Γ) are left out, as
in OCLIMAX (ECUT = 1 cm⁻¹).

This module is the one implementation of the incoherent model: the DOS-based spectra
(:func:`modes_from_partial_dos`, used by the DOS predictor and by
:func:`atomvib.spectra.compare.incoherent_powder_spectrum`) feed the same
:class:`IncoherentModes` into the same multiphonon code, and so do isolated molecules
(:func:`molecule_modes`: the 3N−6 normal modes as one Γ point of weight 1).

Symmetry: with ``mesh_symmetry=True`` (default) phonopy's irreducible mesh is used and per-atom
sums are averaged over each set of symmetry-equivalent atoms, which is exact for the scalar
quantities used here (the sum over a star of q maps atom i onto its equivalents) and makes a
converged mesh cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import factorial
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..harmonic.isotopes import species_labels
from ..harmonic.thermal import bose_occupation
from ..results import Result
from ..units import HBAR2_2AMU_MEV_A2, MEV_TO_CM1, THZ_TO_MEV
from .instruments import DirectInstrument, IndirectInstrument, get_instrument
from .lineshape import gaussian_sum
from .neutron_data import total_cross_sections_barn

#: ħ²/(2 m E) = _HB2_2M / (m_amu · E_meV) in Å²
_HB2_2M = HBAR2_2AMU_MEV_A2


# --------------------------------------------------------------------------------------------------
# phonon input
# --------------------------------------------------------------------------------------------------
def as_phonopy(source):
    """A fresh phonopy object with force constants (and NAC) from a typed phonon result.

    ``source`` is a :class:`~atomvib.harmonic.crystal.CrystalPhonons` or a
    :class:`~atomvib.harmonic.force_constants.ForceConstants` (load saved ones with :func:`atomvib.load`).
    """
    from ..harmonic.crystal import CrystalPhonons
    from ..harmonic.force_constants import ForceConstants
    from ..harmonic.molecule import MoleculeVibrations

    if isinstance(source, CrystalPhonons):
        return source.to_phonopy()
    if isinstance(source, ForceConstants):
        return source.phonopy()
    if isinstance(source, MoleculeVibrations):
        raise InputError(
            "phonon spectra of crystals were asked for a molecule", fix="give a crystal (periodic) result"
        )
    raise InputError(
        f"cannot get phonons from a {type(source).__name__}",
        fix="give a CrystalPhonons or ForceConstants (atomvib.load(DIR) reads a saved result)",
    )


def default_mesh(ph, density_a: float = 50.0) -> tuple:
    """Γ-centred mesh of phonopy length ``density_a`` (Å): 15×15×15 for NaCl, 13×13×13 for Al2O3 (10 atoms)."""
    from phonopy.phonon.grid import length2mesh

    return tuple(int(x) for x in length2mesh(density_a, ph.primitive.cell))


@dataclass(frozen=True, eq=False)
class IncoherentModes:
    """Per-atom phonon weights on a mesh at one temperature: the input of every INS order.

    Attributes
    ----------
    energies_mev : ndarray, shape (nmodes_total,), meV
        Mode energies above the cut-off, all q-points flattened.
    weights_a2 : ndarray, shape (nmodes_total, natom), Å²
        w_q ħ²/(2 m_i E) |e_i|²/3 (n + 1): the one-phonon weight of each mode on each atom.
    msd_a2 : ndarray, shape (natom,), Å²
        Mean-square displacement ⟨u_i²⟩ = Tr of the displacement tensor (sum over x, y, z) at T.
    elements : list of str, length natom
        Species of each atom: its element symbol, or an isotope label (``"2H"``) where its mass is an isotope's
        (:func:`atomvib.harmonic.isotopes.species_labels`); the cross-sections follow it.
    masses_amu : ndarray, shape (natom,)
    representatives : ndarray, shape (norbit,), int
        One atom per set of symmetry-equivalent atoms; ``multiplicity`` (norbit,) counts each set.
    temperature_k : float
    mesh : tuple of 3 int
    qpoint_weights : ndarray, shape (nmodes_total,)
        Weight w_q of each mode's q-point (Σ over a q-point's modes of w_q: 1 per branch).
    eigvec_weights : ndarray, shape (nmodes_total, natom)
        |e_i|² of each mode on each atom (rows sum to 1): the partial-DOS weights.
    """

    energies_mev: np.ndarray
    weights_a2: np.ndarray
    msd_a2: np.ndarray
    elements: list
    masses_amu: np.ndarray
    representatives: np.ndarray
    multiplicity: np.ndarray
    temperature_k: float
    mesh: tuple = field(default=())
    qpoint_weights: np.ndarray | None = None
    eigvec_weights: np.ndarray | None = None

    @property
    def debye_waller_alpha_a2(self) -> np.ndarray:
        """α_i = ⟨u_i²⟩/3 (Å²), so that exp(−2W_i) = exp(−Q² α_i); shape (natom,)."""
        return self.msd_a2 / 3.0


def incoherent_modes(
    source, *, temperature_k: float = 5.0, mesh=None, mesh_symmetry: bool = True, cutoff_mev: float = 0.124
) -> IncoherentModes:
    """Phonons on a Γ-centred mesh reduced to per-atom weights and mean-square displacements.

    Parameters
    ----------
    source : CrystalPhonons, ForceConstants, phonopy.Phonopy, result directory / phonopy.yaml, or
        MoleculeVibrations (an isolated molecule: its 3N−6 (linear: 3N−5) normal modes, see
        :func:`molecule_modes`; ``mesh`` and ``mesh_symmetry`` do not apply)
    temperature_k : float
        Temperature of the Bose factors and the Debye–Waller factor, K.
    mesh : int or 3 ints, optional
        Γ-centred mesh; default :func:`default_mesh` (phonopy length 50 Å).
    mesh_symmetry : bool
        Use the irreducible mesh (exact here after averaging over equivalent atoms; much faster).
    cutoff_mev : float
        Modes below this energy are left out (the three acoustic modes at Γ), meV.
    """
    from ..harmonic.molecule import MoleculeVibrations

    if isinstance(source, MoleculeVibrations):
        if mesh is not None:
            raise InputError(
                "a q-mesh was given for a molecule, whose normal modes have no wave vector",
                fix="drop --mesh / mesh= for a molecule",
            )
        return molecule_modes(source, temperature_k=temperature_k, cutoff_mev=cutoff_mev)
    ph = as_phonopy(source)
    if mesh is None:
        mesh = default_mesh(ph)
    mesh = tuple(int(m) for m in np.broadcast_to(np.atleast_1d(mesh), 3))
    check_mesh_memory(ph, mesh, mesh_symmetry)
    ph.run_mesh(list(mesh), is_gamma_center=True, with_eigenvectors=True, is_mesh_symmetry=mesh_symmetry)
    prim = ph.primitive
    natom = len(prim)
    return _modes_from_eigenvectors(
        np.asarray(ph.mesh.frequencies) * THZ_TO_MEV,
        np.asarray(ph.mesh.eigenvectors),
        np.asarray(ph.mesh.weights, dtype=float),
        np.asarray(prim.masses, dtype=float),
        species_labels(prim.numbers, prim.masses),
        _equivalent_atoms(ph, natom),
        temperature_k=temperature_k,
        cutoff_mev=cutoff_mev,
        mesh=mesh,
        average=mesh_symmetry,
    )


def molecule_modes(
    molecule, *, temperature_k: float = 5.0, cutoff_mev: float = 0.124
) -> IncoherentModes:
    """The INS input of an isolated molecule: its normal modes as one Γ point of weight 1.

    A molecule is a crystal with a single q-point and no dispersion, so the weights, ⟨u²⟩ and every
    phonon order come from the same code as for crystals (:func:`_modes_from_eigenvectors`): mass-weighted
    eigenvectors e_iν = √m_i d_iν / |√m d_ν| of the Cartesian normal modes d_ν, one-phonon weight
    ħ²/(2 m_i E_ν) |e_iν|²/3 (n + 1) and ⟨u_i²⟩ = Σ_ν ħ²/(2 m_i E_ν) |e_iν|² coth(E_ν/2k_BT). Only the
    3N−6 (linear: 3N−5) vibrations enter: the translations and rotations were projected out of the
    Hessian (:func:`atomvib.harmonic.molecule.normal_modes`), so they add neither intensity nor
    Debye–Waller factor (a free molecule; in a molecular crystal the lattice modes would add both).
    Imaginary modes (negative frequencies) fall below ``cutoff_mev`` and are left out like acoustic
    modes at Γ.

    Parameters
    ----------
    molecule : MoleculeVibrations
    temperature_k, cutoff_mev : see :func:`incoherent_modes`
    """
    st = molecule.structure
    masses = np.asarray(st.masses, dtype=float)
    natom = len(masses)
    d = np.asarray(molecule.modes, dtype=float).reshape(len(molecule.frequencies_cm1), natom, 3)
    e = d * np.sqrt(masses)[None, :, None]
    e /= np.linalg.norm(e.reshape(len(e), -1), axis=1)[:, None, None]
    eig = e.reshape(len(e), 3 * natom).T[None, :, :]  # (1 q-point, 3N, nmodes), phonopy's layout
    e_mev = np.asarray(molecule.frequencies_cm1, dtype=float)[None, :] / MEV_TO_CM1
    return _modes_from_eigenvectors(
        e_mev,
        eig,
        np.ones(1),
        masses,
        species_labels(st.numbers, masses),
        np.arange(natom),
        temperature_k=temperature_k,
        cutoff_mev=cutoff_mev,
        mesh=(),
        average=False,
    )


def _modes_from_eigenvectors(
    e_mev, eig, qweights, masses, elements, equiv, *, temperature_k, cutoff_mev, mesh, average
) -> IncoherentModes:
    """:class:`IncoherentModes` from mode energies (nq, nb) meV, mass-weighted eigenvectors (nq, 3N, nb)
    (phonopy's layout), q-point weights (nq,), masses (N,) amu, and the symmetry class of each atom (N,)
    (``np.arange(N)`` for none); with ``average`` the per-atom sums are averaged over each class (needed
    on an irreducible mesh)."""
    w = np.asarray(qweights, dtype=float)
    w = w / w.sum()
    natom = len(masses)
    e2 = (np.abs(eig) ** 2).reshape(len(w), natom, 3, -1).sum(axis=2)  # (nq, natom, nb)
    keep = e_mev > cutoff_mev  # (nq, nb)
    e_safe = np.where(keep, e_mev, 1.0)
    base = w[:, None, None] * _HB2_2M / (masses[None, :, None] * e_safe[:, None, :]) * e2  # (nq, natom, nb)
    base = np.where(keep[:, None, :], base, 0.0)
    n = bose_occupation(e_safe, temperature_k)
    coth = 2.0 * n + 1.0
    msd = (base * coth[:, None, :]).sum(axis=(0, 2))
    one = base * (n + 1.0)[:, None, :] / 3.0
    weights = one.transpose(0, 2, 1)[keep]  # (nmodes_total, natom)
    eigw = e2.transpose(0, 2, 1)[keep]
    qw = np.broadcast_to(w[:, None], e_mev.shape)[keep]
    energies = e_mev[keep]
    reps, inverse, mult = np.unique(np.asarray(equiv), return_inverse=True, return_counts=True)
    if average:
        # average each scalar over the atoms that symmetry maps onto each other (see module doc)
        msd = (np.bincount(inverse, msd) / mult)[inverse]
        avg = np.zeros((weights.shape[0], len(reps)))
        for k in range(len(reps)):
            avg[:, k] = weights[:, inverse == k].mean(axis=1)
        weights = avg[:, inverse]
        avg = np.zeros((eigw.shape[0], len(reps)))
        for k in range(len(reps)):
            avg[:, k] = eigw[:, inverse == k].mean(axis=1)
        eigw = avg[:, inverse]
    return IncoherentModes(
        energies, weights, msd, list(elements), masses, reps, mult, float(temperature_k), tuple(mesh), qw, eigw
    )


#: bytes per point of the full Γ-centred grid (phonopy's grid addresses and maps; measured ≈ 92 with phonopy 2.x)
_GRID_BYTES = 96


def mesh_memory_bytes(natom: int, mesh, n_ops: int = 1, mesh_symmetry: bool = True) -> float:
    """Estimated peak memory (bytes) of :func:`incoherent_modes` on ``mesh``: the grid bookkeeping, the
    eigenvectors (n_q × 3N × 3N complex128, a copy and their squares) and the per-atom weights (a few
    n_q × N × 3N float64 arrays); n_q ≈ 1.15 · n_grid / n_ops with the mesh symmetry (irreducible points).
    Within ~30 % (above) of the measured peak for Al and Cu3Au."""
    n_full = float(np.prod([float(m) for m in np.broadcast_to(np.atleast_1d(mesh), 3)]))
    n_q = min(n_full, 1.15 * n_full / max(1, n_ops) + 1) if mesh_symmetry else n_full
    nb = 3 * natom
    per_q = nb * nb * (2 * 16 + 8) + 6 * natom * nb * 8 + 4 * nb * 8
    return n_full * _GRID_BYTES + n_q * per_q


def available_memory_bytes() -> float | None:
    """Memory this process may still use: MemAvailable of /proc/meminfo (else free pages from sysconf), capped by a
    cgroup v2 limit when there is one; None when nothing can be read."""
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = float(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            import os

            avail = float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = float(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            avail = min(avail, max(0.0, float(limit) - used))
    except (OSError, ValueError):
        pass
    return avail


def check_mesh_memory(ph, mesh, mesh_symmetry: bool = True, fraction: float = 0.5) -> None:
    """Refuse (:class:`~atomvib.errors.ResourceError`, before any allocation) a mesh whose eigenvectors would not
    fit in ``fraction`` of the available memory; the message gives the largest n×n×n mesh that fits."""
    from ..errors import ResourceError

    mesh = tuple(int(m) for m in np.broadcast_to(np.atleast_1d(mesh), 3))
    if min(mesh) < 1:
        raise InputError(f"q-mesh {mesh} has a non-positive entry", fix="give positive integers, e.g. --mesh 16")
    natom = len(ph.primitive)
    try:
        rots = np.asarray(ph.primitive_symmetry.pointgroup_operations)
        has_inversion = any(np.array_equal(r, -np.eye(3, dtype=int)) for r in rots)
        n_ops = len(rots) * (1 if has_inversion else 2)  # time reversal adds -q
        d = np.asarray(mesh, dtype=float)
        scaled = d[None, :, None] * np.transpose(rots, (0, 2, 1)) / d[None, None, :]  # D Rᵀ D⁻¹ on the grid
        if not np.allclose(scaled, np.round(scaled)):
            n_ops = 2  # a mesh the point group does not map onto itself: phonopy keeps only time reversal
    except Exception:  # no symmetry information: count every grid point
        n_ops = 1
    need = mesh_memory_bytes(natom, mesh, n_ops, mesh_symmetry)
    avail = available_memory_bytes()
    if avail is None or need <= fraction * avail:
        return
    budget = fraction * avail
    lo, hi = 0, max(mesh)
    while lo < hi:  # the largest n with an n×n×n mesh within the budget
        mid = (lo + hi + 1) // 2
        if mesh_memory_bytes(natom, mid, n_ops, mesh_symmetry) <= budget:
            lo = mid
        else:
            hi = mid - 1
    gb = 1e9
    problem = (
        f"the {'x'.join(map(str, mesh))} q-mesh would need about {need / gb:.3g} GB for the eigenvectors of {natom} "
        f"atom{'s' if natom != 1 else ''}, more than half of the {avail / gb:.3g} GB of memory available"
    )
    if lo < 1:
        raise ResourceError(problem, fix="free memory or use a machine with more")
    raise ResourceError(
        problem,
        fix=f"use a mesh of at most {lo}x{lo}x{lo} (--mesh {lo}, about "
        f"{mesh_memory_bytes(natom, lo, n_ops, mesh_symmetry) / gb:.2g} GB); spectra converge long before",
    )


def _equivalent_atoms(ph, natom):
    try:
        return np.asarray(ph.primitive_symmetry.dataset.equivalent_atoms)
    except Exception:  # no symmetry information: every atom its own class
        return np.arange(natom)


# --------------------------------------------------------------------------------------------------
# DOS input: the same IncoherentModes from a phonon DOS per element (no eigenvectors)
# --------------------------------------------------------------------------------------------------
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
    """The INS input (:class:`IncoherentModes`) from a DOS per element.

    For an atom of mass m with per-atom DOS g(E) (3 states) the one-phonon weight is
    A(E) = ħ²/(2 m E) · g(E)/3 · (n(E) + 1) and ⟨u²⟩ = ∫ ħ²/(2 m E) g(E) coth(E / 2k_BT) dE: the
    per-atom mesh sums of :func:`incoherent_modes` with the mode sum written as an integral over
    the partial DOS (exact for sites of cubic symmetry).

    Parameters
    ----------
    edges_mev : ndarray, shape (nb+1,), meV
        Bin edges of the DOS (uniform or not); the first edge should be 0 (states below 0 are
        dropped).
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


# --------------------------------------------------------------------------------------------------
# multiphonon spectral functions on an energy grid
# --------------------------------------------------------------------------------------------------
def _order_histograms(
    modes: IncoherentModes, order: int, de_mev: float, emax_mev: float, energy_gain: bool = False
):
    """A_i^{*n} as histograms on bins of width ``de_mev`` for each symmetry class and n = 1..order.

    Returns ``(energies, hist)``: energies list of (nbins,) arrays (meV, bin centres of order n:
    a convolution of n bins centred at (k + 1/2) dE lands at (m + n/2) dE), hist list of
    (norbit, nbins) arrays in Å^(2n) (not divided by dE). The bins cover [0, emax) (Stokes side
    only) or, with ``energy_gain``, [−emax, emax), the one-phonon weight at −E being
    A_i(E) n/(n + 1) (detailed balance).

    Each order is the previous one convolved with the first (FFT of twice the grid length, so no
    circular wrap-around) and cut back to the grid. On the Stokes side nothing beyond emax can come
    back below it; with the anti-Stokes side the caller must choose emax ≥ order × the highest mode.
    """
    nb = int(np.ceil(emax_mev / de_mev)) + 1
    off = nb if energy_gain else 0  # index of the bin [0, dE)
    size = nb + off
    idx = np.floor(modes.energies_mev / de_mev).astype(int)
    ok = idx < nb
    one = np.zeros((len(modes.representatives), size))
    for k, rep in enumerate(modes.representatives):
        one[k] = np.bincount(idx[ok] + off, modes.weights_a2[ok, rep], minlength=size)[:size]
    if energy_gain:
        occ = bose_occupation(modes.energies_mev, modes.temperature_k)
        ratio = (occ / (occ + 1.0))[ok]
        for k, rep in enumerate(modes.representatives):
            # E in [k dE, (k+1) dE) on the gain side lies in [−(k+1) dE, −k dE): index off − 1 − k
            one[k] += np.bincount(off - 1 - idx[ok], modes.weights_a2[ok, rep] * ratio, minlength=size)[:size]
    hists, energies = [one], [(np.arange(size) - off + 0.5) * de_mev]
    if order > 1:
        nfft = 1 << int(np.ceil(np.log2(size * 2)))
        f1 = np.fft.rfft(one, nfft, axis=1)
        h = one
        for n in range(2, order + 1):
            # indices add: the linear convolution's index off + m sits at 2·off + m
            h = np.fft.irfft(np.fft.rfft(h, nfft, axis=1) * f1, nfft, axis=1)[:, off : off + size]
            h[h < 1e-300] = 0.0  # FFT round-off below zero
            hists.append(h)
            energies.append((np.arange(size) - off + 0.5 * n) * de_mev)
    return energies, hists


def _q_factors(q2, alpha, n: int) -> np.ndarray:
    """(Q²)^n / n! · exp(−Q² α_i): the |Q| dependence of order n, shape (norbit, nq) for q2 (nq,), α (norbit,)."""
    q2 = np.asarray(q2, dtype=float)
    return (q2[None, :] ** n / factorial(n)) * np.exp(-q2[None, :] * np.asarray(alpha)[:, None])


def _broaden(e_src, values, e_out, sigma_src, nsigma: float = 6.0):
    """Σ_k values[..., k] G(e_out − e_src[k]; σ_k) per meV on the uniform ``e_out`` (truncated at 6σ)."""
    return gaussian_sum(e_src, values, e_out, sigma_src, nsigma=nsigma)


def _rebin(e_src, values, e_out, de_out):
    """No resolution: put the bins into the output bins (histogram), per meV."""
    edges = np.append(e_out - 0.5 * de_out, e_out[-1] + 0.5 * de_out)
    idx = np.searchsorted(edges, e_src, side="right") - 1
    ok = (idx >= 0) & (idx < len(e_out))
    flat = values.reshape(-1, values.shape[-1])
    out = np.zeros((flat.shape[0], len(e_out)))
    for r in range(flat.shape[0]):
        out[r] = np.bincount(idx[ok], flat[r, ok], minlength=len(e_out))
    return out.reshape(values.shape[:-1] + (len(e_out),)) / de_out


# --------------------------------------------------------------------------------------------------
# indirect geometry: 1D spectra
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class InsSpectrum(Result):
    """A powder INS spectrum at one detector bank of an indirect-geometry instrument.

    Attributes
    ----------
    energy_mev : ndarray, shape (ne,)
        Energy transfer at the bin centres, meV.
    intensity : ndarray, shape (ne,), 1/eV
        S(Q(E), E) summed over orders, Σ_i σ_i S_i / Σ_i σ_i (OCLIMAX ``NORM=1``).
    by_order : ndarray, shape (order, ne), 1/eV
        Contribution of 1-, 2-, ... n-phonon processes.
    by_element : dict element -> ndarray (ne,), 1/eV
        Contribution of each element (all orders); sums to ``intensity``.
    instrument, bank : str
    temperature_k : float
    msd_a2 : dict element -> float
        Mean-square displacement ⟨u²⟩ (x+y+z) per element, averaged over its atoms, Å².
    cross_sections_barn : dict element -> float
    resolution : bool
        Whether the instrument's Gaussian resolution was applied.
    mesh : tuple of 3 int
    """

    energy_mev: np.ndarray
    intensity: np.ndarray
    by_order: np.ndarray
    by_element: dict
    instrument: str
    bank: str
    temperature_k: float
    msd_a2: dict
    cross_sections_barn: dict
    resolution: bool
    mesh: tuple

    @property
    def order(self) -> int:
        return self.by_order.shape[0]

    def to_csv(self, path) -> Path:
        """Write ``energy_meV, intensity, <element>..., order_1...`` (intensities in 1/eV)."""
        import pandas as pd

        cols = {"energy_meV": self.energy_mev, "intensity": self.intensity}
        for el, v in self.by_element.items():
            cols[el] = v
        for n, v in enumerate(self.by_order, start=1):
            cols[f"order_{n}"] = v
        path = Path(path)
        pd.DataFrame(cols).to_csv(path, index=False, float_format="%.8g")
        return path


def _orbit_weights(modes: IncoherentModes, cross_sections):
    """σ per element (barn) and σ_i × multiplicity / Σ_i σ_i of each symmetry class (norbit,): OCLIMAX NORM=1."""
    sig = total_cross_sections_barn(modes.elements, cross_sections)
    total = sum(sig[el] for el in modes.elements)
    wel = np.array([sig[modes.elements[r]] * m for r, m in zip(modes.representatives, modes.multiplicity)])
    return sig, wel / total


def indirect_spectrum(
    source,
    instrument: str | IndirectInstrument = "vision",
    bank: str = "backward",
    *,
    order: int = 3,
    temperature_k: float = 5.0,
    mesh=None,
    mesh_symmetry: bool = True,
    energy_range_mev=(0.5, 250.0),
    de_mev: float = 0.1,
    resolution: bool = True,
    cross_sections: dict | None = None,
    modes: IncoherentModes | None = None,
) -> InsSpectrum:
    """Powder INS spectrum of an indirect-geometry instrument (VISION, TOSCA) at one bank.

    Parameters
    ----------
    source : CrystalPhonons, ForceConstants, phonopy.Phonopy, result directory or phonopy.yaml
    instrument : "vision", "tosca" or an :class:`IndirectInstrument`
    bank : "backward" or "forward"
    order : int
        Highest phonon order (1 = fundamentals only; overtones and combinations up to ``order``).
    temperature_k : float
    mesh, mesh_symmetry : see :func:`incoherent_modes`
    energy_range_mev : (float, float)
        Output axis from the first to the last bin's lower edge, meV; bins of ``de_mev``.
    resolution : bool
        Apply the instrument's Gaussian resolution (False: the raw histogram).
    cross_sections : dict element -> barn, optional
        Override the Sears (1992) total scattering cross-sections (e.g. for isotopes).
    modes : IncoherentModes, optional
        Reuse modes already computed (e.g. both banks from one mesh).

    Returns
    -------
    InsSpectrum
    """
    inst = get_instrument(instrument) if isinstance(instrument, str) else instrument
    if not isinstance(inst, IndirectInstrument):
        raise InputError(
            f"{inst.name} is a direct-geometry instrument", fix="use direct_powder_map() / --ei for it"
        )
    if order < 1:
        raise InputError(f"order must be ≥ 1, got {order}", fix="use --order 1..10")
    b = inst.bank(bank)
    if modes is None:
        modes = incoherent_modes(source, temperature_k=temperature_k, mesh=mesh, mesh_symmetry=mesh_symmetry)
    sig, wel = _orbit_weights(modes, cross_sections)
    lo, hi = energy_range_mev
    e_out = np.arange(lo, hi - 0.5 * de_mev, de_mev) + 0.5 * de_mev  # bin centres
    emax = hi + (6.0 * float(inst.sigma_mev(hi)) if resolution else 0.0)
    energies, hists = _order_histograms(modes, order, de_mev, emax)
    alpha = modes.debye_waller_alpha_a2[modes.representatives]  # (norbit,)
    by_order = np.zeros((order, len(e_out)))
    per_orbit = np.zeros((len(modes.representatives), len(e_out)))
    for n in range(1, order + 1):
        e_n = energies[n - 1]
        s_n = hists[n - 1] * _q_factors(inst.q2(e_n, b), alpha, n) * wel[:, None]
        if resolution:
            out = _broaden(e_n, s_n, e_out, inst.sigma_mev(e_n))
        else:
            out = _rebin(e_n, s_n, e_out, de_mev)
        per_orbit += out
        by_order[n - 1] = out.sum(axis=0)
    by_order *= 1e3  # per meV -> per eV
    per_orbit *= 1e3
    by_element: dict = {}
    for k, r in enumerate(modes.representatives):
        el = modes.elements[r]
        by_element[el] = by_element.get(el, 0.0) + per_orbit[k]
    msd = {
        el: float(np.mean(modes.msd_a2[[i for i, x in enumerate(modes.elements) if x == el]])) for el in sig
    }
    return InsSpectrum(
        e_out,
        by_order.sum(axis=0),
        by_order,
        by_element,
        inst.name,
        b.name,
        modes.temperature_k,
        msd,
        {el: sig[el] for el in dict.fromkeys(modes.elements)},
        resolution,
        modes.mesh,
    )


def vision_spectrum(
    source, order: int = 3, temperature_k: float = 5.0, bank: str = "backward", **kw
) -> InsSpectrum:
    """VISION (SNS) powder spectrum; see :func:`indirect_spectrum` for the options."""
    return indirect_spectrum(source, "vision", bank, order=order, temperature_k=temperature_k, **kw)


def tosca_spectrum(
    source, order: int = 3, temperature_k: float = 5.0, bank: str = "backward", **kw
) -> InsSpectrum:
    """TOSCA (ISIS) powder spectrum; see :func:`indirect_spectrum` for the options."""
    return indirect_spectrum(source, "tosca", bank, order=order, temperature_k=temperature_k, **kw)


# --------------------------------------------------------------------------------------------------
# direct geometry: powder S(|Q|, E) maps
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class InsMap(Result):
    """Powder S(|Q|, E) of a direct-geometry instrument, incoherent approximation.

    Attributes
    ----------
    q_ainv : ndarray, shape (nq,), Å⁻¹
    energy_mev : ndarray, shape (ne,), meV (bin centres)
    intensity : ndarray, shape (nq, ne), 1/eV
        Σ_i σ_i S_i(Q, E) / Σ_i σ_i over orders 1..order; NaN outside the detector coverage when
        ``masked``.
    instrument : str
    ei_mev, temperature_k : float
    order : int
    masked : bool
    """

    q_ainv: np.ndarray
    energy_mev: np.ndarray
    intensity: np.ndarray
    instrument: str
    ei_mev: float
    temperature_k: float
    order: int
    masked: bool

    def to_hdf5(self, path) -> Path:
        """Write ``q_ainv``, ``energy_mev``, ``intensity`` (nq, ne; 1/eV; NaN = not covered) and attributes."""
        import h5py

        path = Path(path)
        with h5py.File(path, "w") as f:
            f["q_ainv"] = self.q_ainv
            f["energy_mev"] = self.energy_mev
            f["intensity"] = self.intensity
            f["q_ainv"].attrs["unit"] = "1/angstrom"
            f["energy_mev"].attrs["unit"] = "meV"
            f["intensity"].attrs["unit"] = "1/eV (per total scattering cross-section of the cell)"
            for k in ("instrument", "ei_mev", "temperature_k", "order", "masked"):
                f.attrs[k] = getattr(self, k)
            f.attrs["approximation"] = "incoherent, isotropic Debye-Waller, powder"
        return path

    @classmethod
    def from_hdf5(cls, path) -> InsMap:
        """Read a map written by :meth:`to_hdf5` (``atomvib ins --instrument arcs ... --out DIR``: DIR/ins_map.h5)."""
        import h5py

        path = Path(path)
        try:
            with h5py.File(path, "r") as f:
                missing = [k for k in ("q_ainv", "energy_mev", "intensity") if k not in f]
                if missing:
                    raise InputError(
                        f"{path}: not an atomvib S(|Q|,E) map (no {', '.join(missing)})",
                        fix="give the ins_map.h5 written by `atomvib ins --instrument arcs --ei E`",
                    )
                q, e, z = (np.asarray(f[k][()], dtype=float) for k in ("q_ainv", "energy_mev", "intensity"))
                a = dict(f.attrs)
        except OSError as exc:
            raise InputError(f"{path}: not a readable HDF5 file ({exc})", fix="check the file") from None
        if z.shape != (len(q), len(e)):
            raise InputError(
                f"{path}: intensity has shape {z.shape}, axes are {len(q)}×{len(e)}", fix="check the file"
            )

        def attr(k, default, typ):
            v = a.get(k, default)
            return typ(v.decode() if isinstance(v, bytes) else v)

        return cls(
            q,
            e,
            z,
            attr("instrument", "unknown", str),
            attr("ei_mev", float("nan"), float),
            attr("temperature_k", float("nan"), float),
            attr("order", 0, int),
            attr("masked", True, bool),
        )

    def q_cut(self, q_min: float, q_max: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Average over the |Q| points in [q_min, q_max] (Å⁻¹) that the detectors cover (non-NaN), per energy.

        Returns
        -------
        energy_mev : ndarray, shape (ne_kept,)
            The energies with at least one covered |Q| point in the range.
        intensity : ndarray, shape (ne_kept,), 1/eV
        n_points : ndarray of int, shape (ne_kept,)
            How many |Q| points were averaged at each energy.
        """
        from .measured import q_range_mask

        qm = q_range_mask(self.q_ainv, q_min, q_max, "point of the map", tol=1e-9)
        z = self.intensity[qm]
        ok = np.isfinite(z)
        n = ok.sum(axis=0)
        keep = n > 0
        if keep.sum() < 3:
            raise InputError(
                f"the {self.instrument} map covers fewer than 3 energies in |Q| {q_min:g}–{q_max:g} Å⁻¹",
                fix="choose another --q-range (the covered |Q| shrink at large energy transfer)",
            )
        y = np.where(ok, z, 0.0).sum(axis=0)[keep] / n[keep]
        return self.energy_mev[keep], y, n[keep]

    def covered_q_range(self) -> tuple[float, float]:
        """Smallest and largest |Q| (Å⁻¹) with a covered (non-NaN) point at any energy."""
        rows = np.isfinite(self.intensity).any(axis=1)
        if not rows.any():
            raise InputError("the map covers no (|Q|, E) point", fix="check --ei and --angles")
        return float(self.q_ainv[rows][0]), float(self.q_ainv[rows][-1])


def default_map_de(emax_mev: float) -> float:
    """Energy bin width (meV) of the maps of ``atomvib ins`` and ``atomvib compare``: about 300 bins up to
    ``emax_mev``, at least 0.05 meV."""
    return max(0.05, round(emax_mev / 300, 2))


def direct_powder_map(
    source,
    instrument: str | DirectInstrument = "arcs",
    ei_mev: float = 100.0,
    *,
    order: int = 3,
    temperature_k: float = 5.0,
    q_range_ainv=(0.1, 12.0),
    dq_ainv: float = 0.1,
    energy_range_mev=None,
    de_mev: float = 0.5,
    mesh=None,
    mesh_symmetry: bool = True,
    mask: bool = True,
    resolution: bool = True,
    resolution_fwhm_mev: float | None = None,
    cross_sections: dict | None = None,
    modes: IncoherentModes | None = None,
    energy_gain: bool = True,
) -> InsMap:
    """Powder S(|Q|, E) map at incident energy ``ei_mev`` with the kinematic limits of ``instrument``.

    The incoherent S(Q, E) separates into Σ_{i,n} c_in(E) Q^{2n} exp(−Q² α_i), so the resolution
    (a Gaussian in E whose width depends on E and Ei) is applied to each c_in(E) once and the map is
    a sum of a few outer products: no sampling of Q directions. The Debye–Waller α_i converges on
    the same coarse symmetry-reduced mesh as the spectral weights.

    Parameters
    ----------
    instrument : "arcs", "sequoia", "maps", "mari", "merlin", "generic" or a DirectInstrument
    ei_mev : float
        Incident energy, meV.
    q_range_ainv, dq_ainv : |Q| points (Å⁻¹) from ``q_range_ainv[0]`` to ``q_range_ainv[1]``
    energy_range_mev : (float, float), optional
        Energy-transfer bins (lower edges of the first and last); default (0.5, 0.9·Ei).
    mask : bool
        Set points outside the detectors' angular coverage to NaN.
    resolution_fwhm_mev : float, optional
        Constant Gaussian FWHM for ``generic`` (default 1 % of Ei).
    energy_gain : bool
        Let the multiphonon terms combine phonon creation with annihilation (the anti-Stokes
        one-phonon weight A_i(−E) = A_i(E) n/(n + 1), as in :func:`q_averaged_orders`): a 2-phonon
        process that creates a 35 meV phonon and absorbs a 15 meV one lands at +20 meV. Negligible at
        5 K, a visible part of the multiphonon intensity at room temperature (the temperature of most
        direct-geometry powder data). The map itself covers neutron energy loss only.
    Others as in :func:`indirect_spectrum`.
    """
    if isinstance(instrument, str):
        inst = get_instrument(instrument, resolution_fwhm_mev=resolution_fwhm_mev)
    else:
        inst = instrument
    if not isinstance(inst, DirectInstrument):
        raise InputError(
            f"{inst.name} is an indirect-geometry instrument", fix="use indirect_spectrum() for it"
        )
    if not ei_mev or ei_mev <= 0:
        raise InputError(
            "a direct-geometry map needs an incident energy", fix="give --ei MEV (e.g. --ei 100)"
        )
    if modes is None:
        modes = incoherent_modes(source, temperature_k=temperature_k, mesh=mesh, mesh_symmetry=mesh_symmetry)
    if ei_mev <= modes.energies_mev.min():
        raise InputError(
            f"incident energy {ei_mev:g} meV is below the lowest phonon energy {modes.energies_mev.min():.3g} meV",
            fix=f"use an incident energy above the phonon energies (the highest is {modes.energies_mev.max():.1f} meV)",
        )
    sig, wel = _orbit_weights(modes, cross_sections)
    lo, hi = energy_range_mev if energy_range_mev is not None else (0.5, 0.9 * ei_mev)
    e_out = np.arange(lo, hi - 0.5 * de_mev, de_mev) + 0.5 * de_mev
    q = np.arange(q_range_ainv[0], q_range_ainv[1] + 0.5 * dq_ainv, dq_ainv)
    q2 = q**2
    sigma_hi = float(np.max(inst.sigma_mev(np.array([0.0, hi]), ei_mev))) if resolution else 0.0
    emax = hi + 6.0 * sigma_hi
    if energy_gain:  # gain and loss combine: every order must be complete on both sides (_order_histograms)
        emax = max(emax, order * float(modes.energies_mev.max()) + 1.0)
    energies, hists = _order_histograms(modes, order, min(de_mev, 0.1), emax, energy_gain=energy_gain)
    alpha = modes.debye_waller_alpha_a2[modes.representatives]
    intensity = np.zeros((len(q), len(e_out)))
    for n in range(1, order + 1):
        e_n, h = energies[n - 1], hists[n - 1] * wel[:, None]
        if resolution:
            c = _broaden(e_n, h, e_out, inst.sigma_mev(e_n, ei_mev))
        else:
            c = _rebin(e_n, h, e_out, de_mev)
        intensity += _q_factors(q2, alpha, n).T @ c
    intensity *= 1e3  # per meV -> per eV
    if mask:
        qlo, qhi = inst.q_limits(ei_mev, e_out)
        outside = ~((q[:, None] >= qlo[None, :]) & (q[:, None] <= qhi[None, :]))
        intensity = np.where(outside, np.nan, intensity)
    return InsMap(q, e_out, intensity, inst.name, float(ei_mev), modes.temperature_k, order, mask)


# --------------------------------------------------------------------------------------------------
# no instrument: S(Q, E) per order averaged over a set of |Q| points
# --------------------------------------------------------------------------------------------------
def q_averaged_orders(
    modes: IncoherentModes,
    q_ainv,
    energy_mev,
    *,
    order: int = 3,
    de_mev: float = 0.1,
    emax_mev: float | None = None,
    energy_gain: bool = True,
    coverage=None,
    cross_sections: dict | None = None,
) -> np.ndarray:
    """Σ_i σ_i S_i^n(Q, E) / Σ_i σ_i for n = 1..order, averaged over the |Q| points, no resolution.

    The separable form S_i^n(Q, E) = (Q²)^n/n! exp(−Q² α_i) · A_i^{*n}(E) of the module docstring;
    for each energy the Q factor is averaged over the |Q| points that ``coverage`` marks as measured
    (the kinematic limits of a powder measurement remove high |Q| at large energy transfer).

    Parameters
    ----------
    modes : IncoherentModes
    q_ainv : array, shape (nq,), Å⁻¹
    energy_mev : array, shape (ne,), meV
        Where the spectrum is wanted (any order, negative = neutron energy gain); the histograms of
        width ``de_mev`` are read as densities and interpolated linearly.
    order : int
    de_mev : float
        Internal bin width, meV.
    emax_mev : float, optional
        Half-width of the internal grid, meV; default order × the highest mode + 1 meV (everything
        the orders reach, which ``energy_gain`` needs) or the largest |energy| asked for.
    energy_gain : bool
        Include the anti-Stokes side (detailed balance), needed at finite temperature when gain and
        loss processes combine in the multiphonon terms.
    coverage : array of bool, shape (nq, ne), optional
        Which (Q, E) points count in the average; default all.
    cross_sections : dict element -> barn, optional

    Returns
    -------
    ndarray, shape (order, ne), 1/meV
        Each order integrates (over E, both sides with ``energy_gain``) to the Q average of
        (Q² α)^n/n! exp(−Q² α) for a single element.
    """
    if order < 1:
        raise InputError(f"order must be ≥ 1, got {order}", fix="use 1 for one-phonon only")
    e = np.asarray(energy_mev, dtype=float)
    q2 = np.asarray(q_ainv, dtype=float) ** 2
    if emax_mev is None:
        emax_mev = max(order * float(modes.energies_mev.max()), float(np.max(np.abs(e)))) + 1.0
    _, wel = _orbit_weights(modes, cross_sections)
    energies, hists = _order_histograms(modes, order, de_mev, emax_mev, energy_gain=energy_gain)
    alpha = modes.debye_waller_alpha_a2[modes.representatives]
    cov = np.ones((len(q2), len(e)), bool) if coverage is None else np.asarray(coverage, bool)
    cnt = np.maximum(cov.sum(axis=0), 1)
    out = np.zeros((order, len(e)))
    for n in range(1, order + 1):
        qf = (_q_factors(q2, alpha, n) @ cov) / cnt  # (norbit, ne): Q factor averaged over covered points
        dens = np.stack(
            [np.interp(e, energies[n - 1], h / de_mev, left=0.0, right=0.0) for h in hists[n - 1]]
        )
        out[n - 1] = np.sum(wel[:, None] * qf * dens, axis=0)
    return out
