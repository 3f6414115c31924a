"""Training parameters shared by every variant (so variants differ only in what they are)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class TrainingConfig:
    backbone: str = "efficientnet_lite0"
    init: str = "imagenet"  # imagenet | random | file
    weights_path: str | None = None  # a local state dict, for init "file" or ResNet ImageNet weights
    embed_dim: int = 128
    gene_hidden: int = 256
    dropout: float = 0.1
    epochs: int = 4
    batch_size: int = 64
    lr: float = 1e-3  # heads
    backbone_lr: float = 1e-4
    weight_decay: float = 1e-4
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"  # several devices under `kedro run`: ddp_spawn (plain ddp re-runs the command)
    precision: str = "auto"  # auto: bf16-mixed (or 16-mixed) on GPU, 32-true on CPU
    channels_last: bool = True
    num_workers: int = 0
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    eval_batch_size: int = 256
    augment: dict = field(default_factory=dict)
    progress_bar: bool = True
    log_every_n_steps: int = 5

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> TrainingConfig:
        params = dict(params or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown training parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**params)

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint_dict(self) -> dict:
        """What changes the trained weights (not how progress is shown or where features are batched)."""
        d = self.to_dict()
        for key in ("progress_bar", "log_every_n_steps", "eval_batch_size", "num_workers", "threads"):
            d.pop(key)
        return d
