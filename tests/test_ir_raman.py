"""IR and Raman: line shapes, crystal IR from Born charges, molecular IR/Raman from xtb and pyscf, CLI."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from atomvib.errors import EngineError, InputError
from atomvib.spectra.ir import KM_PER_MOL_PER_E2_AMU, crystal_ir, dipole_derivatives, gamma_modes, ir_spectrum
from atomvib.spectra.lineshape import broaden, lineshape
from atomvib.spectra.raman import polarizability, raman_spectrum

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PHONOPY_EX = DATA / "phonopy-examples"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference data not found: {path}")
    return path


# ------------------------------------------------------------------------------------ line shapes


@pytest.mark.parametrize("shape", ["lorentzian", "gaussian"])
def test_lineshape_area_and_width(shape):
    x = np.arange(-5000.0, 5000.0, 0.05)
    y = lineshape(x, 0.0, 12.0, shape)
    area = np.trapezoid(y, x)
    # a Lorentzian's tails beyond ±L hold (2/π)·(Γ/2)/L of its area: 0.15 % at L = 5000 cm^-1
    expected = 1.0 - (2.0 / np.pi) * 6.0 / 5000.0 if shape == "lorentzian" else 1.0
    assert area == pytest.approx(expected, rel=1e-5)
    # full width at half maximum is what was asked
    half = lineshape(np.array([6.0, -6.0]), 0.0, 12.0, shape)
    assert half == pytest.approx([0.5 * y.max()] * 2, rel=1e-6)


def test_broaden_keeps_band_intensities_and_rejects_bad_width():
    x = np.arange(0.0, 3000.0, 0.5)
    y = broaden([500.0, 1500.0], [2.0, 3.0], x, fwhm_cm1=8.0, shape="gaussian")
    assert np.trapezoid(y[x < 1000], x[x < 1000]) == pytest.approx(2.0, rel=1e-6)
    assert np.trapezoid(y[x > 1000], x[x > 1000]) == pytest.approx(3.0, rel=1e-6)
    with pytest.raises(InputError, match="positive"):
        broaden([500.0], [1.0], x, fwhm_cm1=0.0)
    with pytest.raises(InputError, match="line shape"):
        broaden([500.0], [1.0], x, shape="voigt")


def test_km_per_mol_conversion_matches_the_standard_factor():
    # Gaussian/ORCA: 1 (D/Å)²/amu = 42.2561 km/mol; 1 e·Å = 4.803204 D
    assert KM_PER_MOL_PER_E2_AMU / 4.80320425**2 == pytest.approx(42.2561, rel=2e-5)


# ------------------------------------------------------------------------------------ crystals


def _phonopy_result(name, born=True):
    import atomvib

    d = _need(PHONOPY_EX / name)
    return atomvib.phonons(
        str(d / "phonopy_disp.yaml"),
        forces=str(d / "FORCE_SETS"),
        born=str(d / "BORN") if born else None,
        mesh_density=10,
    )


@pytest.fixture(scope="module")
def nacl():
    return _phonopy_result("NaCl")


@pytest.fixture(scope="module")
def mgo():
    return _phonopy_result("MgO")


@pytest.mark.parametrize("name", ["nacl", "mgo"])
def test_rocksalt_one_triply_degenerate_to_mode(name, request):
    r = request.getfixturevalue(name)
    ir = crystal_ir(r)
    # phonopy's own Γ frequencies without any NAC: the TO mode
    ph = r.to_phonopy()
    ph.nac_params = None
    ph.run_qpoints([[0, 0, 0]])
    to_thz = ph.qpoints.frequencies[0][3:]
    assert len(ir.frequencies_cm1) == 3
    assert ir.details["frequencies_thz"] == pytest.approx(to_thz, abs=1e-6)
    assert np.ptp(ir.intensities) < 1e-6 * ir.intensities.max()  # the three components are equal
    # analytic: a diatomic TO mode has mode charge Z/√μ, μ the reduced mass, so I = Z²/μ per component
    m = r.primitive.masses
    mu = m[0] * m[1] / (m[0] + m[1])
    z = np.abs(r.force_constants.nac.born[:, 0, 0]).mean()
    assert ir.intensities == pytest.approx([z**2 / mu] * 3, rel=2e-3)


def test_al2o3_ir_activity_follows_group_theory():
    r = _phonopy_result("Al2O3")
    ir = crystal_ir(r)
    ph = r.to_phonopy()
    ph.set_irreps([0, 0, 0])
    labels = {}
    for lab, idx in zip(ph.irreps._ir_labels, ph.irreps.band_indices):
        for i in idx:
            labels[i] = lab
    freqs, _, acoustic = gamma_modes(r.to_phonopy())
    optical = [labels[i] for i in range(len(freqs)) if not acoustic[i]]
    active = ir.intensities > 1e-4 * ir.intensities.max()
    # D3d: IR active are exactly the A2u and Eu modes (polar-vector irreps)
    assert [lab in ("A2u", "Eu") for lab in optical] == list(active)
    assert optical.count("Eu") == 8 and optical.count("A2u") == 2  # 4 Eu pairs + 2 A2u (Γ_opt of corundum)
    assert len(np.unique(np.round(ir.frequencies_cm1[active], 1))) == 6


def test_petretto_becs_give_the_same_to_mode_as_the_born_file(nacl, mgo):
    p = _need(DATA / "petretto-dfpt" / "train.jsonl.gz")
    becs = {}
    with gzip.open(p, "rt") as fh:
        for line in fh:
            d = json.loads(line)
            if d["material_id"] in (
                "mp-22862",
                "mp-1265",
            ):  # rock-salt NaCl and MgO (cation first, as phonopy)
                becs[d["formula"]] = np.array(d["dielectric"]["becs"])
    for formula, r in (("NaCl", nacl), ("MgO", mgo)):
        ir_born = crystal_ir(r)
        ir_dfpt = crystal_ir(r, becs=becs[formula])
        z_born = np.abs(r.force_constants.nac.born[:, 0, 0]).mean()
        z_dfpt = np.abs(becs[formula][:, 0, 0]).mean()
        # the intensity is quadratic in Z*: ratio is exactly (Z_DFPT/Z_BORN)²
        assert ir_dfpt.intensities.sum() / ir_born.intensities.sum() == pytest.approx(
            (z_dfpt / z_born) ** 2, rel=1e-3
        )
        # ABINIT-PBEsol (Petretto) and the VASP BORN file agree on Z* within 1 %: intensities within 2 %
        assert ir_dfpt.intensities.sum() == pytest.approx(ir_born.intensities.sum(), rel=0.02)
    with pytest.raises(InputError, match=r"\(2, 3, 3\)"):
        crystal_ir(nacl, becs=np.zeros((3, 3, 3)))


def test_crystal_without_born_charges_is_refused_clearly():
    r = _phonopy_result("NaCl", born=False)
    with pytest.raises(InputError, match="--born") as exc:
        ir_spectrum(r)
    assert "becs" in str(exc.value)
    with pytest.raises(EngineError, match="dielectric"):
        raman_spectrum(r)


# ------------------------------------------------------------------------------------ molecules


@pytest.fixture(scope="module")
def water_xtb():
    from ase.build import molecule

    import atomvib

    return atomvib.phonons(molecule("H2O"), engine="xtb")


def test_water_ir_xtb_bands_where_experiment_has_them(water_xtb):
    ir = ir_spectrum(water_xtb)
    bend, sym, asym = ir.frequencies_cm1
    # gas-phase fundamentals (Shimanouchi, NIST): ν2 1595, ν1 3657, ν3 3756 cm^-1; GFN2-xTB within 5 %
    for calc, exp in ((bend, 1595.0), (sym, 3657.0), (asym, 3756.0)):
        assert calc == pytest.approx(exp, rel=0.05)
    i_bend, i_sym, i_asym = ir.intensities
    # experiment (gas): bend strongest, then the antisymmetric stretch, the symmetric stretch weakest
    assert i_bend > i_asym > i_sym > 0
    assert ir.strongest(1)[0][0] == pytest.approx(bend)


def test_water_ir_matches_ase_infrared(water_xtb, tmp_path, monkeypatch):
    """Same geometry, engine and step: ASE's Infrared (its own Hessian and dipole loop) is the peer."""
    from ase.vibrations import Infrared
    from tblite.ase import TBLite

    monkeypatch.chdir(tmp_path)  # ASE caches displacements in the working directory
    a = water_xtb.structure.to_ase()
    a.calc = TBLite(method="GFN2-xTB", verbosity=0, accuracy=0.1)
    ref = Infrared(a, delta=0.01, nfree=2, name="ir")
    ref.run()
    f_ref = ref.get_frequencies().real[-3:]
    i_ref = ref.intensities[-3:] * 42.2561  # ASE: (D/Å)²/amu → km/mol
    ir = ir_spectrum(water_xtb)
    assert ir.frequencies_cm1 == pytest.approx(f_ref, abs=0.5)
    assert ir.intensities == pytest.approx(i_ref, rel=5e-3)


