"""One line per image-training run: how many optimiser steps it took, whether its loss fell and whether it
levelled off.

A comparison of losses only means something when every run trained long enough to finish learning, and a
run can only have finished learning if it learned. The logged step losses are cut into four quarters of
the run, and each run is in one of three states (``state``):

- *not learning*: the loss did not fall. It fell (``loss_fell``) only when the last quarter's mean loss
  is below the first quarter's by more than the noise: two standard errors of the difference of the two
  quarter means (each quarter's step-loss variance over its length). Why the noise and not a bare
  ``last < first``: a loss that never moved, such as a soft-target loss stuck near log(batch) -- the
  value of near-uniform targets -- drifts by a few thousandths either way, and a drift down would count
  as learning. Runs with fewer than four logged losses cannot show a fall and are *not learning* too.
  The standard error treats the steps as independent; step losses that wander slowly are noisier than
  that, so the rule errs towards taking a slow drift for a fall, not towards missing a fall.
- *plateaued*: the loss fell and levelled off. The check is scale-free: the change of the mean loss
  from the third to the last quarter is less than ``tolerance`` (default 10%) of its whole change from
  the first quarter to the last -- the last quarter of the steps added little to what the run learned
  -- or that change is within the noise of the step losses (under two standard errors of the
  difference of the two quarter means: a loss whose late moves are small is judged on its noise, not
  on a ratio of two small numbers).
- *still learning*: the loss fell and had not levelled off; more steps would have changed it.

``plateaued`` is true only in the *plateaued* state. It used to be read alone, and was then true for a
run whose loss never moved (level from the start): a run that did not learn passed the check. A loss
whose targets move with the embeddings (BLEEP's) could in principle converge without falling, but
such a run gives no evidence that it learned, so it is reported as not learning rather than as done.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RUN_KEYS = ["variant", "fold", "seed"]
NOT_LEARNING, STILL_LEARNING, PLATEAUED = "not learning", "still learning", "plateaued"
STATES = (NOT_LEARNING, STILL_LEARNING, PLATEAUED)
COLUMNS = [
    *RUN_KEYS,
    "steps",
    "epochs",
    "loss_first_quarter",
    "loss_last_quarter",
    "last_quarter_share_of_change",
    "loss_fell",
    "plateaued",
    "state",
]


def run_state(loss_fell: bool, level: bool) -> str:
    """The state of a run from whether its loss fell and whether it levelled off."""
    if not loss_fell:
        return NOT_LEARNING
    return PLATEAUED if level else STILL_LEARNING


def _two_standard_errors(a: np.ndarray, b: np.ndarray) -> float:
    """Two standard errors of ``a.mean() - b.mean()``; 0 when a quarter is too short to have a spread."""
    if min(len(a), len(b)) < 2:
        return 0.0
    return float(2.0 * np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))


def loss_state(loss: np.ndarray, tolerance: float = 0.1) -> dict:
    """The state of a run from its step losses in order (the module docstring's rule).

    Parameters
    ----------
    loss
        (n_steps,) step losses, first to last.

    Returns
    -------
        ``loss_first_quarter``, ``loss_last_quarter``, ``last_quarter_share_of_change`` (NaN with fewer
        than four losses), ``loss_fell``, ``plateaued`` and ``state``.
    """
    line = {
        "loss_first_quarter": np.nan,
        "loss_last_quarter": np.nan,
        "last_quarter_share_of_change": np.nan,
        "loss_fell": False,
        "plateaued": False,
        "state": NOT_LEARNING,
    }
    loss = np.asarray(loss, dtype=float)
    if len(loss) < 4:
        return line
    q = np.array_split(loss, 4)
    first, third, last = q[0].mean(), q[2].mean(), q[3].mean()
    change = abs(first - last)
    share = abs(third - last) / change if change > 0 else (0.0 if third == last else np.inf)
    fell = bool(first - last > _two_standard_errors(q[0], q[3]))
    level = bool(share < tolerance or abs(third - last) < _two_standard_errors(q[2], q[3]))
    state = run_state(fell, level)
    return {
        "loss_first_quarter": first,
        "loss_last_quarter": last,
        "last_quarter_share_of_change": share,
        "loss_fell": fell,
        "plateaued": state == PLATEAUED,
        "state": state,
    }


def _run_line(history: pd.DataFrame, tolerance: float) -> dict:
    steps = int(history["step"].max()) + 1 if history["step"].notna().any() else 0
    epochs = int(history["epoch"].max()) + 1 if history["epoch"].notna().any() else 0
    loss = history.dropna(subset=["train_loss_step"]).sort_values("step")["train_loss_step"].to_numpy(float)
    return {"steps": steps, "epochs": epochs, **loss_state(loss, tolerance)}


def summarise_training_runs(history: pd.DataFrame, tolerance: float = 0.1) -> pd.DataFrame:
    """``history``: the ``training_history`` table (``epoch, step, train_loss_step, train_loss_epoch``
    and ``variant, fold, seed`` per row). Returns one row per run, ``COLUMNS``.
    """
    if history.empty or "train_loss_step" not in history:
        return pd.DataFrame(columns=COLUMNS)
    rows = [
        {**dict(zip(RUN_KEYS, key)), **_run_line(group, tolerance)}
        for key, group in history.groupby(RUN_KEYS, sort=True)
    ]
    return pd.DataFrame(rows, columns=COLUMNS)
