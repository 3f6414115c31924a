"""Training loss of every image-training run: one panel per variant, one line per fold and seed."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from tpir_kedro.reporting.message_figure import message_figure

TITLE = "Image-encoder training loss (lines: per step; markers: epoch mean)"
RUN_KEYS = ["fold", "seed"]


def training_curves_figure(training_history: pd.DataFrame, columns: int = 3) -> go.Figure:
    """Small multiples of loss against optimiser step; each variant has its own y scale, since the
    losses differ (InfoNCE, cross-entropy...).

    ``training_history``: rows from Lightning's CSV log with ``variant``, ``fold``, ``seed``,
    ``step``, and ``train_loss_step`` and/or ``train_loss_epoch`` (NaN on the other kind of row).
    """
    losses = [c for c in ("train_loss_step", "train_loss_epoch") if c in training_history.columns]
    if training_history.empty or not losses or not {"variant", "step"} <= set(training_history.columns):
        return message_figure(
            TITLE,
            "No training history: no variant was trained in this run (baselines only), or no run logged a loss.",
        )
    history = training_history.copy()
    for key in RUN_KEYS:
        history[key] = history[key].astype(str) if key in history.columns else "-"
    history["variant"] = history["variant"].astype(str)
    variants = list(dict.fromkeys(history["variant"]))
    columns = max(1, min(columns, len(variants)))
    rows = math.ceil(len(variants) / columns)
    fig = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=variants,
        horizontal_spacing=0.06,
        vertical_spacing=0.25 / rows,
    )
    runs = list(dict.fromkeys(map(tuple, history[RUN_KEYS].to_numpy())))
    palette = qualitative.Plotly
    in_legend: set[str] = set()
    for panel, variant in enumerate(variants):
        row, col = divmod(panel, columns)
        for (fold, seed), run in history[history["variant"] == variant].groupby(RUN_KEYS, sort=False):
            run = run.sort_values("step", kind="stable")
            colour = palette[runs.index((fold, seed)) % len(palette)]
            name = f"{fold}, seed {seed}"
            for loss, mode in (("train_loss_step", "lines"), ("train_loss_epoch", "markers")):
                if loss not in run.columns or run[loss].isna().all():
                    continue
                points = run.dropna(subset=[loss])
                fig.add_trace(
                    go.Scatter(
                        x=points["step"],
                        y=points[loss],
                        mode=mode,
                        name=name,
                        legendgroup=name,
                        showlegend=name not in in_legend,
                        line={"color": colour, "width": 1},
                        marker={"color": colour, "size": 6},
                        hovertemplate=f"{variant} {name}<br>step %{{x}}<br>{loss}: %{{y:.4f}}<extra></extra>",
                    ),
                    row=row + 1,
                    col=col + 1,
                )
                in_legend.add(name)
    fig.update_xaxes(title_text="step", row=rows)
    fig.update_layout(
        title=TITLE, template="plotly_white", height=260 * rows + 120, legend={"title": "fold, seed"}
    )
    return fig
