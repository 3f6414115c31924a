"""Lightning modules that train the image encoder: contrastive against genes, or supervised.

Both read uint8 patch batches, augment them on the device they train on, and run the backbone in
channels-last memory format (faster convolutions under autocast on GPUs). The contrastive losses
see the *global* batch: embeddings are all-gathered across DDP ranks with gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tpir_kedro.models.augment import PatchAugment
from tpir_kedro.models.distributed import gather_no_grad, gather_with_grad
from tpir_kedro.models.heads import GeneMlp, ProjectionHead
from tpir_kedro.models.image_encoders import ImageEncoder


def gene_side(gene_input: str, in_dim: int, embed_dim: int, hidden: int, dropout: float) -> nn.Module:
    """(B, in_dim) gene input -> (B, embed_dim). log_hvg: a trainable MLP on expression; scvi/scanvi:
    the frozen encoder's embedding is precomputed, so only a projection head trains."""
    if gene_input == "log_hvg":
        mlp = GeneMlp(in_dim, hidden=hidden, dropout=dropout)
        return nn.Sequential(mlp, ProjectionHead(mlp.out_dim, embed_dim, dropout))
    return ProjectionHead(in_dim, embed_dim, dropout)


class _ImageTraining(L.LightningModule):
    """What both objectives share: augmentation, channels-last backbone, optimiser and schedule."""

    def __init__(self, encoder: ImageEncoder, augment: PatchAugment, lr: float, backbone_lr: float, weight_decay: float, channels_last: bool = True):
        super().__init__()
        self.encoder = encoder
        self.augment = augment
        self.lr, self.backbone_lr, self.weight_decay = lr, backbone_lr, weight_decay
        self.channels_last = channels_last
        if channels_last:
            self.encoder.to(memory_format=torch.channels_last)

    def image_features(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) uint8 -> (B, feature_dim), augmented when training."""
        x = self.augment(images)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.encoder(x)

    def head_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("encoder.") and p.requires_grad]

    def configure_optimizers(self):
        groups = [
            {"params": list(self.encoder.parameters()), "lr": self.backbone_lr},
            {"params": self.head_parameters(), "lr": self.lr},
        ]
        optimiser = torch.optim.AdamW(groups, weight_decay=self.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=[self.backbone_lr, self.lr], total_steps=total, pct_start=min(0.3, 10 / total + 0.05)
        )
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class ContrastiveModule(_ImageTraining):
    """Image encoder + projection head vs gene side, trained by one of the contrastive losses.

    Batch keys: ``image`` (B, 3, H, W) uint8, ``genes`` (B, g) float, optional ``z`` (B, k) frozen gene
    embedding (similarity targets), ``label`` (B,) int64 with -1 unlabelled, optional ``probs`` (B, C).
    """

    def __init__(
        self,
        encoder: ImageEncoder,
        augment: PatchAugment,
        loss_fn: Callable[..., Tensor],
        gene_input: str,
        gene_dim: int,
        embed_dim: int = 128,
        gene_hidden: int = 256,
        dropout: float = 0.1,
        lr: float = 1e-3,
        backbone_lr: float = 1e-4,
        weight_decay: float = 1e-4,
        channels_last: bool = True,
    ):
        super().__init__(encoder, augment, lr, backbone_lr, weight_decay, channels_last)
        self.image_head = ProjectionHead(encoder.feature_dim, embed_dim, dropout)
        self.gene_head = gene_side(gene_input, gene_dim, embed_dim, gene_hidden, dropout)
        self.loss_fn = loss_fn

    def image_embedding(self, images: Tensor) -> Tensor:
        return self.image_head(self.image_features(images))

    def gene_embedding(self, genes: Tensor) -> Tensor:
        return self.gene_head(genes)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        u = gather_with_grad(self.image_embedding(batch["image"]).float())
        v = gather_with_grad(self.gene_embedding(batch["genes"]).float())
        z = gather_no_grad(batch["z"].float()) if "z" in batch else None
        labels = gather_no_grad(batch["label"]) if "label" in batch else None
        probs = gather_no_grad(batch["probs"].float()) if "probs" in batch else None
        loss = self.loss_fn(u, v, z=z, labels=labels, probs=probs)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["image"]))
        return loss


class SupervisedModule(_ImageTraining):
    """The supervised end-to-end baseline: image encoder + linear classifier, cross-entropy on the
    training patients' classified spots (the same label budget as ``class_guided``)."""

    def __init__(
        self,
        encoder: ImageEncoder,
        augment: PatchAugment,
        n_classes: int,
        class_weights: Tensor | None = None,
        lr: float = 1e-3,
        backbone_lr: float = 1e-4,
        weight_decay: float = 1e-4,
        channels_last: bool = True,
        dropout: float = 0.1,
    ):
        super().__init__(encoder, augment, lr, backbone_lr, weight_decay, channels_last)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(encoder.feature_dim, n_classes))
        self.register_buffer("class_weights", class_weights if class_weights is not None else torch.ones(n_classes))

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        logits = self.classifier(self.image_features(batch["image"])).float()
        loss = F.cross_entropy(logits, batch["label"], weight=self.class_weights)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["image"]))
        return loss
