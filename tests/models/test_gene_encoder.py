"""Stage-1 gene encoders (scVI -> scANVI) on the tiny simulated cohort: shapes, the fold contract,
unseen patients, save/load without unpickling, and the input errors.

Training is kept tiny (a few epochs, 32 hidden units) and single-threaded: on a small shared CPU,
torch's intra-op threads fight each other and make these 128-spot minibatches ~10x slower.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

scvi = pytest.importorskip("scvi")
import torch  # noqa: E402  (after the skip: torch comes with scvi-tools)

from tpir_kedro.cohort.schema import TISSUE_CLASSES, UNDETERMINED, UNLABELLED  # noqa: E402
from tpir_kedro.cohort.sources import Her2stDirectory  # noqa: E402
from tpir_kedro.models import gene_encoder as gene_encoder_module  # noqa: E402
from tpir_kedro.models.gene_encoder import GeneEncoder  # noqa: E402
from tpir_kedro.models.gene_vae import (  # noqa: E402
    SCANVI_LABEL_KEY,
    GeneVaeConfig,
    fit_gene_encoders,
)

TINY = GeneVaeConfig(
    scvi_max_epochs=5, scanvi_max_epochs=2, n_hidden=32, n_latent=4, accelerator="cpu", seed=0
)
TRAIN_PATIENTS = ["A", "B"]
HELD_OUT = "C"


@pytest.fixture(scope="module", autouse=True)
def quiet_single_thread():
    """No progress bars (off in fit_gene_encoders), scvi/lightning INFO chatter off, one thread."""
    loggers = [logging.getLogger(n) for n in ("scvi", "lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    verbosity, threads = scvi.settings.verbosity, torch.get_num_threads()
    scvi.settings.verbosity = logging.WARNING
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    scvi.settings.verbosity = verbosity
    for lg, level in zip(loggers, levels, strict=True):
        lg.setLevel(level)


@pytest.fixture(scope="module")
def cohort(tiny_demo_dir):
    adata = Her2stDirectory(tiny_demo_dir).read()
    adata.obs["batch"] = adata.obs["patient"].astype(str).astype("category")
    assert set(adata.obs["patient"].astype(str)) == {*TRAIN_PATIENTS, HELD_OUT}
    return adata


@pytest.fixture(scope="module")
def genes(cohort):
    return list(cohort.var_names)


def _fold(adata, patients=TRAIN_PATIENTS):
    return adata[adata.obs["patient"].isin(patients)]


@pytest.fixture(scope="module")
def encoders(cohort, genes):
    """The module's one regular fit: patients A and B only (C stays unseen)."""
    obs, uns, layers = cohort.obs.copy(), set(cohort.uns), set(cohort.layers)
    fitted = fit_gene_encoders(_fold(cohort), genes, TINY)
    pd.testing.assert_frame_equal(cohort.obs, obs)  # the caller's AnnData is left alone
    assert set(cohort.uns) == uns and set(cohort.layers) == layers
    return fitted


def test_embeddings_and_probabilities(cohort, encoders):
    assert set(encoders) == {"scvi", "scanvi"}
    for kind, enc in encoders.items():
        assert enc.kind == kind and enc.n_latent == TINY.n_latent
        assert enc.batch_categories == TRAIN_PATIENTS
        z = enc.embed(cohort)
        assert z.shape == (cohort.n_obs, TINY.n_latent)
        assert np.isfinite(z).all()
    proba = encoders["scanvi"].predict_proba(cohort)
    assert proba.shape == (cohort.n_obs, len(TISSUE_CLASSES))
    assert list(proba.columns) == list(TISSUE_CLASSES)
    assert proba.index.equals(cohort.obs_names)
    assert ((proba.to_numpy() >= 0) & (proba.to_numpy() <= 1)).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="scANVI"):
        encoders["scvi"].predict_proba(cohort)
    empty = cohort[:0]
    assert encoders["scanvi"].embed(empty).shape == (0, TINY.n_latent)
    assert encoders["scanvi"].predict_proba(empty).shape == (0, len(TISSUE_CLASSES))


