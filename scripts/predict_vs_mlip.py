"""The DOS predictor side by side with full MLIP phonon runs on the same 25 Petretto crystals.

The MLIP numbers (SevenNet-0, CHGNet: relax + finite displacements + phonopy, per-crystal wall time
``wall_s``) are the ones of ``scripts/validate.py --section petretto``, cached in
``scripts/validation_cache/petretto_<engine>.json``; this script runs only the predictor on the same
crystals (the DFT cells of ``petretto-dfpt/valid.jsonl.gz``), times it per crystal, and compares
Cv, S and F at 300 K per formula unit with Petretto's DFPT values. Caveat: these crystals are in the
valid split, which chose the predictor's best epoch and calibrated its error bars (never trained on).

It also predicts the VISION spectrum of NaCl from the predicted partial DOS and draws it over the
spectrum from the DFT force constants of ``phonopy-examples/NaCl``.

Writes docs/figures/predict_vs_mlip.png and prints the markdown table of docs/predictor.md.
Run: ``python scripts/predict_vs_mlip.py`` (about 30 s on one core).
"""

from __future__ import annotations

import gzip
import io
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / "scripts" / "validation_cache"
FIG = ROOT / "docs" / "figures" / "predict_vs_mlip.png"
T_K = 300.0
KEYS = (("cv", "Cv (J/K/mol)"), ("s", "S (J/K/mol)"), ("f_kj", "F (kJ/mol)"))
ENGINES = (("sevennet", "SevenNet-0"), ("chgnet", "CHGNet"))


def load():
    from ase.io import read

    from atomvib.structure import Structure

    mlip = {e: json.loads((CACHE / f"petretto_{e}.json").read_text()) for e, _ in ENGINES}
    ids = list(mlip["sevennet"])
    with gzip.open(DATA / "petretto-dfpt" / "valid.jsonl.gz", "rt") as fh:
        rows = {r["material_id"]: r for r in map(json.loads, fh) if r["material_id"] in ids}
    structs = {m: Structure.from_ase(read(io.StringIO(rows[m]["cif"]), format="cif")) for m in ids}
    return ids, mlip, structs


def run_predictor(ids, structs):
    from atomvib.learn import load_model

    t0 = time.perf_counter()
    model = load_model()
    load_s = time.perf_counter() - t0
    model.predict([structs[ids[0]]])  # warm-up (thermal kernels, torch first call)
    out, times = {}, {}
    for m in ids:
        t = time.perf_counter()
        (p,) = model.predict([structs[m]], [m])
        times[m] = time.perf_counter() - t
        i = int(np.argmin(np.abs(p.temperatures_k - T_K)))
        fu = p.formula_units
        out[m] = {
            "cv": p.heat_capacity_j_per_k_per_mol[i] / fu,
            "s": p.entropy_j_per_k_per_mol[i] / fu,
            "f_kj": p.free_energy_kj_per_mol[i] / fu,
            "cv_std": p.heat_capacity_j_per_k_per_mol_std[i] / fu,
            "in_distribution": p.in_distribution,
        }
    t = time.perf_counter()
    model.predict([structs[m] for m in ids])
    batch_s = time.perf_counter() - t
    return out, times, load_s, batch_s


def mae(vals, ref, ids, key):
    return float(np.mean([abs(vals[m][key] - ref[m]["dft"][key]) for m in ids])) if ids else float("nan")


