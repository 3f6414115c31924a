"""The arrays one fold's image training and evaluation see, built under the fold contract.

For held-out patient P: the gene inputs (log-normalised fold genes, scVI/scANVI embeddings by the
fold's encoders, scANVI class probabilities), the labels and the top genes all come from the
training patients; P contributes its patches (to embed) and, for scoring only, its labels and the
observed expression of the fold's top genes. Spots of sections without an image train the gene
encoders upstream but are skipped here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from tpir_kedro.cohort.log_expression import gene_indices, log_normalise
from tpir_kedro.cohort.schema import COUNTS_LAYER, TISSUE_CLASSES
from tpir_kedro.evaluation.folds import ALL_PATIENTS, train_patients
from tpir_kedro.imaging.patch_store import PatchStore
from tpir_kedro.models.gene_encoder import GeneEncoder

logger = logging.getLogger(__name__)


@dataclass
class FoldInputs:
    """Row-aligned arrays of one fold. ``train_*``: training patients' spots with a patch;
    ``test_*``: the held-out patient's spots with a patch (empty for the all-patient fold).
    """

    fold: str
    held_out_patient: str | None
    train_patients: list[str]
    train_obs: pd.Index
    test_obs: pd.Index
    train_rows: np.ndarray  # (n_train,) patch-store rows
    test_rows: np.ndarray  # (n_test,)
    train_patient_codes: np.ndarray  # (n_train,) int64
    train_labels: np.ndarray  # (n_train,) str, cohort labels (classes, undetermined, unlabelled)
    test_labels: np.ndarray  # (n_test,) str -- scoring only
    train_patient_names: np.ndarray  # (n_train,) str
    genes: list[str]  # the fold's highly variable genes (training patients), most variable first
    log_hvg: np.ndarray  # (n_train, n_genes) float32 log-normalised expression
    embeddings: dict[str, np.ndarray]  # kind -> (n_train, n_latent) frozen scVI/scANVI posterior means
    class_probs: np.ndarray | None  # (n_train, len(TISSUE_CLASSES)) scANVI soft labels
    top_genes: list[str]  # the top-k of ``genes``: the expression-prediction targets
    train_top_expression: np.ndarray  # (n_train, k) log-normalised
    test_top_expression: np.ndarray  # (n_test, k) log-normalised -- scoring only

    @property
    def train_label_codes(self) -> np.ndarray:
        """(n_train,) int64: index in TISSUE_CLASSES, -1 for undetermined / unlabelled."""
        lookup = {c: i for i, c in enumerate(TISSUE_CLASSES)}
        return np.array([lookup.get(str(label), -1) for label in self.train_labels], dtype=np.int64)


def check_patch_store(cohort: AnnData, store: PatchStore) -> None:
    """The store must hold exactly the cohort's spots that have an image (one tiling of this cohort)."""
    with_image = cohort.obs_names[cohort.obs["has_image"].astype(bool).to_numpy()]
    missing = with_image.difference(store.index.index)
    extra = store.index.index.difference(cohort.obs_names)
    if len(missing) or len(extra):
        raise ValueError(
            f"patch store {store.path} does not match the cohort: {len(missing)} spot(s) with an image have no patch "
            f"(e.g. {list(missing[:3])}), {len(extra)} patch(es) belong to no cohort spot (e.g. {list(extra[:3])}); "
            "re-run the data_engineering pipeline so both come from the same run"
        )


def check_gene_encoders(fold: str, genes: list[str], encoders: dict[str, GeneEncoder]) -> None:
    for kind, encoder in encoders.items():
        if list(encoder.genes) != list(genes):
            extra = sorted(set(encoder.genes) - set(genes))[:3]
            lacking = sorted(set(genes) - set(encoder.genes))[:3]
            raise ValueError(
                f"the {kind} gene encoder of fold {fold} was trained on {len(encoder.genes)} genes that do not match "
                f"the fold's {len(genes)} genes (only in the encoder: {extra}, only in the fold: {lacking}); "
                "re-run gene_vae so encoders and gene sets come from the same run"
            )


def _skip_imageless(cohort: AnnData, patients: list[str]) -> None:
    obs = cohort.obs[cohort.obs["patient"].astype(str).isin(patients)]
    without = obs.loc[~obs["has_image"].astype(bool), "section"].astype(str)
    for section, n in without.value_counts().sort_index().items():
        logger.info(
            "section %s has no image: its %d spots train the gene encoder only, not the image encoder",
            section,
            n,
        )


def build_fold_inputs(
    cohort: AnnData,
    store: PatchStore,
    patient_folds: pd.DataFrame,
    fold_genes: dict[str, list[str]],
    gene_encoders: dict[str, dict[str, GeneEncoder]],
    fold: str,
    n_top_genes: int = 50,
) -> FoldInputs:
    patient = cohort.obs["patient"].astype(str)
    if fold == ALL_PATIENTS:
        train, held_out = sorted(patient.unique()), None
    else:
        train = train_patients(patient_folds, fold)
        held_out = str(
            patient_folds.loc[
                (patient_folds["fold"] == fold) & (patient_folds["role"] == "test"), "patient"
            ].iloc[0]
        )
    if fold not in fold_genes or fold not in gene_encoders:
        raise KeyError(
            f"fold {fold!r} has no gene set or gene encoders (have {sorted(fold_genes)} / {sorted(gene_encoders)})"
        )
    genes = list(fold_genes[fold])
    check_gene_encoders(fold, genes, gene_encoders[fold])
    has_image = cohort.obs["has_image"].astype(bool).to_numpy()
    train_mask = patient.isin(train).to_numpy() & has_image
    test_mask = (patient == held_out).to_numpy() & has_image if held_out else np.zeros(cohort.n_obs, bool)
    _skip_imageless(cohort, train)
    training = cohort[train_mask]
    counts = cohort.layers[COUNTS_LAYER]
    top = genes[:n_top_genes]
    log_hvg = np.asarray(
        log_normalise(counts[train_mask], gene_indices(cohort.var_names, genes)).todense(), dtype=np.float32
    )
    top_idx = gene_indices(cohort.var_names, top)
    embeddings = {kind: enc.embed(training).astype(np.float32) for kind, enc in gene_encoders[fold].items()}
    probs = None
    if "scanvi" in gene_encoders[fold] and training.n_obs:
        proba = gene_encoders[fold]["scanvi"].predict_proba(training)
        probs = proba.reindex(columns=list(TISSUE_CLASSES), fill_value=0.0).to_numpy(np.float32)
    codes = {p: i for i, p in enumerate(train)}
    return FoldInputs(
        fold=fold,
        held_out_patient=held_out,
        train_patients=list(train),
        train_obs=cohort.obs_names[train_mask],
        test_obs=cohort.obs_names[test_mask],
        train_rows=store.rows(cohort.obs_names[train_mask]),
        test_rows=store.rows(cohort.obs_names[test_mask]),
        train_patient_codes=np.array([codes[p] for p in patient[train_mask]], dtype=np.int64),
        train_labels=cohort.obs["label"].astype(str).to_numpy()[train_mask],
        test_labels=cohort.obs["label"].astype(str).to_numpy()[test_mask],
        train_patient_names=patient.to_numpy()[train_mask],
        genes=genes,
        log_hvg=log_hvg,
        embeddings=embeddings,
        class_probs=probs,
        top_genes=top,
        train_top_expression=np.asarray(
            log_normalise(counts[train_mask], top_idx).todense(), dtype=np.float32
        ),
        test_top_expression=np.asarray(log_normalise(counts[test_mask], top_idx).todense(), dtype=np.float32),
    )
