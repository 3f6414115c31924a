"""The one scoring rule of every leave-one-patient-out readout (gene transfer, probes, predict)."""

from __future__ import annotations

import numpy as np

from tpir_kedro.cohort.schema import TISSUE_CLASSES
from tpir_kedro.evaluation.held_out_scores import (
    SCORE_COLUMNS,
    held_out_scores,
    majority_class,
    unscored_reason,
)

IC, CIS, II, BG, CT, AT = TISSUE_CLASSES


def test_a_row_scores_the_classes_the_patient_has_and_lists_the_rest():
    row = held_out_scores("B", [IC, II, II], np.array([IC, IC, II]), np.array([IC, II, II]))
    assert tuple(row) == SCORE_COLUMNS
    assert (row["n_train"], row["n_test"]) == (3, 3)
    assert row["accuracy"] == 2 / 3 and row["balanced_accuracy"] == (0.5 + 1.0) / 2
    assert row["classes_absent"] == ";".join([CIS, BG, CT, AT])


def test_nothing_to_score_gives_nan_metrics_and_a_reason():
    for y_train, y_test, y_pred, why in [
        ([IC], [], np.array([]), "held-out patient"),
        ([], [IC], np.array([IC]), "training patients"),
        ([IC], [IC], None, "could not be fitted"),
    ]:
        assert why in unscored_reason(y_train, y_test, y_pred)
        assert np.isnan(held_out_scores("B", y_train, np.array(y_test), y_pred)["macro_f1"])
    assert unscored_reason([IC], [IC], np.array([IC])) is None


def test_majority_ties_go_to_the_first_class_in_schema_order():
    assert majority_class([II, CIS, II, CIS]) == CIS
    assert majority_class([AT, AT, IC]) == AT
