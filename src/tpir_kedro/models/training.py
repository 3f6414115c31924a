"""Train one image model (one variant, one fold, one seed) with Lightning, resumably.

Each run lives in a folder keyed by a fingerprint of everything that shapes its weights: the
variant, the training parameters, the seed, the content of its inputs (patch rows and a sample of
their pixels -- or of their cached features in the frozen regime --, gene inputs, labels) and the
source of this package (:mod:`~tpir_kedro.models.code_digest`). An interrupted run resumes from
``last.ckpt``; a finished one is loaded instead of retrained; a changed run gets a new folder and
starts afresh.

The regime (``TrainingConfig.regime``) says what trains: ``frozen`` -- the adapter and heads on
cached backbone features of several views per patch (``TrainingData.patches`` is then the
(n_store, V, D) feature array); ``partial`` -- also the backbone's last blocks; ``full`` -- also the
whole backbone. Every regime trains for ``max_steps`` optimiser steps (or ``epochs`` when None), or
stops before once its loss has levelled off (``stop_at_plateau``, :mod:`~tpir_kedro.models.plateau_stopping`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from tpir_kedro.models.adapter import ImageAdapter
from tpir_kedro.models.augment import PatchAugment
from tpir_kedro.models.code_digest import models_code_digest
from tpir_kedro.models.contrastive_module import ContrastiveModule, SupervisedModule
from tpir_kedro.models.cpu_threads import pin_torch_threads
from tpir_kedro.models.feature_views import ViewSampler, hash_into
from tpir_kedro.models.image_encoders import ImageEncoder, build_image_encoder
from tpir_kedro.models.losses import contrastive_loss
from tpir_kedro.models.patch_data import SpotPairs, collate_batch
from tpir_kedro.models.patient_adversary import PatientAdversary
from tpir_kedro.models.plateau_stopping import PlateauStopping
from tpir_kedro.models.samplers import BATCHES
from tpir_kedro.models.training_config import TrainingConfig
from tpir_kedro.models.variants import VariantSpec
from tpir_kedro.quiet_logs import quiet_third_party_logs

logger = logging.getLogger(__name__)
quiet_third_party_logs()  # also for runs outside Kedro (benchmarks, notebooks): see tpir_kedro/quiet_logs.py

FINAL_WEIGHTS = "final.pt"
FINAL_META = "final.json"
LAST_CHECKPOINT = "last.ckpt"
_PIXEL_SAMPLE = 256
# last.ckpt is written at an epoch's end, about every CHECKPOINT_STEPS optimiser steps. Why not every
# epoch: a frozen-regime epoch is a handful of ~10 ms steps, and saving the module and optimiser after
# each one cost more than the training (measured: +4.4 ms per step).
CHECKPOINT_STEPS = 200


@dataclass
class TrainingData:
    """The training spots of one fold. n = number of spots; arrays row-aligned.

    patches: (n_store, H, W, 3) uint8 patch store (memmap), or in the frozen regime the
    (n_store, V, D) float32 cached backbone features of V views; rows: (n,) store rows;
    genes: (n, g) float32 gene-side input; z: (n, k) frozen gene embedding or None;
    labels: (n,) int64 class codes, -1 unlabelled; probs: (n, C) or None; patients: (n,) int64 codes.
    """

    patches: np.ndarray
    rows: np.ndarray
    genes: np.ndarray | None
    z: np.ndarray | None
    labels: np.ndarray
    probs: np.ndarray | None
    patients: np.ndarray
    n_classes: int

    def subset(self, keep: np.ndarray) -> TrainingData:
        pick = lambda a: None if a is None else a[keep]  # noqa: E731
        return TrainingData(
            self.patches,
            self.rows[keep],
            pick(self.genes),
            pick(self.z),
            self.labels[keep],
            pick(self.probs),
            self.patients[keep],
            self.n_classes,
        )


@dataclass
class TrainedImageModel:
    variant: VariantSpec
    encoder: ImageEncoder
    module: nn.Module | None  # the Lightning module (heads included); None for untrained baselines
    history: pd.DataFrame
    seconds: float
    fingerprint: str
    resumed: bool = False
    reused: bool = False

    @property
    def adapter(self) -> ImageAdapter | None:
        """The trained adapter (None for the untrained baselines, which are probed on the backbone)."""
        return None if self.module is None else self.module.adapter

    @property
    def steps(self) -> int:
        """Optimiser steps the run took (0 for the untrained baselines)."""
        return 0 if self.history.empty or "step" not in self.history else int(self.history["step"].max()) + 1


def _hash_array(h, a) -> None:
    if a is None:
        h.update(b"none")
        return
    hash_into(h, a)


def training_fingerprint(variant: VariantSpec, config: TrainingConfig, data: TrainingData, seed: int) -> str:
    h = hashlib.sha256()
    spec = {
        "variant": variant.to_dict(),
        "config": config.fingerprint_dict(),
        "seed": seed,
        "code": models_code_digest(),
    }
    h.update(json.dumps(spec, sort_keys=True, default=str).encode())
    for a in (data.rows, data.genes, data.z, data.labels, data.probs, data.patients):
        _hash_array(h, a)
    # A regenerated patch store (or feature cache) with the same rows must not reuse old weights;
    # hashing every pixel of a real store (GBs) per run is slow, so hash an evenly spaced sample.
    sample = np.sort(data.rows)[:: max(1, len(data.rows) // _PIXEL_SAMPLE)]
    _hash_array(h, np.asarray(data.patches[sample]))
    return h.hexdigest()[:16]


def resolve_precision(config: TrainingConfig) -> str:
    if config.precision != "auto":
        return config.precision
    if config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def resolve_strategy(config: TrainingConfig) -> str:
    several = (
        config.devices == -1
        or (isinstance(config.devices, int) and config.devices > 1)
        or (isinstance(config.devices, str) and config.devices not in ("1", "auto"))
    )
    if config.strategy == "auto" and several:
        # Plain "ddp" re-launches sys.argv (the whole `kedro run`) on every rank.
        return "ddp_spawn"
    return config.strategy


def make_trainer(
    config: TrainingConfig,
    run_dir: Path | None,
    callbacks: list,
    max_steps: int | None = None,
    max_epochs: int | None = None,
) -> L.Trainer:
    """The Trainer every image-training run uses (the throughput benchmark too, so it measures this).

    ``config.max_steps`` (unless ``max_steps`` overrides it) fixes the optimiser steps, as many epochs
    as they take; without it, ``config.epochs`` decide.
    """
    steps = config.max_steps if max_steps is None else max_steps
    steps = -1 if steps is None else int(steps)
    epochs = config.epochs if max_epochs is None else max_epochs
    return L.Trainer(
        max_epochs=-1 if steps > 0 and max_epochs is None else epochs,
        max_steps=steps,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=resolve_strategy(config),
        precision=resolve_precision(config),
        use_distributed_sampler=False,  # the samplers (models/samplers.py) shard by rank themselves
        logger=CSVLogger(run_dir, name="logs") if run_dir is not None else False,
        callbacks=callbacks,
        enable_checkpointing=run_dir is not None,
        enable_progress_bar=config.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=config.log_every_n_steps,
        deterministic=False,
    )


class _SpotPairsData(L.LightningDataModule):
    """Builds the loader inside each process, so the sampler sees that process's DDP rank."""

    def __init__(
        self,
        data: TrainingData,
        batch_size: int,
        num_workers: int,
        seed: int,
        with_z: bool,
        with_probs: bool,
        batches: str = "mixed",
    ):
        super().__init__()
        self.data, self.batch_size, self.num_workers, self.seed = data, batch_size, num_workers, seed
        self.with_z, self.with_probs, self.batches = with_z, with_probs, batches

    def train_dataloader(self):
        d = self.data
        dataset = SpotPairs(
            patches=d.patches,
            rows=d.rows,
            genes=d.genes,
            z=d.z if self.with_z else None,
            labels=d.labels,
            probs=d.probs if self.with_probs else None,
            patients=d.patients,
            random_view=np.ndim(d.patches) == 3,  # cached features: the loader draws each spot's view
        )
        sampler = BATCHES[self.batches](d.patients, batch_size=self.batch_size, seed=self.seed)
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            collate_fn=collate_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )


