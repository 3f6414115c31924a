"""The batch-effect experiment's committed tables are what its committed cells give.

README and docs/results.md quote grid.csv, deltas.csv, gene_silhouettes.csv and reading.json; each
cell's own tables are the record. Re-reading the cells (what ``bench_batch_effect.py --render``
does) must give the committed summaries, so no quoted number can drift from the cells, and the
gene side's patient decodability must come from the cells' per-fold tables.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "batch_effect_demo"
SUMMARIES = ("grid.csv", "deltas.csv", "gene_silhouettes.csv")


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the script imports its scratch_project helper
    try:
        spec = importlib.util.spec_from_file_location(
            "bench_batch_effect", ROOT / "benchmarks" / "bench_batch_effect.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


@pytest.fixture(scope="module")
def rendered(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch_effect") / "batch_effect_demo"
    shutil.copytree(RESULTS / "cells", out / "cells")
    verdict = bench.summarise(out, bench.N_PATIENTS)
    return out, verdict


@pytest.mark.parametrize("name", SUMMARIES)
def test_the_committed_summaries_are_what_the_cells_give(rendered, name):
    out, _ = rendered
    pd.testing.assert_frame_equal(pd.read_csv(out / name), pd.read_csv(RESULTS / name))


def test_the_committed_reading_is_what_the_cells_give(rendered):
    _, verdict = rendered
    committed = json.loads((RESULTS / "reading.json").read_text())
    assert json.loads(json.dumps(verdict, default=str)) == committed


def test_the_gene_side_decodability_is_the_mean_of_the_cells_fold_table(rendered):
    out, _ = rendered
    genes = pd.read_csv(out / "gene_silhouettes.csv")
    assert genes["patient_decodability"].notna().all()
    folds = pd.read_csv(out / "cells" / "k1_s3" / "gene_label_transfer.csv")
    scvi = folds.loc[folds["embedding"] == "scvi", "patient_decodability"]
    assert len(scvi) == 6  # one per held-out patient's fold
    row = genes[(genes["k"] == 1.0) & (genes["s"] == 3.0) & (genes["embedding"] == "scvi")]
    assert row["patient_decodability"].item() == pytest.approx(scvi.mean())


def test_without_the_fold_table_the_gene_side_decodability_is_missing(bench, rendered, tmp_path):
    out, _ = rendered
    cell = tmp_path / "cells" / "k0_s3"
    shutil.copytree(out / "cells" / "k0_s3", cell)
    (cell / "gene_label_transfer.csv").unlink()
    genes = bench.gene_silhouettes({(0.0, 3.0): bench._read_cell(cell)})
    assert len(genes) == 3 and np.isnan(genes["patient_decodability"]).all()
