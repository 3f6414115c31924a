"""One colour per spot label, shared by every figure so a class looks the same everywhere.

Spots without a class (``unlabelled``, ``undetermined``) are usually most of a cohort, and plotly draws
later traces on top: a scatter that draws them last hides the classes under grey. Figures coloured by
label draw them first (:func:`drawing_order`, :func:`classes_on_top`) and keep the legend in schema
order (``legendrank``), so the legend still reads classes first.
"""

from __future__ import annotations

import plotly.graph_objects as go

from tpir_kedro.cohort.schema import LABEL_CATEGORIES, TISSUE_CLASSES, UNDETERMINED, UNLABELLED

_CLASS_COLOURS = ("#d62728", "#ff7f0e", "#1f77b4", "#e377c2", "#2ca02c", "#bcbd22")
LABEL_COLOURS: dict[str, str] = {
    **dict(zip(TISSUE_CLASSES, _CLASS_COLOURS)),
    UNDETERMINED: "#7f7f7f",
    UNLABELLED: "#c7c7c7",
}
_FALLBACK = ("#9467bd", "#8c564b", "#17becf", "#393b79", "#637939")
# Drawn first, bottom layer first: the unlabelled spots are the most numerous.
NO_CLASS_LABELS: tuple[str, ...] = (UNLABELLED, UNDETERMINED)


def label_colour(label: str, index: int = 0) -> str:
    """The label's colour; labels outside the cohort schema cycle through spare colours."""
    return LABEL_COLOURS.get(label, _FALLBACK[index % len(_FALLBACK)])


def ordered_labels(labels) -> list[str]:
    """Distinct labels in schema order (tissue classes, undetermined, unlabelled), others after, sorted."""
    present = {str(label) for label in labels}
    return [label for label in LABEL_CATEGORIES if label in present] + sorted(present - set(LABEL_CATEGORIES))


def drawing_order(labels) -> list[str]:
    """Distinct labels in the order to draw them: those without a class first (unlabelled, then
    undetermined), then the rest in :func:`ordered_labels` order, so the classes lie on top.
    """
    ordered = ordered_labels(labels)
    behind = [label for label in NO_CLASS_LABELS if label in ordered]
    return behind + [label for label in ordered if label not in behind]


def classes_on_top(fig: go.Figure, label_key: str = "legendgroup") -> go.Figure:
    """Reorder a figure's traces, one per label (and facet), as :func:`drawing_order` says, and rank
    the legend in :func:`ordered_labels` order. For plotly express figures coloured by label, which
    name each trace's ``legendgroup`` after its label; traces of other names keep their place after
    the unlabelled ones.

    Returns ``fig``, changed in place.
    """
    labels = [str(getattr(trace, label_key) or trace.name) for trace in fig.data]
    rank = {label: index for index, label in enumerate(ordered_labels(labels))}
    behind = {label: index for index, label in enumerate(NO_CLASS_LABELS)}
    order = sorted(range(len(labels)), key=lambda i: (behind.get(labels[i], len(behind)), i))
    fig.data = [fig.data[i] for i in order]
    for trace, label in zip(fig.data, [labels[i] for i in order]):
        trace.legendrank = rank[label]
    return fig
