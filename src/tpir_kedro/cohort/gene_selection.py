"""Gene QC and highly variable genes, fitted on a given set of patients only.

Everything here takes the patients to fit on, so each leave-one-patient-out fold selects its genes
from its training patients: the held-out patient's expression never shapes its fold's gene set.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable

import numpy as np
import scanpy as sc
from anndata import AnnData

from tpir_kedro.cohort.schema import COUNTS_LAYER

logger = logging.getLogger(__name__)


# seurat_v3 fits a loess of log variance on log mean per batch. A batch in which many genes are
# barely detected (a strong patient effect pushes them to a few counts) has many tied points, and
# the loess at scanpy's span 0.3 can fail as near-singular -- scikit-misc says "near singularities"
# or, when the fit's matrix is numerically singular, reports its "reciprocal condition number" --;
# a wider span smooths over the ties.
LOESS_SPANS = (0.3, 0.6, 1.0)
_NEAR_SINGULAR = ("singular", "reciprocal condition number")


def _seurat_v3(work: AnnData, n_top: int, batch_key: str | None, patients: list[str]) -> None:
    for span in LOESS_SPANS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=UserWarning)
                sc.pp.highly_variable_genes(
                    work, n_top_genes=n_top, flavor="seurat_v3", batch_key=batch_key, span=span
                )
            return
        except ValueError as exc:
            if not any(sign in str(exc) for sign in _NEAR_SINGULAR) or span == LOESS_SPANS[-1]:
                raise
            logger.warning(
                "highly variable genes of patients %s: seurat_v3's loess is near-singular at span %s (%s); "
                "retrying with a wider span",
                ",".join(patients),
                span,
                exc,
            )


def select_genes(
    cohort: AnnData,
    patients: Iterable[str],
    n_top_genes: int = 2000,
    min_spot_fraction: float = 0.01,
    exclude_patterns: Iterable[str] = (),
    batch_key: str = "patient",
) -> list[str]:
    """Highly variable genes of ``patients`` (scanpy ``seurat_v3`` on raw counts, batch-aware).

    Gene QC first: a gene must be detected in >= ``min_spot_fraction`` of those patients' spots and
    not match ``exclude_patterns`` (regexes, e.g. mitochondrial). Returns symbols, most variable first.
    """
    patients = sorted(set(map(str, patients)))
    in_fit = cohort.obs["patient"].astype(str).isin(patients).to_numpy()
    if not in_fit.any():
        raise ValueError(f"no spots of patients {patients} in the cohort")
    fit = cohort[in_fit]
    counts = fit.layers[COUNTS_LAYER]
    detected = np.asarray((counts > 0).mean(axis=0)).ravel()
    excluded = np.array([any(re.search(p, g) for p in exclude_patterns) for g in fit.var_names], dtype=bool)
    passing = (detected >= min_spot_fraction) & ~excluded
    if passing.sum() == 0:
        raise ValueError(f"no gene passes QC on patients {patients} (min_spot_fraction={min_spot_fraction})")
    work = AnnData(X=counts[:, passing].astype(np.float32), obs=fit.obs[[batch_key]].astype(str).copy())
    work.var_names = fit.var_names[passing]
    n_top = min(n_top_genes, work.n_vars)
    use_batch = batch_key if work.obs[batch_key].nunique() > 1 else None
    _seurat_v3(work, n_top, use_batch, patients)
    ranked = work.var[work.var["highly_variable"]]
    order = ["highly_variable_nbatches", "highly_variable_rank"] if use_batch else ["highly_variable_rank"]
    ascending = [False, True] if use_batch else [True]
    genes = ranked.sort_values(order, ascending=ascending).index.tolist()
    logger.info(
        "genes for patients %s: %d pass QC (of %d), %d highly variable",
        ",".join(patients),
        int(passing.sum()),
        cohort.n_vars,
        len(genes),
    )
    return genes
