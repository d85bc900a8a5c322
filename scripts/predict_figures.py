"""Valid-split metrics of the shipped DOS predictor and the figures of docs/predictor.md.

Writes src/atomvib/learn/weights/metrics.json (the model card numbers, checked by
tests/test_learn.py), docs/figures/predict_parity.png and docs/figures/predict_examples.png.
Only the train and valid splits are used.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from atomvib.learn import load_model
from atomvib.learn.data import read_petretto
from atomvib.learn.metrics import AXIS_CM1, evaluate, on_axis, summarise
from atomvib.learn.predictor import Z90

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "petretto-dfpt"
FIG = ROOT / "docs" / "figures"


def main():
    model = load_model()
    valid = read_petretto(DATA / "valid.jsonl.gz")
    preds = model.predict([s.structure for s in valid])
    m = evaluate(preds, valid)
    summ = summarise(m)
    blob = model.blob
    card = {
        "valid": summ,
        "calibration": blob["calibration"],
        "ood": blob["ood"],
        "n_train": blob["n_train"],
        "n_members": len(blob["members"]),
        "best_epochs": [mm["best_epoch"] for mm in blob["members"]],
        "train_config": blob["train_config"],
    }
    has = np.isfinite(m["cv_published"])
    ratio = np.abs(m["cv_pred"] - m["cv_published"])[has] / np.maximum(m["cv_std"][has], 1e-12)
    card["valid"]["cv300_coverage_90"] = float(np.mean(ratio <= Z90))
    out = ROOT / "src" / "atomvib" / "learn" / "weights" / "metrics.json"
    out.write_text(json.dumps(card, indent=1, default=float))
    print(json.dumps(summ, indent=1))
    print("calibration", blob["calibration"])

    FIG.mkdir(parents=True, exist_ok=True)
    ind = m["in_distribution"].astype(bool)
    fig, ax = plt.subplots(1, 3, figsize=(13, 4.2))
    a = ax[0]
    a.errorbar(
        m["cv_published"][has & ind],
        m["cv_pred"][has & ind],
        yerr=Z90 * m["cv_std"][has & ind],
        fmt="o",
        ms=3,
        lw=0.8,
        alpha=0.7,
        label="in distribution",
    )
    if (has & ~ind).any():
        a.errorbar(
            m["cv_published"][has & ~ind],
            m["cv_pred"][has & ~ind],
            yerr=Z90 * m["cv_std"][has & ~ind],
            fmt="s",
            ms=4,
            lw=0.8,
            color="C3",
            label="flagged out of distribution",
        )
    lim = [0, np.nanmax(m["cv_published"]) * 1.05]
    a.plot(lim, lim, "k--", lw=0.8)
    a.set(
        xlabel="DFPT Cv(300 K) (J/K/mol f.u.)",
        ylabel="predicted Cv(300 K) (J/K/mol f.u.)",
        title=f"valid: MAE {summ['cv300_mae_J_per_K_per_mol_fu']:.2f} J/K/mol, 90 % bars",
    )
    a.legend(fontsize=8)
    a = ax[1]
    a.plot(m["s_published"][has], m["s_pred"][has], "o", ms=3, alpha=0.7)
    lim = [0, np.nanmax(m["s_published"]) * 1.05]
    a.plot(lim, lim, "k--", lw=0.8)
    a.set(
        xlabel="DFPT S(300 K) (J/K/mol f.u.)",
        ylabel="predicted S(300 K)",
        title=f"MAE {summ['s300_mae_J_per_K_per_mol_fu']:.2f} J/K/mol",
    )
    a = ax[2]
    a.hist(m["wasserstein_cm1"], bins=30, color="C2")
    a.axvline(
        summ["wasserstein_cm1_mean"], color="k", ls="--", label=f"mean {summ['wasserstein_cm1_mean']:.1f}"
    )
    a.set(
        xlabel="Wasserstein distance to DFPT DOS (cm$^{-1}$)",
        ylabel="valid crystals",
        title="whole 0–4000 cm$^{-1}$ range",
    )
    a.legend()
    fig.tight_layout()
    fig.savefig(FIG / "predict_parity.png", dpi=90)

    # examples: best, median, worst W, and the two with the highest modes
    order = np.argsort(m["wasserstein_cm1"])
    fmax = np.array([s.dos_freqs_cm1[s.dos_per_cm1 > 1e-4].max() for s in valid])
    picks = list(dict.fromkeys([order[0], order[len(order) // 2], order[-1], *np.argsort(-fmax)[:3]]))[:6]
    fig, ax = plt.subplots(2, 3, figsize=(13, 6.5))
    for a, i in zip(ax.ravel(), picks):
        s, r = valid[i], preds[i]
        q = on_axis(s.dos_freqs_cm1, s.dos_per_cm1)
        top = max(fmax[i], 100) * 1.1
        a.plot(AXIS_CM1, q, color="0.5", lw=0.6, label="DFPT (Petretto)")
        a.plot(r.frequencies_cm1, r.dos, color="C0", lw=1.2, label="predicted")
        a.fill_between(
            r.frequencies_cm1,
            np.clip(r.dos - Z90 * r.dos_std, 0, None),
            r.dos + Z90 * r.dos_std,
            color="C0",
            alpha=0.25,
            label="90 % interval",
        )
        a.set_xlim(0, top)
        a.set_ylim(0, max(r.dos.max(), np.convolve(q, np.ones(10) / 10, "same").max()) * 1.3)
        flag = "" if r.in_distribution else " [OOD]"
        a.set_title(
            f"{s.structure.formula} ({s.id}) W={m['wasserstein_cm1'][i]:.0f} cm$^{{-1}}${flag}", fontsize=9
        )
        a.set_xlabel("frequency (cm$^{-1}$)")
        a.set_ylabel("states / cm$^{-1}$ / cell")
    ax[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIG / "predict_examples.png", dpi=80)
    for f in ("predict_parity.png", "predict_examples.png"):
        print(f, (FIG / f).stat().st_size // 1024, "kB")


if __name__ == "__main__":
    main()
