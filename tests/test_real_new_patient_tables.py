"""The committed new-real-patient benchmark (benchmarks/results/real_new_patient/) is what its own
per-spot predictions give: every variant x seed x read-out's scores on A1, recomputed by the
project's scoring rule, and the verdict recomputed by the benchmark's pre-registered rule."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from tpir_kedro.evaluation.spatial_blocks import section_metrics

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "benchmarks" / "results" / "real_new_patient"

pytestmark = pytest.mark.skipif(not (FOLDER / "run.json").exists(), reason="no committed run")


def bench():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "benchmarks" / "bench_real_new_patient.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec.loader.exec_module(module)
    return module


def test_the_committed_scores_are_the_committed_predictions_scored_again():
    run = json.loads((FOLDER / "run.json").read_text())
    predictions = pd.read_csv(FOLDER / "predictions.csv")
    readouts = pd.read_csv(FOLDER / "readouts.csv")
    assert predictions["section"].eq("A1").all() and predictions["spot"].nunique() == run["n_spots"]
    for row in readouts.itertuples():
        mine = predictions[
            (predictions["variant"] == row.variant)
            & (predictions["seed"] == row.seed)
            & (predictions["readout"] == row.readout)
        ]
        again = section_metrics(mine["label"], mine["predicted"], run["classes_headline"])
        for metric, value in again.items():
            assert getattr(row, metric) == pytest.approx(value), (row.variant, row.seed, row.readout, metric)
    # The headline classes follow the pre-registered rule (>= 10 labelled spots in A1).
    counts = predictions.drop_duplicates("spot")["label"].value_counts()
    assert run["classes_headline"] == sorted(counts[counts >= bench().MIN_SPOTS_HEADLINE].index)


def test_the_committed_verdict_is_the_rule_applied_to_the_committed_summary():
    run = json.loads((FOLDER / "run.json").read_text())
    summary = pd.read_csv(FOLDER / "summary.csv")
    assert json.loads(json.dumps(bench().verdict(summary))) == run["verdict"]
