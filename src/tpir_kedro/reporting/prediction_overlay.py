"""The predicted tissue class of every spot or tile, drawn over a thumbnail of the slide (plotly)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from tpir_kedro.imaging.slide_thumbnail import Thumbnail
from tpir_kedro.reporting.image_data_uri import jpeg_data_uri
from tpir_kedro.reporting.label_colours import label_colour

_PLOT_WIDTH_PX = 800  # the drawing area; marker sizes are in screen pixels, so they follow it


def prediction_overlay(
    thumbnail: Thumbnail, predictions: pd.DataFrame, classes: list[str], side_px: float, title: str
) -> go.Figure:
    """Squares of the patch size, coloured by ``predictions["predicted_class"]``, over the slide.

    Parameters
    ----------
    thumbnail
        the slide, shrunk; the figure's axes are its pixels (hover shows full-resolution ones).
    predictions
        one row per spot: ``spot_id``, ``pixel_x``, ``pixel_y`` (full resolution),
        ``predicted_class``, ``max_probability``.
    classes
        the model's classes, in legend order.
    side_px
        the patch side in full-resolution pixels.
    """
    height, width = thumbnail.rgb.shape[:2]
    sx, sy = thumbnail.scale_xy
    # Inline JPEG: a fraction of the size of plotly's own pixel-array form.
    fig = go.Figure(go.Image(source=jpeg_data_uri(thumbnail.rgb), hoverinfo="skip", name="slide"))
    marker_px = max(3.0, 0.9 * side_px * sx / width * _PLOT_WIDTH_PX)
    for index, cls in enumerate(classes):
        rows = predictions[predictions["predicted_class"] == cls]
        if rows.empty:
            continue
        fig.add_scatter(
            x=rows["pixel_x"] * sx,
            y=rows["pixel_y"] * sy,
            mode="markers",
            name=f"{cls} ({len(rows)})",
            marker={
                "symbol": "square",
                "size": marker_px,
                "color": label_colour(cls, index),
                "opacity": 0.55,
                "line": {"width": 0},
            },
            customdata=np.c_[
                rows["spot_id"].to_numpy(object),
                rows["max_probability"].round(3),
                rows["pixel_x"].round(1),
                rows["pixel_y"].round(1),
            ],
            hovertemplate="%{customdata[0]} at (%{customdata[2]}, %{customdata[3]}) px<br>"
            + cls
            + " (p=%{customdata[1]})<extra></extra>",
        )
    fig.update_xaxes(range=[0, width], showgrid=False, visible=False)
    fig.update_yaxes(range=[height, 0], showgrid=False, visible=False, scaleanchor="x")
    fig.update_layout(
        title=title,
        template="plotly_white",
        width=_PLOT_WIDTH_PX + 260,
        height=int(_PLOT_WIDTH_PX * height / width) + 120,
        legend_title_text="predicted class",
    )
    return fig
