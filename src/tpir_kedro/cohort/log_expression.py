"""Log-normalised expression and its PCA: the expression transforms every stage shares.

``log_normalise`` is log1p(CP10k), as scanpy's ``normalize_total`` + ``log1p``. ``LogNormalisedPca``
is inductive and honours the fold contract: it is fitted on the spots of a fold's training patients
only, then projects any spot (the held-out patient's included) with the frozen gene means, scales
and loadings. Here, in ``cohort/``, because the raw batch-effect measurement, the gene-side
baselines and the fold inputs all use them and imports point down the data flow. numpy /
scikit-learn only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from sklearn.decomposition import PCA

from tpir_kedro.cohort.schema import COUNTS_LAYER

logger = logging.getLogger(__name__)

TARGET_SUM = 1e4  # counts per 10k (CP10k), as scanpy's normalize_total(target_sum=1e4)


def log_normalise(
    counts, gene_idx: Sequence[int] | np.ndarray | None = None, target_sum: float = TARGET_SUM
) -> sp.csr_matrix:
    """log1p(CP10k) of raw counts, optionally restricted to some genes afterwards.

    Parameters
    ----------
    counts
        (n_spots, n_genes) raw counts, sparse or dense.
    gene_idx
        column indices to keep; the library size is still each spot's total over *all*
        ``n_genes`` columns (scanpy order: normalise, then subset to selected genes).
    target_sum
        counts each spot is scaled to before the log.

    Returns
    -------
        (n_spots, len(gene_idx) or n_genes) float32 CSR. A spot with no counts stays all zero.
    """
    counts = sp.csr_matrix(counts)
    totals = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    factor = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    sub = counts if gene_idx is None else counts[:, np.asarray(gene_idx, dtype=np.intp)]
    out = sp.csr_matrix(sp.diags(factor) @ sub.astype(np.float64))
    out.data = np.log1p(out.data)
    return out.astype(np.float32)


def gene_indices(var_names: Iterable[str], genes: Iterable[str]) -> np.ndarray:
    """Column index of each of ``genes`` in ``var_names``; ValueError naming the genes that are missing."""
    position = pd.Index(list(var_names))
    genes = list(genes)
    if not genes:
        raise ValueError("no genes given")
    if len(set(genes)) != len(genes):
        raise ValueError("genes contain duplicates")
    idx = position.get_indexer(genes)
    missing = [g for g, i in zip(genes, idx) if i < 0]
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
        raise ValueError(f"{len(missing)} of {len(genes)} genes are not in the cohort: {shown}")
    return idx


class LogNormalisedPca:
    """log1p(CP10k) -> per-gene standardisation -> PCA, fitted on some patients, applied to any spot.

    The standardisation (gene mean and sd, ddof=1, sd 0 -> 1) and the loadings are learned from the
    fitting patients' spots only, so a held-out patient never shapes its fold's embedding.
    Standardised values are clipped to +-``max_value`` (as ``sc.pp.scale(max_value=10)``); this
    also bounds an unseen patient's extreme genes. PCA is ARPACK with ``random_state=seed``
    (scanpy's default for dense data), so a seed gives the same components.

    Fitted attributes: ``genes_`` (list, n_genes), ``patients_`` (sorted list), ``mean_`` and
    ``scale_`` ((n_genes,) float64), ``pca_`` (the sklearn PCA), ``n_components_`` (int),
    ``explained_variance_ratio_`` ((n_components_,)), ``n_fit_spots_`` (int).
    """

    def __init__(self, max_value: float | None = 10.0):
        self.max_value = max_value

    def fit(
        self, cohort: AnnData, genes: Sequence[str], patients: Iterable[str], n_pcs: int = 30, seed: int = 0
    ) -> LogNormalisedPca:
        """Fit on the spots of ``patients`` (obs ``patient``) over ``genes`` of ``cohort.layers['counts']``.

        ``n_pcs`` is lowered to min(n_fit_spots, n_genes) - 1 when larger (ARPACK needs that), with a
        logged warning; ``n_components_`` holds what was used. Raises ValueError for genes missing
        from the cohort, patients with no spot, or fewer than two spots / genes.
        """
        idx = gene_indices(cohort.var_names, genes)
        patients = sorted({str(p) for p in patients})
        in_fit = cohort.obs["patient"].astype(str).isin(patients).to_numpy()
        absent = sorted(set(patients) - set(cohort.obs["patient"].astype(str)))
        if absent:
            raise ValueError(f"patient(s) {absent} have no spot in the cohort")
        n_fit = int(in_fit.sum())
        n_max = min(n_fit, len(idx)) - 1
        if n_max < 1:
            raise ValueError(
                f"PCA needs at least two spots and two genes; got {n_fit} spots and {len(idx)} genes"
            )
        if n_pcs > n_max:
            logger.warning("n_pcs=%d lowered to %d (%d spots, %d genes)", n_pcs, n_max, n_fit, len(idx))
            n_pcs = n_max

        x = log_normalise(cohort.layers[COUNTS_LAYER][in_fit], idx).toarray()
        mean = x.mean(axis=0, dtype=np.float64)
        var = x.var(axis=0, dtype=np.float64, ddof=1) if n_fit > 1 else np.zeros(len(idx))
        scale = np.sqrt(var)
        scale[scale == 0] = 1.0  # a constant gene contributes 0, not NaN
        self.genes_ = [str(g) for g in genes]
        self.patients_ = patients
        self.mean_, self.scale_ = mean, scale
        self.n_fit_spots_ = n_fit
        self.pca_ = PCA(n_components=int(n_pcs), svd_solver="arpack", random_state=seed).fit(
            self._standardise(x)
        )
        self.n_components_ = int(n_pcs)
        self.explained_variance_ratio_ = self.pca_.explained_variance_ratio_
        logger.info(
            "log-normalised PCA: %d PCs on %d spots x %d genes of patients %s (%.1f%% variance)",
            n_pcs,
            n_fit,
            len(idx),
            ",".join(patients),
            100 * float(self.explained_variance_ratio_.sum()),
        )
        return self

    def transform(self, cohort: AnnData) -> np.ndarray:
        """(cohort.n_obs, n_components_) float32 embedding of every spot of ``cohort``, fitted patients or not.

        Each spot is projected on its own (its library size is its total over all the cohort's
        genes), so the result for a spot does not depend on which other spots are passed.
        """
        if not hasattr(self, "pca_"):
            raise RuntimeError("LogNormalisedPca is not fitted: call fit() first")
        idx = gene_indices(cohort.var_names, self.genes_)
        x = log_normalise(cohort.layers[COUNTS_LAYER], idx).toarray()
        return self.pca_.transform(self._standardise(x)).astype(np.float32)

    def fit_transform(
        self, cohort: AnnData, genes: Sequence[str], patients: Iterable[str], n_pcs: int = 30, seed: int = 0
    ) -> np.ndarray:
        """``fit`` on ``patients`` then ``transform`` every spot of ``cohort``: (n_obs, n_components_)."""
        return self.fit(cohort, genes, patients, n_pcs, seed).transform(cohort)

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean_) / self.scale_).astype(np.float32)
        if self.max_value is not None:
            np.clip(z, -self.max_value, self.max_value, out=z)
        return z
