"""Which pathologist labels the gene side may learn from.

On real data some labelled sections have no H&E image (HER2ST: B1 and C1 are labelled, imageless).
``supervised`` and the image probes can only use labelled spots *with* a patch; scANVI (and through
its class probabilities ``class_guided``'s p . q targets) could also learn from the imageless ones.
Comparing them on different label budgets would credit the gene side with labels the supervised
baseline never saw, so by default (``image_spots``) scANVI sees the labels of spots with a patch
only; ``all`` gives it every label of its training patients.

A fold whose training patients keep no label under the budget gets no scANVI (nothing to supervise);
:func:`missing_labels_reason` and :func:`unfitted_scanvi_reason` say why, for the log and for every
table that would have held it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tpir_kedro.cohort.schema import UNLABELLED, is_classified

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


def missing_labels_reason(obs: pd.DataFrame, patients: list[str], budget: str) -> str | None:
    """Why scANVI fitted on ``patients``' spots under ``budget`` would have no label to learn from.

    Parameters
    ----------
    obs
        cohort spot table with ``patient``, ``label`` and ``has_image``.
    patients
        the training patients of one fold.
    budget
        a label budget (``LABEL_BUDGETS``).

    Returns
    -------
    None when some spot of ``patients`` keeps a tissue class under ``budget``; otherwise the reason,
    e.g. ``"no labelled spot among the training patients (B, C) under scanvi_labels=image_spots:
    their 612 labelled spots have no image"``.
    """
    spots = obs[obs["patient"].astype(str).isin([str(p) for p in patients])]
    if is_classified(budgeted_labels(spots, budget)).any():
        return None
    who = f"the training patients ({', '.join(str(p) for p in patients)})"
    n_labelled = int(is_classified(spots["label"].astype(str)).sum())
    if n_labelled == 0:
        return f"no labelled spot among {who}"
    # Only image_spots drops labels, and it drops exactly those of spots without an image.
    return f"no labelled spot among {who} under scanvi_labels={budget}: their {n_labelled} labelled spots have no image"


def unfitted_scanvi_reason(obs: pd.DataFrame, patients: list[str]) -> str:
    """Why the scANVI of a fold with training ``patients`` was not fitted, read off the spot table.

    For the nodes that score the gene encoders: they are not given the label budget, and the data
    tell it apart. Without any label the budget does not matter; with labels only on imageless
    spots, only ``image_spots`` leaves none (:func:`missing_labels_reason` of the budget that
    explains it). Returned with ``"not fitted: "`` in front.
    """
    # The budget that keeps every label first: its reason holds under both.
    for budget in ("all", "image_spots"):
        reason = missing_labels_reason(obs, patients, budget)
        if reason:
            return f"not fitted: {reason}"
    return (
        f"not fitted, although the training patients ({', '.join(str(p) for p in patients)}) have labelled "
        "spots with an image: the gene encoders come from another cohort or run; re-run gene_vae"
    )
