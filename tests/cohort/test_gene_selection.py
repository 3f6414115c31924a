"""Gene QC + HVGs are a function of the patients given: a held-out patient cannot shape them."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from tpir_kedro.cohort.gene_selection import select_genes
from tpir_kedro.cohort.sources import Her2stDirectory


@pytest.fixture(scope="module")
def cohort(tiny_demo_dir):
    return Her2stDirectory(tiny_demo_dir).read()


def test_held_out_patient_expression_does_not_change_the_fold_gene_set(cohort):
    genes = select_genes(cohort, ["A", "B"], n_top_genes=40)
    scrambled = cohort.copy()
    is_c = (scrambled.obs["patient"] == "C").to_numpy()
    counts = scrambled.layers["counts"].toarray()
    rng = np.random.default_rng(0)
    counts[is_c] = rng.poisson(50, size=(is_c.sum(), counts.shape[1]))
    scrambled.layers["counts"] = sp.csr_matrix(counts.astype(np.int32))
    assert select_genes(scrambled, ["A", "B"], n_top_genes=40) == genes
    # ...while fitting on all patients does see C, so the test above could fail.
    assert select_genes(scrambled, ["A", "B", "C"], n_top_genes=40) != select_genes(
        cohort, ["A", "B", "C"], n_top_genes=40
    )


def test_gene_qc_and_exclusions(cohort):
    genes = select_genes(cohort, ["A", "B", "C"], n_top_genes=1000, exclude_patterns=["^DEMO000"])
    assert len(genes) == len(set(genes)) <= cohort.n_vars
    assert not any(g.startswith("DEMO000") for g in genes)
    with pytest.raises(ValueError, match="no gene passes QC"):
        select_genes(cohort, ["A"], min_spot_fraction=1.01)
    with pytest.raises(ValueError, match="no spots of patients"):
        select_genes(cohort, ["Z"])
