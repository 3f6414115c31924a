"""Nodes of the ``evaluation`` pipeline: the patient-held-out protocol of docs/method.md, from the
grid cells' tables to what users read.

Each cell (see the contrastive pipeline) scores its own fold model -- probes, expression prediction,
patient decodability (:mod:`~tpir_kedro.evaluation.cell_scores`). Here: the results table (one row
per variant x representation space x held-out patient x seed x probe), the summary over folds (seeds
averaged within a fold first) with paired per-fold differences against ``imagenet``, its figure, and
the final models packaged with a probe and a model card.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tpir_kedro.cohort.label_budget import DEFAULT_LABEL_BUDGET
from tpir_kedro.cohort.schema import is_classified
from tpir_kedro.evaluation.cell_scores import NO_SPACE
from tpir_kedro.evaluation.fold_inputs import FoldInputs
from tpir_kedro.evaluation.fold_statistics import FOLD as FOLD_COLUMN
from tpir_kedro.evaluation.fold_statistics import fold_means, paired_difference
from tpir_kedro.evaluation.probes import fit_logistic_probe
from tpir_kedro.evaluation.protocol import EXPRESSION_PROTOCOLS, EvaluationProtocol
from tpir_kedro.imaging.patch_store import PatchStore
from tpir_kedro.models.file_digest import file_sha256
from tpir_kedro.models.packaged_model import LinearProbe, PackagedImageModel

logger = logging.getLogger(__name__)

RESULT_COLUMNS = [
    "variant",
    "space",
    "held_out_patient",
    "probe",
    "accuracy",
    "macro_f1",
    "balanced_accuracy",
    "pearson_r_top50",
]
BASELINE = "imagenet"
BASELINE_SPACE = "backbone"
METRICS = ["accuracy", "macro_f1", "balanced_accuracy", "pearson_r_top50"]
DIFF_PREFIX = "macro_f1_diff_vs_imagenet_"  # + mean, sd, ci_low, ci_high, n_folds, n_folds_ahead
EXPRESSION_DIFF_PREFIX = "pearson_r_diff_vs_imagenet_"  # the same, for the expression readouts


def results_table(
    probe_metrics: pd.DataFrame, expression_metrics: pd.DataFrame, run_info: dict
) -> pd.DataFrame:
    """One row per variant x space x held-out patient x seed x probe. ``probe`` names the readout
    trained on the frozen representation: ``logistic`` / ``knn`` classify tissue (macro-F1, ...),
    ``retrieval`` / ``ridge`` predict expression (``pearson_r_top50``; the protocols of
    :func:`expression_prediction_results`); ``majority`` is the class-prior floor. ``space``: the
    representation the readout read, see the contrastive pipeline.
    """
    keys = ["variant", "held_out_patient", "seed", "space"]
    expr = (
        expression_metrics[[*keys, "protocol", "pearson_r_top50", "fold"]].rename(
            columns={"protocol": "probe"}
        )
        if not expression_metrics.empty
        else pd.DataFrame(columns=[*keys, "probe", "pearson_r_top50", "fold"])
    )
    parts = [t for t in (probe_metrics, expr) if not t.empty]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*keys, "probe"])
    table["space"] = table["space"].fillna(NO_SPACE)
    table["run_id"] = run_info.get("run_id")
    # Which labels scANVI (and so class_guided's p . q) learnt from: the label budget of the run.
    gene_vae = (run_info.get("parameters") or {}).get("gene_vae") or {}
    table["scanvi_labels"] = gene_vae.get("scanvi_labels", DEFAULT_LABEL_BUDGET)
    extra = [
        c
        for c in (
            "seed",
            "classes_absent",
            "chosen_C",
            "n_train",
            "n_test",
            "fold",
            "scanvi_labels",
            "run_id",
        )
        if c in table.columns
    ]
    for c in RESULT_COLUMNS:
        if c not in table.columns:
            table[c] = np.nan
    return (
        table[RESULT_COLUMNS + extra]
        .sort_values(["variant", "space", "held_out_patient", "probe", "seed"], kind="stable")
        .reset_index(drop=True)
    )


def results_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per variant x space x probe: mean and sd over held-out patients of the seed-averaged metrics
    (n = ``n_folds``, the held-out patients; ``n_seeds`` per fold), and the paired per-fold
    difference against ``imagenet``'s backbone on the same probe: macro-F1 for the classification
    probes (``macro_f1_diff_vs_imagenet_*``), Pearson r for the expression protocols
    (``pearson_r_diff_vs_imagenet_*``); mean, sd, 95% t interval and folds ahead
    (:mod:`~tpir_kedro.evaluation.fold_statistics`).
    """
    keys = ["variant", "space", "probe"]
    per_fold = fold_means(results, keys, METRICS)
    grouped = per_fold.groupby(keys, dropna=False, sort=True)
    summary = grouped[METRICS].agg(["mean", "std"])
    summary.columns = [f"{m}_{s}" for m, s in summary.columns]
    summary["n_folds"] = grouped[FOLD_COLUMN].nunique()
    summary["n_seeds"] = grouped["n_seeds"].max()
    summary = summary.reset_index()
    base = per_fold[(per_fold["variant"] == BASELINE) & (per_fold["space"] == BASELINE_SPACE)]
    diffs = []
    for (variant, space, probe), group in per_fold.groupby(keys, sort=True):
        # The majority floor has no probe of its own: it is paired with imagenet's logistic probe.
        base_probe = "logistic" if variant == "majority" else probe
        metric, prefix = (
            ("pearson_r_top50", EXPRESSION_DIFF_PREFIX)
            if probe in EXPRESSION_PROTOCOLS
            else ("macro_f1", DIFF_PREFIX)
        )
        reference = base[base["probe"] == base_probe].set_index(FOLD_COLUMN)[metric]
        if (variant == BASELINE and space == BASELINE_SPACE) or reference.empty:
            continue
        d = paired_difference(group.set_index(FOLD_COLUMN)[metric], reference)
        if d["n_folds"]:
            named = {
                "mean": d["mean_difference"],
                "sd": d["sd_difference"],
                "ci_low": d["ci_low"],
                "ci_high": d["ci_high"],
                "n_folds": d["n_folds"],
                "n_folds_ahead": d["n_folds_ahead"],
            }
            diffs.append(
                {
                    "variant": variant,
                    "space": space,
                    "probe": probe,
                    **{f"{prefix}{k}": v for k, v in named.items()},
                }
            )
    if diffs:
        summary = summary.merge(pd.DataFrame(diffs), on=keys, how="left")
    return summary


