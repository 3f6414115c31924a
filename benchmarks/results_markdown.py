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

from tpir_kedro.pipelines.evaluation.nodes import DIFF_PREFIX, EXPRESSION_DIFF_PREFIX

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


def _delta(row) -> str:
    """The row's paired difference: macro-F1 on classification rows, Pearson r on expression rows."""
    prefix = next(
        (p for p in (DIFF_PREFIX, EXPRESSION_DIFF_PREFIX) if pd.notna(row.get(f"{p}mean", float("nan")))),
        None,
    )
    if prefix is None:
        return ""
    mean, low, high = row[f"{prefix}mean"], row.get(f"{prefix}ci_low"), row.get(f"{prefix}ci_high")
    interval = "" if pd.isna(low) else f" [{low:+.3f}, {high:+.3f}]"
    return f"{mean:+.3f}{interval} ({int(row[f'{prefix}n_folds_ahead'])}/{int(row[f'{prefix}n_folds'])})"


def markdown_table(summary: pd.DataFrame) -> str:
    lines = [
        "| variant | space | probe | n folds | macro-F1 | accuracy | balanced acc. | Δ vs imagenet [95% CI] (folds ahead): macro-F1, or r for retrieval / ridge | Pearson r top-50 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, row in summary.iterrows():
        lines.append(
            f"| {row['variant']} | {row.get('space', '')} | {row['probe']} | {int(row['n_folds'])} | {_pm(row, 'macro_f1')} | {_pm(row, 'accuracy')} "
            f"| {_pm(row, 'balanced_accuracy')} | {_delta(row)} | {_pm(row, 'pearson_r_top50')} |"
        )
    return "\n".join(lines)


def main() -> None:
    path = _latest(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "data/08_reporting/results_summary.csv")
    summary = pd.read_csv(path)
    print(f"<!-- {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} -->")
    print(markdown_table(summary))


if __name__ == "__main__":
    main()
