"""Nodes of the ``evaluation`` pipeline: the patient-held-out protocol of docs/METHOD.md.

Per variant x held-out patient x seed: frozen features -> standardised (training patients) ->
L2 logistic probe (C by inner leave-one-patient-out) and cosine kNN, trained on the training
patients' classified spots, scored on the held-out patient; BLEEP's expression prediction
(Pearson r over the fold's top genes); a majority row; paired differences against ``imagenet``.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tpir_kedro.cohort.schema import is_classified
from tpir_kedro.evaluation.expression_prediction import expression_prediction_score
from tpir_kedro.evaluation.folds import ALL_PATIENTS
from tpir_kedro.evaluation.probes import PROBE_COLUMNS, evaluate_probes, fit_logistic_probe, majority_rows
from tpir_kedro.imaging.patch_store import PatchStore
from tpir_kedro.models.packaged_model import LinearProbe, PackagedImageModel
from tpir_kedro.pipelines.contrastive.fold_inputs import FoldInputs
from tpir_kedro.pipelines.contrastive.nodes import FoldEmbeddings

logger = logging.getLogger(__name__)

RESULT_COLUMNS = ["variant", "held_out_patient", "probe", "accuracy", "macro_f1", "balanced_accuracy", "pearson_r_top50"]
BASELINE = "imagenet"
METRICS = ["accuracy", "macro_f1", "balanced_accuracy", "pearson_r_top50"]


def _fold_labels(inputs: FoldInputs) -> tuple[np.ndarray, np.ndarray]:
    labels = np.concatenate([inputs.train_labels, inputs.test_labels])
    patients = np.concatenate([inputs.train_patient_names, np.full(len(inputs.test_labels), inputs.held_out_patient, dtype=object)])
    return labels.astype(str), patients.astype(str)


def probe_results(fold_image_embeddings: dict[str, FoldEmbeddings], contrastive_inputs: dict[str, FoldInputs], evaluation: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Probe metrics (one row per variant x fold x seed x probe, plus ``majority`` per fold) and
    long-format confusion matrices."""
    rows, confusions = [], []
    for emb in fold_image_embeddings.values():
        inputs = contrastive_inputs[emb.fold]
        labels, patients = _fold_labels(inputs)
        if not is_classified(labels).any():
            logger.info("fold %s has no classified spot with an image: no probe rows (expression prediction only)", emb.fold)
            continue
        probe_rows, confusion = evaluate_probes(
            emb.features, labels, patients, inputs.held_out_patient, probes=tuple(evaluation["probes"]),
            Cs=tuple(evaluation["probe_Cs"]), k=int(evaluation["knn_k"]), seed=emb.seed,
        )
        extra = {"variant": emb.variant, "fold": emb.fold, "seed": emb.seed}
        rows += [{**r, **extra} for r in probe_rows]
        confusions.append(confusion.assign(**extra))
    for fold, inputs in contrastive_inputs.items():
        if fold == ALL_PATIENTS:
            continue
        labels, patients = _fold_labels(inputs)
        if is_classified(labels).any():
            rows += [{**r, "variant": "majority", "fold": fold, "seed": np.nan} for r in majority_rows(labels, patients, inputs.held_out_patient)]
    # Headers even when empty (no labelled patch anywhere): a CSV without columns cannot be read back.
    metrics = pd.DataFrame(rows, columns=[*PROBE_COLUMNS, "variant", "fold", "seed"])
    confusion = pd.concat(confusions, ignore_index=True) if confusions else pd.DataFrame(columns=["probe", "held_out_patient", "true", "predicted", "count", "variant", "fold", "seed"])
    return metrics, confusion


