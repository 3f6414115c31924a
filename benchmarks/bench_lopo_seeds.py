"""Benchmark: the full protocol -- every patient held out once x several seeds -- for every variant,
with the positive control that decides whether the comparison can be read at all.

    .venv/bin/python benchmarks/bench_lopo_seeds.py [--seeds 0 1 2] [--env ENV] [--params-yaml FILE] [--work DIR]

A seed is a whole replicate: one ``train`` run per seed (through a KedroSession, in a scratch copy of
the project's configuration under ``--work``, default benchmarks/results/lopo_<env>, so the
project's own data/ is never touched) with that seed for the gene encoders (scVI / scANVI and the
scorecard) as well as for image training. The runs' results are pooled and summarised by the
pipeline's own rule (seeds averaged within a fold, n = held-out patients, paired per-fold
differences against ``imagenet`` with a 95% t interval and the folds ahead). What a reader needs is
written to benchmarks/results/positive_control_<env>/ (committed): results.csv, results_summary.csv,
training_runs.csv, run.json.

Pre-registered reading (written before the first full run of the frozen regime, reported whatever
comes out):

- Positive control. ``supervised`` (its adapter, logistic probe) must beat ``imagenet`` (its
  backbone, logistic probe) by a mean paired macro-F1 of >= +0.05 with >= 3 of 4 folds ahead. It
  trains on the very labels the probe is scored on, under the same adapter and step budget as every
  contrastive variant: if it cannot beat its own initialisation, the regime cannot teach the image
  side anything the probe can see, and no ranking of the contrastive losses on it means anything --
  the script then says FAIL and prints no ranking.
- When it passes, a contrastive variant counts as *ahead of imagenet* only when its 95% interval
  over the 4 folds lies above 0 (with n = 4 the t interval is wide: expect few such claims); a mean
  above imagenet's with the interval spanning 0 is *not distinguishable* from it.
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
import time
from pathlib import Path

import yaml

from tpir_kedro.pipelines.evaluation.nodes import DIFF_PREFIX as PREFIX

ROOT = Path(__file__).resolve().parents[1]
CONTROL, BASELINE, MARGIN, MIN_AHEAD = "supervised", "imagenet", 0.05, 3


def _scratch_project(work: Path) -> Path:
    """:func:`scratch_project` reading the checkout's demo cohort in place."""
    from scratch_project import scratch_project

    scratch_project(work)
    raw = work / "data" / "01_raw"
    raw.mkdir(parents=True, exist_ok=True)
    demo = ROOT / "data" / "01_raw" / "demo_her2st"
    if demo.exists() and not (raw / "demo_her2st").exists():
        (raw / "demo_her2st").symlink_to(demo)  # read in place, never copied
    return work


def _every_patient(work: Path, env: str | None, extra: dict) -> list[str] | None:
    """Full LOPO: the grid's cells are declared from a list of patients. An environment lists its
    own (conf/her2st: A-H); the demo's patients are its first n_patients letters.
    """
    if env is not None:
        return None
    from kedro.config import OmegaConfigLoader

    demo = OmegaConfigLoader(str(work / "conf"), base_env="base", default_run_env="local")["parameters"]
    n = {**demo.get("demo_cohort", {}), **(extra.get("demo_cohort") or {})}["n_patients"]
    return list(string.ascii_uppercase[: int(n)])


def _merge(params: dict, extra: dict) -> dict:
    for key, value in extra.items():
        params[key] = (
            {**params.get(key, {}), **value}
            if isinstance(value, dict) and isinstance(params.get(key), dict)
            else value
        )
    return params


def positive_control(summary) -> dict:
    """The pre-registered check on the pooled summary (see the module docstring)."""
    row = summary[
        (summary["variant"] == CONTROL) & (summary["space"] == "adapter") & (summary["probe"] == "logistic")
    ]
    if row.empty:
        return {"verdict": "not run", "why": f"no {CONTROL} adapter row with a logistic probe"}
    r = row.iloc[0]
    mean, ahead, n = float(r[f"{PREFIX}mean"]), int(r[f"{PREFIX}n_folds_ahead"]), int(r[f"{PREFIX}n_folds"])
    passed = mean >= MARGIN and ahead >= MIN_AHEAD
    return {
        "verdict": "PASS" if passed else "FAIL",
        "mean_delta_macro_f1": round(mean, 4),
        "ci": [round(float(r[f"{PREFIX}ci_low"]), 4), round(float(r[f"{PREFIX}ci_high"]), 4)],
        "folds_ahead": ahead,
        "n_folds": n,
        "rule": f"mean >= +{MARGIN} and >= {MIN_AHEAD} folds ahead",
    }


