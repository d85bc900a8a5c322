"""MLIP sanity against DFT force sets: Si, NaCl, MgO with SevenNet-l3i5 (the default), SevenNet-0 and CHGNet.

Reference: atomvib on the shared VASP finite-displacement force sets (phonopy's ``example/``
folder), whose agreement with phonopy itself is tested elsewhere. MLIPs carry no Born charges,
so ω_max is compared like with like: MLIP without NAC against the DFT force constants without
BORN, and MLIP force constants + the DFT BORN file against DFT with BORN. The 20 % window is the
issue's bar; universal MLIPs are known to soften phonons by 5–25 %, so the measured ratios are
recorded in docs/validation.md (``python scripts/validate.py --section sanity``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "phonopy-examples"
FOLDER = {"Si": "Si-gruneisen-orig", "NaCl": "NaCl", "MgO": "MgO"}
MESH = 20.0  # ω_max comes from the band path as much as the mesh; 20 Å is enough for a max


def _need(mat):
    d = DATA / FOLDER[mat]
    if not (d / "FORCE_SETS").exists():
        pytest.skip(f"shared reference data not found at {d}")
    return d


def _dft(mat, with_born):
    import atomvib

    d = _need(mat)
    born = d / "BORN" if with_born and (d / "BORN").exists() else None
    if not (d / "phonopy_disp.yaml").exists():  # Si: phonopy's older layout, 2×2×2 of POSCAR-unitcell
        return atomvib.phonons(
            d / "POSCAR-unitcell", forces=d / "FORCE_SETS", supercell=(2, 2, 2), mesh_density=MESH
        )
    return atomvib.phonons(d / "phonopy_disp.yaml", forces=d / "FORCE_SETS", born=born, mesh_density=MESH)


def _mlip(mat, engine, with_born=False):
    from ase.io import read

    import atomvib

    d = _need(mat)
    born = d / "BORN" if with_born else None
    return atomvib.phonons(
        read(d / "POSCAR-unitcell", format="vasp"), engine=engine, born=born, mesh_density=MESH
    )


def _check(mlip, dft, lo=0.8, hi=1.2):
    assert not mlip.has_imaginary, mlip.instability.describe()
    assert mlip.min_frequency_thz > -0.1  # acoustic modes at Γ: only numerical noise below zero
    ratio = mlip.omega_max_thz / dft.omega_max_thz
    assert lo < ratio < hi, (
        f"ω_max ratio {ratio:.3f} (MLIP {mlip.omega_max_thz:.2f} THz, DFT {dft.omega_max_thz:.2f} THz)"
    )
    return ratio


def test_default_engine_si_against_dft():
    """SevenNet-l3i5 is the crystal default (docs/validation.md); Si ω_max 12.81 THz vs DFT 15.09 THz (ratio 0.85;
    SevenNet-0: 12.49 THz, 0.83)."""
    from atomvib.engines.registry import DEFAULT_CRYSTAL_ENGINE

    r = _mlip("Si", None)
    assert r.engine.name == "sevennet" and r.engine.spec == DEFAULT_CRYSTAL_ENGINE == "sevennet:7net-l3i5"
    dft = _dft("Si", False)
    ratio = _check(r, dft)
    # measured 0.848: the known MLIP softening, well inside the window, not an accident near its edge
    assert 0.80 < ratio < 0.90
    # the structure stays diamond after relaxation, and the cell stays close to the DFT (PBE) one
    assert r.relaxation["spacegroup_after"] == r.relaxation["spacegroup_before"] == "Fd-3m (227)"
    a_ml = np.linalg.norm(r.primitive.cell[0])
    a_dft = np.linalg.norm(dft.primitive.cell[0])
    assert abs(a_ml / a_dft - 1) < 0.02


@pytest.mark.slow
@pytest.mark.parametrize(
    "mat,engine",
    [
        ("Si", "chgnet"),
        ("NaCl", "sevennet"),
        # measured: CHGNet NaCl ω_max 4.76 THz vs DFT 6.29 THz without NAC (ratio 0.757), TO mode at Γ
        # 1.9 THz: a real failure of the 20 % bar, recorded in docs/validation.md; strict, so a model
        # or pipeline change that fixes it shows up
        pytest.param(
            "NaCl",
            "chgnet",
            marks=pytest.mark.xfail(strict=True, reason="CHGNet softens NaCl by 24 % (measured 0.757)"),
        ),
        ("MgO", "sevennet"),
        ("MgO", "chgnet"),
        ("NaCl", "sevennet:7net-l3i5"),
        ("MgO", "sevennet:7net-l3i5"),
    ],
)
def test_mlip_against_dft_without_nac(mat, engine):
    _check(_mlip(mat, engine), _dft(mat, False))


@pytest.mark.slow
@pytest.mark.parametrize("mat", ["NaCl", "MgO"])
def test_default_engine_with_dft_born_against_dft_with_born(mat):
    """The MLIP force constants plus the DFT Born charges give the LO–TO split top of the band."""
    from atomvib.engines.registry import DEFAULT_CRYSTAL_ENGINE

    mlip = _mlip(mat, DEFAULT_CRYSTAL_ENGINE, with_born=True)
    assert mlip.force_constants.nac is not None
    _check(mlip, _dft(mat, True))
    # NAC raises the top of the band (LO above TO)
    assert mlip.omega_max_thz > _mlip(mat, DEFAULT_CRYSTAL_ENGINE).omega_max_thz


@pytest.mark.slow
def test_default_engine_stable_with_displacement_amplitude():
    """A smooth potential gives the same harmonic Si Γ optical mode for 0.003–0.06 Å displacements."""
    from ase.build import bulk

    import atomvib

    nus = []
    for disp in (0.003, 0.01, 0.03, 0.06):
        r = atomvib.phonons(bulk("Si", "diamond", a=5.431), displacement_a=disp, mesh_density=10)
        ph = r.to_phonopy()
        ph.run_qpoints([[0, 0, 0]])
        nus.append(float(np.max(ph.qpoints.frequencies)))
    # measured spread (SevenNet-l3i5, the default) 0.035 THz (12.797–12.832, anharmonicity at 0.06 Å; SevenNet-0
    # 0.045); 0.1 THz is a visible DOS shift
    assert max(nus) - min(nus) < 0.1, nus