def expression_prediction_results(fold_image_embeddings: dict[str, FoldEmbeddings], contrastive_inputs: dict[str, FoldInputs], evaluation: dict) -> pd.DataFrame:
    """Held-out spots' expression of the fold's top genes predicted from their image: the mean of
    the top-k training spots nearest in the joint space (contrastive variants: image embedding vs
    gene-side embeddings) or in image-feature space (baselines without a gene side)."""
    rows = []
    k = int(evaluation["expression_k"])
    for emb in fold_image_embeddings.values():
        inputs = contrastive_inputs[emb.fold]
        n_train = len(inputs.train_rows)
        if len(inputs.test_rows) == 0:
            continue
        if emb.image_joint is not None:
            query, reference, space = emb.image_joint, emb.gene_joint, "joint"
        else:
            query, reference, space = emb.features[n_train:], emb.features[:n_train], "image"
        score = expression_prediction_score(query, reference, inputs.train_top_expression, inputs.test_top_expression, inputs.top_genes, k=k)
        rows.append({
            "variant": emb.variant, "fold": emb.fold, "seed": emb.seed, "held_out_patient": inputs.held_out_patient, "space": space,
            "pearson_r_top50": score["pearson_r_mean"], "pearson_r_median": score["pearson_r_median"],
            "n_genes": score["n_genes"], "n_genes_constant": score["n_genes_constant"],
        })
    columns = ["variant", "fold", "seed", "held_out_patient", "space", "pearson_r_top50", "pearson_r_median", "n_genes", "n_genes_constant"]
    return pd.DataFrame(rows, columns=columns)


def results_table(probe_metrics: pd.DataFrame, expression_metrics: pd.DataFrame, run_info: dict) -> pd.DataFrame:
    """One row per variant x held-out patient x seed x probe. A fold without labels (real HER2ST
    image sections) gets one ``probe = none`` row carrying its expression-prediction Pearson r."""
    keys = ["variant", "held_out_patient", "seed"]
    expr = expression_metrics[keys + ["pearson_r_top50"]] if not expression_metrics.empty else pd.DataFrame(columns=keys + ["pearson_r_top50"])
    probes = probe_metrics if not probe_metrics.empty else pd.DataFrame(columns=keys + ["probe"])
    table = probes.merge(expr, on=keys, how="outer")
    table["probe"] = table["probe"].fillna("none")
    table["run_id"] = run_info.get("run_id")
    extra = [c for c in ("seed", "classes_absent", "chosen_C", "n_train", "n_test", "fold", "run_id") if c in table.columns]
    for c in RESULT_COLUMNS:
        if c not in table.columns:
            table[c] = np.nan
    return table[RESULT_COLUMNS + extra].sort_values(["variant", "held_out_patient", "probe", "seed"], kind="stable").reset_index(drop=True)


def results_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over held-out patients and seeds, per variant x probe, with paired per-fold
    differences against the ``imagenet`` baseline (same fold, seed and probe)."""
    grouped = results.groupby(["variant", "probe"], dropna=False)
    summary = grouped[METRICS].agg(["mean", "std"])
    summary.columns = [f"{m}_{s}" for m, s in summary.columns]
    summary["n_folds"] = grouped["held_out_patient"].nunique()
    summary["n_rows"] = grouped.size()
    summary = summary.reset_index()
    base = results[results["variant"] == BASELINE].set_index(["held_out_patient", "seed", "probe"])
    diffs = []
    for (variant, probe), group in results.groupby(["variant", "probe"]):
        if variant == BASELINE or base.empty:
            continue
        g = group.set_index(["held_out_patient", "seed", "probe"])
        if variant == "majority":  # the floor has no seed: pair it with every imagenet seed
            g = group.drop(columns="seed").merge(base.reset_index()[["held_out_patient", "seed", "probe"]], on=["held_out_patient", "probe"]).set_index(["held_out_patient", "seed", "probe"])
        paired = g[["macro_f1"]].join(base[["macro_f1"]], rsuffix="_base", how="inner").dropna()
        if paired.empty:
            continue
        d = paired["macro_f1"] - paired["macro_f1_base"]
        diffs.append({"variant": variant, "probe": probe, "macro_f1_diff_vs_imagenet_mean": d.mean(), "macro_f1_diff_vs_imagenet_sd": d.std(), "n_pairs": len(d), "n_better_than_imagenet": int((d > 0).sum())})
    if diffs:
        summary = summary.merge(pd.DataFrame(diffs), on=["variant", "probe"], how="left")
    return summary


def results_figure(results_summary: pd.DataFrame) -> go.Figure:
    """Macro-F1 per variant and probe (mean ± sd over held-out patients and seeds) beside the
    expression-prediction Pearson r."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Patch classification, held-out patients (macro-F1)", "Expression prediction (Pearson r, top genes)"))
    for probe, group in results_summary[results_summary["probe"] != "none"].groupby("probe"):
        fig.add_bar(x=group["variant"], y=group["macro_f1_mean"], error_y={"type": "data", "array": group["macro_f1_std"].fillna(0)}, name=f"{probe} probe", row=1, col=1)
    expr = results_summary.dropna(subset=["pearson_r_top50_mean"]).drop_duplicates("variant")
    fig.add_bar(x=expr["variant"], y=expr["pearson_r_top50_mean"], error_y={"type": "data", "array": expr["pearson_r_top50_std"].fillna(0)}, name="Pearson r", row=1, col=2)
    fig.update_layout(barmode="group", template="plotly_white", height=450)
    return fig


