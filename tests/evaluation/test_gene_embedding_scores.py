"""Gene-embedding scores: robustness index, label transfer that never reads the scored patient's
labels, setting choice that never reads the scored patient, and the patient read-outs."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from tpir_kedro.cohort.schema import TISSUE_CLASSES
from tpir_kedro.evaluation.embedding_metrics import paired_fold_differences
from tpir_kedro.evaluation.gene_embedding_scores import (
    LABEL_TRANSFER_COLUMNS,
    SETTING_COLUMNS,
    choose_setting,
    held_out_predictions,
    label_transfer,
    patient_readouts,
    robustness_index,
)
from tpir_kedro.evaluation.held_out_scores import classification_metrics

IC, CIS, II, BG, CT, AT = TISSUE_CLASSES
PATIENTS = ("A", "B", "C", "D")
CLASSES = (IC, II, AT)
N = 8  # spots per (patient, class)
ONE_C = (1.0,)  # one logistic C: the inner C search is the probes' business, and slow


def cohort() -> pd.DataFrame:
    """4 patients x 3 classes x N spots, every patient with every class."""
    patient = np.repeat(PATIENTS, len(CLASSES) * N)
    label = np.tile(np.repeat(CLASSES, N), len(PATIENTS))
    return pd.DataFrame({"patient": patient, "label": label})


def one_hot(values, names, scale: float) -> np.ndarray:
    return scale * (np.asarray(values)[:, None] == np.asarray(names)[None, :]).astype(float)


def embed(obs: pd.DataFrame, class_scale=10.0, patient_scale=1.0, noise=0.01, seed=0) -> np.ndarray:
    """Class centres ``class_scale`` apart (dims 0-2), patients ``patient_scale`` from the centre on a
    circle (dims 3-4: every patient's offset lies within the range of the others', so a held-out
    patient does not land far outside the training patients' standardised range).

    With the defaults each spot's nearest spots are its own patient's of its class, then the other
    patients' of its class: a leak of a patient's own labels into its read-out would show.
    """
    rng = np.random.default_rng(seed)
    angle = 2 * np.pi * np.searchsorted(PATIENTS, obs["patient"]) / len(PATIENTS)
    x = np.hstack(
        [
            one_hot(obs["label"], CLASSES, class_scale),
            patient_scale * np.column_stack([np.cos(angle), np.sin(angle)]),
        ]
    )
    return x + rng.normal(scale=noise, size=x.shape)


def transductive(x: np.ndarray) -> dict[str, np.ndarray]:
    return dict.fromkeys(PATIENTS, x)


# --------------------------------------------------------------------------------------------
# robustness_index
# --------------------------------------------------------------------------------------------


def test_robustness_index_counts_by_hand():
    # k = 2 on a line: SO from spots 0 (->1), 1 (->0), 3 (->2); OS from 0 (->2), 2 (->0), 3 (->1).
    x = np.array([[0.0], [1.0], [1.8], [5.0]])
    out = robustness_index(x, [IC, IC, AT, AT], ["A", "B", "A", "B"], k=2)
    assert out == {
        "robustness_index": 0.5,
        "n_same_class_other_patient": 3,
        "n_other_class_same_patient": 3,
        "n_spots": 4,
        "k": 2,
    }


def test_robustness_index_is_one_when_class_decides_and_zero_when_patient_does():
    obs = cohort()
    labels, patients = obs["label"].to_numpy(), obs["patient"].to_numpy()
    by_class = embed(obs, class_scale=10, patient_scale=0, noise=0.1)
    by_patient = embed(obs, class_scale=0, patient_scale=10, noise=0.1)
    mixed = embed(obs, class_scale=3, patient_scale=3, noise=1.0)
    assert robustness_index(by_class, labels, patients)["robustness_index"] == 1.0
    assert robustness_index(by_patient, labels, patients)["robustness_index"] == 0.0
    between = robustness_index(mixed, labels, patients)
    assert 0.1 < between["robustness_index"] < 0.9
    assert between["n_spots"] == len(obs) and between["k"] == 10


def test_robustness_index_ignores_unclassified_spots_and_caps_k():
    obs = cohort()
    labels, patients = obs["label"].to_numpy(), obs["patient"].to_numpy()
    x = embed(obs, class_scale=10, patient_scale=0, noise=0.1)
    # Undetermined spots of other patients sitting on every spot: counted, they would be OS/SO.
    x2 = np.vstack([x, x + 1e-3])
    labels2 = np.concatenate([labels, np.full(len(labels), "undetermined")])
    patients2 = np.concatenate([patients, np.roll(patients, N)])
    assert robustness_index(x2, labels2, patients2) == robustness_index(x, labels, patients)
    assert robustness_index(x, labels, patients, k=1000)["k"] == len(obs) - 1
    lone = robustness_index(x[:1], labels[:1], patients[:1])
    assert np.isnan(lone["robustness_index"]) and lone["k"] == 0


# --------------------------------------------------------------------------------------------
# label_transfer
# --------------------------------------------------------------------------------------------


def test_label_transfer_is_perfect_when_classes_separate():
    obs = cohort()
    table = label_transfer(transductive(embed(obs)), obs, knn_k=5, Cs=ONE_C)
    assert list(table.columns) == list(LABEL_TRANSFER_COLUMNS)
    assert list(table["patient"]) == [p for p in PATIENTS for _ in range(2)]
    assert list(table["readout"]) == ["knn", "logistic"] * len(PATIENTS)
    assert list(table["fold"]) == [f"holdout_{p}" for p in PATIENTS for _ in range(2)]
    assert (table["held_out_patient"] == table["patient"]).all()
    assert (table["n_test"] == len(CLASSES) * N).all() and (table["n_train"] == 3 * len(CLASSES) * N).all()
    assert np.allclose(table["macro_f1"], 1.0) and np.allclose(table["accuracy"], 1.0)
    assert table.loc[table["readout"] == "knn", "chosen_C"].isna().all()
    assert (table.loc[table["readout"] == "logistic", "chosen_C"] == 1.0).all()
    # The fold column makes the project's paired comparison apply to one read-out's rows.
    knn = table[table["readout"] == "knn"]
    assert paired_fold_differences(knn, knn)["n_folds"] == len(PATIENTS)


def test_the_held_out_patients_labels_never_reach_its_predictions():
    obs = cohort()
    x = embed(obs)  # a patient's own spots are its nearest: a leak would vote with them
    before = held_out_predictions(x, obs, "A", knn_k=5, Cs=ONE_C)
    relabelled = obs.copy()
    relabelled.loc[relabelled["patient"] == "A", "label"] = AT  # every A spot now "adipose"
    after = held_out_predictions(x, relabelled, "A", knn_k=5, Cs=ONE_C)
    for readout in ("knn", "logistic"):
        np.testing.assert_array_equal(before[readout], after[readout])
        np.testing.assert_array_equal(before[readout], obs.loc[obs["patient"] == "A", "label"])
    # So only A's truth moves A's row: its score is the old predictions against the new labels.
    table = label_transfer(transductive(x), relabelled, knn_k=5, Cs=ONE_C)
    a = table[table["patient"] == "A"].set_index("readout")
    expected = classification_metrics(np.full(len(before["knn"]), AT), before["knn"])
    for readout in ("knn", "logistic"):
        assert a.loc[readout, "macro_f1"] == pytest.approx(expected["macro_f1"])
        assert a.loc[readout, "accuracy"] == pytest.approx(1 / 3)
        assert (
            a.loc[readout, "classes_absent"]
            == "invasive cancer;cancer in situ;immune infiltrate;breast glands;connective tissue"
        )


def test_label_transfer_reads_each_patient_in_its_own_embedding():
    obs = cohort()
    good = embed(obs)
    useless = np.random.default_rng(1).normal(size=good.shape)
    table = label_transfer({**transductive(good), "D": useless}, obs, knn_k=5, Cs=ONE_C)
    f1 = table.groupby("patient")["macro_f1"].max()
    assert np.allclose(f1[["A", "B", "C"]], 1.0)
    assert f1["D"] < 0.7
    # Only the keys are scored.
    assert set(label_transfer({"B": good}, obs, knn_k=5, readouts=("knn",))["patient"]) == {"B"}


def test_unclassified_spots_are_never_labels_nor_scored():
    obs = cohort()
    x = embed(obs)
    # 'undetermined' spots of B, C, D exactly at the IC centre: nearer A's IC spots than any
    # classified spot, so as a label they would turn A's IC predictions 'undetermined'.
    n_extra = 12
    extra_obs = pd.DataFrame(
        {
            "patient": np.resize(["B", "C", "D", "A"], n_extra),
            "label": np.resize(["undetermined", "undetermined", "undetermined", "unlabelled"], n_extra),
        }
    )
    extra_x = np.zeros((n_extra, x.shape[1]))
    extra_x[:, 0] = 10.0
    with_extra = label_transfer(
        transductive(np.vstack([x, extra_x])),
        pd.concat([obs, extra_obs], ignore_index=True),
        knn_k=5,
        Cs=ONE_C,
    )
    pd.testing.assert_frame_equal(with_extra, label_transfer(transductive(x), obs, knn_k=5, Cs=ONE_C))


def test_a_patient_without_classified_spots_or_training_classes_gets_nan(caplog):
    obs = cohort()
    x = embed(obs)
    obs.loc[obs["patient"] == "A", "label"] = "undetermined"
    with caplog.at_level(logging.WARNING):
        table = label_transfer({"A": x}, obs, knn_k=5, Cs=ONE_C)
    assert table["macro_f1"].isna().all() and (table["n_test"] == 0).all()
    assert "no classified spot in the held-out patient" in caplog.text
    # One training class: kNN can still vote (it always says that class), logistic cannot be fitted.
    one_class = cohort().assign(label=lambda d: np.where(d["patient"] == "A", d["label"], IC))
    with caplog.at_level(logging.WARNING):
        table = label_transfer({"A": x}, one_class, knn_k=5, Cs=ONE_C).set_index("readout")
    assert table.loc["knn", "accuracy"] == pytest.approx(1 / 3)
    assert np.isnan(table.loc["logistic", "macro_f1"])
    assert "the model could not be fitted" in caplog.text


# --------------------------------------------------------------------------------------------
# choose_setting
# --------------------------------------------------------------------------------------------


def test_choose_setting_picks_the_setting_that_separates_classes():
    obs = cohort()
    candidates = {
        "default": embed(obs, class_scale=0, patient_scale=10, noise=1.0),
        "separating": embed(obs),
    }
    chosen, table = choose_setting(candidates, obs, "A", knn_k=5)
    assert chosen == "separating"
    assert list(table.columns) == list(SETTING_COLUMNS)
    assert list(table["setting"]) == ["default", "separating"]
    assert table["mean_inner_macro_f1"].iloc[1] == 1.0 > table["mean_inner_macro_f1"].iloc[0]
    assert (table["n_inner_patients"] == 3).all()


def test_choose_setting_never_reads_the_scored_patient():
    obs = cohort()
    candidates = {
        "default": embed(obs, class_scale=3, patient_scale=3, noise=1.0),
        "separating": embed(obs, class_scale=4, patient_scale=1, noise=1.5, seed=2),
    }
    expected = choose_setting(candidates, obs, "A", knn_k=5)
    # A's rows shuffled among themselves (still on the class centres) and its labels scrambled:
    # as training or neighbour spots they would vote wrongly for every other patient.
    rng = np.random.default_rng(3)
    rows = np.flatnonzero(obs["patient"] == "A")
    scrambled_obs = obs.copy()
    scrambled_obs.loc[rows, "label"] = rng.choice(CLASSES, len(rows))
    scrambled = {name: x.copy() for name, x in candidates.items()}
    for x in scrambled.values():
        x[rows] = x[rng.permutation(rows)]
    chosen, table = choose_setting(scrambled, scrambled_obs, "A", knn_k=5)
    assert chosen == expected[0]
    pd.testing.assert_frame_equal(table, expected[1])


def test_choose_setting_ties_go_to_the_earlier_setting(caplog):
    obs = cohort()
    x = embed(obs)
    assert choose_setting({"first": x, "second": x.copy()}, obs, "A", knn_k=5)[0] == "first"
    assert choose_setting({"second": x, "first": x.copy()}, obs, "A", knn_k=5)[0] == "second"
    # Nothing scorable (no classified spot besides A's): the default, logged.
    bare = obs.assign(label=np.where(obs["patient"] == "A", obs["label"], "unlabelled"))
    with caplog.at_level(logging.WARNING):
        chosen, table = choose_setting({"lib": x, "other": x}, bare, "A", knn_k=5)
    assert chosen == "lib" and table["mean_inner_macro_f1"].isna().all()
    assert "keeping the default 'lib'" in caplog.text


# --------------------------------------------------------------------------------------------
# patient_readouts
# --------------------------------------------------------------------------------------------


def test_patient_readouts_tell_a_tissue_embedding_from_a_patient_embedding():
    obs = cohort()
    by_class = patient_readouts(embed(obs, patient_scale=0, noise=1.0), obs, lisi_neighbors=30)
    by_patient = patient_readouts(
        embed(obs, class_scale=0, patient_scale=10, noise=1.0), obs, lisi_neighbors=30
    )
    assert set(by_class) == {
        "patient_decodability",
        "patient_decodability_chance",
        "n_decodability_spots",
        "robustness_index",
        "n_same_class_other_patient",
        "n_other_class_same_patient",
        "n_robustness_spots",
        "robustness_k",
        "ilisi",
    }
    assert by_class["patient_decodability_chance"] == 0.25
    assert by_class["patient_decodability"] < 0.5 and by_patient["patient_decodability"] == 1.0
    assert by_class["robustness_index"] == 1.0 and by_patient["robustness_index"] == 0.0
    assert by_class["ilisi"] > 0.5 and by_patient["ilisi"] < 0.1