def _perturb_held_out(cohort, seed=7):
    """A copy of the cohort whose held-out patient has random counts and random tissue classes."""
    rng = np.random.default_rng(seed)
    perturbed = cohort.copy()
    held = (perturbed.obs["patient"] == HELD_OUT).to_numpy()
    counts = perturbed.layers["counts"].toarray()
    counts[held] = rng.poisson(20.0, size=(int(held.sum()), counts.shape[1]))
    perturbed.layers["counts"] = sp.csr_matrix(counts.astype(np.int32))
    labels = perturbed.obs["label"].astype(object).to_numpy()
    labels[held] = rng.choice(TISSUE_CLASSES, size=int(held.sum()))
    perturbed.obs["label"] = pd.Categorical(labels, categories=cohort.obs["label"].cat.categories)
    assert (perturbed.obs["label"] != cohort.obs["label"]).any()
    return perturbed


def test_fold_contract_nothing_about_held_out_patient_reaches_the_model(cohort, genes, encoders):
    refit = fit_gene_encoders(_fold(_perturb_held_out(cohort)), genes, TINY)
    train_spots = _fold(cohort).obs_names
    for kind, enc in encoders.items():
        # same seed, same A/B data -> bit-identical models, whatever C holds
        np.testing.assert_array_equal(refit[kind].embed(cohort), enc.embed(cohort))
        seen = enc.model.adata
        assert seen.obs_names.equals(train_spots)
        assert (
            enc.model.registry_["field_registries"]["batch"]["state_registry"]["categorical_mapping"].tolist()
            == TRAIN_PATIENTS
        )
    pd.testing.assert_frame_equal(
        refit["scanvi"].predict_proba(cohort), encoders["scanvi"].predict_proba(cohort)
    )
    # C's labels never reach scANVI: the labels it trained on are exactly A's and B's
    scanvi_seen = encoders["scanvi"].model.adata.obs
    held_spots = cohort.obs_names[cohort.obs["patient"] == HELD_OUT]
    assert not scanvi_seen.index.isin(held_spots).any()
    expected = _fold(cohort).obs["label"].astype(str)
    expected = expected.where(expected.isin(TISSUE_CLASSES), UNLABELLED)
    assert (scanvi_seen[SCANVI_LABEL_KEY].astype(str) == expected).all()


def test_unseen_patient_embedding_is_batch_free(cohort, encoders):
    held = cohort[cohort.obs["patient"] == HELD_OUT]
    obs_before, uns_before = cohort.obs.copy(), set(cohort.uns)
    counts_before = cohort.layers["counts"].copy()
    for enc in encoders.values():
        z_all = enc.embed(cohort)
        z_held = enc.embed(held)
        is_held = (cohort.obs["patient"] == HELD_OUT).to_numpy()
        np.testing.assert_allclose(z_held, z_all[is_held], atol=1e-6)
        assert enc.batch_invariance(cohort) < 1e-5
        # no batch column at all: still embeddable, same answer
        no_batch = held.copy()
        del no_batch.obs["batch"]
        np.testing.assert_allclose(enc.embed(no_batch), z_held, atol=1e-6)
    pd.testing.assert_frame_equal(cohort.obs, obs_before)
    assert set(cohort.uns) == uns_before
    assert (cohort.layers["counts"] != counts_before).nnz == 0


def test_encoder_that_sees_the_batch_is_refused(cohort, encoders, monkeypatch):
    enc = encoders["scvi"]
    monkeypatch.setattr(enc.model.module, "encode_covariates", True)
    with pytest.raises(ValueError, match="encode_covariates"):
        enc.embed(cohort)


