"""The in-memory cohort format every reader produces and every later stage consumes.

One AnnData per cohort (spots x genes):

- ``layers["counts"]``: raw integer counts, CSR, int32. ``X`` is left empty on purpose: every
  transformation (normalisation, log, scaling) is fitted per fold later, never stored here.
- ``obs``: ``patient``, ``section``, ``spot_id`` (``"{x}x{y}"``), ``label`` (categorical: the six
  tissue classes, ``undetermined`` and ``unlabelled``), ``array_x``/``array_y`` (int),
  ``pixel_x``/``pixel_y`` (float, in the section image's full-resolution frame), ``has_image``,
  ``um_per_px`` (of the section image; NaN when neither an image nor metadata gives it).
- ``obsm["spatial"]``: ``pixel_x, pixel_y`` as an (n_spots, 2) float array.
- ``var_names``: gene symbols, unique.
- ``uns["sections"]``: per section, what the reader found and decided (image path, µm/px and
  where it came from, spots dropped and why).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

TISSUE_CLASSES: tuple[str, ...] = (
    "invasive cancer",
    "cancer in situ",
    "immune infiltrate",
    "breast glands",
    "connective tissue",
    "adipose tissue",
)
# Both are "no class" for training and evaluation; they are kept apart because a pathologist
# looking and not deciding is different information from nobody looking.
UNDETERMINED = "undetermined"
UNLABELLED = "unlabelled"
LABEL_CATEGORIES: tuple[str, ...] = (*TISSUE_CLASSES, UNDETERMINED, UNLABELLED)

OBS_COLUMNS: tuple[str, ...] = (
    "patient",
    "section",
    "spot_id",
    "label",
    "array_x",
    "array_y",
    "pixel_x",
    "pixel_y",
    "has_image",
    "um_per_px",
)
COUNTS_LAYER = "counts"
SPATIAL_KEY = "spatial"


def spot_id(x: int, y: int) -> str:
    return f"{int(x)}x{int(y)}"


def label_categorical(values) -> pd.Categorical:
    return pd.Categorical(values, categories=list(LABEL_CATEGORIES))


def is_classified(labels) -> np.ndarray:
    """True where a spot carries one of the tissue classes (not undetermined, not unlabelled)."""
    return np.isin(np.asarray(labels, dtype=object), TISSUE_CLASSES)


def validate_cohort(adata) -> None:
    """Raise ``ValueError`` naming what is missing when ``adata`` is not in the cohort format."""
    missing = [c for c in OBS_COLUMNS if c not in adata.obs.columns]
    if missing:
        raise ValueError(f"cohort AnnData lacks obs columns {missing}")
    if COUNTS_LAYER not in adata.layers:
        raise ValueError(f"cohort AnnData lacks layers[{COUNTS_LAYER!r}] with raw counts")
    if SPATIAL_KEY not in adata.obsm:
        raise ValueError(f"cohort AnnData lacks obsm[{SPATIAL_KEY!r}]")
    if not adata.var_names.is_unique:
        raise ValueError("cohort AnnData has duplicated gene symbols in var_names")
    if not adata.obs_names.is_unique:
        raise ValueError("cohort AnnData has duplicated spot names (obs_names)")
    unknown = set(adata.obs["label"].astype(str)) - set(LABEL_CATEGORIES)
    if unknown:
        raise ValueError(f"cohort AnnData has unknown labels {sorted(unknown)}")
    counts = adata.layers[COUNTS_LAYER]
    data = counts.data if sp.issparse(counts) else np.asarray(counts)
    if data.size and (data.min() < 0 or not np.issubdtype(data.dtype, np.integer)):
        raise ValueError("cohort layers['counts'] must hold non-negative integers")
