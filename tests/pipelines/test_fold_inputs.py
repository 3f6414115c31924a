"""The fold rule for image training: for held-out patient P, every training array comes from the
other patients; P contributes its patches and, for scoring only, its labels and top-gene expression.

The cohort is the tiny simulated one read through the HER2ST reader, its patch store is tiled from
its own images, and the gene encoders are stubs that record every spot they are shown.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tpir_kedro.cohort.schema import COUNTS_LAYER, TISSUE_CLASSES, label_categorical
from tpir_kedro.cohort.sources import Her2stDirectory
from tpir_kedro.evaluation import fold_inputs as fold_inputs_mod
from tpir_kedro.evaluation.fold_inputs import (
    FoldInputs,
    build_fold_inputs,
    check_gene_encoders,
    check_patch_store,
)
from tpir_kedro.evaluation.folds import ALL_PATIENTS, fold_key, patient_folds
from tpir_kedro.imaging.tiling import plan_tiling, write_patch_store
from tpir_kedro.pipelines.contrastive.nodes import cell_fold_inputs

N_GENES, N_TOP, N_LATENT = 30, 10, 4
HELD_OUT = "A"  # C has the section without an image (C2), so here it is a training patient
FOLD = fold_key(HELD_OUT)
TRAIN_FIELDS = (
    "train_obs",
    "train_rows",
    "train_patient_codes",
    "train_labels",
    "train_patient_names",
    "log_hvg",
    "class_probs",
    "train_top_expression",
)


class StubEncoder:
    """A frozen gene encoder's interface: ``genes``, ``embed`` and ``predict_proba``, computed from
    the spots' own counts (so a leak of held-out counts would change them), recording every spot."""

    def __init__(self, genes: list[str]):
        self.genes = list(genes)
        self.seen: list[str] = []

    def _counts(self, adata) -> np.ndarray:
        self.seen.extend(adata.obs_names)
        columns = adata.var_names.get_indexer(self.genes[:N_LATENT])
        return np.asarray(sp.csr_matrix(adata.layers[COUNTS_LAYER])[:, columns].todense(), dtype=np.float64)

    def embed(self, adata) -> np.ndarray:
        return np.log1p(self._counts(adata)) - 0.5

    def predict_proba(self, adata) -> pd.DataFrame:
        logits = np.log1p(self._counts(adata))[:, :3]
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        # Three classes, not in TISSUE_CLASSES order: the fold inputs must reorder and zero-fill.
        return pd.DataFrame(
            p, index=adata.obs_names, columns=[TISSUE_CLASSES[4], TISSUE_CLASSES[0], TISSUE_CLASSES[2]]
        )


@pytest.fixture(scope="module")
def cohort(tiny_demo_dir):
    return Her2stDirectory(tiny_demo_dir).read()


@pytest.fixture(scope="module")
def store(cohort, tmp_path_factory):
    return write_patch_store(
        plan_tiling(cohort, size_um=100, size_px=16), tmp_path_factory.mktemp("fold_inputs") / "store"
    )


@pytest.fixture(scope="module")
def folds(cohort):
    return patient_folds(cohort.obs)


@pytest.fixture(scope="module")
def fold_genes(cohort, folds):
    names = list(cohort.var_names)
    keys = [*pd.unique(folds["fold"]), ALL_PATIENTS]
    return {key: names[i : i + N_GENES][::-1] for i, key in enumerate(keys)}  # a different list per fold


def stub_encoders(fold_genes) -> dict[str, dict[str, StubEncoder]]:
    return {
        fold: {"scvi": StubEncoder(genes), "scanvi": StubEncoder(genes)} for fold, genes in fold_genes.items()
    }


def build(cohort, store, folds, fold_genes, fold=FOLD, encoders=None) -> tuple[FoldInputs, dict]:
    encoders = encoders or stub_encoders(fold_genes)
    return build_fold_inputs(cohort, store, folds, fold_genes, encoders, fold, n_top_genes=N_TOP), encoders


