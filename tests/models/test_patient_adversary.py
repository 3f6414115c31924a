"""The patient-adversarial head: gradient reversal checked by hand, and its place in training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tpir_kedro.models.patient_adversary import PatientAdversary, reverse_gradient
from tpir_kedro.models.variants import parse_variant

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/models/conftest.py


def test_two_sgd_steps_match_the_hand_computed_reversed_updates():
    """h = w x (the 'adapter'), logits = a h + b (a linear adversary, two patients), target patient 0.

    L = log(e^{l0} + e^{l1}) - l0 with l = a h + b. By hand: dL/dl = p - e0, so dL/da = (p - e0) h,
    dL/db = p - e0, and dL/dh = sum_j (p_j - e0_j) a_j. The reversal hands the adapter -weight x dL/dh,
    so w moves *up* the adversary's loss: w <- w + lr x weight x dL/dh x x, while a and b move down it.
    """
    weight, lr, x = 2.0, 0.1, 1.5
    w0, a0, b0 = 0.5, [0.3, -0.2], [0.05, -0.1]
    # Patient codes 3 and 7: re-coded to 0 and 1, so code 3 is output 0.
    adversary = PatientAdversary(1, np.array([7, 3, 3]), weight=weight, hidden=0)
    with torch.no_grad():
        adversary.classifier.weight.copy_(torch.tensor([[a0[0]], [a0[1]]]))
        adversary.classifier.bias.copy_(torch.tensor(b0))
    w = torch.nn.Parameter(torch.tensor([[w0]]))
    optimiser = torch.optim.SGD([w, *adversary.parameters()], lr=lr)
    for _ in range(2):
        optimiser.zero_grad()
        loss = adversary(w * x, torch.tensor([3]))
        loss.backward()
        optimiser.step()

    wh, a, b = w0, list(a0), list(b0)
    for _ in range(2):
        h = wh * x
        logits = [a[0] * h + b[0], a[1] * h + b[1]]
        z = math.exp(logits[0]) + math.exp(logits[1])
        g = [math.exp(logits[0]) / z - 1.0, math.exp(logits[1]) / z]  # dL/dl
        dh = g[0] * a[0] + g[1] * a[1]
        a = [a[j] - lr * g[j] * h for j in range(2)]
        b = [b[j] - lr * g[j] for j in range(2)]
        wh = wh - lr * (-weight * dh * x)
    assert w.item() == pytest.approx(wh, abs=1e-6)
    assert adversary.classifier.weight.flatten().tolist() == pytest.approx(a, abs=1e-6)
    assert adversary.classifier.bias.tolist() == pytest.approx(b, abs=1e-6)
    assert wh != pytest.approx(w0)  # the steps moved the adapter


def test_the_reversal_is_the_identity_forward_and_minus_weight_backward():
    x = torch.randn(5, 3, requires_grad=True)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    y.pow(2).sum().backward()
    torch.testing.assert_close(x.grad, -0.3 * 2 * x.detach())


def test_bad_adversaries_and_variants_are_refused():
    with pytest.raises(ValueError, match="weight must be > 0"):
        PatientAdversary(4, np.array([0, 1]), weight=0.0)
    with pytest.raises(ValueError, match=">= 2 patients"):
        PatientAdversary(4, np.array([2, 2]), weight=1.0)
    with pytest.raises(ValueError, match="contrastive variant"):
        parse_variant("bad", {"objective": "supervised", "patient_adversary": 1.0})
    with pytest.raises(ValueError, match="contrastive variant"):
        parse_variant("bad", {"gene_input": "log_hvg", "loss": "infonce", "patient_adversary": -1})
    spec = parse_variant("adv", {"gene_input": "log_hvg", "loss": "infonce", "patient_adversary": 0.5})
    assert spec.to_dict()["patient_adversary"] == 0.5
    assert (
        "patient_adversary"
        not in parse_variant("clip", {"gene_input": "log_hvg", "loss": "infonce"}).to_dict()
    )