def results_figure(results_summary: pd.DataFrame) -> go.Figure:
    """Macro-F1 per variant, space and probe (mean ± sd over held-out patients, seeds averaged within
    each) beside the expression-prediction Pearson r of each protocol.
    """
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "Patch classification, held-out patients (macro-F1)",
            "Expression prediction (Pearson r, top genes)",
        ),
    )
    scored = results_summary[~results_summary["probe"].isin(EXPRESSION_PROTOCOLS)].dropna(
        subset=["macro_f1_mean"]
    )
    for probe, group in scored.groupby("probe"):
        names = (
            group["variant"] + " (" + group["space"].astype(str) + ")"
            if "space" in group
            else group["variant"]
        )
        fig.add_bar(
            x=names,
            y=group["macro_f1_mean"],
            error_y={"type": "data", "array": group["macro_f1_std"].fillna(0)},
            name=f"{probe} probe",
            row=1,
            col=1,
        )
    for protocol in EXPRESSION_PROTOCOLS:
        expr = results_summary[results_summary["probe"] == protocol].dropna(subset=["pearson_r_top50_mean"])
        if expr.empty:
            continue
        fig.add_bar(
            x=expr["variant"] + " (" + expr["space"].astype(str) + ")",
            y=expr["pearson_r_top50_mean"],
            error_y={"type": "data", "array": expr["pearson_r_top50_std"].fillna(0)},
            name=f"{protocol} (Pearson r)",
            row=1,
            col=2,
        )
    fig.update_layout(barmode="group", template="plotly_white", height=450)
    return fig


def _initial_weights_sha256(init: str, weights_path: str | None) -> str | None:
    """SHA-256 of the file the backbone was initialised from; None for a random init or weights
    that ship with a package (EfficientNet-Lite0's ImageNet file, named by the package's version).
    """
    if init == "random" or not weights_path:
        return None
    return file_sha256(Path(weights_path))


