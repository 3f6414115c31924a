"""Frozen-model inference: patches -> image features (and joint-space embeddings), genes -> joint space."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tpir_kedro.models.augment import PatchAugment
from tpir_kedro.models.image_encoders import ImageEncoder


def _device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


@torch.no_grad()
def embed_patches(
    encoder: ImageEncoder,
    patches: np.ndarray,
    rows: np.ndarray,
    head: nn.Module | None = None,
    batch_size: int = 256,
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Backbone features (n, feature_dim) of patches ``patches[rows]`` ((n_store, H, W, 3) uint8), and
    their joint-space embeddings (n, embed_dim) through ``head`` when given. No augmentation.
    """
    dev = _device(device)
    normalise = PatchAugment.from_params({"mean": encoder.mean, "std": encoder.std}).eval().to(dev)
    was_training = encoder.training
    encoder.eval().to(dev)
    if head is not None:
        head.eval().to(dev)
    features, projected = [], []
    autocast = (
        torch.autocast(dev.type, dtype=torch.bfloat16)
        if dev.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    rows = np.asarray(rows)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        order = np.argsort(chunk)  # memmap locality
        block = np.empty((len(chunk), *patches.shape[1:]), dtype=np.uint8)
        block[order] = patches[chunk[order]]
        x = torch.from_numpy(block).to(dev).permute(0, 3, 1, 2)
        with autocast:
            f = encoder(normalise(x).contiguous(memory_format=torch.channels_last))
            features.append(f.float().cpu())
            if head is not None:
                projected.append(head(f).float().cpu())
    encoder.train(was_training)
    feats = torch.cat(features).numpy() if features else np.zeros((0, encoder.feature_dim), np.float32)
    proj = torch.cat(projected).numpy() if head is not None and projected else None
    return feats, proj


@torch.no_grad()
def project(head: nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """(n, d) inputs (gene-side inputs, or image features already computed) -> (n, embed_dim)
    joint-space embeddings through ``head``, on CPU in eval mode.
    """
    head = head.eval().cpu()
    out = [
        head(torch.from_numpy(np.asarray(x[i : i + batch_size], dtype=np.float32)))
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
