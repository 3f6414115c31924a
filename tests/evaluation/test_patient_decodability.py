"""The mechanism check: chance without a patient signal (even when patients differ in composition),
high with one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tpir_kedro.cohort.schema import TISSUE_CLASSES
from tpir_kedro.evaluation.folds import patient_folds
from tpir_kedro.evaluation.patient_decodability import (
    class_balanced_rows,
    fold_patient_decodability,
    patient_decodability,
)

N_PATIENTS, DIM = 5, 16


def spots(seed=0):
    """Patients with very different class compositions; features carry the class, plus noise."""
    rng = np.random.default_rng(seed)
    labels, patients = [], []
    for p in range(N_PATIENTS):
        weights = rng.dirichlet(np.full(3, 0.7)) * 0.7 + 0.1
        labels.append(rng.choice(TISSUE_CLASSES[:3], 120, p=weights / weights.sum()))
        patients.append(np.full(120, f"P{p}"))
    labels, patients = np.concatenate(labels), np.concatenate(patients)
    class_means = rng.normal(0, 3, (3, DIM))
    codes = np.array([TISSUE_CLASSES.index(c) for c in labels])
    features = class_means[codes] + rng.normal(0, 1, (len(labels), DIM))
    return features, labels, patients, rng


def test_class_balanced_rows_give_every_patient_the_same_count_per_class():
    _, labels, patients, _ = spots()
    rows = class_balanced_rows(labels, patients)
    counts = {(c, p): 0 for c in np.unique(labels) for p in np.unique(patients)}
    for c, p in zip(labels[rows], patients[rows]):
        counts[(c, p)] += 1
    per_class = {c: {counts[(c, p)] for p in np.unique(patients)} for c in np.unique(labels)}
    assert all(len(v) == 1 for v in per_class.values())


def test_chance_without_a_patient_signal_even_when_compositions_differ():
    features, labels, patients, _ = spots()
    # The compositions differ, so the class alone would give the patient away; balancing removes that.
    score = patient_decodability(features, labels, patients)
    assert score["chance"] == pytest.approx(1 / N_PATIENTS)
    assert score["n_patients"] == N_PATIENTS and score["n_classes"] == 3
    assert score["accuracy"] < 1 / N_PATIENTS + 0.1


def test_high_when_embeddings_carry_the_patient():
    features, labels, patients, rng = spots()
    offsets = rng.normal(0, 1.5, (N_PATIENTS, DIM))
    features = features + offsets[np.searchsorted(np.unique(patients), patients)]
    assert patient_decodability(features, labels, patients)["accuracy"] > 0.8


def test_undefined_without_two_patients_or_a_shared_class():
    features, labels, patients, _ = spots()
    one = patients == "P0"
    assert np.isnan(patient_decodability(features[one], labels[one], patients[one])["accuracy"])
    disjoint = np.where(patients == "P0", "invasive cancer", "adipose tissue")
    assert np.isnan(patient_decodability(features, disjoint, patients)["accuracy"])


def test_fold_embeddings_are_read_on_the_training_patients_only():
    features, labels, patients, rng = spots()
    obs = pd.DataFrame({"patient": patients, "label": labels, "has_image": True})
    folds = patient_folds(obs, held_out=["P0", "P1"])
    offsets = rng.normal(0, 1.5, (N_PATIENTS, DIM))
    coded = features + offsets[np.searchsorted(np.unique(patients), patients)]
    # Fold P0's embedding carries the patient; fold P1's does not. The held-out patient's own rows
    # are garbage in both: were they read, fold P1 would decode P1 from them.
    garbage = {"holdout_P0": coded.copy(), "holdout_P1": features.copy()}
    garbage["holdout_P0"][patients == "P0"] = 99.0
    garbage["holdout_P1"][patients == "P1"] = rng.normal(50, 1, ((patients == "P1").sum(), DIM))
    table = fold_patient_decodability(garbage, obs, folds).set_index("fold")
    assert list(table.index) == ["holdout_P0", "holdout_P1"]
    assert (table["patient_decodability_chance"] == 1 / (N_PATIENTS - 1)).all()
    assert table.loc["holdout_P0", "patient_decodability"] > 0.8
    assert table.loc["holdout_P1", "patient_decodability"] < 1 / (N_PATIENTS - 1) + 0.1
