"""Tissue labels from expression alone: a gene-side teacher for spots no pathologist labelled.

On real HER2ST the sections with a full-resolution image (B4, C2-C6) carry no pathologist label,
while one other section of every patient does. The teacher is scANVI (patient as batch): fitted on
the teacher patients' spots -- their labelled sections with the pathologist's classes, their imaged
sections unlabelled -- it assigns every unlabelled spot its most probable class. An image classifier
trained on those labels has learnt tissue from expression only.

The held-out patients never reach a fit: :func:`teacher_spots` drops their spots before anything is
fitted, so neither their expression nor their labels shape the labels the image side learns from.

How noisy the teacher is, is measured the same way on the teacher patients' labelled sections:
each patient's labels hidden in turn, scANVI refitted from the same scVI, and that patient's
labelled spots scored against the pathologist (:func:`teacher_quality`). The scVI under it has seen
every teacher patient's expression (transductive, as the teacher itself is).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
from anndata import AnnData

from tpir_kedro.cohort.schema import UNLABELLED, is_classified, label_categorical
from tpir_kedro.evaluation.held_out_scores import held_out_scores

logger = logging.getLogger(__name__)

TEACHER = "scanvi"
BASE = "scvi"


def teacher_spots(cohort: AnnData, held_out: Sequence[str]) -> AnnData:
    """The spots a teacher may learn from: every patient's but ``held_out``'s (a copy)."""
    patients = cohort.obs["patient"].astype(str).to_numpy()
    return cohort[~np.isin(patients, [str(p) for p in held_out])].copy()


def _config(config, fit: list[str]):
    return replace(config, fit=tuple(fit))


def fit_teacher_base(teach: AnnData, genes: list[str], config) -> dict:
    """ScVI on the teacher spots: the base every scANVI of :func:`transfer_labels` and
    :func:`teacher_quality` starts from. ``config``: a :class:`~tpir_kedro.models.gene_vae.GeneVaeConfig`.
    """
    from tpir_kedro.models.gene_vae import fit_gene_encoders

    return fit_gene_encoders(teach, genes, _config(config, [BASE]))


def fit_teacher(teach: AnnData, genes: list[str], config, base: dict):
    """The teacher: scANVI from ``base``'s scVI, taught the pathologist's classes of ``teach``'s
    labelled spots (a :class:`~tpir_kedro.models.gene_encoder.GeneEncoder`).
    """
    from tpir_kedro.models.gene_vae import fit_gene_encoders

    return fit_gene_encoders(teach, genes, _config(config, [BASE, TEACHER]), fitted=base)[TEACHER]


def transfer_labels(teach: AnnData, teacher) -> pd.DataFrame:
    """A class for every unlabelled spot of ``teach`` (undetermined spots stay as they are).

    Parameters
    ----------
    teach
        :func:`teacher_spots` (n_spots, n_genes): labelled and unlabelled spots of the teacher patients.
    teacher
        :func:`fit_teacher`'s scANVI.

    Returns
    -------
    DataFrame indexed by the unlabelled spots' names: ``patient``, ``section``, ``label`` (the most
    probable class) and ``confidence`` (its probability).
    """
    labels = teach.obs["label"].astype(str).to_numpy()
    targets = teach[labels == UNLABELLED]
    proba = teacher.predict_proba(targets)
    return pd.DataFrame(
        {
            "patient": targets.obs["patient"].astype(str).to_numpy(),
            "section": targets.obs["section"].astype(str).to_numpy(),
            "label": proba.idxmax(axis=1).to_numpy(),
            "confidence": proba.max(axis=1).to_numpy(),
        },
        index=targets.obs_names,
    )


def teacher_quality(teach: AnnData, genes: list[str], config, base: dict) -> pd.DataFrame:
    """Leave-one-patient-out quality of the teacher on the teacher patients' labelled spots.

    For each teacher patient with labelled spots: its labels hidden, scANVI refitted from ``base``,
    its labelled spots predicted and scored (:func:`~tpir_kedro.evaluation.held_out_scores.held_out_scores`:
    accuracy, macro-F1, balanced accuracy over the classes present). One row per patient.
    """
    labels = teach.obs["label"].astype(str).to_numpy()
    patients = teach.obs["patient"].astype(str).to_numpy()
    rows = []
    for patient in sorted(set(patients[is_classified(labels)])):
        hidden = teach.copy()
        masked = labels.copy()
        masked[patients == patient] = UNLABELLED
        hidden.obs["label"] = label_categorical(masked)
        teacher = fit_teacher(hidden, genes, config, base)
        scored = (patients == patient) & is_classified(labels)
        predicted = teacher.predict_proba(teach[scored]).idxmax(axis=1).to_numpy()
        train_labels = masked[is_classified(masked)]
        rows.append(held_out_scores(patient, train_labels, labels[scored], predicted))
        logger.info("teacher quality, %s hidden: macro-F1 %.3f", patient, rows[-1]["macro_f1"])
    return pd.DataFrame(rows)
