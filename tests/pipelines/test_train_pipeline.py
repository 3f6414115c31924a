"""End to end: demo_cohort then train on a tiny demo (the shared ``trained_demo_project``, run as a user
types it), one test per stage; a larger demo where a probe can be read; and the real files."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import yaml
from kedro.framework.session import KedroSession

from tpir_kedro.cohort.schema import validate_cohort

VARIANTS = [
    "clip",
    "bleep",
    "bleep_normalised",
    "scvi_infonce",
    "scanvi_infonce",
    "scanvi_similarity",
    "class_guided",
    "imagenet",
    "random",
    "supervised",
]
TRAINED = set(VARIANTS) - {"imagenet", "random"}


@pytest.fixture()
def project(tmp_path, project_copy):
    """A throw-away copy of the project's configuration, so runs write under tmp_path/data."""
    return project_copy(tmp_path)


@pytest.fixture()
def run(tiny_train_params):
    """``run(project, "pipe1,pipe2", env=None, extra=None)`` -> the session's catalog, on the tiny demo."""

    def _run(project, pipeline, env=None, extra=None):
        params = {**tiny_train_params, **(extra or {})}
        with KedroSession.create(project_path=project, env=env, runtime_params=params) as session:
            session.run(pipeline_names=pipeline.split(","))
            return session.load_context().catalog

    return _run


@pytest.fixture(scope="module")
def catalog(trained_demo_project):
    """The catalog of the shared tiny demo run (read only)."""
    with KedroSession.create(project_path=trained_demo_project) as session:
        return session.load_context().catalog


def test_without_a_demo_cohort_train_says_how_to_make_one(project, run):
    with pytest.raises(Exception, match="make demo"):
        run(project, "train")


@pytest.mark.slow
def test_data_engineering_writes_the_cohort_patches_folds_and_fold_genes(catalog):
    cohort = catalog.load("cohort")
    validate_cohort(cohort)
    assert cohort.obs["batch"].astype(str).equals(cohort.obs["patient"].astype(str))
    store = catalog.load("patch_store")
    imaged = cohort.obs_names[cohort.obs["has_image"].to_numpy()]
    assert len(store) == len(imaged) and store.patches.shape[1:] == (32, 32, 3)
    assert (np.asarray(store.patches[store.rows(imaged[:5])]) < 250).any()
    folds = catalog.load("patient_folds")
    assert sorted(folds["held_out_patient"].unique()) == ["B"]
    genes = catalog.load("fold_genes")
    assert set(genes) == {"holdout_B", "all"}
    assert all(0 < len(g) <= 50 for g in genes.values())
    effect = catalog.load("raw_batch_effect")
    assert effect["silhouette_patient"] > effect["silhouette_class"]


@pytest.mark.slow
def test_gene_vae_fits_scvi_and_scanvi_per_fold_embeds_and_scores_them(catalog, trained_demo_project):
    encoders = catalog.load("gene_encoders")
    assert set(encoders) == {"holdout_B", "all"} and all(
        set(e) == {"scvi", "scanvi"} for e in encoders.values()
    )
    embedded = catalog.load("cohort_gene_embeddings")
    for key, width in (("X_pca", 10), ("X_harmony", 10), ("X_scvi", 4), ("X_scanvi", 4)):
        assert embedded.obsm[key].shape == (embedded.n_obs, width) and np.isfinite(embedded.obsm[key]).all()
    scorecard = catalog.load("gene_embedding_scorecard")
    assert list(scorecard["embedding"]) == ["pca", "harmony", "scvi", "scanvi", "majority"]
    for column in (
        "ilisi",
        "silhouette_patient",
        "lopo_knn_macro_f1",
        "lopo_knn_macro_f1_sd",
        "patient_decodability",
    ):
        assert column in scorecard.columns
    assert scorecard.loc[scorecard["embedding"] == "scvi", "unseen_patient_max_abs_change"].item() < 1e-4
    transfer = catalog.load("gene_label_transfer")
    assert set(transfer["held_out_patient"]) == {"B"}
    # The gene side's mechanism check is read on the fold's training patients, A and C (chance 1/2).
    embedded_rows = transfer[transfer["embedding"] != "majority"]
    assert (embedded_rows["patient_decodability_chance"] == 1 / 2).all()
    assert embedded_rows["patient_decodability"].between(0, 1).all()
    assert (trained_demo_project / "data/08_reporting/gene_umap_by_patient.json").is_dir()


