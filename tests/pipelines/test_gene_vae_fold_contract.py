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


def _fold_c(cohort, budget: str = "image_spots"):
    folds = patient_folds(cohort.obs, held_out=["C"])
    genes = fold_gene_sets(cohort, folds, GENES)
    encoders = fold_gene_encoders(cohort, folds, genes, {**GENE_VAE, "scanvi_labels": budget})
    training = cohort[(cohort.obs["patient"].astype(str) != "C").to_numpy()]
    return (
        genes["holdout_C"],
        {kind: e.embed(training) for kind, e in encoders["holdout_C"].items()},
        encoders,
    )


# Both label budgets: `all` (the her2st environment's) gives scANVI more of the training patients'
# labels, never the held-out patient's.
@pytest.mark.parametrize("budget", ["image_spots", "all"])
def test_replacing_the_held_out_patient_changes_nothing_fitted_for_its_fold(cohort, budget):
    genes, embeddings, encoders = _fold_c(cohort, budget)
    genes_scrambled, embeddings_scrambled, _ = _fold_c(_scrambled(cohort, "C"), budget)
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


def _labels_only_on_imageless_spots_outside(cohort, patient: str):
    """``patient``'s spots with a patch keep their labels; every other patient's labels sit on imageless
    spots only (as on HER2ST, where A1 is the one labelled section with an image). In the tiny demo
    only C has an imageless section, so B is left without any label."""
    out = cohort.copy()
    labels = out.obs["label"].astype(str).to_numpy()
    has_image = out.obs["has_image"].to_numpy(dtype=bool)
    others = (out.obs["patient"].astype(str) != patient).to_numpy()
    labels[others & has_image] = "unlabelled"
    imageless = np.flatnonzero(others & ~has_image)
    labels[imageless] = np.resize(np.array(TISSUE_CLASSES), len(imageless))
    out.obs["label"] = label_categorical(labels)
    return out


SCORECARD = {"n_pcs": 5, "knn_k": 5, "n_neighbors": 5, "seed": 0}


def test_a_fold_scanvi_cannot_be_fitted_in_says_why_in_every_table(cohort, caplog):
    """Under the default label budget (image_spots) the fold holding A out has no label to learn from:
    no scANVI there, and every table that expects one has its row, with NaN numbers and the reason."""
    from tpir_kedro.pipelines.gene_vae.nodes import all_patient_embeddings, gene_embedding_scorecard

    skewed = _labels_only_on_imageless_spots_outside(cohort, "A")
    folds = patient_folds(skewed.obs, held_out=["A", "C"])
    genes = fold_gene_sets(skewed, folds, GENES)
    encoders = fold_gene_encoders(skewed, folds, genes, GENE_VAE)
    assert set(encoders["holdout_A"]) == {"scvi"}
    assert set(encoders["holdout_C"]) == set(encoders["all"]) == {"scvi", "scanvi"}
    why = "no labelled spot among the training patients (B, C) under scanvi_labels=image_spots"
    assert f"gene_vae fold holdout_A: scANVI not fitted: {why}" in caplog.text

    transfer = lopo_label_transfer(skewed, folds, genes, encoders, SCORECARD)
    rows = transfer.set_index(["embedding", "fold"])
    assert len(rows) == 5 * 2  # pca, harmony, scvi, scanvi, majority x two folds
    missing = rows.loc[("scanvi", "holdout_A")]
    assert missing["status"].startswith(f"not fitted: {why}: their ")
    assert missing[["accuracy", "macro_f1", "patient_decodability"]].isna().all()
    assert missing["n_test"] > 0  # the held-out patient is there to score; the model is not
    fitted = rows.drop(("scanvi", "holdout_A"))
    assert (fitted["status"] == "fitted").all() and fitted["macro_f1"].notna().all()

    embedded = all_patient_embeddings(skewed, genes, encoders, SCORECARD)
    assert embedded.uns["gene_embeddings"]["not_fitted"] == {}  # the all-patient fit has A's labels
    scorecard = gene_embedding_scorecard(embedded, transfer, encoders, SCORECARD).set_index("embedding")
    assert list(scorecard.index) == ["pca", "harmony", "scvi", "scanvi", "majority"]
    assert scorecard.loc["scanvi", ["n_folds", "n_folds_not_fitted"]].tolist() == [1, 1]
    assert scorecard.loc["scanvi", "status"].startswith(f"holdout_A not fitted: {why}")
    assert np.isfinite(scorecard.loc["scanvi", ["lopo_knn_macro_f1", "silhouette_label"]].astype(float)).all()
    assert (scorecard.drop("scanvi")["status"] == "fitted").all()
    assert (scorecard.drop(["scanvi", "majority"])["n_folds"] == 2).all()

    # Under `all` the imageless labels count and the fold is fitted (the her2st environment's choice).
    every_label = fold_gene_encoders(skewed, folds, genes, {**GENE_VAE, "scanvi_labels": "all"})
    assert set(every_label["holdout_A"]) == {"scvi", "scanvi"}


