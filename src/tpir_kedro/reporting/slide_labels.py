"""One section's spots, coloured by pathologist label, over a thumbnail of its H&E image."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from tpir_kedro.cohort.schema import is_classified
from tpir_kedro.imaging.slide_thumbnail import Thumbnail
from tpir_kedro.reporting.image_data_uri import jpeg_data_uri
from tpir_kedro.reporting.label_colours import drawing_order, label_colour, ordered_labels
from tpir_kedro.reporting.message_figure import message_figure


def default_section(obs: pd.DataFrame) -> str | None:
    """The first section (sorted by name) with pathologist labels and an image; failing that the
    first with an image, then the first at all. ``obs``: the cohort's ``section``, ``label``,
    ``has_image`` columns.
    """
    if obs.empty:
        return None
    sections = obs.assign(
        section=obs["section"].astype(str),
        classified=is_classified(obs["label"]),
        has_image=obs["has_image"].astype(bool),
    )
    per_section = sections.groupby("section")[["classified", "has_image"]].any().sort_index()
    for wanted in (
        per_section["classified"] & per_section["has_image"],
        per_section["has_image"],
        per_section.index == per_section.index,
    ):
        chosen = per_section.index[np.asarray(wanted)]
        if len(chosen):
            return str(chosen[0])
    return None


def slide_label_figure(
    spots: pd.DataFrame,
    section: str,
    thumbnail: Thumbnail | None = None,
    *,
    note: str = "",
    marker_px: float = 6,
    jpeg_quality: int = 85,
) -> go.Figure:
    """Spots at their full-resolution pixel position, one trace per label (click the legend to hide
    one), over ``thumbnail`` stretched to the full-resolution frame; without one, spots alone.

    ``spots``: one row per spot with ``pixel_x``, ``pixel_y``, ``label`` and optionally ``spot_id``.
    ``note``: shown under the title (e.g. why there is no image).
    """
    title = f"Section {section}: pathologist labels" + (f"<br><sup>{note}</sup>" if note else "")
    if spots.empty:
        return message_figure(title, f"Section {section} has no spots.")
    fig = go.Figure()
    if thumbnail is not None:
        height, width = thumbnail.rgb.shape[:2]
        dx, dy = (
            thumbnail.full_size[0] / width,
            thumbnail.full_size[1] / height,
        )  # full-resolution px per thumbnail px
        fig.add_trace(
            go.Image(
                source=jpeg_data_uri(thumbnail.rgb, jpeg_quality),
                x0=dx / 2,
                y0=dy / 2,
                dx=dx,
                dy=dy,
                hoverinfo="skip",
                name="H&E",
            )
        )
    labels = spots["label"].astype(str)
    ids = (
        spots["spot_id"].astype(str)
        if "spot_id" in spots.columns
        else pd.Series(spots.index.astype(str), index=spots.index)
    )
    rank = {label: index for index, label in enumerate(ordered_labels(labels))}
    # Neighbouring spots' markers overlap at low zoom: the unlabelled ones go underneath.
    for label in drawing_order(labels):
        mask = (labels == label).to_numpy()
        fig.add_trace(
            go.Scatter(
                x=spots["pixel_x"].to_numpy()[mask],
                y=spots["pixel_y"].to_numpy()[mask],
                mode="markers",
                name=f"{label} ({int(mask.sum())})",
                legendrank=rank[label],
                text=ids.to_numpy()[mask],
                hovertemplate=f"%{{text}}<br>{label}<extra></extra>",
                marker={
                    "size": marker_px,
                    "color": label_colour(label, rank[label]),
                    "opacity": 0.8,
                    "line": {"width": 0.5, "color": "white"},
                },
            )
        )
    # Image frame: y grows downwards; equal scale on both axes keeps the tissue's shape.
    fig.update_yaxes(
        autorange="reversed", scaleanchor="x", scaleratio=1, title_text="pixel y (full resolution)"
    )
    fig.update_xaxes(title_text="pixel x (full resolution)", constrain="domain")
    fig.update_layout(
        title=title,
        template="plotly_white",
        height=650,
        legend={"title": "label (spots)", "itemsizing": "constant"},
    )
    return fig
