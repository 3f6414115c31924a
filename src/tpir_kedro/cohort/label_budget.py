"""Which pathologist labels the gene side may learn from.

On real data some labelled sections have no H&E image (HER2ST: B1 and C1 are labelled, imageless).
``supervised`` and the image probes can only use labelled spots *with* a patch; scANVI (and through
its class probabilities ``class_guided``'s p . q targets) could also learn from the imageless ones.
Comparing them on different label budgets would credit the gene side with labels the supervised
baseline never saw, so by default (``image_spots``) scANVI sees the labels of spots with a patch
only; ``all`` gives it every label of its training patients.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tpir_kedro.cohort.schema import UNLABELLED

LABEL_BUDGETS = ("image_spots", "all")
DEFAULT_LABEL_BUDGET = "image_spots"


def budgeted_labels(
    obs: pd.DataFrame, budget: str = DEFAULT_LABEL_BUDGET, label_key: str = "label"
) -> pd.Series:
    """``obs[label_key]`` as strings, with the spots outside ``budget`` made ``unlabelled``.

    Parameters
    ----------
    obs
        (n_spots, ...) spot table with ``label_key`` and the boolean ``has_image``.
    budget
        ``image_spots``: only spots with a patch keep their label; ``all``: every label kept.

    Returns
    -------
    (n_spots,) string Series on ``obs.index``.
    """
    if budget not in LABEL_BUDGETS:
        raise ValueError(f"unknown label budget {budget!r}; choose one of {LABEL_BUDGETS}")
    labels = obs[label_key].astype(str)
    if budget == "all":
        return labels
    has_image = obs["has_image"].to_numpy(dtype=bool)
    return pd.Series(np.where(has_image, labels.to_numpy(), UNLABELLED), index=obs.index, name=label_key)
