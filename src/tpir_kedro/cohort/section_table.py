"""Turning one section's parsed tables into the cohort format (shared by every reader)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from tpir_kedro.cohort.errors import CohortInputError
from tpir_kedro.cohort.schema import COUNTS_LAYER, SPATIAL_KEY, label_categorical


def integer_counts(frame: pd.DataFrame, *, path, section: str) -> sp.csr_matrix:
    """Check a spots x genes table holds non-negative integer counts; return it as CSR int32."""
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise CohortInputError(
            f"counts are not numeric in {len(non_numeric)} gene column(s), e.g. {non_numeric[:3]}",
            path=path,
            section=section,
        )
    values = frame.to_numpy(dtype=np.float64, copy=False)
    bad = ~np.isfinite(values) | (values < 0) | (values != np.round(values))
    if bad.any():
        spot_i, gene_i = np.argwhere(bad)[0]
        raise CohortInputError(
            f"{int(bad.sum())} count value(s) are negative, non-integer or missing, e.g. "
            f"spot {frame.index[spot_i]!r}, gene {frame.columns[gene_i]!r}: {values[spot_i, gene_i]!r}; "
            "raw integer UMI/read counts are required",
            path=path,
            section=section,
        )
    if values.max(initial=0) > np.iinfo(np.int32).max:
        raise CohortInputError("counts exceed the int32 range", path=path, section=section)
    return sp.csr_matrix(values.astype(np.int32))


def section_anndata(
    counts: sp.csr_matrix,
    genes: pd.Index,
    obs: pd.DataFrame,
    section_report: dict,
) -> AnnData:
    """Assemble one section. ``obs`` must carry every cohort column; its index becomes obs_names."""
    obs = obs.copy()
    obs["label"] = label_categorical(obs["label"])
    adata = AnnData(
        X=None,
        obs=obs,
        var=pd.DataFrame(index=pd.Index(genes, name=None).astype(str)),
        layers={COUNTS_LAYER: counts},
    )
    adata.obsm[SPATIAL_KEY] = obs[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64)
    adata.uns["sections"] = {str(obs["section"].iloc[0]) if len(obs) else "": section_report}
    return adata


def sum_duplicate_genes(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Merge columns that share a gene symbol by summing them (counts are additive)."""
    duplicated = frame.columns.duplicated(keep=False)
    if not duplicated.any():
        return frame, 0
    n_dup = int(frame.columns.duplicated().sum())
    merged = frame.T.groupby(level=0, sort=False).sum().T
    return merged, n_dup
