"""Nodes of the ``gene_vae`` pipeline: batch-agnostic gene encoders per fold, and their scorecard.

Fold contract: for held-out patient P, the genes and every gene encoder of fold ``holdout_P`` are fitted on
the other patients only. ``all`` (every patient) is the final encoder users keep; its embeddings
are transductive and only ever feed the scorecard's mixing metrics and the UMAPs.

A fold's scANVI is not fitted when its training patients keep no label under ``gene_vae.scanvi_labels``
(:mod:`~tpir_kedro.cohort.label_budget`). Every table that expects it then says so: the fold's
``gene_label_transfer`` row (NaN metrics, ``status`` gives the reason), the scorecard's ``status``,
and ``cohort_gene_embeddings.uns["gene_embeddings"]["not_fitted"]`` for the all-patient fit.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from anndata import AnnData

from tpir_kedro.cohort.label_budget import (
    DEFAULT_LABEL_BUDGET,
    budgeted_labels,
    missing_labels_reason,
    unfitted_scanvi_reason,
)
from tpir_kedro.cohort.log_expression import LogNormalisedPca
from tpir_kedro.evaluation.embedding_metrics import (
    lopo_knn_transfer,
    majority_transfer,
    paired_fold_differences,
    scib_scores,
    summarise_transfer,
)
from tpir_kedro.evaluation.folds import ALL_PATIENTS, train_patients
from tpir_kedro.evaluation.gene_embedding_scores import robustness_index
from tpir_kedro.evaluation.patient_decodability import fold_patient_decodability
from tpir_kedro.evaluation.protocol import GeneScorecard
from tpir_kedro.models.expression_baselines import harmony_embedding
from tpir_kedro.models.gene_encoder import GeneEncoder
from tpir_kedro.models.gene_encoder_family import EncoderSpec
from tpir_kedro.models.gene_vae import GeneVaeConfig, fit_gene_encoders
from tpir_kedro.reporting.embedding_umaps import umap_coordinates, umap_grid

logger = logging.getLogger(__name__)

SCANVI_TRAINING_LABEL = "scanvi_training_label"  # obs column: the labels within the label budget
BASELINES = ("pca", "harmony")  # fitted here, not by gene_vae.fit
FITTED = "fitted"  # the ``status`` of a fold (or embedding) whose model exists


def _vae_settings(gene_vae: dict | None) -> tuple[GeneVaeConfig, int, str]:
    """(config, min_training_spots, scanvi_labels) from the ``gene_vae`` parameters."""
    params = dict(gene_vae or {})
    min_spots = int(params.pop("min_training_spots", 50))
    budget = str(params.pop("scanvi_labels", DEFAULT_LABEL_BUDGET))
    return GeneVaeConfig.from_dict(params), min_spots, budget


def _encoder_specs(gene_vae: dict | None) -> list[EncoderSpec]:
    """The gene encoders ``gene_vae.fit`` names, in fitting order (scVI and scANVI by default)."""
    return _vae_settings(gene_vae)[0].encoder_specs()


def _embedding_names(gene_vae: dict | None) -> list[str]:
    return [*BASELINES, *(s.name for s in _encoder_specs(gene_vae))]


def _fold_patients(cohort: AnnData, patient_folds: pd.DataFrame) -> dict[str, list[str]]:
    folds = {fold: train_patients(patient_folds, fold) for fold in patient_folds["fold"].unique()}
    folds[ALL_PATIENTS] = sorted(cohort.obs["patient"].astype(str).unique())
    return folds


def _spots_of(cohort: AnnData, patients: list[str]) -> AnnData:
    return cohort[cohort.obs["patient"].astype(str).isin(patients).to_numpy()]


def fold_gene_encoders(
    cohort: AnnData, patient_folds: pd.DataFrame, fold_genes: dict[str, list[str]], gene_vae: dict
) -> dict[str, dict[str, GeneEncoder]]:
    """The gene encoders ``gene_vae.fit`` names (scVI, and scANVI where labels exist, by default) per
    fold, on that fold's training patients and genes. scANVI learns from the labels ``gene_vae.scanvi_labels`` allows (:mod:`~tpir_kedro.cohort.label_budget`).
    """
    config, min_spots, budget = _vae_settings(gene_vae)
    # The labels within the budget, once: a new AnnData over the same arrays (the counts are not
    # copied) with one more obs column, of which each fold takes its view.
    labels = budgeted_labels(cohort.obs, budget)
    cohort = AnnData(
        X=cohort.X,
        obs=cohort.obs.assign(**{SCANVI_TRAINING_LABEL: labels}),
        var=cohort.var,
        layers=dict(cohort.layers),
    )
    encoders = {}
    for fold, patients in _fold_patients(cohort, patient_folds).items():
        training = _spots_of(cohort, patients)
        if training.n_obs < min_spots:
            raise ValueError(
                f"fold {fold}: only {training.n_obs} training spots (patients {patients}); "
                f"gene_vae.min_training_spots is {min_spots}"
            )
        logger.info(
            "gene_vae fold %s: fitting on %d spots of patients %s, %d genes",
            fold,
            training.n_obs,
            ",".join(patients),
            len(fold_genes[fold]),
        )
        why = missing_labels_reason(cohort.obs, patients, budget)
        if why:
            logger.warning("gene_vae fold %s: scANVI not fitted: %s", fold, why)
        encoders[fold] = fit_gene_encoders(
            training, fold_genes[fold], config, label_key=SCANVI_TRAINING_LABEL
        )
    return encoders


def _fold_embeddings(
    cohort, patient_folds, fold_genes, gene_encoders, n_pcs: int, seed: int, names: list[str]
) -> dict[str, dict[str, np.ndarray]]:
    """{embedding: {fold: (n_obs, d) embedding of every spot by that fold's fitted model}}."""
    out: dict[str, dict[str, np.ndarray]] = {name: {} for name in names}
    batch = cohort.obs["batch"].astype(str).to_numpy()
    for fold in patient_folds["fold"].unique():
        pca = LogNormalisedPca().fit(
            cohort, fold_genes[fold], train_patients(patient_folds, fold), n_pcs=n_pcs, seed=seed
        )
        out["pca"][fold] = pca.transform(cohort)
        out["harmony"][fold] = harmony_embedding(out["pca"][fold], batch, seed=seed)
        for name, encoder in gene_encoders[fold].items():
            if name in out:
                out[name][fold] = encoder.embed(cohort)
    return out


def _not_fitted(
    obs: pd.DataFrame, fold_patients: dict[str, list[str]], gene_encoders: dict, specs: list[EncoderSpec]
) -> dict:
    """{name: {fold: why}} for the gene encoders of ``gene_vae.fit`` a fold of ``fold_patients`` lacks."""
    out: dict[str, dict[str, str]] = {}
    for fold, patients in fold_patients.items():
        for spec in specs:
            if spec.name not in gene_encoders.get(fold, {}):
                out.setdefault(spec.name, {})[fold] = (
                    unfitted_scanvi_reason(obs, patients)
                    if spec.uses_labels
                    else f"not fitted: gene_encoders has no {spec.name} for this fold; re-run gene_vae"
                )
    return out


PROTOCOL = {
    "pca": "inductive: PCA fitted on the training patients",
    "harmony": "transductive: Harmony sees the held-out patient's expression, never its labels",
    "scvi": "inductive: {name} fitted on the training patients; held-out patient embedded by its encoder",
    "scanvi": "inductive: {name} fitted on the training patients and their labels",
    "sysvi": "inductive: {name} fitted on the training patients; held-out patient embedded as the "
    "mean over the training patients",
}


def _protocol(name: str, specs: list[EncoderSpec]) -> str:
    model = {s.name: s.model for s in specs}.get(name, name)
    return PROTOCOL.get(model, "training patients' most frequent class").format(name=name)


def lopo_label_transfer(
    cohort: AnnData,
    patient_folds: pd.DataFrame,
    fold_genes: dict[str, list[str]],
    gene_encoders: dict,
    gene_scorecard: dict,
    gene_vae: dict | None = None,
) -> pd.DataFrame:
    """Leave-one-patient-out kNN label transfer, one row per embedding x held-out patient, with the
    patient decodability of the fold's embedding on its training patients (what the image encoder
    of that fold is taught from; :func:`~tpir_kedro.evaluation.patient_decodability.fold_patient_decodability`).
    ``status``: ``fitted``, or why the fold's model was not (its metrics are then NaN).
    """
    scorecard = GeneScorecard.from_dict(gene_scorecard)
    specs = _encoder_specs(gene_vae)
    per_embedding = _fold_embeddings(
        cohort,
        patient_folds,
        fold_genes,
        gene_encoders,
        scorecard.n_pcs,
        scorecard.seed,
        _embedding_names(gene_vae),
    )
    not_fitted = _not_fitted(cohort.obs, _fold_patients(cohort, patient_folds), gene_encoders, specs)
    k = scorecard.knn_k
    tables = []
    for name, folds in per_embedding.items():
        why = not_fitted.get(name, {})
        table = lopo_knn_transfer(folds, cohort.obs, patient_folds, k=k, not_fitted=why).merge(
            fold_patient_decodability(folds, cohort.obs, patient_folds, seed=scorecard.seed), "left", "fold"
        )
        tables.append(table.assign(embedding=name, status=table["fold"].map(why).fillna(FITTED)))
    tables.append(majority_transfer(cohort.obs, patient_folds).assign(embedding="majority", status=FITTED))
    table = pd.concat(tables, ignore_index=True)
    table["protocol"] = table["embedding"].map(lambda name: _protocol(name, specs))
    return table[["embedding", *[c for c in table.columns if c != "embedding"]]]


def all_patient_embeddings(
    cohort: AnnData,
    fold_genes: dict[str, list[str]],
    gene_encoders: dict,
    gene_scorecard: dict,
    gene_vae: dict | None = None,
) -> AnnData:
    """The cohort with ``obsm`` X_pca, X_harmony and X_<name> of every fitted gene encoder (X_scvi,
    X_scanvi by default) from fits on every patient; ``uns["gene_embeddings"]["not_fitted"]``:
    {name: why} for an encoder the all-patient fit lacks.
    """
    scorecard = GeneScorecard.from_dict(gene_scorecard)
    n_pcs, seed = scorecard.n_pcs, scorecard.seed
    out = cohort.copy()
    patients = sorted(cohort.obs["patient"].astype(str).unique())
    out.obsm["X_pca"] = (
        LogNormalisedPca()
        .fit(cohort, fold_genes[ALL_PATIENTS], patients, n_pcs=n_pcs, seed=seed)
        .transform(cohort)
    )
    out.obsm["X_harmony"] = harmony_embedding(
        out.obsm["X_pca"], cohort.obs["batch"].astype(str).to_numpy(), seed=seed
    )
    specs = _encoder_specs(gene_vae)
    for name, encoder in gene_encoders[ALL_PATIENTS].items():
        out.obsm[f"X_{name}"] = encoder.embed(cohort)
        if name == "scanvi":
            proba = encoder.predict_proba(cohort)
            out.obsm["scanvi_class_probabilities"] = proba.to_numpy()
            out.uns["scanvi_classes"] = list(proba.columns)
    not_fitted = {
        kind: folds[ALL_PATIENTS]
        for kind, folds in _not_fitted(cohort.obs, {ALL_PATIENTS: patients}, gene_encoders, specs).items()
    }
    for kind, why in not_fitted.items():
        logger.warning("all-patient %s embedding %s", kind, why)
    out.uns["gene_embeddings"] = {
        "fit": "all patients (transductive: for mixing metrics and figures only)",
        "embeddings": [k for k in _embedding_names(gene_vae) if f"X_{k}" in out.obsm],
        "not_fitted": not_fitted,
    }
    return out


def gene_embedding_scorecard(
    cohort_embedded: AnnData,
    gene_label_transfer: pd.DataFrame,
    gene_encoders: dict,
    gene_scorecard: dict,
    gene_vae: dict | None = None,
) -> pd.DataFrame:
    """One row per embedding: scib-metrics on the all-patient fit + LOPO kNN transfer (+ majority),
    and the patient decodability of the fold fits on their training patients (mean over folds).

    An embedding whose model was not fitted in some fold (or in the all-patient fit) keeps its row:
    its means are over the folds it was fitted in (``n_folds``), ``n_folds_not_fitted`` counts the
    others and ``status`` says which and why (``fitted`` when none).
    """
    scorecard = GeneScorecard.from_dict(gene_scorecard)
    obs = cohort_embedded.obs
    not_fitted_all = dict(cohort_embedded.uns["gene_embeddings"].get("not_fitted", {}))
    rows = []
    baseline = gene_label_transfer[gene_label_transfer["embedding"] == "pca"]
    for name in [*_embedding_names(gene_vae), "majority"]:
        per_fold = gene_label_transfer[gene_label_transfer["embedding"] == name]
        row = {"embedding": name}
        if f"X_{name}" in cohort_embedded.obsm:
            row.update(
                scib_scores(
                    cohort_embedded.obsm[f"X_{name}"],
                    obs["batch"].astype(str).to_numpy(),
                    obs["label"].astype(str).to_numpy(),
                    n_neighbors=scorecard.n_neighbors,
                    seed=scorecard.seed,
                )
            )
            # do tissue or patient decide this fit's neighbourhoods? (scANVI: in-sample, it saw the labels)
            row["robustness_index"] = robustness_index(
                cohort_embedded.obsm[f"X_{name}"],
                obs["label"].astype(str).to_numpy(),
                obs["patient"].astype(str).to_numpy(),
                k=scorecard.robustness_k,
            )["robustness_index"]
        row.update(summarise_transfer(per_fold))
        if name != "majority":  # the fold fits' mean, comparable with the image side's check
            row["patient_decodability"] = float(per_fold["patient_decodability"].mean())
        if name not in ("pca", "majority"):
            diff = paired_fold_differences(per_fold, baseline, metric="macro_f1")
            row.update({f"vs_pca_{k}": v for k, v in diff.items()})
        if name not in (*BASELINES, "majority"):
            row["unseen_patient_max_abs_change"] = _unseen_patient_invariance(
                cohort_embedded, gene_encoders, name
            )
        row.update(_fit_status(per_fold, not_fitted_all.get(name)))
        rows.append(row)
    return pd.DataFrame(rows)


def _fit_status(per_fold: pd.DataFrame, all_patients_reason: str | None) -> dict:
    """``n_folds_not_fitted`` and ``status`` of one embedding's scorecard row, from its fold rows."""
    status = per_fold.get("status", pd.Series(FITTED, index=per_fold.index)).astype(str)
    missing = per_fold[status != FITTED]
    parts = [f"{fold} {why}" for fold, why in zip(missing["fold"], status[status != FITTED], strict=True)]
    if all_patients_reason:
        parts.append(f"{ALL_PATIENTS} {all_patients_reason}")
    return {"n_folds_not_fitted": len(missing), "status": "; ".join(parts) or FITTED}


def _unseen_patient_invariance(cohort: AnnData, gene_encoders: dict, kind: str) -> float:
    """Largest change of a held-out patient's embedding over the batch labels it could be given
    (NaN when no fold has a ``kind`` encoder: nothing to measure, not a perfect score).
    """
    worst = float("nan")
    for fold, encoders in gene_encoders.items():
        if fold == ALL_PATIENTS or kind not in encoders:
            continue
        held_out = fold.removeprefix("holdout_")
        spots = cohort[cohort.obs["patient"].astype(str).to_numpy() == held_out]
        change = encoders[kind].batch_invariance(spots)
        worst = change if np.isnan(worst) else max(worst, change)
    return worst


def gene_embedding_umaps(cohort_embedded: AnnData, gene_scorecard: dict) -> tuple[go.Figure, go.Figure]:
    """UMAPs of every embedding, coloured by patient and by label (all-patient fits)."""
    seed = GeneScorecard.from_dict(gene_scorecard).seed
    coords = {
        name: umap_coordinates(cohort_embedded.obsm[f"X_{name}"], seed=seed)
        for name in cohort_embedded.uns["gene_embeddings"]["embeddings"]
    }
    by_patient = umap_grid(
        coords, cohort_embedded.obs["patient"], "Gene embeddings by patient (mixing wanted)"
    )
    by_label = umap_grid(
        coords,
        cohort_embedded.obs["label"],
        "Gene embeddings by tissue label (separation wanted)",
        by_label=True,
    )
    return by_patient, by_label
