"""benchmarks/bench_not_learning_stop.py: the candidate 'stop a run that is not learning' rule, read off
logged step losses. A run whose objective first rises and then falls (the adversarial CLIP's) must
count as stopped and as having learned: that is the false stop the benchmark counts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "bench_not_learning_stop", ROOT / "benchmarks" / "bench_not_learning_stop.py"
)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _write_run(work: Path, variant: str, loss: np.ndarray, every: int = 5) -> None:
    folder = work / "s3/data/06_models/checkpoints" / variant / "holdout_A" / "seed0-x" / "logs" / "version_0"
    folder.mkdir(parents=True)
    steps = np.arange(len(loss)) * every + every - 1
    pd.DataFrame({"epoch": 0, "step": steps, "train_loss_step": loss}).to_csv(
        folder / "metrics.csv", index=False
    )


def test_a_loss_that_rises_before_it_falls_is_a_false_stop(tmp_path):
    rng = np.random.default_rng(0)
    noise = lambda n: 0.01 * rng.standard_normal(n)  # noqa: E731
    # 1,000 steps logged every fifth: up for 400 steps, then down well below the start.
    rises_then_falls = np.concatenate([np.linspace(2.0, 2.5, 80), np.linspace(2.5, 1.0, 120)]) + noise(200)
    falls = np.linspace(2.0, 1.0, 200) + noise(200)
    flat = 4.85 + noise(200)
    _write_run(tmp_path, "adversarial", rises_then_falls)
    _write_run(tmp_path, "clip", falls)
    _write_run(tmp_path, "collapsed", flat)

    runs = bench.read_runs(tmp_path).set_index("variant")
    assert runs.loc["adversarial", "learned"] and runs.loc["clip", "learned"]
    assert not runs.loc["collapsed", "learned"]
    assert runs.loc["adversarial", "stop_from_200"] == 200  # not learning at its first check
    assert pd.isna(runs.loc["clip", "stop_from_200"])  # a falling loss is never stopped
    assert runs.loc["collapsed", "stop_from_200"] == 200

    table = bench.summarise(runs.reset_index()).set_index(["start", "variant"])
    assert table.loc[(200, "adversarial"), "would_stop_but_learned"] == 1
    assert table.loc[(200, "collapsed"), ["would_stop", "would_stop_but_learned"]].tolist() == [1, 0]
    # Past the rise the adversarial run's loss is below its start: no longer stopped from step 750 on.
    assert pd.isna(runs.loc["adversarial", "stop_from_750"])