def scrambled(cohort, patient: str, seed: int = 0):
    """A copy with ``patient``'s counts and labels replaced by random ones."""
    out = cohort.copy()
    rows = (out.obs["patient"].astype(str) == patient).to_numpy()
    rng = np.random.default_rng(seed)
    counts = out.layers[COUNTS_LAYER].toarray()
    counts[rows] = rng.poisson(20, size=(rows.sum(), counts.shape[1]))
    out.layers[COUNTS_LAYER] = sp.csr_matrix(counts.astype(np.int32))
    labels = out.obs["label"].astype(str).to_numpy()
    labels[rows] = rng.choice(list(TISSUE_CLASSES), rows.sum())
    out.obs["label"] = label_categorical(labels)
    return out


def patients_of(cohort, obs_names) -> set[str]:
    return set(cohort.obs.loc[list(obs_names), "patient"].astype(str))


# --- the fold rule ----------------------------------------------------------------------------


def test_no_held_out_spot_is_on_the_training_side(cohort, store, folds, fold_genes):
    inputs, encoders = build(cohort, store, folds, fold_genes)
    obs = cohort.obs
    held_out = obs.index[(obs["patient"].astype(str) == HELD_OUT) & obs["has_image"].astype(bool)]

    assert inputs.held_out_patient == HELD_OUT and inputs.train_patients == ["B", "C"]
    assert patients_of(cohort, inputs.train_obs) == {"B", "C"}
    assert inputs.train_obs.intersection(held_out).empty
    assert inputs.test_obs.equals(held_out) and len(held_out) > 0
    # Rows point at the right patches, and no training row is a held-out patch.
    np.testing.assert_array_equal(inputs.train_rows, store.index.loc[inputs.train_obs, "row"].to_numpy())
    np.testing.assert_array_equal(inputs.test_rows, store.index.loc[held_out, "row"].to_numpy())
    assert not set(inputs.train_rows) & set(inputs.test_rows)
    assert set(store.index.iloc[inputs.train_rows]["patient"].astype(str)) == {"B", "C"}
    # Row alignment of every training array.
    n = len(inputs.train_obs)
    assert inputs.log_hvg.shape == (n, N_GENES) and inputs.log_hvg.dtype == np.float32
    assert inputs.train_top_expression.shape == (n, N_TOP) and inputs.test_top_expression.shape == (
        len(held_out),
        N_TOP,
    )
    assert inputs.class_probs.shape == (n, len(TISSUE_CLASSES))
    assert {k: v.shape for k, v in inputs.embeddings.items()} == {
        "scvi": (n, N_LATENT),
        "scanvi": (n, N_LATENT),
    }
    np.testing.assert_array_equal(
        inputs.train_labels, obs.loc[inputs.train_obs, "label"].astype(str).to_numpy()
    )
    np.testing.assert_array_equal(
        inputs.train_patient_names, obs.loc[inputs.train_obs, "patient"].astype(str).to_numpy()
    )
    assert [inputs.train_patients[c] for c in inputs.train_patient_codes] == list(inputs.train_patient_names)
    assert inputs.genes == fold_genes[FOLD] and inputs.top_genes == fold_genes[FOLD][:N_TOP]
    # scANVI's classes land in their TISSUE_CLASSES columns; absent classes are zero.
    assert np.allclose(inputs.class_probs.sum(axis=1), 1.0)
    assert (inputs.class_probs[:, [1, 3, 5]] == 0).all() and (inputs.class_probs[:, [0, 2, 4]] > 0).all()
    codes = inputs.train_label_codes
    assert ((codes >= 0) == np.isin(inputs.train_labels, TISSUE_CLASSES)).all()


