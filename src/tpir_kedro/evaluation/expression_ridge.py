"""The HEST-Benchmark protocol for expression prediction: a linear regression on frozen features.

Any representation, with or without a gene side, is scored the same way: standardise the features
(fitted on the training spots), project them on their first 256 principal components (fitted on the
training spots), fit a ridge regression from those to the log-normalised expression of the fold's
top genes, and score the held-out spots by Pearson r per gene (:func:`pearson_per_gene`). The ridge
follows HEST's: ``alpha = 100 / (n_components * n_genes)``, the lsqr solver, no intercept (the
components are centred, and Pearson r ignores a per-gene offset).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from tpir_kedro.evaluation.expression_prediction import dense_2d, score_predicted

N_COMPONENTS = 256
ALPHA_SCALE = 100.0


def ridge_alpha(n_components: int, n_genes: int, scale: float = ALPHA_SCALE) -> float:
    """HEST's penalty, ``scale / (n_components * n_genes)``: weaker as the regression grows."""
    if n_components < 1 or n_genes < 1:
        raise ValueError(f"need at least one component and one gene; got {n_components} and {n_genes}")
    return float(scale) / (n_components * n_genes)


def ridge_expression(
    train_features,
    train_expression,
    test_features,
    n_components: int = N_COMPONENTS,
    alpha_scale: float = ALPHA_SCALE,
    seed: int = 0,
) -> np.ndarray:
    """Predict held-out expression from features with HEST's standardise -> PCA -> ridge.

    Parameters
    ----------
    train_features, test_features
        (n_train, d) and (n_test, d) frozen features of the training and held-out spots.
    train_expression
        (n_train, g) the training spots' log-normalised expression (dense or scipy sparse).
    n_components
        principal components kept, lowered to ``min(d, n_train)`` when fewer exist.
    alpha_scale
        the ridge penalty is ``alpha_scale / (components * g)`` (:func:`ridge_alpha`).
    seed
        the solver's and PCA's random state.

    Returns
    -------
        (n_test, g) float64 predicted expression.
    """
    x_train = dense_2d(train_features, "train_features")
    x_test = dense_2d(test_features, "test_features")
    y = train_expression.toarray() if sp.issparse(train_expression) else np.asarray(train_expression)
    y = np.asarray(y, dtype=np.float64)
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(
            f"train and test features must share a dimension; got {x_train.shape} and {x_test.shape}"
        )
    if y.ndim != 2 or y.shape[0] != x_train.shape[0]:
        raise ValueError(
            f"train_expression must have one row per training spot ({x_train.shape[0]}); got {y.shape}"
        )
    if x_train.shape[0] < 2:
        raise ValueError(f"need at least two training spots to fit; got {x_train.shape[0]}")
    scaler = StandardScaler().fit(x_train)
    components = min(int(n_components), x_train.shape[0], x_train.shape[1])
    pca = PCA(n_components=components, random_state=seed).fit(scaler.transform(x_train))
    z_train = pca.transform(scaler.transform(x_train))
    ridge = Ridge(
        alpha=ridge_alpha(components, y.shape[1], alpha_scale),
        solver="lsqr",
        fit_intercept=False,
        max_iter=1000,
        random_state=seed,
    ).fit(z_train, y)
    if x_test.shape[0] == 0:
        return np.zeros((0, y.shape[1]))
    return np.asarray(ridge.predict(pca.transform(scaler.transform(x_test))), dtype=np.float64).reshape(
        x_test.shape[0], y.shape[1]
    )


def ridge_expression_score(
    train_features,
    train_expression,
    test_features,
    observed,
    genes: Sequence[str],
    n_components: int = N_COMPONENTS,
    alpha_scale: float = ALPHA_SCALE,
    seed: int = 0,
) -> dict:
    """:func:`ridge_expression` scored by Pearson r per gene; the same keys as
    :func:`~tpir_kedro.evaluation.expression_prediction.expression_prediction_score`.
    """
    predicted = ridge_expression(
        train_features, train_expression, test_features, n_components, alpha_scale, seed
    )
    return score_predicted(predicted, observed, genes)
