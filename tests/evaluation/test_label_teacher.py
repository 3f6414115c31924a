"""The gene-side teacher (labels from expression alone): the held-out patient never reaches a fit,
every unlabelled teacher spot gets a class, and its leave-one-patient-out quality is per patient."""

from __future__ import annotations

import logging

import numpy as np
import pytest

scvi = pytest.importorskip("scvi")
import torch  # noqa: E402

from tpir_kedro.cohort.schema import TISSUE_CLASSES, UNLABELLED, is_classified, label_categorical  # noqa: E402
from tpir_kedro.cohort.sources import Her2stDirectory  # noqa: E402
from tpir_kedro.evaluation.label_teacher import (  # noqa: E402
    fit_teacher,
    fit_teacher_base,
    teacher_quality,
    teacher_spots,
    transfer_labels,
)
from tpir_kedro.models.gene_vae import GeneVaeConfig  # noqa: E402

# Enough epochs for the tiny demo's tissue to be learnt (3 + 2 left every spot one class).
TINY = GeneVaeConfig(
    scvi_max_epochs=30, scanvi_max_epochs=10, n_hidden=32, n_latent=4, accelerator="cpu", seed=0
)
HELD_OUT = "A"


@pytest.fixture(scope="module")
def cohort(tiny_demo_dir):
    """The tiny demo (one labelled section per patient, as HER2ST) with every other labelled spot of B
    unlabelled, so the teacher has spots to label whose truth is known."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for name in ("scvi", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    adata = Her2stDirectory(tiny_demo_dir).read()
    adata.obs["batch"] = adata.obs["patient"].astype(str).astype("category")
    labels = adata.obs["label"].astype(str).to_numpy().copy()
    adata.obs["true_label"] = labels.copy()  # the simulator's truth, for scoring only
    of_b = np.flatnonzero((adata.obs["patient"].astype(str).to_numpy() == "B") & is_classified(labels))
    labels[of_b[::2]] = UNLABELLED
    adata.obs["label"] = label_categorical(labels)
    yield adata
    torch.set_num_threads(threads)


def transferred(cohort):
    teach = teacher_spots(cohort, [HELD_OUT])
    genes = list(cohort.var_names)
    base = fit_teacher_base(teach, genes, TINY)
    return teach, genes, base, transfer_labels(teach, fit_teacher(teach, genes, TINY, base))


def test_the_held_out_patient_never_reaches_the_teacher(cohort):
    """Planting: A's expression permuted and its labels scrambled change no transferred label, and no
    A spot is among the spots the teacher fits or labels."""
    teach, _, _, labels = transferred(cohort)
    assert HELD_OUT not in set(teach.obs["patient"].astype(str))
    assert HELD_OUT not in set(labels["patient"])

    planted = cohort.copy()
    a = np.flatnonzero(planted.obs["patient"].astype(str).to_numpy() == HELD_OUT)
    rng = np.random.default_rng(0)
    counts = planted.layers["counts"].tocsr()
    counts[a] = counts[rng.permutation(a)][:, rng.permutation(counts.shape[1])]
    planted.layers["counts"] = counts
    scrambled = planted.obs["label"].astype(str).to_numpy().copy()
    scrambled[a] = rng.choice(TISSUE_CLASSES, size=len(a))
    planted.obs["label"] = label_categorical(scrambled)
    _, _, _, again = transferred(planted)
    assert again.equals(labels)


def test_every_unlabelled_teacher_spot_gets_a_tissue_class(cohort):
    teach, genes, base, labels = transferred(cohort)
    expected = teach.obs_names[teach.obs["label"].astype(str).to_numpy() == UNLABELLED]
    assert list(labels.index) == list(expected)
    assert set(labels["label"]) <= set(TISSUE_CLASSES)
    assert labels["confidence"].between(0, 1).all()
    # On the simulated demo the tissue is easy to read from expression: the teacher mostly agrees
    # with the simulator's truth on the spots it labelled.
    truth = cohort.obs.loc[labels.index, "true_label"].to_numpy()
    known = is_classified(truth)  # the spots of B this test unlabelled
    assert known.sum() > 10 and (labels["label"].to_numpy()[known] == truth[known]).mean() > 0.5


def test_teacher_quality_scores_each_labelled_teacher_patient_with_its_labels_hidden(cohort):
    teach, genes, base, _ = transferred(cohort)
    quality = teacher_quality(teach, genes, TINY, base)
    labels = teach.obs["label"].astype(str).to_numpy()
    patients = teach.obs["patient"].astype(str).to_numpy()
    assert list(quality["held_out_patient"]) == ["B", "C"]
    for row in quality.itertuples():
        assert row.n_test == int((is_classified(labels) & (patients == row.held_out_patient)).sum())
        assert row.n_train == int((is_classified(labels) & (patients != row.held_out_patient)).sum())
        assert 0 <= row.macro_f1 <= 1
