"""Spot quality control: drop spots with too few counts or genes, per section, and say so."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from anndata import AnnData

from tpir_kedro.cohort.errors import CohortInputError
from tpir_kedro.cohort.schema import COUNTS_LAYER

logger = logging.getLogger(__name__)


def filter_spots(cohort: AnnData, min_counts: int = 0, min_genes: int = 0) -> tuple[AnnData, pd.DataFrame]:
    """Keep spots with >= ``min_counts`` total counts and >= ``min_genes`` detected genes.

    Returns the filtered cohort and a per-section report. A section left with no spot is an
    error naming it: a whole section failing QC means the thresholds or the file are wrong.
    """
    counts = cohort.layers[COUNTS_LAYER]
    total = np.asarray(counts.sum(axis=1)).ravel()
    detected = np.asarray((counts > 0).sum(axis=1)).ravel()
    low_counts = total < min_counts
    low_genes = detected < min_genes
    keep = ~(low_counts | low_genes)
    frame = pd.DataFrame(
        {
            "section": cohort.obs["section"].astype(str).to_numpy(),
            "keep": keep,
            "low_counts": low_counts,
            "low_genes": low_genes,
        }
    )
    report = frame.groupby("section", sort=True).agg(
        n_spots=("keep", "size"),
        n_kept=("keep", "sum"),
        n_low_counts=("low_counts", "sum"),
        n_low_genes=("low_genes", "sum"),
    )
    report.insert(
        0,
        "patient",
        cohort.obs.groupby("section", observed=True)["patient"].first().astype(str).reindex(report.index),
    )
    empty = report.index[report["n_kept"] == 0]
    if len(empty):
        name = str(empty[0])
        raise CohortInputError(
            f"no spots left after QC (min_counts={min_counts}, min_genes={min_genes}; "
            f"median counts per spot here: {np.median(total[frame['section'] == name]):.0f})",
            section=name,
            path=cohort.uns["sections"][name].get("counts_path"),
        )
    dropped = int((~keep).sum())
    logger.info(
        "spot QC: kept %d of %d spots (min_counts=%d, min_genes=%d)",
        int(keep.sum()),
        len(keep),
        min_counts,
        min_genes,
    )
    if dropped:
        for name, row in report[report["n_kept"] < report["n_spots"]].iterrows():
            logger.info(
                "spot QC: section %s dropped %d of %d spots",
                name,
                row["n_spots"] - row["n_kept"],
                row["n_spots"],
            )
    return cohort[keep].copy(), report.reset_index()


def add_batch_labels(cohort: AnnData, batch_key: str = "patient") -> AnnData:
    """``obs["batch"]``: the covariate the batch-agnostic gene encoder removes (patient by default)."""
    if batch_key not in cohort.obs.columns:
        raise ValueError(
            f"batch_key {batch_key!r} is not an obs column; choose one of {list(cohort.obs.columns)}"
        )
    out = cohort.copy()
    out.obs["batch"] = out.obs[batch_key].astype(str).astype("category")
    out.uns["batch_key"] = batch_key
    return out
