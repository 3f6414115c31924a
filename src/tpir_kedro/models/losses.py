"""Contrastive losses between image embeddings ``u`` and gene embeddings ``v`` (see docs/method.md).

Every function works on the *global* batch: under DDP the training module all-gathers ``u``/``v``
(with gradients) and ``z``/``labels``/``probs`` (without) before calling it, so the same code runs
in one process or many. Row i of ``u`` and row i of ``v`` come from the same spot.

Shapes: u, v (N, d); z (N, k) frozen gene embedding; labels (N,) int64, negative = unlabelled;
probs (N, C) class probabilities. Every loss returns a scalar. Target matrices are always built
from detached tensors: targets say what to pull together, they are not themselves trained.

:func:`contrastive_loss` turns a loss name and its parameters (as written in a YAML variant) into a
callable ``loss(u, v, z=None, labels=None, probs=None)``, rejecting unknown names and parameters
before any training starts.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

TARGET_SOURCES = ("gene", "image", "both")


def _maybe_normalize(x: Tensor, normalize: bool) -> Tensor:
    return F.normalize(x, dim=-1) if normalize else x


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of ``-sum_j T_ij log_softmax(logits)_ij``.

    logits, targets: (N, M); each target row is normally a distribution. Returns a scalar.
    """
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def _two_way_soft_ce(logits: Tensor, row_targets: Tensor, col_targets: Tensor) -> Tensor:
    """Average of the row-direction and column-direction soft cross-entropies.

    logits (N, N) with rows = anchors of one modality; ``col_targets`` is indexed like ``logits.T``.
    """
    return 0.5 * (soft_cross_entropy(logits, row_targets) + soft_cross_entropy(logits.T, col_targets))


def info_nce(u: Tensor, v: Tensor, temperature: float = 0.07, normalize: bool = True) -> Tensor:
    """CLIP / InfoNCE: the matching pair is the only positive, in both directions.

    u: (N, d) image embeddings, v: (N, d) gene embeddings. logits = u v^T / temperature; cross-entropy
    with identity targets over rows (image -> gene) and columns (gene -> image), averaged.
    """
    u, v = _maybe_normalize(u, normalize), _maybe_normalize(v, normalize)
    logits = u @ v.T / temperature
    match = torch.arange(len(u), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, match) + F.cross_entropy(logits.T, match))


def bleep_targets(u: Tensor, v: Tensor, temperature: float = 1.0) -> Tensor:
    """BLEEP's soft targets: ``softmax((u u^T + v v^T) / 2 / temperature)`` row-wise, no gradient.

    u, v: (N, d), already normalised or not as the loss uses them -> (N, N), rows summing to 1.
    """
    u, v = u.detach(), v.detach()
    return F.softmax((u @ u.T + v @ v.T) / 2 / temperature, dim=-1)


def bleep_loss(
    u: Tensor,
    v: Tensor,
    temperature: float = 1.0,
    target_temperature: float = 1.0,
    normalize: bool = False,
) -> Tensor:
    """BLEEP (Xie et al., NeurIPS 2023): spots that look alike in either modality are soft positives.

    u: (N, d) image embeddings, v: (N, d) gene embeddings. logits = v u^T / temperature (rows = spots'
    gene embeddings, columns = images); targets T = :func:`bleep_targets` at ``target_temperature``.
    Loss = mean of CE(logits, T) and CE(logits^T, T^T), each row-wise.

    Faithful to BLEEP's reference code, with two deliberate notes:

    - BLEEP's code *multiplies* the target similarities by tau. At its tau = 1 that equals dividing;
      here the targets get their own temperature, because with normalised embeddings (cosines in
      [-1, 1]) and a small logit tau, multiplying would make the targets nearly uniform.
    - As in BLEEP, the column direction uses T^T as is. T is row-normalised, so the rows of T^T do
      not sum exactly to 1 (they do on average); this is kept so the baseline is BLEEP's loss.
    """
    u, v = _maybe_normalize(u, normalize), _maybe_normalize(v, normalize)
    logits = v @ u.T / temperature
    targets = bleep_targets(u, v, target_temperature).to(logits.dtype)
    return _two_way_soft_ce(logits, targets, targets.T)


def similarity_targets(z: Tensor, temperature: float) -> Tensor:
    """Soft targets from embedding similarity: ``softmax(cos(z_i, z_j) / temperature)`` row-wise.

    z: (N, k) -> (N, N), rows summing to 1, no gradient. Symmetric before the softmax, so the
    column-direction targets (softmax over columns, transposed) are this same matrix.
    """
    z = F.normalize(z.detach(), dim=-1)
    return F.softmax(z @ z.T / temperature, dim=-1)