def build_module(
    variant: VariantSpec, config: TrainingConfig, data: TrainingData, encoder: ImageEncoder
) -> L.LightningModule:
    """The Lightning module of one trained variant under ``config.regime``. In the frozen regime the
    backbone stays outside it (its features come cached) and the view sampler replaces augmentation.
    """
    if config.regime == "frozen":
        if np.asarray(data.patches).ndim != 3:
            raise ValueError(
                "the frozen regime trains on cached backbone features (n_store, V, D); got a patch store"
            )
        image_encoder, augment, blocks = None, ViewSampler(), None
    else:
        augment = PatchAugment.from_params({**config.augment, "mean": encoder.mean, "std": encoder.std})
        image_encoder, blocks = encoder, (config.trainable_blocks if config.regime == "partial" else None)
        if config.batch_norm == "frozen" and (variant.init or config.init) == "random":
            logger.warning(
                "variant %s: %s fine-tuning from a random init with contrastive.batch_norm: frozen keeps "
                "untrained batch-norm statistics (mean 0, variance 1); set contrastive.batch_norm: train",
                variant.name,
                config.regime,
            )
    adapter = ImageAdapter(encoder.feature_dim, config.adapter_hidden, config.adapter_dim, config.dropout)
    common = dict(
        lr=config.lr,
        backbone_lr=config.backbone_lr,
        weight_decay=config.weight_decay,
        channels_last=config.channels_last,
        trainable_blocks=blocks,
        freeze_batch_norm=config.batch_norm == "frozen",
    )
    if variant.objective == "supervised":
        counts = np.bincount(data.labels, minlength=data.n_classes).astype(np.float32)
        # Inverse-frequency weights: real folds are dominated by one or two classes.
        weights = np.where(
            counts > 0, counts.sum() / np.maximum(counts, 1) / max(1, int((counts > 0).sum())), 0.0
        )
        return SupervisedModule(
            image_encoder,
            augment,
            adapter,
            data.n_classes,
            torch.tensor(weights, dtype=torch.float32),
            dropout=config.dropout,
            **common,
        )
    adversary = (
        PatientAdversary(config.adapter_dim, data.patients, variant.patient_adversary, config.adapter_hidden)
        if variant.patient_adversary
        else None
    )
    return ContrastiveModule(
        image_encoder,
        augment,
        adapter,
        contrastive_loss(variant.loss, variant.loss_params),
        variant.gene_input,
        data.genes.shape[1],
        embed_dim=config.embed_dim,
        gene_hidden=config.gene_hidden,
        dropout=config.dropout,
        adversary=adversary,
        **common,
    )


