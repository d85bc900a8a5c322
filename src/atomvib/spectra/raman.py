"""Raman activities of molecules from polarizability derivatives.

The static polarizability α (Å³) comes from finite electric fields: the dipole is computed at ±F along
x, y, z and ``α_αγ = 4πε₀ ∂μ_α/∂F_γ``. GFN2-xTB (tblite's ASE calculator, ``electric_field`` in V/Å)
and PySCF (the field added to the core Hamiltonian as F·r, origin at the nuclear charge centre) both
do this; pyscf 2.14 has no analytic polarizability module (``pyscf.prop`` is a separate package),
and tblite has no linear response either, so finite fields are the portable route. α is then
differentiated by central differences along the 3N Cartesian coordinates (36N SCF calculations)
and projected onto the mass-weighted normal modes.

Per mode, with the invariants of the derived tensor α' (Å²/√amu): mean ``a = Tr α'/3`` and
anisotropy ``γ² = ½[(xx−yy)² + (yy−zz)² + (zz−xx)² + 6(xy² + yz² + zx²)]``, the Raman activity is
``S = 45a² + 7γ²`` (Å⁴/amu, the quantity Gaussian/ORCA print) and the depolarization ratio for
linearly polarised light ``ρ = 3γ² / (45a² + 4γ²)``. With a laser wavelength, the relative scattering
cross-section ``∝ (ν₀ − ν)⁴ / ν · S / (1 − exp(−hcν/kT))`` is given instead (Long, *The Raman Effect*,
2002; Polavarapu, J. Phys. Chem. 94, 8106 (1990)).

Crystals: no engine in atomvib gives the dielectric-tensor derivatives a crystal's Raman tensor needs,
so :func:`raman_spectrum` says so instead of guessing.
"""

from __future__ import annotations

import numpy as np

from .. import units
from ..errors import EngineError, InputError
from ..harmonic.thermal import bose_occupation
from .ir import OpticalSpectrum, engine_for, mass_weighted_modes

#: 1/(4πε₀) in eV·Å/e² (= Hartree·Bohr; :mod:`atomvib.units`): α[Å³] = COULOMB · ∂μ[e·Å]/∂F[V/Å]
COULOMB_EV_A: float = units.COULOMB_EV_A

#: default finite field, V/Å (≈ 0.0019 atomic units: large enough for clean differences, far from field ionisation)
FIELD_V_PER_A: float = 0.1


def _dipole_in_field(engine, atoms, field_v_per_a) -> np.ndarray:
    """Dipole (3,) e·Å of ``atoms`` in a uniform field (3,) V/Å, for xtb (tblite) or pyscf engines."""
    name = engine.info.name
    f = np.asarray(field_v_per_a, dtype=float)
    if name == "xtb":
        # tblite.ase's ``electric_field`` parameter hands a NumPy array to a C pointer argument and
        # fails (tblite 0.8), so the field goes through tblite's own interface with a cffi pointer.
        from tblite.interface import Calculator

        from ..engines.guards import version_problems

        problems = version_problems("tblite-field")
        if problems:  # tblite.library is not tblite's public API: no numbers from an untested layout
            raise EngineError(
                f"Raman with xtb passes a field through tblite's C interface, tested on tblite 0.4–0.8 only "
                f"({'; '.join(problems)})",
                fix="install tblite>=0.4,<0.9, or use --engine pyscf:XC/BASIS for the polarizabilities",
            )
        from tblite.library import ffi

        calc = Calculator(engine.method, atoms.numbers, atoms.positions / units.BOHR_A)
        calc.set("accuracy", 0.01)
        calc.set("verbosity", 0)
        # kept alive until singlepoint() returns
        f_au = np.ascontiguousarray(f * units.BOHR_A / units.HARTREE_EV)
        calc.add("electric-field", ffi.cast("double *", ffi.from_buffer(f_au)))
        return np.asarray(calc.singlepoint().get("dipole"), dtype=float) * units.BOHR_A
    if name == "pyscf":
        calc = engine.calculator()
        mf = calc.build_scf(atoms)
        mol = mf.mol
        charges = mol.atom_charges()
        origin = charges @ mol.atom_coords() / charges.sum()
        with mol.with_common_orig(origin):
            r_ints = mol.intor_symmetric("int1e_r", comp=3)
        f_au = f / (units.HARTREE_EV / units.BOHR_A)
        # electrons (charge −1) in the potential −F·r gain +F·r: the field pulls them against F
        h = mf.get_hcore() + np.einsum("x,xij->ij", f_au, r_ints)
        mf.get_hcore = lambda *args, **kw: h
        mf.conv_tol = 1e-11
        mf.kernel()
        if not mf.converged:
            raise EngineError(
                "PySCF SCF in a finite field did not converge",
                fix="use a smaller field or check the geometry",
            )
        return np.asarray(mf.dip_moment(unit="AU", verbose=0), dtype=float) * units.BOHR_A
    raise EngineError(
        f"engine {name} gives no polarizability, so no Raman activities",
        fix="use --engine xtb (GFN2-xTB, finite field) or --engine pyscf:XC/BASIS for a molecule's Raman spectrum",
    )


