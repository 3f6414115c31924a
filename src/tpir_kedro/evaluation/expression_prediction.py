"""BLEEP's second task: predict a held-out spot's expression from its image, by retrieval.

Each held-out spot's image embedding queries the *gene-side* embeddings of the training spots in
the joint space; its predicted expression is the mean log-normalised expression of its top-k
nearest training spots. Scored by Pearson r per gene over the held-out spots (the caller picks the
genes, e.g. the fold's top highly variable genes, fitted on the training patients).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

logger = logging.getLogger(__name__)


def dense_2d(a, name: str) -> np.ndarray:
    x = a.toarray() if sp.issparse(a) else np.asarray(a)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D; got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has non-finite values")
    return x


def nearest_references(
    query: np.ndarray, reference: np.ndarray, k: int = 50, metric: str = "cosine"
) -> np.ndarray:
    """(n_q, k') indices into (n_r, d) ``reference`` of the k' = min(k, n_r) nearest rows to each (n_q, d) query row.

    Exact (brute-force) search, nearest first.
    """
    q = dense_2d(query, "query")
    r = dense_2d(reference, "reference")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query and reference must share a dimension; got {q.shape} and {r.shape}")
    if r.shape[0] == 0:
        raise ValueError("no reference spot to predict from")
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    nn = NearestNeighbors(n_neighbors=min(k, r.shape[0]), metric=metric, algorithm="brute").fit(r)
    return nn.kneighbors(q, return_distance=False)


def predict_expression(
    query: np.ndarray, reference: np.ndarray, reference_expression, k: int = 50, metric: str = "cosine"
) -> np.ndarray:
    """Mean expression of each query's top-k nearest references.

    Parameters
    ----------
    query
        (n_q, d) image embeddings of the held-out spots in the joint space.
    reference
        (n_r, d) gene-side embeddings of the training spots in the same space.
    reference_expression
        (n_r, g) their log-normalised expression (dense or scipy sparse).
    k
        neighbours, lowered to n_r when fewer; an unweighted mean, as BLEEP.
    metric
        any sklearn ``NearestNeighbors`` metric; cosine by default, as the contrastive
        loss compares normalised embeddings.

    Returns
    -------
        (n_q, g) float64 predicted expression.
    """
    n_r = np.shape(reference)[0]
    if reference_expression.shape[0] != n_r:
        raise ValueError(
            f"reference_expression must have one row per reference spot ({n_r}); got {reference_expression.shape}"
        )
    idx = nearest_references(query, reference, k=k, metric=metric)
    n_q, k_used = idx.shape
    # A sparse (n_q, n_r) averaging matrix: never materialises the (n_q, k, g) neighbour block.
    weights = sp.csr_matrix(
        (np.full(idx.size, 1.0 / k_used), idx.ravel(), np.arange(0, idx.size + 1, k_used)), shape=(n_q, n_r)
    )
    expression = (
        reference_expression.tocsr().astype(np.float64)
        if sp.issparse(reference_expression)
        else np.asarray(reference_expression, dtype=np.float64)
    )
    predicted = weights @ expression
    return np.asarray(predicted.toarray() if sp.issparse(predicted) else predicted, dtype=np.float64)


def pearson_per_gene(predicted: np.ndarray, observed: np.ndarray, genes: Sequence[str]) -> pd.Series:
    """Pearson r between predicted and observed expression of each gene, over spots.

    Parameters
    ----------
    predicted, observed
        (n_spots, g) arrays (observed may be scipy sparse).
    genes
        g gene names, the Series index.

    Returns
    -------
        (g,) float Series ``pearson_r``. NaN where the gene is constant in either array (r is
        undefined), or for every gene with fewer than two spots; the count is logged. Downstream
        means leave those genes out.
    """
    pred = dense_2d(predicted, "predicted")
    obs = dense_2d(observed, "observed")
    genes = [str(g) for g in genes]
    if pred.shape != obs.shape or pred.shape[1] != len(genes):
        raise ValueError(
            f"predicted and observed must be (n_spots, {len(genes)}) each; got {pred.shape} and {obs.shape}"
        )
    # Exactly constant, not "tiny sd": centring a constant column leaves rounding residue whose r is noise.
    constant = (
        (np.ptp(pred, axis=0) == 0) | (np.ptp(obs, axis=0) == 0)
        if pred.shape[0]
        else np.ones(len(genes), bool)
    )
    pc = pred - pred.mean(axis=0)
    oc = obs - obs.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (pc * oc).sum(axis=0) / np.sqrt((pc**2).sum(axis=0) * (oc**2).sum(axis=0))
    r = np.where(constant, np.nan, np.clip(r, -1.0, 1.0))
    if constant.any():
        logger.info(
            "Pearson r is NaN for %d of %d gene(s): constant over the spots in prediction or observation",
            int(constant.sum()),
            len(genes),
        )
    return pd.Series(r, index=pd.Index(genes, name="gene"), name="pearson_r", dtype=float)


def expression_prediction_score(
    query: np.ndarray,
    reference: np.ndarray,
    reference_expression,
    observed,
    genes: Sequence[str],
    k: int = 50,
    metric: str = "cosine",
) -> dict:
    """Predict held-out expression (:func:`predict_expression`) and score it (:func:`pearson_per_gene`).

    Parameters
    ----------
    query
        (n_q, d) held-out image embeddings; reference: (n_r, d) training gene-side embeddings.
    reference_expression
        (n_r, g) training expression; observed: (n_q, g) held-out expression,
        both log-normalised over the same ``genes`` (g names), in that order.
    k, metric
        as :func:`predict_expression`.

    Returns
    -------
        :func:`score_predicted`'s dictionary.
    """
    predicted = predict_expression(query, reference, reference_expression, k=k, metric=metric)
    return score_predicted(predicted, observed, genes)


def score_predicted(predicted: np.ndarray, observed, genes: Sequence[str]) -> dict:
    """Pearson r per gene of (n, g) predictions against (n, g) observations, and its mean and median
    over the genes with a defined r: the score every expression protocol reports.

    Returns
    -------
        ``pearson_r_mean``, ``pearson_r_median`` (NaN when no gene has a defined r), ``n_genes`` (g),
        ``n_genes_constant`` (genes whose r is NaN), ``per_gene`` (the (g,) Series).
    """
    per_gene = pearson_per_gene(predicted, observed, genes)
    defined = per_gene.dropna()
    return {
        "pearson_r_mean": float(defined.mean()) if len(defined) else float("nan"),
        "pearson_r_median": float(defined.median()) if len(defined) else float("nan"),
        "n_genes": int(len(per_gene)),
        "n_genes_constant": int(per_gene.isna().sum()),
        "per_gene": per_gene,
    }
