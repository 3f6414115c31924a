"""Benchmark: scVI + scANVI training on the 8 labelled real HER2ST sections (one fit, all patients).

    .venv/bin/python benchmarks/bench_gene_vae.py [--her2st DIR] [--scvi-epochs 100] [--scanvi-epochs 20]

Prints wall time per model and the process's peak RSS. The parameters default to
conf/base/parameters_gene_vae.yml, so the numbers are what one fold of the real run costs.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LABELLED = ["A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--her2st",
        type=Path,
        default=Path(os.environ.get("TPIR_HER2ST_DIR", ROOT.parent / "shared" / "her2st")),
    )
    parser.add_argument("--scvi-epochs", type=int)
    parser.add_argument("--scanvi-epochs", type=int)
    args = parser.parse_args()

    from tpir_kedro.cohort.gene_selection import select_genes
    from tpir_kedro.cohort.sources import Her2stDirectory
    from tpir_kedro.cohort.spot_qc import add_batch_labels, filter_spots
    from tpir_kedro.models.gene_vae import GeneVaeConfig, fit_gene_encoders

    base = yaml.safe_load((ROOT / "conf/base/parameters_gene_vae.yml").read_text())["gene_vae"]
    base.pop("min_training_spots", None)
    if args.scvi_epochs is not None:
        base["scvi_max_epochs"] = args.scvi_epochs
    if args.scanvi_epochs is not None:
        base["scanvi_max_epochs"] = args.scanvi_epochs
    config = GeneVaeConfig.from_dict(base)

    cohort = Her2stDirectory(args.her2st).read(sections=LABELLED, n_jobs=2)
    cohort, _ = filter_spots(cohort, min_counts=100, min_genes=50)
    cohort = add_batch_labels(cohort, "patient")
    genes = select_genes(
        cohort,
        cohort.obs["patient"].unique(),
        n_top_genes=2000,
        exclude_patterns=["^MT-", "^RP[SL]\\d", "^MRP[SL]\\d"],
    )
    print(f"cohort: {cohort.n_obs} spots of {cohort.obs['patient'].nunique()} patients, {len(genes)} genes")

    t0 = time.perf_counter()
    encoders = fit_gene_encoders(cohort, genes, config)
    total = time.perf_counter() - t0
    timings = {kind: encoder.training_seconds for kind, encoder in encoders.items()}
    for kind, seconds in timings.items():
        epochs = config.scvi_max_epochs if kind == "scvi" else config.scanvi_max_epochs
        print(f"{kind}: {epochs} epochs in {seconds:.1f} s ({seconds / max(epochs, 1):.2f} s/epoch)")
    print(
        f"scVI + scANVI total {total:.1f} s on {config.accelerator}; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


if __name__ == "__main__":
    main()