def _card(name: str, model: dict, inputs: FoldInputs, store: PatchStore, summary: pd.DataFrame, variants: dict, run_info: dict, probe: LinearProbe | None) -> dict:
    trained, config = model["trained"], model["config"]
    rows = summary[summary["variant"] == name].drop(columns="variant")
    lopo = rows.astype(object).where(rows.notna(), None).to_dict(orient="records")  # JSON has no NaN
    section_scale = {s: v.get("um_per_px") for s, v in store.meta.get("sections", {}).items()} if isinstance(store.meta.get("sections"), dict) else {}
    return {
        "variant": name,
        "description": (variants.get(name) or {}).get("description", ""),
        "objective": trained.variant.objective,
        "gene_input": trained.variant.gene_input,
        "loss": trained.variant.loss,
        "loss_params": trained.variant.loss_params,
        "backbone": trained.encoder.backbone,
        "init": trained.variant.init or config.init,
        "feature_dim": trained.encoder.feature_dim,
        "classes": probe.classes if probe else [],
        "patch_size_um": store.size_um,
        "patch_size_px": store.size_px,
        "um_per_px_of_training_slides": section_scale,
        "normalisation": {"mean": list(trained.encoder.mean), "std": list(trained.encoder.std), "input": "RGB uint8 / 255, then (x - mean) / std"},
        "training_cohort": {"patients": inputs.train_patients, "n_spots_with_patch": len(inputs.train_obs), "n_labelled": int((inputs.train_label_codes >= 0).sum())},
        "training": {"config": config.to_dict(), "seed": model["seed"], "seconds": round(trained.seconds, 1), "fingerprint": trained.fingerprint},
        "lopo_metrics": lopo,
        "run_id": run_info.get("run_id"),
        "limits": (
            "Trained on the patients above only; patches must be cut at the same physical size "
            f"({store.size_um} µm -> {store.size_px} px) and H&E stained. LOPO metrics are from models trained "
            "without the scored patient; this final model saw every patient. Demo runs use a simulated cohort."
        ),
    }


def packaged_image_models(
    final_image_models: dict, contrastive_inputs: dict[str, FoldInputs], patch_store: PatchStore, results_summary: pd.DataFrame, evaluation: dict, variants: dict, run_info: dict
) -> dict[str, PackagedImageModel]:
    """Each final (all-patient) encoder with a probe fitted on every patient's classified spots
    (C by leave-one-patient-out) and its model card."""
    if not final_image_models:
        return {}
    inputs = contrastive_inputs[ALL_PATIENTS]
    labelled = is_classified(inputs.train_labels)
    packaged = {}
    for name, model in final_image_models.items():
        probe = None
        if labelled.sum() and len(set(inputs.train_labels[labelled])) >= 2:
            fitted = fit_logistic_probe(model["features"][labelled], inputs.train_labels[labelled], inputs.train_patient_names[labelled], Cs=tuple(evaluation["probe_Cs"]), seed=model["seed"])
            scaler, logistic = fitted.pipeline.steps[0][1], fitted.pipeline.steps[-1][1]
            probe = LinearProbe.from_sklearn(scaler, logistic, fitted.chosen_C)
        else:
            logger.info("variant %s: fewer than two tissue classes among labelled spots: packaged without a probe", name)
        packaged[name] = PackagedImageModel(model["trained"].encoder.eval(), probe, _card(name, model, inputs, patch_store, results_summary, variants, run_info, probe))
    return packaged
