"""Collect the per-topic benchmark sections (docs/benchmarks/*.md, written by the scripts in benchmarks/)
into docs/benchmarks.md. Run after any benchmark: ``python scripts/collect_benchmarks.py``."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = [
    "phonons", "kappa", "md", "finetune", "spectra", "ir_raman", "compare", "identify", "predict", "batch", "web",
]

HEADER = """# Benchmarks

Latest figures of each benchmark script, side by side with the reference tool in the same run. All on the
project's 2-core CPU machine (no GPU) unless a section says otherwise; the machine is shared, so each section
records its load average, and ratios are more reliable than absolute times. Regenerate a section with its script
in `benchmarks/`, then `python scripts/collect_benchmarks.py`.

| section | script | reference |
|---|---|---|
| [Phonons](#phonons) | `benchmarks/phonons.py` | plain phonopy + ASE calculator loop |
| [Thermal conductivity](#kappa) | `benchmarks/kappa.py` | plain phono3py + ASE calculator loop; phono3py itself on DFT files |
| [Molecular dynamics](#md) | `benchmarks/md.py` | ASE MD with the engine's stock ASE calculator |
| [Fine-tuning](#finetune) | `benchmarks/finetune.py` | the base model's phonons against DFT |
| [INS and DOS](#spectra) | `benchmarks/spectra.py` | Euphonic |
| [IR and Raman](#ir-raman) | `benchmarks/ir_raman.py` | ASE `Infrared` |
| [Compare and fit](#compare) | `benchmarks/compare.py` | scipy `curve_fit` glue |
| [Identify](#identify) | `benchmarks/identify.py` | the issue's targets (no reference tool) |
| [Direct predictor](#predictor) | `benchmarks/predict.py` | `atomvib phonons` with CHGNet |
| [Batch](#batch) | `benchmarks/batch.py` | a plain loop |
| [Web app](#web) | `benchmarks/web_speed.py` | the issue's targets (no reference tool) |
"""

ANCHORS = {
    "phonons": "phonons",
    "kappa": "kappa",
    "md": "md",
    "finetune": "finetune",
    "spectra": "spectra",
    "ir_raman": "ir-raman",
    "compare": "compare",
    "identify": "identify",
    "predict": "predictor",
    "batch": "batch",
    "web": "web",
}


def main() -> None:
    parts = [HEADER]
    for name in ORDER:
        p = ROOT / "docs" / "benchmarks" / f"{name}.md"
        if p.exists():
            text = p.read_text().strip()
            # demote the section's headings by one level under this page's title
            text = "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())
            parts.append(f'<a id="{ANCHORS[name]}"></a>\n\n{text}\n')
    (ROOT / "docs" / "benchmarks.md").write_text("\n".join(parts))


if __name__ == "__main__":
    main()
