"""Spots per patient and per section, stacked by label: how much of each class each patient gives."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tpir_kedro.reporting.label_colours import label_colour, ordered_labels
from tpir_kedro.reporting.message_figure import message_figure

TITLE = "Cohort: spots per patient and per section, by pathologist label"


def cohort_overview_figure(cohort_summary: pd.DataFrame) -> go.Figure:
    """Two stacked-bar panels (per patient, per section) from the ``cohort_summary`` table.

    ``cohort_summary``: one row per (patient, section, label) with ``n_spots`` and ``n_with_image``.
    """
    needed = {"patient", "section", "label", "n_spots"}
    if cohort_summary.empty or not needed <= set(cohort_summary.columns):
        return message_figure(
            TITLE, "No cohort summary to show (no spots, or the table lacks patient/section/label/n_spots)."
        )
    table = cohort_summary.astype({"patient": str, "section": str, "label": str})
    if "n_with_image" not in table.columns:
        table = table.assign(n_with_image=float("nan"))
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("Spots per patient", "Spots per section"),
        column_widths=[0.35, 0.65],
        horizontal_spacing=0.08,
    )
    for index, label in enumerate(ordered_labels(table["label"])):
        rows = table[table["label"] == label]
        colour = label_colour(label, index)
        for col, key in ((1, "patient"), (2, "section")):
            counts = rows.groupby(key)[["n_spots", "n_with_image"]].sum(min_count=1).reset_index()
            fig.add_bar(
                x=counts[key],
                y=counts["n_spots"],
                name=label,
                legendgroup=label,
                showlegend=col == 1,
                marker_color=colour,
                customdata=counts[["n_with_image"]],
                hovertemplate=f"{key} %{{x}}<br>{label}: %{{y}} spots (%{{customdata[0]}} with an image)<extra></extra>",
                row=1,
                col=col,
            )
    fig.update_xaxes(type="category", categoryorder="category ascending")
    fig.update_yaxes(title_text="spots", row=1, col=1)
    fig.update_layout(
        title=TITLE, barmode="stack", template="plotly_white", height=420, legend={"title": "label"}
    )
    return fig
