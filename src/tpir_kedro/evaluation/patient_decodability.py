"""How well the patient can be read off a representation: the batch-effect mechanism check.

If an image encoder learnt patient identity from its gene side (the failure a batch-agnostic gene
encoder is meant to prevent), a linear classifier recovers the patient from its embeddings of the
training patients' spots. Patients differ in tissue composition too, so a pure tissue encoder would
also "decode" the patient through the classes; the check therefore balances classes: within every
tissue class each patient contributes the same number of spots, and chance is 1 / n_patients.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tpir_kedro.cohort.schema import is_classified
from tpir_kedro.evaluation.folds import train_patients


def class_balanced_rows(
    labels: np.ndarray, patients: np.ndarray, *, min_per_patient: int = 3, seed: int = 0
) -> np.ndarray:
    """Indices of a subsample in which every patient has the same number of spots of every class.

    A class enters with m spots per patient, m its smallest count over the patients, when m is at
    least ``min_per_patient``; classes some patient (nearly) lacks are left out. Unclassified spots
    never enter.

    Parameters
    ----------
    labels, patients
        (n,) tissue class and patient of each spot.

    Returns
    -------
        (n_kept,) int64 sorted indices into ``labels``.
    """
    labels, patients = np.asarray(labels).astype(str), np.asarray(patients).astype(str)
    rng = np.random.default_rng(seed)
    known = is_classified(labels)
    names = np.unique(patients)
    keep = []
    for c in np.unique(labels[known]):
        members = [np.flatnonzero(known & (labels == c) & (patients == p)) for p in names]
        m = min(len(rows) for rows in members)
        if m >= min_per_patient:
            keep += [rng.choice(rows, m, replace=False) for rows in members]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def patient_decodability(
    features: np.ndarray,
    labels: np.ndarray,
    patients: np.ndarray,
    *,
    n_splits: int = 5,
    C: float = 1.0,
    min_per_patient: int = 3,
    seed: int = 0,
) -> dict:
    """Cross-validated accuracy of a logistic regression predicting the patient, on class-balanced spots.

    Parameters
    ----------
    features
        (n, d) representation of each spot (a fold's training patients only: never the held-out one).
    labels, patients
        (n,) tissue class and patient of each spot.

    Returns
    -------
        ``accuracy`` (NaN when fewer than two patients or no class every patient has), ``chance``
        (1 / n_patients), ``n_spots``, ``n_patients``, ``n_classes`` (the balanced classes).
    """
    features = np.asarray(features, dtype=np.float64)
    patients = np.asarray(patients).astype(str)
    n_patients = len(np.unique(patients))
    rows = class_balanced_rows(labels, patients, min_per_patient=min_per_patient, seed=seed)
    out = {
        "accuracy": float("nan"),
        "chance": 1.0 / n_patients if n_patients else float("nan"),
        "n_spots": int(len(rows)),
        "n_patients": n_patients,
        "n_classes": int(len(np.unique(np.asarray(labels).astype(str)[rows]))),
    }
    if n_patients < 2 or len(rows) == 0:
        return out
    x, y = features[rows], patients[rows]
    splits = min(int(n_splits), int(np.unique(y, return_counts=True)[1].min()))
    if splits < 2:
        return out
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))
    folds = StratifiedKFold(splits, shuffle=True, random_state=seed)
    predicted = cross_val_predict(model, x, y, cv=folds)
    out["accuracy"] = float((predicted == y).mean())
    return out


def fold_patient_decodability(
    embeddings: dict[str, np.ndarray], obs: pd.DataFrame, folds: pd.DataFrame, *, seed: int = 0
) -> pd.DataFrame:
    """The same check on a fold-fitted representation of every spot, read on each fold's training patients.

    Used for the gene side: what a fold's gene encoder hands the image encoder as its target. A
    contrastive image encoder can only learn the patient from its gene side if the patient can be
    read off that side, so this is the image side's check one step upstream (same classifier, same
    class balancing, the same patients).

    Parameters
    ----------
    embeddings
        fold key -> (n_obs, d) embedding of every spot of ``obs`` (row-aligned) by that fold's model.
    obs
        cohort obs (``patient``, ``label``), n_obs rows.
    folds
        the fold table (:func:`tpir_kedro.evaluation.folds.patient_folds`).

    Returns
    -------
        One row per fold of ``embeddings`` found in ``folds``: ``fold``, ``patient_decodability``
        (the accuracy), ``patient_decodability_chance``, ``n_decodability_spots``.
    """
    patients = obs["patient"].astype(str).to_numpy()
    labels = obs["label"].astype(str).to_numpy()
    rows = []
    for fold in pd.unique(folds["fold"].astype(str)):
        if fold not in embeddings:
            continue
        train = np.isin(patients, train_patients(folds, fold))  # the held-out patient never enters
        score = patient_decodability(
            np.asarray(embeddings[fold])[train], labels[train], patients[train], seed=seed
        )
        rows.append(
            {
                "fold": fold,
                "patient_decodability": score["accuracy"],
                "patient_decodability_chance": score["chance"],
                "n_decodability_spots": score["n_spots"],
            }
        )
    return pd.DataFrame(
        rows, columns=["fold", "patient_decodability", "patient_decodability_chance", "n_decodability_spots"]
    )
