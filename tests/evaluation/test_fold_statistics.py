"""The summary rule: seeds averaged within a fold first, n = held-out patients, paired differences
with a t interval and the folds ahead -- checked on hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tpir_kedro.evaluation.fold_statistics import fold_means, paired_difference, t_interval
from tpir_kedro.pipelines.evaluation.nodes import results_summary

# imagenet's features do not vary with the seed; supervised's two seeds per fold do.
IMAGENET = {"A": 0.60, "B": 0.50, "C": 0.70}
SUPERVISED = {"A": (0.70, 0.66), "B": (0.52, 0.56), "C": (0.69, 0.73)}  # fold means .68, .54, .71


def _results() -> pd.DataFrame:
    rows = []
    for fold, f1 in IMAGENET.items():
        rows += [
            {
                "variant": "imagenet",
                "space": "backbone",
                "probe": "logistic",
                "held_out_patient": fold,
                "seed": s,
                "macro_f1": f1,
            }
            for s in (0, 1)
        ]
    for fold, seeds in SUPERVISED.items():
        rows += [
            {
                "variant": "supervised",
                "space": "adapter",
                "probe": "logistic",
                "held_out_patient": fold,
                "seed": s,
                "macro_f1": f1,
            }
            for s, f1 in enumerate(seeds)
        ]
    table = pd.DataFrame(rows)
    for metric in ("accuracy", "balanced_accuracy", "pearson_r_top50"):
        table[metric] = np.nan
    return table


def test_t_interval_matches_a_hand_computation():
    # mean 0.04333, sd 0.035119, t(0.975, df 2) = 4.302653 -> half width 0.087241
    low, high = t_interval([0.08, 0.04, 0.01])
    assert low == pytest.approx(0.043333 - 0.087241, abs=1e-5) and high == pytest.approx(
        0.043333 + 0.087241, abs=1e-5
    )
    assert all(np.isnan(t_interval([0.1])))  # one fold: no interval


def test_seeds_are_averaged_within_a_fold_before_the_statistics_over_folds():
    summary = results_summary(_results()).set_index(["variant", "space", "probe"])
    sup = summary.loc[("supervised", "adapter", "logistic")]
    assert sup["n_folds"] == 3 and sup["n_seeds"] == 2  # n is folds, not folds x seeds (6)
    assert sup["macro_f1_mean"] == pytest.approx((0.68 + 0.54 + 0.71) / 3)
    assert sup["macro_f1_std"] == pytest.approx(np.std([0.68, 0.54, 0.71], ddof=1))  # over fold means
    # paired per fold against imagenet: .08, .04, .01
    assert sup["macro_f1_diff_vs_imagenet_mean"] == pytest.approx(0.043333, abs=1e-6)
    assert sup["macro_f1_diff_vs_imagenet_sd"] == pytest.approx(0.035119, abs=1e-6)
    assert sup["macro_f1_diff_vs_imagenet_ci_low"] == pytest.approx(-0.043908, abs=1e-5)
    assert sup["macro_f1_diff_vs_imagenet_ci_high"] == pytest.approx(0.130574, abs=1e-5)
    assert (
        sup["macro_f1_diff_vs_imagenet_n_folds"] == 3 and sup["macro_f1_diff_vs_imagenet_n_folds_ahead"] == 3
    )
    assert np.isnan(summary.loc[("imagenet", "backbone", "logistic"), "macro_f1_diff_vs_imagenet_mean"])


def test_fold_means_count_the_seeds_and_paired_differences_skip_unmatched_folds():
    means = fold_means(_results(), ["variant", "space", "probe"], ["macro_f1"])
    assert len(means) == 6 and set(means["n_seeds"]) == {2}
    d = paired_difference(
        pd.Series({"A": 0.7, "B": 0.4, "D": 0.9}), pd.Series({"A": 0.6, "B": 0.5, "C": 0.1})
    )
    assert d["n_folds"] == 2 and d["n_folds_ahead"] == 1 and d["n_folds_behind"] == 1
    assert d["mean_difference"] == pytest.approx(0.0)
