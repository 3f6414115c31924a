from __future__ import annotations

import pandas as pd
import pytest

from tpir_kedro.evaluation.folds import (
    fold_key,
    held_out_units,
    patient_folds,
    sections_as_patients,
    train_patients,
)


def _obs(patients):
    return pd.DataFrame(
        {
            "patient": [p for p in patients for _ in range(3)],
            "label": ["invasive cancer", "unlabelled", "undetermined"] * len(patients),
            "has_image": [True, False, True] * len(patients),
        }
    )


def test_every_patient_is_held_out_once_and_never_on_both_sides():
    folds = patient_folds(_obs(["A", "B", "C", "D"]))
    assert sorted(folds["fold"].unique()) == [fold_key(p) for p in "ABCD"]
    for fold, rows in folds.groupby("fold"):
        test = set(rows.loc[rows["role"] == "test", "patient"])
        train = set(rows.loc[rows["role"] == "train", "patient"])
        assert len(test) == 1 and not (test & train) and test | train == set("ABCD")
        assert train_patients(folds, fold) == sorted(train)
    # Only classified spots count as labelled ('undetermined' and 'unlabelled' do not).
    assert (
        set(folds["n_labelled"]) == {1} and set(folds["n_spots"]) == {3} and set(folds["n_with_image"]) == {2}
    )


def test_held_out_subset_and_errors():
    folds = patient_folds(_obs(["A", "B", "C"]), held_out=["B"])
    assert list(folds["fold"].unique()) == ["holdout_B"]
    with pytest.raises(ValueError, match="at least two patients"):
        patient_folds(_obs(["A"]))
    with pytest.raises(ValueError, match=r"\['Z'\]"):
        patient_folds(_obs(["A", "B"]), held_out=["Z"])
    with pytest.raises(KeyError, match="holdout_Q"):
        train_patients(folds, "holdout_Q")


def test_a_held_out_section_is_its_own_patient_and_only_its_fold_runs():
    obs = _obs(["B", "C", "C"]).assign(section=["B1"] * 3 + ["C5"] * 3 + ["C6"] * 3)
    split = sections_as_patients(obs, "C6")
    assert list(split["patient"].astype(str)) == ["B"] * 3 + ["C"] * 3 + ["C6"] * 3
    assert list(split["source_patient"].astype(str)) == ["B"] * 3 + ["C"] * 6
    folds = patient_folds(split, held_out_units({"held_out_patients": None, "held_out_sections": "C6"}))
    assert list(folds["fold"].unique()) == ["holdout_C6"]
    # The rest of patient C trains; that is the point of a section-level hold-out.
    assert train_patients(folds, "holdout_C6") == ["B", "C"]
    assert held_out_units({"held_out_patients": ["B"], "held_out_sections": ["C6"]}) == ["C6", "B"]
    assert held_out_units({"held_out_patients": None}) is None
    assert sections_as_patients(obs, []) is obs
    with pytest.raises(ValueError, match=r"section\(s\) \['Z9'\]"):
        sections_as_patients(obs, ["Z9"])
