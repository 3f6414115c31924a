"""Expression-only baselines the gene encoder is compared with: log-normalised PCA
(:class:`~tpir_kedro.cohort.log_expression.LogNormalisedPca`), and Harmony on it.

``harmony_embedding`` is transductive (see its docstring). numpy / harmonypy only.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


def harmony_embedding(pcs: np.ndarray, batch: np.ndarray, seed: int = 0, **harmony_kwargs) -> np.ndarray:
    """Harmony-corrected (n_spots, n_pcs) embedding of (n_spots, n_pcs) ``pcs`` with ``batch`` (n_spots,) as covariate.

    Harmony is transductive: it iteratively clusters and corrects exactly the spots it is given and
    has no map for a new spot. In a leave-one-patient-out fold it must therefore be run on the
    training *and* held-out patients' spots together, so the held-out patient's expression (never
    its labels) shapes the correction. Report it as such next to inductive models.

    One batch: nothing to correct, the input is returned unchanged (a copy) and a note is logged.
    ``harmony_kwargs`` go to ``harmonypy.run_harmony`` (theta, sigma, nclust, max_iter_harmony, ...);
    ``nclust`` defaults to harmonypy's min(n/30, 100), raised to at least 2 for tiny inputs.
    """
    pcs = np.asarray(pcs)
    batch = np.asarray(batch).astype(str)
    if pcs.ndim != 2 or len(batch) != pcs.shape[0]:
        raise ValueError(
            f"pcs must be (n_spots, n_pcs) with one batch value per spot; got {pcs.shape} and {batch.shape}"
        )
    n_batches = len(np.unique(batch))
    if n_batches < 2:
        logger.info(
            "Harmony skipped: a single batch (%s), the embedding is returned unchanged",
            batch[0] if len(batch) else "none",
        )
        return pcs.copy()
    import harmonypy  # imported here: it configures a DEBUG stream handler on its logger at import

    n = pcs.shape[0]
    harmony_kwargs.setdefault("nclust", max(2, int(min(round(n / 30.0), 100))))
    harmony_kwargs.setdefault("verbose", False)
    # pcs.T (n_pcs x n_spots): harmonypy guesses orientation from the shape; this one is unambiguous.
    result = harmonypy.run_harmony(
        np.ascontiguousarray(pcs.T, dtype=np.float64),
        pd.DataFrame({"batch": batch}),
        "batch",
        random_state=seed,
        **harmony_kwargs,
    )
    corrected = np.asarray(result.Z_corr)
    if corrected.shape != pcs.shape:  # older harmonypy returned (n_pcs, n_spots)
        corrected = corrected.T
    logger.info("Harmony: %d spots, %d batches, %d PCs", n, n_batches, pcs.shape[1])
    return corrected.astype(pcs.dtype if np.issubdtype(pcs.dtype, np.floating) else np.float64)
