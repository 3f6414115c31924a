"""Benchmark: would stopping a run whose loss has not fallen save time without stopping runs that learn?

    .venv/bin/python benchmarks/bench_not_learning_stop.py   # after bench_batch_effect_2.py --develop

Why it exists: the default demo's ``train`` stays above its 5-minute target (docs/benchmarks.md) partly
because a run that never learns (``bleep_normalised``, whose loss sits at log 128) never levels off
either, so it trains to the 2,000-step cap. The candidate lever: next to the plateau stop
(models/plateau_stopping.py), also stop a run that is still in the *not learning* state of
:func:`~tpir_kedro.models.training_runs.loss_state` at a check from step N on (checks every 50 steps,
the plateau stop's cadence).

The criterion: the lever is adopted for some N only if, on the development cohort (the second grid's
``--develop`` runs: demo simulator seed 1, never the evaluated seed 0), no run that it would have
stopped went on to learn by its end (its whole history's ``loss_fell``). It reads training losses
only, no held-out score. (Written down after a first look at the same runs, not before: a rule that
stops runs which later learn is wrong whatever one expected.)

It reads the step losses Lightning logged for each development run (``metrics.csv`` under the
development work folder; every fifth step, as those runs logged) and writes
``not_learning_stop.csv`` next to ``choice.json``: per N and variant, the runs that reached step N, those
the rule would have stopped, and those of them that learned by their end.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from tpir_kedro.models.training_config import TrainingConfig
from tpir_kedro.models.training_runs import NOT_LEARNING, loss_state

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "benchmarks" / "results" / "batch_effect_2_dev"
STARTS = (200, 300, 500, 750, 1000)
CHECK_EVERY = TrainingConfig().plateau_check_every  # the plateau stop's cadence (= conf/base's, by a test)


def first_not_learning_check(steps: np.ndarray, loss: np.ndarray, start: int) -> int | None:
    """The first check step n (start, start + CHECK_EVERY, ...) at which the losses logged before step n
    are in the *not learning* state; None if the run never was at a check it reached.

    steps, loss: (n_logged,) the logged step indices (ascending) and their losses.
    """
    end = int(steps.max()) + 1
    for n in range(start, end + 1, CHECK_EVERY):
        if loss_state(loss[steps < n])["state"] == NOT_LEARNING:
            return n
    return None


def read_runs(work: Path) -> pd.DataFrame:
    """One row per logged run under ``work``: variant, the path, its steps and whether it learned."""
    rows = []
    for path in sorted(work.glob("*/data/06_models/checkpoints/*/*/*/logs/version_0/metrics.csv")):
        history = pd.read_csv(path)
        if "train_loss_step" not in history:
            continue
        history = history.dropna(subset=["train_loss_step"]).sort_values("step")
        steps = history["step"].to_numpy(int)
        loss = history["train_loss_step"].to_numpy(float)
        run = path.parents[2]
        row = {
            "variant": run.parents[1].name,
            "run": run.relative_to(work).as_posix(),
            "steps": int(steps.max()) + 1,
            "learned": bool(loss_state(loss)["loss_fell"]),
        }
        row |= {f"stop_from_{n}": first_not_learning_check(steps, loss, n) for n in STARTS}
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for n in STARTS:
        reached = runs[runs["steps"] >= n]
        for variant, group in reached.groupby("variant"):
            stopped = group[group[f"stop_from_{n}"].notna()]
            rows.append(
                {
                    "start": n,
                    "variant": variant,
                    "runs_reaching_start": len(group),
                    "would_stop": len(stopped),
                    "would_stop_but_learned": int(stopped["learned"].sum()),
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work", type=Path, default=ROOT / "benchmarks" / "results" / "batch_effect_2_dev_work"
    )
    parser.add_argument("--out", type=Path, default=DEV)
    args = parser.parse_args()
    runs = read_runs(args.work)
    if runs.empty:
        raise SystemExit(f"no logged runs under {args.work}: run bench_batch_effect_2.py --develop first")
    table = summarise(runs)
    table.to_csv(args.out / "not_learning_stop.csv", index=False)
    totals = table.groupby("start")[["runs_reaching_start", "would_stop", "would_stop_but_learned"]].sum()
    adopted = [int(n) for n, row in totals.iterrows() if row["would_stop_but_learned"] == 0]
    print(totals.to_string())
    print(json.dumps({"runs": len(runs), "starts_without_a_false_stop": adopted}))


if __name__ == "__main__":
    main()
