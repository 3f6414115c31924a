"""Probes on frozen image features, one leave-one-patient-out fold at a time.

For held-out patient P, every probe is fitted on the classified spots of the *other* patients and
scored on P's classified spots ('undetermined' and 'unlabelled' spots are never fitted or scored):

- ``logistic``: :func:`fit_logistic_probe`, L2 multinomial logistic regression on standardised
  features, its C chosen by an inner leave-one-patient-out over the training patients.
- ``knn``: :func:`fit_knn_probe`, cosine kNN (k = 15) on standardised features.
- ``majority``: :func:`majority_rows`, the training patients' most frequent class for every spot.

Standardisation lives inside each fitted probe, so it is always fitted on exactly the spots that
probe is fitted on: the training patients for the outer fit, the inner training patients for each
inner split. Neither P's labels nor P's features reach any fit.

Scores are :mod:`tpir_kedro.evaluation.held_out_scores`' (macro-F1 and balanced accuracy over the
classes present in P), as the gene side's; a class absent from P is logged, never an error.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline

from tpir_kedro.cohort.schema import TISSUE_CLASSES, is_classified
from tpir_kedro.evaluation.held_out_scores import (
    SCORE_COLUMNS,
    classes_absent,
    classification_metrics,
    held_out_scores,
    majority_class,
    unscored_reason,
)

logger = logging.getLogger(__name__)

PROBES: tuple[str, ...] = ("logistic", "knn")
MAJORITY = "majority"
PROBE_COLUMNS: tuple[str, ...] = ("probe", *SCORE_COLUMNS, "chosen_C")
CONFUSION_COLUMNS: tuple[str, ...] = ("probe", "held_out_patient", "true", "predicted", "count")
DEFAULT_CS: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0)
# sklearn's default C; used when the inner leave-one-patient-out cannot choose one.
FALLBACK_C = 1.0
# lbfgs on standardised, nearly separable features needs more than sklearn's 100 iterations at large C.
DEFAULT_MAX_ITER = 1000
KNN_METRIC = "cosine"


# --------------------------------------------------------------------------------------------
# Standardisation
# --------------------------------------------------------------------------------------------


def _moments(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and population sd (ddof=0) of (n, d) ``x_train``, each (d,).

    A feature constant over the training spots gets sd 1 (it is only centred): dividing by 0 would
    turn it into inf/NaN, and it carries no information to scale.
    """
    x = np.asarray(x_train, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"training features must be (n >= 1, d); got shape {x.shape}")
    mean = x.mean(axis=0)
    sd = x.std(axis=0)
    # Exactly constant columns, not tiny sds: rounding in the mean would make a constant's sd ~1e-17.
    constant = np.ptp(x, axis=0) == 0
    return mean, np.where(constant, 1.0, sd)


def standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z-score (n_train, d) ``x_train`` and (n_test, d) ``x_test`` with the *training* mean and sd.

    Returns float64 arrays of the input shapes. Features constant in training are centred, not
    scaled (sd taken as 1).
    """
    x_test = np.asarray(x_test, dtype=np.float64)
    mean, sd = _moments(x_train)
    if x_test.ndim != 2 or x_test.shape[1] != mean.shape[0]:
        raise ValueError(f"test features must be (n, {mean.shape[0]}); got shape {x_test.shape}")
    return (np.asarray(x_train, dtype=np.float64) - mean) / sd, (x_test - mean) / sd


class Standardiser(TransformerMixin, BaseEstimator):
    """:func:`standardise` as a pipeline step: ``fit`` stores the moments of the spots it is fitted on."""

    def fit(self, x, y=None):
        self.mean_, self.scale_ = _moments(x)
        return self

    def transform(self, x):
        return (np.asarray(x, dtype=np.float64) - self.mean_) / self.scale_


# --------------------------------------------------------------------------------------------
# Logistic-regression probe
# --------------------------------------------------------------------------------------------


@dataclass
class LogisticProbe:
    """A fitted Standardiser + logistic-regression pipeline and how its C was chosen.

    ``inner_scores``: C -> mean inner leave-one-patient-out macro-F1 (NaN for every C when none
    could be scored); ``inner_patients``: the patients the inner splits held out in turn.
    """

    pipeline: Pipeline
    chosen_C: float
    inner_scores: dict[float, float]
    inner_patients: tuple[str, ...] = field(default=())

    @property
    def classes_(self) -> np.ndarray:
        return self.pipeline.classes_

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(n,) predicted classes of (n, d) raw (unstandardised) features."""
        return self.pipeline.predict(x)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, n_classes) class probabilities, columns in ``classes_`` order."""
        return self.pipeline.predict_proba(x)


def _logistic_pipeline(C: float, seed: int, max_iter: int) -> Pipeline:
    # lbfgs fits the multinomial loss for >= 3 classes (sklearn >= 1.5 has no multi_class switch);
    # l1_ratio=0 is pure L2. random_state has no effect on lbfgs; kept so a solver swap stays seeded.
    lr = LogisticRegression(C=C, l1_ratio=0.0, solver="lbfgs", max_iter=max_iter, random_state=seed)
    return make_pipeline(Standardiser(), lr)


def _fit_counting_convergence(
    pipeline: Pipeline, x: np.ndarray, y: np.ndarray, not_converged: list[int]
) -> Pipeline:
    """Fit, counting (in ``not_converged``) instead of printing lbfgs's max_iter warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        pipeline.fit(x, y)
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            not_converged.append(1)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return pipeline


def _inner_split_skip_reason(y_fit: np.ndarray, y_score: np.ndarray) -> str | None:
    """Why an inner split cannot score a C (None when it can)."""
    if len(np.unique(y_fit)) < 2:
        return "its training side has fewer than two classes"
    if not is_classified(y_score).any():
        return "its held-out patient has no tissue class"
    return None


def _inner_lopo_scores(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    Cs: Sequence[float],
    seed: int,
    max_iter: int,
    not_converged: list[int],
) -> dict[float, float]:
    """C -> mean macro-F1 over the inner splits (each training patient held out in turn) that can be scored.

    x (n, d), y (n,), groups (n,). Every C is scored on the same splits, so the means compare.
    NaN for every C when no split can be scored.
    """
    per_c: dict[float, list[float]] = {C: [] for C in Cs}
    for patient in np.unique(groups):
        held = groups == patient
        skip = _inner_split_skip_reason(y[~held], y[held])
        if skip:
            logger.info("logistic probe: inner split holding out %s skipped: %s", patient, skip)
            continue
        # One standardisation per split, and the C path walked upwards from warm starts: the
        # problem is convex, so each fit ends where a cold one would, in far fewer iterations.
        scaler = Standardiser().fit(x[~held])
        x_fit, x_score = scaler.transform(x[~held]), scaler.transform(x[held])
        lr = LogisticRegression(
            l1_ratio=0.0, solver="lbfgs", max_iter=max_iter, random_state=seed, warm_start=True
        )
        for C in sorted(Cs):
            _fit_counting_convergence(lr.set_params(C=C), x_fit, y[~held], not_converged)
            per_c[C].append(classification_metrics(y[held], lr.predict(x_score))["macro_f1"])
    return {C: float(np.mean(v)) if v else float("nan") for C, v in per_c.items()}


def _choose_C(scores: dict[float, float]) -> float | None:
    """The C of the highest score; ties go to the smallest C (the strongest penalty). None if all NaN."""
    scored = {C: s for C, s in scores.items() if np.isfinite(s)}
    if not scored:
        return None
    best = max(scored.values())
    return min(C for C, s in scored.items() if s == best)