def test_the_gene_encoders_never_see_a_held_out_spot(cohort, store, folds, fold_genes):
    inputs, encoders = build(cohort, store, folds, fold_genes)
    for kind, encoder in encoders[FOLD].items():
        assert encoder.seen, f"the {kind} encoder was not used"
        assert HELD_OUT not in patients_of(cohort, encoder.seen), kind
        assert set(encoder.seen) == set(inputs.train_obs), kind
    # Other folds' encoders are not touched at all.
    assert all(not e.seen for fold, kinds in encoders.items() if fold != FOLD for e in kinds.values())


def test_the_held_out_patients_counts_and_labels_change_only_the_scoring_side(
    cohort, store, folds, fold_genes
):
    original, _ = build(cohort, store, folds, fold_genes)
    changed, _ = build(scrambled(cohort, HELD_OUT), store, folds, fold_genes)

    for field in TRAIN_FIELDS:
        a, b = getattr(original, field), getattr(changed, field)
        if isinstance(a, pd.Index):
            assert a.equals(b), field
        else:
            np.testing.assert_array_equal(a, b, err_msg=field)
    assert original.embeddings.keys() == changed.embeddings.keys()
    for kind in original.embeddings:
        np.testing.assert_array_equal(original.embeddings[kind], changed.embeddings[kind], err_msg=kind)
    assert (original.genes, original.top_genes) == (changed.genes, changed.top_genes)
    assert original.test_obs.equals(changed.test_obs)
    np.testing.assert_array_equal(original.test_rows, changed.test_rows)
    # ...while the scrambling did reach the held-out side, so the comparison above is not vacuous.
    assert not np.array_equal(original.test_labels, changed.test_labels)
    assert not np.array_equal(original.test_top_expression, changed.test_top_expression)


def test_a_training_patients_counts_do_change_the_training_side(cohort, store, folds, fold_genes):
    """The control for the test above: the same scrambling of a training patient shows everywhere."""
    original, _ = build(cohort, store, folds, fold_genes)
    changed, _ = build(scrambled(cohort, "B"), store, folds, fold_genes)
    for field in ("train_labels", "log_hvg", "class_probs", "train_top_expression"):
        assert not np.array_equal(getattr(original, field), getattr(changed, field)), field
    assert not np.array_equal(original.embeddings["scvi"], changed.embeddings["scvi"])
    np.testing.assert_array_equal(original.test_top_expression, changed.test_top_expression)


def test_sections_without_an_image_are_skipped_with_a_log_line(cohort, store, folds, fold_genes, caplog):
    imageless = cohort.obs.index[~cohort.obs["has_image"].astype(bool)]
    sections = set(cohort.obs.loc[imageless, "section"].astype(str))
    assert sections == {"C2"} and len(imageless) > 0
    with caplog.at_level(logging.INFO, logger=fold_inputs_mod.__name__):
        inputs, encoders = build(cohort, store, folds, fold_genes)
    assert inputs.train_obs.intersection(imageless).empty
    assert not set(encoders[FOLD]["scvi"].seen) & set(imageless)
    lines = [r.getMessage() for r in caplog.records if r.name == fold_inputs_mod.__name__]
    assert any(re.search(rf"section C2 has no image: its {len(imageless)} spots", line) for line in lines), (
        lines
    )

    # Holding C out: C2 is neither trained on nor scored, and not logged as a training section.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=fold_inputs_mod.__name__):
        held_c, _ = build(cohort, store, folds, fold_genes, fold=fold_key("C"))
    assert held_c.test_obs.intersection(imageless).empty and len(held_c.test_obs) > 0
    assert not any("C2" in r.getMessage() for r in caplog.records)


def test_the_all_patient_fold_trains_on_everyone_and_tests_nothing(cohort, store, folds, fold_genes):
    inputs, encoders = build(cohort, store, folds, fold_genes, fold=ALL_PATIENTS)
    with_image = cohort.obs_names[cohort.obs["has_image"].astype(bool).to_numpy()]
    assert inputs.held_out_patient is None and inputs.train_patients == ["A", "B", "C"]
    assert inputs.train_obs.equals(with_image)
    assert len(inputs.test_obs) == 0 and len(inputs.test_rows) == 0 and len(inputs.test_labels) == 0
    assert inputs.test_top_expression.shape == (0, N_TOP)
    assert sorted(inputs.train_rows) == list(range(len(store)))
    assert set(encoders[ALL_PATIENTS]["scvi"].seen) == set(with_image)


