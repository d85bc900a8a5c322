"""One typed settings object shared by the API, the CLI and the batch runner.

All fields have units in their names or docstrings. Settings are frozen; derive a variant with
:func:`dataclasses.replace`. :meth:`PhononSettings.digest` is the stable hash used to key caches
and database rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError

DEFAULT_TEMPERATURES_K: tuple[float, ...] = tuple(float(t) for t in np.arange(0.0, 1001.0, 10.0))
#: phonopy mesh lengths above this give billions of q-points (typical values are 20–200 Å)
MAX_MESH_DENSITY = 1000.0
#: the most temperatures a --tmax/--tstep grid may hold
MAX_TEMPERATURES = 100_000


@dataclass(frozen=True)
class PhononSettings:
    """Settings of the harmonic workflow.

    Attributes
    ----------
    engine : str or None
        Engine spec (see ``atomvib engines``); None picks the default for the structure kind.
    relax : bool
        Relax positions (and the cell for crystals) before the phonon calculation.
    relax_cell : bool
        Let the cell relax (crystals only), keeping the space group.
    fmax_ev_per_a : float
        Force convergence threshold of the relaxation, eV/Å.
    relax_steps : int
        Maximum optimizer steps.
    supercell : tuple of 9 ints or None
        Supercell matrix (row-major 3×3) applied to the primitive/unit cell; None → automatic.
    min_supercell_length_a : float
        Automatic supercell: smallest perpendicular width of the supercell in Å.
    displacement_a : float
        Finite-displacement amplitude in Å.
    primitive : bool
        Reduce crystals to the spglib primitive cell before the calculation.
    symprec : float
        Symmetry tolerance in Å (spglib/phonopy).
    mesh_density : float
        q-mesh density for DOS/thermal properties: points per Å^-1 along each reciprocal vector
        (phonopy's ``length`` convention, ``n_i = max(1, round(length·|b_i|))`` with |b_i| without 2π).
    dos_mesh_density : float or None
        q-mesh density of the (partial) DOS, which needs eigenvectors on the full grid; None → half of
        ``mesh_density``.
    dos_step_thz : float
        Frequency bin of the DOS in THz.
    dos_sigma_thz : float or None
        Gaussian smearing of the DOS in THz; None → tetrahedron method.
    temperatures_k : tuple of float
        Temperature grid for thermal properties, K.
    summary_temperature_k : float or None
        The temperature reported in ``summary.json``; None → 300 K for crystals (on the default grid),
        298.15 K (standard conditions) for molecular thermochemistry.
    imaginary_tol_thz : float
        Modes below ``-imaginary_tol_thz`` count as imaginary (numerical noise near Γ is above it).
    max_supercell_atoms : int
        Refuse supercells larger than this (memory guard).
    isotopes : tuple of (str, int) pairs
        Isotope masses, applied after the forces (which do not depend on them): ``(("H", 2),)`` deuterates every
        H, ``(("5:O", 18),)`` site 5 (counted from 0, and checked to be O). A dict ``{"H": 2}`` or ``"H=2"``
        strings are accepted and normalised (:func:`atomvib.harmonic.isotopes.normalise_isotopes`); ``()``: the
        natural masses (or those the input file sets).
    """

    engine: str | None = None
    relax: bool = True
    relax_cell: bool = True
    fmax_ev_per_a: float = 1e-3
    relax_steps: int = 300
    supercell: tuple[int, ...] | None = None
    min_supercell_length_a: float = 10.0
    displacement_a: float = 0.01
    primitive: bool = True
    symprec: float = 1e-3
    mesh_density: float = 100.0
    dos_mesh_density: float | None = None
    dos_step_thz: float = 0.02
    dos_sigma_thz: float | None = None
    temperatures_k: tuple[float, ...] = field(default=DEFAULT_TEMPERATURES_K)
    summary_temperature_k: float | None = None
    imaginary_tol_thz: float = 0.1
    max_supercell_atoms: int = 2000
    isotopes: tuple = ()

    def __post_init__(self):
        # every numeric option is checked here, once, for the API, the CLI and the batch runner alike
        if self.supercell is not None:
            object.__setattr__(self, "supercell", _supercell_matrix(self.supercell))
        object.__setattr__(self, "temperatures_k", _temperature_tuple(self.temperatures_k))
        _positive("fmax_ev_per_a", self.fmax_ev_per_a, "--fmax", "a force threshold such as 1e-3 eV/Å")
        object.__setattr__(self, "relax_steps", _count(
            "relax_steps", self.relax_steps, 1, "--relax-steps", "at least 1 step (default 300); --no-relax skips relaxing"))
        _positive("min_supercell_length_a", self.min_supercell_length_a, "--min-length", "a width such as 10 Å")
        if not (_finite(self.displacement_a) and 1e-4 <= self.displacement_a <= 0.2):
            raise InputError(
                f"displacement {self.displacement_a} Å is outside 1e-4–0.2 Å",
                fix="use a displacement around 0.01 Å (--displacement 0.01)",
            )
        _positive("symprec", self.symprec, "--symprec", "a tolerance such as 1e-3 Å")
        _positive("mesh_density", self.mesh_density, "--mesh-density", "a phonopy length such as 100 Å")
        if self.mesh_density > MAX_MESH_DENSITY:
            raise InputError(
                f"mesh density {self.mesh_density:g} Å is above {MAX_MESH_DENSITY:g} Å (billions of q-points)",
                fix="use a phonopy length between 20 and 200 Å (--mesh-density 100)",
            )
        if self.dos_mesh_density is not None:
            _positive("dos_mesh_density", self.dos_mesh_density, "dos_mesh_density", "a phonopy length such as 50 Å")
            if self.dos_mesh_density > MAX_MESH_DENSITY:
                raise InputError(
                    f"DOS mesh density {self.dos_mesh_density:g} Å is above {MAX_MESH_DENSITY:g} Å",
                    fix="use a phonopy length between 20 and 200 Å",
                )
        _positive("dos_step_thz", self.dos_step_thz, "--dos-step", "a step such as 0.02 THz")
        if self.dos_sigma_thz is not None:
            _positive("dos_sigma_thz", self.dos_sigma_thz, "--dos-sigma", "a width such as 0.05 THz, or leave it out")
        if self.summary_temperature_k is not None:
            _temperature("summary_temperature_k", self.summary_temperature_k, "--temperature")
        if not (_finite(self.imaginary_tol_thz) and self.imaginary_tol_thz >= 0):
            raise InputError(
                f"imaginary_tol_thz must be a number ≥ 0, got {self.imaginary_tol_thz!r}",
                fix="use a tolerance such as 0.1 THz",
            )
        object.__setattr__(self, "max_supercell_atoms", _count(
            "max_supercell_atoms", self.max_supercell_atoms, 1, "--max-supercell-atoms", "a limit such as 2000"))
        from .harmonic.isotopes import normalise_isotopes

        object.__setattr__(self, "isotopes", normalise_isotopes(self.isotopes))

    def summary_temperature(self, kind: str) -> float:
        """The temperature (K) reported for a ``kind`` ("crystal" or "molecule") result."""
        if self.summary_temperature_k is not None:
            return float(self.summary_temperature_k)
        return 298.15 if kind == "molecule" else 300.0

    def to_dict(self) -> dict:
        """Plain-JSON form of the settings."""
        d = dataclasses.asdict(self)
        d["temperatures_k"] = list(self.temperatures_k)
        if self.supercell is not None:
            d["supercell"] = list(self.supercell)
        # {"H": 2, "5:O": 18}, in the order they apply; only when set, so that the dict (and every digest made of
        # it: settings, batch rows, database keys) of settings without isotopes is that of earlier versions
        if self.isotopes:
            d["isotopes"] = dict(self.isotopes)
        else:
            d.pop("isotopes")
        return d

    def digest(self, exclude: tuple[str, ...] = ("engine",)) -> str:
        """SHA-256 (16 hex chars) of the settings that change the physics; ``engine`` is keyed separately
        (``isotopes`` only when set: see :meth:`to_dict`)."""
        d = {k: v for k, v in self.to_dict().items() if k not in exclude}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


#: temperatures of a κ(T) curve by default, K (phono3py's own default is 300 K alone)
DEFAULT_KAPPA_TEMPERATURES_K: tuple[float, ...] = tuple(float(t) for t in np.arange(50.0, 1001.0, 50.0))
KAPPA_METHODS = ("rta", "lbte", "wigner")
FC_CALCULATORS = ("traditional", "symfc")


@dataclass(frozen=True)
class KappaSettings:
    """Settings of the thermal-conductivity workflow (``atomvib kappa``), beside :class:`PhononSettings`
    (engine, relaxation, symmetry tolerance), which it shares with ``atomvib phonons``.

    Attributes
    ----------
    method : str
        "rta" (relaxation-time approximation), "lbte" (full linearised Boltzmann equation, direct solution) or
        "wigner" (RTA populations plus the coherences' κ_C of the Wigner transport equation).
    temperatures_k : tuple of float
        Temperatures of κ(T), K.
    mesh : tuple of 3 ints or None
        q-point sampling mesh; None → from ``mesh_density``.
    mesh_density : float
        Automatic mesh: phonopy's length convention, ``n_i = max(1, round(length·|b_i|))`` (Å; 60 Å gives Si's
        19×19×19).
    fc3_supercell : tuple of 9 ints or None
        Supercell of the third-order force constants (row-major 3×3 on the primitive cell); None → automatic.
    fc3_min_length_a : float
        Automatic fc3 supercell: smallest perpendicular width, Å (8 Å gives phono3py's own choices for the shared
        examples: Si conventional 2×2×2, AlN 3×3×2).
    fc2_supercell : tuple of 9 ints or None
        A separate (larger) supercell for the second-order force constants; None → ``fc2_min_length_a``.
    fc2_min_length_a : float or None
        Automatic fc2 supercell width, Å; None → the fc3 supercell.
    displacement_a : float
        Finite-displacement amplitude, Å (phono3py's default 0.03 Å).
    cutoff_pair_a : float or None
        Skip displaced pairs farther apart than this, Å (their fc3 is set to zero): fewer cells for large ones.
    fc_calculator : str
        "traditional" (phono3py's finite differences of the symmetry-reduced pairs) or "symfc" (symfc's fit to
        random displacements of every atom: far fewer cells for low-symmetry or large cells).
    n_snapshots : int or None
        symfc: number of randomly displaced supercells; None → phono3py's estimate for the fc3 basis.
    isotope : bool
        Add isotope scattering with the natural abundances.
    boundary_mfp_um : float or None
        Boundary scattering mean free path, µm (grain size); None → none.
    allow_imaginary : bool
        Compute κ although the harmonic phonons have imaginary modes (phono3py then ignores those modes);
        otherwise refused.
    max_force_hours : float
        Refuse a force stage estimated to take longer than this (hours, from the time of one supercell).
    max_memory_gb : float or None
        LBTE: refuse a collision matrix larger than this; None → 80 % of the memory available now.
    seed : int
        Random displacements (symfc).
    """

    method: str = "rta"
    temperatures_k: tuple[float, ...] = field(default=DEFAULT_KAPPA_TEMPERATURES_K)
    mesh: tuple[int, ...] | None = None
    mesh_density: float = 60.0
    fc3_supercell: tuple[int, ...] | None = None
    fc3_min_length_a: float = 8.0
    fc2_supercell: tuple[int, ...] | None = None
    fc2_min_length_a: float | None = None
    displacement_a: float = 0.03
    cutoff_pair_a: float | None = None
    fc_calculator: str = "traditional"
    n_snapshots: int | None = None
    isotope: bool = False
    boundary_mfp_um: float | None = None
    allow_imaginary: bool = False
    max_force_hours: float = 12.0
    max_memory_gb: float | None = None
    seed: int = 0

    def __post_init__(self):
        method = str(self.method).lower()
        if method not in KAPPA_METHODS:
            raise InputError(f"unknown κ method {self.method!r}", fix=f"use one of {', '.join(KAPPA_METHODS)} (--method)")
        object.__setattr__(self, "method", method)
        calc = str(self.fc_calculator).lower()
        if calc not in FC_CALCULATORS:
            raise InputError(f"unknown force-constant calculator {self.fc_calculator!r}",
                             fix=f"use one of {', '.join(FC_CALCULATORS)} (--fc-calculator)")
        object.__setattr__(self, "fc_calculator", calc)
        object.__setattr__(self, "temperatures_k", _temperature_tuple(self.temperatures_k))
        if self.mesh is not None:
            try:
                m = tuple(int(x) for x in np.asarray(self.mesh, dtype=float).ravel()) \
                    if np.all(np.asarray(self.mesh, dtype=float) == np.round(np.asarray(self.mesh, dtype=float))) else ()
            except (TypeError, ValueError):
                m = ()
            if len(m) != 3 or min(m) < 1 or max(m) > 200:
                raise InputError(f"mesh {self.mesh!r} is not 3 integers between 1 and 200",
                                 fix="give e.g. --mesh 19 19 19, or leave it out for --mesh-density")
            object.__setattr__(self, "mesh", m)
        _positive("mesh_density", self.mesh_density, "--mesh-density", "a phonopy length such as 60 Å")
        if self.mesh_density > MAX_MESH_DENSITY:
            raise InputError(f"mesh density {self.mesh_density:g} Å is above {MAX_MESH_DENSITY:g} Å",
                             fix="use a phonopy length between 20 and 150 Å (--mesh-density 60)")
        for name in ("fc3_supercell", "fc2_supercell"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _supercell_matrix(getattr(self, name)))
        _positive("fc3_min_length_a", self.fc3_min_length_a, "--min-length", "a width such as 8 Å")
        if self.fc2_min_length_a is not None:
            _positive("fc2_min_length_a", self.fc2_min_length_a, "--fc2-min-length", "a width such as 12 Å")
        if not (_finite(self.displacement_a) and 1e-3 <= self.displacement_a <= 0.2):
            raise InputError(f"displacement {self.displacement_a} Å is outside 0.001–0.2 Å",
                             fix="use phono3py's 0.03 Å (--displacement 0.03)")
        if self.cutoff_pair_a is not None:
            _positive("cutoff_pair_a", self.cutoff_pair_a, "--cutoff-pair", "a distance such as 5 Å")
        if self.n_snapshots is not None:
            object.__setattr__(self, "n_snapshots", _count(
                "n_snapshots", self.n_snapshots, 1, "--snapshots", "a number of random supercells such as 100"))
        if self.boundary_mfp_um is not None:
            _positive("boundary_mfp_um", self.boundary_mfp_um, "--boundary-mfp", "a grain size such as 1 µm")
        _positive("max_force_hours", self.max_force_hours, "--max-hours", "a limit such as 12 (hours)")
        if self.max_memory_gb is not None:
            _positive("max_memory_gb", self.max_memory_gb, "--max-memory", "a limit in GB such as 16")

    def to_dict(self) -> dict:
        """Plain-JSON form of the settings."""
        d = dataclasses.asdict(self)
        for k in ("temperatures_k", "mesh", "fc3_supercell", "fc2_supercell"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    def digest(self) -> str:
        """SHA-256 (16 hex chars) of the settings."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ checks
def _finite(x) -> bool:
    try:
        return bool(np.isfinite(float(x)))
    except (TypeError, ValueError):
        return False


def _positive(name: str, value, option: str, example: str) -> None:
    """``value`` must be a finite number > 0; the message names the field and the CLI option."""
    if not (_finite(value) and float(value) > 0):
        raise InputError(f"{option} ({name}) must be a finite number > 0, got {value!r}", fix=f"give {example}")


def _count(name: str, value, least: int, option: str, example: str) -> int:
    ok = not isinstance(value, bool) and _finite(value) and float(value) == int(value) and int(value) >= least
    if not ok:
        raise InputError(f"{option} ({name}) must be an integer ≥ {least}, got {value!r}", fix=f"give {example}")
    return int(value)


def _temperature(name: str, value, option: str) -> float:
    if not (_finite(value) and float(value) >= 0):
        raise InputError(
            f"{option} ({name}) must be a temperature in K, finite and ≥ 0, got {value!r}",
            fix="give a temperature such as 300 (kelvin, not °C)",
        )
    return float(value)


def _temperature_tuple(temps) -> tuple[float, ...]:
    try:
        t = np.asarray(temps, dtype=float).ravel()
    except (TypeError, ValueError):
        raise InputError(f"temperatures_k {temps!r} are not numbers", fix="give temperatures in K, e.g. 0, 10, ..., 1000") from None
    if t.size == 0:
        raise InputError("the temperature grid is empty", fix="give at least one temperature in K (e.g. --tmax 1000)")
    bad = t[~(np.isfinite(t) & (t >= 0))]
    if bad.size:
        raise InputError(
            f"temperatures must be finite and ≥ 0 K, got {float(bad[0])!r}",
            fix="give temperatures in K (not °C), e.g. --tmax 1000 --tstep 10",
        )
    return tuple(float(x) for x in t)


def _supercell_matrix(supercell) -> tuple[int, ...]:
    """A 3 or 3×3 integer supercell as a row-major 9-tuple; refuse non-integers, a non-positive diagonal
    (diagonal form) and a determinant < 1 (a flipped or empty cell)."""
    fix = "give three positive integers, e.g. --supercell 2 2 2, or a 3×3 integer matrix with a positive determinant"
    try:
        a = np.asarray(supercell, dtype=float).ravel()
    except (TypeError, ValueError):
        raise InputError(f"supercell {supercell!r} is not a list of integers", fix=fix) from None
    if a.size not in (3, 9) or not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
        raise InputError(f"supercell {tuple(supercell)} is not 3 integers or a 3×3 integer matrix", fix=fix)
    sc = tuple(int(x) for x in a)
    if len(sc) == 3:
        if min(sc) < 1:
            raise InputError(f"supercell {sc} has a non-positive multiple", fix=fix)
        sc = (sc[0], 0, 0, 0, sc[1], 0, 0, 0, sc[2])
    m = np.reshape(sc, (3, 3))
    if np.count_nonzero(m - np.diag(np.diag(m))) == 0 and min(np.diag(m)) < 1:
        raise InputError(f"supercell matrix {sc} has a non-positive diagonal entry", fix=fix)
    det = round(float(np.linalg.det(m)))
    if det < 1:
        raise InputError(
            f"supercell matrix {sc} has determinant {det}; it must be ≥ 1 (a negative determinant flips the cell)",
            fix=fix,
        )
    return sc


def temperature_grid(tmax, tstep, extra=None, options: tuple[str, str] = ("--tmax", "--tstep")) -> tuple[float, ...]:
    """The grid 0, tstep, ..., tmax (K), plus ``extra`` (a temperature that must be on it), checked before it is
    built: tmax finite ≥ 0, tstep finite > 0, at most :data:`MAX_TEMPERATURES` points."""
    _temperature("tmax", tmax, options[0])
    _positive("tstep", tstep, options[1], "a step in K such as 10")
    n = float(tmax) / float(tstep) + 1
    if n > MAX_TEMPERATURES:
        raise InputError(
            f"{options[0]} {tmax:g} with {options[1]} {tstep:g} makes {n:.3g} temperatures (at most {MAX_TEMPERATURES})",
            fix=f"give a larger {options[1]}, e.g. {options[1]} {max(1.0, float(tmax) / 1000):g}",
        )
    temps = np.arange(0.0, float(tmax) + 0.5 * float(tstep), float(tstep))
    if extra is not None:
        temps = np.union1d(temps, [_temperature("temperature", extra, "--temperature")])
    return tuple(float(t) for t in temps)
