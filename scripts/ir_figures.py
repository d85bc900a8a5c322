"""Figures for docs/ir_raman.md: water and benzene IR/Raman (GFN2-xTB) against experimental band
positions, and the Γ-point IR spectrum of corundum (Al2O3) from the phonopy example's DFT forces.

Run: ``ATOMVIB_THREADS=1 OMP_NUM_THREADS=1 python scripts/ir_figures.py`` (about 30 s on one core).
Writes docs/figures/ir_molecules.png and docs/figures/ir_al2o3.png and prints the numbers quoted in the doc.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[1]
FIG = ROOT / "docs" / "figures"
DATA = ROOT.parent / "shared" / "data"

#: gas-phase fundamentals, cm^-1 (Shimanouchi, NSRDS-NBS 39, via the NIST Chemistry WebBook)
EXP_IR = {"H2O": [1595, 3657, 3756], "C6H6": [673, 1037, 1482, 3068]}
EXP_RAMAN = {"H2O": [1595, 3657, 3756], "C6H6": [606, 992, 1178, 1596, 3062]}


def molecules():
    from ase.build import molecule

    import atomvib
    from atomvib.spectra.ir import ir_spectrum
    from atomvib.spectra.raman import raman_spectrum

    fig, axes = plt.subplots(2, 2, figsize=(10, 5.6), dpi=100, sharex="col")
    x = np.arange(400.0, 4000.0, 1.0)
    for col, name in enumerate(("H2O", "C6H6")):
        r = atomvib.phonons(molecule(name), engine="xtb")
        ir, rm = ir_spectrum(r), raman_spectrum(r)
        print(name, "modes", np.round(r.frequencies_cm1, 0))
        print(name, "IR strongest", [(round(w), round(i, 1)) for w, i in ir.strongest(4)])
        print(name, "Raman strongest", [(round(w), round(i, 1)) for w, i in rm.strongest(4)])
        for row, (spec, exp, color, label) in enumerate(
            (
                (ir, EXP_IR[name], "C0", "IR (km/mol per cm$^{-1}$)"),
                (rm, EXP_RAMAN[name], "C3", "Raman (Å$^4$/amu per cm$^{-1}$)"),
            )
        ):
            ax = axes[row, col]
            _, y = spec.curve(x, fwhm_cm1=15.0)
            ax.plot(x, y, color=color, lw=1.3, label="GFN2-xTB (atomvib)")
            for i, w in enumerate(exp):
                ax.axvline(w, color="k", ls=":", lw=0.9, label="experiment (gas)" if i == 0 else None)
            ax.set_ylabel(label, fontsize=8)
            ax.set_ylim(bottom=0)
            if row == 0:
                ax.set_title(f"{name}", fontsize=10)
            ax.legend(frameon=False, fontsize=7, loc="upper left")
        axes[1, col].set_xlabel("wavenumber (cm$^{-1}$)")
    fig.tight_layout()
    out = FIG / "ir_molecules.png"
    fig.savefig(out)
    plt.close(fig)
    return out


def corundum():
    import atomvib
    from atomvib.spectra.ir import crystal_ir

    d = DATA / "phonopy-examples" / "Al2O3"
    r = atomvib.phonons(
        str(d / "phonopy_disp.yaml"), forces=str(d / "FORCE_SETS"), born=str(d / "BORN"), mesh_density=10
    )
    ir = crystal_ir(r)
    ph = r.to_phonopy()
    ph.set_irreps([0, 0, 0])
    print(
        "Al2O3 TO modes (cm^-1, e²/amu):",
        [(round(w, 1), round(i, 3)) for w, i in zip(ir.frequencies_cm1, ir.intensities) if i > 1e-4],
    )
    x = np.arange(200.0, 900.0, 0.5)
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    _, y = ir.curve(x, fwhm_cm1=8.0, shape="gaussian")
    ax.plot(x, y, color="C0", lw=1.3, label="atomvib, VASP forces + BORN (phonopy example)")
    # Eu and A2u TO modes measured by IR reflectivity (Schubert et al., PRB 61, 8187 (2000))
    for i, w in enumerate([385, 439, 569, 634, 398, 582]):
        ax.axvline(w, color="k", ls=":", lw=0.9, label="experiment TO (Eu, A2u)" if i == 0 else None)
    ax.set_xlabel("wavenumber (cm$^{-1}$)")
    ax.set_ylabel("IR (e$^2$/amu per cm$^{-1}$)")
    ax.set_ylim(bottom=0)
    ax.set_title("Al$_2$O$_3$ (corundum): Γ TO modes, Gaussian FWHM 8 cm$^{-1}$", fontsize=10)
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    out = FIG / "ir_al2o3.png"
    fig.savefig(out)
    plt.close(fig)
    return out


if __name__ == "__main__":
    FIG.mkdir(parents=True, exist_ok=True)
    for p in (molecules(), corundum()):
        print(p, p.stat().st_size // 1024, "kB")