def test_the_node_builds_each_cells_fold_and_the_all_patient_one(cohort, store, folds, fold_genes):
    encoders = stub_encoders(fold_genes)
    for fold in [fold_key(p) for p in ("A", "B", "C")] + [ALL_PATIENTS]:
        f = cell_fold_inputs(cohort, folds, fold_genes, encoders, store, {"n_top_genes": N_TOP}, fold=fold)
        assert f.fold == fold
        if f.held_out_patient is not None:
            assert f.held_out_patient not in patients_of(cohort, f.train_obs)
            assert f.held_out_patient not in patients_of(cohort, encoders[fold]["scanvi"].seen)
    with pytest.raises(ValueError, match="holdout_Z.*run data_engineering"):
        cell_fold_inputs(cohort, folds, fold_genes, encoders, store, {}, fold="holdout_Z")


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mismatch", ["reordered", "one gene swapped", "one gene fewer"])
def test_a_gene_encoder_on_other_genes_is_an_error_naming_the_fold(
    cohort, store, folds, fold_genes, mismatch
):
    fold = fold_key("B")
    genes = list(fold_genes[fold])
    other = {
        "reordered": genes[::-1],
        "one gene swapped": [*genes[:-1], next(g for g in cohort.var_names if g not in genes)],
        "one gene fewer": genes[:-1],
    }[mismatch]
    encoders = stub_encoders(fold_genes)
    encoders[fold]["scanvi"] = StubEncoder(other)
    with pytest.raises(ValueError, match=rf"scanvi gene encoder of fold {fold} "):
        build(cohort, store, folds, fold_genes, fold=fold, encoders=encoders)
    assert not encoders[fold]["scvi"].seen  # checked before anything is embedded
    with pytest.raises(ValueError, match=rf"fold {fold}"):
        check_gene_encoders(fold, genes, encoders[fold])


def test_a_fold_without_genes_or_encoders_is_an_error(cohort, store, folds, fold_genes):
    encoders = stub_encoders(fold_genes)
    del encoders[FOLD]
    with pytest.raises(KeyError, match=FOLD):
        build(cohort, store, folds, fold_genes, encoders=encoders)


def test_the_matching_patch_store_passes(cohort, store):
    check_patch_store(cohort, store)


def test_a_patch_store_missing_a_spot_is_an_error_naming_it(cohort, tmp_path):
    with_image = cohort.obs_names[cohort.obs["has_image"].astype(bool).to_numpy()]
    dropped = with_image[7]
    smaller = write_patch_store(
        plan_tiling(cohort[cohort.obs_names != dropped], size_um=100, size_px=16), tmp_path / "smaller"
    )
    with pytest.raises(ValueError, match=re.escape(str(smaller.path))) as err:
        check_patch_store(cohort, smaller)
    assert "1 spot(s) with an image have no patch" in str(err.value) and dropped in str(err.value)


def test_a_patch_store_with_extra_rows_is_an_error_naming_it(cohort, store):
    extra = cohort.obs_names[cohort.obs["has_image"].astype(bool).to_numpy()][3]
    with pytest.raises(ValueError, match=re.escape(str(store.path))) as err:
        check_patch_store(cohort[cohort.obs_names != extra], store)
    assert "1 patch(es) belong to no cohort spot" in str(err.value) and extra in str(err.value)
    with pytest.raises(ValueError, match=re.escape(str(store.path))):
        cell_fold_inputs(
            cohort[cohort.obs_names != extra],
            patient_folds(cohort.obs),
            {},
            {},
            store,
            {"n_top_genes": N_TOP},
            fold="holdout_A",
        )
