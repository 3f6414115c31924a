"""What users keep: the linear probe as plain numbers, and the packaged model folder round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tpir_kedro.evaluation.probes import fit_logistic_probe
from tpir_kedro.models.image_encoders import build_image_encoder, encoder_state_dict
from tpir_kedro.models.inference import embed_patches
from tpir_kedro.models.packaged_model import (
    CARD_FILE,
    CARD_MD,
    ENCODER_FILE,
    PROBE_FILE,
    LinearProbe,
    PackagedImageModel,
)

CLASSES3 = np.array(["adipose tissue", "connective tissue", "invasive cancer"])


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/models/conftest.py


def _features(n_classes: int, seed: int = 0, n: int = 90, d: int = 6):
    """(n, d) features with class-dependent means on a non-unit scale, one constant column,
    their labels and 3 patients."""
    rng = np.random.default_rng(seed)
    y = CLASSES3[:n_classes][rng.integers(0, n_classes, n)]
    codes = np.searchsorted(CLASSES3, y)
    x = rng.normal(size=(n, d)) * 3.0 + 10.0
    x[:, 0] += 2.0 * codes
    x[:, 1] -= 1.5 * codes
    x[:, 2] = 4.2  # constant: the standardiser centres it but does not scale it
    groups = np.array(["A", "B", "C"])[np.arange(n) % 3]
    return x, y, groups


def _probe_from(fitted) -> LinearProbe:
    scaler, logistic = fitted.pipeline[0], fitted.pipeline[-1]
    return LinearProbe.from_sklearn(scaler, logistic, fitted.chosen_C)


@pytest.mark.parametrize("n_classes", [3, 2])
def test_linear_probe_reproduces_the_fitted_pipeline(n_classes):
    x, y, groups = _features(n_classes)
    fitted = fit_logistic_probe(x, y, groups, Cs=(0.1, 1.0))
    probe = _probe_from(fitted)

    x_new, _, _ = _features(n_classes, seed=1, n=40)
    expected = fitted.predict_proba(x_new)
    assert expected.shape == (40, n_classes)
    assert probe.classes == [str(c) for c in fitted.classes_]
    assert probe.C == fitted.chosen_C
    np.testing.assert_allclose(probe.predict_proba(x_new), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(probe.predict_proba(x_new).sum(axis=1), 1.0)
    assert (np.asarray(probe.classes)[probe.predict_proba(x_new).argmax(1)] == fitted.predict(x_new)).all()

    # ... and so does its plain-JSON form.
    again = LinearProbe.from_dict(json.loads(json.dumps(probe.to_dict())))
    np.testing.assert_allclose(again.predict_proba(x_new), expected, rtol=1e-9, atol=1e-12)


def test_a_binary_probe_keeps_scikit_learns_one_row_form():
    x, y, groups = _features(2)
    probe = _probe_from(fit_logistic_probe(x, y, groups, Cs=(1.0,)))
    assert probe.coef.shape == (1, x.shape[1]) and probe.intercept.shape == (1,)
    assert probe.predict_proba(x).shape == (len(x), 2)


def _patches(n: int = 10, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _trained_like(encoder):
    """Move BatchNorm running statistics off their defaults, so a lost buffer would show."""
    encoder.train()
    with torch.no_grad():
        encoder(torch.randn(4, 3, 32, 32) * 2 + 0.5)
    return encoder.eval()


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    torch.manual_seed(0)
    encoder = _trained_like(build_image_encoder("resnet18", "random"))
    patches = _patches()
    features, _ = embed_patches(encoder, patches, np.arange(len(patches)), batch_size=4, device="cpu")
    labels = CLASSES3[np.arange(len(patches)) % 3]
    groups = np.array(["A", "B"])[np.arange(len(patches)) % 2]
    probe = _probe_from(fit_logistic_probe(features, labels, groups, Cs=(1.0,)))
    card = {
        "variant": "clip",
        "backbone": "resnet18",
        "init": "random",
        "classes": list(probe.classes),
        "patch_size_px": 32,
        "patch_size_um": 100.0,
    }
    model = PackagedImageModel(encoder, probe, card)
    path = model.save(tmp_path_factory.mktemp("packaged") / "clip")
    return model, path, patches


def test_a_saved_model_loads_with_identical_features_and_probabilities(packaged):
    model, path, patches = packaged
    assert {p.name for p in path.iterdir()} == {ENCODER_FILE, PROBE_FILE, CARD_FILE, CARD_MD}
    loaded = PackagedImageModel.load(path)

    assert loaded.card == model.card
    assert not loaded.encoder.training
    state, loaded_state = encoder_state_dict(model.encoder), encoder_state_dict(loaded.encoder)
    assert state.keys() == loaded_state.keys() and all(torch.equal(state[k], loaded_state[k]) for k in state)
    rows = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    features, _ = embed_patches(model.encoder, patches, rows, batch_size=4, device="cpu")
    loaded_features, _ = embed_patches(loaded.encoder, patches, rows, batch_size=4, device="cpu")
    np.testing.assert_array_equal(loaded_features, features)
    assert loaded.probe.classes == model.probe.classes
    np.testing.assert_array_equal(
        loaded.probe.predict_proba(loaded_features), model.probe.predict_proba(features)
    )
    assert "resnet18" in (path / CARD_MD).read_text()


def test_the_encoder_file_is_a_plain_state_dict(packaged):
    _, path, _ = packaged
    state = torch.load(path / ENCODER_FILE, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert json.loads((path / PROBE_FILE).read_text())["classes"] == list(CLASSES3)


def test_saving_over_an_existing_folder_raises_and_leaves_it_alone(packaged, tmp_path):
    model, path, _ = packaged
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with pytest.raises(FileExistsError, match="never overwritten"):
        model.save(path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    with pytest.raises(FileExistsError, match=str(occupied)):
        model.save(occupied)
    assert list(occupied.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["occupied"]  # no staging folder left behind


def test_a_model_without_a_probe_round_trips(packaged, tmp_path):
    model, _, _ = packaged
    path = PackagedImageModel(model.encoder, None, model.card).save(tmp_path / "no_probe")
    assert not (path / PROBE_FILE).exists()
    assert PackagedImageModel.load(path).probe is None


def test_loading_a_folder_without_a_model_card_names_it(packaged, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}.*{CARD_FILE}"):
        PackagedImageModel.load(tmp_path)
    _, path, _ = packaged
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / ENCODER_FILE).write_bytes((path / ENCODER_FILE).read_bytes())
    with pytest.raises(FileNotFoundError, match=CARD_FILE):
        PackagedImageModel.load(incomplete)


def test_a_model_with_an_adapter_embeds_through_it_before_and_after_a_round_trip(packaged, tmp_path):
    from tpir_kedro.models.adapter import ImageAdapter
    from tpir_kedro.models.packaged_model import ADAPTER_FILE

    model, _, patches = packaged
    torch.manual_seed(1)
    adapter = ImageAdapter(model.encoder.feature_dim, hidden=16, out_dim=8, dropout=0.1).eval()
    card = {**model.card, "representation": "adapter", "adapter": adapter.spec()}
    with_adapter = PackagedImageModel(model.encoder, None, card, adapter)
    rows = np.array([0, 2, 4, 6])
    features, _ = embed_patches(model.encoder, patches, rows, batch_size=4, device="cpu")
    expected = adapter(torch.from_numpy(features)).detach().numpy()
    np.testing.assert_allclose(
        with_adapter.embed(patches, rows, device="cpu"), expected, rtol=1e-5, atol=1e-6
    )

    path = with_adapter.save(tmp_path / "with_adapter")
    assert (path / ADAPTER_FILE).is_file()
    loaded = PackagedImageModel.load(path)
    assert loaded.adapter is not None and not loaded.adapter.training
    np.testing.assert_allclose(loaded.embed(patches, rows, device="cpu"), expected, rtol=1e-5, atol=1e-6)
    (path / ADAPTER_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=ADAPTER_FILE):
        PackagedImageModel.load(path)
    assert (
        PackagedImageModel.load(model.save(tmp_path / "plain")).embed(patches, rows, device="cpu").shape
        == features.shape
    )  # no adapter: the features