def checkpoint_every_n_epochs(batches_per_epoch: int) -> int:
    """Epochs between two saves of ``last.ckpt``: every epoch when epochs are long (full fine-tuning on
    real data), every ~``CHECKPOINT_STEPS`` steps when they are short (the frozen regime's).
    """
    return max(1, CHECKPOINT_STEPS // max(1, int(batches_per_epoch)))


def _initial_encoder(variant: VariantSpec, config: TrainingConfig) -> ImageEncoder:
    init = variant.init or config.init
    return build_image_encoder(config.backbone, init, config.weights_path if init != "random" else None)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _history(run_dir: Path) -> pd.DataFrame:
    files = sorted(run_dir.glob("logs/**/metrics.csv"))
    if not files:
        return pd.DataFrame(columns=["epoch", "step", "train_loss_epoch"])
    table = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    keep = [c for c in ("epoch", "step", "train_loss_step", "train_loss_epoch") if c in table.columns]
    return table[keep]


def train_image_model(
    variant: VariantSpec, config: TrainingConfig, data: TrainingData, seed: int, run_root: Path | None
) -> TrainedImageModel:
    """Trains (or reloads) one variant's image model on ``data``.

    ``run_root``: the checkpoint folder of this variant and fold; the run goes to
    ``run_root/seed<seed>-<fingerprint>``. None trains without checkpoints (tests).
    """
    L.seed_everything(seed, workers=True, verbose=False)  # before the encoder: random init is seeded too
    encoder = _initial_encoder(variant, config)
    if not variant.trains:
        return TrainedImageModel(variant, encoder, None, pd.DataFrame(), 0.0, "untrained")
    if variant.needs_labels:
        data = data.subset(data.labels >= 0) if variant.objective == "supervised" else data
        if (data.labels >= 0).sum() == 0:
            raise ValueError(f"variant {variant.name!r} needs tissue labels, and no training spot has one")
    if len(data.rows) < config.batch_size:
        raise ValueError(
            f"variant {variant.name!r}: {len(data.rows)} training spots, fewer than one batch ({config.batch_size})"
        )
    fingerprint = training_fingerprint(variant, config, data, seed)
    module = build_module(variant, config, data, encoder)
    run_dir = None if run_root is None else Path(run_root) / f"seed{seed}-{fingerprint}"
    if run_dir is not None and (run_dir / FINAL_WEIGHTS).is_file():
        module.load_state_dict(torch.load(run_dir / FINAL_WEIGHTS, map_location="cpu", weights_only=True))
        meta = json.loads((run_dir / FINAL_META).read_text())
        logger.info("variant %s: reusing finished run %s", variant.name, run_dir)
        return TrainedImageModel(
            variant,
            _trained_encoder(module, encoder),
            module,
            _history(run_dir),
            float(meta["seconds"]),
            fingerprint,
            reused=True,
        )

    pin_torch_threads(config.threads)
    callbacks, resume = [], None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        # One file, overwritten at epoch ends. (save_last=True with save_top_k=0 never writes last.ckpt in
        # Lightning 2.x: it only saves "last" at a step where a top-k checkpoint was saved.)
        every = checkpoint_every_n_epochs(len(data.rows) // config.batch_size)
        callbacks.append(
            ModelCheckpoint(
                dirpath=run_dir,
                filename=LAST_CHECKPOINT.removesuffix(".ckpt"),
                save_top_k=1,
                every_n_epochs=every,
                enable_version_counter=False,
            )
        )
        if (run_dir / LAST_CHECKPOINT).is_file():
            resume = run_dir / LAST_CHECKPOINT
            logger.info("variant %s: resuming from %s", variant.name, resume)
    if config.stop_at_plateau:
        callbacks.append(PlateauStopping(config.plateau_min_steps, config.plateau_check_every))
    trainer = make_trainer(config, run_dir, callbacks)
    datamodule = _SpotPairsData(
        data,
        config.batch_size,
        config.num_workers,
        seed,
        with_z=variant.loss == "similarity",
        with_probs=variant.use_class_probs,
        batches=variant.batches,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True if resume else None)
    seconds = time.perf_counter() - start
    module.trainer = None  # drop the Trainer (optimiser state, loaders) so finished models stay light
    module.cpu().eval()
    history = pd.DataFrame()
    if run_dir is not None and trainer.is_global_zero:
        _atomic_save(module.state_dict(), run_dir / FINAL_WEIGHTS)
        (run_dir / FINAL_META).write_text(
            json.dumps(
                {"variant": variant.to_dict(), "config": config.to_dict(), "seed": seed, "seconds": seconds},
                default=str,
            )
        )
        history = _history(run_dir)
    return TrainedImageModel(
        variant,
        _trained_encoder(module, encoder),
        module,
        history,
        seconds,
        fingerprint,
        resumed=resume is not None,
    )


def _trained_encoder(module: L.LightningModule, initial: ImageEncoder) -> ImageEncoder:
    """The backbone after training: the module's own, or the untouched initial one (frozen regime)."""
    return initial.eval() if module.encoder is None else module.encoder
