"""The results summary as a plotly table: one row per variant, representation space and probe, mean ± sd
over held-out patients (seeds averaged within each), and the paired difference against imagenet.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from tpir_kedro.reporting.message_figure import message_figure

TITLE = (
    "Results on held-out patients (mean ± sd over held-out patients, seeds averaged within each; n = folds)"
)
# (header, mean column, sd column): metrics of results_summary, in the order readers compare them.
METRIC_COLUMNS = (
    ("macro-F1", "macro_f1_mean", "macro_f1_std"),
    ("balanced acc.", "balanced_accuracy_mean", "balanced_accuracy_std"),
    ("accuracy", "accuracy_mean", "accuracy_std"),
    ("Pearson r (top genes)", "pearson_r_top50_mean", "pearson_r_top50_std"),
)
# Paired differences against imagenet: macro-F1 on the classification rows, Pearson r on the expression
# rows; one set of columns shows whichever the row has.
DIFF_PREFIXES = ("macro_f1_diff_vs_imagenet_", "pearson_r_diff_vs_imagenet_")


def mean_sd(mean, sd, digits: int = 3) -> str:
    """``0.712 ± 0.031``; the mean alone without an sd (one fold); an empty cell without a mean."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if sd is None or (isinstance(sd, float) and math.isnan(sd)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def interval(low, high, digits: int = 3) -> str:
    """``[-0.012, +0.081]``; empty without an interval (fewer than two folds)."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return ""
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def ahead(n_ahead, n_folds) -> str:
    """``3/4``; empty when nothing was paired."""
    return "" if pd.isna(n_ahead) or pd.isna(n_folds) else f"{int(n_ahead)}/{int(n_folds)}"


def row_differences(summary: pd.DataFrame) -> pd.DataFrame | None:
    """Each row's paired difference (mean, sd, ci_low, ci_high, n_folds, n_folds_ahead) under the
    first prefix of :data:`DIFF_PREFIXES` it has a value for; None when the summary has none.
    """
    present = [p for p in DIFF_PREFIXES if f"{p}mean" in summary.columns]
    if not present:
        return None
    fields = ("mean", "sd", "ci_low", "ci_high", "n_folds", "n_folds_ahead")
    out = pd.DataFrame(float("nan"), index=summary.index, columns=fields)
    for prefix in reversed(present):  # the first prefix wins where a row had both
        has = summary[f"{prefix}mean"].notna()
        for field in fields:
            column = f"{prefix}{field}"
            if column in summary.columns:
                out.loc[has, field] = summary.loc[has, column].astype(float)
    return out


def results_table_figure(results_summary: pd.DataFrame) -> go.Figure:
    """``results_summary``: one row per (variant, space, probe) with ``{metric}_mean``/``_std``
    columns, ``n_folds`` and, against the baseline, ``macro_f1_diff_vs_imagenet_mean``/``_sd``,
    ``_ci_low``/``_ci_high`` (95% over folds) and ``_n_folds_ahead`` (classification rows) or the same
    under ``pearson_r_diff_vs_imagenet_`` (expression rows).
    """
    if results_summary.empty or not {"variant", "probe"} <= set(results_summary.columns):
        return message_figure(TITLE, "No results: no variant was evaluated on a held-out patient.")
    keys = [k for k in ("variant", "space", "probe") if k in results_summary.columns]
    header = list(keys)
    cells = [results_summary[k].astype(str).tolist() for k in keys]
    for name, mean, sd in METRIC_COLUMNS:
        if mean in results_summary.columns:
            header.append(name)
            sds = (
                results_summary[sd]
                if sd in results_summary.columns
                else pd.Series(float("nan"), index=results_summary.index)
            )
            cells.append(
                [mean_sd(m, s) for m, s in zip(results_summary[mean].astype(float), sds.astype(float))]
            )
    diff = row_differences(results_summary)
    if diff is not None:
        header += ["Δ vs imagenet (macro-F1 or r)", "Δ 95% interval", "folds ahead"]
        cells.append([mean_sd(m, s) for m, s in zip(diff["mean"], diff["sd"])])
        cells.append([interval(lo, hi) for lo, hi in zip(diff["ci_low"], diff["ci_high"])])
        cells.append([ahead(a, n) for a, n in zip(diff["n_folds_ahead"], diff["n_folds"])])
    for count in ("n_folds", "n_seeds"):
        if count in results_summary.columns:
            header.append(count)
            cells.append(["" if pd.isna(n) else str(int(n)) for n in results_summary[count]])
    fig = go.Figure(
        go.Table(
            header={"values": header, "align": "left", "fill_color": "#e8eef7", "font": {"size": 12}},
            cells={"values": cells, "align": "left", "height": 24},
        )
    )
    fig.update_layout(
        title=TITLE,
        height=min(120 + 26 * (len(results_summary) + 1), 900),
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
    )
    return fig
