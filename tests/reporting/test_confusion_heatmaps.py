import numpy as np
import pandas as pd

from tpir_kedro.reporting.confusion_heatmaps import confusion_matrix_figure, pooled_confusions, row_normalised


def _confusion(variant, probe, fold, cells):
    return pd.DataFrame(
        [
            {
                "probe": probe,
                "held_out_patient": fold[-1],
                "true": t,
                "predicted": p,
                "count": c,
                "variant": variant,
                "fold": fold,
                "seed": 0,
            }
            for t, p, c in cells
        ]
    )


CELLS_B = [
    ("invasive cancer", "invasive cancer", 3),
    ("invasive cancer", "adipose tissue", 1),
    ("adipose tissue", "adipose tissue", 2),
    ("adipose tissue", "invasive cancer", 0),
]
CELLS_C = [
    ("invasive cancer", "invasive cancer", 4),
    ("invasive cancer", "adipose tissue", 0),
    ("adipose tissue", "adipose tissue", 0),
    ("adipose tissue", "invasive cancer", 0),
]


def test_counts_are_pooled_over_folds_and_rows_normalised():
    table = pd.concat(
        [
            _confusion("clip", "logistic", "holdout_B", CELLS_B),
            _confusion("clip", "logistic", "holdout_C", CELLS_C),
        ]
    )
    counts = pooled_confusions(table)[("clip", "logistic")]
    assert list(counts.index) == list(counts.columns) == ["invasive cancer", "adipose tissue"]  # schema order
    assert counts.to_numpy().tolist() == [[7, 1], [0, 2]]
    fractions = row_normalised(counts)
    assert fractions.to_numpy().tolist() == [[7 / 8, 1 / 8], [0.0, 1.0]]
    empty_row = row_normalised(pd.DataFrame([[0, 0], [1, 1]]))
    assert np.isnan(empty_row.iloc[0]).all()


def test_one_heatmap_per_variant_and_probe_the_chosen_probe_first_in_a_dropdown():
    table = pd.concat(
        [
            _confusion("clip", "knn", "holdout_B", CELLS_B),
            _confusion("clip", "logistic", "holdout_B", CELLS_B),
            _confusion("imagenet", "logistic", "holdout_B", CELLS_C),
        ]
    )
    fig = confusion_matrix_figure(table, probe="logistic")
    assert [t.name for t in fig.data] == ["clip (logistic)", "imagenet (logistic)", "clip (knn)"]
    assert [t.visible for t in fig.data] == [True, False, False]
    assert fig.data[0].zmax == 1 and list(fig.data[0].text[0]) == ["0.75", "0.25"]
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["clip (logistic)", "imagenet (logistic)", "clip (knn)"]
    assert buttons[2].args[0]["visible"] == [False, False, True]


def test_a_single_matrix_needs_no_dropdown():
    fig = confusion_matrix_figure(_confusion("clip", "knn", "holdout_B", CELLS_B), probe="logistic")
    assert len(fig.data) == 1 and not fig.layout.updatemenus


def test_a_variant_probed_in_two_spaces_gets_a_matrix_per_space_never_a_pooled_one():
    backbone = _confusion("clip", "logistic", "holdout_B", CELLS_B).assign(space="backbone")
    adapter = _confusion("clip", "logistic", "holdout_B", CELLS_C).assign(space="adapter")
    baseline = _confusion("imagenet", "logistic", "holdout_B", CELLS_B).assign(space="backbone")
    pooled = pooled_confusions(pd.concat([backbone, adapter, baseline]))
    assert set(pooled) == {
        ("clip [backbone]", "logistic"),
        ("clip [adapter]", "logistic"),
        ("imagenet", "logistic"),
    }
    assert pooled[("clip [adapter]", "logistic")].to_numpy().tolist() == [[4, 0], [0, 0]]
