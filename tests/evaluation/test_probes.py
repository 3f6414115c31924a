"""Probes on frozen image features of one leave-one-patient-out fold."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import NearestNeighbors

from tpir_kedro.cohort.schema import TISSUE_CLASSES
from tpir_kedro.evaluation import probes as probes_module
from tpir_kedro.evaluation.probes import (
    CONFUSION_COLUMNS,
    DEFAULT_CS,
    FALLBACK_C,
    PROBE_COLUMNS,
    evaluate_probes,
    fit_fold_probes,
    fit_knn_probe,
    fit_logistic_probe,
    majority_rows,
    standardise,
)

IC, CIS, II, BG, CT, AT = TISSUE_CLASSES
FAST_CS = (0.01, 1.0)  # two candidates keep the inner LOPO cheap; DEFAULT_CS is exercised once


def _cohort(separable: bool, patients=("A", "B", "C", "D"), classes=(IC, II, AT), n_per=20, d=8, seed=0):
    """n_per spots per (patient, class); class c shifts feature c by 6 sd when ``separable``.

    Each patient also gets a feature offset (a batch effect) and 5 'unlabelled' spots far away.
    """
    rng = np.random.default_rng(seed)
    x, y, p = [], [], []
    for i, patient in enumerate(patients):
        for c, label in enumerate(classes):
            block = rng.normal(size=(n_per, d))
            block[:, -1] += 0.5 * i
            if separable:
                block[:, c] += 6.0
            x.append(block)
            y += [label] * n_per
            p += [patient] * n_per
        x.append(rng.normal(loc=50.0, size=(5, d)))
        y += ["unlabelled"] * 5
        p += [patient] * 5
    return np.vstack(x), np.array(y, dtype=object), np.array(p, dtype=object)


# --------------------------------------------------------------------------------------------
# Standardisation
# --------------------------------------------------------------------------------------------


def test_standardise_uses_training_moments_only():
    x_train = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [5.0, 5.0, 6.0]])
    x_test = np.array([[3.0, 7.0, 10.0]])
    tr, te = standardise(x_train, x_test)
    sd = np.sqrt(8 / 3)  # population sd of (1, 3, 5) and of (2, 4, 6)
    np.testing.assert_allclose(tr.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(tr[:, [0, 2]].std(axis=0), 1)
    np.testing.assert_allclose(tr[:, 1], 0)  # constant column: centred, sd taken as 1
    np.testing.assert_allclose(te, [[0.0, 2.0, (10 - 4) / sd]])
    # The test rows never move the moments.
    tr2, _ = standardise(x_train, 1e6 * np.ones((4, 3)))
    np.testing.assert_array_equal(tr, tr2)
    with pytest.raises(ValueError, match="test features"):
        standardise(x_train, np.ones((2, 2)))


def test_logistic_probe_standardises_inside_every_inner_split(monkeypatch):
    """Each inner split (and the final fit) z-scores with its own training rows' moments."""
    x, y, p = _cohort(separable=True, patients=("A", "B", "C"))
    keep = y != "unlabelled"
    x, y, p = x[keep], y[keep], p[keep]
    seen_rows = []
    moments = probes_module._moments

    def spy(x_train):
        seen_rows.append(len(x_train))
        return moments(x_train)

    monkeypatch.setattr(probes_module, "_moments", spy)
    probe = fit_logistic_probe(x, y, p, Cs=FAST_CS)
    n, n_patient = len(y), len(y) // 3
    # 3 inner splits (one standardisation each, shared along the C path), each on the two other
    # patients; then one fit on all three.
    assert seen_rows == [n - n_patient] * 3 + [n]
    np.testing.assert_allclose(probe.pipeline[0].mean_, x.mean(axis=0))


# --------------------------------------------------------------------------------------------
# Probes on separable / noise features
# --------------------------------------------------------------------------------------------


