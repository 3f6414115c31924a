"""Lightning modules that train the image side: contrastive against genes, or supervised.

Both train an :class:`~tpir_kedro.models.adapter.ImageAdapter` on the backbone's features, and the
backbone with it (full fine-tuning), its last blocks (partial) or not at all (frozen: batches then
carry cached features). Patch batches are augmented on the device they train on, and the backbone
runs in channels-last memory format (faster convolutions under autocast on GPUs). The contrastive losses
see the *global* batch: embeddings are all-gathered across DDP ranks with gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tpir_kedro.models.adapter import ImageAdapter
from tpir_kedro.models.distributed import gather_no_grad, gather_with_grad
from tpir_kedro.models.heads import GeneMlp, ProjectionHead
from tpir_kedro.models.image_encoders import ImageEncoder, freeze_all_but_last_blocks
from tpir_kedro.models.patient_adversary import PatientAdversary


def gene_side(gene_input: str, in_dim: int, embed_dim: int, hidden: int, dropout: float) -> nn.Module:
    """(B, in_dim) gene input -> (B, embed_dim). log_hvg: a trainable MLP on expression; scvi/scanvi:
    the frozen encoder's embedding is precomputed, so only a projection head trains.
    """
    if gene_input == "log_hvg":
        mlp = GeneMlp(in_dim, hidden=hidden, dropout=dropout)
        return nn.Sequential(mlp, ProjectionHead(mlp.out_dim, embed_dim, dropout))
    return ProjectionHead(in_dim, embed_dim, dropout)


class _ImageTraining(L.LightningModule):
    """What both objectives share: the image side, optimiser and schedule.

    The image side is ``augment`` -> ``encoder`` -> ``adapter``. With ``encoder=None`` (the frozen
    regime) batches carry cached backbone features of several views, (B, V, D), and ``augment`` is a
    :class:`~tpir_kedro.models.feature_views.ViewSampler`; otherwise they carry uint8 patches and
    ``augment`` is a :class:`PatchAugment`. ``trainable_blocks`` (partial fine-tuning) freezes the
    backbone but for its last blocks; the frozen part's batch norm keeps its running statistics.
    ``freeze_batch_norm`` keeps every backbone batch-norm layer in eval mode (its initialisation's
    running statistics normalise; its affine weights still train where the backbone does).
    """

    def __init__(
        self,
        encoder: ImageEncoder | None,
        augment: nn.Module,
        adapter: ImageAdapter,
        lr: float,
        backbone_lr: float,
        weight_decay: float,
        channels_last: bool = True,
        trainable_blocks: int | None = None,
        freeze_batch_norm: bool = False,
    ):
        super().__init__()
        self.encoder = encoder
        self.augment = augment
        self.adapter = adapter
        self.lr, self.backbone_lr, self.weight_decay = lr, backbone_lr, weight_decay
        self.channels_last = channels_last and encoder is not None
        self._frozen_modules: list[nn.Module] = []
        if encoder is not None and trainable_blocks is not None:
            self._frozen_modules = freeze_all_but_last_blocks(encoder, trainable_blocks)
        if encoder is not None and freeze_batch_norm:
            # Re-estimated on a few patients' patches, the statistics carry their stains into every
            # feature; the initialisation's (ImageNet's) are the ones the weights were trained under.
            known = {id(m) for m in self._frozen_modules}
            self._frozen_modules += [
                m
                for m in encoder.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in known
            ]
        if self.channels_last:
            self.encoder.to(memory_format=torch.channels_last)

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_statistics()
        return self

    def on_train_batch_start(self, batch, batch_idx):
        # Lightning restores each submodule's mode itself around loops, bypassing ``train``.
        self._freeze_statistics()

    def _freeze_statistics(self) -> None:
        for module in self._frozen_modules:  # frozen layers: running statistics, no dropout
            module.eval()

    def backbone_features(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) uint8 patches, or (B, V, D) cached features -> (B, D), augmented when training."""
        x = self.augment(images)
        if self.encoder is None:
            return x
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.encoder(x)

    def representation(self, images: Tensor) -> Tensor:
        """(B, ...) inputs -> (B, adapter.out_dim): the trained representation the probes read."""
        return self.adapter(self.backbone_features(images))

    def head_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("encoder.") and p.requires_grad]

    def configure_optimizers(self):
        groups, max_lr = [], []
        backbone = (
            [p for p in self.encoder.parameters() if p.requires_grad] if self.encoder is not None else []
        )
        if backbone:
            groups.append({"params": backbone, "lr": self.backbone_lr})
            max_lr.append(self.backbone_lr)
        groups.append({"params": self.head_parameters(), "lr": self.lr})
        max_lr.append(self.lr)
        # foreach: one fused update over all tensors; on a CPU the per-tensor loop costs more than a
        # small adapter's backward pass.
        optimiser = torch.optim.AdamW(groups, weight_decay=self.weight_decay, foreach=True)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=max_lr, total_steps=total, pct_start=min(0.3, 10 / total + 0.05)
        )
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class ContrastiveModule(_ImageTraining):
    """Image encoder + projection head vs gene side, trained by one of the contrastive losses.

    Batch keys: ``image`` (B, 3, H, W) uint8, ``genes`` (B, g) float, optional ``z`` (B, k) frozen gene
    embedding (similarity targets), ``label`` (B,) int64 with -1 unlabelled, optional ``probs`` (B, C),
    ``patient`` (B,) int64 codes (read by the optional ``adversary``, a
    :class:`~tpir_kedro.models.patient_adversary.PatientAdversary` on the adapter, whose cross-entropy is
    added to the loss; ``train_loss`` logs the contrastive loss alone, ``adversary_loss`` the other).
    """

    def __init__(
        self,
        encoder: ImageEncoder | None,
        augment: nn.Module,
        adapter: ImageAdapter,
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
        trainable_blocks: int | None = None,
        freeze_batch_norm: bool = False,
        adversary: PatientAdversary | None = None,
    ):
        super().__init__(
            encoder,
            augment,
            adapter,
            lr,
            backbone_lr,
            weight_decay,
            channels_last,
            trainable_blocks,
            freeze_batch_norm,
        )
        self.image_head = ProjectionHead(adapter.out_dim, embed_dim, dropout)
        self.gene_head = gene_side(gene_input, gene_dim, embed_dim, gene_hidden, dropout)
        self.loss_fn = loss_fn
        self.adversary = adversary

    def gene_embedding(self, genes: Tensor) -> Tensor:
        return self.gene_head(genes)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        representation = self.representation(batch["image"])
        u = gather_with_grad(self.image_head(representation).float())
        v = gather_with_grad(self.gene_embedding(batch["genes"]).float())
        z = gather_no_grad(batch["z"].float()) if "z" in batch else None
        labels = gather_no_grad(batch["label"]) if "label" in batch else None
        probs = gather_no_grad(batch["probs"].float()) if "probs" in batch else None
        loss = self.loss_fn(u, v, z=z, labels=labels, probs=probs)
        size = len(batch["image"])
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        if self.adversary is None:
            return loss
        # Per spot, so each rank's local batch suffices (no gather): DDP averages its gradients.
        adversary_loss = self.adversary(representation, batch["patient"])
        self.log("adversary_loss", adversary_loss, on_step=True, on_epoch=True, batch_size=size)
        return loss + adversary_loss


