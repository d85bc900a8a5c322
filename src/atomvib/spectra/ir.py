"""Infrared spectra of crystals (Born effective charges) and molecules (dipole derivatives).

Crystals: phonopy gives the Γ-point modes (TO modes: no non-analytic direction at exactly q = 0)
from the force constants; the mode effective charge of mode m is
``p_m,α = Σ_κβ Z*_κ,αβ e_m,κβ / √m_κ`` (phonopy's Born-charge convention: α the field/polarisation
direction, β the atomic displacement) and its IR intensity (oscillator strength) is ``|p_m|²`` in
e²/amu. The three acoustic modes are excluded. The charges come from a BORN file (the result's NAC
parameters) or an array ``becs`` (n_prim, 3, 3) in the order of phonopy's primitive cell, e.g. the
Petretto et al. DFPT set.

Molecules: the dipole moment is differentiated by central differences (±δ along each of the 3N
Cartesian coordinates, 6N calls of the engine's ASE calculator, which must return ``dipole`` in
e·Å: tblite's GFN2-xTB and our PySCF calculator do) and projected onto the normal modes of
:class:`~atomvib.harmonic.molecule.MoleculeVibrations`. Intensities are the integrated molar
absorption coefficients in km/mol, ``A = N_A π / (3 c² 4πε₀) · |∂μ/∂Q|²`` (Wilson, Decius & Cross;
the formula of Gaussian/ORCA "IR Int"); with ∂μ/∂Q in e/√amu that is
:data:`KM_PER_MOL_PER_E2_AMU` ≈ 974.9 km/mol, i.e. 42.256 km/mol per (D/Å)²/amu.

We wrote this ourselves because no maintained library takes phonopy modes + Born charges, or an ASE
dipole calculator, to an IR spectrum; it is a few lines of linear algebra on top of phonopy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import units
from ..errors import EngineError, InputError
from ..results import Result
from .ins import as_phonopy
from .lineshape import broaden, default_axis_cm1

#: (e/√amu)² → km/mol (defined in :mod:`atomvib.units`)
KM_PER_MOL_PER_E2_AMU: float = units.KM_PER_MOL_PER_E2_AMU


@dataclass(frozen=True, eq=False)
class OpticalSpectrum(Result):
    """Mode-resolved IR or Raman intensities ("sticks") and how to broaden them.

    Attributes
    ----------
    kind : {"ir", "raman"}
    system : {"crystal", "molecule"}
    frequencies_cm1 : ndarray, shape (nmodes,), cm^-1
        Optical (crystal, Γ TO) or vibrational (molecule) modes; acoustic/rigid modes excluded.
    intensities : ndarray, shape (nmodes,)
        IR: km/mol (molecules) or e²/amu (crystals); Raman: activity Å⁴/amu (or the
        cross-section in arbitrary units when a laser wavelength was given).
    intensity_unit : str
    details : dict
        Per-mode extras, arrays of shape (nmodes, ...): ``mode_charges_e_per_sqrt_amu`` (nmodes, 3),
        ``depolarization`` (nmodes,), ``irreps`` (labels) where known.
    source : dict
        Engine / Born-charge provenance.
    """

    kind: str
    system: str
    frequencies_cm1: np.ndarray
    intensities: np.ndarray
    intensity_unit: str
    details: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)

    def curve(self, axis_cm1=None, fwhm_cm1: float = 10.0, shape: str = "lorentzian"):
        """Broadened spectrum: (axis_cm1 shape (n,) cm^-1, intensity shape (n,) in intensity_unit per cm^-1)."""
        f = np.asarray(self.frequencies_cm1)
        if axis_cm1 is None:
            axis_cm1 = default_axis_cm1(f[f > 0], fwhm_cm1)
        axis_cm1 = np.asarray(axis_cm1, dtype=float)
        real = f > 0  # imaginary modes (negative) have no place on a spectrum
        return axis_cm1, broaden(f[real], np.asarray(self.intensities)[real], axis_cm1, fwhm_cm1, shape)

    def strongest(self, n: int = 5) -> list[tuple[float, float]]:
        """The n strongest modes as (wavenumber cm^-1, intensity), strongest first."""
        order = np.argsort(self.intensities)[::-1][:n]
        return [(float(self.frequencies_cm1[i]), float(self.intensities[i])) for i in order]

    def write(
        self, out, fwhm_cm1: float = 10.0, shape: str = "lorentzian", axis_cm1=None, plot: bool = True
    ) -> list[Path]:
        """Write ``{kind}.csv`` (wavenumber_cm1, intensity), ``{kind}_modes.csv`` and ``{kind}.png`` into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        x, y = self.curve(axis_cm1, fwhm_cm1, shape)
        p_curve = out / f"{self.kind}.csv"
        np.savetxt(
            p_curve,
            np.column_stack([x, y]),
            delimiter=",",
            header="wavenumber_cm1,intensity",
            comments="",
            fmt="%.8g",
        )
        cols = [self.frequencies_cm1, self.intensities]
        header = ["wavenumber_cm1", f"intensity_{_unit_tag(self.intensity_unit)}"]
        if "depolarization" in self.details:
            cols.append(self.details["depolarization"])
            header.append("depolarization")
        if "intensities_std" in self.details:  # predicted Born charges: the ensemble's spread
            cols.append(self.details["intensities_std"])
            header.append(f"intensity_std_{_unit_tag(self.intensity_unit)}")
        p_modes = out / f"{self.kind}_modes.csv"
        np.savetxt(
            p_modes, np.column_stack(cols), delimiter=",", header=",".join(header), comments="", fmt="%.8g"
        )
        written = [p_curve, p_modes]
        if plot:
            written.append(
                self.plot(out / f"{self.kind}.png", fwhm_cm1=fwhm_cm1, shape=shape, axis_cm1=axis_cm1)
            )
        return written

    def plot(
        self, path, fwhm_cm1: float = 10.0, shape: str = "lorentzian", axis_cm1=None, title: str | None = None
    ) -> Path:
        """Broadened curve with the mode sticks (scaled to the curve's maximum), PNG; see
        :func:`atomvib.spectra.plots.plot_optical`."""
        from .plots import plot_optical

        return plot_optical(self, path, fwhm_cm1=fwhm_cm1, shape=shape, axis_cm1=axis_cm1, title=title)


