"""The demo simulator: HER2ST layout through the real reader, seeded, with real batch effects."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from tpir_kedro.cohort.batch_effect import silhouettes_by_patient_and_class
from tpir_kedro.cohort.demo import DemoCohortConfig, simulate_demo_cohort
from tpir_kedro.cohort.schema import TISSUE_CLASSES, UNDETERMINED, is_classified, validate_cohort
from tpir_kedro.cohort.sources import Her2stDirectory


def test_tiny_demo_reads_through_the_her2st_reader(tiny_demo_dir, tiny_demo_config):
    cohort = Her2stDirectory(tiny_demo_dir).read()
    validate_cohort(cohort)
    assert sorted(cohort.obs["patient"].unique()) == ["A", "B", "C"]
    assert cohort.obs["section"].nunique() == 6
    # One labelled section per patient, like HER2ST; the last section has no image.
    labelled = cohort.obs.groupby("section", observed=True)["label"].apply(
        lambda s: (s.astype(str) != "unlabelled").any()
    )
    assert labelled.to_dict() == {"A1": True, "A2": False, "B1": True, "B2": False, "C1": True, "C2": False}
    assert not cohort.obs.loc[cohort.obs["section"] == "C2", "has_image"].any()
    # Sections measure slightly different genes; the cohort keeps the shared ones.
    assert cohort.n_vars < tiny_demo_config.expression.n_genes
    assert cohort.obs["um_per_px"].dropna().between(1.9, 2.1).all()
    assert set(cohort.obs["label"].astype(str)) <= {*TISSUE_CLASSES, UNDETERMINED, "unlabelled"}


@pytest.mark.slow  # simulates four cohorts
def test_same_seed_same_cohort_other_seed_other_cohort(tiny_demo_config):
    a = simulate_demo_cohort(tiny_demo_config).sections["A1"]
    b = simulate_demo_cohort(tiny_demo_config).sections["A1"]
    assert a.counts.equals(b.counts) and np.array_equal(a.image, b.image)
    c = simulate_demo_cohort(dataclasses.replace(tiny_demo_config, seed=tiny_demo_config.seed + 1)).sections[
        "A1"
    ]
    assert not np.array_equal(a.image, c.image)


def test_unknown_parameter_is_rejected():
    with pytest.raises(ValueError, match="n_patiens"):
        DemoCohortConfig.from_dict({"n_patiens": 3})


@pytest.fixture(scope="module")
def default_demo_cohort(tmp_path_factory, project_root):
    from tpir_kedro.cohort.her2st_layout import write_her2st_layout

    root = tmp_path_factory.mktemp("demo") / "her2st"
    write_her2st_layout(
        simulate_demo_cohort(DemoCohortConfig.from_dict(_base_parameters(project_root))), root
    )
    return Her2stDirectory(root).read()


def _base_parameters(project_root) -> dict:
    import yaml

    return yaml.safe_load((project_root / "conf/base/parameters_demo_cohort.yml").read_text())["demo_cohort"]


@pytest.mark.slow  # simulates the default-size demo
def test_raw_expression_groups_spots_by_patient_more_than_by_class(default_demo_cohort):
    """The property the demo exists for (real HER2ST: ~0.30 by patient vs ~-0.03 by class)."""
    scores = silhouettes_by_patient_and_class(default_demo_cohort)
    assert scores["n_patients"] == 4 and scores["n_classes"] == 6
    assert scores["silhouette_patient"] > 0.2
    assert scores["silhouette_patient"] > scores["silhouette_class"] + 0.1


def test_classes_are_spatially_coherent_and_compositions_differ_by_patient(default_demo_cohort):
    obs = default_demo_cohort.obs
    labelled = obs[obs["label"].astype(str).isin(TISSUE_CLASSES)]
    # Neighbouring spots (one array step apart) share a label far more often than chance.
    by_pos = {(r.section, r.array_x, r.array_y): r.label for r in labelled.itertuples()}
    same = [by_pos[(s, x + 1, y)] == lab for (s, x, y), lab in by_pos.items() if (s, x + 1, y) in by_pos]
    chance = (labelled["label"].value_counts(normalize=True) ** 2).sum()
    assert np.mean(same) > chance + 0.2
    composition = (
        labelled.groupby("patient", observed=True)["label"].value_counts(normalize=True).unstack(fill_value=0)
    )
    assert (composition.max(axis=0) - composition.min(axis=0)).max() > 0.15


@pytest.mark.slow  # trains scVI
def test_scvi_mixes_the_demo_patients_better_than_pca(default_demo_cohort):
    """What the simulator was built for: a batch effect scVI can (partly) remove and PCA keeps."""
    from sklearn.neighbors import NearestNeighbors

    from tpir_kedro.cohort.gene_selection import select_genes
    from tpir_kedro.cohort.log_expression import LogNormalisedPca
    from tpir_kedro.cohort.spot_qc import add_batch_labels
    from tpir_kedro.models.gene_vae import GeneVaeConfig, fit_gene_encoders

    cohort = add_batch_labels(default_demo_cohort, "patient")
    patients = sorted(cohort.obs["patient"].unique())
    genes = select_genes(cohort, patients, n_top_genes=300)
    config = GeneVaeConfig(
        scvi_max_epochs=100, scanvi_max_epochs=1, accelerator="cpu", seed=0
    )  # the pipeline default
    scvi_z = fit_gene_encoders(cohort, genes, config)["scvi"].embed(cohort)
    pca = LogNormalisedPca().fit(cohort, genes, patients, n_pcs=10).transform(cohort)
    patient = cohort.obs["patient"].astype(str).to_numpy()

    def other_patient_neighbours(x):
        idx = NearestNeighbors(n_neighbors=16).fit(x).kneighbors(x, return_distance=False)[:, 1:]
        return (patient[idx] != patient[:, None]).mean()

    def silhouette_patient(x):
        labelled = is_classified(cohort.obs["label"])
        return silhouette_score(x[labelled], patient[labelled])

    assert other_patient_neighbours(scvi_z) > other_patient_neighbours(pca) + 0.02
    assert silhouette_patient(scvi_z) < silhouette_patient(pca) - 0.05


def test_new_patients_each_have_their_own_letter_slide_and_stream(tiny_demo_config):
    from tpir_kedro.cohort.demo.held_out_slide import held_out_patient, simulate_held_out_slide

    first, again, second = (simulate_held_out_slide(tiny_demo_config, i) for i in (0, 0, 1))
    # Patient 0 is the demo slide (its default); the next ones continue the cohort's letters.
    assert np.array_equal(simulate_held_out_slide(tiny_demo_config).image, first.image)
    assert np.array_equal(first.image, again.image)
    assert (first.patient, second.patient) == ("D", "E") and (first.name, second.name) == ("D1", "E1")
    assert first.image.shape == second.image.shape and not np.array_equal(first.image, second.image)
    assert is_classified(second.labels["label"].to_numpy(str)).sum() > 10
    with pytest.raises(ValueError, match="letters for"):
        held_out_patient(tiny_demo_config, 26)
