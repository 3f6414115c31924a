"""Training parameters shared by every variant (so variants differ only in what they are).

The defaults are the demo's (``conf/base/parameters_contrastive.yml``), so code and configuration
agree on what a run without overrides does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

REGIMES = ("frozen", "partial", "full")
BATCH_NORM = ("frozen", "train")
# The demo's augmentation (conf/base/parameters_contrastive.yml), chosen on the development cohort.
DEMO_AUGMENT = {
    "flips": True,
    "rot90": True,
    "hed_sigma": 0.1,
    "hed_shift": 0.04,
    "brightness": 0.2,
    "contrast": 0.2,
    "saturation": 0.2,
}


@dataclass(frozen=True)
class TrainingConfig:
    # frozen: the backbone's features of every patch under feature_views views are cached once and
    # the adapter + heads train on them; partial: the last trainable_blocks backbone blocks train
    # with them; full: the whole backbone does (GPUs).
    regime: str = "frozen"
    backbone: str = "efficientnet_lite0"
    init: str = "imagenet"  # imagenet | random | file
    weights_path: str | None = None  # a local state dict, for init "file" or ResNet ImageNet weights
    embed_dim: int = 128
    gene_hidden: int = 256
    dropout: float = 0.1
    adapter_hidden: int = 256
    adapter_dim: int = 256  # the trained representation the probes read
    feature_views: int = 16  # frozen regime: backbone passes per patch (view 0 un-augmented)
    trainable_blocks: int = 2  # partial regime: the last blocks of the backbone that train
    # partial / full regimes: "frozen" keeps the backbone's batch-norm running statistics (ImageNet's);
    # "train" re-estimates them on the training patches, which fits them to the cohort's stains.
    batch_norm: str = "frozen"
    epochs: int = 2
    max_steps: int | None = 2000  # the cap on optimiser steps per run, whatever the data size; None: epochs
    # Stop a run before max_steps once its loss has levelled off (models/plateau_stopping.py): checked
    # every plateau_check_every steps from plateau_min_steps on. False: every run takes max_steps.
    stop_at_plateau: bool = True
    plateau_min_steps: int = 200
    plateau_check_every: int = 50
    batch_size: int = 128
    lr: float = 1e-3  # adapter and heads
    backbone_lr: float = 2e-4
    weight_decay: float = 1e-4
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"  # several devices under `kedro run`: ddp_spawn (plain ddp re-runs the command)
    precision: str = "auto"  # auto: bf16-mixed (or 16-mixed) on GPU, 32-true on CPU
    channels_last: bool = True
    num_workers: int = 0
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    eval_batch_size: int = 256
    # Training views (and the frozen regime's cached views): PatchAugment's parameters.
    augment: dict = field(default_factory=lambda: dict(DEMO_AUGMENT))
    progress_bar: bool = True
    # Every step: the training-runs table then reads the losses PlateauStopping read.
    log_every_n_steps: int = 1

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> TrainingConfig:
        params = dict(params or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown training parameter(s) {unknown}; known: {sorted(known)}")
        config = cls(**params)
        if config.regime not in REGIMES:
            raise ValueError(f"unknown training regime {config.regime!r}; choose one of {REGIMES}")
        if config.batch_norm not in BATCH_NORM:
            raise ValueError(f"unknown batch_norm {config.batch_norm!r}; choose one of {BATCH_NORM}")
        if config.max_steps is not None and int(config.max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1 or null, got {config.max_steps}")
        if int(config.plateau_min_steps) < 4 or int(config.plateau_check_every) < 1:
            raise ValueError(
                f"need plateau_min_steps >= 4 and plateau_check_every >= 1, got {config.plateau_min_steps} "
                f"and {config.plateau_check_every}"
            )
        if int(config.feature_views) < 1:
            raise ValueError(f"feature_views must be >= 1, got {config.feature_views}")
        return config

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint_dict(self) -> dict:
        """What changes the trained weights (not how progress is shown or where features are batched)."""
        d = self.to_dict()
        if self.regime != "frozen":
            d.pop("feature_views")
        if self.regime != "partial":
            d.pop("trainable_blocks")
        if self.regime == "frozen":
            d.pop("batch_norm")  # no backbone trains: nothing for it to change
        if not self.stop_at_plateau:
            d.pop("plateau_min_steps")
            d.pop("plateau_check_every")
        for key in ("progress_bar", "log_every_n_steps", "eval_batch_size", "num_workers", "threads"):
            d.pop(key)
        return d