def main():
    ids, mlip, structs = load()
    ref = mlip["sevennet"]
    pred, times, load_s, batch_s = run_predictor(ids, structs)
    methods = {"predictor": pred, **{e: mlip[e] for e, _ in ENGINES}}
    names = {"predictor": "atomvib predict", **dict(ENGINES)}
    ok = {e: [m for m in ids if "cv" in mlip[e][m]] for e, _ in ENGINES}
    ok["predictor"] = ids
    stable = {e: [m for m in ok[e] if not mlip[e][m]["imaginary"]] for e, _ in ENGINES}
    stable["predictor"] = ids
    wall = {e: [mlip[e][m]["wall_s"] for m in ids] for e, _ in ENGINES}
    wall["predictor"] = [times[m] for m in ids]

    lines = [
        "| method | crystals | Cv MAE (J/K/mol) | S MAE (J/K/mol) | F MAE (kJ/mol) | imaginary modes | wall per crystal, median (range) |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in ("predictor", "sevennet", "chgnet"):
        w = np.array(wall[k])
        nimag = "0 (cannot predict them)" if k == "predictor" else f"{len(ok[k]) - len(stable[k])}"
        wtxt = (
            f"{np.median(w) * 1e3:.0f} ms ({w.min() * 1e3:.0f}–{w.max() * 1e3:.0f})"
            if k == "predictor"
            else f"{np.median(w):.2g} s ({w.min():.2g}–{w.max():.2g})"
        )
        lines.append(
            f"| {names[k]} | {len(ok[k])} | {mae(methods[k], ref, ok[k], 'cv'):.2f} | {mae(methods[k], ref, ok[k], 's'):.2f} | "
            f"{mae(methods[k], ref, ok[k], 'f_kj'):.2f} | {nimag} | {wtxt} |"
        )
    for k in ("sevennet", "chgnet"):
        lines.append(
            f"| {names[k]}, only its {len(stable[k])} stable crystals | {len(stable[k])} | {mae(methods[k], ref, stable[k], 'cv'):.2f} | "
            f"{mae(methods[k], ref, stable[k], 's'):.2f} | {mae(methods[k], ref, stable[k], 'f_kj'):.2f} | 0 | |"
        )
        lines.append(
            f"| atomvib predict, on the same {len(stable[k])} | {len(stable[k])} | {mae(pred, ref, stable[k], 'cv'):.2f} | "
            f"{mae(pred, ref, stable[k], 's'):.2f} | {mae(pred, ref, stable[k], 'f_kj'):.2f} | | |"
        )
    flagged = [m for m in ids if not pred[m]["in_distribution"]]
    print("\n".join(lines))
    print(
        f"\npredictor: model load {load_s:.1f} s, batch of {len(ids)} {batch_s * 1e3:.0f} ms; flagged OOD: {flagged}"
    )
    print(f"MLIP total wall: SevenNet {sum(wall['sevennet']):.0f} s, CHGNet {sum(wall['chgnet']):.0f} s")

    print("\n| crystal | DFT Cv | predictor | SevenNet-0 | CHGNet | |S err| pred / 7net / CHGNet |")
    print("|---|---|---|---|---|---|")
    for m in ids:
        r = ref[m]
        cells = []
        for e, _ in ENGINES:
            x = mlip[e][m]
            cells.append(f"{x['cv']:.1f}{' (imag.)' if x['imaginary'] else ''}")
        errs = " / ".join(
            f"{abs(methods[k][m]['s'] - r['dft']['s']):.1f}" for k in ("predictor", "sevennet", "chgnet")
        )
        fl = "" if pred[m]["in_distribution"] else " (OOD)"
        print(
            f"| {r['formula']} {m} | {r['dft']['cv']:.1f} | {pred[m]['cv']:.1f} ± {1.645 * pred[m]['cv_std']:.1f}{fl} | "
            f"{cells[0]} | {cells[1]} | {errs} |"
        )

    # ---------------------------------------------------------------------------- figure
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.4))
    axes = axes.ravel()
    style = {"predictor": ("o", "C0"), "sevennet": ("s", "C1"), "chgnet": ("^", "C2")}
    for a, (key, label) in zip(axes[:3], KEYS):
        x_all = []
        for k in ("predictor", "sevennet", "chgnet"):
            x = np.array([ref[m]["dft"][key] for m in ok[k]])
            y = np.array([methods[k][m][key] for m in ok[k]])
            mk, c = style[k]
            unstable = np.array([k != "predictor" and mlip[k][m]["imaginary"] for m in ok[k]], dtype=bool)
            a.scatter(
                x[~unstable],
                y[~unstable],
                marker=mk,
                color=c,
                s=22,
                label=f"{names[k]} (MAE {mae(methods[k], ref, ok[k], key):.2f})",
            )
            a.scatter(x[unstable], y[unstable], marker=mk, facecolor="none", edgecolor=c, s=22)
            x_all.extend(x)
        lo, hi = min(x_all), max(x_all)
        pad = 0.08 * (hi - lo)
        a.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k-", lw=0.7)
        a.set_xlabel(f"DFPT {label}")
        a.set_ylabel(f"{label}, 300 K per formula unit")
        a.legend(fontsize=7, loc="upper left")
    axes[0].set_title("open markers: MLIP found imaginary modes", fontsize=9)
    a = axes[3]
    for k in ("predictor", "sevennet", "chgnet"):
        a.hist(np.log10(wall[k]), bins=12, color=style[k][1], alpha=0.7, label=names[k])
    a.set_xlabel("log10 wall time per crystal (s), 1 core")
    a.set_ylabel("crystals")
    a.legend(fontsize=8)
    _nacl_panels(axes[4], axes[5])
    fig.tight_layout()
    FIG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIG, dpi=80)
    print(f"wrote {FIG} ({FIG.stat().st_size / 1e3:.0f} kB)")


