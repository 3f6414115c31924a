"""Contrastive losses: values worked out by hand on 2-4 spots, target matrices, gradients, registry.

Expected values are written out with math.exp/math.log so that they do not share code with the
implementation.
"""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from tpir_kedro.models.losses import (
    LOSSES,
    bleep_loss,
    bleep_targets,
    class_guided_loss,
    class_guided_targets,
    contrastive_loss,
    info_nce,
    loss_param_defaults,
    similarity_target_loss,
    similarity_targets,
    soft_cross_entropy,
)

T64 = torch.float64


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=T64)


def _lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


def _row_soft_ce(logits_row: list[float], target_row: list[float]) -> float:
    """-sum_j t_j (l_j - logsumexp(l)), by hand."""
    lse = _lse(*logits_row)
    return -sum(t * (x - lse) for x, t in zip(logits_row, target_row))


def _softmax(*xs: float) -> list[float]:
    total = sum(math.exp(x) for x in xs)
    return [math.exp(x) / total for x in xs]


# --- hand-computed values ----------------------------------------------------------------------------


def test_soft_cross_entropy_by_hand():
    logits = _t([[1.0, 0.0], [0.0, 2.0]])
    targets = _t([[0.5, 0.5], [1.0, 0.0]])
    row0 = -(0.5 * (1 - _lse(1, 0)) + 0.5 * (0 - _lse(1, 0)))
    row1 = -(1.0 * (0 - _lse(0, 2)))
    assert soft_cross_entropy(logits, targets).item() == pytest.approx((row0 + row1) / 2, abs=1e-12)


def test_info_nce_two_pairs_by_hand():
    # unit vectors: u0.v0 = 1, u0.v1 = 0.6, u1.v0 = 0, u1.v1 = 0.8; tau = 0.5 doubles them
    u = _t([[1.0, 0.0], [0.0, 1.0]])
    v = _t([[1.0, 0.0], [0.6, 0.8]])
    rows = ((-2.0 + _lse(2.0, 1.2)) + (-1.6 + _lse(0.0, 1.6))) / 2  # image -> gene
    cols = ((-2.0 + _lse(2.0, 0.0)) + (-1.6 + _lse(1.2, 1.6))) / 2  # gene -> image
    expected = (rows + cols) / 2
    assert info_nce(u, v, temperature=0.5).item() == pytest.approx(expected, abs=1e-12)
    # normalize=True makes the loss scale-free; without it the scale enters the logits
    assert info_nce(3 * u, 2 * v, temperature=0.5).item() == pytest.approx(expected, abs=1e-12)
    unnormalised = info_nce(3 * u, 2 * v, temperature=0.5, normalize=False).item()
    assert unnormalised != pytest.approx(expected, abs=1e-3)


def test_bleep_targets_and_loss_by_hand():
    # unnormalised, as BLEEP: u u^T = I, v v^T = [[1, 1], [1, 2]], mean = [[1, .5], [.5, 1.5]]
    u = _t([[1.0, 0.0], [0.0, 1.0]])
    v = _t([[1.0, 0.0], [1.0, 1.0]])
    t0 = _softmax(1.0, 0.5)
    t1 = _softmax(0.5, 1.5)
    assert torch.allclose(bleep_targets(u, v, 1.0), _t([t0, t1]), atol=1e-12)
    # a separate target temperature divides the averaged similarities
    assert torch.allclose(bleep_targets(u, v, 0.5), _t([_softmax(2.0, 1.0), _softmax(1.0, 3.0)]), atol=1e-12)

    # logits = v u^T = [[1, 0], [1, 1]]; columns: logits^T = [[1, 1], [0, 1]] against T^T
    spot_dir = (_row_soft_ce([1, 0], t0) + _row_soft_ce([1, 1], t1)) / 2
    image_dir = (_row_soft_ce([1, 1], [t0[0], t1[0]]) + _row_soft_ce([0, 1], [t0[1], t1[1]])) / 2
    assert bleep_loss(u, v).item() == pytest.approx((spot_dir + image_dir) / 2, abs=1e-12)


