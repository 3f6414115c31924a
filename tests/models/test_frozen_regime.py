"""The frozen-backbone and partial regimes, the feature-view cache, the code in the run key, and the
per-run step / plateau summary.

A tiny random-init ResNet-18 and a 60-patch random store: wiring and bookkeeping, not learning.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil

import lightning as L
import numpy as np
import pytest
import torch

from tpir_kedro.models import code_digest as code_digest_mod
from tpir_kedro.models import feature_views as views_mod
from tpir_kedro.models import training as training_mod
from tpir_kedro.models.code_digest import MODELS_PACKAGE, source_digest
from tpir_kedro.models.feature_views import ViewSampler, cached_feature_views, compute_feature_views
from tpir_kedro.models.image_encoders import backbone_blocks, build_image_encoder, encoder_state_dict
from tpir_kedro.models.inference import embed_patches
from tpir_kedro.models.patch_data import SpotPairs
from tpir_kedro.models.training import FINAL_WEIGHTS, TrainingData, train_image_model, training_fingerprint
from tpir_kedro.models.training_config import TrainingConfig
from tpir_kedro.models.variants import parse_variant

N_SPOTS, N_STORE, N_CLASSES, SIZE, VIEWS, BATCH, STEPS = 48, 60, 3, 32, 4, 8, 12
AUGMENT = {"flips": True, "rot90": True, "hed_sigma": 0.05, "hed_shift": 0.02, "brightness": 0.1}
FROZEN = TrainingConfig(
    regime="frozen",
    backbone="resnet18",
    init="random",
    feature_views=VIEWS,
    max_steps=STEPS,
    batch_size=BATCH,
    adapter_hidden=32,
    adapter_dim=16,
    embed_dim=16,
    gene_hidden=32,
    accelerator="cpu",
    precision="32-true",
    progress_bar=False,
    log_every_n_steps=1,
    augment=AUGMENT,
)
VARIANTS = {
    "clip": {"gene_input": "log_hvg", "loss": "infonce"},
    "scanvi_similarity": {"gene_input": "scanvi", "loss": "similarity"},
    "class_guided": {"gene_input": "scanvi", "loss": "class_guided", "use_class_probs": True},
    "supervised": {"objective": "supervised"},
    "clip_patient_adversary": {"gene_input": "log_hvg", "loss": "infonce", "patient_adversary": 1.0},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/models/conftest.py


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return build_image_encoder("resnet18", "random").eval()


@pytest.fixture(scope="module")
def patches():
    return np.random.default_rng(0).integers(0, 256, (N_STORE, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def views(encoder, patches):
    return compute_feature_views(encoder, patches, VIEWS, AUGMENT, seed=0, batch_size=16)


def make_data(source: np.ndarray, variant_name: str) -> TrainingData:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, N_CLASSES, N_SPOTS).astype(np.int64)
    labels[:6] = -1
    z = rng.normal(size=(N_SPOTS, 4)).astype(np.float32)
    variant = parse_variant(variant_name, VARIANTS[variant_name])
    genes = rng.normal(size=(N_SPOTS, 10)).astype(np.float32) if variant.gene_input == "log_hvg" else z
    probs = rng.dirichlet(np.ones(N_CLASSES), N_SPOTS).astype(np.float32) if variant.use_class_probs else None
    return TrainingData(
        source,
        rng.permutation(N_STORE)[:N_SPOTS].astype(np.int64),
        genes,
        z,
        labels,
        probs,
        np.repeat(np.arange(3), 16).astype(np.int64),
        N_CLASSES,
    )


# --- feature views ----------------------------------------------------------------------------


def test_view_zero_is_the_plain_backbone_pass_and_the_others_are_augmented(encoder, patches, views):
    assert views.shape == (N_STORE, VIEWS, encoder.feature_dim) and views.dtype == np.float32
    plain, _ = embed_patches(encoder, patches, np.arange(N_STORE), batch_size=16)
    np.testing.assert_allclose(views[:, 0], plain, rtol=1e-4, atol=1e-5)  # what evaluation and predict read
    for v in range(1, VIEWS):
        assert not np.allclose(views[:, v], views[:, 0], atol=1e-4)
    again = compute_feature_views(encoder, patches, VIEWS, AUGMENT, seed=0, batch_size=7)
    np.testing.assert_allclose(again, views, rtol=1e-4, atol=1e-5)  # seeded, whatever the batching


def test_the_view_sampler_reads_view_zero_in_eval_and_random_views_in_training():
    x = torch.arange(5 * 4 * 3, dtype=torch.float32).reshape(5, 4, 3)
    sampler = ViewSampler().eval()
    assert torch.equal(sampler(x), x[:, 0])
    sampler.train()
    picked = torch.stack(
        [sampler(x, generator=torch.Generator().manual_seed(s)) for s in range(20)]
    )  # (20, 5, 3)
    view_of = (picked[..., 0] - x[None, :, 0, 0]) / 3  # which view each sample got
    assert set(view_of.unique().long().tolist()) == {0, 1, 2, 3}


def test_training_batches_read_one_random_view_of_each_spot_and_the_sampler_passes_it_through(views):
    data = make_data(views, "clip")
    pairs = SpotPairs(
        views, data.rows, data.genes, labels=data.labels, patients=data.patients, random_view=True
    )
    idx = list(range(0, N_SPOTS, 3))
    torch.manual_seed(0)
    batch = pairs.__getitems__(idx)["image"]
    assert batch.shape == (len(idx), views.shape[2])
    # every row is one of its own spot's views (the store order of the read does not mix spots up)
    got = [
        int(np.flatnonzero((views[data.rows[i]] == batch[j].numpy()).all(axis=1))[0])
        for j, i in enumerate(idx)
    ]
    assert len(set(got)) > 1
    torch.manual_seed(0)
    assert torch.equal(pairs.__getitems__(idx)["image"], batch)  # seeded by torch's generator
    assert torch.equal(ViewSampler().train()(batch), batch)
    with pytest.raises(ValueError, match="cached features"):
        SpotPairs(np.zeros((4, 8, 8, 3), np.uint8), [0, 1], labels=[0, 1], patients=[0, 0], random_view=True)


def test_the_cache_is_reused_when_nothing_changed_and_rebuilt_for_new_pixels_or_backbone(
    tmp_path, encoder, patches, monkeypatch
):
    computed = []
    real = views_mod.compute_feature_views

    def counting(enc, p, *args, **kwargs):
        computed.append(enc.backbone)
        return real(enc, p, *args, **kwargs)

    monkeypatch.setattr(views_mod, "compute_feature_views", counting)
    first = cached_feature_views(tmp_path, encoder, patches, VIEWS, AUGMENT, seed=0, batch_size=32)
    again = cached_feature_views(tmp_path, encoder, patches, VIEWS, AUGMENT, seed=0, batch_size=32)
    assert len(computed) == 1 and isinstance(again, np.memmap)
    np.testing.assert_array_equal(first, again)
    assert len(list(tmp_path.iterdir())) == 1

    repainted = patches.copy()
    repainted[17, 5, 5] = 255 - repainted[17, 5, 5]  # one pixel of one patch
    cached_feature_views(tmp_path, encoder, repainted, VIEWS, AUGMENT, seed=0, batch_size=32)
    other_weights = build_image_encoder("resnet18", "random").eval()  # same architecture, new weights
    cached_feature_views(tmp_path, other_weights, patches, VIEWS, AUGMENT, seed=0, batch_size=32)
    cached_feature_views(
        tmp_path, encoder, patches, VIEWS, {**AUGMENT, "hed_sigma": 0.1}, seed=0, batch_size=32
    )
    cached_feature_views(tmp_path, encoder, patches, VIEWS, AUGMENT, seed=1, batch_size=32)
    assert len(computed) == 5 and len(list(tmp_path.iterdir())) == 5
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging folder left behind


# --- training in the frozen and partial regimes ---------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_objective_trains_its_adapter_on_cached_features_for_max_steps(name, views, tmp_path):
    variant = parse_variant(name, VARIANTS[name])
    data = make_data(views, name)
    trained = train_image_model(variant, FROZEN, data, seed=0, run_root=tmp_path)
    assert trained.steps == STEPS  # the step budget, not the epochs, decides (48 spots -> 6 per epoch)
    assert trained.history["epoch"].max() >= 1
    assert trained.module.encoder is None  # the backbone is not in the trained module
    assert trained.adapter is not None and trained.adapter.out_dim == FROZEN.adapter_dim
    assert np.isfinite(trained.history["train_loss_step"].dropna()).all()
    again = train_image_model(variant, FROZEN, data, seed=0, run_root=tmp_path)
    assert again.reused
    for key, value in trained.module.state_dict().items():
        assert torch.equal(value, again.module.state_dict()[key])


def test_the_patient_adversary_trains_with_the_adapter_and_only_where_asked(views):
    trained = {
        name: train_image_model(
            parse_variant(name, VARIANTS[name]), FROZEN, make_data(views, name), seed=0, run_root=None
        )
        for name in ("clip", "clip_patient_adversary")
    }
    assert trained["clip"].module.adversary is None
    adversary = trained["clip_patient_adversary"].module.adversary
    assert adversary.n_patients == 3 and adversary.weight == 1.0
    # Its classifier is part of the module's state, so a finished run reloads it.
    assert any(k.startswith("adversary.") for k in trained["clip_patient_adversary"].module.state_dict())


def test_a_run_stops_once_its_loss_has_levelled_off_and_is_reported_plateaued(views, tmp_path):
    from tpir_kedro.models.training_runs import summarise_training_runs

    config = dataclasses.replace(
        FROZEN, max_steps=1500, stop_at_plateau=True, plateau_min_steps=40, plateau_check_every=10
    )
    data = make_data(views, "supervised")
    trained = train_image_model(
        parse_variant("supervised", VARIANTS["supervised"]), config, data, seed=0, run_root=tmp_path
    )
    assert 40 <= trained.steps < 1500 and (trained.steps - 40) % 10 == 0
    line = summarise_training_runs(trained.history.assign(variant="supervised", fold="f", seed=0)).iloc[0]
    assert line["state"] == "plateaued"
    # The stopping settings are part of the run key; without stopping they are not (old runs keep theirs).
    assert training_fingerprint(trained.variant, config, data, 0) != training_fingerprint(
        trained.variant, dataclasses.replace(config, plateau_min_steps=60), data, 0
    )
    assert "plateau_min_steps" not in dataclasses.replace(FROZEN, stop_at_plateau=False).fingerprint_dict()


def test_the_plateau_rule_does_not_stop_a_loss_that_is_still_falling():
    from types import SimpleNamespace

    from tpir_kedro.models.plateau_stopping import PlateauStopping

    def run(losses):
        callback = PlateauStopping(min_steps=40, check_every=10)
        trainer = SimpleNamespace(should_stop=False, callback_metrics={})
        for step, loss in enumerate(losses):
            trainer.callback_metrics["train_loss_step"] = torch.tensor(loss)
            callback.on_train_batch_end(trainer, None, None, None, step)
            if trainer.should_stop:
                return callback.stopped_at
        return None

    noise = np.random.default_rng(0).normal(0, 0.01, 400)
    assert run(list(3.0 - 0.005 * np.arange(400) + noise)) is None  # a straight fall never levels off
    stopped = run(list(1.0 + 2.0 * np.exp(-np.arange(400) / 20) + noise))  # falls, then flat
    assert stopped is not None and 40 <= stopped <= 200
    # Its state travels with the checkpoint.
    callback = PlateauStopping()
    callback.load_state_dict({"losses": [1.0, 2.0], "stopped_at": None})
    assert callback.state_dict()["losses"] == [1.0, 2.0]


def test_the_frozen_regime_refuses_a_patch_store(patches):
    data = make_data(patches, "clip")
    with pytest.raises(ValueError, match="cached backbone features"):
        train_image_model(parse_variant("clip", VARIANTS["clip"]), FROZEN, data, seed=0, run_root=None)


def test_partial_fine_tuning_trains_only_the_last_blocks(patches):
    config = dataclasses.replace(
        FROZEN, regime="partial", trainable_blocks=1, max_steps=3, batch_norm="train"
    )
    variant = parse_variant("supervised", VARIANTS["supervised"])
    L.seed_everything(0, verbose=False)
    before = encoder_state_dict(build_image_encoder("resnet18", "random"))
    trained = train_image_model(variant, config, make_data(patches, "supervised"), seed=0, run_root=None)
    after = encoder_state_dict(trained.encoder)
    last = {f"layer4.{k}" for k in backbone_blocks(trained.encoder)[-1].state_dict()}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= last  # the stem, layer1..3 and their batch-norm statistics stay put
    assert any(k.endswith("running_mean") for k in changed)  # the trained block's own BN does learn


@pytest.mark.parametrize("batch_norm", ["frozen", "train"])
def test_full_fine_tuning_keeps_the_batch_norm_statistics_unless_told_to_re_estimate_them(
    patches, batch_norm, caplog
):
    config = dataclasses.replace(FROZEN, regime="full", max_steps=3, batch_norm=batch_norm)
    variant = parse_variant("supervised", VARIANTS["supervised"])
    L.seed_everything(0, verbose=False)
    before = encoder_state_dict(build_image_encoder("resnet18", "random"))
    with caplog.at_level(logging.WARNING, logger="tpir_kedro.models.training"):
        trained = train_image_model(variant, config, make_data(patches, "supervised"), seed=0, run_root=None)
    # A random init has no statistics worth keeping: frozen says so (this test's encoder is random).
    assert ("set contrastive.batch_norm: train" in caplog.text) == (batch_norm == "frozen")
    after = encoder_state_dict(trained.encoder)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    statistics = {k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert changed - statistics  # the weights train either way (batch-norm affine weights included)
    assert any(k.endswith("bn1.weight") for k in changed)
    if batch_norm == "frozen":
        assert not changed & statistics
    else:
        assert statistics <= changed


def test_an_unknown_batch_norm_mode_is_refused():
    with pytest.raises(ValueError, match="batch_norm"):
        TrainingConfig.from_dict({"batch_norm": "adaptive"})


# --- the code is part of the run key ------------------------------------------------------------


def test_the_source_digest_follows_the_code(tmp_path):
    copy = tmp_path / "models"
    shutil.copytree(MODELS_PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert source_digest(copy) == source_digest(MODELS_PACKAGE)
    losses = copy / "losses.py"
    losses.write_text(
        losses.read_text().replace(
            "return 0.5 * (F.cross_entropy(logits, match)", "return 0.6 * (F.cross_entropy(logits, match)"
        )
    )
    assert source_digest(copy) != source_digest(MODELS_PACKAGE)


def test_a_changed_loss_retrains_instead_of_reusing_the_old_run(views, tmp_path, monkeypatch):
    variant = parse_variant("clip", VARIANTS["clip"])
    data = make_data(views, "clip")
    first = train_image_model(variant, FROZEN, data, seed=0, run_root=tmp_path)
    assert train_image_model(variant, FROZEN, data, seed=0, run_root=tmp_path).reused
    # The code as it would be after an edit of losses.py (the digest is that of the package source).
    copy = tmp_path / "edited_models"
    shutil.copytree(MODELS_PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "losses.py").write_text((copy / "losses.py").read_text() + "\n# an edit\n")
    monkeypatch.setattr(training_mod, "models_code_digest", lambda: source_digest(copy))
    assert training_fingerprint(variant, FROZEN, data, 0) != first.fingerprint
    after_edit = train_image_model(variant, FROZEN, data, seed=0, run_root=tmp_path)
    assert not after_edit.reused and after_edit.steps == STEPS
    assert sorted(p.name for p in tmp_path.glob("seed0-*")) == sorted(
        [f"seed0-{first.fingerprint}", f"seed0-{after_edit.fingerprint}"]
    )
    assert (tmp_path / f"seed0-{after_edit.fingerprint}" / FINAL_WEIGHTS).is_file()
    assert code_digest_mod.models_code_digest() == source_digest(MODELS_PACKAGE)
