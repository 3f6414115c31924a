"""Embedding scores: scib-metrics mixing/conservation and leave-one-patient-out label transfer."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest

from tpir_kedro.cohort.schema import TISSUE_CLASSES
from tpir_kedro.evaluation.embedding_metrics import (
    TRANSFER_COLUMNS,
    lopo_knn_transfer,
    majority_transfer,
    paired_fold_differences,
    scib_scores,
    summarise_transfer,
)
from tpir_kedro.evaluation.folds import patient_folds

IC, CIS, II, BG, CT, AT = TISSUE_CLASSES


# --------------------------------------------------------------------------------------------
# scib_scores
# --------------------------------------------------------------------------------------------


def _scib_case(separated: bool, seed: int = 0):
    """3 patients x 2 classes x 20 spots, classes 20 apart; patients 6 apart only if ``separated``.

    Plus 15 unlabelled spots scattered at random (scored for mixing, never for class).
    """
    rng = np.random.default_rng(seed)
    n = 20
    patient = np.repeat(["P1", "P2", "P3"], 2 * n)
    label = np.tile(np.repeat([IC, AT], n), 3).astype(object)
    x = rng.normal(scale=0.5, size=(len(patient), 4))
    x[:, 0] += 20 * (label == AT)
    if separated:
        x[:, 1] += 6 * np.searchsorted(["P1", "P2", "P3"], patient)
    extra = rng.normal(scale=4, size=(15, 4))
    return (
        np.vstack([x, extra]),
        np.concatenate([patient, rng.choice(["P1", "P2", "P3"], 15)]),
        np.concatenate([label, np.full(15, "unlabelled", dtype=object)]),
    )


@pytest.fixture(scope="module")
def mixed_and_separated():
    return scib_scores(*_scib_case(separated=False)), scib_scores(*_scib_case(separated=True))


def test_scib_scores_rank_mixing_and_keep_classes(mixed_and_separated):
    mixed, separated = mixed_and_separated
    expected = {
        "ilisi",
        "kbet",
        "bras",
        "silhouette_batch",
        "graph_connectivity",
        "silhouette_label",
        "nmi",
        "ari",
        "silhouette_patient",
        "silhouette_class",
    }
    assert expected <= set(mixed) and set(mixed) == set(separated)
    assert mixed["n_spots"] == 135 and mixed["n_classified"] == 120 and mixed["n_batches"] == 3
    assert math.isnan(mixed["kbet"])  # not requested (numba JIT cost)
    assert mixed["ilisi"] > separated["ilisi"] + 0.4
    assert mixed["bras"] > separated["bras"] and mixed["silhouette_batch"] > separated["silhouette_batch"]
    assert separated["silhouette_patient"] > 0.15 > 0.05 > mixed["silhouette_patient"]
    # Each class falls apart into one island per patient: 1/3 of a class is its largest component.
    assert mixed["graph_connectivity"] > 0.95 and separated["graph_connectivity"] == pytest.approx(1 / 3)
    # Classes are far apart in both, and unlabelled spots (scattered) are left out of class scores.
    for scores in (mixed, separated):
        assert scores["nmi"] > 0.95 and scores["ari"] > 0.95
        assert scores["silhouette_class"] > 0.4 and scores["silhouette_label"] > 0.7


def test_scib_scores_degrade_to_nan_not_errors(caplog):
    x, patient, label = _scib_case(separated=False)
    with caplog.at_level(logging.INFO, logger="tpir_kedro.evaluation.embedding_metrics"):
        one_batch = scib_scores(x, np.full(len(x), "P1"), label)
    for name in ("ilisi", "bras", "silhouette_batch", "silhouette_patient"):
        assert math.isnan(one_batch[name]), name
    assert one_batch["silhouette_class"] > 0.4 and one_batch["nmi"] > 0.95
    assert "ilisi not computed: fewer than two batches" in caplog.text

    one_class = scib_scores(x, patient, np.where(label == AT, IC, label))
    for name in ("silhouette_label", "nmi", "ari", "silhouette_class"):
        assert math.isnan(one_class[name]), name
    # The two former classes, now one, are two components of the kNN graph.
    assert one_class["ilisi"] > 0.5 and one_class["graph_connectivity"] == 0.5
    with pytest.raises(ValueError, match="one batch and label per spot"):
        scib_scores(x, patient[:-1], label)


# --------------------------------------------------------------------------------------------
# Leave-one-patient-out transfer
# --------------------------------------------------------------------------------------------


def _transfer_case():
    """A 1-D embedding: invasive cancer ~0, adipose ~10, immune infiltrate ~20.

    A and B: five spots of each class, plus unlabelled A spots sitting at 20 (they must not vote).
    C (held out): IC at 0, 0, 20 (-> predicted II, a class C lacks); AT at 10, 0 (-> predicted IC).
    D: unlabelled / undetermined only.
    """
    rows = []
    for patient, jitter in (("A", 0.0), ("B", 0.05)):
        for label, centre in ((IC, 0.0), (AT, 10.0), (II, 20.0)):
            rows += [(patient, label, centre + jitter + 0.01 * i) for i in range(5)]
        rows += [(patient, "unlabelled", 20.0)] * (8 if patient == "A" else 0)
    rows += [
        ("C", IC, 0.0),
        ("C", IC, 0.02),
        ("C", IC, 20.0),
        ("C", AT, 10.0),
        ("C", AT, 0.01),
        ("C", "undetermined", 5.0),
    ]
    rows += [("D", "unlabelled", 3.0), ("D", "undetermined", 12.0)]
    obs = pd.DataFrame(rows, columns=["patient", "label", "x"])
    obs["has_image"] = True
    obs.index = [f"s{i}" for i in range(len(obs))]
    return obs, obs[["x"]].to_numpy()


def test_lopo_knn_transfer_by_hand(caplog):
    obs, x = _transfer_case()
    folds = patient_folds(obs)
    with caplog.at_level(logging.WARNING):
        table = lopo_knn_transfer({f: x for f in folds["fold"].unique()}, obs, folds, k=3)
    assert list(table.columns) == list(TRANSFER_COLUMNS)
    rows = table.set_index("held_out_patient")

    # A and B: perfectly separable -> 1.0; they lack the three other tissue classes.
    for p in "AB":
        assert rows.loc[p, ["accuracy", "macro_f1", "balanced_accuracy"]].tolist() == [1.0, 1.0, 1.0]
        assert rows.loc[p, "classes_absent"] == ";".join([CIS, BG, CT])
    assert rows.loc["A", "n_train"] == 15 + 5 and rows.loc["A", "n_test"] == 15  # B + C's classified spots

    # C: true [IC, IC, IC, AT, AT], predicted [IC, IC, II, AT, IC]; present classes IC, AT.
    # IC: P = 2/3, R = 2/3; AT: P = 1, R = 1/2 -> F1 2/3 each; II (absent) is not averaged in.
    c = rows.loc["C"]
    assert (c["n_train"], c["n_test"]) == (30, 5)
    assert c["accuracy"] == pytest.approx(3 / 5)
    assert c["macro_f1"] == pytest.approx(2 / 3)
    assert c["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert c["classes_absent"] == ";".join([CIS, II, BG, CT])

    # D has no classified spot: a row with NaN metrics, logged, not an error.
    d = rows.loc["D"]
    assert d["n_test"] == 0 and d[["accuracy", "macro_f1", "balanced_accuracy"]].isna().all()
    assert d["classes_absent"] == ";".join(TISSUE_CLASSES)
    assert "holdout_D" in caplog.text


def test_lopo_knn_transfer_checks_its_inputs():
    obs, x = _transfer_case()
    folds = patient_folds(obs)
    with pytest.raises(KeyError, match="holdout_A"):
        lopo_knn_transfer({}, obs, folds)
    with pytest.raises(ValueError, match="expected"):
        lopo_knn_transfer({f: x[:-1] for f in folds["fold"].unique()}, obs, folds)


def test_majority_transfer_by_hand():
    labels = {
        "A": [IC, IC, IC, AT, "unlabelled", "unlabelled"],
        "B": [AT, II],
        "C": [AT, AT, IC, "undetermined"],
    }
    obs = pd.DataFrame(
        [(p, lab) for p, labs in labels.items() for lab in labs], columns=["patient", "label"]
    ).assign(has_image=True)
    table = majority_transfer(obs, patient_folds(obs)).set_index("held_out_patient")
    # holdout_A: train B + C = AT 3, IC 1, II 1 -> AT. A's truth IC x3, AT x1.
    # IC: F1 0; AT: P 1/4, R 1 -> F1 0.4; macro over {IC, AT} = 0.2; balanced = (0 + 1) / 2.
    assert table.loc["A", ["n_train", "n_test"]].tolist() == [5, 4]
    assert table.loc["A", ["accuracy", "macro_f1", "balanced_accuracy"]].tolist() == pytest.approx(
        [0.25, 0.2, 0.5]
    )
    # holdout_B: train A + C = IC 4, AT 3 -> IC. B's truth AT, II: nothing right.
    assert table.loc["B", ["accuracy", "macro_f1", "balanced_accuracy"]].tolist() == [0.0, 0.0, 0.0]
    # holdout_C: train A + B = IC 3, AT 2, II 1 -> IC. C's truth AT, AT, IC.
    # IC: P 1/3, R 1 -> F1 0.5; AT: 0 -> macro 0.25; balanced (1 + 0) / 2.
    assert table.loc["C", ["accuracy", "macro_f1", "balanced_accuracy"]].tolist() == pytest.approx(
        [1 / 3, 0.25, 0.5]
    )
    assert table.loc["C", "classes_absent"] == ";".join([CIS, II, BG, CT])


def test_summarise_and_paired_differences_by_hand():
    a = pd.DataFrame(
        {
            "fold": ["f1", "f2", "f3", "f4"],
            "n_test": [10, 10, 10, 0],
            "accuracy": [0.5, 0.7, 0.9, np.nan],
            "macro_f1": [0.5, 0.6, 0.7, np.nan],
            "balanced_accuracy": [0.4, 0.4, 0.4, np.nan],
        }
    )
    summary = summarise_transfer(a)
    assert summary["n_folds"] == 3
    assert summary["lopo_knn_accuracy"] == pytest.approx(0.7) and summary[
        "lopo_knn_accuracy_sd"
    ] == pytest.approx(0.2)
    assert summary["lopo_knn_macro_f1"] == pytest.approx(0.6) and summary[
        "lopo_knn_macro_f1_sd"
    ] == pytest.approx(0.1)
    assert summary["lopo_knn_balanced_accuracy_sd"] == pytest.approx(0.0)
    assert math.isnan(summarise_transfer(a.iloc[:1])["lopo_knn_accuracy_sd"])

    # Matched on fold, whatever the row order; f4 (NaN in a) is left out.
    b = pd.DataFrame({"fold": ["f4", "f3", "f2", "f1"], "macro_f1": [0.3, 0.5, 0.7, 0.4]})
    diff = paired_fold_differences(a, b)
    # a - b = f1 +0.1, f2 -0.1, f3 +0.2
    assert (diff["n_folds"], diff["n_a_better"], diff["n_b_better"]) == (3, 2, 1)
    assert diff["mean_difference"] == pytest.approx(0.2 / 3)
    assert diff["sd_difference"] == pytest.approx(np.std([0.1, -0.1, 0.2], ddof=1))