def polarizability(engine, atoms, field_v_per_a: float = FIELD_V_PER_A) -> np.ndarray:
    """Static electronic polarizability by central finite fields, shape (3, 3), Å³ (symmetrised)."""
    cols = []
    for g in range(3):
        f = np.zeros(3)
        f[g] = field_v_per_a
        cols.append(
            (_dipole_in_field(engine, atoms, f) - _dipole_in_field(engine, atoms, -f)) / (2.0 * field_v_per_a)
        )
    a = COULOMB_EV_A * np.array(cols).T  # [α (dipole), γ (field)]
    return 0.5 * (a + a.T)


def polarizability_derivatives(
    structure, engine, step_a: float = 0.01, field_v_per_a: float = FIELD_V_PER_A
) -> np.ndarray:
    """∂α_αγ/∂x_κβ by central differences, shape (N, 3, 3, 3) ``[κ, β, α, γ]``, Å²."""
    from ..harmonic.molecule import displaced_geometries

    alphas = np.array(
        [polarizability(engine, a, field_v_per_a) for a in displaced_geometries(structure, step_a)]
    )
    d = (alphas[0::2] - alphas[1::2]) / (2.0 * step_a)  # (3N, 3, 3)
    return d.reshape(structure.natoms, 3, 3, 3)


def raman_invariants(dalpha_dq) -> tuple[np.ndarray, np.ndarray]:
    """Mean a (nmodes,) and anisotropy γ² (nmodes,) of derived polarizabilities (nmodes, 3, 3), Å²/√amu."""
    t = np.asarray(dalpha_dq)
    a = np.trace(t, axis1=1, axis2=2) / 3.0
    xx, yy, zz = t[:, 0, 0], t[:, 1, 1], t[:, 2, 2]
    xy, yz, zx = t[:, 0, 1], t[:, 1, 2], t[:, 2, 0]
    g2 = 0.5 * ((xx - yy) ** 2 + (yy - zz) ** 2 + (zz - xx) ** 2 + 6.0 * (xy**2 + yz**2 + zx**2))
    return a, g2


def cross_section_factor(frequencies_cm1, laser_nm: float, temperature_k: float = 298.15) -> np.ndarray:
    """Relative Stokes cross-section weight (ν₀ − ν)⁴ / ν / (1 − exp(−hcν/kT)), shape (nmodes,), arbitrary (cm^-3 scaled by 1e-12)."""
    if not laser_nm > 0:
        raise InputError(f"laser wavelength must be positive, got {laser_nm}", fix="e.g. --laser-nm 532")
    nu = np.asarray(frequencies_cm1, dtype=float)
    nu0 = units.NM_CM1 / laser_nm
    stokes = 1.0 + bose_occupation(nu / units.MEV_TO_CM1, temperature_k)  # n + 1 = 1/(1 − exp(−hcν/kT))
    pos = nu > 0
    w = np.zeros_like(nu)
    w[pos] = (nu0 - nu[pos]) ** 4 / nu[pos] * stokes[pos] * 1e-12
    return w


