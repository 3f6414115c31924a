"""Expression prediction from image embeddings (BLEEP's second task)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import pearsonr

from tpir_kedro.evaluation.expression_prediction import (
    expression_prediction_score,
    nearest_references,
    pearson_per_gene,
    predict_expression,
)


def test_k1_query_equal_to_a_reference_returns_its_expression():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(30, 8))
    expression = rng.gamma(2.0, size=(30, 12))
    query = reference[[4, 17, 4]]
    predicted = predict_expression(query, reference, expression, k=1)
    np.testing.assert_array_equal(predicted, expression[[4, 17, 4]])
    # Same with sparse expression (AnnData's usual X).
    np.testing.assert_array_equal(
        predict_expression(query, reference, sp.csr_matrix(expression), k=1), expression[[4, 17, 4]]
    )


def test_prediction_is_mean_of_the_k_nearest_by_cosine():
    # Cosine: (10, 0) is nearest to (1, 0.1) and (1, 0), then (0, 1); the norm does not matter.
    reference = np.array([[1.0, 0.1], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    expression = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 50.0], [7.0, 70.0]])
    query = np.array([[10.0, 0.0]])
    assert nearest_references(query, reference, k=2).tolist() == [[2, 0]]
    np.testing.assert_allclose(predict_expression(query, reference, expression, k=2), [[3.0, 30.0]])
    # k above n_r is lowered to n_r: the mean of every reference.
    np.testing.assert_allclose(predict_expression(query, reference, expression, k=50), [[4.0, 40.0]])


def test_prediction_checks_its_inputs():
    reference, expression = np.ones((3, 2)), np.ones((3, 4))
    with pytest.raises(ValueError, match="one row per reference"):
        predict_expression(np.ones((1, 2)), reference, expression[:2])
    with pytest.raises(ValueError, match="share a dimension"):
        predict_expression(np.ones((1, 3)), reference, expression)
    with pytest.raises(ValueError, match="k must be"):
        predict_expression(np.ones((1, 2)), reference, expression, k=0)


def test_pearson_by_hand_on_three_spots(caplog):
    predicted = np.array([[1.0, 1.0, 0.0, 1.0], [2.0, 2.0, 0.0, 2.0], [3.0, 3.0, 0.0, 3.0]])
    observed = np.array([[1.0, 2.0, 1.0, 5.0], [3.0, 4.0, 2.0, 5.0], [2.0, 6.0, 3.0, 5.0]])
    # g1: centred (-1, 0, 1) vs (-1, 1, 0): sum 1, norms sqrt 2 each -> r = 1/2.
    # g2: observed = 2 x predicted -> 1. g3: predicted constant -> NaN. g4: observed constant -> NaN.
    with caplog.at_level(logging.INFO, logger="tpir_kedro.evaluation.expression_prediction"):
        r = pearson_per_gene(predicted, observed, ["g1", "g2", "g3", "g4"])
    assert r.name == "pearson_r" and list(r.index) == ["g1", "g2", "g3", "g4"]
    assert r["g1"] == pytest.approx(0.5) and r["g2"] == pytest.approx(1.0)
    assert math.isnan(r["g3"]) and math.isnan(r["g4"])
    assert "NaN for 2 of 4 gene(s)" in caplog.text


def test_pearson_matches_scipy_on_random_data():
    rng = np.random.default_rng(1)
    predicted, observed = rng.normal(size=(50, 5)), rng.normal(size=(50, 5))
    observed[:, 0] += 2 * predicted[:, 0]
    r = pearson_per_gene(predicted, observed, list("abcde"))
    np.testing.assert_allclose(r.to_numpy(), [pearsonr(predicted[:, j], observed[:, j])[0] for j in range(5)])
    with pytest.raises(ValueError, match="must be"):
        pearson_per_gene(predicted, observed[:, :4], list("abcde"))


def test_expression_prediction_score_leaves_constant_genes_out():
    # k = 1 and queries equal to references: predictions are the references' expression exactly.
    reference = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [1.0, 1.0]])
    expression = np.array([[1.0, 1.0, 0.0], [2.0, 3.0, 0.0], [3.0, 2.0, 0.0], [4.0, 4.0, 0.0]])
    observed = np.array([[1.0, 4.0, 1.0], [2.0, 3.0, 2.0], [3.0, 2.0, 3.0], [4.0, 1.0, 4.0]])
    score = expression_prediction_score(reference, reference, expression, observed, ["a", "b", "c"], k=1)
    # a: identical -> 1. b: (1, 3, 2, 4) vs (4, 3, 2, 1) -> centred (-1.5, .5, -.5, 1.5) . (1.5, .5, -.5, -1.5)
    #    = -2.25 + .25 + .25 - 2.25 = -4 over 5 -> -0.8. c: predicted all 0 -> NaN, left out.
    per_gene = score["per_gene"]
    assert (
        per_gene["a"] == pytest.approx(1.0)
        and per_gene["b"] == pytest.approx(-0.8)
        and math.isnan(per_gene["c"])
    )
    assert score["pearson_r_mean"] == pytest.approx(0.1) and score["pearson_r_median"] == pytest.approx(0.1)
    assert (score["n_genes"], score["n_genes_constant"]) == (3, 1)

    all_constant = expression_prediction_score(
        reference, reference, expression[:, [2]], observed[:, [0]], ["c"], k=1
    )
    assert math.isnan(all_constant["pearson_r_mean"]) and all_constant["n_genes_constant"] == 1
