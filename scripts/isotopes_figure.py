"""Figure for docs/isotopes.md: VISION spectra of LiH and LiD from one force calculation.

Runs ``atomvib.phonons`` on rock-salt LiH with the default crystal engine (SevenNet-l3i5) into a checkpoint
directory, then again with ``isotopes={"H": 2}`` on the same checkpoint and counts the supercells the engine
evaluates the second time (none: the relaxed structure and both displaced supercells come from the checkpoint).
The VISION spectra (backward bank, orders 1–3, 5 K) of both are drawn side by side, once per formula unit on the
absolute scale (the code's intensity, normalised by the cell's total cross-section, times that cross-section:
82.02 + 1.37 b for LiH, 7.64 + 1.37 b for LiD) and once each normalised to its maximum, with the Γ TO modes
marked. The numbers quoted in docs/isotopes.md are printed.

Usage: python scripts/isotopes_figure.py  → docs/figures/isotopes_lih_lid_vision.png (about 30 s on 2 cores)
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

for _k in ("ATOMVIB_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("PYTHONWARNINGS", "ignore")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from ase.build import bulk  # noqa: E402

import atomvib  # noqa: E402
from atomvib.engines import default_engine_spec, get_engine  # noqa: E402
from atomvib.spectra.ins import vision_spectrum  # noqa: E402
from atomvib.units import THZ_TO_MEV  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "figures" / "isotopes_lih_lid_vision.png"
A_LIH = 4.083  # Å, experimental lattice constant of LiH (the engine relaxes it)
SETTINGS = {"mesh_density": 50.0}


def gamma_to_mev(result) -> float:
    ph = result.to_phonopy()
    ph.run_qpoints([[0.0, 0.0, 0.0]])
    return float(np.max(ph.qpoints.frequencies[0])) * THZ_TO_MEV


def main():
    eng = get_engine(default_engine_spec(False))
    calls = {"n": 0}
    evaluate = eng.evaluate

    def counting(atoms_list, progress=None):
        calls["n"] += len(atoms_list)
        return evaluate(atoms_list, progress)

    eng.evaluate = counting
    lih = bulk("LiH", "rocksalt", a=A_LIH)
    with tempfile.TemporaryDirectory(prefix="atomvib-isotopes-") as ck:
        t0 = time.perf_counter()
        h = atomvib.phonons(lih, engine=eng, checkpoint_dir=ck, **SETTINGS)
        t_h, n_h = time.perf_counter() - t0, calls["n"]
        t0 = time.perf_counter()
        d = atomvib.phonons(lih, engine=eng, checkpoint_dir=ck, isotopes={"H": 2}, **SETTINGS)
        t_d, n_d = time.perf_counter() - t0, calls["n"] - n_h
    print(f"LiH: {n_h} displaced supercells evaluated ({h.n_displacements} displacements), {t_h:.1f} s")
    print(f"LiD: {n_d} displaced supercells evaluated (relaxed structure and forces from the checkpoint), {t_d:.1f} s")

    specs = {}
    for name, r in (("LiH", h), ("LiD", d)):
        s = vision_spectrum(r, order=3, temperature_k=5.0, energy_range_mev=(0.5, 200.0))
        cell = sum(s.cross_sections_barn.values())  # Σσ of the primitive cell: one Li, one H or D
        specs[name] = (s, cell)
        e = s.energy_mev
        one = s.by_order[0]
        band = e > 40.0
        peak = float(e[band][np.argmax(s.intensity[band])])
        area = float(s.intensity.sum() * (e[1] - e[0]) * 1e-3 * cell)
        print(f"{name}: σ {s.cross_sections_barn} b, Γ TO {gamma_to_mev(r):.2f} meV, optical peak {peak:.2f} meV, "
              f"one-phonon share {one.sum() / s.intensity.sum():.3f}, ∫S dE × Σσ = {area:.2f} b per formula unit, "
              f"⟨u²⟩ {s.msd_a2}")
    (sh, ch), (sd, cd) = specs["LiH"], specs["LiD"]
    print(f"Γ TO ratio LiH/LiD {gamma_to_mev(h) / gamma_to_mev(d):.5f}; reduced masses "
          f"{np.sqrt((lambda m: m[0] * m[1] / m.sum())(d.primitive.masses) / (lambda m: m[0] * m[1] / m.sum())(h.primitive.masses)):.5f}")
    ratio = (sh.intensity.sum() * ch) / (sd.intensity.sum() * cd)
    print(f"integrated intensity per formula unit, LiH/LiD {ratio:.2f} (σ_H/σ_D = {82.02 / 7.64:.2f})")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    ax = axes[0]
    ax.plot(sh.energy_mev, sh.intensity * ch, color="C0", lw=1.2, label="LiH")
    ax.plot(sd.energy_mev, sd.intensity * cd, color="C3", lw=1.2, label="LiD")
    ax.plot(sd.energy_mev, 5 * sd.intensity * cd, color="C3", lw=0.8, ls="--", label="LiD ×5")
    ax.set_xlabel("energy transfer (meV)")
    ax.set_ylabel("S(Q,E) × Σσ (barn/eV per formula unit)")
    ax.set_title("VISION, 5 K, orders 1–3: absolute scale")
    ax.legend(frameon=False)
    ax = axes[1]
    for (s, _), name, c, r in ((specs["LiH"], "LiH", "C0", h), (specs["LiD"], "LiD", "C3", d)):
        ax.plot(s.energy_mev, s.intensity / s.intensity.max(), color=c, lw=1.2, label=name)
        ax.axvline(gamma_to_mev(r), color=c, lw=0.8, ls=":")
    ax.set_xlabel("energy transfer (meV)")
    ax.set_ylabel("normalised intensity")
    ax.set_title("same spectra, each to its maximum (dotted: Γ TO)")
    ax.legend(frameon=False)
    fig.suptitle("LiH and LiD from one force calculation (SevenNet-l3i5; LiD: masses only, no new forces)",
                 fontsize=10)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=120)
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
