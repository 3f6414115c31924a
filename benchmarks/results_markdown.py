"""Print a results summary (``results_summary.csv``) as the README's markdown table.

    .venv/bin/python benchmarks/results_markdown.py [PATH]   # default: the latest demo summary

Columns: macro-F1, accuracy and balanced accuracy (mean ± sd over held-out patients and seeds) per
variant and probe, the paired macro-F1 difference against ``imagenet`` (mean ± sd, folds x seeds better),
and the expression-prediction Pearson r.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _latest(path: Path) -> Path:
    if path.is_dir():  # a versioned dataset: <name>.csv/<version>/<name>.csv
        return sorted(path.glob(f"*/{path.name}"))[-1]
    return path


def _pm(row, metric: str) -> str:
    mean, sd = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
    if pd.isna(mean):
        return ""
    return f"{mean:.2f}" if pd.isna(sd) else f"{mean:.2f} ± {sd:.2f}"


def main() -> None:
    path = _latest(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "data/08_reporting/results_summary.csv")
    summary = pd.read_csv(path)
    print(f"<!-- {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} -->")
    print("| variant | probe | macro-F1 | accuracy | balanced acc. | Δ macro-F1 vs imagenet (better) | Pearson r top-50 |")
    print("|---|---|---|---|---|---|---|")
    for _, row in summary.iterrows():
        diff = ""
        if "macro_f1_diff_vs_imagenet_mean" in row and pd.notna(row["macro_f1_diff_vs_imagenet_mean"]):
            sd = row.get("macro_f1_diff_vs_imagenet_sd")
            spread = "" if pd.isna(sd) else f" ± {sd:.3f}"
            diff = f"{row['macro_f1_diff_vs_imagenet_mean']:+.3f}{spread} ({int(row['n_better_than_imagenet'])}/{int(row['n_pairs'])})"
        print(f"| {row['variant']} | {row['probe']} | {_pm(row, 'macro_f1')} | {_pm(row, 'accuracy')} | {_pm(row, 'balanced_accuracy')} | {diff} | {_pm(row, 'pearson_r_top50')} |")


if __name__ == "__main__":
    main()