def fit_logistic_probe(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    Cs: Sequence[float] = DEFAULT_CS,
    seed: int = 0,
    max_iter: int = DEFAULT_MAX_ITER,
) -> LogisticProbe:
    """L2 multinomial logistic regression on standardised features, C by inner leave-one-patient-out.

    Parameters
    ----------
    x
        (n, d) raw features of the training spots (all classified).
    y
        (n,) their tissue classes; at least two distinct.
    groups
        (n,) their patients. Each patient is held out in turn; every C in ``Cs`` is fitted
        on the rest (standardisation included) and scored by macro-F1 over the classes present
        in the held-out patient; the C of the highest mean wins (ties: the smallest C).
    Cs
        candidate inverse penalties, each > 0.
    seed
        passed to the estimator (lbfgs itself is deterministic).
    max_iter
        lbfgs iterations; fits that stop there are counted and logged once.

    With fewer than two training patients, or when no inner split can be scored (each one's
    training side has a single class, or its held-out patient has no tissue class), C falls back
    to ``FALLBACK_C`` = 1.0, and the reason is logged.

    Returns
    -------
        :class:`LogisticProbe` refitted on all of ``x`` with the chosen C: ``predict``,
        ``predict_proba``, ``classes_``, ``chosen_C``, ``inner_scores`` (C -> score),
        ``inner_patients``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=object).astype(str)
    groups = np.asarray(groups, dtype=object).astype(str)
    if x.ndim != 2 or len(y) != x.shape[0] or len(groups) != x.shape[0]:
        raise ValueError(
            f"x must be (n, d) with one label and group per row; got {x.shape}, {y.shape}, {groups.shape}"
        )
    if len(np.unique(y)) < 2:
        raise ValueError(
            f"a logistic probe needs at least two classes; the training spots have {sorted(set(y))}"
        )
    Cs = tuple(float(C) for C in Cs)
    if not Cs or min(Cs) <= 0:
        raise ValueError(f"Cs must be a non-empty sequence of positive numbers; got {Cs}")

    not_converged: list[int] = []
    patients = tuple(np.unique(groups))
    if len(patients) < 2:
        scores = {C: float("nan") for C in Cs}
        chosen, why = None, f"fewer than two training patients ({list(patients)})"
    else:
        scores = _inner_lopo_scores(x, y, groups, Cs, seed, max_iter, not_converged)
        chosen, why = _choose_C(scores), "no inner leave-one-patient-out split could be scored"
    if chosen is None:
        logger.warning("logistic probe: C = %s (fallback): %s", FALLBACK_C, why)
        chosen = FALLBACK_C
    pipeline = _fit_counting_convergence(_logistic_pipeline(chosen, seed, max_iter), x, y, not_converged)
    if not_converged:
        logger.warning(
            "logistic probe: %d fit(s) stopped at max_iter=%d before converging", len(not_converged), max_iter
        )
    return LogisticProbe(
        pipeline=pipeline,
        chosen_C=chosen,
        inner_scores=scores,
        inner_patients=patients if len(patients) > 1 else (),
    )


# --------------------------------------------------------------------------------------------
# kNN probe
# --------------------------------------------------------------------------------------------


def fit_knn_probe(x: np.ndarray, y: np.ndarray, k: int = 15) -> Pipeline:
    """Cosine kNN on standardised features, fitted on (n, d) ``x`` and (n,) labels ``y``.

    Features are z-scored with the training moments first (so every feature counts on one scale,
    as for the logistic probe), then neighbours are ranked by cosine distance: the direction of a
    standardised feature vector, not its norm, decides. Exact (brute-force) search; a plain
    majority vote of the k neighbours (ties: the first class in sorted order, sklearn's rule).
    k is lowered to n when fewer training spots.

    Returns a fitted Standardiser + KNeighborsClassifier pipeline (``predict``, ``predict_proba``,
    ``classes_``).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=object).astype(str)
    if x.ndim != 2 or x.shape[0] == 0 or len(y) != x.shape[0]:
        raise ValueError(f"x must be (n >= 1, d) with one label per row; got {x.shape}, {y.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    knn = KNeighborsClassifier(
        n_neighbors=min(k, x.shape[0]), metric=KNN_METRIC, weights="uniform", algorithm="brute"
    )
    return make_pipeline(Standardiser(), knn).fit(x, y)