def test_save_load_round_trip_without_unpickling(cohort, encoders, tmp_path, monkeypatch):
    real_load = torch.load
    calls = []

    def checked_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        assert kwargs.get("weights_only") is True, "GeneEncoder.load must not unpickle"
        return real_load(*args, **kwargs)

    for kind, enc in encoders.items():
        folder = enc.save(tmp_path / kind)
        assert (folder / "encoder.json").is_file() and (folder / "weights.pt").is_file()
        assert (folder / "scvi_model" / "model.pt").is_file()  # scvi-tools' own format too
        with monkeypatch.context() as m:
            m.setattr(torch, "load", checked_load)
            loaded = GeneEncoder.load(folder)
        assert loaded.kind == kind and loaded.genes == enc.genes
        assert loaded.batch_categories == enc.batch_categories
        assert loaded.label_categories == enc.label_categories
        np.testing.assert_allclose(loaded.embed(cohort), enc.embed(cohort), atol=1e-5)
        if kind == "scanvi":
            pd.testing.assert_frame_equal(loaded.predict_proba(cohort), enc.predict_proba(cohort), atol=1e-5)
        with pytest.raises(FileExistsError):
            enc.save(folder)
    assert calls == [True, True]


def test_load_refuses_mismatched_registry(encoders, tmp_path):
    folder = encoders["scvi"].save(tmp_path / "scvi")
    meta = json.loads((folder / "encoder.json").read_text())
    meta["n_labels"] = 2  # the rebuilt model has 1: must be refused, not silently loaded
    (folder / "encoder.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="n_labels"):
        GeneEncoder.load(folder)


def test_no_classified_label_gives_scvi_only(cohort, genes, caplog):
    fold = _fold(cohort).copy()
    fold.obs["label"] = pd.Categorical(
        np.where(np.arange(fold.n_obs) % 2, UNLABELLED, UNDETERMINED),
        categories=cohort.obs["label"].cat.categories,
    )
    with caplog.at_level(logging.WARNING, logger="tpir_kedro.models.gene_vae"):
        encs = fit_gene_encoders(fold, genes, dataclasses.replace(TINY, scvi_max_epochs=1))
    assert set(encs) == {"scvi"}
    assert "scANVI skipped" in caplog.text


def test_single_batch_trains_without_covariate_and_embeds_everyone(cohort, genes, tmp_path):
    config = dataclasses.replace(TINY, scvi_max_epochs=2, scanvi_max_epochs=1)
    encs = fit_gene_encoders(_fold(cohort, ["A"]), genes, config)
    assert set(encs) == {"scvi", "scanvi"}
    for kind, enc in encs.items():
        assert enc.batch_categories == ["A"]
        assert enc.model.registry_["setup_args"]["batch_key"] is None  # nothing to correct
        z = enc.embed(cohort)  # B and C never seen
        assert z.shape == (cohort.n_obs, TINY.n_latent) and np.isfinite(z).all()
        assert enc.batch_invariance(cohort) == 0.0
        loaded = GeneEncoder.load(enc.save(tmp_path / kind))
        np.testing.assert_allclose(loaded.embed(cohort), z, atol=1e-5)


def test_missing_genes_are_an_error(cohort, genes, encoders):
    with pytest.raises(ValueError, match=r"2 of \d+ genes are absent.*NOT_A_GENE"):
        fit_gene_encoders(cohort, [*genes[:5], "NOT_A_GENE", "NOT_A_GENE2"], TINY)
    fewer = cohort[:, genes[3:]]
    with pytest.raises(ValueError, match="gene list does not match the cohort: 3 of"):
        encoders["scvi"].embed(fewer)


def test_non_integer_counts_are_an_error(cohort, genes, encoders):
    halved = cohort.copy()
    halved.layers["counts"] = halved.layers["counts"].astype(np.float32) * 0.5
    with pytest.raises(ValueError, match="non-count data"):
        fit_gene_encoders(halved, genes, TINY)
    with pytest.raises(ValueError, match="non-count data"):
        encoders["scvi"].embed(halved)


def test_config_from_dict():
    assert GeneVaeConfig.from_dict({"n_latent": 3, "seed": 5}) == GeneVaeConfig(n_latent=3, seed=5)
    assert GeneVaeConfig.from_dict(None) == GeneVaeConfig()
    with pytest.raises(ValueError, match="n_latnet"):
        GeneVaeConfig.from_dict({"n_latnet": 3})


def test_model_module_imports_nothing_heavy():
    # the config must be usable without paying for scvi-tools (it is imported by the functions)
    assert "scvi" not in vars(gene_encoder_module)
