"""The fold contract through the pipeline's own nodes: nothing fitted for fold P sees P's data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from tpir_kedro.cohort.schema import TISSUE_CLASSES, label_categorical
from tpir_kedro.cohort.sources import Her2stDirectory
from tpir_kedro.cohort.spot_qc import add_batch_labels
from tpir_kedro.evaluation.folds import patient_folds
from tpir_kedro.pipelines.data_engineering.nodes import fold_gene_sets
from tpir_kedro.pipelines.gene_vae.nodes import fold_gene_encoders, lopo_label_transfer

GENES = {"n_top_genes": 40, "min_spot_fraction": 0.01, "exclude_patterns": []}
GENE_VAE = {
    "n_latent": 4,
    "n_hidden": 16,
    "scvi_max_epochs": 3,
    "scanvi_max_epochs": 2,
    "accelerator": "cpu",
    "min_training_spots": 20,
}


@pytest.fixture(scope="module")
def cohort(tiny_demo_dir):
    return add_batch_labels(Her2stDirectory(tiny_demo_dir).read(), "patient")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: thread overhead dominates and varies
    yield
    torch.set_num_threads(previous)


def _scrambled(cohort, patient: str, seed: int = 0):
    """Patient's counts and labels replaced by random values."""
    out = cohort.copy()
    rows = (out.obs["patient"].astype(str) == patient).to_numpy()
    rng = np.random.default_rng(seed)
    counts = out.layers["counts"].toarray()
    counts[rows] = rng.poisson(30, size=(rows.sum(), counts.shape[1]))
    out.layers["counts"] = sp.csr_matrix(counts.astype(np.int32))
    labels = out.obs["label"].astype(str).to_numpy()
    labels[rows] = rng.choice(list(TISSUE_CLASSES), rows.sum())
    out.obs["label"] = label_categorical(labels)
    return out


def _fold_c(cohort):
    folds = patient_folds(cohort.obs, held_out=["C"])
    genes = fold_gene_sets(cohort, folds, GENES)
    encoders = fold_gene_encoders(cohort, folds, genes, GENE_VAE)
    training = cohort[(cohort.obs["patient"].astype(str) != "C").to_numpy()]
    return (
        genes["holdout_C"],
        {kind: e.embed(training) for kind, e in encoders["holdout_C"].items()},
        encoders,
    )


def test_replacing_the_held_out_patient_changes_nothing_fitted_for_its_fold(cohort):
    genes, embeddings, encoders = _fold_c(cohort)
    genes_scrambled, embeddings_scrambled, _ = _fold_c(_scrambled(cohort, "C"))
    assert genes == genes_scrambled
    assert set(embeddings) == {"scvi", "scanvi"}
    for kind in embeddings:
        np.testing.assert_array_equal(embeddings[kind], embeddings_scrambled[kind])
    # ...and the fold encoders never had C as a batch: C's name is nowhere in them.
    assert all("C" not in e.batch_categories for e in encoders["holdout_C"].values())
    # The all-patient encoder does see C, so the comparison above is not vacuous.
    assert "C" in encoders["all"]["scvi"].batch_categories


def _gene_side_decodability(cohort):
    folds = patient_folds(cohort.obs, held_out=["C"])
    genes = fold_gene_sets(cohort, folds, GENES)
    encoders = fold_gene_encoders(cohort, folds, genes, GENE_VAE)
    table = lopo_label_transfer(cohort, folds, genes, encoders, {"n_pcs": 5, "knn_k": 5, "seed": 0})
    return table.set_index("embedding")


def test_the_gene_side_patient_decodability_never_reads_the_held_out_patient(cohort):
    table = _gene_side_decodability(cohort)
    scrambled = _gene_side_decodability(_scrambled(cohort, "C"))
    # Every inductive embedding: the same score without C's data; Harmony is transductive (it
    # aligns C's expression with the others), so its training-patient embedding may move.
    for embedding in ("pca", "scvi", "scanvi"):
        row, other = table.loc[embedding], scrambled.loc[embedding]
        assert row["patient_decodability_chance"] == 1 / 2  # A and B: C never counts as a patient
        assert 0 <= row["patient_decodability"] <= 1
        assert row["patient_decodability"] == other["patient_decodability"]
        assert row["n_decodability_spots"] == other["n_decodability_spots"] > 0
    assert np.isnan(table.loc["majority", "patient_decodability"])


def test_a_fold_with_too_few_training_spots_is_an_error(cohort):
    folds = patient_folds(cohort.obs, held_out=["C"])
    genes = fold_gene_sets(cohort, folds, GENES)
    with pytest.raises(ValueError, match="holdout_C: only .* training spots"):
        fold_gene_encoders(cohort, folds, genes, {**GENE_VAE, "min_training_spots": 10_000})


def test_without_any_label_scanvi_is_skipped_and_scvi_still_runs(cohort, caplog):
    unlabelled = cohort.copy()
    unlabelled.obs["label"] = label_categorical(np.full(unlabelled.n_obs, "unlabelled"))
    folds = patient_folds(unlabelled.obs, held_out=["C"])
    genes = fold_gene_sets(unlabelled, folds, GENES)
    encoders = fold_gene_encoders(unlabelled, folds, genes, GENE_VAE)
    assert all(set(e) == {"scvi"} for e in encoders.values())
    assert "scANVI skipped" in caplog.text
