"""What a trained (or untrained) fold model hands the evaluation: its representations of the fold's spots.

Representation spaces (the ``space`` of every result): ``backbone`` -- the CNN's pooled features,
what the untrained baselines have, and trained variants too when their backbone trained (partial or
full fine-tuning); ``adapter`` -- the trained adapter's output, what every trained variant has.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BACKBONE, ADAPTER = "backbone", "adapter"


@dataclass
class FoldEmbeddings:
    """A frozen fold model's outputs. ``features``: space -> (n_train + n_test, d) representation,
    training spots first then held-out spots (FoldInputs order); ``image_joint``: (n_test, e) held-out
    image embeddings in the joint space and ``gene_joint``: (n_train, e) training spots' gene-side
    embeddings (contrastive variants only, else None).
    """

    variant: str
    fold: str
    seed: int
    features: dict[str, np.ndarray]
    image_joint: np.ndarray | None
    gene_joint: np.ndarray | None
    train_seconds: float
    fingerprint: str
    steps: int = 0

    @property
    def primary_space(self) -> str:
        """The space that was trained: the adapter's when there is one, else the backbone's."""
        return ADAPTER if ADAPTER in self.features else BACKBONE