def test_separable_features_score_near_one_and_record_C():
    x, y, p = _cohort(separable=True)
    rows, confusion = evaluate_probes(x, y, p, "D", Cs=DEFAULT_CS)
    table = pd.DataFrame(rows)
    assert list(table.columns) == list(PROBE_COLUMNS) and table["probe"].tolist() == ["logistic", "knn"]
    for row in rows:
        assert (row["n_train"], row["n_test"]) == (3 * 3 * 20, 3 * 20)  # unlabelled spots left out
        assert row["accuracy"] > 0.95 and row["macro_f1"] > 0.95 and row["balanced_accuracy"] > 0.95
        assert row["classes_absent"] == ";".join([CIS, BG, CT])
    logistic, knn = rows
    assert logistic["chosen_C"] in DEFAULT_CS and math.isnan(knn["chosen_C"])

    assert list(confusion.columns) == list(CONFUSION_COLUMNS)
    for probe, table in confusion.groupby("probe"):
        assert table["count"].sum() == 60
        assert (
            set(table["true"]) <= {IC, II, AT}
            and len(table) == len(set(table["true"]) | set(table["predicted"])) ** 2
        )
        diagonal = table.loc[table["true"] == table["predicted"], "count"].sum()
        assert diagonal / 60 == pytest.approx([r for r in rows if r["probe"] == probe][0]["accuracy"])


def test_logistic_probe_reports_inner_scores():
    x, y, p = _cohort(separable=True)
    train = (p != "D") & (y != "unlabelled")
    probe = fit_logistic_probe(x[train], y[train], p[train], Cs=DEFAULT_CS)
    assert set(probe.inner_scores) == set(DEFAULT_CS) and all(
        0 <= s <= 1 for s in probe.inner_scores.values()
    )
    assert probe.inner_scores[probe.chosen_C] == max(probe.inner_scores.values())
    assert probe.inner_patients == ("A", "B", "C")
    assert list(probe.classes_) == sorted([IC, II, AT])
    proba = probe.predict_proba(x[~train][:5])
    assert proba.shape == (5, 3) and np.allclose(proba.sum(axis=1), 1)


def test_noise_features_score_near_chance():
    x, y, p = _cohort(separable=False, n_per=60, d=6, seed=1)
    rows, _ = evaluate_probes(x, y, p, "B", Cs=FAST_CS)
    for row in rows:  # three balanced classes: chance is 1/3
        assert 0.2 < row["accuracy"] < 0.47, row
        assert 0.2 < row["balanced_accuracy"] < 0.47, row


# --------------------------------------------------------------------------------------------
# A class absent from the held-out patient
# --------------------------------------------------------------------------------------------


def _tiny_case():
    """2-D features; the training set is centred with equal spread per feature, so z-scoring keeps
    each direction: IC along (1, 0), AT along (0, 1), II along (-1, -1).

    Held-out C: IC at (3, 0), (2, 0.1) and (-3, -3) (-> II, a class C lacks); AT at (0, 3) and
    (3, 0.2) (-> IC). Plus an undetermined spot, never scored.
    """
    rows = []
    for patient, eps in (("A", 0.0), ("B", 0.01)):
        rows += [
            (patient, IC, 3.0 + eps, 0.0),
            (patient, AT, 0.0, 3.0 + eps),
            (patient, II, -3.0 - eps, -3.0 - eps),
        ]
        rows += [
            (patient, IC, 3.0 - eps, 0.0),
            (patient, AT, 0.0, 3.0 - eps),
            (patient, II, -3.0 + eps, -3.0 + eps),
        ]
    rows += [
        ("C", IC, 3.0, 0.0),
        ("C", IC, 2.0, 0.1),
        ("C", IC, -3.0, -3.0),
        ("C", AT, 0.0, 3.0),
        ("C", AT, 3.0, 0.2),
    ]
    rows += [("C", "undetermined", 0.0, 3.0)]
    table = pd.DataFrame(rows, columns=["patient", "label", "f0", "f1"])
    return (
        table[["f0", "f1"]].to_numpy(),
        table["label"].to_numpy(dtype=object),
        table["patient"].to_numpy(dtype=object),
    )


