"""Scores of a cohort's spot embeddings: do tissue labels transfer across patients, and how much of
the patient does the embedding keep?

The embeddings are any (n_obs, d) float arrays row-aligned with ``obs`` (columns ``patient`` and
``label``): PCA, Harmony, scVI, SysVI, ... Two questions are asked of them.

Label transfer (:func:`label_transfer`). For every scored patient P, P's labels are hidden: a kNN
classifier and the project's logistic probe are fitted on the classified spots of all the *other*
patients and label P's classified spots, scored by
:func:`~tpir_kedro.evaluation.held_out_scores.held_out_scores` (macro-F1 over the classes P has).
The embedding for P is ``embeddings_by_patient[P]``, so one function serves both read-outs:

- transductive: an encoder fitted once on every patient without labels (PCA, Harmony, scVI) gives
  the same array for every key;
- strict: an encoder fitted without P (or one that used labels, scANVI, fitted without P's) gives P
  its own array, from a fit that never saw P (or P's labels).

:func:`choose_setting` picks a hyper-parameter setting by an inner leave-one-patient-out kNN
transfer on the patients other than the scored one, whose spots are dropped altogether.

Patient retention (:func:`patient_readouts`): the class-balanced linear patient read-out
(:func:`~tpir_kedro.evaluation.patient_decodability.patient_decodability`), the PathoROB-style
:func:`robustness_index` (does tissue or patient decide a spot's neighbours?) and iLISI of
patients (as :func:`~tpir_kedro.evaluation.embedding_metrics.scib_scores`).

Nothing here reads a scored patient's labels except to score that patient: they never reach a fit,
a neighbour vote or a setting choice. Only the six tissue classes are labels ('undetermined' and
'unlabelled' spots are never fitted on, voted with or scored).

:func:`label_transfer`'s table carries ``fold`` ("holdout_<P>", as
:func:`~tpir_kedro.evaluation.folds.fold_key`), so two embeddings compare per patient with
:func:`~tpir_kedro.evaluation.embedding_metrics.paired_fold_differences` on one read-out's rows,
e.g. ``paired_fold_differences(a[a.readout == "knn"], b[b.readout == "knn"])``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

from tpir_kedro.cohort.schema import is_classified
from tpir_kedro.evaluation.embedding_metrics import KNN_METRIC, KNN_WEIGHTS, _knn
from tpir_kedro.evaluation.folds import fold_key
from tpir_kedro.evaluation.held_out_scores import SCORE_COLUMNS, held_out_scores, unscored_reason
from tpir_kedro.evaluation.patient_decodability import patient_decodability
from tpir_kedro.evaluation.probes import DEFAULT_CS, fit_fold_probes, fold_masks

logger = logging.getLogger(__name__)

READOUTS: tuple[str, ...] = ("knn", "logistic")
LABEL_TRANSFER_COLUMNS: tuple[str, ...] = ("patient", "readout", "fold", *SCORE_COLUMNS, "chosen_C")
SETTING_COLUMNS: tuple[str, ...] = ("setting", "mean_inner_macro_f1", "n_inner_patients")


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _obs_arrays(obs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(n_obs,) str labels and (n_obs,) str patients of ``obs``."""
    missing = [c for c in ("patient", "label") if c not in obs.columns]
    if missing:
        raise ValueError(f"obs lacks column(s) {missing}")
    return obs["label"].astype(str).to_numpy(), obs["patient"].astype(str).to_numpy()