@pytest.mark.slow
def test_every_variant_is_probed_in_the_space_it_trained(catalog):
    results = catalog.load("results")
    assert set(results["variant"]) == {*VARIANTS, "majority"}
    assert set(results.loc[results["variant"] != "majority", "probe"]) == {
        "logistic",
        "knn",
        "retrieval",
        "ridge",
    }
    classified = results[results["probe"].isin(["logistic", "knn", "majority"])]
    expression = results[results["probe"].isin(["retrieval", "ridge"])]
    assert classified[["accuracy", "macro_f1", "balanced_accuracy"]].notna().all().all()
    assert classified["pearson_r_top50"].isna().all() and expression["macro_f1"].isna().all()
    # Every variant under both expression protocols (like for like), with a Pearson r.
    assert (expression.groupby("variant")["probe"].agg(set) == {"retrieval", "ridge"}).all()
    assert set(expression["variant"]) == set(VARIANTS) and expression["pearson_r_top50"].notna().all()
    assert results["run_id"].nunique() == 1
    # The adapter for trained variants (frozen regime), the backbone for the untrained baselines;
    # contrastive variants retrieve expression in the joint space.
    spaces = classified.groupby("variant")["space"].agg(set)
    assert spaces["imagenet"] == spaces["random"] == {"backbone"} and spaces["majority"] == {"none"}
    assert all(spaces[v] == {"adapter"} for v in TRAINED)
    retrieval = expression[expression["probe"] == "retrieval"].groupby("variant")["space"].agg(set)
    assert retrieval["clip"] == {"joint"} and retrieval["supervised"] == {"adapter"}


@pytest.mark.slow
def test_every_trained_run_takes_the_step_budget_and_its_loss_falls(catalog, tiny_train_params):
    runs = catalog.load("training_runs")
    assert set(runs["variant"]) == TRAINED
    assert set(runs["fold"]) == {"holdout_B", "all"}  # the final models' runs are reported too
    assert (runs["steps"] == tiny_train_params["contrastive"]["max_steps"]).all()
    # Every trained run learns its objective: its epoch loss falls from the first epoch to the last
    # (worst last/first ratio 0.97 over seven tiny runs, five simulated cohorts). What it does to
    # the probe is checked on a larger cohort below: on 33 held-out spots macro-F1 is noise.
    history = catalog.load("training_history")
    assert set(history["variant"]) == TRAINED
    epoch_loss = history.dropna(subset=["train_loss_epoch"]).groupby(["variant", "fold", "seed"])[
        "train_loss_epoch"
    ]
    assert (epoch_loss.last() < epoch_loss.first()).all(), epoch_loss.agg(["first", "last"])


def _train_manifest(project, results) -> dict:
    """The run manifest of the ``train`` run that wrote ``results`` (later ``predict`` runs on the
    shared project add manifests of their own)."""
    run_id = results["run_id"].iloc[0]
    return json.loads(
        (project / "data/08_reporting/run_manifest.json" / run_id / "run_manifest.json").read_text()
    )


@pytest.mark.slow
def test_the_run_manifest_and_the_packaged_models(catalog, trained_demo_project):
    manifest = _train_manifest(trained_demo_project, catalog.load("results"))
    assert manifest["run_id"] == catalog.load("results")["run_id"].iloc[0]
    assert {"data_engineering", "gene_vae", "contrastive", "evaluation"} <= set(
        manifest["wall_seconds"]["stages"]
    )
    assert manifest["dataset_versions"]["patch_store"] and manifest["packages"]["torch"]
    # The run's own parameters (not Kedro's feed dict of every sub-tree), and what follows from them.
    tiny = yaml.safe_load((trained_demo_project / "conf" / "local" / "parameters.yml").read_text())
    assert "parameters" not in manifest["parameters"] and not any(":" in k for k in manifest["parameters"])
    assert manifest["parameters"]["contrastive"]["max_steps"] == tiny["contrastive"]["max_steps"]
    assert manifest["seeds"] == manifest["parameters"]["image_runs"]["seeds"]
    assert manifest["image_backbone"]["backbone"] == manifest["parameters"]["contrastive"]["backbone"]
    models = catalog.load("image_models")
    assert set(models) == set(VARIANTS)
    card = models["scanvi_infonce"].card
    assert card["patch_size_px"] == 32 and card["classes"] and card["lopo_metrics"]


