"""The frozen-backbone regime's input: every patch's backbone features under several views, cached.

With the backbone frozen, a patch's features depend only on its pixels, the backbone and the view
(flip / 90° rotation / stain and colour jitter), never on a fold: so they are computed once per
patch store, for all folds and the final models, and a trainable adapter then trains on them for as
many steps as its loss needs, at a fraction of the cost of a backbone pass per step.

- :func:`compute_feature_views`: (n_store, V, D) float32, view 0 the un-augmented patch (exactly the
  features :func:`~tpir_kedro.models.inference.embed_patches` gives, what evaluation and ``predict``
  read), views 1..V-1 drawn by :class:`~tpir_kedro.models.augment.PatchAugment` from a seeded stream.
- :func:`cached_feature_views`: the same, memory-mapped from ``<root>/<backbone>-<key>/views.npy``; the
  key hashes the backbone's weights, every pixel of the store, the views and the models code, so a
  changed patch store or backbone gets a new cache and an unchanged one is read back, not recomputed.
- :class:`ViewSampler`: in a training step, one random view per spot; in eval mode, view 0.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from tpir_kedro.atomic_folder import new_folder_atomically
from tpir_kedro.models.augment import PatchAugment
from tpir_kedro.models.code_digest import models_code_digest
from tpir_kedro.models.image_encoders import ImageEncoder

logger = logging.getLogger(__name__)

VIEWS_FILE = "views.npy"
META_FILE = "meta.json"
_HASH_CHUNK = 512  # patches per read while hashing a store


class ViewSampler(nn.Module):
    """(B, V, D) cached features -> (B, D): a uniformly random view per sample when training, view 0
    (the un-augmented patch) in eval mode. It takes the place of the pixel augmentation.

    Training batches usually arrive as (B, D), one view per spot already drawn by the loader
    (:class:`~tpir_kedro.models.patch_data.SpotPairs` with ``random_view``); they pass through.
    """

    def forward(self, views: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if views.ndim == 2 and self.training:
            return views.float()
        if views.ndim != 3:
            raise ValueError(
                f"expected cached features of shape (B, V, D), or (B, D) in training, got {tuple(views.shape)}"
            )
        if not self.training or views.shape[1] == 1:
            return views[:, 0].float()
        pick = torch.randint(
            views.shape[1],
            (len(views),),
            generator=generator,
            device=generator.device if generator else views.device,
        )
        return views[torch.arange(len(views), device=views.device), pick.to(views.device)].float()


def hash_into(h, a: np.ndarray) -> None:
    """Feed ``a``'s dtype, shape and bytes to the hash ``h`` (the run key hashes its arrays this way too)."""
    a = np.ascontiguousarray(a)
    h.update(str((a.dtype.str, a.shape)).encode())
    h.update(memoryview(a).cast("B"))


def encoder_digest(encoder: ImageEncoder) -> str:
    """sha256 (16 hex) of the backbone name and every weight and buffer of ``encoder``."""
    h = hashlib.sha256(encoder.backbone.encode())
    for name, tensor in sorted(encoder.net.state_dict().items()):
        h.update(name.encode())
        hash_into(h, tensor.detach().cpu().contiguous().numpy())
    return h.hexdigest()[:16]


def store_digest(patches: np.ndarray) -> str:
    """sha256 (16 hex) of every pixel of a (n_store, S, S, 3) uint8 store, read in chunks (a memmap
    is never loaded whole).
    """
    h = hashlib.sha256(str((patches.dtype.str, patches.shape)).encode())
    for start in range(0, len(patches), _HASH_CHUNK):
        h.update(memoryview(np.ascontiguousarray(patches[start : start + _HASH_CHUNK])).cast("B"))
    return h.hexdigest()[:16]


