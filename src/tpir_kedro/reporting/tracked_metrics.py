"""What an experiment tracker records of one run, read off the run's own tables.

A run of ``train`` is a grid of cells (variant x held-out patient x seed, each fold's majority floor,
and each variant's final model). A tracker such as MLflow shows one record per cell, named as the
cell's Kedro namespace (``clip__B__seed0``, ``majority__B``, ``clip__final``) and tagged by variant,
fold and seed, under one record for the run. This module turns the tables the run already wrote into those records, so
the tracker shows exactly the numbers of ``results.csv`` and nothing is computed twice. Pure
pandas: no tracker is imported here.

Metric names are ``<space>.<probe>.<metric>`` (``adapter.logistic.macro_f1``,
``backbone.ridge.pearson_r_top50``), ``<space>.patient_decodability`` and the training run's
``steps``, ``epochs``, ``loss_fell``, ``plateaued`` (1 or 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from tpir_kedro.evaluation.folds import ALL_PATIENTS
from tpir_kedro.evaluation.grid import cell_namespace

RESULT_METRICS = ("accuracy", "macro_f1", "balanced_accuracy", "pearson_r_top50")
SUMMARY_METRICS = ("macro_f1_mean", "pearson_r_top50_mean")
RUN_METRICS = ("steps", "epochs", "loss_fell", "plateaued")


@dataclass
class CellRecord:
    """One grid cell: its name, tags (variant, fold, seed, ...) and metrics."""

    name: str
    tags: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _seed(value) -> int | None:
    """Seeds come back from CSV as int or float (a column with NaNs); the majority floor has none."""
    number = _finite(value)
    return None if number is None else int(number)


def _cell(records: dict, variant, fold, seed) -> CellRecord:
    key = (str(variant), str(fold), _seed(seed))
    if key not in records:
        tags = {"variant": key[0], "fold": key[1]}
        if key[2] is not None:
            tags["seed"] = str(key[2])
        records[key] = CellRecord(cell_namespace(*key), tags)
    return records[key]


def cell_records(
    results: pd.DataFrame | None = None,
    patient_decodability: pd.DataFrame | None = None,
    training_runs: pd.DataFrame | None = None,
) -> list[CellRecord]:
    """One record per cell (variant, fold, seed) found in any of the tables, sorted by name.

    Parameters
    ----------
    results
        the run's ``results`` table (one row per variant x space x held-out patient x seed x
        probe); its ``fold`` column names the cell (the held-out patient when absent).
    patient_decodability
        ``variant, space, fold, seed, accuracy, chance, ...`` per cell and space.
    training_runs
        ``variant, fold, seed, steps, epochs, loss_fell, plateaued, state, ...`` per trained run
        (fold ``all`` for the final models).

    A NaN metric (a probe with nothing to score) is left out rather than recorded as a number.
    """
    records: dict[tuple[str, str, str], CellRecord] = {}
    if results is not None and not results.empty:
        folds = results["fold"] if "fold" in results else results["held_out_patient"]
        for row, fold in zip(results.itertuples(index=False), folds, strict=True):
            cell = _cell(records, row.variant, fold, getattr(row, "seed", None))
            cell.tags["held_out_patient"] = str(row.held_out_patient)
            for metric in RESULT_METRICS:
                value = _finite(getattr(row, metric, None))
                if value is not None:
                    cell.metrics[f"{row.space}.{row.probe}.{metric}"] = value
    if patient_decodability is not None and not patient_decodability.empty:
        for row in patient_decodability.itertuples(index=False):
            cell = _cell(records, row.variant, row.fold, row.seed)
            for suffix, column in (("", "accuracy"), ("_chance", "chance")):
                value = _finite(getattr(row, column))
                if value is not None:
                    cell.metrics[f"{row.space}.patient_decodability{suffix}"] = value
    if training_runs is not None and not training_runs.empty:
        for row in training_runs.itertuples(index=False):
            cell = _cell(records, row.variant, row.fold, row.seed)
            cell.tags["training_state"] = str(row.state)
            if str(row.fold) == ALL_PATIENTS:
                cell.tags["final_model"] = "true"
            for metric in RUN_METRICS:
                value = _finite(getattr(row, metric))
                if value is not None:
                    cell.metrics[metric] = value
    return sorted(records.values(), key=lambda r: r.name)


def summary_metrics(results_summary: pd.DataFrame | None) -> dict[str, float]:
    """The run's headline numbers: per variant x space x probe, the mean over held-out patients of
    macro-F1 (classification probes) or Pearson r (expression read-outs), and the paired difference
    against ``imagenet`` (``<variant>.<space>.<probe>.diff_vs_imagenet``).
    """
    if results_summary is None or results_summary.empty:
        return {}
    out = {}
    for row in results_summary.to_dict("records"):
        prefix = f"{row['variant']}.{row['space']}.{row['probe']}"
        for metric in SUMMARY_METRICS:
            value = _finite(row.get(metric))
            if value is not None:
                out[f"{prefix}.{metric}"] = value
        for diff in ("macro_f1_diff_vs_imagenet_mean", "pearson_r_diff_vs_imagenet_mean"):
            value = _finite(row.get(diff))
            if value is not None:
                out[f"{prefix}.diff_vs_imagenet"] = value
    return out


def flat_parameters(parameters: Mapping, prefix: str = "") -> dict[str, str]:
    """Nested parameters as ``{"contrastive.max_steps": "2000", ...}``: one entry per leaf, so a
    tracker can compare runs key by key; a list stays one value.
    """
    out: dict[str, str] = {}
    for key, value in parameters.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_parameters(value, prefix=f"{name}."))
        else:
            out[name] = str(value)
    return out
