"""What is read off one trained fold model (one grid cell), and the fold's majority floor.

Each function takes a cell's :class:`~tpir_kedro.evaluation.fold_embeddings.FoldEmbeddings` (None
when the variant was skipped in that fold) and the fold's
:class:`~tpir_kedro.evaluation.fold_inputs.FoldInputs`, and returns rows with a fixed header (empty
tables included: a CSV without columns cannot be read back), so the grid's collectors only stack.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from tpir_kedro.cohort.schema import is_classified
from tpir_kedro.evaluation.expression_prediction import expression_prediction_score
from tpir_kedro.evaluation.expression_ridge import ridge_expression_score
from tpir_kedro.evaluation.fold_embeddings import FoldEmbeddings
from tpir_kedro.evaluation.fold_inputs import FoldInputs
from tpir_kedro.evaluation.gene_embedding_scores import robustness_index
from tpir_kedro.evaluation.patient_decodability import patient_decodability
from tpir_kedro.evaluation.probes import (
    CONFUSION_COLUMNS,
    MAJORITY,
    PROBE_COLUMNS,
    evaluate_probes,
    majority_rows,
)
from tpir_kedro.evaluation.protocol import EvaluationProtocol

logger = logging.getLogger(__name__)

CELL_KEYS = ["variant", "space", "fold", "seed"]
PROBE_METRIC_COLUMNS = [*PROBE_COLUMNS, *CELL_KEYS]
CONFUSION_MATRIX_COLUMNS = [*CONFUSION_COLUMNS, *CELL_KEYS]
NO_SPACE = "none"  # the majority row reads no representation
EXPRESSION_COLUMNS = [
    "variant",
    "fold",
    "seed",
    "held_out_patient",
    "protocol",
    "space",
    "pearson_r_top50",
    "pearson_r_median",
    "n_genes",
    "n_genes_constant",
]
DECODABILITY_COLUMNS = [
    *CELL_KEYS,
    "accuracy",
    "chance",
    "n_spots",
    "n_patients",
    "n_classes",
    "robustness_index",
]


def fold_labels(inputs: FoldInputs) -> tuple[np.ndarray, np.ndarray]:
    """(n_train + n_test,) labels and patients, training spots first (the FoldEmbeddings order)."""
    labels = np.concatenate([inputs.train_labels, inputs.test_labels])
    patients = np.concatenate(
        [inputs.train_patient_names, np.full(len(inputs.test_labels), inputs.held_out_patient, dtype=object)]
    )
    return labels.astype(str), patients.astype(str)


def probe_scores(
    emb: FoldEmbeddings | None, inputs: FoldInputs, protocol: EvaluationProtocol
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Probe metrics (one row per space x probe) and long-format confusion matrices of one cell.
    Every representation space the model has is probed alike.
    """
    rows, confusions = [], []
    labels, patients = fold_labels(inputs)
    if emb is not None and not is_classified(labels).any():
        logger.info(
            "fold %s has no classified spot with an image: no probe rows (expression prediction only)",
            inputs.fold,
        )
    elif emb is not None:
        for space, features in emb.features.items():
            probe_rows, confusion = evaluate_probes(
                features,
                labels,
                patients,
                inputs.held_out_patient,
                probes=protocol.probes,
                Cs=protocol.probe_Cs,
                k=protocol.knn_k,
                seed=emb.seed,
            )
            extra = {"variant": emb.variant, "space": space, "fold": emb.fold, "seed": emb.seed}
            rows += [{**r, **extra} for r in probe_rows]
            confusions.append(confusion.assign(**extra))
    confusions = [c for c in confusions if not c.empty]
    confusion = (
        pd.concat(confusions, ignore_index=True)[CONFUSION_MATRIX_COLUMNS]
        if confusions
        else pd.DataFrame(columns=CONFUSION_MATRIX_COLUMNS)
    )
    return pd.DataFrame(rows, columns=PROBE_METRIC_COLUMNS), confusion


