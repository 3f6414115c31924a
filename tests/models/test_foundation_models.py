"""Pathology foundation-model backbones: each architecture as its model card gives it, built by the
pinned timm, loaded from a local checkpoint in the published key layout through the project's loader.

Tests build two transformer blocks (the published models have 24 to 40 and up to 1.1 B parameters);
every other argument is the published one, and the full models are built on the meta device (no
memory) to check their size against the published one.
"""

from __future__ import annotations

import pytest
import torch

from tpir_kedro.models.foundation_models import FOUNDATION_MODELS, build_foundation_net
from tpir_kedro.models.image_encoders import (
    backbone_blocks,
    build_image_encoder,
    encoder_state_dict,
    file_sha256,
    freeze_all_but_last_blocks,
)

NAMES = list(FOUNDATION_MODELS)
DEPTH = 2
# Parameters of the published models (model cards / papers), in millions.
PUBLISHED_M = {
    "uni": 303,
    "uni2_h": 681,
    "virchow2": 632,
    "h_optimus_0": 1134,
    "h_optimus_1": 1134,
    "gigapath": 1134,
}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", NAMES)
def test_the_full_architecture_has_the_published_size(name):
    with torch.device("meta"):
        net = build_foundation_net(name)
    n = sum(p.numel() for p in net.parameters()) / 1e6
    assert abs(n - PUBLISHED_M[name]) / PUBLISHED_M[name] < 0.01, f"{name}: {n:.1f} M parameters"
    assert len(net.blocks) == FOUNDATION_MODELS[name].depth


@pytest.mark.parametrize("name", NAMES)
def test_a_checkpoint_in_the_published_layout_loads_and_gives_the_card_s_features(name, tmp_path):
    torch.manual_seed(0)
    source = build_image_encoder(name, "random", depth=DEPTH).eval()
    suffix = ".safetensors" if name in ("uni2_h", "virchow2") else ".bin"
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in encoder_state_dict(source).items()}, str(path))
    else:
        torch.save(encoder_state_dict(source), path)

    loaded = build_image_encoder(name, "file", path, depth=DEPTH).eval()
    spec = FOUNDATION_MODELS[name]
    assert loaded.feature_dim == spec.feature_dim
    assert (loaded.mean, loaded.std) == (spec.mean, spec.std)
    assert loaded.weights_sha256 == file_sha256(path)
    x = torch.rand(2, 3, 48, 48)  # a demo-sized patch: resized to the native 224 px inside
    with torch.no_grad():
        features = loaded(x)
        assert features.shape == (2, spec.feature_dim)
        torch.testing.assert_close(features, source(x))
        native = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
        torch.testing.assert_close(features, loaded(native))


def test_virchow2_reads_its_class_token_with_the_mean_of_its_patch_tokens():
    encoder = build_image_encoder("virchow2", "random", depth=1).eval()
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        tokens = encoder.net(x)  # (1, 1 + 4 registers + 256 patches, 1280)
        features = encoder(x)
    assert tokens.shape == (1, 1 + 4 + 16 * 16, 1280)
    torch.testing.assert_close(features[:, :1280], tokens[:, 0])
    torch.testing.assert_close(features[:, 1280:], tokens[:, 5:].mean(dim=1))


def test_a_partial_or_foreign_checkpoint_fails_naming_the_keys(tmp_path):
    state = encoder_state_dict(build_image_encoder("uni", "random", depth=DEPTH))
    partial = {k: v for k, v in state.items() if not k.startswith("blocks.1.")}
    torch.save(partial, tmp_path / "partial.bin")
    with pytest.raises(ValueError, match=r"missing keys \(\d+\): blocks\.1\."):
        build_image_encoder("uni", "file", tmp_path / "partial.bin", depth=DEPTH)
    # UNI's ViT-L weights are not H-optimus' ViT-g: named shapes and keys, never a half-loaded model
    torch.save(state, tmp_path / "uni.bin")
    with pytest.raises(
        ValueError, match=r"does not fit backbone 'h_optimus_0'.*(missing keys|shape mismatches)"
    ):
        build_image_encoder("h_optimus_0", "file", tmp_path / "uni.bin", depth=DEPTH)


def test_a_foundation_model_has_no_imagenet_weights_and_nothing_is_downloaded():
    with pytest.raises(ValueError, match=r"set init: file and weights_path .*MahmoodLab/UNI"):
        build_image_encoder("uni", "imagenet")
    with pytest.raises(ValueError, match="depth applies to foundation-model backbones only"):
        build_image_encoder("resnet18", "random", depth=2)


def test_partial_fine_tuning_trains_the_last_blocks_and_the_final_norm():
    encoder = build_image_encoder("gigapath", "random", depth=3)
    assert len(backbone_blocks(encoder)) == 3
    freeze_all_but_last_blocks(encoder, 1)
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("net.blocks.2.", "net.norm.")) for n in trainable)
    assert "net.norm.weight" in trainable


def test_the_run_manifest_and_the_model_card_record_the_checkpoint_digest(tmp_path):
    from tpir_kedro.hooks import image_backbone_record
    from tpir_kedro.pipelines.evaluation.nodes import _initial_weights_sha256

    path = tmp_path / "uni.bin"
    torch.save(encoder_state_dict(build_image_encoder("uni", "random", depth=1)), path)
    record = image_backbone_record({"backbone": "uni", "init": "file", "weights_path": str(path)})
    assert record == {
        "backbone": "uni",
        "init": "file",
        "weights_path": str(path),
        "weights_sha256": file_sha256(path),
    }
    assert _initial_weights_sha256("file", str(path)) == file_sha256(path)
    assert _initial_weights_sha256("random", str(path)) is None  # the random baseline reads no file
    assert (
        image_backbone_record({"backbone": "efficientnet_lite0", "init": "imagenet"})["weights_sha256"]
        is None
    )