def test_without_any_scanvi_the_tables_keep_its_row(cohort):
    """No fold, not even the all-patient fit, has a label: scANVI's rows are there, empty, with why."""
    from tpir_kedro.pipelines.gene_vae.nodes import all_patient_embeddings, gene_embedding_scorecard

    unlabelled = cohort.copy()
    unlabelled.obs["label"] = label_categorical(np.full(unlabelled.n_obs, "unlabelled"))
    folds = patient_folds(unlabelled.obs, held_out=["C"])
    genes = fold_gene_sets(unlabelled, folds, GENES)
    encoders = fold_gene_encoders(unlabelled, folds, genes, GENE_VAE)
    transfer = lopo_label_transfer(unlabelled, folds, genes, encoders, SCORECARD)
    scanvi = transfer[transfer["embedding"] == "scanvi"]
    assert scanvi["status"].tolist() == ["not fitted: no labelled spot among the training patients (A, B)"]
    embedded = all_patient_embeddings(unlabelled, genes, encoders, SCORECARD)
    assert "X_scanvi" not in embedded.obsm
    assert embedded.uns["gene_embeddings"]["not_fitted"] == {
        "scanvi": "not fitted: no labelled spot among the training patients (A, B, C)"
    }
    scorecard = gene_embedding_scorecard(embedded, transfer, encoders, SCORECARD).set_index("embedding")
    row = scorecard.loc["scanvi"]
    assert row["n_folds"] == 0 and row["n_folds_not_fitted"] == 1
    assert np.isnan(row["unseen_patient_max_abs_change"])  # nothing measured is not a perfect score
    assert row["status"] == (
        "holdout_C not fitted: no labelled spot among the training patients (A, B); "
        "all not fitted: no labelled spot among the training patients (A, B, C)"
    )


def test_an_image_variant_whose_fold_lacks_its_gene_encoder_is_skipped_with_a_log(caplog, project_root):
    """The image side's consumers of scANVI (its embedding as the gene input, or its class
    probabilities) skip that fold, saying why; the rest of the fold trains."""
    from types import SimpleNamespace

    import yaml

    from tpir_kedro.models.variants import parse_variants
    from tpir_kedro.pipelines.contrastive.nodes import _trainable

    variants = yaml.safe_load((project_root / "conf/base/parameters_contrastive.yml").read_text())["variants"]
    specs = parse_variants(variants, list(variants))
    inputs = SimpleNamespace(
        fold="holdout_A", train_label_codes=np.array([0, -1]), embeddings={"scvi": np.zeros((2, 4))}
    )
    kept = {v.name for v in _trainable(specs, inputs)}
    assert kept == set(variants) - {"scanvi_infonce", "scanvi_similarity", "class_guided"}
    for name in ("scanvi_infonce", "scanvi_similarity", "class_guided"):
        assert f"variant {name} skipped in fold holdout_A: it needs the fold's scanvi" in caplog.text
    # any encoder of the family is a gene input: kept where the fold has it, skipped where not
    sysvi = parse_variants({"sysvi_infonce": {"gene_input": "sysvi", "loss": "infonce"}})
    assert [
        v.name
        for v in _trainable(
            sysvi, SimpleNamespace(**{**vars(inputs), "embeddings": {"sysvi": np.zeros((2, 4))}})
        )
    ] == ["sysvi_infonce"]
    assert _trainable(sysvi, inputs) == []
    assert "variant sysvi_infonce skipped in fold holdout_A: it needs the fold's sysvi" in caplog.text