def test_similarity_targets_by_hand_and_limits():
    z = _t([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    c = 1 / math.sqrt(2)  # cosine between an axis and the diagonal
    expected = _t([_softmax(1, 0, c), _softmax(0, 1, c), _softmax(c, c, 1)])
    targets = similarity_targets(z, 1.0)
    assert torch.allclose(targets, expected, atol=1e-12)
    assert torch.allclose(targets.sum(dim=1), torch.ones(3, dtype=T64))

    orthogonal = torch.eye(4, dtype=T64) * torch.tensor([[1.0], [2.0], [0.5], [3.0]], dtype=T64)
    assert torch.allclose(similarity_targets(orthogonal, 1e-3), torch.eye(4, dtype=T64), atol=1e-12)


def test_similarity_loss_image_targets_by_hand():
    u = _t([[1.0, 0.0], [0.0, 1.0]])
    v = _t([[1.0, 0.0], [0.6, 0.8]])
    t0, t1 = _softmax(1, 0), _softmax(0, 1)  # cosines of u: identity; target tau = 1
    # logits = u v^T = [[1, .6], [0, .8]], logits^T = [[1, 0], [.6, .8]]; both directions use T
    rows = (_row_soft_ce([1, 0.6], t0) + _row_soft_ce([0, 0.8], t1)) / 2
    cols = (_row_soft_ce([1, 0], t0) + _row_soft_ce([0.6, 0.8], t1)) / 2
    loss = similarity_target_loss(u, v, temperature=1.0, target_temperature=1.0, target_source="image")
    assert loss.item() == pytest.approx((rows + cols) / 2, abs=1e-12)


def test_similarity_both_is_the_average_of_gene_and_image():
    # soft CE is linear in the targets, so averaging target matrices averages the losses
    g = torch.Generator().manual_seed(0)
    u, v, z = (torch.randn(6, 4, generator=g, dtype=T64) for _ in range(3))
    kw = dict(temperature=0.2, target_temperature=0.3)
    both = similarity_target_loss(u, v, z, target_source="both", **kw)
    gene = similarity_target_loss(u, v, z, target_source="gene", **kw)
    image = similarity_target_loss(u, v, z, target_source="image", **kw)
    assert both.item() == pytest.approx((gene.item() + image.item()) / 2, abs=1e-12)


def test_class_guided_targets_labels_only():
    labels = torch.tensor([0, 0, 1, -1])
    expected = _t([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    targets = class_guided_targets(labels)
    assert torch.allclose(targets.to(T64), expected)
    assert torch.equal(targets, targets.T)


def test_class_guided_targets_with_probs():
    labels = torch.tensor([0, 0, 1, -1])
    probs = _t([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])  # labelled rows' probs are ignored
    # unlabelled spot 3: p3 . q_j with q = one-hot for labelled j, p3 for itself
    p3 = [0.2 * 1, 0.2 * 1, 0.8 * 1, 0.2 * 0.2 + 0.8 * 0.8]
    row3 = [x / sum(p3) for x in p3]
    expected = _t([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1, 0], row3])
    targets = class_guided_targets(labels, probs)
    assert torch.allclose(targets, expected, atol=1e-12)
    assert torch.allclose(targets.sum(dim=1), torch.ones(4, dtype=T64))


def test_class_guided_targets_input_errors():
    with pytest.raises(ValueError, match="1-D"):
        class_guided_targets(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="probs must be"):
        class_guided_targets(torch.tensor([0, -1]), torch.ones(3, 2))
    with pytest.raises(ValueError, match="number of classes"):
        class_guided_targets(torch.tensor([2, -1]), torch.full((2, 2), 0.5))


def test_class_guided_loss_without_classes_is_info_nce():
    g = torch.Generator().manual_seed(1)
    u, v = torch.randn(5, 3, generator=g, dtype=T64), torch.randn(5, 3, generator=g, dtype=T64)
    reference = info_nce(u, v, temperature=0.1).item()
    unlabelled = class_guided_loss(u, v, torch.full((5,), -1), temperature=0.1).item()
    distinct = class_guided_loss(u, v, torch.arange(5), temperature=0.1).item()
    assert unlabelled == pytest.approx(reference, abs=1e-12)
    assert distinct == pytest.approx(reference, abs=1e-12)


def test_class_guided_loss_columns_use_anchor_rows():
    # with probs T is not symmetric; both directions use T's rows (the anchor spot's rule)
    u = _t([[1.0, 0.0], [0.0, 1.0]])
    v = _t([[1.0, 0.0], [0.6, 0.8]])
    labels = torch.tensor([0, -1])
    probs = _t([[1.0, 0.0], [0.5, 0.5]])
    # row 1: p1 . q = [0.5, 0.5]; row 0: labelled, alone in class 0
    t0, t1 = [1.0, 0.0], [0.5, 0.5]
    rows = (_row_soft_ce([1, 0.6], t0) + _row_soft_ce([0, 0.8], t1)) / 2
    cols = (_row_soft_ce([1, 0], t0) + _row_soft_ce([0.6, 0.8], t1)) / 2
    loss = class_guided_loss(u, v, labels, probs, temperature=1.0)
    assert loss.item() == pytest.approx((rows + cols) / 2, abs=1e-12)


# --- behaviour ---------------------------------------------------------------------------------------


def _case_inputs(n: int = 12, d: int = 8):
    g = torch.Generator().manual_seed(7)
    v = torch.randn(n, d, generator=g)
    labels = torch.arange(n) % 4
    labels[::5] = -1
    probs = torch.softmax(torch.randn(n, 4, generator=g), dim=1)
    return v, v.clone(), labels, probs


CASES = [
    ("infonce", {"temperature": 0.1}),
    ("bleep", {"temperature": 0.1, "target_temperature": 0.1, "normalize": True}),
    ("bleep", {}),
    ("similarity", {"target_source": "gene"}),
    ("similarity", {"target_source": "image"}),
    ("similarity", {"target_source": "both"}),
    ("class_guided", {}),
]


@pytest.mark.parametrize(("name", "params"), CASES)
def test_aligned_embeddings_beat_shuffled(name, params):
    v, u, labels, probs = _case_inputs()
    loss = contrastive_loss(name, params)
    # z follows the spots (it is data about them); shuffling u breaks only the image-gene pairing
    aligned = loss(u, v, z=v, labels=labels, probs=probs)
    shuffled = loss(u.roll(1, dims=0), v, z=v, labels=labels, probs=probs)
    assert aligned.item() < shuffled.item()


@pytest.mark.parametrize(("name", "params"), CASES)
def test_gradients_reach_u_and_v(name, params):
    v, u, labels, probs = _case_inputs()
    u = (u + 0.1 * torch.randn_like(u)).requires_grad_()
    v = v.requires_grad_()
    probs = probs.requires_grad_()  # must not get a gradient through the targets
    contrastive_loss(name, params)(u, v, z=v, labels=labels, probs=probs).backward()
    assert u.grad is not None and v.grad is not None
    assert u.grad.abs().sum() > 0 and v.grad.abs().sum() > 0
    assert torch.isfinite(u.grad).all() and torch.isfinite(v.grad).all()
    assert probs.grad is None


def test_target_builders_carry_no_graph():
    x = torch.randn(4, 3, requires_grad=True)
    probs = torch.softmax(torch.randn(4, 2), dim=1).requires_grad_()
    assert not bleep_targets(x, x * 2, 1.0).requires_grad
    assert not similarity_targets(x, 0.1).requires_grad
    assert not class_guided_targets(torch.tensor([0, 1, -1, -1]), probs).requires_grad


def test_targets_built_from_u_are_constants_for_the_gradient():
    # the image-source similarity loss must differentiate as if T were a fixed matrix
    g = torch.Generator().manual_seed(3)
    u = torch.randn(5, 4, generator=g, dtype=T64, requires_grad=True)
    v = torch.randn(5, 4, generator=g, dtype=T64)
    loss = similarity_target_loss(u, v, temperature=0.5, target_temperature=0.2, target_source="image")
    (grad,) = torch.autograd.grad(loss, u)

    fixed = similarity_targets(u.detach(), 0.2)
    un = torch.nn.functional.normalize(u, dim=-1)
    vn = torch.nn.functional.normalize(v, dim=-1)
    logits = un @ vn.T / 0.5
    manual = 0.5 * (soft_cross_entropy(logits, fixed) + soft_cross_entropy(logits.T, fixed))
    (manual_grad,) = torch.autograd.grad(manual, u)
    assert torch.allclose(grad, manual_grad, atol=1e-12)


# --- registry ----------------------------------------------------------------------------------------


def test_registry_names_and_defaults():
    assert set(LOSSES) == {"infonce", "bleep", "similarity", "class_guided"}
    assert loss_param_defaults("bleep") == {"temperature": 1.0, "target_temperature": 1.0, "normalize": False}
    similarity = {"temperature", "target_temperature", "target_source", "normalize"}
    assert set(loss_param_defaults("similarity")) == similarity


def test_contrastive_loss_matches_direct_call_and_pickles():
    v, u, labels, probs = _case_inputs()
    loss = contrastive_loss("class_guided", {"temperature": 0.2})
    direct = class_guided_loss(u, v, labels, probs, temperature=0.2)
    assert torch.equal(loss(u, v, None, labels, probs), direct)
    restored = pickle.loads(pickle.dumps(loss))
    assert torch.equal(restored(u, v, labels=labels, probs=probs), direct)
    assert "class_guided" in repr(loss)


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown contrastive loss 'clip'.*infonce"):
        contrastive_loss("clip", {})


def test_unknown_param_names_param_and_loss():
    with pytest.raises(ValueError, match="'target_source'.*infonce"):
        contrastive_loss("infonce", {"target_source": "gene"})
    with pytest.raises(ValueError, match="'tau'.*bleep"):
        contrastive_loss("bleep", {"tau": 1.0})


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("infonce", {"temperature": "0.07"}, "positive number"),
        ("infonce", {"temperature": 0}, "positive number"),
        ("bleep", {"target_temperature": True}, "positive number"),
        ("similarity", {"normalize": "yes"}, "true or false"),
        ("similarity", {"target_source": "genes"}, "target_source"),
    ],
)
def test_bad_param_values_rejected(name, params, match):
    with pytest.raises(ValueError, match=match):
        contrastive_loss(name, params)


def test_missing_data_raises_clearly():
    u, v = torch.randn(3, 2), torch.randn(3, 2)
    with pytest.raises(ValueError, match="needs the frozen gene embedding z"):
        contrastive_loss("similarity", {})(u, v)
    with pytest.raises(ValueError, match="needs the spot labels"):
        contrastive_loss("class_guided", {})(u, v)
    with pytest.raises(ValueError, match="unknown target_source"):
        similarity_target_loss(u, v, target_source="spots")
    # image-only targets need no z
    assert torch.isfinite(contrastive_loss("similarity", {"target_source": "image"})(u, v))
