"""Row-normalised confusion matrices of the probes, pooled over held-out patients and seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from tpir_kedro.reporting.label_colours import ordered_labels
from tpir_kedro.reporting.message_figure import message_figure

TITLE = "Confusion matrices on held-out patients (rows: true class, normalised)"
COLUMNS = {"probe", "true", "predicted", "count", "variant"}


def pooled_confusions(confusion_matrices: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """(variant, probe) -> counts (true x predicted, classes in schema order) summed over folds and
    seeds. ``confusion_matrices``: long format, one row per (variant, fold, seed, probe, true,
    predicted) with ``count`` (and ``space``: a variant probed in two spaces -- its fine-tuned backbone
    and its adapter -- gets one matrix per space, named ``variant [space]``, never a pooled one).
    """
    table = confusion_matrices.astype({"variant": str, "probe": str, "true": str, "predicted": str})
    if "space" in table.columns and not table.empty:
        several = table.groupby("variant")["space"].transform("nunique") > 1
        table.loc[several, "variant"] = (
            table.loc[several, "variant"] + " [" + table.loc[several, "space"].astype(str) + "]"
        )
    out = {}
    for (variant, probe), group in table.groupby(["variant", "probe"], sort=False):
        classes = ordered_labels(pd.concat([group["true"], group["predicted"]]))
        counts = group.pivot_table(
            index="true", columns="predicted", values="count", aggfunc="sum", fill_value=0
        )
        out[(variant, probe)] = counts.reindex(index=classes, columns=classes, fill_value=0)
    return out


def row_normalised(counts: pd.DataFrame) -> pd.DataFrame:
    """Each row divided by its total (a class never present in a held-out patient stays NaN)."""
    totals = counts.sum(axis=1).replace(0, np.nan)
    return counts.div(totals, axis=0)


def confusion_matrix_figure(confusion_matrices: pd.DataFrame, probe: str = "logistic") -> go.Figure:
    """One heatmap per variant and probe, chosen with a dropdown; ``probe``'s matrices come first
    (the first variant's is shown on opening). Cell text: the row fraction; hover adds the count.
    """
    if confusion_matrices.empty or not COLUMNS <= set(confusion_matrices.columns):
        return message_figure(
            TITLE, "No confusion matrices: no held-out patient has pathologist-labelled spots with an image."
        )
    matrices = pooled_confusions(confusion_matrices)
    keys = sorted(matrices, key=lambda key: key[1] != probe)  # stable: variants keep their order
    fig = go.Figure()
    for index, key in enumerate(keys):
        counts = matrices[key]
        fractions = row_normalised(counts)
        fig.add_trace(
            go.Heatmap(
                z=fractions.to_numpy(),
                x=list(counts.columns),
                y=list(counts.index),
                customdata=counts.to_numpy(),
                zmin=0,
                zmax=1,
                colorscale="Blues",
                visible=index == 0,
                name=f"{key[0]} ({key[1]})",
                text=np.vectorize(lambda v: "" if np.isnan(v) else f"{v:.2f}")(
                    fractions.to_numpy(dtype=float)
                ),
                texttemplate="%{text}",
                hovertemplate="true %{y}<br>predicted %{x}<br>%{z:.2f} of the row (%{customdata} spots)<extra></extra>",
                colorbar={"title": "row fraction"},
            )
        )
    buttons = [
        {
            "label": f"{variant} ({probe_name})",
            "method": "update",
            "args": [
                {"visible": [i == j for j in range(len(keys))]},
                {"title.text": f"{TITLE}<br><sup>{variant}, {probe_name} probe</sup>"},
            ],
        }
        for i, (variant, probe_name) in enumerate(keys)
    ]
    first_variant, first_probe = keys[0]
    fig.update_layout(
        title=f"{TITLE}<br><sup>{first_variant}, {first_probe} probe</sup>",
        template="plotly_white",
        height=560,
        width=760,
        updatemenus=[
            {
                "buttons": buttons,
                "direction": "down",
                "x": 1.0,
                "xanchor": "right",
                "y": 1.18,
                "yanchor": "top",
                "showactive": True,
            }
        ]
        if len(keys) > 1
        else [],
        margin={"t": 110},
    )
    fig.update_xaxes(title_text="predicted", tickangle=-30)
    fig.update_yaxes(title_text="true", autorange="reversed")
    return fig