# --------------------------------------------------------------------------------------------
# One fold
# --------------------------------------------------------------------------------------------


def _check_cohort_arrays(features, labels, patients) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=object).astype(str)
    p = np.asarray(patients, dtype=object).astype(str)
    if x.ndim != 2 or len(y) != x.shape[0] or len(p) != x.shape[0]:
        raise ValueError(
            f"features must be (n, d) with one label and patient per row; got {x.shape}, {y.shape}, {p.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError("features have non-finite values")
    return x, y, p


def fold_masks(
    labels: np.ndarray, patients: np.ndarray, held_out_patient: str
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) boolean (n,) masks: classified spots of the other patients / of the held-out one."""
    classified = is_classified(labels)
    held = np.asarray(patients, dtype=object).astype(str) == str(held_out_patient)
    return classified & ~held, classified & held


def fit_fold_probes(
    features: np.ndarray,
    labels: np.ndarray,
    patients: np.ndarray,
    held_out_patient: str,
    probes: Sequence[str] = PROBES,
    Cs: Sequence[float] = DEFAULT_CS,
    k: int = 15,
    seed: int = 0,
    max_iter: int = DEFAULT_MAX_ITER,
) -> dict[str, object | None]:
    """Probe name -> probe fitted on the classified spots of every patient but ``held_out_patient``.

    Only rows selected by :func:`fold_masks`' train mask reach a fit. A probe that cannot be fitted
    (no training spot; a logistic probe with one class) is None, with the reason logged.
    """
    unknown = sorted(set(probes) - set(PROBES))
    if unknown:
        raise ValueError(f"unknown probe(s) {unknown}; known: {list(PROBES)}")
    x, y, p = _check_cohort_arrays(features, labels, patients)
    train, _ = fold_masks(y, p, held_out_patient)
    fitted: dict[str, object | None] = {}
    for name in probes:
        n_classes = len(np.unique(y[train]))
        if n_classes == 0 or (name == "logistic" and n_classes < 2):
            logger.warning(
                "held out %s: %s probe not fitted: %d class(es) among training spots",
                held_out_patient,
                name,
                n_classes,
            )
            fitted[name] = None
        elif name == "logistic":
            fitted[name] = fit_logistic_probe(
                x[train], y[train], p[train], Cs=Cs, seed=seed, max_iter=max_iter
            )
        else:
            fitted[name] = fit_knn_probe(x[train], y[train], k=k)
    return fitted


def _probe_row(
    probe: str,
    held_out: str,
    y_train: np.ndarray,
    y_test: np.ndarray,
    y_pred: np.ndarray | None,
    chosen_C: float,
) -> dict:
    """One row of ``PROBE_COLUMNS``; NaN metrics (logged) when there is nothing to score."""
    why = unscored_reason(y_train, y_test, y_pred)
    if why:
        logger.warning("held out %s: %s metrics are NaN: %s", held_out, probe, why)
    return {"probe": probe, **held_out_scores(held_out, y_train, y_test, y_pred), "chosen_C": float(chosen_C)}


def confusion_long(probe: str, held_out: str, y_true: np.ndarray, y_pred: np.ndarray) -> pd.DataFrame:
    """Long confusion table of (n,) ``y_true`` vs (n,) ``y_pred``: ``CONFUSION_COLUMNS``.

    Rows and columns are the tissue classes occurring in either (``TISSUE_CLASSES`` order), every
    (true, predicted) pair listed, zeros included, so counts sum to n.
    """
    y_true = np.asarray(y_true, dtype=object).astype(str)
    y_pred = np.asarray(y_pred, dtype=object).astype(str)
    seen = set(y_true) | set(y_pred)
    classes = [c for c in TISSUE_CLASSES if c in seen]
    if not classes:
        return pd.DataFrame(columns=list(CONFUSION_COLUMNS))
    matrix = confusion_matrix(y_true, y_pred, labels=classes)
    rows = [
        (probe, str(held_out), t, pr, int(matrix[i, j]))
        for i, t in enumerate(classes)
        for j, pr in enumerate(classes)
    ]
    return pd.DataFrame(rows, columns=list(CONFUSION_COLUMNS))


def _log_absent(held_out: str, y_test: np.ndarray) -> None:
    absent = classes_absent(y_test)
    if absent:
        logger.info(
            "held-out patient %s has no %s spot (scored over the classes it has)",
            held_out,
            absent.replace(";", " / "),
        )


def evaluate_probes(
    features: np.ndarray,
    labels: np.ndarray,
    patients: np.ndarray,
    held_out_patient: str,
    probes: Sequence[str] = PROBES,
    Cs: Sequence[float] = DEFAULT_CS,
    k: int = 15,
    seed: int = 0,
    max_iter: int = DEFAULT_MAX_ITER,
) -> tuple[list[dict], pd.DataFrame]:
    """Fit each probe on the other patients' classified spots and score it on ``held_out_patient``'s.

    Parameters
    ----------
    features
        (n, d) frozen image features of every spot of the cohort that has an image.
    labels
        (n,) cohort labels (tissue classes, 'undetermined', 'unlabelled'); only tissue
        classes are fitted or scored.
    patients
        (n,) patient of each spot.
    held_out_patient
        the fold's test patient. Neither its labels nor its features are used
        to fit anything.
    probes
        any of ``PROBES`` ("logistic", "knn").
    Cs, seed, max_iter
        :func:`fit_logistic_probe`. k: :func:`fit_knn_probe`.

    Returns
    -------
        rows: one dict per probe, keys ``PROBE_COLUMNS``: ``probe, held_out_patient, n_train,
            n_test, accuracy, macro_f1, balanced_accuracy, classes_absent, chosen_C`` (NaN for
            knn). Macro-F1 and balanced accuracy over the classes present in the held-out
            patient; NaN metrics (logged) when it has no classified spot.
        confusion: long table ``CONFUSION_COLUMNS`` (:func:`confusion_long`) of every scored probe.
    """
    x, y, p = _check_cohort_arrays(features, labels, patients)
    train, test = fold_masks(y, p, held_out_patient)
    _log_absent(held_out_patient, y[test])
    fitted = fit_fold_probes(
        x, y, p, held_out_patient, probes=probes, Cs=Cs, k=k, seed=seed, max_iter=max_iter
    )
    rows, tables = [], []
    for name in probes:
        probe = fitted[name]
        y_pred = probe.predict(x[test]) if probe is not None and test.any() else None
        rows.append(
            _probe_row(name, held_out_patient, y[train], y[test], y_pred, getattr(probe, "chosen_C", np.nan))
        )
        if y_pred is not None:
            tables.append(confusion_long(name, held_out_patient, y[test], y_pred))
    confusion = (
        pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(CONFUSION_COLUMNS))
    )
    return rows, confusion


def majority_rows(labels: np.ndarray, patients: np.ndarray, held_out_patient: str) -> list[dict]:
    """The majority-class floor of one fold: one row (``probe`` "majority", ``PROBE_COLUMNS``).

    Every held-out classified spot is predicted as :func:`majority_class` of the training patients'
    classified spots; ``chosen_C`` is NaN. A list, to concatenate with :func:`evaluate_probes`' rows.
    """
    y = np.asarray(labels, dtype=object).astype(str)
    p = np.asarray(patients, dtype=object).astype(str)
    if len(y) != len(p):
        raise ValueError(f"labels and patients must have one length; got {len(y)} and {len(p)}")
    train, test = fold_masks(y, p, held_out_patient)
    y_pred = np.full(int(test.sum()), majority_class(y[train]), dtype=object) if train.any() else None
    return [_probe_row(MAJORITY, held_out_patient, y[train], y[test], y_pred, np.nan)]
