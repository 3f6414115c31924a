"""The trainable image adapter: backbone features -> the representation every regime trains and probes.

Every trained variant has one, whatever the regime (frozen backbone, partial or full fine-tuning) and
whatever the objective: the contrastive variants put a projection head into the joint space on top
of it, ``supervised`` a linear classifier. So the probes read the same kind of representation, of the
same width, trained under the same budget, for every trained variant.
"""

from __future__ import annotations

from torch import Tensor, nn


class ImageAdapter(nn.Module):
    """LayerNorm -> Linear -> GELU -> Dropout -> Linear: (B, in_dim) features -> (B, out_dim).

    The LayerNorm first puts the backbone's pooled features (ReLU6 outputs for EfficientNet-Lite0,
    some dimensions nearly constant) on one scale without fold statistics, so the adapter is a pure
    function of one patch's features and travels with the packaged model as its weights alone.
    """

    def __init__(self, in_dim: int, hidden: int = 512, out_dim: int = 256, dropout: float = 0.1):
        super().__init__()
        self.in_dim, self.hidden, self.out_dim, self.dropout = (
            int(in_dim),
            int(hidden),
            int(out_dim),
            float(dropout),
        )
        self.net = nn.Sequential(
            nn.LayerNorm(self.in_dim),
            nn.Linear(self.in_dim, self.hidden),
            nn.GELU(),
            nn.Dropout(self.dropout),
            nn.Linear(self.hidden, self.out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def spec(self) -> dict:
        """What rebuilds this adapter (with its state dict): ``ImageAdapter(**spec)``."""
        return {
            "in_dim": self.in_dim,
            "hidden": self.hidden,
            "out_dim": self.out_dim,
            "dropout": self.dropout,
        }
