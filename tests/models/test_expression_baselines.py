"""Log-normalised PCA (fitted on a fold's training patients only) and Harmony on it."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from sklearn.neighbors import KNeighborsClassifier

from tpir_kedro.cohort.gene_selection import select_genes
from tpir_kedro.cohort.log_expression import LogNormalisedPca, log_normalise
from tpir_kedro.cohort.schema import COUNTS_LAYER, is_classified
from tpir_kedro.cohort.sources import Her2stDirectory
from tpir_kedro.evaluation.embedding_metrics import lopo_knn_transfer
from tpir_kedro.evaluation.folds import patient_folds, train_patients
from tpir_kedro.models.expression_baselines import harmony_embedding


def _cohort(n_per_patient: int = 40, n_genes: int = 30, seed: int = 0) -> AnnData:
    """Patients A, B, C; two expression programmes; a per-patient gene multiplier (batch effect)."""
    rng = np.random.default_rng(seed)
    patients = np.repeat(["A", "B", "C"], n_per_patient)
    program = rng.integers(0, 2, len(patients))
    base = rng.gamma(2.0, 2.0, size=(2, n_genes))
    patient_effect = {p: rng.lognormal(0, 0.5, n_genes) for p in "ABC"}
    mu = (
        base[program]
        * np.stack([patient_effect[p] for p in patients])
        * rng.uniform(0.5, 2, (len(patients), 1))
    )
    counts = sp.csr_matrix(rng.poisson(mu).astype(np.int32))
    obs = pd.DataFrame(
        {"patient": patients, "label": np.where(program == 0, "invasive cancer", "adipose tissue")},
        index=[f"s{i}" for i in range(len(patients))],
    )
    adata = AnnData(obs=obs, layers={COUNTS_LAYER: counts}, shape=counts.shape)
    adata.var_names = [f"G{i}" for i in range(n_genes)]
    return adata


def test_fit_ignores_the_held_out_patient_and_transform_is_spotwise():
    cohort = _cohort()
    genes = list(cohort.var_names[:25])
    fitted = LogNormalisedPca().fit(cohort, genes, ["A", "B"], n_pcs=5, seed=0)
    emb = fitted.transform(cohort)
    assert emb.shape == (cohort.n_obs, 5) and fitted.n_components_ == 5

    # Patient C's counts replaced by random values: the fitted model and A/B's embedding are unchanged.
    scrambled = cohort.copy()
    is_c = (scrambled.obs["patient"] == "C").to_numpy()
    counts = scrambled.layers[COUNTS_LAYER].toarray()
    counts[is_c] = np.random.default_rng(1).integers(0, 50, size=(is_c.sum(), cohort.n_vars))
    scrambled.layers[COUNTS_LAYER] = sp.csr_matrix(counts.astype(np.int32))
    refit = LogNormalisedPca().fit(scrambled, genes, ["B", "A"], n_pcs=5, seed=0)
    np.testing.assert_allclose(refit.mean_, fitted.mean_)
    np.testing.assert_allclose(refit.pca_.components_, fitted.pca_.components_, atol=1e-6)
    emb2 = refit.transform(scrambled)
    np.testing.assert_allclose(emb2[~is_c], emb[~is_c], atol=1e-5)
    assert not np.allclose(emb2[is_c], emb[is_c], atol=1e-2)

    # An unseen patient alone gets the same embedding as within the whole cohort.
    only_c = fitted.transform(cohort[is_c].copy())
    assert only_c.shape == (is_c.sum(), 5)
    np.testing.assert_allclose(only_c, emb[is_c], atol=1e-5)


def test_matches_a_hand_computation():
    cohort = _cohort(n_genes=20)
    genes = ["G3", "G1", "G7", "G0", "G12", "G5", "G9"]
    train = cohort.obs["patient"].isin(["A", "C"]).to_numpy()
    model = LogNormalisedPca(max_value=None).fit(cohort, genes, ["A", "C"], n_pcs=3, seed=0)

    counts = cohort.layers[COUNTS_LAYER].toarray().astype(float)
    logged = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)[:, [int(g[1:]) for g in genes]]
    mean, sd = logged[train].mean(0), logged[train].std(0, ddof=1)
    z = (logged - mean) / sd
    expected = PCA(3, svd_solver="full").fit(z[train]).transform(z)
    got = model.transform(cohort)
    sign = np.sign((got * expected).sum(0))  # PCs are defined up to sign
    np.testing.assert_allclose(got * sign, expected, atol=1e-3)
    assert np.abs(got[train].mean(0)).max() < 1e-4  # centred on the fitting spots only
    assert log_normalise(cohort.layers[COUNTS_LAYER]).shape == cohort.shape


def test_bad_inputs_are_clear(caplog):
    cohort = _cohort(n_per_patient=3, n_genes=10)
    with pytest.raises(ValueError, match="2 of 4 genes are not in the cohort: NOPE, ALSO_NOT"):
        LogNormalisedPca().fit(cohort, ["G1", "NOPE", "G2", "ALSO_NOT"], ["A"])
    with pytest.raises(ValueError, match=r"\['Z'\]"):
        LogNormalisedPca().fit(cohort, ["G1", "G2"], ["A", "Z"])
    with pytest.raises(RuntimeError, match="not fitted"):
        LogNormalisedPca().transform(cohort)
    model = LogNormalisedPca().fit(cohort, ["G1", "G2", "G3", "G4"], ["A"], n_pcs=30)
    assert model.n_components_ == 2 and "lowered to 2" in caplog.text  # 3 spots -> at most 2 PCs
    with pytest.raises(ValueError, match="G4"):
        model.transform(cohort[:, ["G1", "G2", "G3"]].copy())


def _shifted_embedding(n_per_group: int = 40, seed: int = 0):
    """Two classes x three batches; the batches shifted apart (silhouette by batch ~0.36)."""
    rng = np.random.default_rng(seed)
    label = np.tile(np.repeat([0, 1], n_per_group), 3)
    which = np.repeat([0, 1, 2], 2 * n_per_group)
    x = rng.normal(size=(len(label), 5))
    x[:, 0] += 6 * label
    x[:, 1:3] += 6 * np.array([[0, 0], [1, 0], [0, 1]])[which]
    return x, np.array(["p0", "p1", "p2"])[which], label


def test_harmony_mixes_patients_and_keeps_classes():
    x, batch, label = _shifted_embedding()
    z = harmony_embedding(x, batch, seed=0)
    assert z.shape == x.shape
    before, after = silhouette_score(x, batch), silhouette_score(z, batch)
    assert before > 0.3 and after < 0.1
    assert silhouette_score(z, label) > max(0.4, silhouette_score(x, label))
    # Classes transfer across patients after correction (train on p0, p1; predict p2).
    train = batch != "p2"
    knn = KNeighborsClassifier(5).fit(z[train], label[train])
    assert (knn.predict(z[~train]) == label[~train]).mean() > 0.95
    np.testing.assert_allclose(harmony_embedding(x, batch, seed=0), z)


def test_harmony_single_batch_and_bad_shape(caplog):
    x, _, _ = _shifted_embedding(n_per_group=5)
    with caplog.at_level(logging.INFO, logger="tpir_kedro.models.expression_baselines"):
        z = harmony_embedding(x, np.full(len(x), "only"))
    assert np.array_equal(z, x) and z is not x and "single batch" in caplog.text
    with pytest.raises(ValueError, match="one batch value per spot"):
        harmony_embedding(x, np.zeros(len(x) - 1))


def test_per_fold_pca_on_the_demo_cohort(tiny_demo_dir):
    """The fold contract end to end on a real-reader cohort: genes and PCA from training patients."""
    cohort = Her2stDirectory(tiny_demo_dir).read()
    folds = patient_folds(cohort.obs)
    embeddings, harmonised = {}, {}
    for fold in folds["fold"].unique():
        train = train_patients(folds, fold)
        genes = select_genes(cohort, train, n_top_genes=60)
        embeddings[fold] = LogNormalisedPca().fit_transform(cohort, genes, train, n_pcs=10)
        harmonised[fold] = harmony_embedding(embeddings[fold], cohort.obs["patient"].to_numpy())
        held_out = (cohort.obs["patient"] == fold.removeprefix("holdout_")).to_numpy()
        assert embeddings[fold].shape == harmonised[fold].shape == (cohort.n_obs, 10)
        assert np.isfinite(embeddings[fold]).all() and np.isfinite(harmonised[fold]).all()
        assert np.abs(embeddings[fold][~held_out].mean(0)).max() < 1e-3
    for table in (
        lopo_knn_transfer(embeddings, cohort.obs, folds),
        lopo_knn_transfer(harmonised, cohort.obs, folds),
    ):
        assert list(table["held_out_patient"]) == ["A", "B", "C"]
        classified = (
            pd.Series(is_classified(cohort.obs["label"]), index=cohort.obs.index)
            .groupby(cohort.obs["patient"])
            .sum()
        )
        assert table["n_test"].tolist() == classified.loc[["A", "B", "C"]].tolist()
        assert table["accuracy"].between(0, 1).all()
