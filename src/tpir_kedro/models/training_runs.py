"""One line per image-training run: how many optimiser steps it took and whether its loss levelled off.

A comparison of losses only means something when every run trained long enough to finish learning.
The check is scale-free: the logged step losses are cut into four quarters of the run, and a run
*plateaued* when the change of the mean loss from its third to its last quarter is less than
``tolerance`` (default 10%) of its whole change from the first quarter to the last: the last quarter
of the steps added little to what the run learned -- or when that change is within the noise of
the step losses (under two standard errors of the difference of the two quarter means: a loss
that moves little over the run, such as a soft-target loss near its floor, is judged on its
noise, not on a ratio of two small numbers). Changes, not falls: losses whose targets move
with the embeddings (BLEEP's) need not fall to have converged. Whether the loss fell is a column of
its own (``loss_fell``); a run whose loss never moved is level, and says so there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RUN_KEYS = ["variant", "fold", "seed"]
COLUMNS = [
    *RUN_KEYS,
    "steps",
    "epochs",
    "loss_first_quarter",
    "loss_last_quarter",
    "last_quarter_share_of_change",
    "loss_fell",
    "plateaued",
]


def _run_line(history: pd.DataFrame, tolerance: float) -> dict:
    steps = int(history["step"].max()) + 1 if history["step"].notna().any() else 0
    epochs = int(history["epoch"].max()) + 1 if history["epoch"].notna().any() else 0
    loss = history.dropna(subset=["train_loss_step"]).sort_values("step")["train_loss_step"].to_numpy(float)
    line = {
        "steps": steps,
        "epochs": epochs,
        "loss_first_quarter": np.nan,
        "loss_last_quarter": np.nan,
        "last_quarter_share_of_change": np.nan,
        "loss_fell": False,
        "plateaued": False,
    }
    if len(loss) >= 4:
        q = np.array_split(loss, 4)
        first, third, last = q[0].mean(), q[2].mean(), q[3].mean()
        change = abs(first - last)
        share = abs(third - last) / change if change > 0 else (0.0 if third == last else np.inf)
        noise = (
            2.0 * np.sqrt(q[2].var(ddof=1) / len(q[2]) + q[3].var(ddof=1) / len(q[3]))
            if min(len(q[2]), len(q[3])) > 1
            else 0.0
        )
        level = share < tolerance or abs(third - last) < noise
        line.update(
            loss_first_quarter=first,
            loss_last_quarter=last,
            loss_fell=bool(last < first),
            last_quarter_share_of_change=share,
            plateaued=bool(level),
        )
    return line


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