def _card(
    name: str,
    model: dict,
    inputs: FoldInputs,
    store: PatchStore,
    summary: pd.DataFrame,
    variants: dict,
    run_info: dict,
    probe: LinearProbe | None,
) -> dict:
    trained, config = model["trained"], model["config"]
    rows = summary[summary["variant"] == name].drop(columns="variant")
    lopo = rows.astype(object).where(rows.notna(), None).to_dict(orient="records")  # JSON has no NaN
    section_scale = (
        {s: v.get("um_per_px") for s, v in store.meta.get("sections", {}).items()}
        if isinstance(store.meta.get("sections"), dict)
        else {}
    )
    return {
        "variant": name,
        "description": (variants.get(name) or {}).get("description", ""),
        "objective": trained.variant.objective,
        "gene_input": trained.variant.gene_input,
        "loss": trained.variant.loss,
        "loss_params": trained.variant.loss_params,
        "backbone": trained.encoder.backbone,
        "init": trained.variant.init or config.init,
        # the checkpoint the backbone was built from (foundation models: the user's local file)
        "backbone_weights_sha256": _initial_weights_sha256(
            trained.variant.init or config.init, config.weights_path
        ),
        "feature_dim": trained.encoder.feature_dim,
        "regime": config.regime if trained.variant.trains else "untrained",
        # What the probe reads: the backbone's pooled features, or the trained adapter's output on them.
        "representation": model["space"],
        "adapter": trained.adapter.spec() if model["space"] == "adapter" else None,
        "classes": probe.classes if probe else [],
        "patch_size_um": store.size_um,
        "patch_size_px": store.size_px,
        "um_per_px_of_training_slides": section_scale,
        "normalisation": {
            "mean": list(trained.encoder.mean),
            "std": list(trained.encoder.std),
            "input": "RGB uint8 / 255, then (x - mean) / std",
        },
        "training_cohort": {
            "patients": inputs.train_patients,
            "n_spots_with_patch": len(inputs.train_obs),
            "n_labelled": int((inputs.train_label_codes >= 0).sum()),
        },
        "training": {
            "config": config.to_dict(),
            "seed": model["seed"],
            "seconds": round(trained.seconds, 1),
            "fingerprint": trained.fingerprint,
        },
        "lopo_metrics": lopo,
        "run_id": run_info.get("run_id"),
        "limits": (
            "Trained on the patients above only; patches must be cut at the same physical size "
            f"({store.size_um} µm -> {store.size_px} px) and H&E stained. LOPO metrics are from models trained "
            "without the scored patient; this final model saw every patient. Demo runs use a simulated cohort."
        ),
    }


def packaged_image_models(
    final_image_models: dict,
    patch_store: PatchStore,
    results_summary: pd.DataFrame,
    evaluation: dict,
    variants: dict,
    run_info: dict,
) -> dict[str, PackagedImageModel]:
    """Each final (all-patient) encoder with a probe fitted on every patient's classified spots
    (C by leave-one-patient-out) and its model card.
    """
    if not final_image_models:
        return {}
    Cs = EvaluationProtocol.from_dict(evaluation).probe_Cs
    packaged = {}
    for name, model in final_image_models.items():
        inputs = model["inputs"]  # every patient's spots: the final cell's fold inputs
        labelled = is_classified(inputs.train_labels)
        probe = None
        if labelled.sum() and len(set(inputs.train_labels[labelled])) >= 2:
            fitted = fit_logistic_probe(
                model["features"][labelled],
                inputs.train_labels[labelled],
                inputs.train_patient_names[labelled],
                Cs=Cs,
                seed=model["seed"],
            )
            scaler, logistic = fitted.pipeline.steps[0][1], fitted.pipeline.steps[-1][1]
            probe = LinearProbe.from_sklearn(scaler, logistic, fitted.chosen_C)
        else:
            logger.info(
                "variant %s: fewer than two tissue classes among labelled spots: packaged without a probe",
                name,
            )
        adapter = model["trained"].adapter.eval() if model["space"] == "adapter" else None
        packaged[name] = PackagedImageModel(
            model["trained"].encoder.eval(),
            probe,
            _card(name, model, inputs, patch_store, results_summary, variants, run_info, probe),
            adapter,
        )
    return packaged