def test_water_dipole_derivatives_match_field_derivative_of_forces():
    """APTs two ways: ∂μ/∂x (finite displacements) = ∂F/∂E (finite fields on analytic forces)."""
    from ase.build import molecule
    from ase.units import Bohr, Hartree
    from tblite.interface import Calculator
    from tblite.library import ffi

    from atomvib.engines import get_engine
    from atomvib.structure import Structure

    a = molecule("H2O")

    def forces(field):
        c = Calculator("GFN2-xTB", a.numbers, a.positions / Bohr)
        c.set("accuracy", 0.01)
        c.set("verbosity", 0)
        ef = np.ascontiguousarray(np.asarray(field) * Bohr / Hartree)
        c.add("electric-field", ffi.cast("double *", ffi.from_buffer(ef)))
        return -c.singlepoint().get("gradient") * Hartree / Bohr

    z = np.zeros((3, 3, 3))
    for alpha in range(3):
        f = np.zeros(3)
        f[alpha] = 0.01
        z[:, alpha, :] = (forces(f) - forces(-f)) / 0.02
    apt = dipole_derivatives(Structure.from_ase(a), get_engine("xtb"))
    assert np.abs(apt - z).max() < 1e-3 * np.abs(z).max() + 1e-4
    # a neutral molecule's dipole does not change under translation: Σ_κ APT_κ = 0
    assert np.abs(apt.sum(axis=0)).max() < 1e-3


