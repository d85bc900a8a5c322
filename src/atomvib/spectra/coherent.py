"""Coherent one-phonon S(Q, E) (single crystal along a path, and powder-averaged) through Euphonic.

Euphonic (Fair et al., J. Appl. Cryst. 55, 1689 (2022)) does the work: Fourier interpolation with
the dipole (LO–TO) correction when Born charges are present, structure factors with the Debye–Waller
factor. This module converts our force constants into Euphonic's and returns plain arrays in
atomvib's units. The Debye–Waller factor is computed on a coarse,
symmetry-reduced Monkhorst–Pack grid (``dw_mesh``), which converges far sooner than the S(Q,E)
sampling itself.

The powder average is ours, not Euphonic's ``sample_sphere_structure_factor``, for speed at equal
accuracy: the coherent one-phonon S(Q, ω) is invariant under the crystal's Laue group G (point group
plus Q → −Q, time reversal), so phonons are computed only at the directions of Euphonic's golden
sphere set that fall in one fundamental domain of G (≈ npts/|G|: 1/48 for cubic crystals), all
shells in one Euphonic call. A G-symmetric set with that few distinct directions, binned as delta
functions, would be noisier than Euphonic's (whose npts directions are npts distinct orbits); we
instead triangulate the symmetric set and bin ω and S interpolated linearly over each triangle (the
2-D analogue of the tetrahedron method), which converges several times faster in the number of
directions. ``symmetry=False`` gives Euphonic's own average, number for number.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..harmonic.thermal import bose_occupation
from ..results import Result
from .ins import as_phonopy


def euphonic_force_constants(source):
    """``euphonic.ForceConstants`` (with Born charges if present) from a CrystalPhonons or ForceConstants.

    Euphonic reads phonopy's files, so the force constants go through a phonopy.yaml in a temporary
    directory (NAC included); nothing is read from the working directory.
    """
    from euphonic import ForceConstants

    ph = as_phonopy(source)
    with tempfile.TemporaryDirectory() as tmp:
        ph.save(str(Path(tmp) / "phonopy.yaml"), settings={"force_constants": True})
        fc = ForceConstants.from_phonopy(path=tmp, summary_name="phonopy.yaml")
    return _isotope_atom_types(fc)


def _isotope_atom_types(fc):
    """Euphonic force constants whose atom types are isotope labels (``"2H"``) where an atom's mass is an
    isotope's (:func:`atomvib.harmonic.isotopes.species_labels`), so that :func:`scattering_lengths` can give each
    its own b_c; unchanged without isotopes."""
    from ase.data import atomic_numbers
    from euphonic import ForceConstants

    from ..harmonic.isotopes import species_labels

    numbers = [atomic_numbers[str(x)] for x in fc.crystal.atom_type]
    labels = species_labels(numbers, fc.crystal.atom_mass.to("amu").magnitude)
    if labels == [str(x) for x in fc.crystal.atom_type]:
        return fc
    d = fc.to_dict()
    d["crystal"]["atom_type"] = np.array(labels)
    return ForceConstants.from_dict(d)


def scattering_lengths(crystal):
    """Coherent scattering lengths for Euphonic's structure factors: ``"Sears1992"`` (Euphonic's own table) when
    every atom type is an element, else a dict atom type -> b_c with the isotopes' values from
    :mod:`atomvib.spectra.neutron_data` (same source, Sears 1992); an isotope without data is refused."""
    import warnings

    from euphonic import ureg

    from .neutron_data import coherent_scattering_length_fm, is_isotope_label

    types = list(dict.fromkeys(str(x) for x in crystal.atom_type))
    if not any(is_isotope_label(t) for t in types):
        return "Sears1992"
    from euphonic.util import get_reference_data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        natural = get_reference_data(collection="Sears1992", physical_property="coherent_scattering_length")
    return {t: coherent_scattering_length_fm(t) * ureg("fm") if is_isotope_label(t) else natural[t] for t in types}


@dataclass(frozen=True, eq=False)
class CoherentMap(Result):
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
    sf = modes.calculate_structure_factor(dw=dw, scattering_lengths=scattering_lengths(fc.crystal))
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


def laue_rotations_cart(crystal, symprec=1e-5):
    """Cartesian rotations of the crystal's Laue group (point group with inversion added).

    Parameters
    ----------
    crystal : euphonic.Crystal
    symprec : float
        spglib tolerance (Å).

    Returns
    -------
    ndarray, shape (nG, 3, 3)
        Orthogonal matrices R with S(R·Q, ω) = S(Q, ω) for Cartesian Q (Å⁻¹); the identity first.
        spglib gives integer rotations r on fractional coordinates; with the lattice vectors as the
        rows of L, the Cartesian form is R = Lᵀ r L⁻ᵀ (the same R acts on reciprocal vectors).
    """
    import spglib

    lattice, positions, numbers = crystal.to_spglib_cell()
    sym = spglib.get_symmetry((lattice, positions, numbers), symprec=symprec)
    if sym is None:
        from ..errors import InputError

        raise InputError("spglib could not find the symmetry of the crystal", fix="pass symmetry=False")
    lat = np.asarray(lattice, float)
    rots = np.einsum("ji,njk,kl->nil", lat, sym["rotations"].astype(float), np.linalg.inv(lat).T)
    rots = np.concatenate([rots, -rots])  # time reversal: S(−Q, ω) = S(Q, ω)
    # distinct matrices only (a centrosymmetric group already contains −R); identity first
    keep = [np.eye(3)]
    for r in rots:
        if not any(np.abs(r - k).max() < 1e-6 for k in keep):
            keep.append(r)
    return np.array(keep)


def wedge_directions(npts, rotations, sampling="golden"):
    """Unit vectors of Euphonic's ``npts``-point sphere set that lie in one fundamental domain of G.

    The domain is the Dirichlet domain {u : v·u ≥ v·(R u) for all R in G} of a generic vector v (one
    that no rotation but the identity leaves fixed): its images under G tile the sphere, so an
    equal-weight average of a G-invariant function over the kept points is its average over the
    G-symmetric set of their images, which has Euphonic's density (≈ ``npts`` points).

    Returns
    -------
    ndarray, shape (≈ npts/nG, 3), dimensionless unit vectors (Cartesian).
    """
    from euphonic.powder import _get_qpts_sphere

    rotations = np.asarray(rotations, float)
    u = _get_qpts_sphere(npts, sampling=sampling, jitter=False)
    if len(rotations) == 1:
        return u
    rng = np.random.default_rng(7)
    for _ in range(100):
        v = rng.normal(size=3)
        v /= np.linalg.norm(v)
        images = rotations @ v  # (nG, 3)
        if np.min(np.linalg.norm(images[1:] - v, axis=1)) > 1e-2:
            break
    # u·(Rᵀ v) = v·(R u): one matrix product gives v·(R u) for all R and all u
    proj = u @ images.T  # (npts, nG) with images[k] = R_k v → this is u·(R_k v) = v·(R_kᵀ u)
    # the set {R_kᵀ} is G itself, so comparing u·v (column 0) to the max over k is the domain test
    return u[proj[:, 0] >= proj.max(axis=1) - 1e-12]


def coherent_powder_map(
    source,
    q_ainv,
    energy_bins_mev,
    *,
    temperature_k=5.0,
    dw_mesh=6,
    npts=10000,
    sampling="golden",
    fc=None,
    symmetry=True,
    method="linear",
    max_qpoints_per_call=20000,
):
    """Powder-averaged coherent S(|Q|, E) at the |Q| values ``q_ainv`` (Å⁻¹).

    Parameters
    ----------
    source : phonon source (see :func:`euphonic_force_constants`); unused when ``fc`` is given.
    q_ainv : array, shape (nq,), Å⁻¹
    energy_bins_mev : array, shape (ne + 1,), meV bin edges
    temperature_k : float or None
        DW factor and Bose occupation at this temperature (None: neither).
    dw_mesh : int or 3 ints
        Monkhorst–Pack grid for the DW factor.
    npts : int
        Directions per shell at Euphonic's density (Euphonic's ``npts``). With symmetry, about
        npts/|G| are evaluated. With ``method="linear"`` the default (≈200 evaluations per shell for
        a cubic crystal) is about as accurate as Euphonic's 1000-direction histogram
        (benchmarks/spectra.py measures both against a converged map).
    sampling : str
        Euphonic's sphere-sampling scheme.
    symmetry : bool
        Evaluate only the directions in one fundamental domain of the Laue group (≈ npts/|G|
        per shell). False: Euphonic's ``sample_sphere_structure_factor`` on all ``npts`` directions.
    method : "linear" or "histogram"
        With ``symmetry``: "linear" interpolates ω and S linearly over the triangles between the
        directions (the 2-D analogue of the tetrahedron method; converges far faster in ``npts``);
        "histogram" bins each direction's delta functions, as Euphonic does.

    Returns
    -------
    CoherentMap
        ``intensity`` shape (nq, ne), mbarn per meV per cell, averaged over directions.
    """
    from euphonic import ureg

    fc = fc or euphonic_force_constants(source)
    dw = _debye_waller(fc, temperature_k, dw_mesh)
    ebins = np.asarray(energy_bins_mev, dtype=float)
    q_ainv = np.asarray(q_ainv, float)
    if symmetry:
        from ..engines.guards import version_problems, warn_fallback

        problems = version_problems("euphonic-sphere")
        if problems:  # the wedge uses Euphonic's private sphere points and binning
            warn_fallback("coherent powder map", "symmetry-wedge", problems, used="Euphonic sphere-average")
            symmetry = False
    if not symmetry:
        out = _powder_map_euphonic(fc, q_ainv, ebins, dw, temperature_k, npts, sampling)
    else:
        rots = laue_rotations_cart(fc.crystal)
        dirs = wedge_directions(npts, rots, sampling)
        tri = _sphere_triangles(dirs, rots) if method == "linear" else None
        rec = fc.crystal.reciprocal_cell.to("1/angstrom").magnitude
        b_coh = scattering_lengths(fc.crystal)
        out = np.zeros((len(q_ainv), len(ebins) - 1))
        per_call = max(1, max_qpoints_per_call // len(dirs))
        for k0 in range(0, len(q_ainv), per_call):
            qs = q_ainv[k0 : k0 + per_call]
            cart = (qs[:, None, None] * dirs[None]).reshape(-1, 3)
            modes = fc.calculate_qpoint_phonon_modes(np.linalg.solve(rec.T, cart.T).T)
            sf = modes.calculate_structure_factor(dw=dw, scattering_lengths=b_coh)
            if tri is None:
                # Euphonic's calculate_1d_average bins with this very call (Bose factor at the DW
                # temperature) and then averages over all q; we average per shell instead.
                z = sf._bose_corrected_structure_factor(ebins * ureg("meV"), calc_bose=True).magnitude
                out[k0 : k0 + len(qs)] = z.reshape(len(qs), len(dirs), -1).mean(axis=1)
                continue
            w_mev = sf.frequencies.to("meV").magnitude.reshape(len(qs), len(dirs), -1)
            s_mbarn = sf.structure_factors.to("mbarn").magnitude.reshape(w_mev.shape)
            bose = bose_occupation(w_mev, temperature_k)
            for j in range(len(qs)):
                # energy gain (−ω, weight n) and loss (+ω, weight n+1), as Euphonic bins them
                e = np.concatenate([w_mev[j], -w_mev[j]], axis=1)
                i = np.concatenate([(1.0 + bose[j]) * s_mbarn[j], bose[j] * s_mbarn[j]], axis=1)
                out[k0 + j] = _triangle_bins(e, i, *tri, ebins)
    return CoherentMap(q_ainv, 0.5 * (ebins[1:] + ebins[:-1]), out, "powder", None, temperature_k)


def _powder_map_euphonic(fc, q_ainv, ebins, dw, temperature_k, npts, sampling):
    """Euphonic's own sphere average, shell by shell (the reference for the symmetric path)."""
    from euphonic import ureg
    from euphonic.powder import sample_sphere_structure_factor

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
            scattering_lengths=scattering_lengths(fc.crystal),
        )
        out[k] = sf.y_data.magnitude
    return out


