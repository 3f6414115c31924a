"""Benchmark: the full protocol -- every patient held out once x several seeds -- for every variant.

    .venv/bin/python benchmarks/bench_lopo_seeds.py [--seeds 0 1 2] [--env ENV] [--params-yaml FILE] [--work DIR]

Runs ``train`` through a KedroSession in a scratch copy of the project's configuration (``--work``,
default benchmarks/results/lopo_<env>), so the project's own data/ is never touched; the demo
cohort (or ``--env her2st``'s real files) is read where it is. Prints mean ± sd per variant and
probe over held-out patients and seeds, and the paired per-fold differences against ``imagenet``
(macro-F1; the same fold, seed and probe), then the wall time per stage from the run manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _scratch_project(work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(ROOT / name, work / name)
    shutil.rmtree(work / "conf", ignore_errors=True)
    shutil.copytree(ROOT / "conf", work / "conf", ignore=shutil.ignore_patterns("local"))
    (work / "conf" / "local").mkdir(exist_ok=True)
    (work / "src").mkdir(exist_ok=True)
    raw = work / "data" / "01_raw"
    raw.mkdir(parents=True, exist_ok=True)
    demo = ROOT / "data" / "01_raw" / "demo_her2st"
    if demo.exists() and not (raw / "demo_her2st").exists():
        (raw / "demo_her2st").symlink_to(demo)  # read in place, never copied
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--env", default=None, help="configuration environment, e.g. her2st")
    parser.add_argument("--params-yaml", type=Path, help="extra runtime parameters (YAML mapping)")
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    work = _scratch_project((args.work or ROOT / "benchmarks" / "results" / f"lopo_{args.env or 'demo'}").resolve())
    params = {"folds": {"held_out_patients": None}, "evaluation": {"seeds": args.seeds, "final_models": False}, "contrastive": {"progress_bar": False}}
    if args.params_yaml:
        extra = yaml.safe_load(args.params_yaml.read_text()) or {}
        for key, value in extra.items():
            params[key] = {**params.get(key, {}), **value} if isinstance(value, dict) else value
    bootstrap_project(work)
    start = time.perf_counter()
    with KedroSession.create(project_path=work, env=args.env, runtime_params=params) as session:
        session.run(pipeline_names=["train"])
        catalog = session.load_context().catalog
    wall = time.perf_counter() - start
    summary = catalog.load("results_summary")
    manifest = catalog.load("run_manifest")
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 30):
        cols = [c for c in ("variant", "probe", "n_folds", "n_rows", "macro_f1_mean", "macro_f1_std", "accuracy_mean", "balanced_accuracy_mean", "pearson_r_top50_mean", "pearson_r_top50_std", "macro_f1_diff_vs_imagenet_mean", "macro_f1_diff_vs_imagenet_sd", "n_pairs", "n_better_than_imagenet") if c in summary.columns]
        print(summary[cols].round(3).to_string(index=False))
    print(json.dumps({"run_id": manifest["run_id"], "wall_seconds": round(wall, 1), "stages": manifest["wall_seconds"]["stages"], "seeds": args.seeds}, indent=1))
    print(f"results: {work / 'data' / '08_reporting'}")


if __name__ == "__main__":
    main()