def test_absent_class_scored_over_present_classes_by_hand(caplog):
    x, y, p = _tiny_case()
    with caplog.at_level(logging.INFO, logger="tpir_kedro.evaluation.probes"):
        rows, confusion = evaluate_probes(x, y, p, "C", probes=("knn",), k=1)
    (knn,) = rows
    # true [IC, IC, IC, AT, AT], predicted [IC, IC, II, AT, IC].
    # IC: P 2/3, R 2/3 -> F1 2/3; AT: P 1, R 1/2 -> F1 2/3. II (absent from C) is not averaged in:
    # over all three predicted classes macro-F1 would be (2/3 + 2/3 + 0) / 3 = 4/9.
    assert (knn["n_train"], knn["n_test"]) == (12, 5)
    assert knn["accuracy"] == pytest.approx(3 / 5)
    assert knn["macro_f1"] == pytest.approx(2 / 3)
    assert knn["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert knn["classes_absent"] == ";".join([CIS, II, BG, CT])
    assert "held-out patient C has no" in caplog.text and "immune infiltrate" in caplog.text

    counts = confusion.set_index(["true", "predicted"])["count"]
    assert set(confusion["true"]) == {IC, II, AT}  # II occurs as a prediction only
    assert (counts[(IC, IC)], counts[(IC, II)], counts[(AT, AT)], counts[(AT, IC)]) == (2, 1, 1, 1)
    assert counts.sum() == 5

    # Majority floor: training IC 4, II 4, AT 4 -> tie -> IC (first in TISSUE_CLASSES).
    # IC: P 3/5, R 1 -> F1 3/4; AT: F1 0 -> macro 3/8; balanced (1 + 0) / 2.
    (majority,) = majority_rows(y, p, "C")
    assert list(majority) == list(PROBE_COLUMNS) and majority["probe"] == "majority"
    assert [majority[m] for m in ("accuracy", "macro_f1", "balanced_accuracy")] == pytest.approx(
        [3 / 5, 3 / 8, 1 / 2]
    )
    assert majority["classes_absent"] == knn["classes_absent"] and math.isnan(majority["chosen_C"])


def test_held_out_patient_without_classified_spots_gives_nan_rows(caplog):
    x, y, p = _tiny_case()
    y = np.where(p == "C", "unlabelled", y)
    with caplog.at_level(logging.WARNING):
        rows, confusion = evaluate_probes(x, y, p, "C", Cs=FAST_CS)
        rows += majority_rows(y, p, "C")
    for row in rows:
        assert row["n_test"] == 0 and all(
            math.isnan(row[m]) for m in ("accuracy", "macro_f1", "balanced_accuracy")
        )
        assert row["classes_absent"] == ";".join(TISSUE_CLASSES)
    assert confusion.empty and list(confusion.columns) == list(CONFUSION_COLUMNS)
    assert "no classified spot in the held-out patient" in caplog.text


# --------------------------------------------------------------------------------------------
# The held-out patient never reaches a fit
# --------------------------------------------------------------------------------------------


def test_held_out_labels_and_features_never_reach_the_fit():
    x, y, p = _cohort(separable=True)
    held = p == "D"
    rng = np.random.default_rng(5)
    # Shuffle the held-out patient's tissue classes among its classified spots (so the same spots
    # are scored), some even to a class no training patient has; move its features too.
    scored = np.flatnonzero(held & (y != "unlabelled"))
    y_perm = y.copy()
    y_perm[scored] = rng.permutation(y[scored])
    y_perm[scored[:10]] = BG
    x_perm = x.copy()
    x_perm[held] += rng.normal(scale=10, size=(int(held.sum()), x.shape[1]))

    original = fit_fold_probes(x, y, p, "D", Cs=FAST_CS)
    permuted = fit_fold_probes(x_perm, y_perm, p, "D", Cs=FAST_CS)
    a, b = original["logistic"], permuted["logistic"]
    assert "D" not in a.inner_patients and a.inner_patients == ("A", "B", "C")
    assert a.chosen_C == b.chosen_C and a.inner_scores == b.inner_scores
    np.testing.assert_array_equal(a.pipeline[-1].coef_, b.pipeline[-1].coef_)
    np.testing.assert_array_equal(a.pipeline[-1].intercept_, b.pipeline[-1].intercept_)
    np.testing.assert_array_equal(a.pipeline[0].mean_, b.pipeline[0].mean_)
    knn_a, knn_b = original["knn"], permuted["knn"]
    np.testing.assert_array_equal(knn_a[-1]._fit_X, knn_b[-1]._fit_X)
    np.testing.assert_array_equal(knn_a[-1].classes_, knn_b[-1].classes_)

    # Same fit -> the held-out spots get the same predictions, whatever their labels say.
    _, conf = evaluate_probes(x, y, p, "D", Cs=FAST_CS)
    _, conf_perm = evaluate_probes(x, y_perm, p, "D", Cs=FAST_CS)
    predicted = conf.groupby(["probe", "predicted"])["count"].sum()
    predicted_perm = conf_perm.groupby(["probe", "predicted"])["count"].sum()
    pd.testing.assert_series_equal(predicted[predicted > 0], predicted_perm[predicted_perm > 0])


def test_inner_lopo_gets_only_training_patients(monkeypatch):
    x, y, p = _cohort(separable=True)
    calls = []
    fit = probes_module.fit_logistic_probe

    def spy(x_, y_, groups, **kwargs):
        calls.append(set(groups))
        assert len(x_) == len(y_) == len(groups)
        return fit(x_, y_, groups, **kwargs)

    monkeypatch.setattr(probes_module, "fit_logistic_probe", spy)
    evaluate_probes(x, y, p, "B", probes=("logistic",), Cs=FAST_CS)
    assert calls == [{"A", "C", "D"}]


# --------------------------------------------------------------------------------------------
# Fallbacks and checks
# --------------------------------------------------------------------------------------------


def test_logistic_probe_falls_back_to_C_1(caplog):
    x, y, p = _cohort(separable=True, patients=("A", "B"))
    train = (p == "A") & (y != "unlabelled")
    with caplog.at_level(logging.WARNING):
        one_patient = fit_logistic_probe(x[train], y[train], p[train], Cs=FAST_CS)
    assert one_patient.chosen_C == FALLBACK_C and all(
        math.isnan(s) for s in one_patient.inner_scores.values()
    )
    assert "fewer than two training patients" in caplog.text

    # Two patients, one class each: no inner split has two classes to fit.
    single = np.array([(IC if q == "A" else AT) for q in p], dtype=object)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        unscorable = fit_logistic_probe(x, single, p, Cs=FAST_CS)
    assert unscorable.chosen_C == FALLBACK_C
    assert "no inner leave-one-patient-out split could be scored" in caplog.text
    with pytest.raises(ValueError, match="two classes"):
        fit_logistic_probe(x[train], np.full(int(train.sum()), IC), p[train])


def test_evaluate_probes_checks_its_inputs():
    x, y, p = _tiny_case()
    with pytest.raises(ValueError, match="unknown probe"):
        evaluate_probes(x, y, p, "C", probes=("svm",))
    with pytest.raises(ValueError, match="one label and patient per row"):
        evaluate_probes(x[:-1], y, p, "C")
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_probes(np.where(x == 0, np.nan, x), y, p, "C")


# --------------------------------------------------------------------------------------------
# kNN probe
# --------------------------------------------------------------------------------------------


def test_knn_cosine_neighbours_ignore_a_vectors_scale():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 5))
    x -= x.mean(axis=0)  # training mean 0: z-scoring a scaled query scales its z-score alike
    y = np.array([IC, AT] * 20, dtype=object)
    knn = fit_knn_probe(x, y, k=5)
    query = rng.normal(size=(6, 5))
    scaler, clf = knn[0], knn[-1]
    near = clf.kneighbors(scaler.transform(query), return_distance=False)
    for scale in (0.01, 7.0):
        np.testing.assert_array_equal(
            clf.kneighbors(scaler.transform(scale * query), return_distance=False), near
        )
        np.testing.assert_array_equal(knn.predict(scale * query), knn.predict(query))
    # Euclidean neighbours of the same z-scored queries do move with the scale.
    euclid = NearestNeighbors(n_neighbors=5).fit(scaler.transform(x))
    near_euclid = euclid.kneighbors(scaler.transform(query), return_distance=False)
    assert not np.array_equal(
        euclid.kneighbors(scaler.transform(7.0 * query), return_distance=False), near_euclid
    )


def test_knn_k_lowered_to_training_size():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    knn = fit_knn_probe(x, np.array([IC, AT, IC], dtype=object), k=15)
    assert knn[-1].n_neighbors == 3
    assert knn.predict(np.array([[0.0, 5.0]])).tolist() == [IC]  # 2 of the 3 votes
