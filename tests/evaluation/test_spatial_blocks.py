"""Spatial blocks within one section: whole-block bootstrap draws, paired differences over the same
draws, point estimates by the project's scoring rule, and cross-validation folds of whole blocks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from tpir_kedro.cohort.schema import TISSUE_CLASSES
from tpir_kedro.evaluation.held_out_scores import METRICS, classification_metrics
from tpir_kedro.evaluation.probes import fit_logistic_probe
from tpir_kedro.evaluation.spatial_blocks import (
    LISTED_MACRO_F1,
    block_bootstrap,
    block_draw_indices,
    blocked_folds,
    listed_macro_f1,
    spatial_blocks,
    within_section_predictions,
)

IC, CIS, II, BG, CT, AT = TISSUE_CLASSES
N_DRAWS = 40


def _section(side: int = 10, block_size: int = 3):
    """A side x side array (100 spots): three tissue regions, plus a rare class in one corner tile."""
    xx, yy = np.meshgrid(np.arange(side) + 5, np.arange(side) + 7, indexing="ij")
    x, y = xx.ravel(), yy.ravel()
    labels = np.where(x - 5 < 4, IC, np.where(y - 7 < 5, CT, AT)).astype(object)
    labels[(x - 5 >= 9) & (y - 7 >= 9)] = II  # one spot, alone in the last tile
    return x, y, labels, spatial_blocks(x, y, block_size)


def _members(blocks) -> dict[int, set[int]]:
    return {int(b): set(np.flatnonzero(blocks == b)) for b in np.unique(blocks)}


def _errors(labels, blocks, rank: int, fewer: int = 0) -> np.ndarray:
    """A copy of labels with the first min(``rank``, block size) - ``fewer`` spots of each block mislabelled."""
    pred = labels.copy()
    for b in np.unique(blocks):
        spots = np.flatnonzero(blocks == b)
        for i in spots[: min(rank, len(spots)) - fewer]:
            pred[i] = BG if labels[i] != BG else IC
    return pred


def test_spatial_blocks_put_a_tile_together_and_separate_far_spots():
    x = np.array([10, 11, 12, 12, 13, 30, 10])
    y = np.array([20, 21, 22, 20, 20, 20, 23])
    ids = spatial_blocks(x, y, 3)
    assert ids[0] == ids[1] == ids[2] == ids[3]  # x 10..12, y 20..22: one tile
    assert ids[4] != ids[0]  # one step past the tile along x
    assert ids[6] != ids[0]  # one step past the tile along y
    assert ids[5] != ids[0] and ids[5] != ids[4]  # far away
    assert sorted(set(ids)) == list(range(len(set(ids))))  # 0..B-1
    assert np.array_equal(spatial_blocks(x + 100, y - 7, 3), ids)  # tiles start at the section
    wide = spatial_blocks(x, y, (4, 3))
    assert wide[4] == wide[0] and wide[6] != wide[0]


def test_spatial_blocks_reject_float_coordinates_and_bad_sizes():
    with pytest.raises(ValueError, match="integers"):
        spatial_blocks(np.array([0.5]), np.array([1.0]), 2)
    with pytest.raises(ValueError, match="block_size"):
        spatial_blocks(np.array([0]), np.array([1]), 0)


def test_every_draw_takes_whole_blocks_each_pick_contiguous():
    _, _, _, blocks = _section()
    members = _members(blocks)
    n_blocks = len(members)
    for idx in block_draw_indices(blocks, 25, seed=3):
        pos, picks = 0, 0
        while pos < len(idx):
            b = int(blocks[idx[pos]])
            size = len(members[b])
            assert set(idx[pos : pos + size]) == members[b]  # the pick is the whole block, together
            pos, picks = pos + size, picks + 1
        assert picks == n_blocks  # B picks per draw
        counts = np.bincount(idx, minlength=len(blocks))
        for spots in members.values():
            assert len({int(counts[i]) for i in spots}) == 1  # a block's spots enter equally often


def test_draws_resample_blocks_not_spots():
    # Across draws, some block is drawn twice and some not at all: a bootstrap, not a permutation.
    _, _, _, blocks = _section()
    idx = next(block_draw_indices(blocks, 1, seed=0))
    counts = np.bincount(idx, minlength=len(blocks))
    assert counts.max() >= 2 and counts.min() == 0


def test_identical_prediction_sets_differ_by_zero_in_every_draw():
    _, _, labels, blocks = _section()
    pred = _errors(labels, blocks, 2)
    boot = block_bootstrap(labels, {"a": pred, "b": pred.copy()}, blocks, n_draws=N_DRAWS, seed=1)
    for metric in METRICS:
        a = boot.draws[boot.draws["name"] == "a"].set_index("draw")[metric]
        b = boot.draws[boot.draws["name"] == "b"].set_index("draw")[metric]
        assert np.array_equal(a.to_numpy(), b.to_numpy())
        d = boot.paired_difference("a", "b", metric)
        assert (d["point_difference"], d["ci_low"], d["ci_high"]) == (0.0, 0.0, 0.0)
        assert d["share_ahead"] == d["share_behind"] == 0.0 and d["n_draws"] == N_DRAWS


def test_a_set_better_on_every_block_is_ahead_in_every_draw():
    _, _, labels, blocks = _section()
    # better's errors are worse's minus one spot in every block (the one-spot block included)
    better, worse = _errors(labels, blocks, 2, fewer=1), _errors(labels, blocks, 2)
    boot = block_bootstrap(
        labels, {"better": better, "worse": worse}, blocks, n_draws=N_DRAWS, seed=2, classes=[IC, CT, AT]
    )
    for metric in (*METRICS, LISTED_MACRO_F1):
        d = boot.paired_difference("better", "worse", metric)
        assert d["share_ahead"] == 1.0 and d["ci_low"] > 0 and d["point_difference"] > 0, metric
    assert boot.headline == LISTED_MACRO_F1
    assert boot.paired_difference("better", "worse") == boot.paired_difference(
        "better", "worse", LISTED_MACRO_F1
    )
    assert boot.paired_difference("worse", "better")["share_behind"] == 1.0


def test_point_estimates_are_the_project_rule_on_all_spots_and_intervals_are_percentiles():
    _, _, labels, blocks = _section()
    pred = _errors(labels, blocks, 2)
    listed = [IC, CT, II]
    boot = block_bootstrap(labels, {"m": pred}, blocks, n_draws=N_DRAWS, seed=4, classes=listed)
    expected = classification_metrics(labels, pred)
    for metric in METRICS:
        assert boot.point.loc["m", metric] == pytest.approx(expected[metric])
    # The listed macro-F1 by sklearn directly: F1 of the listed classes, every spot counted.
    direct = f1_score(labels.astype(str), pred.astype(str), labels=listed, average="macro", zero_division=0)
    assert boot.point.loc["m", LISTED_MACRO_F1] == pytest.approx(direct)
    assert listed_macro_f1(labels, pred, listed) != pytest.approx(expected["macro_f1"])  # it does restrict

    summary = boot.summary().set_index(["name", "metric"])
    row = summary.loc[("m", "accuracy")]
    per_draw = boot.draws["accuracy"].to_numpy()
    assert row["point"] == pytest.approx(expected["accuracy"])
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(tuple(np.percentile(per_draw, [2.5, 97.5])))
    assert row["n_draws"] == N_DRAWS and row["ci_low"] < row["ci_high"]


def test_a_draw_missing_a_listed_class_scores_over_the_listed_classes_it_has():
    _, _, labels, blocks = _section()
    pred = _errors(labels, blocks, 1)
    listed = [IC, II, AT]
    boot = block_bootstrap(labels, {"m": pred}, blocks, n_draws=N_DRAWS, seed=5, classes=listed)
    scored = boot.draws.set_index("draw")[LISTED_MACRO_F1]
    lacking = 0
    for draw, idx in enumerate(block_draw_indices(blocks, N_DRAWS, seed=5)):
        t, p = labels[idx].astype(str), pred[idx].astype(str)
        present = [c for c in listed if c in set(t)]
        assert scored[draw] == pytest.approx(f1_score(t, p, labels=present, average="macro", zero_division=0))
        lacking += II not in set(t)
    assert 0 < lacking < N_DRAWS  # the rare class's block is missed by some draws, not all
    assert boot.summary().set_index(["name", "metric"]).loc[("m", LISTED_MACRO_F1), "n_draws"] == N_DRAWS


def test_the_same_seed_gives_the_same_draws_and_folds():
    _, _, labels, blocks = _section()
    pred = {"m": _errors(labels, blocks, 1)}
    one = block_bootstrap(labels, pred, blocks, n_draws=20, seed=7)
    two = block_bootstrap(labels, pred, blocks, n_draws=20, seed=7)
    other = block_bootstrap(labels, pred, blocks, n_draws=20, seed=8)
    pd.testing.assert_frame_equal(one.draws, two.draws)
    assert not one.draws.equals(other.draws)
    assert np.array_equal(blocked_folds(blocks, 4, seed=7), blocked_folds(blocks, 4, seed=7))
    assert not np.array_equal(blocked_folds(blocks, 4, seed=7), blocked_folds(blocks, 4, seed=8))


@pytest.mark.parametrize("with_labels", [False, True])
def test_blocked_folds_keep_blocks_whole_fill_every_fold_and_balance_counts(with_labels):
    _, _, labels, blocks = _section()
    folds = blocked_folds(blocks, 5, seed=0, y=labels if with_labels else None)
    for spots in _members(blocks).values():
        assert len({int(folds[i]) for i in spots}) == 1
    sizes = np.bincount(folds, minlength=5)
    assert sorted(set(folds)) == list(range(5)) and sizes.min() > 0
    assert sizes.max() - sizes.min() <= 9  # within one full block of each other
    if with_labels:  # each common class reaches at least 4 of the 5 folds
        for c in (IC, CT, AT):
            assert len(set(folds[labels == c])) >= 4


def test_blocked_folds_need_as_many_blocks_as_folds():
    with pytest.raises(ValueError, match="at least n_folds blocks"):
        blocked_folds(np.array([0, 0, 1, 1]), 3)


def test_out_of_fold_predictions_never_see_the_predicted_fold():
    _, _, labels, blocks = _section()
    folds = blocked_folds(blocks, 4, seed=0)
    features = np.arange(len(labels), dtype=float)[:, None]  # a spot's feature is its index

    class Recorder:
        def __init__(self, x, y, groups):
            assert len(set(groups)) == 3  # the other three folds
            self.seen = set(x[:, 0].astype(int))

        def predict(self, x):
            assert not self.seen & set(x[:, 0].astype(int))
            return np.array([AT] * len(x))

    pred = within_section_predictions(features, labels, folds, Recorder)
    assert pred.shape == labels.shape and set(pred) == {AT}


def test_the_logistic_probe_passes_as_it_is_with_blocked_inner_folds():
    _, _, labels, blocks = _section()
    rng = np.random.default_rng(0)
    onehot = (labels[:, None] == np.array([IC, CT, AT, II])[None, :]).astype(float)
    features = onehot * 3 + rng.normal(size=onehot.shape)
    folds = blocked_folds(blocks, 4, seed=0, y=labels)
    fitted = []

    def fit(x, y, groups):  # fit_logistic_probe's own signature; one C keeps the test fast
        fitted.append(fit_logistic_probe(x, y, groups, Cs=(1.0,)))
        return fitted[-1]

    pred = within_section_predictions(features, labels, folds, fit)
    assert [len(p.inner_patients) for p in fitted] == [3, 3, 3, 3]  # inner splits: the other folds
    assert classification_metrics(labels[labels != II], pred[labels != II])["accuracy"] > 0.9