def _nacl_panels(a, b):
    """NaCl: predicted VISION spectrum and neutron-weighted DOS against those of DFT force constants."""
    import atomvib
    from atomvib.learn import predict
    from atomvib.learn.spectra import predicted_neutron_dos, predicted_vision_spectrum
    from atomvib.spectra.dos import phonon_dos
    from atomvib.spectra.ins import vision_spectrum

    d = DATA / "phonopy-examples" / "NaCl"
    r = atomvib.phonons(d / "phonopy_disp.yaml", forces=d / "FORCE_SETS", born=d / "BORN", mesh_density=20)
    ref = vision_spectrum(r, mesh=16, energy_range_mev=(0.5, 60.0))
    (p,) = predict(r.primitive)
    sp = predicted_vision_spectrum(p, energy_range_mev=(0.5, 60.0))
    a.plot(ref.energy_mev, ref.intensity, "k-", lw=1, label="DFT force constants (phonopy, 16³ mesh)")
    a.plot(sp.energy_mev, sp.intensity, "C0-", lw=1.2, label="from predicted partial DOS")
    a.set_xlabel("energy transfer (meV)")
    a.set_ylabel("VISION backward S (1/eV), 5 K")
    a.set_title(f"NaCl: predicted in_distribution={p.in_distribution}", fontsize=9)
    a.legend(fontsize=7)
    e1 = np.sum(ref.energy_mev * ref.by_order[0]) / ref.by_order[0].sum()
    e2 = np.sum(sp.energy_mev * sp.by_order[0]) / sp.by_order[0].sum()
    dft = phonon_dos(r, unit="meV", bins=np.arange(0, 40.01, 0.5), weighting="total", mesh=16)
    e, tot, part = predicted_neutron_dos(p, unit="meV")
    b.plot(dft.energy, dft.total, "k-", lw=1, label="DFT force constants")
    b.plot(e, tot, "C0-", lw=1.2, label="predicted")
    for el, ls in zip(part, (":", "--")):
        b.plot(dft.energy, dft.partial[el], "k" + ls, lw=0.8, label=f"{el} (DFT)")
        b.plot(e, part[el], "C0" + ls, lw=0.8, label=f"{el} (predicted)")
    b.set_xlim(0, 40)
    b.set_xlabel("energy (meV)")
    b.set_ylabel("neutron-weighted DOS (barn/meV/atom)")
    b.set_title("NaCl, total cross-section weighting", fontsize=9)
    b.legend(fontsize=7)
    print(f"NaCl VISION: mean energy of the 1-phonon spectrum DFT {e1:.2f} meV, predicted {e2:.2f} meV")


if __name__ == "__main__":
    main()
