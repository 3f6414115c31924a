"""The her2st environment runs under its own defaults on the real labelled sections, as a user types it:
``kedro run --pipeline=data_engineering --env her2st --params "cohort.sections=labelled"``, then the same
with ``--pipeline=gene_vae``. Base's label budget (image_spots) left the fold holding A out without a
label, and the scorecard crashed on its missing scANVI; conf/her2st now chooses ``all``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from kedro.framework.session import KedroSession

PATIENTS = list("ABCDEFGH")
EMBEDDINGS = ["pca", "harmony", "scvi", "scanvi"]
# Epochs only, so the nine scVI/scANVI fits (eight folds + all patients) stay affordable on 2 CPU cores;
# the label budget, genes, folds and everything else are the environment's. At the defaults (100 + 20
# epochs) each fit takes 2-3 min on 2 idle cores, so gene_vae alone is over 20 min.
EPOCHS = {"scvi_max_epochs": 4, "scanvi_max_epochs": 2}
# One thread for torch, BLAS and numba: on 2 cores that other jobs share, two OpenMP threads mostly wait
# for each other (8 scVI epochs of one fold: 155 s with two threads, 17 s with one, measured side by side
# with other runs). A runtime setting, not a parameter: what the environment configures is untouched.
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def her2st_run(her2st_dir, tmp_path_factory, project_copy):
    """A project copy with an empty data/ on which both commands ran, each in its own process.

    The copy's conf/her2st/parameters_gene_vae.yml gets fewer epochs (``EPOCHS``) beside the
    environment's ``scanvi_labels``, which stays as it is (a second file could not hold ``gene_vae``:
    Kedro refuses a top-level key twice in one environment). Runs single-threaded (``THREADS``).
    """
    project = project_copy(tmp_path_factory.mktemp("her2st_env") / "project")
    own = project / "conf" / "her2st" / "parameters_gene_vae.yml"
    params = yaml.safe_load(own.read_text())
    assert not set(EPOCHS) & set(params["gene_vae"])
    params["gene_vae"].update(EPOCHS)
    own.write_text(yaml.safe_dump(params))
    env = {
        **os.environ,
        **THREADS,
        "TPIR_HER2ST_DIR": str(her2st_dir),
        "KEDRO_DISABLE_TELEMETRY": "true",
        "COLUMNS": "400",
    }
    seconds = {}
    for pipeline in ("data_engineering", "gene_vae"):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "kedro", "run", f"--pipeline={pipeline}", "--env", "her2st"]
            + ["--params", "cohort.sections=labelled"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds[pipeline] = time.perf_counter() - start
        (project / f"kedro_run_{pipeline}.log").write_text(done.stdout + done.stderr)
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    print(f"her2st labelled sections, seconds per pipeline: {seconds}")
    with KedroSession.create(project_path=project, env="her2st") as session:
        return session.load_context().catalog


@pytest.mark.slow
def test_the_scorecard_has_numbers_for_every_embedding_over_every_fold(her2st_run):
    scorecard = her2st_run.load("gene_embedding_scorecard").set_index("embedding")
    assert list(scorecard.index) == [*EMBEDDINGS, "majority"]
    assert (scorecard["status"] == "fitted").all()
    assert (scorecard["n_folds"] == len(PATIENTS)).all() and (scorecard["n_folds_not_fitted"] == 0).all()
    numbers = scorecard.loc[
        EMBEDDINGS, ["lopo_knn_macro_f1", "lopo_knn_accuracy", "silhouette_patient", "ilisi"]
    ]
    assert np.isfinite(numbers.astype(float).to_numpy()).all(), numbers
    assert scorecard.loc["scanvi", "unseen_patient_max_abs_change"] < 1e-4


@pytest.mark.slow
def test_label_transfer_covers_all_eight_patients_including_a(her2st_run):
    transfer = her2st_run.load("gene_label_transfer")
    for embedding in [*EMBEDDINGS, "majority"]:
        rows = transfer[transfer["embedding"] == embedding].set_index("held_out_patient")
        assert sorted(rows.index) == PATIENTS, embedding
        assert rows["macro_f1"].notna().all() and (rows["status"] == "fitted").all(), embedding
    # scANVI of the fold holding A out learnt from B-H's labels, all on imageless sections.
    encoders = her2st_run.load("gene_encoders")
    assert all(set(encoders[f"holdout_{p}"]) == {"scvi", "scanvi"} for p in PATIENTS)
    embedded = her2st_run.load("cohort_gene_embeddings")
    assert embedded.uns["gene_embeddings"]["not_fitted"] == {}
    assert "X_scanvi" in embedded.obsm