def _sphere_triangles(dirs, rotations):
    """Triangles of the G-symmetric direction set, as triples of wedge indices with area weights.

    The convex hull of the |G|·n image directions triangulates the sphere. A triangle's values
    depend only on which wedge directions its corners are images of, so triangles with the same
    (sorted) triple are merged and their areas summed: about 2n distinct triangles remain
    instead of 2·n·|G|.

    Returns
    -------
    tri : ndarray, shape (nt, 3), int — indices into ``dirs``
    weight : ndarray, shape (nt,) — area fractions of the sphere, summing to 1
    """
    from scipy.spatial import ConvexHull

    n = len(dirs)
    pts = np.einsum("gij,mj->gmi", np.asarray(rotations, float), dirs).reshape(-1, 3)
    simplices = ConvexHull(pts).simplices
    a = pts[simplices]
    area = 0.5 * np.linalg.norm(np.cross(a[:, 1] - a[:, 0], a[:, 2] - a[:, 0]), axis=1)
    tri, inv = np.unique(np.sort(simplices % n, axis=1), axis=0, return_inverse=True)
    weight = np.bincount(inv.ravel(), weights=area, minlength=len(tri))
    return tri, weight / weight.sum()


def _triangle_bins(e, s, tri, weight, edges):
    """Bin linear interpolants of band energies over the triangles (2-D tetrahedron method).

    Parameters
    ----------
    e, s : ndarray, shape (n, nb)
        Band energies (meV) and intensities at the ``n`` wedge directions.
    tri, weight : from :func:`_sphere_triangles`
    edges : ndarray, shape (ne + 1,), meV

    Returns
    -------
    ndarray, shape (ne,): Σ over triangles and bands of weight · mean(s) · (fraction of the triangle
    whose linear energy lies in the bin) / bin width — the histogram of a linear function over a
    triangle has the closed-form piecewise-quadratic cumulative used below.
    """
    ev = np.sort(e[tri], axis=1)  # (nt, 3, nb): sorted corner energies
    amp = (weight[:, None] * s[tri].mean(axis=1)).ravel()
    e1, e2, e3 = (ev[:, k].ravel() for k in range(3))
    ne = len(edges) - 1
    # only (triangle, band) pairs that reach the energy window and carry intensity
    keep = (e3 >= edges[0]) & (e1 <= edges[-1]) & (amp != 0)
    e1, e2, e3, amp = e1[keep], e2[keep], e3[keep], amp[keep]
    out = np.zeros(ne)
    if not len(amp):
        return out
    # a pair touches only the bins from the one holding e1 to the one holding e3: a short window
    lo = np.searchsorted(edges, e1, side="right") - 1
    hi = np.searchsorted(edges, e3, side="left")
    width = int(np.max(hi - lo))
    j = lo[:, None] + np.arange(max(width, 1))[None, :]  # bin indices, (rows, width)
    valid = (j >= 0) & (j < ne) & (j < np.maximum(hi, lo + 1)[:, None])
    e1, e2, e3 = e1[:, None], e2[:, None], e3[:, None]
    d31, d21, d32 = e3 - e1, e2 - e1, e3 - e2

    def ratio(a, b):
        # a/b where b > 0; elsewhere 0. A zero b (two equal corner energies: flat bands, degenerate
        # modes, symmetric directions) empties the branch that would divide by it, so its value is
        # never selected below; this keeps 0/0 and x/0 from being computed at all.
        return np.divide(a, b, out=np.zeros(np.broadcast_shapes(np.shape(a), np.shape(b))), where=b > 0)

    def cdf(x):
        # each factor lies in [0, 1] where its branch is used, so neither under- nor overflows
        lower = ratio(x - e1, d21) * ratio(x - e1, d31)
        upper = 1.0 - ratio(e3 - x, d32) * ratio(e3 - x, d31)
        return np.where(x >= e3, 1.0, np.where(x <= e1, 0.0, np.where(x <= e2, lower, upper)))

    jc = np.clip(j, 0, ne - 1)
    frac = cdf(edges[jc + 1]) - cdf(edges[jc])
    out += np.bincount(jc[valid], weights=(amp[:, None] * frac)[valid], minlength=ne)
    return out / np.diff(edges)
