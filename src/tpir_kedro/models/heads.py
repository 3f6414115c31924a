"""Small trainable blocks on either side of the contrastive objective.

- :class:`ProjectionHead` maps image features or gene embeddings into the joint space.
- :class:`GeneMlp` is the CLIP/BLEEP gene encoder: an MLP on log-normalised highly variable genes,
  trained from scratch (it has no batch correction: that is the point of the comparison).
"""

from __future__ import annotations

from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """Linear -> GELU -> Linear with a residual of the first projection, then LayerNorm.

    (B, in_dim) -> (B, out_dim). The residual keeps a linear path so a strong input embedding
    (scANVI's) is not scrambled early in training; the LayerNorm keeps unnormalised variants
    (BLEEP) on a comparable scale.
    """

    def __init__(self, in_dim: int, out_dim: int = 128, dropout: float = 0.1):
        super().__init__()
        self.projection = nn.Linear(in_dim, out_dim)
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(out_dim, out_dim), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        projected = self.projection(x)
        return self.norm(projected + self.mlp(projected))


class GeneMlp(nn.Module):
    """(B, n_genes) log-normalised expression -> (B, hidden) gene features."""

    def __init__(self, n_genes: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_genes, hidden),
            nn.BatchNorm1d(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
        )
        self.out_dim = hidden

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