def _embedding(embedding: np.ndarray, n_obs: int, name: str) -> np.ndarray:
    """``embedding`` as an (n_obs, d) float64 array, checked for shape and finiteness."""
    x = np.asarray(embedding, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != n_obs:
        raise ValueError(f"embedding {name} has shape {x.shape}; expected ({n_obs}, d), one row per obs row")
    if not np.isfinite(x).all():
        raise ValueError(f"embedding {name} has non-finite values")
    return x


# --------------------------------------------------------------------------------------------
# Robustness index
# --------------------------------------------------------------------------------------------


def robustness_index(embedding: np.ndarray, labels: np.ndarray, patients: np.ndarray, k: int = 10) -> dict:
    """PathoROB-style neighbourhood robustness index: does tissue or patient decide a spot's neighbours?

    Over the classified spots only, each spot's k nearest classified neighbours (Euclidean, the spot
    itself excluded) are counted as SO (same class, another patient: tissue pulls them together)
    and OS (another class, same patient: the patient does). Neighbours of the same class and
    patient, or of neither, say nothing about the question and are not counted.

    Parameters
    ----------
    embedding
        (n, d) float array.
    labels, patients
        (n,) cohort label and patient of each spot; only tissue classes enter.
    k
        neighbours per spot, lowered to n_classified - 1 when fewer spots.

    Returns
    -------
        ``robustness_index`` = sum SO / (sum SO + sum OS), 1 when tissue decides every counted
        neighbour, 0 when the patient does (NaN when both sums are 0 or fewer than two classified
        spots); ``n_same_class_other_patient`` (sum SO), ``n_other_class_same_patient`` (sum OS),
        ``n_spots`` (classified spots) and ``k`` (as used).
    """
    labels = np.asarray(labels, dtype=object).astype(str)
    patients = np.asarray(patients, dtype=object).astype(str)
    x = _embedding(embedding, len(labels), "for the robustness index")
    if len(patients) != len(labels):
        raise ValueError(f"labels and patients must have one length; got {len(labels)} and {len(patients)}")
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    keep = is_classified(labels)
    x, labels, patients = x[keep], labels[keep], patients[keep]
    k_used = min(int(k), len(x) - 1)
    out = {
        "robustness_index": float("nan"),
        "n_same_class_other_patient": 0,
        "n_other_class_same_patient": 0,
        "n_spots": int(len(x)),
        "k": max(k_used, 0),
    }
    if k_used < 1:
        return out
    # kneighbors() without a query leaves each spot out of its own list, even among exact
    # duplicates (where querying x itself could return a twin first and the spot second).
    neighbours = NearestNeighbors(n_neighbors=k_used).fit(x).kneighbors(return_distance=False)
    same_class = labels[neighbours] == labels[:, None]
    same_patient = patients[neighbours] == patients[:, None]
    so = int((same_class & ~same_patient).sum())
    os_ = int((~same_class & same_patient).sum())
    out["n_same_class_other_patient"], out["n_other_class_same_patient"] = so, os_
    if so + os_:
        out["robustness_index"] = so / (so + os_)
    return out


# --------------------------------------------------------------------------------------------
# Label transfer
# --------------------------------------------------------------------------------------------


def _predict_held_out(
    x: np.ndarray,
    labels: np.ndarray,
    patients: np.ndarray,
    patient: str,
    readouts: Sequence[str],
    knn_k: int,
    Cs: Sequence[float],
    seed: int,
) -> dict[str, tuple[np.ndarray | None, float]]:
    """Read-out -> ((n_test,) predictions for ``patient``'s classified spots or None, chosen C or NaN)."""
    # fold_masks: train = classified spots of the other patients; ``patient``'s labels only pick
    # which of its spots are scored, and each spot's prediction does not depend on the others.
    train, test = fold_masks(labels, patients, patient)
    out: dict[str, tuple[np.ndarray | None, float]] = {}
    for name in readouts:
        if not (train.any() and test.any()):
            out[name] = (None, float("nan"))
        elif name == "knn":
            knn = KNeighborsClassifier(
                n_neighbors=min(int(knn_k), int(train.sum())), metric=KNN_METRIC, weights=KNN_WEIGHTS
            )
            out[name] = (knn.fit(x[train], labels[train]).predict(x[test]), float("nan"))
        else:
            # The image probes' logistic probe as is (standardised, C by inner leave-one-patient-
            # out over the training patients); None, logged, with fewer than two training classes.
            probe = fit_fold_probes(x, labels, patients, patient, probes=("logistic",), Cs=Cs, seed=seed)
            fitted = probe["logistic"]
            out[name] = (None, float("nan")) if fitted is None else (fitted.predict(x[test]), fitted.chosen_C)
    return out


def _check_readouts(readouts: Sequence[str]) -> tuple[str, ...]:
    readouts = tuple(readouts)
    unknown = sorted(set(readouts) - set(READOUTS))
    if unknown or not readouts:
        raise ValueError(f"readouts must be a non-empty subset of {list(READOUTS)}; got {list(readouts)}")
    return readouts


def held_out_predictions(
    embedding: np.ndarray,
    obs: pd.DataFrame,
    patient: str,
    *,
    readouts: Sequence[str] = READOUTS,
    knn_k: int = 15,
    Cs: Sequence[float] = DEFAULT_CS,
    seed: int = 0,
) -> dict[str, np.ndarray | None]:
    """Each read-out's predicted classes for ``patient``'s classified spots, fitted on the other patients.

    Parameters
    ----------
    embedding
        (n_obs, d) embedding of every spot of ``obs`` (row-aligned).
    obs
        ``patient`` and ``label`` of each spot, n_obs rows.
    patient
        the held-out patient; its labels reach no fit.
    readouts
        any of ``READOUTS``: "knn" (``KNN_METRIC``/``KNN_WEIGHTS`` of
        :mod:`~tpir_kedro.evaluation.embedding_metrics`, k = ``knn_k`` lowered to the number of
        training spots), "logistic" (:func:`~tpir_kedro.evaluation.probes.fit_logistic_probe`
        with ``Cs`` and ``seed``).

    Returns
    -------
        read-out -> (n_test,) predicted tissue classes of ``patient``'s classified spots in obs
        order, or None when the read-out could not be fitted or there is nothing to predict.
    """
    labels, patients = _obs_arrays(obs)
    x = _embedding(embedding, len(obs), f"for {patient}")
    predicted = _predict_held_out(
        x, labels, patients, str(patient), _check_readouts(readouts), knn_k, Cs, seed
    )
    return {name: pred for name, (pred, _) in predicted.items()}


def _scored_patients(embeddings_by_patient: Mapping[str, np.ndarray], patients: np.ndarray) -> list[str]:
    """The mapping's keys, sorted as the fold table sorts patients; every one must be in obs."""
    keys = sorted(str(p) for p in embeddings_by_patient)
    unknown = sorted(set(keys) - set(patients))
    if unknown:
        raise ValueError(
            f"embeddings for patient(s) {unknown} not in obs (patients: {sorted(set(patients))})"
        )
    return keys


def label_transfer(
    embeddings_by_patient: Mapping[str, np.ndarray],
    obs: pd.DataFrame,
    *,
    knn_k: int = 15,
    seed: int = 0,
    readouts: Sequence[str] = READOUTS,
    Cs: Sequence[float] = DEFAULT_CS,
) -> pd.DataFrame:
    """Leave-one-patient-out tissue label transfer, each patient read in its own embedding.

    Parameters
    ----------
    embeddings_by_patient
        patient -> (n_obs, d) embedding of *every* spot of ``obs`` (row-aligned) in which that
        patient is scored: the same array under every key for a transductive read-out
        (``dict.fromkeys(obs["patient"].unique(), embedding)``), a fit without the patient (or
        without its labels) for the strict one. Only the keys are scored.
    obs
        ``patient`` and ``label`` of each spot, n_obs rows.
    knn_k
        kNN neighbours (lowered to the number of training spots when fewer).
    seed
        the logistic probe's seed.
    readouts
        any of ``READOUTS`` ("knn", "logistic"); see :func:`held_out_predictions`.
    Cs
        the logistic probe's candidate C, chosen by inner leave-one-patient-out over the
        training patients (the image probes' default grid). Its cost grows with the number of
        patients squared: pass one C for a quick read.

    Returns
    -------
        One row per (patient, read-out), patients sorted, ``LABEL_TRANSFER_COLUMNS``: ``patient,
        readout, fold`` ("holdout_<patient>"), ``held_out_patient, n_train, n_test, accuracy,
        macro_f1, balanced_accuracy, classes_absent`` (:func:`held_out_scores`: macro-F1 and
        balanced accuracy over the classes the patient has) and ``chosen_C`` (logistic; NaN for
        kNN). A patient with no classified spot, no classified training spot, or (logistic) fewer
        than two training classes gets NaN metrics, the reason logged.
    """
    readouts = _check_readouts(readouts)
    labels, patients = _obs_arrays(obs)
    rows = []
    for patient in _scored_patients(embeddings_by_patient, patients):
        x = _embedding(embeddings_by_patient[patient], len(obs), f"for {patient}")
        train, test = fold_masks(labels, patients, patient)
        predicted = _predict_held_out(x, labels, patients, patient, readouts, knn_k, Cs, seed)
        for name in readouts:
            y_pred, chosen_C = predicted[name]
            why = unscored_reason(labels[train], labels[test], y_pred)
            if why:
                logger.warning("held out %s: %s transfer metrics are NaN: %s", patient, name, why)
            scores = held_out_scores(patient, labels[train], labels[test], y_pred)
            rows.append(
                {
                    "patient": patient,
                    "readout": name,
                    "fold": fold_key(patient),
                    **scores,
                    "chosen_C": chosen_C,
                }
            )
    return pd.DataFrame(rows, columns=list(LABEL_TRANSFER_COLUMNS))


# --------------------------------------------------------------------------------------------
# Setting choice
# --------------------------------------------------------------------------------------------


def choose_setting(
    candidates: Mapping[str, np.ndarray],
    obs: pd.DataFrame,
    scored_patient: str,
    *,
    knn_k: int = 15,
) -> tuple[str, pd.DataFrame]:
    """Choose a hyper-parameter setting without reading ``scored_patient``: inner kNN label transfer.

    ``scored_patient``'s spots are dropped (rows removed, so they are neither training spots nor
    neighbours); on the remaining patients each one is held out in turn and labelled by kNN from the
    others (:func:`label_transfer`, "knn"). A setting's score is the mean macro-F1 over the inner
    patients that could be scored; the highest wins, ties to the earlier setting.

    Parameters
    ----------
    candidates
        setting name -> (n_obs, d) embedding of every spot of ``obs``, in preference order, the
        first the library default (it wins when no setting can be scored).
    obs
        ``patient`` and ``label`` of each spot, n_obs rows.
    scored_patient
        the patient whose score the chosen setting will be used for.
    knn_k
        kNN neighbours.

    Returns
    -------
        (chosen setting name, table ``SETTING_COLUMNS``: ``setting``, ``mean_inner_macro_f1``,
        ``n_inner_patients`` (inner patients scored), one row per candidate in the given order).
    """
    if not candidates:
        raise ValueError("choose_setting needs at least one candidate setting")
    labels, patients = _obs_arrays(obs)
    if str(scored_patient) not in set(patients):
        raise ValueError(
            f"scored patient {scored_patient!r} is not in obs (patients: {sorted(set(patients))})"
        )
    keep = patients != str(scored_patient)
    inner_obs = obs.loc[keep, ["patient", "label"]].reset_index(drop=True)
    inner_patients = sorted(set(patients[keep]))
    rows = []
    for name, embedding in candidates.items():
        x = _embedding(embedding, len(obs), f"of setting {name!r}")[keep]
        table = label_transfer(dict.fromkeys(inner_patients, x), inner_obs, knn_k=knn_k, readouts=("knn",))
        scored = table["macro_f1"].dropna()
        rows.append(
            {
                "setting": str(name),
                "mean_inner_macro_f1": float(scored.mean()) if len(scored) else float("nan"),
                "n_inner_patients": int(len(scored)),
            }
        )
    table = pd.DataFrame(rows, columns=list(SETTING_COLUMNS))
    finite = table["mean_inner_macro_f1"].notna()
    if not finite.any():
        logger.warning(
            "choose_setting for %s: no inner patient could be scored; keeping the default %r",
            scored_patient,
            table["setting"].iloc[0],
        )
        return str(table["setting"].iloc[0]), table
    # idxmax returns the first of equal maxima, and rows are in preference order.
    return str(table.loc[table.loc[finite, "mean_inner_macro_f1"].idxmax(), "setting"]), table


# --------------------------------------------------------------------------------------------
# Patient retention
# --------------------------------------------------------------------------------------------


def _ilisi(x: np.ndarray, patients: np.ndarray, lisi_neighbors: int) -> float:
    """Scaled iLISI of patients over all (n, d) ``x``, as :func:`scib_scores` computes it.

    NaN (logged) with fewer than two patients or three spots.
    """
    if len(np.unique(patients)) < 2 or len(x) < 3:
        logger.info("ilisi not computed: fewer than two patients or three spots")
        return float("nan")
    import scib_metrics  # imported here: jax + umap + numba make it slow to import

    return float(scib_metrics.ilisi_knn(_knn(x.astype(np.float32), lisi_neighbors), patients))


def patient_readouts(
    embedding: np.ndarray, obs: pd.DataFrame, *, k: int = 10, lisi_neighbors: int = 90, seed: int = 0
) -> dict:
    """How much of the patient the embedding keeps, on the spots given.

    Parameters
    ----------
    embedding
        (n_obs, d) embedding of the spots of ``obs`` (row-aligned): pass only the spots to judge
        (e.g. a fold's training patients).
    obs
        ``patient`` and ``label`` of each spot.
    k
        :func:`robustness_index` neighbours.
    lisi_neighbors
        iLISI graph neighbours (as :func:`~tpir_kedro.evaluation.embedding_metrics.scib_scores`).
    seed
        patient read-out subsampling and cross-validation seed.

    Returns
    -------
        ``patient_decodability`` (cross-validated accuracy of the class-balanced linear patient
        read-out; lower keeps less patient), ``patient_decodability_chance`` (1 / n_patients),
        ``n_decodability_spots``; :func:`robustness_index`'s ``robustness_index``,
        ``n_same_class_other_patient``, ``n_other_class_same_patient``, ``n_robustness_spots``,
        ``robustness_k``; ``ilisi`` (scaled iLISI of patients over every spot given, 1 = mixed).
    """
    labels, patients = _obs_arrays(obs)
    x = _embedding(embedding, len(obs), "for the patient read-outs")
    decodability = patient_decodability(x, labels, patients, seed=seed)
    robustness = robustness_index(x, labels, patients, k=k)
    return {
        "patient_decodability": decodability["accuracy"],
        "patient_decodability_chance": decodability["chance"],
        "n_decodability_spots": decodability["n_spots"],
        "robustness_index": robustness["robustness_index"],
        "n_same_class_other_patient": robustness["n_same_class_other_patient"],
        "n_other_class_same_patient": robustness["n_other_class_same_patient"],
        "n_robustness_spots": robustness["n_spots"],
        "robustness_k": robustness["k"],
        "ilisi": _ilisi(x, patients, lisi_neighbors),
    }