def molecule_raman(
    result,
    engine=None,
    step_a: float = 0.01,
    field_v_per_a: float = FIELD_V_PER_A,
    laser_nm: float | None = None,
    temperature_k: float = 298.15,
    dalpha=None,
) -> OpticalSpectrum:
    """Raman activities (Å⁴/amu) of a molecule's normal modes, or cross-sections if ``laser_nm`` is given.

    Parameters
    ----------
    result : MoleculeVibrations
    engine : str or Engine, optional
        Polarizability source (xtb or pyscf); default the engine that made ``result``.
    step_a : float
        Displacement step, Å.
    field_v_per_a : float
        Finite electric field, V/Å.
    laser_nm, temperature_k : float, optional
        Excitation wavelength (nm) and temperature (K) for relative cross-sections.
    dalpha : array, shape (N, 3, 3, 3), Å², optional
        Polarizability derivatives if already known.
    """
    eng = None
    if dalpha is None:
        eng = engine_for(result, engine)
        dalpha = polarizability_derivatives(result.structure, eng, step_a, field_v_per_a)
    u = mass_weighted_modes(result.structure, result.modes)  # (nvib, N, 3), 1/√amu
    dq = np.einsum("kbag,mkb->mag", dalpha, u)  # Å²/√amu
    a, g2 = raman_invariants(dq)
    activity = 45.0 * a**2 + 7.0 * g2
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(45.0 * a**2 + 4.0 * g2 > 0, 3.0 * g2 / (45.0 * a**2 + 4.0 * g2), 0.0)
    freqs = np.asarray(result.frequencies_cm1, dtype=float)
    inten, unit = activity, "Å⁴/amu"
    if laser_nm is not None:
        inten, unit = activity * cross_section_factor(freqs, laser_nm, temperature_k), "arb. units"
    return OpticalSpectrum(
        kind="raman",
        system="molecule",
        frequencies_cm1=freqs,
        intensities=inten,
        intensity_unit=unit,
        details={"activity_A4_per_amu": activity, "depolarization": rho, "derived_polarizability": dq},
        source={
            "engine": eng.info.to_dict() if eng is not None else "given dalpha",
            "step_a": step_a,
            "field_v_per_a": field_v_per_a,
            "laser_nm": laser_nm,
            "temperature_k": temperature_k,
        },
    )


def crystal_raman_error() -> EngineError:
    """The error for a crystal's Raman spectrum: what is missing and where to get it."""
    return EngineError(
        "Raman intensities of a crystal need the derivatives of its dielectric (polarizability) tensor with "
        "respect to atomic displacements, and no engine in atomvib computes them",
        fix="compute Raman tensors with DFPT (ABINIT, Quantum ESPRESSO ph.x) or phonopy-spectroscopy; "
        "`atomvib ir` gives a crystal's IR spectrum from Born charges, and `atomvib raman` works for molecules",
    )


def raman_spectrum(
    result,
    engine=None,
    *,
    laser_nm: float | None = None,
    temperature_k: float = 298.15,
    step_a: float = 0.01,
    field_v_per_a: float = FIELD_V_PER_A,
) -> OpticalSpectrum:
    """Raman spectrum of a phonon result (molecules; crystals raise a clear :class:`EngineError`).

    Examples
    --------
    >>> rm = raman_spectrum(atomvib.phonons("water.xyz"))        # doctest: +SKIP
    >>> rm.write("water_raman", fwhm_cm1=10)                     # doctest: +SKIP
    """
    if getattr(result, "kind", None) != "molecule":
        raise crystal_raman_error()
    return molecule_raman(result, engine, step_a, field_v_per_a, laser_nm, temperature_k)
