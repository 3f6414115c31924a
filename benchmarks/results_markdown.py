"""Print a results summary (``results_summary.csv``) as the markdown table of docs/results.md.

    .venv/bin/python benchmarks/results_markdown.py [PATH]   # default: the latest demo summary

One row per variant, representation space and probe: macro-F1, accuracy and balanced accuracy (mean ±
sd over held-out patients, seeds averaged within each: n = folds), the paired per-fold macro-F1
difference against ``imagenet``'s backbone (mean, 95% t interval over folds, folds ahead; macro-F1
for the classification probes, Pearson r for the expression protocols), and the expression Pearson r.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from tpir_kedro.reporting.results_table import row_differences

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


def _delta(diff) -> str:
    """One row of :func:`row_differences`: macro-F1 on classification rows, Pearson r on expression rows."""
    if diff is None or pd.isna(diff["mean"]):
        return ""
    interval = "" if pd.isna(diff["ci_low"]) else f" [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}]"
    return f"{diff['mean']:+.3f}{interval} ({int(diff['n_folds_ahead'])}/{int(diff['n_folds'])})"


def markdown_table(summary: pd.DataFrame) -> str:
    lines = [
        "| variant | space | probe | n folds | macro-F1 | accuracy | balanced acc. | Δ vs imagenet [95% CI] (folds ahead): macro-F1, or r for retrieval / ridge | Pearson r top-50 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    diffs = row_differences(summary)
    for index, row in summary.iterrows():
        diff = None if diffs is None else diffs.loc[index]
        lines.append(
            f"| {row['variant']} | {row.get('space', '')} | {row['probe']} | {int(row['n_folds'])} | {_pm(row, 'macro_f1')} | {_pm(row, 'accuracy')} "
            f"| {_pm(row, 'balanced_accuracy')} | {_delta(diff)} | {_pm(row, 'pearson_r_top50')} |"
        )
    return "\n".join(lines)


def main() -> None:
    path = _latest(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "data/08_reporting/results_summary.csv")
    summary = pd.read_csv(path)
    print(f"<!-- {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} -->")
    print(markdown_table(summary))


if __name__ == "__main__":
    main()
