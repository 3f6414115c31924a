"""A patient-adversarial head on the image adapter: the adapter is trained so the patient cannot be
read from its output.

Domain-adversarial training (a gradient-reversal layer, as in DANN): a small classifier predicts each
training spot's patient from the adapter's representation and minimises its cross-entropy; between
the two the gradient is multiplied by ``-weight``, so the same cross-entropy pushes the adapter the
other way -- towards representations from which the patient cannot be told. One backward pass trains
both: the classifier at full rate, the adapter at ``weight`` times the reversed rate.

Why on the adapter: it is the representation the probes and the patient-decodability check read, so
the adversary removes the patient where it is measured.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: float) -> Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return -ctx.weight * grad, None


def reverse_gradient(x: Tensor, weight: float) -> Tensor:
    """The identity forward; backward multiplies the incoming gradient by ``-weight``."""
    return _ReverseGradient.apply(x, float(weight))


class PatientAdversary(nn.Module):
    """(B, in_dim) representation -> scalar cross-entropy of predicting each spot's patient.

    Parameters
    ----------
    in_dim
        width of the representation (the adapter's output).
    patient_codes
        (n,) int64 codes of the training spots' patients (any integers; re-coded to 0..P-1 here, so a
        fold's held-out patient has no output).
    weight
        the gradient-reversal weight: how hard the representation is pushed away from the patient.
    hidden
        width of the classifier's hidden layer (0: a linear classifier).
    """

    def __init__(self, in_dim: int, patient_codes: np.ndarray, weight: float, hidden: int = 256):
        super().__init__()
        if float(weight) <= 0:
            raise ValueError(f"the patient adversary's weight must be > 0, got {weight}")
        codes = np.unique(np.asarray(patient_codes, dtype=np.int64))
        if len(codes) < 2 or codes.min() < 0:
            raise ValueError(f"a patient adversary needs >= 2 patients with codes >= 0, got {codes.tolist()}")
        lookup = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
        lookup[codes] = np.arange(len(codes))
        self.register_buffer("lookup", torch.from_numpy(lookup), persistent=False)
        self.weight, self.n_patients = float(weight), len(codes)
        self.classifier = (
            nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, self.n_patients))
            if hidden
            else nn.Linear(in_dim, self.n_patients)
        )

    def forward(self, representation: Tensor, patients: Tensor) -> Tensor:
        """Representation (B, in_dim), patients (B,) int64 codes -> the adversary's mean cross-entropy."""
        logits = self.classifier(reverse_gradient(representation, self.weight)).float()
        return F.cross_entropy(logits, self.lookup[patients])
