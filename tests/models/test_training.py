"""train_image_model: every objective end to end, the untrained baselines, resumable and reusable
run folders keyed by a fingerprint, weights-only loading, and the input errors.

Everything runs on a tiny synthetic fold: 48 spots of 3 patients, 32 px patches, a randomly
initialised ResNet-18, batches of 8, one or two epochs on the CPU. These tests check wiring and
bookkeeping, not what the encoder learns.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import lightning as L
import numpy as np
import pytest
import torch

from tpir_kedro.models import training as training_mod
from tpir_kedro.models.contrastive_module import ContrastiveModule
from tpir_kedro.models.image_encoders import encoder_state_dict
from tpir_kedro.models.training import (
    FINAL_META,
    FINAL_WEIGHTS,
    LAST_CHECKPOINT,
    TrainingData,
    train_image_model,
    training_fingerprint,
)
from tpir_kedro.models.training_config import TrainingConfig
from tpir_kedro.models.variants import parse_variant

N_SPOTS, N_STORE, N_PATIENTS, N_GENES, N_LATENT, N_CLASSES, SIZE = 48, 60, 3, 20, 4, 3, 32
BATCH = 8
STEPS_PER_EPOCH = N_SPOTS // BATCH

# Full fine-tuning: these tests train through the backbone (the frozen regime: test_frozen_regime.py).
CONFIG = TrainingConfig(
    regime="full",
    max_steps=None,
    adapter_hidden=32,
    adapter_dim=16,
    backbone="resnet18",
    init="random",
    embed_dim=16,
    gene_hidden=32,
    epochs=1,
    batch_size=BATCH,
    accelerator="cpu",
    devices=1,
    precision="32-true",
    progress_bar=False,
    log_every_n_steps=1,
    eval_batch_size=16,
)

VARIANTS = {
    "clip": {"gene_input": "log_hvg", "loss": "infonce", "loss_params": {"temperature": 0.07}},
    "bleep": {
        "gene_input": "log_hvg",
        "loss": "bleep",
        "loss_params": {"temperature": 1.0, "normalize": False},
    },
    "scvi_similarity": {"gene_input": "scvi", "loss": "similarity", "loss_params": {"target_source": "gene"}},
    "class_guided": {"gene_input": "scanvi", "loss": "class_guided", "use_class_probs": True},
    "class_guided_hard": {"gene_input": "scanvi", "loss": "class_guided"},
    "supervised": {"objective": "supervised"},
}
RANDOM = parse_variant("random", {"objective": "none", "init": "random"})
CLIP = parse_variant("clip", VARIANTS["clip"])


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/models/conftest.py


def make_data(seed: int = 0) -> TrainingData:
    """48 training spots (rows a shuffled subset of a 60-row store), 3 patients, a quarter unlabelled."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(N_CLASSES), N_SPOTS).astype(np.float32)
    labels = rng.integers(0, N_CLASSES, N_SPOTS).astype(np.int64)
    labels[rng.permutation(N_SPOTS)[: N_SPOTS // 4]] = -1
    return TrainingData(
        patches=rng.integers(0, 256, (N_STORE, SIZE, SIZE, 3), dtype=np.uint8),
        rows=rng.permutation(N_STORE)[:N_SPOTS].astype(np.int64),
        genes=rng.normal(size=(N_SPOTS, N_GENES)).astype(np.float32),
        z=rng.normal(size=(N_SPOTS, N_LATENT)).astype(np.float32),
        labels=labels,
        probs=probs,
        patients=np.repeat(np.arange(N_PATIENTS), N_SPOTS // N_PATIENTS).astype(np.int64),
        n_classes=N_CLASSES,
    )


def data_for(variant, data: TrainingData) -> TrainingData:
    """What the pipeline feeds each variant: scVI/scANVI variants see the frozen embedding as both
    gene input and similarity target; probabilities only where the variant asks for them."""
    if variant.gene_input in ("scvi", "scanvi"):
        data = dataclasses.replace(data, genes=data.z)
    if not variant.use_class_probs:
        data = dataclasses.replace(data, probs=None)
    return data


def weights(encoder) -> dict[str, torch.Tensor]:
    return encoder_state_dict(encoder)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def no_fit(monkeypatch):
    """Fail any Trainer.fit: the code path under test must not train."""

    def fit(*args, **kwargs):
        raise AssertionError("Trainer.fit was called")

    monkeypatch.setattr(L.Trainer, "fit", fit)


def _checking_loads(monkeypatch) -> list[str]:
    """Make every torch.load fail unless weights_only=True; return the list of files loaded."""
    calls: list[str] = []
    real_load = torch.load

    def checked_load(f, *args, **kwargs):
        assert kwargs.get("weights_only") is True, f"torch.load({f!r}) without weights_only=True: {kwargs}"
        calls.append(
            str(f) if isinstance(f, (str, os.PathLike)) else str(getattr(f, "path", f))
        )  # Lightning: an fsspec file
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", checked_load)
    return calls


# --- every objective trains -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_objective_trains_end_to_end(name, tmp_path):
    variant = parse_variant(name, VARIANTS[name])
    data = data_for(variant, make_data())
    initial = weights(train_image_model(RANDOM, CONFIG, data, seed=0, run_root=None).encoder)

    trained = train_image_model(variant, CONFIG, data, seed=0, run_root=tmp_path)

    after = weights(trained.encoder)
    assert after.keys() == initial.keys()
    # The seeded random init is the same as the baseline's, so any difference is training.
    assert not torch.equal(after["conv1.weight"], initial["conv1.weight"])
    assert not trained.resumed and not trained.reused
    assert trained.module is not None and trained.seconds > 0
    assert {"epoch", "train_loss_step"} <= set(trained.history.columns)
    losses = trained.history["train_loss_step"].dropna()
    n_used = (
        int((data.labels >= 0).sum()) if name == "supervised" else N_SPOTS
    )  # supervised: labelled spots only
    assert len(losses) == n_used // BATCH  # one row per step (log_every_n_steps=1)
    assert np.isfinite(losses).all()
    assert trained.history["train_loss_epoch"].notna().any()
    run_dir = tmp_path / f"seed0-{trained.fingerprint}"
    assert (run_dir / FINAL_WEIGHTS).is_file() and (run_dir / FINAL_META).is_file()
    assert json.loads((run_dir / FINAL_META).read_text())["variant"]["name"] == name


def test_without_a_run_root_nothing_is_written_and_history_is_empty(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Lightning must not drop lightning_logs/ or checkpoints here either
    trained = train_image_model(CLIP, CONFIG, make_data(), seed=0, run_root=None)
    assert trained.history.empty
    assert list(tmp_path.iterdir()) == []


# --- untrained baselines ----------------------------------------------------------------------


def test_untrained_baselines_return_at_once_with_seeded_random_weights(tmp_path, no_fit):
    data = make_data()
    first = train_image_model(RANDOM, CONFIG, data, seed=0, run_root=tmp_path)
    again = train_image_model(RANDOM, CONFIG, data, seed=0, run_root=tmp_path)
    other = train_image_model(RANDOM, CONFIG, data, seed=1, run_root=tmp_path)

    assert first.module is None and first.history.empty and first.seconds == 0.0
    assert first.encoder.init == "random" and first.fingerprint == "untrained"
    assert same_weights(weights(first.encoder), weights(again.encoder))
    assert not same_weights(weights(first.encoder), weights(other.encoder))
    assert list(tmp_path.iterdir()) == []  # nothing to checkpoint


def test_an_untrained_baseline_needs_no_batch_and_no_labels(no_fit):
    data = make_data()
    tiny = data.subset(np.arange(3))
    tiny.labels[:] = -1
    assert train_image_model(RANDOM, CONFIG, tiny, seed=0, run_root=None).module is None


# --- resume, reuse, fingerprint ---------------------------------------------------------------


class Interrupted(RuntimeError):
    pass


def _counting_steps(monkeypatch, fail_in_epoch: int | None) -> list[int]:
    """Wrap ContrastiveModule.training_step: record each step's epoch, raise at the first step of
    ``fail_in_epoch`` (0-based) to simulate a killed run."""
    epochs: list[int] = []
    real_step = ContrastiveModule.training_step

    def step(self, batch, batch_idx):
        if fail_in_epoch is not None and self.current_epoch == fail_in_epoch:
            raise Interrupted(f"simulated interruption in epoch {self.current_epoch}")
        epochs.append(int(self.current_epoch))
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(ContrastiveModule, "training_step", step)
    return epochs


def test_last_ckpt_is_saved_every_epoch_when_epochs_are_long_and_every_few_hundred_steps_when_short():
    assert training_mod.checkpoint_every_n_epochs(5000) == 1  # full fine-tuning on real data
    assert (
        training_mod.checkpoint_every_n_epochs(5) == training_mod.CHECKPOINT_STEPS // 5
    )  # frozen-regime demo fold
    assert training_mod.checkpoint_every_n_epochs(0) == training_mod.CHECKPOINT_STEPS


def test_an_interrupted_run_resumes_and_a_finished_one_is_reused(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(training_mod, "CHECKPOINT_STEPS", 1)  # these epochs are 6 steps: save after each
    config = dataclasses.replace(CONFIG, epochs=2)
    data = make_data()
    fingerprint = training_fingerprint(CLIP, config, data, seed=0)
    run_dir = tmp_path / f"seed0-{fingerprint}"

    # 1. Killed at the start of epoch 2 of 2: epoch 1's last.ckpt exists, final.pt does not.
    with monkeypatch.context() as m:
        steps = _counting_steps(m, fail_in_epoch=1)
        with pytest.raises(Interrupted):
            train_image_model(CLIP, config, data, seed=0, run_root=tmp_path)
    assert steps == [0] * STEPS_PER_EPOCH
    assert (run_dir / LAST_CHECKPOINT).is_file()
    assert not (run_dir / FINAL_WEIGHTS).exists()
    checkpoint = torch.load(run_dir / LAST_CHECKPOINT, map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == STEPS_PER_EPOCH
    after_epoch_1 = {
        k.removeprefix("encoder.net."): v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith("encoder.net.")
    }

    # 2. The same call again resumes (reading last.ckpt weights-only): only epoch 2 is trained.
    with monkeypatch.context() as m:
        steps = _counting_steps(m, fail_in_epoch=None)
        loads = _checking_loads(m)
        with caplog.at_level(logging.INFO, logger=training_mod.__name__):
            resumed = train_image_model(CLIP, config, data, seed=0, run_root=tmp_path)
    assert steps == [1] * STEPS_PER_EPOCH
    assert any(path.endswith(LAST_CHECKPOINT) for path in loads)
    assert resumed.resumed and not resumed.reused
    assert resumed.fingerprint == fingerprint
    assert any(
        "resuming from" in r.getMessage() and LAST_CHECKPOINT in r.getMessage() for r in caplog.records
    )
    assert resumed.module._trainer is None  # the finished module does not keep its Trainer alive
    assert (
        torch.load(run_dir / LAST_CHECKPOINT, map_location="cpu", weights_only=True)["global_step"]
        == 2 * STEPS_PER_EPOCH
    )
    assert (run_dir / FINAL_WEIGHTS).is_file()
    assert [p.name for p in run_dir.glob("*.ckpt")] == [
        LAST_CHECKPOINT
    ]  # overwritten in place, no last-v1.ckpt
    assert torch.load(run_dir / LAST_CHECKPOINT, map_location="cpu", weights_only=True)["epoch"] == 1
    final = torch.load(run_dir / FINAL_WEIGHTS, map_location="cpu", weights_only=True)
    assert same_weights(resumed.module.state_dict(), final)
    resumed_weights = weights(resumed.encoder)
    assert not same_weights(resumed_weights, after_epoch_1)  # epoch 2 moved the weights
    # Both epochs are in the history (the first attempt's log and the resumed one's).
    assert set(resumed.history["epoch"].dropna().astype(int)) == {0, 1}

    # 3. Once more: the finished run is loaded (weights-only), not trained.
    monkeypatch.setattr(L.Trainer, "fit", lambda *a, **k: pytest.fail("a finished run was trained again"))
    loads = _checking_loads(monkeypatch)
    reused = train_image_model(CLIP, config, data, seed=0, run_root=tmp_path)
    assert reused.reused and not reused.resumed
    assert loads == [str(run_dir / FINAL_WEIGHTS)]
    assert same_weights(weights(reused.encoder), resumed_weights)
    assert same_weights(reused.module.state_dict(), resumed.module.state_dict())
    assert reused.seconds == pytest.approx(resumed.seconds)
    assert set(reused.history["epoch"].dropna().astype(int)) == {0, 1}
    assert [p.name for p in tmp_path.iterdir()] == [run_dir.name]


def _changed_inputs(data: TrainingData) -> dict[str, TrainingData]:
    flipped = data.labels.copy()
    flipped[np.flatnonzero(flipped >= 0)[0]] = (flipped[flipped >= 0][0] + 1) % N_CLASSES
    repainted = np.array(data.patches)
    repainted[data.rows[5], 3, 3] = 255 - repainted[data.rows[5], 3, 3]
    genes = data.genes.copy()
    genes[0, 0] += 1.0
    return {
        "labels": dataclasses.replace(data, labels=flipped),
        "one patch's pixels": dataclasses.replace(data, patches=repainted),
        "gene input": dataclasses.replace(data, genes=genes),
        "rows": dataclasses.replace(data, rows=data.rows[::-1].copy()),
        "patients": dataclasses.replace(data, patients=data.patients[::-1].copy()),
    }


def test_the_fingerprint_follows_every_input_and_parameter():
    data = make_data()
    base = training_fingerprint(CLIP, CONFIG, data, seed=0)
    assert training_fingerprint(CLIP, CONFIG, make_data(), seed=0) == base  # deterministic
    # How progress is shown or features batched does not shape the weights.
    assert (
        training_fingerprint(
            CLIP, dataclasses.replace(CONFIG, progress_bar=True, eval_batch_size=7, threads=2), data, 0
        )
        == base
    )
    changed = {
        "lr": training_fingerprint(CLIP, dataclasses.replace(CONFIG, lr=2e-3), data, 0),
        "epochs": training_fingerprint(CLIP, dataclasses.replace(CONFIG, epochs=2), data, 0),
        "seed": training_fingerprint(CLIP, CONFIG, data, 1),
        "loss param": training_fingerprint(
            parse_variant("clip", {**VARIANTS["clip"], "loss_params": {"temperature": 0.1}}), CONFIG, data, 0
        ),
    }
    changed.update(
        {what: training_fingerprint(CLIP, CONFIG, d, 0) for what, d in _changed_inputs(data).items()}
    )
    for what, fingerprint in changed.items():
        assert fingerprint != base, f"changing the {what} kept the fingerprint"
    assert len(set(changed.values())) == len(changed)


def test_a_changed_input_or_parameter_gets_its_own_run_folder(tmp_path, monkeypatch):
    """The folder bookkeeping alone, with Trainer.fit stubbed out (training is tested above)."""
    fits = []
    monkeypatch.setattr(L.Trainer, "fit", lambda trainer, module, **kw: fits.append(kw.get("ckpt_path")))
    data = make_data()
    first = train_image_model(CLIP, CONFIG, data, seed=0, run_root=tmp_path)
    assert len(fits) == 1 and (tmp_path / f"seed0-{first.fingerprint}" / FINAL_WEIGHTS).is_file()
    assert train_image_model(CLIP, CONFIG, data, seed=0, run_root=tmp_path).reused
    assert len(fits) == 1

    runs = {
        "labels flipped": train_image_model(
            CLIP, CONFIG, _changed_inputs(data)["labels"], seed=0, run_root=tmp_path
        ),
        "one patch's pixels": train_image_model(
            CLIP, CONFIG, _changed_inputs(data)["one patch's pixels"], seed=0, run_root=tmp_path
        ),
        "lr": train_image_model(CLIP, dataclasses.replace(CONFIG, lr=5e-3), data, seed=0, run_root=tmp_path),
        "seed": train_image_model(CLIP, CONFIG, data, seed=1, run_root=tmp_path),
    }
    assert fits == [None] * 5  # each trained afresh: no reuse, nothing to resume from
    for what, run in runs.items():
        assert not run.reused and not run.resumed, what
        assert run.fingerprint != first.fingerprint, what
    expected = {
        f"seed0-{first.fingerprint}",
        *(f"seed{1 if w == 'seed' else 0}-{r.fingerprint}" for w, r in runs.items()),
    }
    assert {p.name for p in tmp_path.iterdir()} == expected and len(expected) == 5
    assert all((p / FINAL_WEIGHTS).is_file() for p in tmp_path.iterdir())


# --- input errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["clip", "supervised"])
def test_fewer_spots_than_one_batch_is_an_error_naming_the_variant(name, no_fit):
    variant = parse_variant(name, VARIANTS[name])
    data = make_data()
    with pytest.raises(ValueError, match=rf"variant '{name}'.*fewer than one batch"):
        train_image_model(variant, dataclasses.replace(CONFIG, batch_size=64), data, seed=0, run_root=None)


def test_supervised_counts_only_labelled_spots_toward_a_batch(no_fit):
    data = make_data()
    n_labelled = int((data.labels >= 0).sum())
    supervised = parse_variant("supervised", VARIANTS["supervised"])
    with pytest.raises(ValueError, match=rf"variant 'supervised': {n_labelled} training spots"):
        train_image_model(
            supervised, dataclasses.replace(CONFIG, batch_size=n_labelled + 1), data, seed=0, run_root=None
        )


@pytest.mark.parametrize("name", ["supervised", "class_guided_hard"])
def test_a_label_needing_variant_without_labels_is_an_error_naming_it(name, tmp_path, no_fit):
    variant = parse_variant(name, VARIANTS[name])
    data = data_for(variant, make_data())
    data = dataclasses.replace(data, labels=np.full(N_SPOTS, -1, dtype=np.int64))
    with pytest.raises(ValueError, match=rf"variant '{name}' needs tissue labels"):
        train_image_model(variant, CONFIG, data, seed=0, run_root=tmp_path)
    assert list(tmp_path.iterdir()) == []
