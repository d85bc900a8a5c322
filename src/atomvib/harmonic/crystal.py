"""Phonons of a crystal: dispersion, DOS/partial DOS, thermal properties and instabilities.

Everything is computed from a :class:`ForceConstants` by :func:`analyse_crystal` into frozen
results. phonopy does the Fourier interpolation, tetrahedron DOS and band path (seekpath);
thermal properties use :mod:`atomvib.harmonic.thermal` on the same mesh frequencies (identical to
phonopy's to round-off, checked in the tests).

Units: frequencies THz; DOS states/THz per primitive cell; thermal per mole of primitive cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..engines.base import EngineInfo
from ..results import Result
from ..settings import PhononSettings
from ..structure import Structure
from .force_constants import ForceConstants, from_phonopy_atoms
from .thermal import Thermal, thermal_from_modes


@dataclass(frozen=True, eq=False)
class Dos:
    """Phonon density of states.

    Attributes
    ----------
    frequencies_thz : ndarray, shape (nf,), THz
    total : ndarray, shape (nf,), states/THz per primitive cell (integrates to 3·natoms)
    partial : dict[str, ndarray (nf,)]
        Element-resolved DOS, same unit; they sum to ``total``.
    mesh : tuple of 3 int
        The Γ-centred q-mesh the DOS was computed on.
    """

    frequencies_thz: np.ndarray
    total: np.ndarray
    partial: dict = field(default_factory=dict)
    mesh: tuple = ()


@dataclass(frozen=True, eq=False)
class BandStructure:
    """Dispersion along a high-symmetry path.

    Attributes
    ----------
    qpoints : ndarray, shape (nq, 3), fractional (reciprocal primitive basis)
    distances : ndarray, shape (nq,), Å^-1 (2π included)
    frequencies_thz : ndarray, shape (nq, nbands), THz
    labels : list of (float, str)
        Distance and label of each special point (``"X|K"`` where the path jumps).
    segment_ends : list of int
        Index after the last point of each continuous segment.
    """

    qpoints: np.ndarray
    distances: np.ndarray
    frequencies_thz: np.ndarray
    labels: list
    segment_ends: list

    def to_dict(self) -> dict:
        return {
            "qpoints": self.qpoints.tolist(),
            "distances_inv_angstrom": self.distances.tolist(),
            "frequencies_thz": self.frequencies_thz.tolist(),
            "labels": [{"distance": d, "label": lab} for d, lab in self.labels],
            "segment_ends": list(self.segment_ends),
        }


@dataclass(frozen=True)
class Instability:
    """Imaginary modes: where and how large.

    Attributes
    ----------
    min_frequency_thz : float
        Most negative frequency (THz; imaginary modes are negative).
    qpoint : tuple of 3 float
        Where it occurs (fractional, reciprocal primitive basis).
    label : str
        Special-point label if the q-point is one, else "".
    fraction_of_mesh : float
        Share of mesh q-points with a mode below the threshold.
    """

    min_frequency_thz: float
    qpoint: tuple
    label: str
    fraction_of_mesh: float

    def describe(self) -> str:
        where = f"{self.label} " if self.label else ""
        q = ", ".join(f"{x:.3f}" for x in self.qpoint)
        return (
            f"imaginary mode {self.min_frequency_thz:.2f} THz at {where}q=({q}); "
            f"{100 * self.fraction_of_mesh:.1f}% of the mesh has imaginary modes"
        )


@dataclass(frozen=True, eq=False)
class CrystalPhonons(Result):
    """Harmonic phonons of a crystal (the result of ``atomvib.phonons`` for a crystal).

    Attributes
    ----------
    structure : Structure
        The structure the phonons were computed for (relaxed unless relaxation was off).
    force_constants : ForceConstants
    settings : PhononSettings
    engine : EngineInfo
        Engine provenance (name, versions, model checksum, kernel path, settings); for user forces, the source files.
    mesh : tuple of 3 int
        q-mesh of the DOS and thermal properties.
    dos_ : Dos
    bands : BandStructure
    thermal_ : Thermal
    omega_max_thz, min_frequency_thz : float
        Extremes over the mesh and the band path, THz.
    instability : Instability or None
    n_displacements : int
    relaxation : dict or None
    mesh_convergence : dict
        Relative change of S and Cv at the summary temperature on a 0.7× coarser mesh.
    timings : dict
        Seconds per stage (relax, forces, analysis).

    ``save(dir)`` / ``atomvib.load(dir)`` round-trip every field (:mod:`atomvib.results`).
    """

    structure: Structure
    force_constants: ForceConstants
    settings: PhononSettings
    engine: EngineInfo
    mesh: tuple
    dos_: Dos
    bands: BandStructure
    thermal_: Thermal
    omega_max_thz: float
    min_frequency_thz: float
    instability: Instability | None
    n_displacements: int
    relaxation: dict | None = None
    mesh_convergence: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    kind = "crystal"

    @property
    def primitive(self) -> Structure:
        return self.force_constants.primitive

    @property
    def has_imaginary(self) -> bool:
        return self.instability is not None

    def dos(self) -> Dos:
        return self.dos_

    def band_structure(self) -> BandStructure:
        return self.bands

    def thermal(self, temperatures_k=None) -> Thermal:
        """Thermal properties per mole of primitive cells, on ``temperatures_k`` (default: the settings' grid)."""
        if temperatures_k is None:
            return self.thermal_
        ph = self.force_constants.phonopy()
        ph.run_mesh(list(self.mesh), is_mesh_symmetry=True, is_gamma_center=True)
        return thermal_from_modes(ph.mesh.frequencies, ph.mesh.weights, np.atleast_1d(temperatures_k))

    def to_phonopy(self):
        """A new :class:`phonopy.Phonopy` with the force constants (and NAC) set."""
        return self.force_constants.phonopy()

    def summary(self) -> dict:
        from ..output import crystal_summary

        return crystal_summary(self)

    def _write_files(self, out) -> None:
        from ..output import write_crystal_files

        write_crystal_files(self, out)


def _mesh_numbers(ph, density: float) -> tuple:
    from phonopy.phonon.grid import length2mesh

    return tuple(int(x) for x in length2mesh(density, ph.primitive.cell))


def analyse_crystal(
    fc: ForceConstants,
    settings: PhononSettings,
    structure: Structure | None = None,
    engine: EngineInfo | None = None,
    n_displacements: int = 0,
    relaxation: dict | None = None,
    timings: dict | None = None,
) -> CrystalPhonons:
    """Dispersion, DOS, thermal properties and instabilities from force constants."""
    ph = fc.phonopy()
    prim = from_phonopy_atoms(ph.primitive)
    mesh = _mesh_numbers(ph, settings.mesh_density)

    # Thermal properties, extremes and instabilities on the dense, symmetry-reduced mesh (cheap).
    ph.run_mesh(mesh, is_mesh_symmetry=True, is_gamma_center=True)
    mesh_freqs = np.array(ph.mesh.frequencies)
    mesh_weights = np.array(ph.mesh.weights, dtype=float)
    qpts = np.array(ph.mesh.qpoints)
    thermal = thermal_from_modes(mesh_freqs, mesh_weights, settings.temperatures_k)

    # DOS and partial DOS need eigenvectors on the full grid (phonopy refuses mesh symmetry for the
    # projection), which costs ~natoms² per q-point: they use their own, coarser mesh.
    dos_density = settings.dos_mesh_density or 0.5 * settings.mesh_density
    dos_mesh = _mesh_numbers(ph, dos_density)
    ph.run_mesh(dos_mesh, with_eigenvectors=True, is_mesh_symmetry=False, is_gamma_center=True)
    dos_freqs = np.array(ph.mesh.frequencies)
    fmin_dos = min(0.0, float(dos_freqs.min())) - 5 * settings.dos_step_thz
    fmax_dos = float(dos_freqs.max()) + 5 * settings.dos_step_thz
    ph.run_projected_dos(
        sigma=settings.dos_sigma_thz,
        freq_min=fmin_dos,
        freq_max=fmax_dos,
        freq_pitch=settings.dos_step_thz,
        use_tetrahedron_method=settings.dos_sigma_thz is None,
    )
    pd = ph.projected_dos
    per_atom = np.array(pd.projected_dos)  # (n_prim, nf)
    partial: dict[str, np.ndarray] = {}
    for sym, row in zip(prim.symbols, per_atom):
        partial[sym] = partial.get(sym, 0.0) + row
    dos = Dos(frequencies_thz=np.array(pd.frequency_points), total=per_atom.sum(axis=0), partial=partial, mesh=tuple(dos_mesh))

    bands = _band_structure(ph)
    all_min = min(float(mesh_freqs.min()), float(bands.frequencies_thz.min()))
    all_max = max(float(mesh_freqs.max()), float(bands.frequencies_thz.max()))

    instability = None
    tol = settings.imaginary_tol_thz
    if all_min < -tol:
        if bands.frequencies_thz.min() <= mesh_freqs.min():
            k = int(np.argmin(bands.frequencies_thz.min(axis=1)))
            q = bands.qpoints[k]
        else:
            k = int(np.argmin(mesh_freqs.min(axis=1)))
            q = qpts[k]
        label = ""
        for dist, lab in bands.labels:
            j = int(np.argmin(np.abs(bands.distances - dist)))
            dq = bands.qpoints[j] - q
            if np.allclose(dq - np.round(dq), 0.0, atol=1e-6):  # equal modulo a reciprocal lattice vector
                label = lab
                break
        frac = float(np.sum(mesh_weights[mesh_freqs.min(axis=1) < -tol]) / mesh_weights.sum())
        instability = Instability(all_min, tuple(float(x) for x in q), label, frac)

    # Convergence of thermal properties with the mesh: compare with a 0.7x coarser mesh.
    conv = {}
    coarse = _mesh_numbers(ph, 0.7 * settings.mesh_density)
    if coarse != mesh:
        ph.run_mesh(coarse, is_mesh_symmetry=True, is_gamma_center=True)
        t = np.array([settings.summary_temperature("crystal")])
        tc = thermal_from_modes(ph.mesh.frequencies, ph.mesh.weights, t)
        tf = thermal_from_modes(mesh_freqs, mesh_weights, t)
        rel = lambda a, b: float(abs(a[0] - b[0]) / max(abs(b[0]), 1e-12))  # noqa: E731
        conv = {
            "mesh": list(mesh),
            "coarser_mesh": list(coarse),
            "rel_change_entropy": rel(tc.entropy_j_per_k_per_mol, tf.entropy_j_per_k_per_mol),
            "rel_change_heat_capacity": rel(tc.heat_capacity_j_per_k_per_mol, tf.heat_capacity_j_per_k_per_mol),
        }

    return CrystalPhonons(
        structure=structure if structure is not None else fc.unitcell,
        force_constants=fc,
        settings=settings,
        engine=_engine_info(engine),
        mesh=mesh,
        dos_=dos,
        bands=bands,
        thermal_=thermal,
        omega_max_thz=all_max,
        min_frequency_thz=all_min,
        instability=instability,
        n_displacements=n_displacements,
        relaxation=relaxation,
        mesh_convergence=conv,
        timings=timings if timings is not None else {},
    )


def _engine_info(engine) -> EngineInfo:
    if isinstance(engine, EngineInfo):
        return engine
    return EngineInfo.from_dict(engine or {"name": "unknown", "version": ""})


def _clean_label(label: str) -> str:
    """phonopy/seekpath LaTeX labels ('$\\mathrm{X}$', '$\\Gamma$') to plain text ('X', 'Γ')."""
    import re

    s = label.replace("$", "").replace("\\Gamma", "Γ")
    s = re.sub(r"\\mathrm\{([^}]*)\}", r"\1", s)
    return s.replace("GAMMA", "Γ").replace("_", "")


def _band_structure(ph, npoints: int = 51) -> BandStructure:
    """Band structure along seekpath's standard path for the primitive cell."""
    from phonopy.phonon.band_structure import get_band_qpoints_by_seekpath

    bands, labels, connections = get_band_qpoints_by_seekpath(ph.primitive, npoints, is_const_interval=True)
    labels = [_clean_label(x) for x in labels]
    ph.run_band_structure(bands, with_eigenvectors=False, labels=labels, path_connections=connections)
    d = ph.get_band_structure_dict()
    qpts = np.concatenate([np.asarray(q) for q in d["qpoints"]])
    dist = np.concatenate([np.asarray(x) for x in d["distances"]]) * 2 * np.pi
    freqs = np.concatenate([np.asarray(f) for f in d["frequencies"]])
    seg_lengths = [len(q) for q in d["qpoints"]]
    ends = [int(x) for x in np.cumsum(seg_lengths)]
    # label positions: start of first segment, end of each segment; joined with '|' on jumps
    lab_out = []
    li = 0
    pos = 0
    for s, n in enumerate(seg_lengths):
        if s == 0 or not connections[s - 1]:
            start_label = labels[li]
            li += 1
            if lab_out and abs(lab_out[-1][0] - dist[pos]) < 1e-9:
                lab_out[-1] = (lab_out[-1][0], f"{lab_out[-1][1]}|{start_label}")
            else:
                lab_out.append((float(dist[pos]), start_label))
        end_label = labels[li]
        li += 1
        lab_out.append((float(dist[pos + n - 1]), end_label))
        pos += n
    return BandStructure(qpoints=qpts, distances=dist, frequencies_thz=freqs, labels=lab_out, segment_ends=ends)
