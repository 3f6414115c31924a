"""The per-run training summary: a run is *plateaued* only when its loss fell beyond its noise and then
levelled off; a run whose loss did not fall is *not learning*, never plateaued."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from tpir_kedro.models.training_runs import COLUMNS, STATES, summarise_training_runs
from tpir_kedro.pipelines.contrastive.nodes import training_runs

STEPS = 400


def _history(losses: np.ndarray, variant: str = "clip") -> pd.DataFrame:
    steps = np.arange(len(losses))
    return pd.DataFrame(
        {
            "epoch": steps // 10,
            "step": steps,
            "train_loss_step": losses,
            "train_loss_epoch": np.nan,
            "variant": variant,
            "fold": "holdout_B",
            "seed": 0,
        }
    )


@pytest.fixture(scope="module")
def histories() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    t = np.arange(STEPS, dtype=float)
    noise = rng.normal(0.0, 0.05, STEPS)
    curves = {
        "falling_then_flat": 0.3 + 2.0 * np.exp(-t / 30) + noise,
        "still_falling": 2.5 - 0.004 * t + noise,
        # log(128), the loss of near-uniform targets over a batch of 128, with step noise and nothing else
        "flat_noisy": np.log(128) + rng.normal(0.0, 0.05, STEPS),
        "rising": 2.2 + 0.8 * (1 - np.exp(-t / 30)) + noise,
    }
    return pd.concat([_history(losses, variant) for variant, losses in curves.items()], ignore_index=True)


@pytest.fixture(scope="module")
def by_variant(histories) -> pd.DataFrame:
    table = summarise_training_runs(histories)
    assert list(table.columns) == COLUMNS
    return table.set_index("variant")


def test_a_loss_that_fell_and_levelled_off_plateaued(by_variant):
    run = by_variant.loc["falling_then_flat"]
    assert run["state"] == "plateaued" and run["plateaued"] and run["loss_fell"]
    assert run["steps"] == STEPS and run["epochs"] == STEPS // 10


def test_a_loss_still_falling_is_still_learning(by_variant):
    run = by_variant.loc["still_falling"]
    assert run["state"] == "still learning" and run["loss_fell"] and not run["plateaued"]
    assert run["last_quarter_share_of_change"] == pytest.approx(1 / 3, abs=0.05)


@pytest.mark.parametrize("variant", ["flat_noisy", "rising"])
def test_a_loss_that_did_not_fall_is_not_learning_and_not_plateaued(by_variant, variant):
    run = by_variant.loc[variant]
    assert run["state"] == "not learning"
    assert not run["loss_fell"] and not run["plateaued"]


def test_a_drift_within_the_noise_is_not_a_fall():
    # The last quarter is a little below the first (a bare last < first would call it a fall), by less
    # than two standard errors of the difference of the quarter means.
    rng = np.random.default_rng(1)
    losses = np.log(128) + rng.normal(0.0, 0.05, STEPS) - np.linspace(0.0, 0.005, STEPS)
    q = np.array_split(losses, 4)
    assert q[3].mean() < q[0].mean()
    run = summarise_training_runs(_history(losses, "drift")).iloc[0]
    assert run["state"] == "not learning" and not run["loss_fell"] and not run["plateaued"]


def test_a_noiseless_flat_loss_and_a_too_short_run_are_not_learning():
    flat = _history(np.full(200, 1.0), "flat")
    short = _history(np.array([2.0, 1.0, 0.5]), "short")
    table = summarise_training_runs(pd.concat([flat, short])).set_index("variant")
    assert (table["state"] == "not learning").all()
    assert not table["plateaued"].any() and not table["loss_fell"].any()


def test_every_state_is_one_of_the_three(by_variant):
    assert set(by_variant["state"]) == set(STATES)


def test_the_node_warns_a_run_that_did_not_learn_apart_from_one_still_learning(histories, caplog):
    with caplog.at_level(logging.WARNING, logger="tpir_kedro.pipelines.contrastive.nodes"):
        runs = training_runs(histories)
    assert len(runs) == 4
    messages = {
        variant: [r.getMessage() for r in caplog.records if f"variant {variant}," in r.getMessage()]
        for variant in runs["variant"]
    }
    assert messages["falling_then_flat"] == []
    assert len(messages["still_falling"]) == 1 and "had not levelled off" in messages["still_falling"][0]
    for variant in ("flat_noisy", "rising"):
        assert len(messages[variant]) == 1
        assert "did not fall" in messages[variant][0] and "levelled off" not in messages[variant][0]


def test_a_run_that_levelled_off_is_told_from_one_still_falling():
    t = np.arange(200, dtype=float)
    levelled = 0.2 + 2.0 * np.exp(-t / 15)
    falling = 2.2 - 0.01 * t
    rising_then_level = 3.0 - 0.8 * np.exp(-t / 15)  # a moving-target loss (BLEEP's) may rise as it converges
    histories = [
        _history(levelled, "levelled"),
        _history(falling, "falling"),
        _history(np.full(200, 1.0), "flat"),
        _history(rising_then_level, "rising"),
    ]
    table = summarise_training_runs(pd.concat(histories))
    by = table.set_index("variant")
    assert by.loc["levelled", "steps"] == 200 and by.loc["levelled", "epochs"] == 20
    assert by.loc["levelled", "plateaued"] and by.loc["levelled", "loss_fell"]
    assert not by.loc["falling", "plateaued"] and by.loc["falling", "loss_fell"]
    assert by.loc["falling", "last_quarter_share_of_change"] == pytest.approx(1 / 3, abs=0.01)
    # A loss that did not fall did not learn: level or not, it is no plateau (issue 28).
    assert not by.loc["rising", "plateaued"] and not by.loc["rising", "loss_fell"]
    assert not by.loc["flat", "plateaued"] and not by.loc["flat", "loss_fell"]
    assert by.loc["rising", "state"] == by.loc["flat", "state"] == "not learning"