@pytest.mark.slow
def test_a_second_run_adds_versions_and_reuses_finished_training(
    trained_demo_project, tmp_path, run, project_copy, caplog
):
    project = project_copy(tmp_path / "again")  # a copy: the shared run stays as it was
    shutil.copytree(trained_demo_project / "data", project / "data")
    with KedroSession.create(project_path=project, runtime_params=None) as session:
        first_catalog = session.load_context().catalog
        results = first_catalog.load("results")
    first = sorted((project / "data/03_primary/cohort.h5ad").iterdir())
    before = (first[0] / "cohort.h5ad").read_bytes()
    run(project, "data_engineering")  # the shared run's parameters: the tiny demo's
    versions = sorted((project / "data/03_primary/cohort.h5ad").iterdir())
    assert len(versions) == 2 and (versions[0] / "cohort.h5ad").read_bytes() == before
    # The same inputs and parameters: finished image-training runs are reused, not retrained.
    with caplog.at_level(logging.INFO, logger="tpir_kedro.models.training"):
        catalog = run(project, "contrastive,evaluation")
    assert catalog.load("results").drop(columns="run_id").equals(results.drop(columns="run_id"))
    # Every trained variant's runs came from the run cache (a wall-time comparison is a timing test,
    # and flaky on a loaded machine: the reuse itself is what is asserted).
    reused = {m.split()[1].rstrip(":") for m in caplog.messages if "reusing finished run" in m}
    assert reused == TRAINED, reused
    assert not any("resuming from" in m for m in caplog.messages)


@pytest.mark.slow
def test_trained_encoders_beat_the_random_init_encoder_on_the_held_out_patient(
    project, run, tiny_train_params
):
    """The issue's claim on a cohort where a probe can be read: 12 x 12 spots per section (~100 held-out
    labelled spots), the default ImageNet initialisation, three trained variants, two epochs.

    Over five simulated cohorts of this size the trained encoders beat the random init on four
    (logistic macro-F1 by 0.04-0.17); on the fifth the random encoder scored 0.54 against 0.37, so
    this pins the demo's seed 0 (margin 0.11, logistic and kNN alike), large against the <= 0.02 that a
    different CPU moves it. (Measured with two epochs of full fine-tuning; the frozen regime's adapter
    on ImageNet features is held to the same bar.)
    """
    extra = {
        "demo_cohort": {**tiny_train_params["demo_cohort"], "seed": 0, "grid": [12, 12]},
        "contrastive": {**tiny_train_params["contrastive"], "init": "imagenet"},
        "image_runs": {
            "variants": ["random", "scanvi_infonce", "class_guided", "supervised"],
            "final_models": False,
        },
    }
    run(project, "demo_cohort", extra=extra)
    results = run(project, "train", extra=extra).load("results")
    assert results.loc[results["variant"] != "majority", "n_test"].min() >= 90
    for probe in ("logistic", "knn"):
        f1 = results[results["probe"] == probe].set_index("variant")["macro_f1"]
        assert f1[["scanvi_infonce", "class_guided", "supervised"]].mean() > f1["random"], (
            probe,
            f1.to_dict(),
        )


@pytest.mark.slow
def test_her2st_env_reads_the_real_files(project, run, her2st_dir, monkeypatch):
    monkeypatch.setenv("TPIR_HER2ST_DIR", str(her2st_dir))
    extra = {
        "cohort": {"sections": ["A1", "B1", "C2", "C3"]},
        "genes": {"n_top_genes": 300},
        "folds": {"held_out_patients": ["A", "B", "C"]},
    }
    catalog = run(project, "data_engineering", env="her2st", extra=extra)
    cohort = catalog.load("cohort")
    assert sorted(cohort.obs["section"].unique()) == ["A1", "B1", "C2", "C3"]
    store = catalog.load("patch_store")
    # A1 (app image, 3.2 µm/px), C2 and C3 have images; B1 does not.
    assert sorted(store.index["section"].unique()) == ["A1", "C2", "C3"]
    assert store.meta["sections_without_image"] == ["B1"]
    assert store.meta["sections"]["A1"]["um_per_px"] == pytest.approx(3.2, abs=0.1)
    folds = catalog.load("patient_folds")
    assert sorted(folds["held_out_patient"].unique()) == ["A", "B", "C"]
    report = json.loads(
        (
            next((project / "data/08_reporting/her2st/raw_batch_effect.json").iterdir())
            / "raw_batch_effect.json"
        ).read_text()
    )
    assert report["n_patients"] == 2  # labelled spots: A1 and B1
    # The real source was read in place, never written.
    assert not (project / "data/01_raw").exists() or not any((project / "data/01_raw").iterdir())
