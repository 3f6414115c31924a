"""PatchAugment: eval is exactly the normalisation, geometry is a symmetry of the square, the HED
round trip is lossless, seeding reproduces, dtypes and autocast behave."""

from __future__ import annotations

import pytest
import torch

from tpir_kedro.models.augment import IMAGENET_MEAN, IMAGENET_STD, RUIFROK_JOHNSTON_STAINS, PatchAugment

NO_JITTER = dict(hed_sigma=0.0, hed_shift=0.0, brightness=0.0, contrast=0.0, saturation=0.0)
ALL_JITTER = dict(hed_sigma=0.1, hed_shift=0.05, brightness=0.2, contrast=0.2, saturation=0.2)
IDENTITY = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def images(b=32, size=12, seed=0):
    return torch.randint(
        0, 256, (b, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def symmetries(x):
    """The 8 symmetries of the square of one (3, S, S) image."""
    return [torch.rot90(t, k, dims=(-2, -1)) for t in (x, x.flip(-1)) for k in range(4)]


def which_symmetry(out, x):
    matches = [i for i, s in enumerate(symmetries(x)) if torch.equal(out, s)]
    assert matches, "output is not a symmetry of its input"
    return matches[0]


def test_eval_is_exactly_the_normalisation_and_deterministic():
    aug = PatchAugment(IMAGENET_MEAN, IMAGENET_STD, **ALL_JITTER).eval()
    x = images()
    expected = (x.float() / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD
    ).view(1, 3, 1, 1)
    out = aug(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert torch.equal(aug(x), out)


@pytest.mark.parametrize(
    ("flips", "rot90", "allowed"),
    [
        (True, True, set(range(8))),
        (True, False, {0, 2, 4, 6}),
        (False, True, {0, 1, 2, 3}),
        (False, False, {0}),
    ],
)
def test_geometry_alone_is_a_symmetry_of_each_patch(flips, rot90, allowed):
    aug = PatchAugment(**IDENTITY, flips=flips, rot90=rot90, **NO_JITTER).train()
    x = images(b=96)
    out = aug(x, generator=torch.Generator().manual_seed(3))
    back = (out * 255).round().to(torch.uint8)  # mean 0, std 1: out is x / 255 up to rounding
    found = {which_symmetry(o, xi) for o, xi in zip(back, x)}
    assert found == allowed  # 96 draws reach every allowed symmetry and no other


def test_geometry_works_on_channels_last_views():
    x = images(b=16)
    view = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # what SpotPairs batches look like
    aug = PatchAugment(**IDENTITY, **NO_JITTER).train()
    a = aug(view, generator=torch.Generator().manual_seed(1))
    b = aug(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hed_round_trip_without_jitter_is_lossless(dtype):
    aug = PatchAugment(**IDENTITY, **NO_JITTER)
    x = images(b=8).to(dtype) / 255
    x[0, :, :2, :2] = 0.0  # black and white pixels at the ends of the range
    x[1, :, :2, :2] = 1.0
    u = torch.rand(8, 3, dtype=dtype)
    # hed_sigma = hed_shift = 0: scale 1 and shift 0 whatever u is (_hed_jitter overwrites its input)
    out = aug._hed_jitter(x.clone(), u, u)
    assert out.dtype == dtype
    assert (out - x).abs().max() < 1 / 255


def test_stain_matrix_is_the_published_one_and_invertible():
    stains = torch.tensor(RUIFROK_JOHNSTON_STAINS, dtype=torch.float64)
    torch.testing.assert_close(stains.norm(dim=1), torch.ones(3, dtype=torch.float64), atol=2e-3, rtol=0)
    aug = PatchAugment()
    eye = aug._constants["hed_from_rgb"] @ aug._constants["rgb_from_hed"]
    torch.testing.assert_close(eye, torch.eye(3, dtype=torch.float64))


def test_haematoxylin_scale_keeps_a_haematoxylin_pixel_on_its_stain_line():
    aug = PatchAugment(**IDENTITY, **{**NO_JITTER, "hed_sigma": 0.5})
    h = aug._constants["rgb_from_hed"][0]  # unit OD vector of haematoxylin
    od = 0.6 * h  # a pixel of haematoxylin alone
    x = (10**-od).reshape(1, 3, 1, 1).expand(1, 3, 2, 2).float().contiguous()
    out = aug._hed_jitter(
        x.clone(), torch.tensor([[1.0, 0.5, 0.5]]), torch.full((1, 3), 0.5)
    )  # H scale 1.5, rest 1
    od_out = -torch.log10(out[0, :, 0, 0].double())
    torch.testing.assert_close(od_out, 1.5 * od, atol=1e-5, rtol=1e-5)


def test_same_seed_same_output_and_jitter_changes_colour():
    aug = PatchAugment(**ALL_JITTER).train()
    x = images()
    a = aug(x, generator=torch.Generator().manual_seed(7))
    b = aug(x, generator=torch.Generator().manual_seed(7))
    c = aug(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, aug.eval()(x))
    assert torch.isfinite(aug.train()(x)).all()  # default generator


def test_brightness_scales_each_patch_by_one_factor_within_range():
    aug = PatchAugment(**IDENTITY, flips=False, rot90=False, **{**NO_JITTER, "brightness": 0.3}).train()
    x = torch.full((64, 3, 4, 4), 100, dtype=torch.uint8)
    ratio = aug(x, generator=torch.Generator().manual_seed(0)) / (100 / 255)
    per_patch = ratio.flatten(1)
    assert torch.allclose(per_patch, per_patch[:, :1].expand_as(per_patch))
    assert per_patch.min() >= 0.7 - 1e-6 and per_patch.max() <= 1.3 + 1e-6 and per_patch.std() > 0.05


def test_saturation_and_contrast_leave_a_uniform_grey_patch_alone():
    aug = PatchAugment(**IDENTITY, **{**NO_JITTER, "contrast": 0.5, "saturation": 0.5}).train()
    x = torch.full((8, 3, 4, 4), 128, dtype=torch.uint8)
    torch.testing.assert_close(aug(x), x.float() / 255, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_float_input_keeps_its_dtype_and_matches_uint8(dtype):
    aug = PatchAugment(**ALL_JITTER).train()
    x = images(b=8)
    ref = aug(x, generator=torch.Generator().manual_seed(5))
    out = aug(x.to(dtype) / 255, generator=torch.Generator().manual_seed(5))
    assert out.dtype == dtype
    tol = 0.05 if dtype == torch.bfloat16 else 1e-4
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("train", [True, False])
def test_the_input_is_never_modified(train):
    aug = PatchAugment(**IDENTITY, flips=False, rot90=False, **ALL_JITTER).train(train)  # no copying gather
    x = images(b=4).float() / 255
    before = x.clone()
    aug(x)
    assert torch.equal(x, before)


def test_autocast_does_not_lower_the_precision():
    aug = PatchAugment(**ALL_JITTER).train()
    x = images(b=8)
    ref = aug(x, generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = aug(x, generator=torch.Generator().manual_seed(2))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_runs_on_the_gpu_with_a_cpu_generator():
    aug = PatchAugment(**ALL_JITTER).train().cuda()
    x = images()
    gpu = aug(x.cuda(), generator=torch.Generator().manual_seed(1))
    cpu = aug(x, generator=torch.Generator().manual_seed(1))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


def test_from_params_and_errors():
    aug = PatchAugment.from_params(
        {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "rot90": False, "hed_sigma": 0.05}
    )
    assert (
        aug.mean == (0.5, 0.5, 0.5)
        and aug.std == (0.25, 0.25, 0.25)
        and not aug.rot90
        and aug.hed_sigma == 0.05
    )
    assert aug.flips and aug.brightness == 0.0
    with pytest.raises(ValueError, match="unknown augmentation parameter"):
        PatchAugment.from_params({"hue": 0.1})
    with pytest.raises(ValueError, match="hed_sigma"):
        PatchAugment(hed_sigma=1.0)
    with pytest.raises(ValueError, match="brightness"):
        PatchAugment(brightness=-0.1)
    with pytest.raises(ValueError, match="std must be positive"):
        PatchAugment(std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="3 values"):
        PatchAugment(mean=(0.5, 0.5))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        PatchAugment()(torch.zeros(2, 4, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="square"):
        PatchAugment().train()(torch.zeros(2, 3, 8, 6, dtype=torch.uint8))