def test_the_reason_a_scanvi_is_missing_is_read_off_the_labels():
    """The scoring nodes are not given the label budget: the spot table tells which one explains it."""
    import pandas as pd

    from tpir_kedro.cohort.label_budget import missing_labels_reason, unfitted_scanvi_reason

    obs = pd.DataFrame(
        {
            "patient": ["A", "A", "B", "B"],
            "label": ["connective tissue", "unlabelled", "invasive cancer", "undetermined"],
            "has_image": [True, True, False, True],
        }
    )
    assert missing_labels_reason(obs, ["A"], "image_spots") is None
    assert missing_labels_reason(obs, ["B"], "all") is None
    assert unfitted_scanvi_reason(obs, ["B"]) == (
        "not fitted: no labelled spot among the training patients (B) under scanvi_labels=image_spots: "
        "their 1 labelled spots have no image"
    )
    unlabelled = obs.assign(label="unlabelled")
    assert unfitted_scanvi_reason(unlabelled, ["A", "B"]) == (
        "not fitted: no labelled spot among the training patients (A, B)"
    )
    # Labels with an image and still no scANVI: the encoders are not this cohort's.
    assert "re-run gene_vae" in unfitted_scanvi_reason(obs, ["A"])


FAMILY_FIT = ["scvi", "scanvi", "scvi_adversarial", "scvi_batch_embedding", "sysvi"]


def test_every_encoder_of_the_family_goes_through_the_pipeline_nodes_under_the_fold_contract(
    cohort, project_root
):
    """The shipped family (conf/base), each entry fitted per fold, scored and embedded by the nodes;
    scrambling the held-out patient C changes none of its fold's fits."""
    import yaml

    from tpir_kedro.pipelines.gene_vae.nodes import all_patient_embeddings, gene_embedding_scorecard

    shipped = yaml.safe_load((project_root / "conf/base/parameters_gene_vae.yml").read_text())["gene_vae"]
    gene_vae = {**GENE_VAE, "family": shipped["family"], "fit": FAMILY_FIT}
    scorecard_params = {"n_pcs": 5, "knn_k": 5, "seed": 0}

    def fold_c(adata):
        folds = patient_folds(adata.obs, held_out=["C"])
        genes = fold_gene_sets(adata, folds, GENES)
        return folds, genes, fold_gene_encoders(adata, folds, genes, gene_vae)

    folds, genes, encoders = fold_c(cohort)
    assert set(encoders["holdout_C"]) == set(FAMILY_FIT) == set(encoders["all"])
    transfer = lopo_label_transfer(cohort, folds, genes, encoders, scorecard_params, gene_vae)
    assert set(transfer["embedding"]) == {"pca", "harmony", *FAMILY_FIT, "majority"}
    assert (transfer["status"] == "fitted").all()
    assert (
        transfer.set_index("embedding").loc["sysvi", "protocol"].endswith("mean over the training patients")
    )
    embedded = all_patient_embeddings(cohort, genes, encoders, scorecard_params, gene_vae)
    assert {f"X_{n}" for n in FAMILY_FIT} <= set(embedded.obsm)
    card = gene_embedding_scorecard(embedded, transfer, encoders, scorecard_params, gene_vae).set_index(
        "embedding"
    )
    # fitting order: each scANVI after the scVIs
    assert list(card.index) == [
        "pca",
        "harmony",
        *[n for n in FAMILY_FIT if n != "scanvi"],
        "scanvi",
        "majority",
    ]
    assert card.loc[FAMILY_FIT, "robustness_index"].between(0, 1).all()
    assert card.loc["sysvi", "unseen_patient_max_abs_change"] > 0  # its encoder takes the patient
    assert card.loc["scvi_adversarial", "unseen_patient_max_abs_change"] < 1e-5

    _, _, scrambled = fold_c(_scrambled(cohort, "C"))
    training = cohort[(cohort.obs["patient"].astype(str) != "C").to_numpy()]
    for name in FAMILY_FIT:
        np.testing.assert_array_equal(
            encoders["holdout_C"][name].embed(training),
            scrambled["holdout_C"][name].embed(training),
            err_msg=name,
        )
