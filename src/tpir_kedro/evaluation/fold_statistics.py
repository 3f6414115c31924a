"""How results over held-out patients are summarised: the one rule every table uses.

The unit of replication is the held-out patient. Seeds of one fold share its patients, its gene
encoders' training set and (for the untrained baselines) its exact features, so they are not
independent: they are averaged within the fold first, and n is the number of folds. Comparisons
against a baseline are paired per fold: the mean difference, a 95% t interval over folds (n - 1
degrees of freedom; none for n = 1) and the count of folds ahead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

FOLD = "held_out_patient"
CONFIDENCE = 0.95


def fold_means(results: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per ``keys`` x held-out patient: each metric averaged over that fold's seeds
    (NaNs skipped), with ``n_seeds`` the number of seed rows averaged.
    """
    keys = list(keys)
    grouped = results.groupby([*keys, FOLD], dropna=False, sort=True)
    means = grouped[list(metrics)].mean()
    means["n_seeds"] = grouped.size()
    return means.reset_index()


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The ``confidence`` t interval of the mean of ``values`` (NaNs dropped); (NaN, NaN) for n < 2."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def paired_difference(a: pd.Series, b: pd.Series) -> dict:
    """Paired per-fold differences ``a - b`` of two fold-indexed Series (folds missing or NaN in
    either are left out).

    Returns ``n_folds``, ``mean_difference``, ``sd_difference`` (ddof 1), ``ci_low`` / ``ci_high``
    (95% t interval over folds), ``n_folds_ahead`` (a > b) and ``n_folds_behind`` (a < b).
    """
    joined = pd.concat({"a": a, "b": b}, axis=1, join="inner").dropna()
    diff = (joined["a"] - joined["b"]).astype(float)
    low, high = t_interval(diff)
    return {
        "n_folds": int(len(diff)),
        "mean_difference": float(diff.mean()) if len(diff) else float("nan"),
        "sd_difference": float(diff.std(ddof=1)) if len(diff) > 1 else float("nan"),
        "ci_low": low,
        "ci_high": high,
        "n_folds_ahead": int((diff > 0).sum()),
        "n_folds_behind": int((diff < 0).sum()),
    }
