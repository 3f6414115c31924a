"""Intervals and cross-validation folds within ONE tissue section, where spots are not independent.

Across patients the unit of replication is the held-out patient
(:mod:`~tpir_kedro.evaluation.fold_statistics`). A benchmark scored on a single section has n = 1
patient, and its spots are not n independent samples: neighbouring spots share tissue, so their
labels and their errors are correlated, and a spot-level bootstrap or a random k-fold split would
give intervals too narrow and few-shot scores too kind (a test spot's neighbour sits in training).
Both are therefore done over spatial blocks, square tiles of neighbouring spots:

- :func:`spatial_blocks`: tile ids from the spots' integer array coordinates.
- :func:`block_draw_indices` / :func:`block_bootstrap`: a block bootstrap; each draw resamples
  whole blocks with replacement, and every prediction set is scored on the same draws, so
  differences between them are paired. :class:`BlockBootstrap` summarises: the point estimate on
  all spots, the percentile 95% interval, and paired differences with the share of draws ahead.
- :func:`blocked_folds` / :func:`within_section_predictions`: cross-validation folds made of
  whole blocks, and out-of-fold predictions of a probe fitted within the section.

Scores are :func:`~tpir_kedro.evaluation.held_out_scores.classification_metrics` (macro-F1 and
balanced accuracy over the tissue classes present), the rule of every other readout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tpir_kedro.cohort.schema import TISSUE_CLASSES
from tpir_kedro.evaluation.fold_statistics import CONFIDENCE
from tpir_kedro.evaluation.held_out_scores import classification_metrics

LISTED_MACRO_F1 = "macro_f1_listed"
DEFAULT_N_DRAWS = 2000
# Stands in for every class outside the listed ones in listed_macro_f1; not a tissue class, so
# classification_metrics never scores it as a class.
_UNLISTED = "unlisted"


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------


def spatial_blocks(array_x, array_y, block_size: int | tuple[int, int]) -> np.ndarray:
    """Square tiles of ``block_size`` x ``block_size`` array steps over a section's spots.

    Parameters
    ----------
    array_x, array_y
        (n,) integer array coordinates of the spots (one section).
    block_size
        tile side in array steps (>= 1), or (x side, y side). Tiles start at the smallest
        coordinate of each axis, so a shifted copy of the section gets the same blocks. On a
        Visium array ``array_x`` is the column, and neighbours in a row are 2 columns apart: pass
        (2 * s, s) for tiles of s spots each way.

    Returns
    -------
        (n,) int64 block ids 0..B-1, B the number of non-empty tiles, numbered in (x tile, y tile)
        order. Spots of one tile share an id; spots at least a tile side apart along either axis
        never do.
    """
    x = np.asarray(array_x)
    y = np.asarray(array_y)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"array_x and array_y must be (n,) arrays of one length; got {x.shape} and {y.shape}"
        )
    if not (np.issubdtype(x.dtype, np.integer) and np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"array coordinates must be integers; got {x.dtype} and {y.dtype}")
    size_x, size_y = (block_size, block_size) if np.isscalar(block_size) else tuple(block_size)
    if int(size_x) != size_x or int(size_y) != size_y or min(size_x, size_y) < 1:
        raise ValueError(f"block_size must be integer(s) >= 1; got {block_size}")
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    tiles = np.stack([(x - x.min()) // int(size_x), (y - y.min()) // int(size_y)], axis=1)
    # Only tiles that hold a spot get an id, so ids run 0..B-1 with no empty block to draw.
    _, ids = np.unique(tiles, axis=0, return_inverse=True)
    return ids.reshape(-1).astype(np.int64)


def _block_members(blocks) -> list[np.ndarray]:
    """The spot indices of each distinct block (sorted ids), a list of B (n_b,) int arrays."""
    blocks = np.asarray(blocks)
    if blocks.ndim != 1 or len(blocks) == 0:
        raise ValueError(f"blocks must be a non-empty (n,) array; got shape {blocks.shape}")
    _, inverse = np.unique(blocks, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1)


# --------------------------------------------------------------------------------------------
# Block bootstrap
# --------------------------------------------------------------------------------------------


def block_draw_indices(blocks, n_draws: int, seed: int) -> Iterator[np.ndarray]:
    """The spots of each block-bootstrap draw.

    Each draw picks B blocks (B = the number of distinct ids in (n,) ``blocks``) uniformly with
    replacement, and takes every spot of each pick: a block drawn k times enters k times, whole.
    A draw's size therefore varies with the blocks it picked.

    Yields
    ------
        ``n_draws`` (m,) int arrays of spot indices into the n spots, each pick's spots
        contiguous, picks in draw order. The same ``seed`` yields the same draws.
    """
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1; got {n_draws}")
    members = _block_members(blocks)
    rng = np.random.default_rng(seed)
    for _ in range(int(n_draws)):
        picks = rng.integers(0, len(members), size=len(members))
        yield np.concatenate([members[b] for b in picks])


def listed_macro_f1(y_true, y_pred, classes: Sequence[str]) -> float:
    """Macro-F1 of (n,) ``y_pred`` against (n,) ``y_true`` over the listed ``classes`` present in ``y_true``.

    Every spot counts: a spot of an unlisted class predicted as a listed one is a false positive
    of that class. NaN when no listed class is present (or ``y_true`` is empty).

    Computed by :func:`classification_metrics` after every unlisted label (true or predicted) is
    renamed to one non-tissue label: a listed class's true positives, false positives and false
    negatives do not change, and only listed classes remain to average over, so the rule of which
    classes count and how stays in one place.
    """
    listed = _check_classes(classes)
    y_true = np.asarray(y_true, dtype=object).astype(str)
    y_pred = np.asarray(y_pred, dtype=object).astype(str)
    keep = lambda y: np.where(np.isin(y, listed), y, _UNLISTED)
    return classification_metrics(keep(y_true), keep(y_pred))["macro_f1"]


def _check_classes(classes: Sequence[str] | None) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, str):
        raise ValueError(f"classes must be a sequence of tissue classes, not one string; got {classes!r}")
    listed = [str(c) for c in classes]
    unknown = sorted(set(listed) - set(TISSUE_CLASSES))
    if unknown or not listed:
        raise ValueError(
            f"classes must be a non-empty list of tissue classes; unknown: {unknown}; known: {list(TISSUE_CLASSES)}"
        )
    return listed


def section_metrics(y_true, y_pred, classes: Sequence[str] | None = None) -> dict[str, float]:
    """:func:`classification_metrics` of (n,) ``y_pred`` against (n,) ``y_true``, plus
    ``macro_f1_listed`` (:func:`listed_macro_f1`) when ``classes`` is given.
    """
    out = classification_metrics(y_true, y_pred)
    if classes is not None:
        out[LISTED_MACRO_F1] = listed_macro_f1(y_true, y_pred, classes)
    return out


def _percentile_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of ``values`` (NaNs dropped); NaNs if none."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(x, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class BlockBootstrap:
    """Scores of several prediction sets on all spots and on the same block-bootstrap draws.

    ``point``: one row per name (index ``name``), one column per metric, scored on all n spots.
    ``draws``: long table, one row per draw x name: ``draw``, ``name``, ``n_spots`` (the draw's
    size, spots counted with multiplicity), then the metrics. ``metrics``: the metric columns.
    ``headline``: the metric a comparison defaults to (``macro_f1_listed`` when classes were
    listed, else ``macro_f1``).
    """

    point: pd.DataFrame
    draws: pd.DataFrame
    metrics: tuple[str, ...]
    headline: str

    def _per_draw(self, name: str, metric: str) -> pd.Series:
        """(n_draws,) Series of ``metric`` for ``name``, indexed by draw."""
        if name not in self.point.index:
            raise KeyError(f"no prediction set {name!r}; have {list(self.point.index)}")
        if metric not in self.metrics:
            raise KeyError(f"no metric {metric!r}; have {list(self.metrics)}")
        rows = self.draws[self.draws["name"] == name]
        return rows.set_index("draw")[metric].astype(float)

    def summary(self) -> pd.DataFrame:
        """One row per name x metric: ``name, metric, point`` (all spots), ``ci_low, ci_high``
        (percentile 95% interval over the draws) and ``n_draws`` (the draws that scored, not NaN).
        """
        rows = []
        for name in self.point.index:
            for metric in self.metrics:
                per_draw = self._per_draw(name, metric)
                low, high = _percentile_interval(per_draw.to_numpy())
                rows.append(
                    {
                        "name": name,
                        "metric": metric,
                        "point": float(self.point.loc[name, metric]),
                        "ci_low": low,
                        "ci_high": high,
                        "n_draws": int(np.isfinite(per_draw.to_numpy()).sum()),
                    }
                )
        return pd.DataFrame(rows, columns=["name", "metric", "point", "ci_low", "ci_high", "n_draws"])

    def paired_difference(self, name: str, baseline: str, metric: str | None = None) -> dict:
        """The paired difference ``name - baseline`` of ``metric`` (default ``headline``).

        Both were scored on the same spots of every draw, so each draw gives one difference;
        draws where either is NaN are left out.

        Returns ``n_draws`` (draws with a difference), ``point_difference`` (on all spots),
        ``ci_low`` / ``ci_high`` (percentile 95% interval of the per-draw differences),
        ``share_ahead`` (share of those draws with difference > 0) and ``share_behind`` (< 0).
        """
        metric = self.headline if metric is None else metric
        diff = (self._per_draw(name, metric) - self._per_draw(baseline, metric)).dropna().to_numpy()
        low, high = _percentile_interval(diff)
        n = len(diff)
        return {
            "n_draws": int(n),
            "point_difference": float(self.point.loc[name, metric] - self.point.loc[baseline, metric]),
            "ci_low": low,
            "ci_high": high,
            "share_ahead": float((diff > 0).mean()) if n else float("nan"),
            "share_behind": float((diff < 0).mean()) if n else float("nan"),
        }


def block_bootstrap(
    y_true,
    predictions: Mapping[str, np.ndarray],
    blocks,
    n_draws: int = DEFAULT_N_DRAWS,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    metric_fn: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None = None,
) -> BlockBootstrap:
    """Score every prediction set on all spots and on the same block-bootstrap draws.

    Parameters
    ----------
    y_true
        (n,) tissue classes of the scored spots of one section (only tissue classes: drop
        'undetermined' / 'unlabelled' spots first, as every readout does).
    predictions
        name -> (n,) predicted classes of the same spots, in the same order.
    blocks
        (n,) block id of each spot (:func:`spatial_blocks`).
    n_draws, seed
        :func:`block_draw_indices`; the draws are made once and shared by every name, so
        differences between names are paired.
    classes
        the pre-registered classes of the headline macro-F1 (e.g. those with >= 10 spots in the
        section), adding the metric ``macro_f1_listed``. In a draw that lacks some listed class it
        is macro-F1 over the listed classes the draw has (an absent class has no recall to
        score), as :func:`classification_metrics` does for the classes a patient lacks; NaN, and
        left out of intervals, only in a draw with none of them. The other metrics average over
        the tissue classes present in the draw.
    metric_fn
        ``(y_true, y_pred) -> {metric: value}`` instead of :func:`section_metrics`; with
        ``classes``, not both.

    Returns
    -------
        :class:`BlockBootstrap` with ``point`` (names x metrics on all spots), ``draws``
        (``n_draws`` x names rows), ``summary()`` and ``paired_difference(name, baseline)``.
    """
    y_true = np.asarray(y_true, dtype=object).astype(str)
    blocks = np.asarray(blocks)
    if y_true.ndim != 1 or blocks.shape != y_true.shape:
        raise ValueError(
            f"y_true and blocks must be (n,) arrays of one length; got {y_true.shape} and {blocks.shape}"
        )
    untissued = sorted(set(y_true) - set(TISSUE_CLASSES))
    if untissued:
        raise ValueError(f"y_true must hold tissue classes only (score classified spots); found {untissued}")
    if not predictions:
        raise ValueError("predictions is empty")
    preds = {str(k): np.asarray(v, dtype=object).astype(str) for k, v in predictions.items()}
    wrong = {k: v.shape for k, v in preds.items() if v.shape != y_true.shape}
    if wrong:
        raise ValueError(f"every prediction set must be {y_true.shape}; got {wrong}")
    if metric_fn is not None and classes is not None:
        raise ValueError("pass classes or metric_fn, not both (metric_fn decides which classes count)")
    listed = _check_classes(classes)
    score = metric_fn if metric_fn is not None else (lambda t, p: section_metrics(t, p, listed))

    point = pd.DataFrame({name: score(y_true, p) for name, p in preds.items()}).T
    point.index.name = "name"
    metrics = tuple(point.columns)
    rows = []
    for draw, idx in enumerate(block_draw_indices(blocks, n_draws, seed)):
        truth = y_true[idx]
        for name, p in preds.items():
            rows.append({"draw": draw, "name": name, "n_spots": len(idx), **score(truth, p[idx])})
    draws = pd.DataFrame(rows, columns=["draw", "name", "n_spots", *metrics])
    if listed is not None:
        headline = LISTED_MACRO_F1
    else:
        headline = "macro_f1" if "macro_f1" in metrics else metrics[0]
    return BlockBootstrap(point=point, draws=draws, metrics=metrics, headline=headline)


# --------------------------------------------------------------------------------------------
# Blocked cross-validation within the section
# --------------------------------------------------------------------------------------------


def blocked_folds(blocks, n_folds: int, seed: int = 0, y=None) -> np.ndarray:
    """Assign whole blocks to ``n_folds`` cross-validation folds, balancing spot counts.

    Greedy: blocks are taken largest first (equal sizes in a ``seed``-shuffled order) and each
    goes to the fold holding the fewest spots of the block's own classes (ties: the fold with
    fewest spots, then the lowest id). Without ``y`` every spot is one class, so this balances
    spot counts; with ``y`` it also spreads each class over the folds, so every fold's training
    side tends to see every class. While a fold is empty it is the one chosen, so every fold gets
    spots.

    Parameters
    ----------
    blocks
        (n,) block id of each spot (:func:`spatial_blocks`); at least ``n_folds`` distinct.
    n_folds
        >= 2.
    seed
        orders blocks of equal size; the same seed gives the same folds.
    y
        optional (n,) labels of the spots.

    Returns
    -------
        (n,) int64 fold ids 0..n_folds-1; all spots of a block share one.
    """
    members = _block_members(blocks)
    n = len(np.asarray(blocks))
    if n_folds < 2 or len(members) < n_folds:
        raise ValueError(
            f"need n_folds >= 2 and at least n_folds blocks; got {n_folds} folds, {len(members)} blocks"
        )
    labels = np.zeros(n, dtype=np.int64) if y is None else np.unique(np.asarray(y), return_inverse=True)[1]
    labels = labels.reshape(-1)
    if len(labels) != n:
        raise ValueError(f"y must have one label per spot; got {len(labels)} for {n} spots")
    n_classes = int(labels.max()) + 1
    block_counts = np.stack([np.bincount(labels[m], minlength=n_classes) for m in members])

    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(members))
    # Largest first (the classic greedy for balanced bins); the shuffle breaks ties among equal sizes.
    order = shuffled[np.argsort(-block_counts[shuffled].sum(axis=1), kind="stable")]
    fold_counts = np.zeros((n_folds, n_classes), dtype=np.int64)
    folds = np.empty(n, dtype=np.int64)
    for b in order:
        # Adding the block to fold f moves fold f's class counts away from an even split by
        # 2 v.C_f + |v|^2 (v the block's counts): least for the fold with fewest of its classes.
        overlap = fold_counts @ block_counts[b]
        f = int(np.lexsort((np.arange(n_folds), fold_counts.sum(axis=1), overlap))[0])
        fold_counts[f] += block_counts[b]
        folds[members[b]] = f
    return folds


def within_section_predictions(
    features,
    y,
    folds,
    fit_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], object],
) -> np.ndarray:
    """Out-of-fold predictions of a probe fitted within one section on blocked folds.

    For each fold f, ``fit_fn(x_train, y_train, groups_train)`` is fitted on the spots of the
    other folds and predicts fold f's spots; no spot's own label or features reach the fit that
    predicts it. ``groups_train`` are those training spots' fold ids, so
    :func:`~tpir_kedro.evaluation.probes.fit_logistic_probe` can be passed as it is: its inner
    leave-one-patient-out becomes leave-one-fold-out over the other folds, still spatially
    blocked. Any fit taking two arguments fits as ``lambda x, y, _: fit(x, y)``.

    Parameters
    ----------
    features
        (n, d) features of the section's scored spots.
    y
        (n,) their tissue classes.
    folds
        (n,) fold ids (:func:`blocked_folds`).
    fit_fn
        returns an object with ``predict((m, d)) -> (m,)``.

    Returns
    -------
        (n,) object array: each spot's class as predicted by the fit that did not see its fold.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(y, dtype=object).astype(str)
    folds = np.asarray(folds)
    if x.ndim != 2 or len(y) != x.shape[0] or folds.shape != y.shape:
        raise ValueError(
            f"features must be (n, d) with one label and fold per row; got {x.shape}, {y.shape}, {folds.shape}"
        )
    fold_ids = np.unique(folds)
    if len(fold_ids) < 2:
        raise ValueError(f"need at least two folds; got {list(fold_ids)}")
    out = np.empty(len(y), dtype=object)
    for f in fold_ids:
        test = folds == f
        model = fit_fn(x[~test], y[~test], folds[~test])
        out[test] = np.asarray(model.predict(x[test]), dtype=object).astype(str)
    return out
