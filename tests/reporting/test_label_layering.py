"""Figures coloured by label draw the spots without a class first, so the classes lie on top of them
(plotly draws later traces on top), and their legend still lists every label in schema order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import pytest
from anndata import AnnData

from tpir_kedro.cohort.schema import TISSUE_CLASSES, UNDETERMINED, UNLABELLED
from tpir_kedro.pipelines.gene_vae import nodes as gene_vae_nodes
from tpir_kedro.reporting.label_colours import classes_on_top, ordered_labels
from tpir_kedro.reporting.slide_labels import slide_label_figure

CLASSES = list(TISSUE_CLASSES[:3])
# Mostly unlabelled, as a real cohort is; labels interleaved so no order of the rows can pass for
# the order of the traces.
LABELS = [UNLABELLED, CLASSES[0], UNLABELLED, UNDETERMINED, CLASSES[1], UNLABELLED, CLASSES[2]] * 6


def _assert_classes_on_top(traces, label_of) -> None:
    labels = [label_of(trace) for trace in traces]
    assert sorted(set(labels)) == sorted(set(LABELS))
    unlabelled, undetermined = labels.index(UNLABELLED), labels.index(UNDETERMINED)
    classes = [i for i, label in enumerate(labels) if label in CLASSES]
    assert unlabelled < undetermined < min(classes), labels


def _assert_legend_in_schema_order(traces, label_of) -> None:
    shown = sorted((t for t in traces if t.showlegend is not False), key=lambda t: t.legendrank)
    assert [label_of(t) for t in shown] == ordered_labels(LABELS)


@pytest.fixture
def by_label(monkeypatch):
    rng = np.random.default_rng(0)
    n = len(LABELS)
    cohort = AnnData(
        X=np.zeros((n, 3), dtype=np.float32),
        obs=pd.DataFrame(
            {"patient": np.repeat(["A", "B"], n // 2), "label": LABELS}, index=[f"s{i}" for i in range(n)]
        ),
        obsm={"X_pca": rng.normal(size=(n, 5)), "X_scvi": rng.normal(size=(n, 4))},
        uns={"gene_embeddings": {"embeddings": ["pca", "scvi"]}},
    )
    # The layering does not depend on the projection; UMAP's first call compiles for ~15 s.
    monkeypatch.setattr(gene_vae_nodes, "umap_coordinates", lambda embedding, seed=0: embedding[:, :2])
    by_patient, by_label = gene_vae_nodes.gene_embedding_umaps(cohort, {"seed": 0})
    assert [t.name for t in by_patient.data] == ["A", "B", "A", "B"]  # by patient: unchanged
    return by_label


def test_every_gene_umap_panel_draws_the_unlabelled_spots_under_the_labelled_ones(by_label):
    panels = {trace.xaxis for trace in by_label.data}
    assert panels == {"x", "x2"}
    for panel in panels:
        traces = [trace for trace in by_label.data if trace.xaxis == panel]
        _assert_classes_on_top(traces, lambda t: t.name)
        # Every spot is drawn once per panel.
        assert sum(len(t.x) for t in traces) == len(LABELS)


def test_the_gene_umap_legend_lists_every_label_in_schema_order_and_unlabelled_is_faint(by_label):
    _assert_legend_in_schema_order(by_label.data, lambda t: t.name)
    unlabelled = next(t for t in by_label.data if t.name == UNLABELLED)
    labelled = next(t for t in by_label.data if t.name == CLASSES[0])
    assert unlabelled.marker.size < labelled.marker.size and unlabelled.marker.opacity < 1


def test_the_slide_label_figure_draws_the_unlabelled_spots_first():
    spots = pd.DataFrame(
        {"pixel_x": np.arange(len(LABELS), dtype=float), "pixel_y": 0.0, "label": LABELS},
    )
    fig = slide_label_figure(spots, "A1", None)

    def label_of(trace):
        return trace.name.rsplit(" (", 1)[0]

    _assert_classes_on_top(fig.data, label_of)
    _assert_legend_in_schema_order(fig.data, label_of)


def test_classes_on_top_reorders_a_faceted_plotly_express_figure():
    frame = pd.DataFrame(
        {
            "x": np.arange(2 * len(LABELS), dtype=float),
            "y": 0.0,
            "label": LABELS * 2,
            "panel": ["left"] * len(LABELS) + ["right"] * len(LABELS),
        }
    )
    fig = px.scatter(
        frame,
        x="x",
        y="y",
        color="label",
        facet_col="panel",
        category_orders={"label": ordered_labels(LABELS)},
    )
    assert [t.legendgroup for t in fig.data][-2:] == [UNLABELLED, UNLABELLED]  # what plotly express does
    classes_on_top(fig)
    for panel in ("x", "x2"):
        _assert_classes_on_top([t for t in fig.data if t.xaxis == panel], lambda t: t.legendgroup)
    _assert_legend_in_schema_order(fig.data, lambda t: t.legendgroup)