def similarity_target_loss(
    u: Tensor,
    v: Tensor,
    z: Tensor | None = None,
    temperature: float = 0.07,
    target_temperature: float = 0.1,
    target_source: str = "gene",
    normalize: bool = True,
) -> Tensor:
    """Contrastive loss with soft positives: spots that are alike (not just the same spot) attract.

    u: (N, d) image embeddings, v: (N, d) gene embeddings, z: (N, k) the frozen batch-agnostic gene
    embedding (scVI/scANVI posterior mean), needed unless ``target_source="image"``.
    logits = u v^T / temperature. Targets (:func:`similarity_targets` at ``target_temperature``):

    - ``"gene"``: from z, so expression-alike spots of *different patients* are positives (z carries
      no batch/patient signal, unlike v which is trained and could learn one);
    - ``"image"``: from u (detached), morphology-alike spots;
    - ``"both"``: the average of the two target matrices.

    Both directions use the same T: the target of an anchor spot over candidate spots comes from a
    symmetric similarity, so it does not depend on which modality the anchor is (for columns this
    is the column-wise softmax, transposed, which is T again). The two cross-entropies are averaged.
    """
    if target_source not in TARGET_SOURCES:
        raise ValueError(
            f"similarity loss: unknown target_source {target_source!r}; use one of {TARGET_SOURCES}"
        )
    if target_source != "image" and z is None:
        raise ValueError(
            f"similarity loss: target_source={target_source!r} needs the frozen gene embedding z"
        )
    u, v = _maybe_normalize(u, normalize), _maybe_normalize(v, normalize)
    logits = u @ v.T / temperature
    if target_source == "gene":
        targets = similarity_targets(z, target_temperature)
    elif target_source == "image":
        targets = similarity_targets(u, target_temperature)
    else:
        gene, image = similarity_targets(z, target_temperature), similarity_targets(u, target_temperature)
        targets = 0.5 * (gene + image)
    targets = targets.to(logits.dtype)
    return _two_way_soft_ce(logits, targets, targets)


def class_guided_targets(labels: Tensor, probs: Tensor | None = None) -> Tensor:
    """Supervised-contrastive target matrix; every row sums to 1. No gradient.

    labels: (N,) int64, negative (-1) = unlabelled ('undetermined' or outside the label budget).
    probs: optional (N, C) class probabilities (scANVI's soft predictions), labels < C. -> (N, N).

    - Labelled spot i: uniform over the batch's spots of its class (itself included), 0 elsewhere.
    - Unlabelled spot i without ``probs``: identity row (only its own pair is positive, as InfoNCE).
    - Unlabelled spot i with ``probs``: T_ij ∝ p_i · q_j, where q_j = one-hot(labels_j) for a labelled
      j and p_j otherwise. p_i · q_j is the probability that i and j share a class when their classes
      are drawn independently from these distributions; for a labelled j the known label replaces
      the prediction. The row's mass spreads over likely same-class spots, and the more confident
      the prediction, the closer it is to the labelled case.

    Labelled rows ignore ``probs`` on purpose: they keep the hard targets of the supervised baseline's
    label budget. Without ``probs`` the matrix is symmetric.
    """
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {tuple(labels.shape)}")
    labels = labels.detach().long()
    labelled = labels >= 0
    dtype = probs.dtype if probs is not None else torch.get_default_dtype()
    same_class = (labels[:, None] == labels[None, :]) & labelled[:, None]
    if probs is None:
        unlabelled_rows = torch.diag((~labelled).to(dtype))
    else:
        probs = probs.detach()
        if probs.ndim != 2 or len(probs) != len(labels):
            raise ValueError(f"probs must be (N, C) with N = {len(labels)}, got shape {tuple(probs.shape)}")
        if bool((labels >= probs.shape[1]).any()):
            raise ValueError(f"labels must be < the number of classes in probs ({probs.shape[1]})")
        known = F.one_hot(labels.clamp(min=0), probs.shape[1]).to(dtype)
        q = torch.where(labelled[:, None], known, probs)
        unlabelled_rows = (probs @ q.T) * (~labelled)[:, None]
    affinity = same_class.to(dtype) + unlabelled_rows
    return affinity / affinity.sum(dim=-1, keepdim=True)