def _unit_tag(unit: str) -> str:
    return (
        unit.replace("Å", "A")
        .replace("²", "2")
        .replace("⁴", "4")
        .replace("/", "_per_")
        .replace(" ", "_")
        .replace(".", "")
    )


# --------------------------------------------------------------------------------------- crystals


def gamma_modes(ph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Γ-point TO modes of a phonopy object with force constants.

    Returns
    -------
    frequencies_thz : shape (3n,), THz, ascending
    eigenvectors : shape (3n, 3n) complex, column m is mode m (mass-weighted, phonopy's layout)
    acoustic : shape (3n,) bool, the three modes with the largest overlap with rigid translations
    """
    ph.run_qpoints([[0.0, 0.0, 0.0]], with_eigenvectors=True)
    freqs = np.asarray(ph.qpoints.frequencies[0])
    eig = np.asarray(ph.qpoints.eigenvectors[0])
    masses = np.asarray(ph.primitive.masses)
    n = len(masses)
    # mass-weighted rigid translations: e_κβ ∝ √m_κ δ_βα
    trans = np.zeros((3 * n, 3))
    for a in range(3):
        trans[a::3, a] = np.sqrt(masses)
    trans /= np.linalg.norm(trans, axis=0)
    overlap = np.sum(np.abs(trans.T @ eig) ** 2, axis=0)
    acoustic = np.zeros(3 * n, dtype=bool)
    acoustic[np.argsort(overlap)[-3:]] = True
    return freqs, eig, acoustic


def mode_charges(born, eigenvectors, masses) -> np.ndarray:
    """Mode effective charges p_m,α = Σ_κβ Z*_κ,αβ e_m,κβ / √m_κ.

    Parameters
    ----------
    born : shape (n, 3, 3), e; ``born[κ, α, β]`` with α the field direction, β the displacement
    eigenvectors : shape (3n, nmodes), mass-weighted unit eigenvectors (columns), layout κβ
    masses : shape (n,), amu

    Returns
    -------
    ndarray, shape (nmodes, 3), e/√amu (real: Γ-point modes can be chosen real)
    """
    born = np.asarray(born, dtype=float)
    n = len(masses)
    e = np.asarray(eigenvectors).reshape(n, 3, -1) / np.sqrt(np.asarray(masses, dtype=float))[:, None, None]
    p = np.einsum("kab,kbm->ma", born, e)
    # a degenerate or complex-phased Γ eigenvector: |p|² is phase-invariant, so keep the modulus per component
    return np.real(p) if np.allclose(np.imag(p), 0.0, atol=1e-10) else np.abs(p)


def crystal_ir(result, becs=None, becs_members=None) -> OpticalSpectrum:
    """IR intensities of the Γ TO modes of a crystal.

    Parameters
    ----------
    result : CrystalPhonons, ForceConstants or phonopy.Phonopy
    becs : array, shape (n_prim, 3, 3), e, optional
        Born effective charges in phonopy's primitive-cell atom order; default the result's BORN data.
    becs_members : array, shape (members, n_prim, 3, 3), e, optional
        One set per ensemble member: ``details["intensities_std"]`` is then the spread of each mode's intensity
        across them. Default: the members of predicted Born charges (``--born predicted``) the result records.

    Returns
    -------
    OpticalSpectrum with intensities in e²/amu, acoustic modes removed.
    """
    ph = as_phonopy(result)
    n = len(ph.primitive.masses)
    if becs is not None:
        born = np.asarray(becs, dtype=float)
        origin = "becs array"
        if born.shape != (n, 3, 3):
            raise InputError(
                f"becs has shape {born.shape}, the primitive cell needs ({n}, 3, 3)",
                fix="give one 3×3 Born-charge tensor per atom of the primitive cell, in phonopy's atom order",
            )
    elif ph.nac_params is not None and ph.nac_params.get("born") is not None:
        born = np.asarray(ph.nac_params["born"], dtype=float)
        origin = "BORN (NAC parameters)"
        predicted = _predicted_born(result)
        if predicted is not None:
            origin = predicted.get("nac_label", "predicted")
            if becs_members is None and predicted.get("members_born"):
                becs_members = np.asarray(predicted["members_born"], float)
    else:
        raise InputError(
            "IR intensities of a crystal need Born effective charges, and this result has none",
            fix="give --born BORN (phonopy format), or pass becs=array of shape (n_atoms, 3, 3) in the Python API",
        )
    freqs, eig, acoustic = gamma_modes(ph)
    p = mode_charges(born, eig, ph.primitive.masses)
    keep = ~acoustic
    inten = np.sum(p**2, axis=1)
    details = {"mode_charges_e_per_sqrt_amu": p[keep], "frequencies_thz": freqs[keep]}
    if becs_members is not None:  # the ensemble's spread of the intensities (same modes, each member's Z*)
        mem = np.asarray(becs_members, float)
        if mem.ndim != 4 or mem.shape[1:] != (n, 3, 3):
            raise InputError(f"becs_members has shape {mem.shape}, needs (members, {n}, 3, 3)",
                             fix="give one Born-charge set per ensemble member, in phonopy's atom order")
        per = np.stack([np.sum(mode_charges(b, eig, ph.primitive.masses) ** 2, axis=1)[keep] for b in mem])
        details["intensities_members"] = per
        details["intensities_std"] = per.std(0, ddof=1) if len(per) > 1 else np.zeros(int(keep.sum()))
    return OpticalSpectrum(
        kind="ir",
        system="crystal",
        frequencies_cm1=freqs[keep] * units.THZ_TO_CM1,
        intensities=inten[keep],
        intensity_unit="e²/amu",
        details=details,
        source={"born_charges": origin, "asr_violation_e": float(np.abs(born.sum(axis=0)).max())},
    )


def _predicted_born(result) -> dict | None:
    """The provenance of predicted Born charges a result carries (engine settings ``born``), or None."""
    eng = getattr(result, "engine", None)
    rec = getattr(eng, "settings", {}).get("born") if eng is not None else None
    return rec if isinstance(rec, dict) and rec.get("source") == "predicted" else None


# --------------------------------------------------------------------------------------- molecules


def engine_for(result, engine=None):
    """The engine to use for a molecule's dipoles/polarizabilities: ``engine``, or the one that made the result.

    The result's :class:`~atomvib.engines.EngineInfo` carries the spec that recreates its engine
    (``xtb:gfn1``, ``pyscf:b3lyp/def2-svp``); nothing is guessed from version strings.
    """
    from ..engines import EngineInfo, get_engine

    if engine is not None:
        return get_engine(engine)
    raw = getattr(result, "engine", None)
    info = EngineInfo.from_dict(raw) if raw else None
    if info is not None and info.spec:
        if info.spec.split(":", 1)[0] == "ase":
            # `ase:module:Class` imports and calls code named by the spec: never on the word of a data file
            raise InputError(
                f"the result was made with an ASE calculator class ({info.spec}); atomvib does not import code "
                "named in a saved result",
                fix=f"give the engine yourself: --engine {info.spec} (API: engine='{info.spec}')",
            )
        return get_engine(info.spec)
    if info is not None and info.name and info.name not in ("unknown", "phonopy-files"):
        return get_engine(info.name)  # results written before specs were recorded: the engine's default
    raise InputError(
        "the result does not say which engine made it", fix="give engine='xtb' or engine='pyscf:hf/sto-3g'"
    )


def dipole_derivatives(structure, engine, step_a: float = 0.01) -> np.ndarray:
    """Atomic polar tensors ∂μ_α/∂x_κβ by central differences of the dipole, shape (N, 3, 3), e.

    Same layout as Born charges: ``[κ, α (dipole component), β (displacement)]``. 6N calls of the
    engine's ASE calculator at the geometries of :func:`~atomvib.harmonic.molecule.displaced_geometries`.
    """
    from ..harmonic.molecule import dipole_derivatives_from_dipoles, displaced_geometries

    calc = engine.calculator()
    if "dipole" not in getattr(calc, "implemented_properties", ()):
        raise EngineError(
            f"engine {engine.info.name} gives no dipole moment, so no IR intensities",
            fix="use --engine xtb or --engine pyscf:XC/BASIS for a molecule's IR spectrum",
        )
    dips = []
    for atoms in displaced_geometries(structure, step_a):
        atoms.calc = calc
        dips.append(np.asarray(atoms.get_dipole_moment(), dtype=float))
    return dipole_derivatives_from_dipoles(np.array(dips), step_a)


def mass_weighted_modes(structure, modes) -> np.ndarray:
    """Cartesian unit-norm modes (nvib, N, 3) → ``e/√m`` with e the unit mass-weighted eigenvector, shape (nvib, N, 3), 1/√amu."""
    m = np.asarray(structure.masses, dtype=float)
    d = np.asarray(modes, dtype=float)
    norm = np.sqrt(np.einsum("mkb,k->m", d**2, m))  # |√m d|
    return d / norm[:, None, None]


def molecule_ir(result, engine=None, step_a: float = 0.01, apt=None) -> OpticalSpectrum:
    """IR intensities (km/mol) of a molecule's normal modes.

    Parameters
    ----------
    result : MoleculeVibrations
    engine : str or Engine, optional
        Dipole source; default the engine that made ``result``.
    step_a : float
        Finite-difference step, Å.
    apt : array, shape (N, 3, 3), e, optional
        Atomic polar tensors ``[κ, α, β]`` if already known (skips the 6N dipole calls); by default
        ``result.dipole_derivatives`` when the workflow stored them, else computed here.
    """
    eng = None
    if apt is None and engine is None and getattr(result, "dipole_derivatives", None) is not None:
        apt = np.asarray(
            result.dipole_derivatives
        )  # stored by the workflow from the Hessian's own geometries
    if apt is None:
        eng = engine_for(result, engine)
        apt = dipole_derivatives(result.structure, eng, step_a)
    u = mass_weighted_modes(result.structure, result.modes)  # (nvib, N, 3), 1/√amu
    dmu_dq = np.einsum("kab,mkb->ma", apt, u)  # e/√amu
    inten = KM_PER_MOL_PER_E2_AMU * np.sum(dmu_dq**2, axis=1)
    return OpticalSpectrum(
        kind="ir",
        system="molecule",
        frequencies_cm1=np.asarray(result.frequencies_cm1, dtype=float),
        intensities=inten,
        intensity_unit="km/mol",
        details={"dipole_derivatives_e_per_sqrt_amu": dmu_dq, "atomic_polar_tensors_e": np.asarray(apt)},
        source={"engine": eng.info.to_dict() if eng is not None else "given APT", "step_a": step_a},
    )


def ir_spectrum(result, engine=None, *, becs=None, step_a: float = 0.01) -> OpticalSpectrum:
    """IR intensities of any phonon result: crystals from Born charges, molecules from dipole derivatives.

    Parameters
    ----------
    result : CrystalPhonons, MoleculeVibrations, ForceConstants or phonopy.Phonopy
    engine : str or Engine, optional
        Molecules only: the dipole source (default the result's engine).
    becs : array, shape (n_prim, 3, 3), optional
        Crystals only: Born charges instead of the result's BORN data.
    step_a : float
        Molecules only: finite-difference step, Å.

    Examples
    --------
    >>> ir = ir_spectrum(atomvib.phonons("water.xyz"))          # doctest: +SKIP
    >>> x, y = ir.curve(fwhm_cm1=10); ir.write("water_ir")      # doctest: +SKIP
    """
    if getattr(result, "kind", None) == "molecule":
        if becs is not None:
            raise InputError(
                "becs applies to crystals",
                fix="drop becs for a molecule: its dipole derivatives are computed",
            )
        return molecule_ir(result, engine, step_a)
    return crystal_ir(result, becs)
