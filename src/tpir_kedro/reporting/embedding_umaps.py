"""UMAPs of gene embeddings, coloured by patient or by label, as plotly figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tpir_kedro.reporting.label_colours import NO_CLASS_LABELS, drawing_order, label_colour, ordered_labels

_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def umap_coordinates(embedding: np.ndarray, n_neighbors: int = 15, seed: int = 0) -> np.ndarray:
    """(n, 2) UMAP of an (n, d) embedding."""
    import umap  # numba-compiled on first use: imported here so importing this module stays cheap

    n_neighbors = max(2, min(n_neighbors, len(embedding) - 1))
    return umap.UMAP(n_neighbors=n_neighbors, random_state=seed, n_jobs=1).fit_transform(embedding)


def umap_grid(
    coordinates: dict[str, np.ndarray], colour: pd.Series, title: str, *, by_label: bool = False
) -> go.Figure:
    """One panel per embedding (e.g. pca, harmony, scvi, scanvi), points coloured by ``colour``.

    ``by_label``: ``colour`` holds spot labels. They take the project's label colours, and the spots
    without a class (unlabelled, undetermined) are drawn first, smaller and fainter, so the classes lie
    on top of them; the legend keeps the schema order.
    """
    names = list(coordinates)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.03)
    values = colour.astype(str).to_numpy()
    if by_label:
        rank = {label: index for index, label in enumerate(ordered_labels(values))}
        groups = drawing_order(values)
        markers = {
            g: (
                {"size": 2, "opacity": 0.5, "color": label_colour(g, rank[g])}
                if g in NO_CLASS_LABELS
                else {"size": 3, "color": label_colour(g, rank[g])}
            )
            for g in groups
        }
    else:
        rank = {}
        groups = sorted(set(values))
        markers = {g: {"size": 3, "color": _PALETTE[i % len(_PALETTE)]} for i, g in enumerate(groups)}
    for col, name in enumerate(names, start=1):
        xy = coordinates[name]
        for group in groups:
            mask = values == group
            fig.add_trace(
                go.Scattergl(
                    x=xy[mask, 0],
                    y=xy[mask, 1],
                    mode="markers",
                    name=group,
                    legendgroup=group,
                    legendrank=rank.get(group, 1000),  # plotly's default rank
                    showlegend=col == 1,
                    marker=markers[group],
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(showticklabels=False, row=1, col=col)
        fig.update_yaxes(showticklabels=False, row=1, col=col)
    fig.update_layout(title=title, height=380, width=330 * len(names), legend={"itemsizing": "constant"})
    return fig