def readings(summary) -> list[str]:
    """Each contrastive variant against imagenet, in the pre-registered words."""
    out = []
    trained = summary[(summary["space"] == "adapter") & (summary["variant"] != CONTROL)]
    for _, r in trained.sort_values(["probe", "variant"]).iterrows():
        low, high, mean = r[f"{PREFIX}ci_low"], r[f"{PREFIX}ci_high"], r[f"{PREFIX}mean"]
        word = (
            "ahead of imagenet"
            if low > 0
            else ("behind imagenet" if high < 0 else "not distinguishable from imagenet")
        )
        out.append(
            f"{r['variant']} ({r['probe']}): Δ {mean:+.3f} [{low:+.3f}, {high:+.3f}], {int(r[f'{PREFIX}n_folds_ahead'])}/{int(r[f'{PREFIX}n_folds'])} folds ahead: {word}"
        )
    return out


def _write(out: Path, results: list, runs: list, timings: list, args, env_name: str, wall: float):
    import pandas as pd

    from tpir_kedro.models.training_runs import NOT_LEARNING, STILL_LEARNING
    from tpir_kedro.pipelines.evaluation.nodes import results_summary

    pooled = pd.concat(results, ignore_index=True)
    summary = results_summary(pooled)
    training = pd.concat(runs, ignore_index=True)
    control = positive_control(summary)
    out.mkdir(parents=True, exist_ok=True)
    pooled.to_csv(out / "results.csv", index=False)
    summary.to_csv(out / "results_summary.csv", index=False)
    training.to_csv(out / "training_runs.csv", index=False)
    steps = training["steps"]
    report = {
        "env": env_name,
        "seeds_done": [t["seed"] for t in timings],
        "seeds_asked": args.seeds,
        "wall_seconds": round(wall, 1),
        "runs": timings,
        "positive_control": control,
        "training_runs": {
            "n": int(len(training)),
            "steps_min": int(steps.min()),
            "steps_max": int(steps.max()),
            "plateaued": int(training["plateaued"].sum()),
            "still_learning": int((training["state"] == STILL_LEARNING).sum()),
            "not_learning": int((training["state"] == NOT_LEARNING).sum()),
            "not_learning_variants": sorted(
                training.loc[training["state"] == NOT_LEARNING, "variant"].unique()
            ),
        },
        "params_yaml": str(args.params_yaml) if args.params_yaml else None,
    }
    (out / "run.json").write_text(json.dumps(report, indent=1, default=str))
    return summary, control


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--env", default=None, help="configuration environment, e.g. her2st")
    parser.add_argument("--params-yaml", type=Path, help="extra runtime parameters (YAML mapping)")
    parser.add_argument("--work", type=Path)
    parser.add_argument(
        "--out",
        type=Path,
        help="where the committed tables go (default benchmarks/results/positive_control_<env>)",
    )
    args = parser.parse_args()
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results_markdown import markdown_table

    env_name = args.env or "demo"
    work = _scratch_project((args.work or ROOT / "benchmarks" / "results" / f"lopo_{env_name}").resolve())
    out = (args.out or ROOT / "benchmarks" / "results" / f"positive_control_{env_name}").resolve()
    extra = yaml.safe_load(args.params_yaml.read_text()) if args.params_yaml else {}
    bootstrap_project(work)
    results, runs, timings = [], [], []
    start = time.perf_counter()
    patients = _every_patient(work, args.env, extra)
    for seed in args.seeds:
        params = _merge(
            {
                **({"folds": {"held_out_patients": patients}} if patients else {}),
                "image_runs": {"seeds": [seed], "final_models": False},
                "gene_vae": {"seed": seed},
                "gene_scorecard": {"seed": seed},
                "contrastive": {"progress_bar": False},
            },
            extra or {},
        )
        t = time.perf_counter()
        with KedroSession.create(project_path=work, env=args.env, runtime_params=params) as session:
            session.run(pipeline_names=["train"])
            catalog = session.load_context().catalog
            results.append(catalog.load("results"))
            runs.append(catalog.load("training_runs"))
            manifest = catalog.load("run_manifest")
        timings.append(
            {
                "seed": seed,
                "run_id": manifest["run_id"],
                "wall_seconds": round(time.perf_counter() - t, 1),
                "stages": manifest["wall_seconds"]["stages"],
            }
        )
        print(json.dumps(timings[-1]), flush=True)
        # Written after every seed: an interrupted benchmark leaves the replicates it finished.
        summary, control = _write(out, results, runs, timings, args, env_name, time.perf_counter() - start)
    wall = time.perf_counter() - start
    print(markdown_table(summary))
    print(
        f"\npositive control ({CONTROL} adapter vs {BASELINE} backbone, logistic probe): {json.dumps(control)}"
    )
    if control["verdict"] == "PASS":
        print("\n".join(["", "readings (95% interval over folds):", *readings(summary)]))
    elif control["verdict"] == "FAIL":
        print("the positive control failed: the contrastive variants are not ranked on this regime")
    else:
        print(f"no positive control ({control['why']}): the classification results are not ranked")
    report = json.loads((out / "run.json").read_text())
    print(f"training runs: {report['training_runs']}; {wall / 60:.1f} min; tables in {out}")


if __name__ == "__main__":
    main()
