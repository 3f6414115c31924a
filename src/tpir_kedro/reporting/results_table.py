"""The results summary as a plotly table: one row per variant and probe, mean ± sd."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from tpir_kedro.reporting.message_figure import message_figure

TITLE = "Results on held-out patients (mean ± sd over held-out patients and seeds)"
# (header, mean column, sd column): metrics of results_summary, in the order readers compare them.
METRIC_COLUMNS = (
    ("macro-F1", "macro_f1_mean", "macro_f1_std"),
    ("balanced acc.", "balanced_accuracy_mean", "balanced_accuracy_std"),
    ("accuracy", "accuracy_mean", "accuracy_std"),
    ("Pearson r (top genes)", "pearson_r_top50_mean", "pearson_r_top50_std"),
    ("Δ macro-F1 vs imagenet", "macro_f1_diff_vs_imagenet_mean", "macro_f1_diff_vs_imagenet_sd"),
)


def mean_sd(mean, sd, digits: int = 3) -> str:
    """``0.712 ± 0.031``; the mean alone without an sd (one fold); an empty cell without a mean."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if sd is None or (isinstance(sd, float) and math.isnan(sd)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def results_table_figure(results_summary: pd.DataFrame) -> go.Figure:
    """``results_summary``: one row per (variant, probe) with ``{metric}_mean``/``_std`` columns,
    ``n_folds`` and, against the baseline, ``macro_f1_diff_vs_imagenet_mean``/``_sd``."""
    if results_summary.empty or not {"variant", "probe"} <= set(results_summary.columns):
        return message_figure(TITLE, "No results: no variant was evaluated on a held-out patient.")
    header = ["variant", "probe"]
    cells = [results_summary["variant"].astype(str).tolist(), results_summary["probe"].astype(str).tolist()]
    for name, mean, sd in METRIC_COLUMNS:
        if mean in results_summary.columns:
            header.append(name)
            sds = results_summary[sd] if sd in results_summary.columns else pd.Series(float("nan"), index=results_summary.index)
            cells.append([mean_sd(m, s) for m, s in zip(results_summary[mean].astype(float), sds.astype(float))])
    for count in ("n_folds", "n_rows"):
        if count in results_summary.columns:
            header.append(count)
            cells.append(["" if pd.isna(n) else str(int(n)) for n in results_summary[count]])
    fig = go.Figure(go.Table(header={"values": header, "align": "left", "fill_color": "#e8eef7", "font": {"size": 12}}, cells={"values": cells, "align": "left", "height": 24}))
    fig.update_layout(title=TITLE, height=min(120 + 26 * (len(results_summary) + 1), 900), margin={"l": 10, "r": 10, "t": 60, "b": 10})
    return fig
