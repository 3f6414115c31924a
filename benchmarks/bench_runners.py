"""Benchmark: `kedro run --pipeline=train` from an empty data/ under SequentialRunner, ParallelRunner
(2 workers) and the DaskRunner (a LocalCluster of 2 workers), in one run of this script on one
machine, as ratios -- the README's commands, as a user types them.

    .venv/bin/python benchmarks/bench_runners.py [--work DIR] [--out DIR] [--workers 2] [--no-dask]

In a scratch copy of the project (``--work``, default benchmarks/results/runners_demo_work/; the
project's own data/ is never touched) the default demo cohort is simulated once; then, per runner, a
fresh project whose data/ holds only those raw files runs the whole ``train`` pipeline (data
engineering, both gene encoders per fold, the demo's 21 image cells, evaluation, reporting) in its
own process, so no runner reuses another's outputs, training runs or feature cache. Sequential runs
with torch's default threads (what a user gets); the workers with one thread each. Written to
``--out`` (default benchmarks/results/runners_demo/, committed): runners.json.

What to expect (written before the first whole-pipeline run, 2026-12-06): the grid alone measured
0.63 (ParallelRunner) and 0.87 (Dask) against sequential. The whole pipeline adds stages that are
one chain of nodes (reading and tiling the cohort, one scVI/scANVI node over the folds, the report),
where two workers can do no more than one, and each worker's start-up (torch, Lightning,
scvi-tools) is paid again; so the ratio should rise towards 1: ParallelRunner 0.65-0.9, Dask
0.8-1.0. Whether the tables are identical is recorded: sequential here uses two threads and the
workers one, so tiny float differences may move a probe (the tests compare one-thread runs exactly).
``--render`` re-compares the finished runs' tables without running them again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch_project import scratch_project  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = "train"


def kedro_run(project: Path, pipelines: str, *args: str) -> float:
    """``kedro run --pipeline=<pipelines> <args>`` in ``project``, its own process; wall seconds."""
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    log = project / f"kedro_run_{pipelines.replace(',', '+')}.log"
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(
            [sys.executable, "-m", "kedro", "run", f"--pipeline={pipelines}", *args],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"kedro run --pipeline={pipelines} {' '.join(args)} failed in {project}: see {log}")
    return seconds


def _results(project: Path) -> pd.DataFrame:
    folder = project / "data" / "08_reporting" / "results.csv"
    latest = sorted(folder.iterdir())[-1]
    return pd.read_csv(latest / "results.csv").drop(columns="run_id")


def differences(tables: dict[str, pd.DataFrame]) -> dict:
    """Each runner's results against the SequentialRunner's: identical or not, and by how much."""
    base = tables["SequentialRunner"]
    out = {}
    for name, table in tables.items():
        if name == "SequentialRunner":
            continue
        f1 = (table["macro_f1"] - base["macro_f1"]).abs()
        r = (table["pearson_r_top50"] - base["pearson_r_top50"]).abs()
        out[name] = {
            "identical": bool(table.equals(base)),
            "max_abs_macro_f1_difference": round(float(f1.max()), 4),
            "classification_rows_differing": int((f1 > 0).sum()),
            "classification_rows": int(base["macro_f1"].notna().sum()),
            "max_abs_pearson_r_difference": round(float(r.max()), 4),
        }
    workers = [t for n, t in tables.items() if n != "SequentialRunner"]
    out["one_thread_runners_identical"] = all(t.equals(workers[0]) for t in workers)
    return out


def _project_with_raw_data(raw: Path, target: Path) -> Path:
    """A fresh scratch project whose data/ holds only the raw demo files."""
    shutil.rmtree(target, ignore_errors=True)
    scratch_project(target)
    shutil.copytree(raw / "data" / "01_raw", target / "data" / "01_raw")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "runners_demo_work")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "runners_demo")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-dask", action="store_true", help="time Sequential and ParallelRunner only")
    parser.add_argument(
        "--render", action="store_true", help="only re-compare the finished runs' results (times kept)"
    )
    args = parser.parse_args()
    work = args.work.resolve()
    if args.render:
        report = json.loads((args.out / "runners.json").read_text())
        tables = {name: _results(work / name) for name in report["seconds"]}
        report.pop("results_identical_to_sequential", None)
        report["results_against_sequential"] = differences(tables)
        (args.out / "runners.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        return
    raw = scratch_project(work / "raw")
    started = time.perf_counter()
    if not (raw / "data" / "01_raw" / "demo_her2st").exists():
        kedro_run(raw, "demo_cohort")
    n = str(args.workers)
    runners = {
        "SequentialRunner": [],
        "ParallelRunner": ["--runner=ParallelRunner", f"--runner-params=max_workers={n}"],
    }
    if not args.no_dask:
        runners["DaskRunner"] = [
            "--runner=tpir_kedro.dask_runner.DaskRunner",
            f"--runner-params=n_workers={n}",
        ]
    seconds, tables = {}, {}
    for name, options in runners.items():
        project = _project_with_raw_data(raw, work / name)
        seconds[name] = kedro_run(project, PIPELINE, *options)
        tables[name] = _results(project)
        print(f"{name}: {seconds[name]:.0f} s", flush=True)
    base = seconds["SequentialRunner"]
    report = {
        "what": "wall seconds of `kedro run --pipeline=train` from an empty data/ (raw demo files only)",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "workers": args.workers,
        "cells": "10 variants x held-out B x seed 0, 10 final models, majority__B (21 namespaces)",
        "stages": "data_engineering, gene_vae, contrastive, evaluation, reporting",
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "ratio_to_sequential": {k: round(v / base, 3) for k, v in seconds.items()},
        "results_identical_to_sequential": {
            k: bool(t.equals(tables["SequentialRunner"]))
            for k, t in tables.items()
            if k != "SequentialRunner"
        },
        "benchmark_seconds": round(time.perf_counter() - started, 1),
        "command": "benchmarks/bench_runners.py" + (" --no-dask" if args.no_dask else ""),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runners.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
