"""The second batch-effect grid (benchmarks/bench_batch_effect_2.py): its arms and its rules.

The arms that remove the patient must do what their names say: every batch the within-patient arms
train on holds one patient, and the adversarial arm has its head. The development choices follow the
rules written in the script's docstring.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tpir_kedro.models.training import TrainingData, _SpotPairsData
from tpir_kedro.models.variants import parse_variant

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the script imports its scratch_project helper
    try:
        spec = importlib.util.spec_from_file_location(
            "bench_batch_effect_2", ROOT / "benchmarks" / "bench_batch_effect_2.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def _grid_variants(bench) -> dict:
    weights = {bench.adversary_name(w): bench.adversarial_clip(w) for w in bench.ADVERSARY_WEIGHTS}
    return {name: parse_variant(name, spec) for name, spec in {**bench.NEW_VARIANTS, **weights}.items()}


def test_every_within_patient_arm_trains_on_batches_of_one_patient(bench):
    variants = _grid_variants(bench)
    single = [v for v in variants.values() if v.batches == "single_patient"]
    assert {v.name for v in single} == {"clip_single_patient", "scvi_adversarial_single_patient"}
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(5), [70, 40, 90, 33, 61])[rng.permutation(294)]  # uneven, shuffled
    n = len(patients)
    data = TrainingData(
        patches=rng.normal(size=(n, 3, 8)).astype(np.float32),  # cached features of 3 views
        rows=np.arange(n),
        genes=rng.normal(size=(n, 6)).astype(np.float32),
        z=None,
        labels=np.full(n, -1),
        probs=None,
        patients=patients.astype(np.int64),
        n_classes=3,
    )
    for variant in single:
        loader = _SpotPairsData(data, 16, 0, seed=1, with_z=False, with_probs=False, batches=variant.batches)
        batches = list(loader.train_dataloader())
        assert len(batches) == sum(c // 16 for c in (70, 40, 90, 33, 61)), variant.name
        assert all(len(b["patient"].unique()) == 1 for b in batches), variant.name
        assert len({int(b["patient"][0]) for b in batches}) == 5  # every patient trains
    # The adversarial arms mix patients (the adversary needs them) and carry their weights.
    for weight in bench.ADVERSARY_WEIGHTS:
        variant = variants[bench.adversary_name(weight)]
        assert variant.batches == "mixed" and variant.patient_adversary == weight


def test_the_arms_read_the_best_gene_encoder_and_the_cell_fits_it(bench):
    variants = _grid_variants(bench)
    assert variants["scvi_adversarial_infonce"].gene_input == bench.BEST_GENE_ENCODER
    params = bench.cell_params(0.0, 3.0, cohort_seed=1, regime={}, variants=bench.ARMS, extra_variants={})
    assert bench.BEST_GENE_ENCODER in params["gene_vae"]["fit"]
    assert params["demo_cohort"] == {"seed": 1, "n_patients": 6, "batch_strength": 0.0, "stain_strength": 3.0}


def _regime_rows(regime, s, probe, mean, ahead, steps):
    return {
        "regime": regime,
        "s": s,
        "probe": probe,
        "mean_difference": mean,
        "n_folds_ahead": ahead,
        "passes": mean >= 0.05 and ahead >= 5,
        "supervised_mean_steps": steps,
    }


def test_the_regime_rule_counts_passes_then_prefers_fewer_steps(bench):
    rows = [
        _regime_rows("fixed", 3.0, "logistic", 0.06, 5, 2000),
        _regime_rows("fixed", 3.0, "knn", 0.10, 6, 2000),
        _regime_rows("plateau", 3.0, "logistic", 0.07, 6, 500),
        _regime_rows("plateau", 3.0, "knn", 0.12, 6, 500),
        _regime_rows("wide_plateau", 3.0, "logistic", 0.09, 4, 400),  # 4/6 ahead: does not pass
        _regime_rows("wide_plateau", 3.0, "knn", 0.12, 6, 400),
    ]
    choice = bench.choose_regime(pd.DataFrame(rows))
    assert choice["regime"] == "plateau" and choice["passed_pairs"] == ["logistic s=3", "knn s=3"]
    nothing = pd.DataFrame([_regime_rows("fixed", 3.0, "logistic", 0.04, 6, 2000)])
    assert bench.choose_regime(nothing)["regime"] is None


def test_the_weight_rule_takes_the_largest_weight_within_the_band(bench):
    def table(f1s):
        return pd.DataFrame(
            [{"weight": w, "probe": "logistic", "macro_f1": f} for w, f in zip((0.0, 0.1, 0.3, 1.0), f1s)]
        )

    assert bench.choose_weight(table([0.70, 0.71, 0.695, 0.60]), "logistic") == 0.3
    assert bench.choose_weight(table([0.70, 0.65, 0.64, 0.60]), "logistic") == 0.1  # none near: smallest


DEV = ROOT / "benchmarks" / "results" / "batch_effect_2_dev"


def test_the_committed_development_tables_and_choices_are_what_its_cells_give(bench, tmp_path):
    import json
    import shutil

    shutil.copytree(DEV / "cells", tmp_path / "cells")
    choice = bench.summarise_development(tmp_path)
    for name in ("regimes.csv", "adversary.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / name), pd.read_csv(DEV / name))
    assert json.loads(json.dumps(choice, default=str)) == json.loads((DEV / "choice.json").read_text())
    assert choice["d1"]["regime"] in bench.REGIMES and choice["d2"]["weight"] in bench.ADVERSARY_WEIGHTS


# The grid's committed folders: the smoke run (development cohort) and, once run, the evaluated grid.
GRIDS = [("batch_effect_2_quick", len(["A", "B"])), ("batch_effect_2", 6)]


@pytest.mark.parametrize(("name", "n_folds"), GRIDS)
def test_the_committed_grid_summaries_and_reading_are_what_its_cells_give(bench, tmp_path, name, n_folds):
    import json
    import shutil

    committed = ROOT / "benchmarks" / "results" / name
    shutil.copytree(committed / "cells", tmp_path / "cells")
    verdict = bench.summarise(tmp_path, n_folds)
    for table in ("grid.csv", "deltas.csv", "gene_side.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / table), pd.read_csv(committed / table))
    assert json.loads(json.dumps(verdict, default=str)) == json.loads(
        (committed / "reading.json").read_text()
    )
    # Every arm of every cell is scored under both probes, and the oracle is CLIP of the k = 0 cell.
    grid = pd.read_csv(committed / "grid.csv")
    assert set(grid["variant"]) == {*bench.ARMS, bench.ORACLE}
    oracle = grid[grid["variant"] == bench.ORACLE].set_index(["s", "probe", "k"])["macro_f1_mean"]
    clip0 = grid[(grid["variant"] == "clip") & (grid["k"] == 0.0)].set_index(["s", "probe"])["macro_f1_mean"]
    for (s, probe, _), value in oracle.items():
        assert value == pytest.approx(clip0.loc[(s, probe)])
