"""Batched, on-device patch augmentation and normalisation: uint8 patches in, normalised floats out.

Runs inside the training step on whatever device the batch is on, so the data loader only moves
uint8 bytes and a GPU does the arithmetic. Every random draw is one (B, 12) uniform tensor, so a
seeded ``torch.Generator`` reproduces a batch exactly whichever options are switched on.

Training mode, per sample and in this order:
1. a random element of the symmetry group the flags allow: ``flips`` -> identity, horizontal,
   vertical flip or both; ``rot90`` -> a multiple of 90 degrees; both -> all 8 symmetries of the
   square (histology has no orientation). One gather with a per-sample pixel permutation.
2. HED stain jitter: RGB -> optical density -> haematoxylin/eosin/DAB concentrations (Ruifrok &
   Johnston colour deconvolution), each concentration scaled by U(1 - hed_sigma, 1 + hed_sigma) and
   shifted by U(-hed_shift, hed_shift) (optical density in log10 units), back to RGB, clamped.
3. brightness, contrast, saturation jitter: factors U(max(0, 1 - s), 1 + s), applied as in
   torchvision's ColorJitter but in this fixed order.
Eval mode: only the conversion to [0, 1] and the normalisation. A strength of 0 disables a step.

Cost on a CPU is a handful of passes over the batch, each one op on the whole batch (no Python
per sample, no device syncs), in place after the first copy, in channel-major (NCHW) memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Ruifrok & Johnston (2001), Anal. Quant. Cytol. Histol. 23:291: optical-density vectors (R, G, B)
# of haematoxylin, eosin and DAB; rows are the stains. Normalised to unit length at use.
RUIFROK_JOHNSTON_STAINS = (
    (0.650, 0.704, 0.286),  # haematoxylin
    (0.072, 0.990, 0.105),  # eosin
    (0.268, 0.570, 0.776),  # DAB
)
# Intensity floor before the log: optical density at most 3 (a scanner's useful range), so that a
# black pixel stays finite and scales like a very dark one. 1e-3 < 1/255: round trips stay exact.
_MIN_INTENSITY = 1e-3
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 grey, as torchvision uses
_N_DRAWS = 12  # columns of the per-sample uniform draw: 3 geometry, 3 + 3 HED, 3 colour
_PARAMS = ("mean", "std", "flips", "rot90", "hed_sigma", "hed_shift", "brightness", "contrast", "saturation")


def _symmetry(code: int, image: Tensor) -> Tensor:
    """Symmetry ``code`` = 4 * transpose + 2 * flip W + flip H, applied in that order, of (..., S, S)."""
    if code & 4:
        image = image.transpose(-1, -2)
    if code & 2:
        image = image.flip(-1)
    if code & 1:
        image = image.flip(-2)
    return image


class PatchAugment(nn.Module):
    """(B, 3, S, S) patches -> (B, 3, S, S) normalised float, augmented in training mode.

    Parameters
    ----------
    mean, std
        per-channel normalisation of [0, 1] RGB (e.g. the backbone's ImageNet values).
    flips
        random horizontal and vertical flips.
    rot90
        random multiple of 90 degree rotation (patches must be square).
    hed_sigma
        HED concentration scale jitter, factor ~ U(1 - hed_sigma, 1 + hed_sigma).
    hed_shift
        HED concentration shift jitter, ~ U(-hed_shift, hed_shift), in log10 OD.
    brightness, contrast, saturation
        colour jitter strengths s, factor ~ U(max(0, 1 - s), 1 + s).

    Input uint8 is scaled by 1/255 and computed in float32; floating input (already in [0, 1]) keeps
    its dtype (half/bfloat16 are computed in float32 and cast back). Autocast is switched off inside.
    The output is contiguous NCHW; the input is never modified.
    """

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        *,
        flips: bool = True,
        rot90: bool = True,
        hed_sigma: float = 0.0,
        hed_shift: float = 0.0,
        brightness: float = 0.0,
        contrast: float = 0.0,
        saturation: float = 0.0,
    ) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
        if mean_t.numel() != 3 or std_t.numel() != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {mean_t.numel()} and {std_t.numel()}")
        if not torch.all(std_t > 0):
            raise ValueError(f"std must be positive, got {std_t.tolist()}")
        if not 0.0 <= hed_sigma < 1.0:
            raise ValueError(f"hed_sigma must be in [0, 1), got {hed_sigma}")
        strengths = {
            "hed_shift": hed_shift,
            "brightness": brightness,
            "contrast": contrast,
            "saturation": saturation,
        }
        for name, value in strengths.items():
            if not value >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.flips, self.rot90 = bool(flips), bool(rot90)
        self.hed_sigma, self.hed_shift = float(hed_sigma), float(hed_shift)
        self.brightness, self.contrast, self.saturation = (
            float(brightness),
            float(contrast),
            float(saturation),
        )

        stains = torch.tensor(RUIFROK_JOHNSTON_STAINS, dtype=torch.float64)
        stains = stains / stains.norm(dim=1, keepdim=True)
        # Constants, not buffers: a module cast to bf16/half ("bf16-true" precision) would otherwise
        # round the stain matrix and the normalisation. Copied once per (device, dtype) on first use.
        self._constants = {
            "mean": mean_t.reshape(1, 3, 1, 1),
            "std": std_t.reshape(1, 3, 1, 1),
            "rgb_from_hed": stains,  # od_row = hed_row @ rgb_from_hed
            "hed_from_rgb": torch.linalg.inv(stains),
            "luma": torch.tensor(_LUMA, dtype=torch.float64).reshape(1, 1, 3),
        }
        self._cache: dict[tuple, Tensor] = {}

    @classmethod
    def from_params(cls, params: Mapping) -> PatchAugment:
        """Build from a parameters dict (keys as the constructor's; missing ones take the defaults)."""
        unknown = sorted(set(params) - set(_PARAMS))
        if unknown:
            raise ValueError(f"unknown augmentation parameter(s) {unknown}; expected some of {list(_PARAMS)}")
        kwargs = dict(params)
        for key in ("mean", "std"):
            if key in kwargs:
                kwargs[key] = tuple(float(v) for v in kwargs[key])
        return cls(**kwargs)

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(self._constants["mean"].reshape(-1).tolist())

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(self._constants["std"].reshape(-1).tolist())

    @property
    def jitters_colour(self) -> bool:
        return (
            self.hed_sigma > 0
            or self.hed_shift > 0
            or self.brightness > 0
            or self.contrast > 0
            or self.saturation > 0
        )

    def extra_repr(self) -> str:
        return (
            f"flips={self.flips}, rot90={self.rot90}, hed_sigma={self.hed_sigma}, hed_shift={self.hed_shift}, "
            f"brightness={self.brightness}, contrast={self.contrast}, saturation={self.saturation}"
        )

    def __getstate__(self):
        # Pickled for ddp_spawn / deepcopy: leave the per-device copies behind.
        state = super().__getstate__()
        state["_cache"] = {}
        return state

    def _const(self, name: str, like: Tensor) -> Tensor:
        key = (name, like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = self._constants[name].to(device=like.device, dtype=like.dtype)
        return self._cache[key]

    def _symmetry_sources(self, size: int, device: torch.device) -> Tensor:
        """(8, size * size) int64: for each symmetry code, the source pixel of every output pixel."""
        key = ("symmetry", size, device)
        if key not in self._cache:
            grid = torch.arange(size * size, device=device).reshape(size, size)
            self._cache[key] = torch.stack([_symmetry(code, grid).reshape(-1) for code in range(8)])
        return self._cache[key]

    def _rotation_codes(self, device: torch.device) -> Tensor:
        """(4,) int64 symmetry code of rot90 by k = 0..3 (cached: no host-to-device copy per batch)."""
        key = ("rotation", device)
        if key not in self._cache:
            self._cache[key] = torch.tensor((0, 5, 3, 6), device=device)
        return self._cache[key]

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, 3, S, S) uint8 (or float in [0, 1]) -> (B, 3, S, S) normalised float.

        ``generator``: the source of randomness in training mode (the default generator of the
        images' device when None). It may live on another device than the images: the (B, 12)
        draws are made on its device and moved, which costs nothing next to the images.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        out_dtype = images.dtype if images.is_floating_point() else torch.float32
        compute_dtype = torch.promote_types(out_dtype, torch.float32)
        # Autocast would run the stain matmul in bf16/fp16; these few ops want full precision.
        with torch.autocast(device_type=images.device.type, enabled=False):
            return self._forward(images, generator, compute_dtype).to(out_dtype)

    def _forward(
        self, images: Tensor, generator: torch.Generator | None, compute_dtype: torch.dtype
    ) -> Tensor:
        # uint8 -> [0, 1] is folded into the first arithmetic pass, and after the first copy every
        # step works in place: on a CPU, allocating a fresh batch-sized tensor (page faults) costs
        # more than the arithmetic on it.
        scale = 1.0 if images.is_floating_point() else 1.0 / 255.0
        # Channel-major output: per-channel arithmetic on channels-last memory is several times
        # slower on CPUs, and converting to it here would be a second copy.
        x = images.to(compute_dtype, memory_format=torch.contiguous_format)
        if self.training and len(images) > 0 and (self.flips or self.rot90 or self.jitters_colour):
            draw_device = generator.device if generator is not None else images.device
            u = torch.rand(
                len(images), _N_DRAWS, generator=generator, device=draw_device, dtype=torch.float32
            )
            u = u.to(device=images.device, dtype=compute_dtype)
            x = self._geometry(x, u[:, 0:3])
            if x is images:
                x = x.clone()
            if self.hed_sigma > 0 or self.hed_shift > 0:
                x, scale = self._hed_jitter(x, u[:, 3:6], u[:, 6:9], scale), 1.0
            if self.brightness > 0 or self.contrast > 0 or self.saturation > 0:
                x, scale = self._colour_jitter(x, u[:, 9:12], scale), 1.0
        std = self._const("std", x)
        factor, shift = scale / std, -self._const("mean", x) / std
        return (x * factor).add_(shift) if x is images else x.mul_(factor).add_(shift)

    def _geometry(self, x: Tensor, u: Tensor) -> Tensor:
        """A random symmetry per sample of contiguous (B, 3, S, S) ``x``, from u (B, 3) uniforms."""
        if not (self.flips or self.rot90):
            return x
        b, c, h, w = x.shape
        if h != w:
            raise ValueError(f"rot90/flips need square patches, got {(h, w)}")
        if self.rot90:
            # torch.rot90(x, k, dims=(-2, -1)) in codes: k=0: 0; k=1: transpose + flip H (5);
            # k=2: flip W + flip H (3); k=3: transpose + flip W (6).
            k = (u[:, 0] * 4).long().clamp_(max=3)
            code = self._rotation_codes(x.device)[k]
        else:
            code = torch.zeros(b, dtype=torch.long, device=x.device)
        if self.flips:
            # Flips after the rotation toggle the flip bits of its code (flips commute).
            code = code ^ ((u[:, 1] < 0.5).long() * 2) ^ (u[:, 2] < 0.5).long()
        # One gather with each sample's pixel permutation: one pass, where three selects between
        # flipped and unflipped copies would take three (each costing two reads and a write).
        sources = self._symmetry_sources(h, x.device)[code]  # (B, S*S)
        return x.reshape(b, c, h * w).gather(2, sources[:, None, :].expand(b, c, h * w)).reshape(b, c, h, w)

    def _hed_jitter(self, x: Tensor, u_scale: Tensor, u_shift: Tensor, scale: float = 1.0) -> Tensor:
        """RGB ``x * scale`` (B, 3, H, W) in [0, 1] -> HED-jittered RGB in [0, 1] (B, 3, H, W);
        u_scale, u_shift (B, 3) uniforms. Overwrites ``x``.

        In optical density (row vectors per pixel) od = hed @ R, with R the stain matrix, so the
        jittered od' = (od @ R^-1 * alpha + beta) @ R = od @ A + c with A = R^-1 diag(alpha) R and
        c = beta @ R: one (3 x 3) matrix and offset per sample, applied as one batched matmul.
        """
        b, _, h, w = x.shape
        alpha = 1.0 + self.hed_sigma * (2.0 * u_scale - 1.0)  # (B, 3)
        beta = self.hed_shift * (2.0 * u_shift - 1.0)  # (B, 3), log10 OD
        rgb_from_hed = self._const("rgb_from_hed", x)
        mix = self._const("hed_from_rgb", x) @ (alpha[:, :, None] * rgb_from_hed)  # (B, 3, 3)
        # Natural-log OD (exp is several times faster than pow(10, .) on CPUs; the map is linear, so
        # only the log10-unit shift is rescaled), and od = -ln(x) - ln(scale): that constant goes
        # into the offset through the mixing.
        offset = math.log(10.0) * (beta @ rgb_from_hed) - math.log(scale) * mix.sum(dim=1)  # (B, 3)
        # (B, 3, HW) channel-major: a 3 x 3 by 3 x HW product per sample is a fast bmm, whereas
        # HW x 3 by 3 x 3 (channels-last) is not.
        od = x.clamp_(min=_MIN_INTENSITY / scale).log_().neg_().reshape(b, 3, h * w)
        od = torch.baddbmm(offset[:, :, None], mix.transpose(1, 2), od)  # od' = A^T od + c
        return od.neg_().exp_().clamp_(max=1.0).reshape(b, 3, h, w)

    def _colour_jitter(self, x: Tensor, u: Tensor, scale: float = 1.0) -> Tensor:
        """Brightness, contrast, saturation on RGB ``x * scale`` (B, 3, H, W) in [0, 1]; u (B, 3)
        uniforms. Returns (B, 3, H, W) in [0, 1], in place of ``x``.
        """
        b, _, h, w = x.shape

        def factor(strength: float, col: Tensor) -> Tensor:  # (B,) -> (B, 1, 1, 1)
            low = max(0.0, 1.0 - strength)
            return (low + (1.0 + strength - low) * col).reshape(-1, 1, 1, 1)

        def blend(x: Tensor, grey: Tensor, f: Tensor) -> Tensor:  # f * x + (1 - f) * grey
            return x.mul_(f).add_(grey * (1.0 - f)).clamp_(0.0, 1.0)

        # brightness multiplies, so the uint8 scale folds into it; the others need [0, 1] values
        if self.brightness > 0:
            x = x.mul_(factor(self.brightness, u[:, 0]) * scale).clamp_(0.0, 1.0)
        elif scale != 1.0:
            x = x.mul_(scale)
        luma = self._const("luma", x)  # (1, 1, 3)
        if self.contrast > 0:
            grey_mean = (luma @ x.mean(dim=(2, 3))[:, :, None]).reshape(b, 1, 1, 1)  # mean grey level
            x = blend(x, grey_mean, factor(self.contrast, u[:, 1]))
        if self.saturation > 0:
            grey = (luma @ x.reshape(b, 3, h * w)).reshape(b, 1, h, w)  # (B, 1, H, W)
            x = blend(x, grey, factor(self.saturation, u[:, 2]))
        return x