class SupervisedModule(_ImageTraining):
    """The supervised baseline: the same image side + a classifier, cross-entropy on the training
    patients' classified spots (the same label budget as ``class_guided``).
    """

    def __init__(
        self,
        encoder: ImageEncoder | None,
        augment: nn.Module,
        adapter: ImageAdapter,
        n_classes: int,
        class_weights: Tensor | None = None,
        lr: float = 1e-3,
        backbone_lr: float = 1e-4,
        weight_decay: float = 1e-4,
        channels_last: bool = True,
        dropout: float = 0.1,
        trainable_blocks: int | None = None,
        freeze_batch_norm: bool = False,
    ):
        super().__init__(
            encoder,
            augment,
            adapter,
            lr,
            backbone_lr,
            weight_decay,
            channels_last,
            trainable_blocks,
            freeze_batch_norm,
        )
        # GELU on the adapter output: the classifier is a two-layer head, the same depth as the
        # contrastive variants' projection head, so neither side gets a shallower adapter.
        self.classifier = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(adapter.out_dim, n_classes))
        self.register_buffer(
            "class_weights", class_weights if class_weights is not None else torch.ones(n_classes)
        )

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        logits = self.classifier(self.representation(batch["image"])).float()
        loss = F.cross_entropy(logits, batch["label"], weight=self.class_weights)
        self.log(
            "train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["image"])
        )
        return loss
