"""`predict` on a patient a fold held out reproduces that fold's evaluation: the same features and the
same probe outputs, so the path users take to new slides and the path the LOPO numbers come from
cannot drift apart.

Three simulated patients (E, F, G: new-patient slides of a tiny demo) are tiled into one patch store.
Fold ``holdout_E`` trains ``supervised`` (frozen regime) and ``imagenet`` on F and G and is evaluated
by the evaluation nodes; the same training data as an all-patient fold is trained and packaged by the
nodes that package final models (training is seeded, so the weights are the fold's), saved, loaded
back and run through the predict nodes on E's slide.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tpir_kedro.cohort.demo.held_out_slide import simulate_held_out_slide
from tpir_kedro.cohort.demo.simulate import DemoCohortConfig, ExpressionConfig
from tpir_kedro.cohort.schema import TISSUE_CLASSES
from tpir_kedro.cohort.slide_folder import write_slide_folder
from tpir_kedro.evaluation.fold_inputs import FoldInputs
from tpir_kedro.evaluation.folds import ALL_PATIENTS
from tpir_kedro.imaging.patch_store import PatchStore
from tpir_kedro.imaging.slide_folder import read_slide_folder
from tpir_kedro.imaging.tiling import SectionTiles, TilingPlan, write_patch_store
from tpir_kedro.models.packaged_model_folders import PackagedModelFolders
from tpir_kedro.pipelines.contrastive import nodes as cell_nodes
from tpir_kedro.pipelines.evaluation.nodes import packaged_image_models
from tpir_kedro.pipelines.predict import nodes as predict_nodes

SIZE_UM, SIZE_PX = 112.0, 32
CONTRASTIVE = {
    "regime": "frozen",
    "init": "imagenet",
    "max_steps": 15,
    "feature_views": 2,
    "batch_size": 16,
    "embed_dim": 16,
    "adapter_hidden": 32,
    "adapter_dim": 16,
    "progress_bar": False,
    "eval_batch_size": 64,
    "accelerator": "cpu",
    "channels_last": False,
}
VARIANTS = {
    "supervised": {"objective": "supervised"},
    "imagenet": {"objective": "none", "init": "imagenet"},
}
EVALUATION = {"probes": ["logistic"], "probe_Cs": [0.1, 1.0], "knn_k": 5}
PREDICT = {"batch_size": 64, "device": "cpu", "max_image_pixels": 10**9}


def _fold(name, held_out, slides, train, store, test=()):
    def rows(patients):
        keys = [f"{slides[p].name}:{s}" for p in patients for s in slides[p].spots["spot_id"]]
        return pd.Index(keys), store.rows(keys)

    def labels(patients):
        per_slide = [
            slides[p]
            .labels.reindex(slides[p].spots["spot_id"].astype(str))
            .fillna("unlabelled")
            .to_numpy(str)
            for p in patients
        ]
        return np.concatenate(per_slide) if per_slide else np.array([], str)

    train_obs, train_rows = rows(train)
    test_obs, test_rows = rows(test)
    train_labels = labels(train)
    patients = np.concatenate([np.full(len(slides[p].spots), p, dtype=object) for p in train])
    rng = np.random.default_rng(0)
    return FoldInputs(
        fold=name,
        held_out_patient=held_out,
        train_patients=list(train),
        train_obs=train_obs,
        test_obs=test_obs,
        train_rows=train_rows,
        test_rows=test_rows,
        train_patient_codes=np.array([list(train).index(p) for p in patients]),
        train_labels=train_labels,
        test_labels=labels(test),
        train_patient_names=patients,
        genes=["g0", "g1"],
        log_hvg=rng.random((len(train_rows), 2), dtype=np.float32),
        embeddings={},
        class_probs=None,
        top_genes=["g0", "g1"],
        train_top_expression=rng.random((len(train_rows), 2)),
        test_top_expression=rng.random((len(test_rows), 2)),
    )


@pytest.mark.slow
def test_predict_on_a_held_out_patient_reproduces_the_fold_evaluation(tmp_path):
    config = DemoCohortConfig(
        seed=5, n_patients=4, grid=(9, 9), expression=ExpressionConfig(n_genes=60, markers_per_class=5)
    )
    slides = {}
    for index in range(3):
        folder = tmp_path / "slides" / str(index)
        slide = simulate_held_out_slide(config, index)
        write_slide_folder(slide, folder)
        slides[slide.patient] = read_slide_folder(folder)
    assert list(slides) == ["E", "F", "G"]
    write_patch_store(
        TilingPlan(
            SIZE_UM,
            SIZE_PX,
            tuple(
                SectionTiles(
                    s.name,
                    p,
                    str(s.image_path),
                    s.um_per_px,
                    tuple(f"{s.name}:{i}" for i in s.spots["spot_id"]),
                    s.spots[["pixel_x", "pixel_y"]].to_numpy(float),
                )
                for p, s in slides.items()
            ),
        ),
        tmp_path / "patch_store",
    )
    store = PatchStore.open(tmp_path / "patch_store")
    inputs = {
        "holdout_E": _fold("holdout_E", "E", slides, ["F", "G"], store, test=["E"]),
        ALL_PATIENTS: _fold(ALL_PATIENTS, ALL_PATIENTS, slides, ["F", "G"], store),
    }
    checkpoints = tmp_path / "checkpoints"

    # The fold's cells, as the train pipeline runs them: train -> embed -> probes.
    embeddings, confusions, finals = {}, [], []
    for variant in VARIANTS:
        args = (store, checkpoints, CONTRASTIVE)
        trained, _ = cell_nodes.cell_image_model(
            inputs["holdout_E"], *args, VARIANTS, variant=variant, seed=0
        )
        embeddings[variant] = cell_nodes.cell_embeddings(trained, inputs["holdout_E"], *args, seed=0)
        _, confusion = cell_nodes.cell_probe_metrics(embeddings[variant], inputs["holdout_E"], EVALUATION)
        confusions.append(confusion)
        # The same model as a final cell's (same training data, same seed).
        final, _ = cell_nodes.cell_image_model(inputs[ALL_PATIENTS], *args, VARIANTS, variant=variant, seed=0)
        finals.append(cell_nodes.final_image_model(final, inputs[ALL_PATIENTS], *args, seed=0))
    confusion = cell_nodes.stacked_tables(*confusions)

    # Packaged as the final models are, saved and loaded the way predict loads them.
    packaged = packaged_image_models(
        cell_nodes.final_image_models(*finals),
        store,
        pd.DataFrame(columns=["variant"]),
        EVALUATION,
        VARIANTS,
        {"run_id": "t"},
    )
    version = tmp_path / "image_models" / "v1" / "image_models"
    for name, model in packaged.items():
        model.save(version / name)
    folders = PackagedModelFolders(version)

    slide = predict_nodes.slide_to_predict(slides["E"], PREDICT)
    n_train = len(inputs["holdout_E"].train_rows)
    for variant, space in (("supervised", "adapter"), ("imagenet", "backbone")):
        model = predict_nodes.predict_image_model(folders, {**PREDICT, "variant": variant})
        spots = predict_nodes.slide_spots(slide, model, PREDICT)
        plan = predict_nodes.slide_tiling_plan(slide, spots, model, PREDICT)
        write_patch_store(plan, tmp_path / f"slide_store_{variant}")
        slide_store = PatchStore.open(tmp_path / f"slide_store_{variant}")
        predicted = predict_nodes.slide_embeddings(slide_store, spots, model, PREDICT)

        # Same features: the fold's held-out rows are E's spots in slide order.
        evaluated = embeddings[variant].features[space][n_train:]
        assert predicted.obsm[predict_nodes.FEATURES_KEY].shape == evaluated.shape
        np.testing.assert_allclose(
            predicted.obsm[predict_nodes.FEATURES_KEY], evaluated, rtol=1e-4, atol=1e-4
        )

        # Same probe outputs: predict's class counts per true label equal the fold's confusion matrix.
        classes = predict_nodes.slide_predictions(predicted, model)
        truth = slides["E"].labels.reindex(classes["spot_id"].astype(str)).astype(str).to_numpy()
        scored = np.isin(truth, TISSUE_CLASSES)
        mine = (
            pd.DataFrame(
                {"true": truth[scored], "predicted": classes["predicted_class"].to_numpy(str)[scored]}
            )
            .value_counts()
            .rename("count")
        )
        fold = confusion[(confusion["variant"] == variant) & (confusion["space"] == space)]
        theirs = fold[fold["count"] > 0].set_index(["true", "predicted"])["count"].astype(int)
        pd.testing.assert_series_equal(
            mine.sort_index(), theirs.sort_index(), check_names=False, check_index_type=False
        )
        assert (
            predict_nodes.slide_prediction_summary(slide, classes, model)["patient_in_training_cohort"]
            is False
        )
