"""The HEST-Benchmark expression protocol: standardise -> PCA -> ridge, fitted on training spots."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from tpir_kedro.evaluation.expression_ridge import ridge_alpha, ridge_expression, ridge_expression_score


def test_hest_penalty():
    # HEST: alpha = 100 / (n_features x n_targets), here 256 components and 50 genes.
    assert ridge_alpha(256, 50) == pytest.approx(100 / 12800)
    assert ridge_alpha(4, 5, scale=2.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="at least one"):
        ridge_alpha(0, 50)


def test_predictions_equal_the_closed_form_ridge_on_standardised_principal_components():
    rng = np.random.default_rng(0)
    x_train, x_test = rng.normal(size=(40, 6)) * [1, 2, 3, 4, 5, 6], rng.normal(size=(9, 6))
    y = rng.gamma(2.0, size=(40, 3))
    predicted = ridge_expression(x_train, y, x_test, n_components=4, alpha_scale=100.0)
    # By hand: z-score with the training mean / sd (ddof 0), project on the top-4 right singular
    # vectors of the standardised training matrix, ridge without intercept, alpha = 100 / (4 * 3).
    mean, sd = x_train.mean(0), x_train.std(0)
    s_train, s_test = (x_train - mean) / sd, (x_test - mean) / sd
    centre = s_train.mean(0)  # zero up to rounding; PCA centres anyway
    _, _, vt = np.linalg.svd(s_train - centre, full_matrices=False)
    z_train, z_test = (s_train - centre) @ vt[:4].T, (s_test - centre) @ vt[:4].T
    alpha = 100 / 12
    w = np.linalg.solve(z_train.T @ z_train + alpha * np.eye(4), z_train.T @ y)
    # lsqr stops at its tolerance (sklearn's 1e-4, as HEST leaves it): equal to about 1e-3.
    np.testing.assert_allclose(predicted, z_test @ w, atol=1e-3)
    assert not np.allclose(predicted, z_test @ np.linalg.lstsq(z_train, y, rcond=None)[0], atol=1e-3)
    # Sparse expression (AnnData's usual X) gives the same.
    np.testing.assert_allclose(ridge_expression(x_train, sp.csr_matrix(y), x_test, 4, 100.0), predicted)


def test_expression_linear_in_the_features_is_recovered():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 10))
    y = x @ rng.normal(size=(10, 5)) + 3.0  # an offset, which Pearson r ignores
    score = ridge_expression_score(x[:80], y[:80], x[80:], y[80:], list("abcde"), n_components=256)
    assert score["n_genes"] == 5 and score["n_genes_constant"] == 0
    assert score["pearson_r_mean"] > 0.999
    # Features unrelated to expression do not predict it.
    noise = ridge_expression_score(
        rng.normal(size=(80, 10)), y[:80], rng.normal(size=(40, 10)), y[80:], list("abcde")
    )
    assert abs(noise["pearson_r_mean"]) < 0.3


def test_components_are_lowered_to_what_the_training_spots_allow_and_inputs_checked():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(5, 30)), rng.normal(size=(5, 2))
    assert ridge_expression(x, y, rng.normal(size=(3, 30)), n_components=256).shape == (3, 2)
    with pytest.raises(ValueError, match="one row per training spot"):
        ridge_expression(x, y[:4], x)
    with pytest.raises(ValueError, match="share a dimension"):
        ridge_expression(x, y, x[:, :3])
    with pytest.raises(ValueError, match="at least two training spots"):
        ridge_expression(x[:1], y[:1], x)