def test_ir_intensities_do_not_depend_on_orientation(water_xtb):
    from scipy.spatial.transform import Rotation

    import atomvib

    a = water_xtb.structure.to_ase()
    a.positions = Rotation.from_euler("xyz", [30, 50, 70], degrees=True).apply(a.positions)
    r2 = atomvib.phonons(a, engine="xtb", relax=False)
    i_rot, i_ref = ir_spectrum(r2).intensities, ir_spectrum(water_xtb).intensities
    # the two stretches are 9 cm^-1 apart, so finite-difference noise may mix them slightly: compare
    # the bend alone and the stretch pair's total
    assert i_rot[0] == pytest.approx(i_ref[0], rel=2e-3)
    assert i_rot[1:].sum() == pytest.approx(i_ref[1:].sum(), rel=2e-3)


def test_pyscf_polarizability_equals_tdhf_sum_over_states():
    """Finite-field α (our route) against the RPA sum over all TDHF states (an independent route)."""
    from ase.build import molecule
    from ase.units import Bohr
    from pyscf import gto, scf, tdscf

    from atomvib.engines import get_engine

    a = molecule("H2O")
    mol = gto.M(
        atom=list(zip(a.get_chemical_symbols(), a.positions)), basis="sto-3g", unit="Angstrom", verbose=0
    )
    mf = scf.RHF(mol)
    mf.conv_tol = 1e-11
    mf.kernel()
    td = tdscf.TDHF(mf)
    td.nstates = (mol.nelectron // 2) * (mol.nao - mol.nelectron // 2)  # all single excitations
    td.kernel()
    tdm = td.transition_dipole()
    alpha_sos = 2.0 * np.einsum("n,na,nb->ab", 1.0 / td.e, tdm, tdm) * Bohr**3
    alpha_ff = polarizability(get_engine("pyscf:hf/sto-3g"), a)
    assert alpha_ff == pytest.approx(alpha_sos, abs=2e-4 * np.abs(alpha_sos).max())


def test_water_raman_xtb_order_depolarization_and_laser_factor(water_xtb):
    rm = raman_spectrum(water_xtb)
    rho = rm.details["depolarization"]
    # symmetric stretch (A1) is the strongest Raman band and polarised; B2 modes are depolarised: ρ = 3/4 exactly
    assert rm.strongest(1)[0][0] == pytest.approx(rm.frequencies_cm1[1])
    assert rho[1] < 0.75 and rho[2] == pytest.approx(0.75, abs=1e-3)
    # with a laser line, intensities become cross-sections: low-frequency modes gain (1/ν and Bose factor)
    rl = raman_spectrum(water_xtb, laser_nm=532.0)
    assert rl.intensity_unit == "arb. units"
    ratio = rl.intensities / rm.intensities
    assert ratio[0] > ratio[1] > 0


@pytest.mark.slow
def test_water_xtb_and_pyscf_order_ir_and_raman_the_same(water_xtb):
    from ase.build import molecule

    import atomvib

    hf = atomvib.phonons(molecule("H2O"), engine="pyscf:hf/sto-3g")
    assert (
        np.argsort(raman_spectrum(hf).intensities).tolist()
        == np.argsort(raman_spectrum(water_xtb).intensities).tolist()
    )
    dft = atomvib.phonons(molecule("H2O"), engine="pyscf:b3lyp/def2-svp")
    assert (
        np.argsort(ir_spectrum(dft).intensities).tolist()
        == np.argsort(ir_spectrum(water_xtb).intensities).tolist()
    )


def test_co2_mutual_exclusion_xtb():
    """Centrosymmetric CO2: IR-active modes are Raman-silent and the reverse (rule of mutual exclusion)."""
    from ase.build import molecule

    import atomvib

    r = atomvib.phonons(molecule("CO2"), engine="xtb")
    ir, rm = ir_spectrum(r), raman_spectrum(r)
    i_ir = ir.intensities / ir.intensities.max()
    i_rm = rm.intensities / rm.intensities.max()
    assert np.all(np.minimum(i_ir, i_rm) < 1e-4)
    assert (i_ir > 1e-2).sum() == 3 and (i_rm > 1e-2).sum() == 1  # bend (×2) + asym stretch; sym stretch


@pytest.mark.slow
def test_benzene_ir_xtb():
    from ase.build import molecule

    import atomvib

    r = atomvib.phonons(molecule("C6H6"), engine="xtb")
    ir, rm = ir_spectrum(r), raman_spectrum(r)
    exp_ir = np.array([673.0, 1037.0, 1482.0, 3068.0])  # ν11 A2u, ν18, ν19, ν20 E1u (Shimanouchi, NIST)
    strong = ir.intensities > 0.05 * ir.intensities.max()
    for w in ir.frequencies_cm1[strong]:
        assert np.min(np.abs(exp_ir - w) / exp_ir) < 0.03
    # ν11 (out-of-plane C–H bend) is among the two strongest bands
    top = [w for w, _ in ir.strongest(3)]
    assert any(abs(w - 673.0) / 673.0 < 0.05 for w in top)
    i_ir = ir.intensities / ir.intensities.max()
    i_rm = rm.intensities / rm.intensities.max()
    assert np.all(np.minimum(i_ir, i_rm) < 1e-4)


# ------------------------------------------------------------------------------------ CLI


def test_cli_ir_and_raman_molecule(tmp_path, capsys):
    from ase.build import molecule
    from ase.io import write

    from atomvib.cli.main import main

    write(tmp_path / "water.xyz", molecule("H2O"))
    assert (
        main(["phonons", str(tmp_path / "water.xyz"), "--out", str(tmp_path / "ph"), "-q", "--no-plot"]) == 0
    )
    rc = main(["ir", str(tmp_path / "ph"), "--out", str(tmp_path / "ir"), "--fwhm", "20"])
    assert rc == 0
    data = np.genfromtxt(tmp_path / "ir" / "ir.csv", delimiter=",", names=True)
    assert data.dtype.names == ("wavenumber_cm1", "intensity")
    modes = np.loadtxt(tmp_path / "ir" / "ir_modes.csv", delimiter=",", skiprows=1)
    # the curve's area is the sum of the mode intensities (km/mol), up to Lorentzian tails off the axis
    assert np.trapezoid(data["intensity"], data["wavenumber_cm1"]) == pytest.approx(
        modes[:, 1].sum(), rel=0.02
    )
    assert (tmp_path / "ir" / "ir.png").stat().st_size > 10_000
    rc = main(["raman", str(tmp_path / "ph"), "--out", str(tmp_path / "rm"), "--no-plot"])
    assert rc == 0
    head = (tmp_path / "rm" / "raman_modes.csv").read_text().splitlines()[0]
    assert head == "wavenumber_cm1,intensity_A4_per_amu,depolarization"
    assert main(["raman", str(tmp_path / "ph"), "--out", str(tmp_path / "rm")]) == 2  # exists, no --force
    assert "--force" in capsys.readouterr().err


def test_cli_crystal_errors_and_born(tmp_path, capsys):
    from atomvib.cli.main import main

    d = _need(PHONOPY_EX / "NaCl")
    args = [str(d / "phonopy_disp.yaml"), "--forces", str(d / "FORCE_SETS"), "--mesh-density", "10"]
    assert main(["ir", *args, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "--born" in err and "--becs" in err and "Traceback" not in err
    assert main(["raman", *args, "--out", str(tmp_path / "b")]) == 2
    assert "dielectric" in capsys.readouterr().err
    assert main(["ir", *args, "--born", str(d / "BORN"), "--out", str(tmp_path / "c"), "--no-plot"]) == 0
    modes = np.loadtxt(tmp_path / "c" / "ir_modes.csv", delimiter=",", skiprows=1)
    assert modes.shape == (3, 2) and np.ptp(modes[:, 0]) < 1e-3
    # the same charges given as a text array (--becs): the same intensities
    np.savetxt(
        tmp_path / "becs.txt",
        [[1.08703, 0, 0, 0, 1.08703, 0, 0, 0, 1.08703], [-1.08672, 0, 0, 0, -1.08672, 0, 0, 0, -1.08672]],
    )
    assert (
        main(["ir", *args, "--becs", str(tmp_path / "becs.txt"), "--out", str(tmp_path / "d"), "--no-plot"])
        == 0
    )
    modes_becs = np.loadtxt(tmp_path / "d" / "ir_modes.csv", delimiter=",", skiprows=1)
    assert modes_becs[:, 1] == pytest.approx(modes[:, 1], rel=1e-3)
