"""Pathology foundation models as image backbones, built with timm from a local checkpoint only.

Each entry of :data:`FOUNDATION_MODELS` is the timm architecture and keyword arguments its model
card gives (the cards were written for timm 0.9; the pinned timm 1.0 builds the same modules and
key layout, which ``tests/models/test_foundation_models.py`` checks per model), its pooling, its
native input size and its own normalisation. ``pretrained=False`` always: the weights come from
``weights_path`` (the file the user downloaded once from the gated Hugging Face repository),
never from the network.

Pooling: the class token after the final norm (timm's ``global_pool="token"``), except Virchow2,
whose card embeds a tile as its class token concatenated with the mean of its patch tokens (the
register tokens left out), 2 x 1280 = 2560 features.

Input: patches are resized to the model's native side (224 px) before the backbone, whatever
``patches.size_px`` is, so the features a frozen run caches are the ones the model was trained to
give.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASS_TOKEN = "class_token"
CLASS_TOKEN_AND_PATCH_MEAN = "class_token_and_patch_mean"


@dataclass(frozen=True)
class FoundationModel:
    """One foundation model: how timm builds it and how its features are read."""

    timm_name: str
    kwargs: Mapping[str, Any]
    feature_dim: int
    depth: int  # transformer blocks of the published model
    checkpoint: str  # where a user gets the weights (gated: downloaded once, kept as a local file)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    swiglu: bool = False  # mlp_layer=SwiGLUPacked, act_layer=SiLU (not expressible in YAML)
    pooling: str = CLASS_TOKEN
    input_px: int = 224
    notes: str = field(default="", compare=False)


_H_OPTIMUS = FoundationModel(
    timm_name="vit_giant_patch14_reg4_dinov2",
    kwargs={"img_size": 224, "init_values": 1e-5, "num_classes": 0, "dynamic_img_size": False},
    feature_dim=1536,
    depth=40,
    mean=(0.707223, 0.578729, 0.703617),
    std=(0.211883, 0.230117, 0.177517),
    checkpoint="bioptimus/H-optimus-0: pytorch_model.bin",
)

# Keyword arguments as on each model card (Hugging Face repository README / config.json).
FOUNDATION_MODELS: dict[str, FoundationModel] = {
    "uni": FoundationModel(
        timm_name="vit_large_patch16_224",
        kwargs={
            "img_size": 224,
            "patch_size": 16,
            "init_values": 1e-5,
            "num_classes": 0,
            "dynamic_img_size": True,
        },
        feature_dim=1024,
        depth=24,
        checkpoint="MahmoodLab/UNI: pytorch_model.bin",
    ),
    "uni2_h": FoundationModel(
        timm_name="vit_giant_patch14_224",
        kwargs={
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "num_classes": 0,
            "no_embed_class": True,
            "reg_tokens": 8,
            "dynamic_img_size": True,
        },
        feature_dim=1536,
        depth=24,
        swiglu=True,
        checkpoint="MahmoodLab/UNI2-h: pytorch_model.bin",
    ),
    "virchow2": FoundationModel(
        timm_name="vit_huge_patch14_224",
        kwargs={
            "img_size": 224,
            "init_values": 1e-5,
            "num_classes": 0,
            "mlp_ratio": 5.3375,
            "reg_tokens": 4,
            "global_pool": "",
            "dynamic_img_size": True,
        },
        feature_dim=2560,
        depth=32,
        swiglu=True,
        pooling=CLASS_TOKEN_AND_PATCH_MEAN,
        checkpoint="paige-ai/Virchow2: pytorch_model.bin",
    ),
    "h_optimus_0": _H_OPTIMUS,
    # H-optimus-1: the same architecture and normalisation, other weights
    "h_optimus_1": replace(_H_OPTIMUS, checkpoint="bioptimus/H-optimus-1: pytorch_model.bin"),
    "gigapath": FoundationModel(
        timm_name="vit_giant_patch14_dinov2",
        kwargs={
            "img_size": 224,
            "in_chans": 3,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "init_values": 1e-5,
            "mlp_ratio": 5.33334,
            "num_classes": 0,
        },
        feature_dim=1536,
        depth=40,
        checkpoint="prov-gigapath/prov-gigapath: pytorch_model.bin (the tile encoder)",
    ),
}


def build_foundation_net(name: str, depth: int | None = None) -> nn.Module:
    """The randomly initialised timm ViT of ``name`` (weights are loaded by the caller).

    ``depth``: fewer transformer blocks than the published model, for tests on small machines;
    every other argument, and so every key name and shape within a block, is the published one.
    """
    import timm
    from timm.layers import SwiGLUPacked

    spec = FOUNDATION_MODELS[name]
    kwargs = dict(spec.kwargs)
    if depth is not None:
        if not 1 <= int(depth) <= spec.depth:
            raise ValueError(f"{name}: depth must be in 1..{spec.depth}, got {depth}")
        kwargs["depth"] = int(depth)
    if spec.swiglu:
        kwargs.update(mlp_layer=SwiGLUPacked, act_layer=nn.SiLU)
    # pretrained=False: timm never fetches anything; the caller loads the local checkpoint.
    return timm.create_model(spec.timm_name, pretrained=False, **kwargs)


def pooled_features(name: str, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) normalised images -> (B, feature_dim) features as the model card reads them."""
    spec = FOUNDATION_MODELS[name]
    if x.shape[-2:] != (spec.input_px, spec.input_px):
        # the native input side: a ViT's patch grid and position embeddings are fitted to it
        x = nn.functional.interpolate(
            x, size=(spec.input_px, spec.input_px), mode="bilinear", align_corners=False, antialias=True
        )
    out = net(x)
    if spec.pooling == CLASS_TOKEN_AND_PATCH_MEAN:
        # (B, tokens, D): class token, then the register tokens, then the patch tokens
        out = torch.cat([out[:, 0], out[:, net.num_prefix_tokens :].mean(dim=1)], dim=-1)
    return out


def transformer_blocks(net: nn.Module) -> list[nn.Module]:
    """The ViT's blocks in forward order, the last one with the final norm (partial fine-tuning)."""
    blocks = list(net.blocks)
    return [*blocks[:-1], nn.ModuleList([blocks[-1], net.norm])]
