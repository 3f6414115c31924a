"""A cell's scores and the evaluation nodes: a fold without any labelled patch (the real HER2ST image
sections), both expression protocols, the patient-decodability check."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from tpir_kedro.evaluation.fold_embeddings import FoldEmbeddings
from tpir_kedro.evaluation.fold_inputs import FoldInputs
from tpir_kedro.pipelines.contrastive.nodes import (
    cell_expression_prediction,
    cell_patient_decodability,
    cell_probe_metrics,
    stacked_tables,
)
from tpir_kedro.pipelines.evaluation.nodes import results_summary, results_table

EVALUATION = {"probes": ["logistic", "knn"], "probe_Cs": [0.1, 1.0], "knn_k": 3, "expression_k": 3}


def _unlabelled_fold(rng, n_train=12, n_test=6, k=4) -> FoldInputs:
    return FoldInputs(
        fold="holdout_B",
        held_out_patient="B",
        train_patients=["C"],
        train_obs=pd.Index([f"c{i}" for i in range(n_train)]),
        test_obs=pd.Index([f"b{i}" for i in range(n_test)]),
        train_rows=np.arange(n_train),
        test_rows=np.arange(n_train, n_train + n_test),
        train_patient_codes=np.zeros(n_train, np.int64),
        train_labels=np.full(n_train, "unlabelled"),
        test_labels=np.full(n_test, "unlabelled"),
        train_patient_names=np.full(n_train, "C"),
        genes=[f"g{i}" for i in range(k)],
        log_hvg=rng.random((n_train, k), dtype=np.float32),
        embeddings={},
        class_probs=None,
        top_genes=[f"g{i}" for i in range(k)],
        train_top_expression=rng.random((n_train, k)),
        test_top_expression=rng.random((n_test, k)),
    )


def test_a_fold_without_labels_gives_expression_rows_only_and_csv_safe_tables(tmp_path):
    rng = np.random.default_rng(0)
    inputs = _unlabelled_fold(rng)
    emb = FoldEmbeddings(
        "imagenet", "holdout_B", 0, {"backbone": rng.random((18, 8))}, None, None, 0.0, "untrained"
    )
    metrics, confusion = cell_probe_metrics(emb, inputs, EVALUATION)
    assert metrics.empty and "macro_f1" in metrics.columns and confusion.empty
    path = tmp_path / "probe_metrics.csv"
    metrics.to_csv(path, index=False)
    reloaded = pd.read_csv(path)  # an empty table still has its header
    expression = cell_expression_prediction(emb, inputs, EVALUATION)
    assert list(expression["protocol"]) == ["retrieval", "ridge"]
    assert list(expression["space"]) == ["backbone", "backbone"]
    assert np.isfinite(expression["pearson_r_top50"]).all()
    table = results_table(reloaded, expression, {"run_id": "r1"})
    assert (
        list(table["probe"]) == ["retrieval", "ridge"]
        and list(table["space"]) == ["backbone", "backbone"]
        and table["macro_f1"].isna().all()
        and table["run_id"].eq("r1").all()
    )


def _emb(variant, fold, features, joint=None):
    image_joint, gene_joint = joint if joint else (None, None)
    return FoldEmbeddings(variant, fold, 0, features, image_joint, gene_joint, 0.0, "untrained")


def test_every_variant_is_scored_under_both_protocols_and_paired_with_imagenet_per_protocol():
    rng = np.random.default_rng(1)
    n_train, n_test, k = 12, 6, 4
    inputs, emb = {}, {}
    for fold, patient in (("holdout_B", "B"), ("holdout_C", "C")):
        fold_inputs = _unlabelled_fold(rng, n_train, n_test, k)
        fold_inputs.fold, fold_inputs.held_out_patient = fold, patient
        inputs[fold] = fold_inputs
        expression = np.concatenate([fold_inputs.train_top_expression, fold_inputs.test_top_expression])
        # imagenet sees noise; clip's adapter carries the expression itself: it must predict better.
        emb[f"imagenet/{fold}/0"] = _emb("imagenet", fold, {"backbone": rng.normal(size=(18, 8))})
        emb[f"clip/{fold}/0"] = _emb(
            "clip",
            fold,
            {"backbone": rng.normal(size=(18, 8)), "adapter": expression + 0.01 * rng.normal(size=(18, k))},
            joint=(expression[n_train:], fold_inputs.train_top_expression),
        )
    expression = stacked_tables(
        *(
            cell_expression_prediction(e, inputs[e.fold], {**EVALUATION, "ridge_components": 4})
            for e in emb.values()
        )
    )
    clip = expression[expression["variant"] == "clip"].set_index(["fold", "protocol", "space"])
    # retrieval in the joint space; ridge on each space the probes read.
    assert set(clip.index) == {
        (f, p, s)
        for f in inputs
        for p, s in (("retrieval", "joint"), ("ridge", "backbone"), ("ridge", "adapter"))
    }
    assert (clip.xs(("ridge", "adapter"), level=("protocol", "space"))["pearson_r_top50"] > 0.9).all()
    summary = results_summary(results_table(pd.DataFrame(), expression, {})).set_index(
        ["variant", "space", "probe"]
    )
    ridge = summary.loc[("clip", "adapter", "ridge")]
    assert ridge["n_folds"] == 2 and ridge["pearson_r_diff_vs_imagenet_n_folds_ahead"] == 2
    assert ridge["pearson_r_diff_vs_imagenet_mean"] == pytest.approx(
        ridge["pearson_r_top50_mean"] - summary.loc[("imagenet", "backbone", "ridge"), "pearson_r_top50_mean"]
    )
    # Classification columns stay empty on expression rows: nothing is paired on a macro-F1 there.
    assert "macro_f1_diff_vs_imagenet_mean" not in summary.columns
    with pytest.raises(ValueError, match="unknown"):
        cell_expression_prediction(
            emb["clip/holdout_B/0"], inputs["holdout_B"], {**EVALUATION, "expression_protocols": ["lasso"]}
        )


def test_patient_decodability_rows_read_the_training_patients_of_each_model():
    rng = np.random.default_rng(1)
    n_train, n_test = 240, 10
    patients = np.repeat(["A", "C", "D"], 80)
    labels = np.tile(["invasive cancer", "immune infiltrate", "adipose tissue", "connective tissue"], 60)
    inputs = dataclasses.replace(
        _unlabelled_fold(rng, n_train, n_test),
        train_patients=["A", "C", "D"],
        train_patient_names=patients,
        train_patient_codes=np.searchsorted(["A", "C", "D"], patients),
        train_labels=labels,
    )
    tissue = rng.normal(size=(4, 8))[np.unique(labels, return_inverse=True)[1]]
    offset = 2.0 * rng.normal(size=(3, 8))[np.searchsorted(["A", "C", "D"], patients)]
    noise = rng.normal(size=(n_train + n_test, 8))
    held_out = rng.normal(50.0, 1.0, (n_test, 8))  # nothing of the held-out patient may enter

    def emb(name, train):
        features = np.vstack([train, held_out]) + noise
        return FoldEmbeddings(name, "holdout_B", 0, {"adapter": features}, None, None, 0.0, name)

    table = stacked_tables(
        cell_patient_decodability(emb("tissue", tissue), inputs),
        cell_patient_decodability(emb("patient", tissue + offset), inputs),
    )
    by = table.set_index("variant")
    assert list(table.columns[:4]) == ["variant", "space", "fold", "seed"] and len(table) == 2
    assert np.allclose(table["chance"], 1 / 3) and (table["n_spots"] == n_train).all()
    assert by.loc["tissue", "accuracy"] < 1 / 3 + 0.15 < 0.9 < by.loc["patient", "accuracy"]
    # The neighbourhoods say the same: tissue decides them in one model, the patient in the other.
    assert by.loc["patient", "robustness_index"] < 0.3 < 0.7 < by.loc["tissue", "robustness_index"]


def test_a_skipped_cell_scores_nothing_but_keeps_every_header():
    inputs = _unlabelled_fold(np.random.default_rng(2))
    metrics, confusion = cell_probe_metrics(None, inputs, EVALUATION)
    tables = [metrics, confusion, cell_expression_prediction(None, inputs, EVALUATION)]
    tables.append(cell_patient_decodability(None, inputs))
    assert all(t.empty and len(t.columns) >= 5 for t in tables)
    assert stacked_tables(metrics, metrics).columns.equals(metrics.columns)
