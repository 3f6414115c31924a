"""Joining sections into one cohort: the genes every section measured, spots of all sections."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import anndata as ad
from anndata import AnnData

from tpir_kedro.cohort.schema import label_categorical, validate_cohort

logger = logging.getLogger(__name__)
S = TypeVar("S")


def read_sections_parallel(
    read: Callable[[S], AnnData], sections: Sequence[S], n_jobs: int = 1
) -> list[AnnData]:
    """Read sections independently; threads suffice since parsing is gzip/C-bound."""
    if n_jobs <= 1 or len(sections) <= 1:
        return [read(s) for s in sections]
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        return list(pool.map(read, sections))


def concat_sections(sections: Sequence[AnnData]) -> AnnData:
    """Concatenate sections on the genes they share; log (and record) what each one lost."""
    if not sections:
        raise ValueError("no sections to assemble a cohort from")
    shared = sections[0].var_names
    for s in sections[1:]:
        shared = shared.intersection(s.var_names, sort=False)
    reports = {}
    for s in sections:
        ((name, report),) = s.uns["sections"].items()
        report = dict(report, n_genes_dropped_not_shared=int(s.n_vars - len(shared)))
        reports[name] = report
    union = set().union(*(set(s.var_names) for s in sections))
    logger.info(
        "cohort: %d sections, %d spots, %d genes shared by all sections (%d genes measured in only some dropped)",
        len(sections),
        sum(s.n_obs for s in sections),
        len(shared),
        len(union) - len(shared),
    )
    cohort = ad.concat([s[:, shared] for s in sections], join="inner", merge="same")
    # AnnData drops unused categories when subsetting; restore the full, ordered label set.
    cohort.obs["label"] = label_categorical(cohort.obs["label"].astype(str))
    for column in ("patient", "section"):
        cohort.obs[column] = cohort.obs[column].astype("category")
    cohort.uns["sections"] = reports
    validate_cohort(cohort)
    return cohort
