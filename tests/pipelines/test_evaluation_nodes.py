"""Evaluation nodes on a fold without any labelled patch (the real HER2ST image sections)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tpir_kedro.pipelines.contrastive.fold_inputs import FoldInputs
from tpir_kedro.pipelines.contrastive.nodes import FoldEmbeddings
from tpir_kedro.pipelines.evaluation.nodes import expression_prediction_results, probe_results, results_table

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
    inputs = {"holdout_B": _unlabelled_fold(rng)}
    emb = {
        "imagenet/holdout_B/0": FoldEmbeddings(
            "imagenet", "holdout_B", 0, {"backbone": rng.random((18, 8))}, None, None, 0.0, "untrained"
        )
    }
    metrics, confusion = probe_results(emb, inputs, EVALUATION)
    assert metrics.empty and "macro_f1" in metrics.columns and confusion.empty
    path = tmp_path / "probe_metrics.csv"
    metrics.to_csv(path, index=False)
    reloaded = pd.read_csv(path)  # an empty table still has its header
    expression = expression_prediction_results(emb, inputs, EVALUATION)
    assert list(expression["space"]) == ["backbone"] and np.isfinite(expression["pearson_r_top50"]).all()
    table = results_table(reloaded, expression, {"run_id": "r1"})
    assert (
        list(table["probe"]) == ["none"]
        and list(table["space"]) == ["backbone"]
        and table["macro_f1"].isna().all()
        and table["run_id"].eq("r1").all()
    )
