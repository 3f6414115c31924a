"""Scores of a spot embedding: patient mixing, tissue-class conservation, and label transfer.

- :func:`scib_scores`: scib-metrics batch-correction and bio-conservation metrics (patient is the
  batch, the tissue class the label) plus the plain silhouettes the project already quotes.
- :func:`lopo_knn_transfer`: per leave-one-patient-out fold, a kNN classifier fitted on the
  training patients' classified spots labels the held-out patient's classified spots.
  :func:`majority_transfer` is its floor; :func:`summarise_transfer` and
  :func:`paired_fold_differences` turn per-fold tables into report numbers.
- Held-out patients are scored by :mod:`~tpir_kedro.evaluation.held_out_scores`, as the probes are.

Only the six tissue classes count as labels ('undetermined' and 'unlabelled' spots are never
scored for class); a tissue class missing from a held-out patient is normal, never an error.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import (
    adjusted_rand_score,
    normalized_mutual_info_score,
    silhouette_score,
)
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

from tpir_kedro.cohort.schema import is_classified
from tpir_kedro.evaluation.fold_statistics import paired_difference
from tpir_kedro.evaluation.folds import train_patients
from tpir_kedro.evaluation.held_out_scores import (
    SCORE_COLUMNS,
    held_out_scores,
    majority_class,
    unscored_reason,
)

logger = logging.getLogger(__name__)

TRANSFER_COLUMNS: tuple[str, ...] = ("fold", *SCORE_COLUMNS)
# The kNN transfer geometry: Euclidean, as every silhouette and scib metric here, so transfer and
# mixing scores read the same space; a plain majority vote, so a few near-duplicate training spots
# (serial sections of one patient) cannot outvote the rest of the neighbourhood.
KNN_METRIC = "euclidean"
KNN_WEIGHTS = "uniform"


# --------------------------------------------------------------------------------------------
# scib-metrics
# --------------------------------------------------------------------------------------------


def _knn(x: np.ndarray, n_neighbors: int):
    """Exact Euclidean kNN of (n, d) ``x`` as scib_metrics NeighborsResults, (n, k) with self included."""
    from scib_metrics.nearest_neighbors import NeighborsResults

    k = min(n_neighbors, x.shape[0])
    # Querying with x itself keeps each spot as its own neighbour (distance 0), as scib expects.
    distances, indices = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)
    return NeighborsResults(indices=indices.astype(np.int64), distances=distances.astype(np.float32))


def _set(scores: dict, name: str, skip: str | None, compute: Callable[[], float]) -> None:
    """scores[name] = compute(), or NaN with the reason logged when skipped or failing."""
    if skip:
        logger.info("%s not computed: %s", name, skip)
        scores[name] = float("nan")
        return
    try:
        scores[name] = float(compute())
    except Exception as exc:  # a metric that cannot be computed must not sink the others
        logger.warning("%s not computed: %s: %s", name, type(exc).__name__, exc)
        scores[name] = float("nan")


def scib_scores(
    embedding: np.ndarray,
    batch: np.ndarray,
    labels: np.ndarray,
    n_neighbors: int = 15,
    seed: int = 0,
    lisi_neighbors: int = 90,
    kbet: bool = False,
) -> dict[str, float]:
    """Batch-mixing and label-conservation scores of an (n_spots, d) embedding.

    Parameters
    ----------
    embedding
        (n_spots, d) float array.
    batch
        (n_spots,) patient of each spot (the batch).
    labels
        (n_spots,) cohort label of each spot; only the tissue classes count as labelled.
    n_neighbors
        k of the Euclidean kNN graph of the classified spots (graph connectivity,
        kBET); each spot counts itself, as in scib.
    seed
        k-means seed (NMI/ARI).
    lisi_neighbors
        k of the all-spot graph for iLISI (perplexity k // 3). 90 as scib-metrics'
        Benchmarker (perplexity 30, as Harmony's LISI); at 15 (perplexity 5) raw PCA of HER2ST
        scores ~0 because a spot's nearest neighbours are nearly all from its own section.
    kbet
        compute kBET. Off by default for cost, not value: scib's kBET finds diffusion-map
        neighbours with pynndescent and umap, whose numba JIT takes ~60 s on the first call in
        a process on 2 CPU cores (~1 s per call after). NaN when off.

    Returns (higher is better unless said; NaN, with the reason logged, when not computable):
        - ``ilisi``: scaled iLISI of patients over *all* spots (scib ``ilisi_knn``, median over
          spots; 0 = every neighbourhood one patient, 1 = fully mixed).
        - ``kbet``: kBET acceptance rate, mean over classes (scib ``kbet_per_label``), classified
          spots; only with ``kbet=True``.
        - ``bras``: batch-removal-adapted silhouette (scib ``bras``: cosine, mean other batch), classified.
        - ``silhouette_batch``: scib batch ASW within each class (1 - |s|), classified.
        - ``graph_connectivity``: scib, per class, on the kNN graph of the classified spots.
        - ``silhouette_label``: scib class ASW rescaled to [0, 1], classified.
        - ``nmi``, ``ari``: k-means (k = number of classes present, sklearn, 10 inits, ``seed``)
          against the classes, as scib ``nmi_ari_cluster_labels_kmeans``, classified.
        - ``silhouette_patient`` / ``silhouette_class``: raw sklearn Euclidean silhouettes in [-1, 1]
          of patient and of class on the *classified* spots -- the pair the batch-effect diagnostic
          quotes (raw PCA, real HER2ST: ~0.29 by patient vs ~0 by class). Lower by patient is better.
        - ``n_spots``, ``n_classified``, ``n_batches``: what was scored.

    Label-dependent metrics use the classified spots only (with their own kNN graph); ``ilisi``
    uses every spot given.
    """
    x = np.asarray(embedding, dtype=np.float32)
    batch = np.asarray(batch).astype(str)
    labels = np.asarray(labels, dtype=object).astype(str)
    if x.ndim != 2 or len(batch) != x.shape[0] or len(labels) != x.shape[0]:
        raise ValueError(
            f"embedding must be (n_spots, d) with one batch and label per spot; got {x.shape}, {batch.shape}, {labels.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError("embedding has non-finite values")
    import scib_metrics  # imported here: jax + umap + numba make it slow to import

    classified = is_classified(labels)
    xc, bc, lc = x[classified], batch[classified], labels[classified]
    n_batches, n_batches_c, n_classes = len(np.unique(batch)), len(np.unique(bc)), len(np.unique(lc))
    scores: dict[str, float] = {
        "n_spots": float(len(x)),
        "n_classified": float(len(xc)),
        "n_batches": float(n_batches),
    }

    nn_all = _knn(x, lisi_neighbors) if len(x) >= 3 else None
    no_lisi = (
        "fewer than two batches" if n_batches < 2 else "fewer than three spots" if nn_all is None else None
    )
    _set(scores, "ilisi", no_lisi, lambda: scib_metrics.ilisi_knn(nn_all, batch))

    nn_c = _knn(xc, n_neighbors) if len(xc) >= 3 else None
    few = "fewer than three classified spots" if nn_c is None else None
    one_batch = "classified spots come from fewer than two batches" if n_batches_c < 2 else None
    one_class = "fewer than two classes among classified spots" if n_classes < 2 else None
    every_own = "every classified spot is its own class" if n_classes >= len(xc) else None
    # kBET/BRAS/batch ASW skip classes seen in one batch only; when that is every class, NaN.
    mixed = [c for c in np.unique(lc) if len(np.unique(bc[lc == c])) > 1]
    no_mixed = "no class is present in two batches" if not mixed else None
    off = None if kbet else "not requested (kbet=False)"
    _set(
        scores, "kbet", off or few or one_batch or no_mixed, lambda: scib_metrics.kbet_per_label(nn_c, bc, lc)
    )
    _set(scores, "bras", few or one_batch or no_mixed, lambda: scib_metrics.bras(xc, lc, bc))
    _set(
        scores,
        "silhouette_batch",
        few or one_batch or no_mixed,
        lambda: scib_metrics.silhouette_batch(xc, lc, bc),
    )
    _set(scores, "graph_connectivity", few, lambda: scib_metrics.graph_connectivity(nn_c, lc))
    _set(
        scores,
        "silhouette_label",
        few or one_class or every_own,
        lambda: scib_metrics.silhouette_label(xc, lc),
    )

    @functools.cache
    def clusters() -> np.ndarray:  # one k-means for both NMI and ARI
        return KMeans(n_clusters=n_classes, n_init=10, random_state=seed).fit_predict(xc)

    not_clusterable = few or one_class or every_own
    _set(
        scores,
        "nmi",
        not_clusterable,
        lambda: normalized_mutual_info_score(lc, clusters(), average_method="arithmetic"),
    )
    _set(scores, "ari", not_clusterable, lambda: adjusted_rand_score(lc, clusters()))
    every_own_batch = "every classified spot is its own batch" if n_batches_c >= len(xc) else None
    _set(scores, "silhouette_patient", few or one_batch or every_own_batch, lambda: silhouette_score(xc, bc))
    _set(scores, "silhouette_class", few or one_class or every_own, lambda: silhouette_score(xc, lc))
    return scores


# --------------------------------------------------------------------------------------------
# Leave-one-patient-out label transfer
# --------------------------------------------------------------------------------------------


def _fold_spots(obs: pd.DataFrame, folds: pd.DataFrame, fold: str) -> tuple[str, np.ndarray, np.ndarray]:
    """(held-out patient, boolean train mask, boolean test mask) over the classified spots of ``obs``."""
    rows = folds[folds["fold"] == fold]
    held_out = sorted(rows.loc[rows["role"] == "test", "patient"].astype(str).unique())
    if len(held_out) != 1:
        raise ValueError(f"fold {fold!r} must hold out exactly one patient; it holds out {held_out}")
    patient = obs["patient"].astype(str).to_numpy()
    classified = is_classified(obs["label"])
    train = classified & np.isin(patient, train_patients(folds, fold))
    test = classified & (patient == held_out[0])
    return held_out[0], train, test


def _fold_row(
    fold: str,
    held_out: str,
    y_train: np.ndarray,
    y_test: np.ndarray,
    predict: Callable[[], np.ndarray] | None,
) -> dict:
    """One per-fold row; ``predict()`` gives the test predictions (called only when both sides have spots)."""
    y_pred = predict() if len(y_test) and len(y_train) and predict is not None else None
    why = unscored_reason(y_train, y_test, y_pred)
    if why:
        logger.warning("fold %s: %s; metrics are NaN", fold, why)
    return {"fold": fold, **held_out_scores(held_out, y_train, y_test, y_pred)}


def _fold_order(folds: pd.DataFrame) -> list[str]:
    return list(pd.unique(folds["fold"].astype(str)))


def lopo_knn_transfer(
    embeddings: dict[str, np.ndarray],
    obs: pd.DataFrame,
    folds: pd.DataFrame,
    k: int = 15,
    not_fitted: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Per-fold kNN label transfer from the training patients to the held-out patient.

    Parameters
    ----------
    embeddings
        fold key -> (n_obs, d) embedding of *all* spots of ``obs`` (row-aligned) by that
        fold's model, fitted on its training patients.
    obs
        cohort obs (``patient``, ``label``), n_obs rows.
    folds
        the fold table (:func:`tpir_kedro.evaluation.folds.patient_folds`).
    k
        neighbours (lowered to the number of training spots when fewer).
    not_fitted
        fold key -> why that fold's model could not be fitted. Such a fold needs no embedding and
        gets a row with NaN metrics (logged with the reason); any other fold missing from
        ``embeddings`` is an error.

    Classifier: ``KNeighborsClassifier(k, metric='euclidean', weights='uniform')`` fitted on the
    training patients' classified spots, predicting the held-out patient's classified spots.

    Returns
    -------
        One row per fold (fold-table order): ``fold, held_out_patient, n_train, n_test, accuracy,
        macro_f1, balanced_accuracy, classes_absent``. Macro-F1 and balanced accuracy are over the
        tissue classes present in the held-out patient's true labels; ``classes_absent`` is the
        ';'-joined tissue classes it lacks ('' when none). No classified held-out spot: NaN metrics.
    """
    rows = []
    labels = obs["label"].astype(str).to_numpy()
    not_fitted = dict(not_fitted or {})
    for fold in _fold_order(folds):
        if fold in not_fitted and fold not in embeddings:
            held_out, train, test = _fold_spots(obs, folds, fold)
            logger.warning("fold %s: %s; metrics are NaN", fold, not_fitted[fold])
            rows.append({"fold": fold, **held_out_scores(held_out, labels[train], labels[test], None)})
            continue
        if fold not in embeddings:
            raise KeyError(f"no embedding for fold {fold!r} (embeddings for {sorted(embeddings)})")
        emb = np.asarray(embeddings[fold])
        if emb.ndim != 2 or emb.shape[0] != len(obs):
            raise ValueError(f"embedding of fold {fold!r} has shape {emb.shape}; expected ({len(obs)}, d)")
        held_out, train, test = _fold_spots(obs, folds, fold)

        def predict(emb=emb, train=train, test=test):
            clf = KNeighborsClassifier(
                n_neighbors=min(k, int(train.sum())), metric=KNN_METRIC, weights=KNN_WEIGHTS
            )
            return clf.fit(emb[train], labels[train]).predict(emb[test])

        rows.append(_fold_row(fold, held_out, labels[train], labels[test], predict))
    return pd.DataFrame(rows, columns=list(TRANSFER_COLUMNS))


def majority_transfer(obs: pd.DataFrame, folds: pd.DataFrame) -> pd.DataFrame:
    """The floor of :func:`lopo_knn_transfer`: every held-out spot gets the training patients' most
    frequent tissue class (ties: the first in ``TISSUE_CLASSES`` order). Same columns.
    """
    rows = []
    labels = obs["label"].astype(str).to_numpy()
    for fold in _fold_order(folds):
        held_out, train, test = _fold_spots(obs, folds, fold)
        y_train = labels[train]
        majority = majority_class(y_train)
        rows.append(
            _fold_row(
                fold, held_out, y_train, labels[test], lambda n=int(test.sum()), m=majority: np.full(n, m)
            )
        )
    return pd.DataFrame(rows, columns=list(TRANSFER_COLUMNS))


def summarise_transfer(per_fold: pd.DataFrame, prefix: str = "lopo_knn") -> dict:
    """Mean and sample sd (ddof=1; NaN with one fold) over folds with a test set.

    Returns ``{prefix}_accuracy``, ``{prefix}_accuracy_sd``, ``{prefix}_macro_f1``,
    ``{prefix}_macro_f1_sd``, ``{prefix}_balanced_accuracy``, ``{prefix}_balanced_accuracy_sd``
    and ``n_folds`` (the folds counted).
    """
    scored = per_fold[(per_fold["n_test"] > 0) & per_fold["accuracy"].notna()]
    out: dict = {}
    for metric in ("accuracy", "macro_f1", "balanced_accuracy"):
        values = scored[metric].astype(float)
        out[f"{prefix}_{metric}"] = float(values.mean()) if len(values) else float("nan")
        out[f"{prefix}_{metric}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    out["n_folds"] = int(len(scored))
    return out


def paired_fold_differences(
    per_fold_a: pd.DataFrame, per_fold_b: pd.DataFrame, metric: str = "macro_f1"
) -> dict:
    """Per-fold comparison of two models' transfer tables, matched on ``fold`` (folds where either is NaN dropped).

    Returns ``metric``, ``n_folds`` (matched), ``n_a_better`` (folds with a > b), ``n_b_better``,
    ``mean_difference``, ``sd_difference`` (sample sd, ddof=1) and the 95% t interval ``ci_low`` /
    ``ci_high`` of a - b: :func:`~tpir_kedro.evaluation.fold_statistics.paired_difference`.
    """
    for name, table in (("first", per_fold_a), ("second", per_fold_b)):
        if table["fold"].duplicated().any():
            raise ValueError(
                f"paired differences: the {name} table has several rows for fold(s) {sorted(table.loc[table['fold'].duplicated(), 'fold'])}"
            )
    unmatched = set(per_fold_a["fold"]) ^ set(per_fold_b["fold"])
    if unmatched:
        logger.warning(
            "paired differences: folds %s are in only one table and are left out", sorted(unmatched)
        )
    d = paired_difference(
        per_fold_a.set_index("fold")[metric].astype(float), per_fold_b.set_index("fold")[metric].astype(float)
    )
    return {
        "metric": metric,
        "n_folds": d["n_folds"],
        "n_a_better": d["n_folds_ahead"],
        "n_b_better": d["n_folds_behind"],
        "mean_difference": d["mean_difference"],
        "sd_difference": d["sd_difference"],
        "ci_low": d["ci_low"],
        "ci_high": d["ci_high"],
    }