def class_guided_loss(
    u: Tensor,
    v: Tensor,
    labels: Tensor,
    probs: Tensor | None = None,
    temperature: float = 0.07,
    normalize: bool = True,
) -> Tensor:
    """Class-guided contrastive loss: spots of the same tissue class are positives.

    u: (N, d) image embeddings, v: (N, d) gene embeddings, labels (N,), probs (N, C) or None.
    logits = u v^T / temperature; targets T = :func:`class_guided_targets`; soft CE over rows and
    columns, averaged.

    Column direction (gene j as anchor, images as candidates) uses row j of T, not column j: T's rule
    depends on the *anchor* spot (a labelled anchor gets hard class targets, an unlabelled one
    identity or p·q targets), whichever modality the anchor comes from. Without ``probs`` T is
    symmetric, so this is T^T. With ``probs`` it is not, and T^T (renormalised) would give labelled
    gene anchors soft positives among unlabelled images, which labelled image anchors never get.
    """
    u, v = _maybe_normalize(u, normalize), _maybe_normalize(v, normalize)
    logits = u @ v.T / temperature
    targets = class_guided_targets(labels.to(logits.device), probs).to(logits.dtype)
    return _two_way_soft_ce(logits, targets, targets)


# --- registry: uniform signature fn(u, v, *, z=None, labels=None, probs=None, **params) -------------


def _infonce(u: Tensor, v: Tensor, *, z=None, labels=None, probs=None, **params) -> Tensor:
    return info_nce(u, v, **params)


def _bleep(u: Tensor, v: Tensor, *, z=None, labels=None, probs=None, **params) -> Tensor:
    return bleep_loss(u, v, **params)


def _similarity(u: Tensor, v: Tensor, *, z=None, labels=None, probs=None, **params) -> Tensor:
    return similarity_target_loss(u, v, z, **params)


def _class_guided(u: Tensor, v: Tensor, *, z=None, labels=None, probs=None, **params) -> Tensor:
    if labels is None:
        raise ValueError("class_guided loss needs the spot labels (batch key 'label')")
    return class_guided_loss(u, v, labels, probs, **params)


LOSSES: dict[str, Callable[..., Tensor]] = {
    "infonce": _infonce,
    "bleep": _bleep,
    "similarity": _similarity,
    "class_guided": _class_guided,
}
_IMPLEMENTATIONS: dict[str, Callable[..., Tensor]] = {
    "infonce": info_nce,
    "bleep": bleep_loss,
    "similarity": similarity_target_loss,
    "class_guided": class_guided_loss,
}
_DATA_ARGS = frozenset({"u", "v", "z", "labels", "probs"})


def loss_param_defaults(name: str) -> dict[str, Any]:
    """The tunable parameters of loss ``name`` and their defaults (data arguments excluded)."""
    _check_name(name)
    parameters = inspect.signature(_IMPLEMENTATIONS[name]).parameters.values()
    return {p.name: p.default for p in parameters if p.name not in _DATA_ARGS}


def _check_name(name: str) -> None:
    if name not in LOSSES:
        raise ValueError(f"unknown contrastive loss {name!r}; known: {sorted(LOSSES)}")


def _check_value(name: str, key: str, value: Any) -> None:
    # Catch YAML typos (a string temperature, normalize: 'yes') before a run, not mid-training.
    if key.endswith("temperature"):
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not is_number or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} loss: {key} must be a positive number, got {value!r}")
    elif key == "normalize" and not isinstance(value, bool):
        raise ValueError(f"{name} loss: normalize must be true or false, got {value!r}")
    elif key == "target_source" and value not in TARGET_SOURCES:
        raise ValueError(f"{name} loss: unknown target_source {value!r}; use one of {TARGET_SOURCES}")


class ContrastiveLoss:
    """A named loss with fixed parameters: ``loss(u, v, z=None, labels=None, probs=None) -> scalar``.

    A plain class (not a closure) so it pickles, e.g. for spawned DDP workers.
    """

    def __init__(self, name: str, params: Mapping[str, Any]):
        self.name = name
        self.params = dict(params)

    def __call__(
        self,
        u: Tensor,
        v: Tensor,
        z: Tensor | None = None,
        labels: Tensor | None = None,
        probs: Tensor | None = None,
    ) -> Tensor:
        return LOSSES[self.name](u, v, z=z, labels=labels, probs=probs, **self.params)

    def __repr__(self) -> str:
        return f"ContrastiveLoss({self.name!r}, {self.params!r})"


def contrastive_loss(name: str, params: Mapping[str, Any] | None = None) -> ContrastiveLoss:
    """Validate a loss name and its parameters and bind them.

    Raises ValueError for an unknown name (listing the known ones), an unknown parameter (naming it
    and the loss, listing the accepted ones) or an ill-typed value.
    """
    _check_name(name)
    params = dict(params or {})
    accepted = loss_param_defaults(name)
    for key, value in params.items():
        if key not in accepted:
            raise ValueError(f"unknown parameter {key!r} for the {name} loss; accepted: {sorted(accepted)}")
        _check_value(name, key, value)
    return ContrastiveLoss(name, params)
