"""A figure that says why there is nothing to plot, so an empty input never fails a report."""

from __future__ import annotations

import plotly.graph_objects as go


def message_figure(title: str, message: str) -> go.Figure:
    """No traces; ``message`` centred where the plot would be."""
    fig = go.Figure()
    fig.add_annotation(
        text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 14}
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title, template="plotly_white", height=300)
    return fig