def feature_views_key(
    encoder: ImageEncoder, patches: np.ndarray, n_views: int, augment: dict, seed: int
) -> str:
    """What the cached features depend on: weights, pixels, the views (count, augmentation, seed), the code."""
    spec = {
        "n_views": int(n_views),
        "augment": dict(sorted(augment.items())),
        "seed": int(seed),
        "code": models_code_digest(),
        "encoder": encoder_digest(encoder),
        "store": store_digest(patches),
        "normalisation": [encoder.mean, encoder.std],
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


@torch.no_grad()
def compute_feature_views(
    encoder: ImageEncoder,
    patches: np.ndarray,
    n_views: int,
    augment: dict,
    seed: int,
    out: np.ndarray | None = None,
    batch_size: int = 256,
    device: str | None = None,
) -> np.ndarray:
    """Backbone features of every patch under ``n_views`` views.

    Parameters
    ----------
    encoder
        the frozen backbone (run in eval mode: batch norm uses its running statistics).
    patches
        (n_store, S, S, 3) uint8 patch store.
    n_views
        V >= 1. View 0 is the un-augmented patch; views 1..V-1 each draw one random
        symmetry and stain / colour jitter per patch (``augment``: PatchAugment's parameters).
    seed
        the views' random streams (one ``torch.Generator`` per view, read in patch order, so a
        seed gives the same views whatever ``batch_size``).
    out
        an (n_store, V, D) float32 array to fill (e.g. a memmap being written), or None.

    Returns
    -------
        (n_store, V, D) float32 features, ``out`` when given.
    """
    if n_views < 1:
        raise ValueError(f"feature_views must be >= 1, got {n_views}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    n = len(patches)
    if out is None:
        out = np.empty((n, n_views, encoder.feature_dim), dtype=np.float32)
    if out.shape != (n, n_views, encoder.feature_dim):
        raise ValueError(f"out must be {(n, n_views, encoder.feature_dim)}, got {out.shape}")
    augment_views = PatchAugment.from_params({**augment, "mean": encoder.mean, "std": encoder.std}).to(dev)
    # One stream per view, consumed in patch order: the views do not depend on the batch size.
    generators = [
        torch.Generator(device="cpu").manual_seed(int(seed) * 100_003 + view) for view in range(n_views)
    ]
    was_training = encoder.training
    encoder.eval().to(dev)
    autocast = (
        torch.autocast(dev.type, dtype=torch.bfloat16)
        if dev.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    for start in range(0, n, batch_size):
        # np.array: a copy, because torch cannot own a read-only memmap's pages (and warns)
        x = torch.from_numpy(np.array(patches[start : start + batch_size])).to(dev).permute(0, 3, 1, 2)
        for view in range(n_views):
            augment_views.train(view > 0)
            with autocast:
                f = encoder(
                    augment_views(x, generator=generators[view]).contiguous(memory_format=torch.channels_last)
                )
            out[start : start + len(x), view] = f.float().cpu().numpy()
    encoder.train(was_training)
    return out


def cached_feature_views(
    root: str | Path,
    encoder: ImageEncoder,
    patches: np.ndarray,
    n_views: int,
    augment: dict,
    seed: int,
    batch_size: int = 256,
    device: str | None = None,
) -> np.ndarray:
    """:func:`compute_feature_views`, read back from the cache under ``root`` when its key matches.

    Returns the (n_store, V, D) float32 array memory-mapped read-only. A new cache folder is written
    whole or not at all (staging folder, then rename), so an interrupted run leaves no half file.
    """
    key = feature_views_key(encoder, patches, n_views, augment, seed)
    folder = Path(root) / f"{encoder.backbone}-{key}"
    if not (folder / VIEWS_FILE).is_file():
        logger.info(
            "frozen backbone: computing %s features of %d patches x %d views into %s",
            encoder.backbone,
            len(patches),
            n_views,
            folder,
        )
        with new_folder_atomically(folder, "a feature cache") as staging:
            shape = (len(patches), int(n_views), encoder.feature_dim)
            views = np.lib.format.open_memmap(staging / VIEWS_FILE, mode="w+", dtype=np.float32, shape=shape)
            compute_feature_views(
                encoder, patches, n_views, augment, seed, out=views, batch_size=batch_size, device=device
            )
            views.flush()
            del views
            meta = {
                "backbone": encoder.backbone,
                "init": encoder.init,
                "n_views": int(n_views),
                "augment": augment,
                "seed": int(seed),
                "shape": list(shape),
                "key": key,
            }
            (staging / META_FILE).write_text(json.dumps(meta, indent=1, default=str))
    else:
        logger.info("frozen backbone: reusing cached features %s", folder)
    return np.load(folder / VIEWS_FILE, mmap_mode="r")
