"""The label budget: by default scANVI learns only from labels `supervised` can use too (spots with a
patch); `all` gives it every label. Checked on the spot table and on what the gene_vae node fits."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tpir_kedro.cohort.label_budget import budgeted_labels
from tpir_kedro.pipelines.evaluation.nodes import results_table
from tpir_kedro.pipelines.gene_vae import nodes as gene_vae_nodes

OBS = pd.DataFrame(
    {
        "label": ["invasive cancer", "stroma", "undetermined", "stroma", "unlabelled", "breast glands"],
        "has_image": [True, True, True, False, False, False],
        "patient": ["A", "A", "A", "B", "B", "B"],
        "batch": ["A", "A", "A", "B", "B", "B"],
    },
    index=[f"s{i}" for i in range(6)],
)


def test_imageless_spots_lose_their_label_unless_the_budget_is_all():
    kept = budgeted_labels(OBS)
    assert kept.tolist() == [
        "invasive cancer",
        "stroma",
        "undetermined",
        "unlabelled",
        "unlabelled",
        "unlabelled",
    ]
    assert budgeted_labels(OBS, "all").tolist() == OBS["label"].tolist()
    with pytest.raises(ValueError, match="unknown label budget 'some'"):
        budgeted_labels(OBS, "some")


@pytest.mark.parametrize("budget, expected", [(None, 2), ("image_spots", 2), ("all", 4)])
def test_the_gene_vae_node_fits_scanvi_on_the_labels_of_its_budget(monkeypatch, budget, expected):
    cohort = ad.AnnData(X=sp.csr_matrix(np.ones((6, 3))), obs=OBS.copy())
    cohort.layers["counts"] = cohort.X.copy()
    seen = {}

    def fake_fit(training, genes, config, batch_key="batch", label_key="label"):
        seen[tuple(sorted(training.obs["patient"].unique()))] = training.obs[label_key].tolist()
        return {}

    monkeypatch.setattr(gene_vae_nodes, "fit_gene_encoders", fake_fit)
    folds = pd.DataFrame(
        {"fold": ["holdout_A", "holdout_A"], "patient": ["A", "B"], "role": ["test", "train"]}
    )
    params = {"min_training_spots": 1, **({} if budget is None else {"scanvi_labels": budget})}
    gene_vae_nodes.fold_gene_encoders(cohort, folds, {"holdout_A": ["g0"], "all": ["g0"]}, params)
    labels = seen[("A", "B")]  # the all-patient fit
    assert sum(label in ("invasive cancer", "stroma", "breast glands") for label in labels) == expected
    assert "stroma" not in seen[("B",)] or budget == "all"  # B's only labels are imageless


def test_results_say_which_labels_scanvi_learnt_from():
    probes = pd.DataFrame(
        {
            "variant": ["clip"],
            "held_out_patient": ["B"],
            "seed": [0],
            "probe": ["logistic"],
            "space": ["adapter"],
            "macro_f1": [0.5],
        }
    )
    empty = pd.DataFrame()
    assert results_table(probes, empty, {"run_id": "r"})["scanvi_labels"].tolist() == ["image_spots"]
    info = {"run_id": "r", "parameters": {"gene_vae": {"scanvi_labels": "all"}}}
    assert results_table(probes, empty, info)["scanvi_labels"].tolist() == ["all"]
