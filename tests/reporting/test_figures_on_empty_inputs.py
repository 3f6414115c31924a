"""Every figure builder returns a figure that says why it is empty instead of failing."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import pytest

from tpir_kedro.reporting.cohort_overview import cohort_overview_figure
from tpir_kedro.reporting.confusion_heatmaps import confusion_matrix_figure
from tpir_kedro.reporting.results_table import results_table_figure
from tpir_kedro.reporting.slide_labels import slide_label_figure
from tpir_kedro.reporting.training_curves import training_curves_figure

# What the pipeline writes when there is nothing to report: headers only, or no columns at all.
EMPTY_INPUTS = {
    "cohort overview": (
        cohort_overview_figure,
        pd.DataFrame(columns=["patient", "section", "label", "n_spots", "n_with_image"]),
    ),
    "training curves, headers only": (
        training_curves_figure,
        pd.DataFrame(columns=["epoch", "step", "train_loss_epoch", "variant", "fold", "seed"]),
    ),
    "training curves, no columns": (training_curves_figure, pd.DataFrame()),
    "confusion matrices": (
        confusion_matrix_figure,
        pd.DataFrame(
            columns=["probe", "held_out_patient", "true", "predicted", "count", "variant", "fold", "seed"]
        ),
    ),
    "results table": (
        results_table_figure,
        pd.DataFrame(columns=["variant", "probe", "macro_f1_mean", "macro_f1_std"]),
    ),
}


@pytest.mark.parametrize("case", list(EMPTY_INPUTS))
def test_an_empty_input_gives_a_figure_that_says_so(case):
    build, frame = EMPTY_INPUTS[case]
    fig = build(frame)
    assert isinstance(fig, go.Figure) and len(fig.data) == 0
    assert fig.layout.annotations and fig.layout.annotations[0].text.startswith("No ")
    assert go.Figure(fig.to_dict()).to_json()  # valid and serialisable


def test_a_section_without_spots_says_so():
    fig = slide_label_figure(pd.DataFrame(columns=["pixel_x", "pixel_y", "label"]), "X1")
    assert len(fig.data) == 0 and "X1" in fig.layout.annotations[0].text