def majority_scores(inputs: FoldInputs) -> pd.DataFrame:
    """The fold's class-prior floor: the training patients' most frequent class for every spot."""
    labels, patients = fold_labels(inputs)
    rows = []
    if is_classified(labels).any():
        rows = [
            {**r, "variant": MAJORITY, "space": NO_SPACE, "fold": inputs.fold, "seed": np.nan}
            for r in majority_rows(labels, patients, inputs.held_out_patient)
        ]
    return pd.DataFrame(rows, columns=PROBE_METRIC_COLUMNS)


def decodability_scores(emb: FoldEmbeddings | None, inputs: FoldInputs) -> pd.DataFrame:
    """Per space: cross-validated accuracy of decoding the patient from the representation of the
    fold's training patients' classified spots, classes balanced across patients (chance
    1 / n_training_patients), and the neighbourhood robustness index of the same spots (the gene
    side's :func:`~tpir_kedro.evaluation.gene_embedding_scores.robustness_index`, default k: does
    tissue or patient decide a spot's neighbours?). The held-out patient never enters.
    """
    rows = []
    if emb is not None:
        n_train = len(inputs.train_labels)
        for space, features in emb.features.items():
            train = (features[:n_train], inputs.train_labels, inputs.train_patient_names)
            score = patient_decodability(*train, seed=emb.seed)
            robustness = robustness_index(*train)["robustness_index"]
            rows.append(
                {
                    "variant": emb.variant,
                    "space": space,
                    "fold": emb.fold,
                    "seed": emb.seed,
                    **score,
                    "robustness_index": robustness,
                }
            )
    return pd.DataFrame(rows, columns=DECODABILITY_COLUMNS)


def expression_scores(
    emb: FoldEmbeddings | None, inputs: FoldInputs, protocol: EvaluationProtocol
) -> pd.DataFrame:
    """Held-out spots' expression of the fold's top genes predicted from their image, under each
    protocol of ``evaluation.expression_protocols`` (a ``protocol`` column):

    - ``retrieval`` (BLEEP): the mean expression of the top-k training spots nearest in the joint
      space (contrastive variants: image embedding vs the training spots' gene-side embeddings), or
      in the model's own representation for variants without a gene side;
    - ``ridge`` (HEST-Benchmark): every representation space the probes read, standardised -> PCA ->
      ridge, all fitted on the training spots (:mod:`~tpir_kedro.evaluation.expression_ridge`).
    """
    if emb is None or len(inputs.test_rows) == 0:
        return pd.DataFrame(columns=EXPRESSION_COLUMNS)
    n_train = len(inputs.train_rows)
    scored = []
    if "retrieval" in protocol.expression_protocols:
        if emb.image_joint is not None:
            query, reference, space = emb.image_joint, emb.gene_joint, "joint"
        else:
            features = emb.features[emb.primary_space]
            query, reference, space = features[n_train:], features[:n_train], emb.primary_space
        score = expression_prediction_score(
            query,
            reference,
            inputs.train_top_expression,
            inputs.test_top_expression,
            inputs.top_genes,
            k=protocol.expression_k,
        )
        scored.append(("retrieval", space, score))
    if "ridge" in protocol.expression_protocols:
        for space, features in emb.features.items():
            score = ridge_expression_score(
                features[:n_train],
                inputs.train_top_expression,
                features[n_train:],
                inputs.test_top_expression,
                inputs.top_genes,
                n_components=protocol.ridge_components,
                alpha_scale=protocol.ridge_alpha_scale,
                seed=emb.seed,
            )
            scored.append(("ridge", space, score))
    rows = [
        {
            "variant": emb.variant,
            "fold": emb.fold,
            "seed": emb.seed,
            "held_out_patient": inputs.held_out_patient,
            "protocol": name,
            "space": space,
            "pearson_r_top50": score["pearson_r_mean"],
            "pearson_r_median": score["pearson_r_median"],
            "n_genes": score["n_genes"],
            "n_genes_constant": score["n_genes_constant"],
        }
        for name, space, score in scored
    ]
    return pd.DataFrame(rows, columns=EXPRESSION_COLUMNS)
