"""The gene-encoder family: every entry fits a tiny cohort, embeds its spots and a patient it never
saw (without that patient's labels or batch), survives save/load, and bad entries fail naming the key.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

scvi = pytest.importorskip("scvi")
import torch  # noqa: E402

from tpir_kedro.cohort.sources import Her2stDirectory  # noqa: E402
from tpir_kedro.models.gene_encoder import GeneEncoder  # noqa: E402
from tpir_kedro.models.gene_encoder_family import parse_family  # noqa: E402
from tpir_kedro.models.gene_vae import GeneVaeConfig, fit_gene_encoders  # noqa: E402

FAMILY = {
    "scvi": {"model": "scvi"},
    "scanvi": {"model": "scanvi", "base": "scvi"},
    "scvi_adversarial": {"model": "scvi", "adversarial_weight": 1.0},
    "scvi_batch_embedding": {"model": "scvi", "batch_representation": "embedding"},
    "sysvi": {"model": "sysvi", "cycle_weight": 2.0, "prior": "vamp", "n_prior_components": 5},
}
TINY = GeneVaeConfig(
    scvi_max_epochs=4,
    scanvi_max_epochs=2,
    n_hidden=32,
    n_latent=4,
    accelerator="cpu",
    seed=0,
    family=FAMILY,
    fit=tuple(FAMILY),
)
TRAIN, HELD_OUT = ["A", "B"], "C"


@pytest.fixture(scope="module")
def cohort(tiny_demo_dir):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for name in ("scvi", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    adata = Her2stDirectory(tiny_demo_dir).read()
    adata.obs["batch"] = adata.obs["patient"].astype(str).astype("category")
    yield adata
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def family(cohort):
    training = cohort[cohort.obs["patient"].isin(TRAIN).to_numpy()]
    return fit_gene_encoders(training, list(cohort.var_names), TINY)


def test_every_entry_fits_and_embeds_seen_and_unseen_spots(cohort, family):
    assert list(family) == ["scvi", "scvi_adversarial", "scvi_batch_embedding", "sysvi", "scanvi"]
    kinds = {name: enc.kind for name, enc in family.items()}
    assert kinds["sysvi"] == "sysvi" and kinds["scvi_adversarial"] == "scvi" and kinds["scanvi"] == "scanvi"
    held = (cohort.obs["patient"] == HELD_OUT).to_numpy()
    # the unseen patient without its labels or batch: only counts reach the encoders
    unseen = cohort[held].copy()
    unseen.obs = unseen.obs[[]].copy()
    for name, enc in family.items():
        z = enc.embed(cohort)
        assert z.shape == (cohort.n_obs, TINY.n_latent) and np.isfinite(z).all(), name
        np.testing.assert_allclose(enc.embed(unseen), z[held], rtol=1e-5, atol=1e-5, err_msg=name)
    # each entry is its own model: the adversary and the batch embedding change the fit
    z = {name: enc.embed(cohort) for name, enc in family.items()}
    assert not np.allclose(z["scvi"], z["scvi_adversarial"])
    assert not np.allclose(z["scvi"], z["scvi_batch_embedding"])
    assert family["scvi_batch_embedding"].model.module.batch_representation == "embedding"


def test_sysvi_embeds_an_unseen_patient_as_the_mean_over_training_patients(cohort, family):
    sysvi = family["sysvi"]
    held = cohort[(cohort.obs["patient"] == HELD_OUT).to_numpy()]
    as_each = [sysvi._latent(sysvi._model_input(held, assign_batch=b)) for b in TRAIN]
    assert not np.allclose(as_each[0], as_each[1])  # its encoder does take the patient
    np.testing.assert_allclose(sysvi.embed(held), np.mean(as_each, axis=0), rtol=1e-6)
    # a training spot keeps its own patient
    seen = cohort[(cohort.obs["patient"] == "A").to_numpy()]
    np.testing.assert_allclose(
        sysvi.embed(seen), sysvi._latent(sysvi._model_input(seen, assign_batch="A")), rtol=1e-6
    )
    assert sysvi.batch_invariance(held) > 0


def test_save_and_load_give_the_same_embeddings(cohort, family, tmp_path):
    for name in ("sysvi", "scvi_adversarial", "scvi_batch_embedding"):
        family[name].save(tmp_path / name)
        loaded = GeneEncoder.load(tmp_path / name)
        assert loaded.kind == family[name].kind
        np.testing.assert_allclose(loaded.embed(cohort), family[name].embed(cohort), rtol=1e-5, atol=1e-6)


def test_default_config_fits_scvi_and_scanvi_only():
    assert [s.name for s in GeneVaeConfig().encoder_specs()] == ["scvi", "scanvi"]


@pytest.mark.parametrize(
    ("family", "fit", "message"),
    [
        ({"scvi": {"model": "scvi"}}, ["scvy"], r"gene_vae\.fit: unknown encoder\(s\) \['scvy'\]"),
        ({"x": {"model": "vae"}}, ["x"], r"gene_vae\.family\.x\.model: 'vae' is not one of"),
        (
            {"x": {"model": "scvi", "adversarial_weight": -1}},
            ["x"],
            r"gene_vae\.family\.x\.adversarial_weight: -1 is negative",
        ),
        ({"s": {"model": "sysvi", "cycle_weight": -0.5}}, ["s"], r"gene_vae\.family\.s\.cycle_weight"),
        ({"s": {"model": "sysvi", "adversarial_weight": 1}}, ["s"], r"gene_vae\.family\.s: unknown key"),
        (
            {"v": {"model": "scvi", "batch_representation": "onehot"}},
            ["v"],
            r"gene_vae\.family\.v\.batch_representation",
        ),
        ({"a": {"model": "scanvi", "base": "scvi"}}, ["a"], r"gene_vae\.family\.a\.base"),
    ],
)
def test_bad_entries_fail_naming_the_key(family, fit, message):
    with pytest.raises(ValueError, match=message):
        parse_family(family, fit)
    with pytest.raises(ValueError, match=message):
        GeneVaeConfig.from_dict({"family": family, "fit": fit})


def test_one_training_patient_cannot_fit_sysvi(cohort):
    one = cohort[(cohort.obs["patient"] == "A").to_numpy()]
    config = dataclasses.replace(TINY, fit=("sysvi",))
    with pytest.raises(ValueError, match="'sysvi' .*needs at least two training patients"):
        fit_gene_encoders(one, list(cohort.var_names), config)
