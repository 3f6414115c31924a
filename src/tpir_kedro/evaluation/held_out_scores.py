"""How a held-out patient's predicted tissue classes are scored: the one rule of every LOPO readout.

The gene side's label transfer (:mod:`~tpir_kedro.evaluation.embedding_metrics`), the image probes
(:mod:`~tpir_kedro.evaluation.probes`) and ``predict``'s slide summary all score here: accuracy,
macro-F1 and balanced accuracy over the tissue classes the held-out patient has, the classes it
lacks, the majority-class floor, and one fold's row of those numbers.

Only the six tissue classes count ('undetermined' and 'unlabelled' spots are never scored); a class
missing from a held-out patient is normal, never an error.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, recall_score

from tpir_kedro.cohort.schema import TISSUE_CLASSES

METRICS: tuple[str, ...] = ("accuracy", "macro_f1", "balanced_accuracy")
SCORE_COLUMNS: tuple[str, ...] = ("held_out_patient", "n_train", "n_test", *METRICS, "classes_absent")


def classes_absent(y_true) -> str:
    """The tissue classes missing from (n,) ``y_true``, ';'-joined in ``TISSUE_CLASSES`` order ('' when none)."""
    seen = set(np.asarray(y_true, dtype=object).astype(str))
    return ";".join(c for c in TISSUE_CLASSES if c not in seen)


def classification_metrics(y_true, y_pred) -> dict[str, float]:
    """Accuracy, macro-F1 and balanced accuracy of (n,) ``y_pred`` against (n,) ``y_true``.

    Macro-F1 and balanced accuracy (mean recall) average over the tissue classes *present in*
    ``y_true`` only: an absent class has no recall to score. A spot predicted as an absent class
    still counts as a miss (lower recall) of its true class. Accuracy is over all n spots.

    Returns ``accuracy``, ``macro_f1``, ``balanced_accuracy``; all NaN when ``y_true`` is empty,
    macro-F1 and balanced accuracy NaN when it holds no tissue class.
    """
    y_true = np.asarray(y_true, dtype=object).astype(str)
    y_pred = np.asarray(y_pred, dtype=object).astype(str)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(
            f"y_true and y_pred must be (n,) arrays of one length; got {y_true.shape} and {y_pred.shape}"
        )
    out = dict.fromkeys(METRICS, np.nan)
    if len(y_true) == 0:
        return out
    out["accuracy"] = float(np.mean(y_pred == y_true))
    present = [c for c in TISSUE_CLASSES if c in set(y_true)]
    if present:
        out["macro_f1"] = float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))
        out["balanced_accuracy"] = float(
            recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
        )
    return out


def majority_class(y_train) -> str:
    """The most frequent tissue class of (n,) ``y_train`` (ties: the first in ``TISSUE_CLASSES``)."""
    y_train = np.asarray(y_train, dtype=object).astype(str)
    counts = {c: int((y_train == c).sum()) for c in TISSUE_CLASSES}
    return max(TISSUE_CLASSES, key=lambda c: counts[c])  # max keeps the first of equal counts


def unscored_reason(y_train, y_test, y_pred) -> str | None:
    """Why a fold has no metrics (None when it has them)."""
    if len(y_test) == 0:
        return "no classified spot in the held-out patient"
    if len(y_train) == 0:
        return "no classified spot in the training patients"
    return "the model could not be fitted" if y_pred is None else None


def held_out_scores(held_out: str, y_train, y_test, y_pred) -> dict:
    """One fold's ``SCORE_COLUMNS``: sizes, :func:`classification_metrics` of (n_test,) ``y_pred``
    against ``y_test`` (NaN when :func:`unscored_reason` gives one) and the classes absent.
    """
    row = {
        "held_out_patient": str(held_out),
        "n_train": int(len(y_train)),
        "n_test": int(len(y_test)),
        **dict.fromkeys(METRICS, np.nan),
        "classes_absent": classes_absent(y_test),
    }
    if unscored_reason(y_train, y_test, y_pred) is None:
        row.update(classification_metrics(y_test, y_pred))
    return row
