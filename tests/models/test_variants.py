"""Variants are parameter sets: the shipped ones parse, and every mistake names its variant."""

from __future__ import annotations

import pytest
import yaml

from tpir_kedro.models.variants import OBJECTIVES, VariantSpec, parse_variant, parse_variants

CLIP = {"gene_input": "log_hvg", "loss": "infonce", "loss_params": {"temperature": 0.07}}


@pytest.fixture(scope="module")
def shipped(project_root) -> dict:
    return yaml.safe_load((project_root / "conf" / "base" / "parameters_contrastive.yml").read_text())[
        "variants"
    ]


def test_every_shipped_variant_parses_in_file_order(shipped):
    specs = parse_variants(shipped)
    assert [s.name for s in specs] == list(shipped)
    assert all(isinstance(s, VariantSpec) for s in specs)
    by_name = {s.name: s for s in specs}
    # The method's comparison (docs/method.md): baselines, gene-side variants, untrained floors.
    assert {"clip", "bleep", "supervised", "imagenet", "random"} <= set(by_name)
    for spec in specs:
        assert spec.objective in OBJECTIVES
        assert spec.description, f"variant {spec.name} has no description"
        if spec.objective == "contrastive":
            assert spec.gene_input in ("log_hvg", "scvi", "scanvi") and spec.loss and spec.init is None
        else:
            assert spec.gene_input is None and spec.loss is None
    assert not by_name["imagenet"].trains and not by_name["random"].trains
    assert by_name["random"].init == "random" and by_name["imagenet"].init == "imagenet"
    assert by_name["supervised"].needs_labels and not by_name["clip"].needs_labels
    if "class_guided" in by_name:
        # scANVI's class probabilities give every spot soft targets: no labelled spot is required.
        assert not by_name["class_guided"].needs_labels and by_name["class_guided"].use_class_probs


def test_the_shipped_run_selection_parses_and_its_defaults_are_the_code_s(project_root, shipped):
    from tpir_kedro.models.image_runs import ImageRuns

    params = yaml.safe_load((project_root / "conf" / "base" / "parameters_contrastive.yml").read_text())
    runs = ImageRuns.from_dict(params["image_runs"])
    assert runs == ImageRuns()  # the dataclass defaults are the shipped configuration
    assert parse_variants(shipped, runs.variants)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"seed": [0]}, r"unknown key\(s\) \['seed'\]"),
        ({"seeds": 0}, "non-empty list of integers"),
        ({"seeds": []}, "non-empty list of integers"),
        ({"seeds": ["a"]}, "non-empty list of integers"),
        ({"variants": "clip"}, "list of variant names or null"),
        ({"final_models": "no"}, "true or false"),
    ],
)
def test_image_runs_mistakes_are_named(params, message):
    from tpir_kedro.models.image_runs import ImageRuns

    with pytest.raises(ValueError, match=message):
        ImageRuns.from_dict(params)


def test_an_evaluation_block_with_the_old_run_switches_says_where_they_went():
    from tpir_kedro.models.image_runs import check_evaluation_parameters

    check_evaluation_parameters({"probes": ["logistic"]})
    with pytest.raises(ValueError, match=r"evaluation.seeds: these moved to image_runs"):
        check_evaluation_parameters({"seeds": [0, 1]})


def test_selected_variants_come_in_the_selected_order(shipped):
    assert [s.name for s in parse_variants(shipped, ["random", "clip"])] == ["random", "clip"]


def test_an_unknown_selected_variant_lists_the_defined_ones(shipped):
    with pytest.raises(ValueError, match=r"unknown variant\(s\) \['clipp'\]") as err:
        parse_variants(shipped, ["clip", "clipp"])
    assert all(name in str(err.value) for name in shipped)


def test_no_variants_at_all_is_an_error():
    with pytest.raises(ValueError, match="no variants are defined"):
        parse_variants({})


def test_an_empty_variant_is_a_contrastive_one_without_gene_input():
    with pytest.raises(ValueError, match=r"variant 'bare': gene_input None"):
        parse_variants({"bare": None})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({**CLIP, "temprature": 0.1}, r"unknown key\(s\) \['temprature'\]"),
        ({**CLIP, "objective": "selfsupervised"}, r"objective 'selfsupervised' is not one of"),
        ({**CLIP, "loss": "triplet"}, r"unknown contrastive loss 'triplet'"),
        (
            {**CLIP, "loss_params": {"temperatur": 0.1}},
            r"unknown parameter 'temperatur' for the infonce loss",
        ),
        ({**CLIP, "loss_params": {"temperature": -1}}, r"temperature must be a positive number"),
        ({**CLIP, "loss_params": {"temperature": "0.07"}}, r"temperature must be a positive number"),
        ({**CLIP, "gene_input": "scvi-x"}, r"gene_input 'scvi-x' is neither 'log_hvg' nor"),
        ({"gene_input": "log_hvg"}, r"a contrastive variant needs a loss"),
        (
            {"gene_input": "scvi", "loss": "similarity", "loss_params": {"target_source": "genes"}},
            r"unknown target_source 'genes'",
        ),
        (
            {"gene_input": "log_hvg", "loss": "similarity"},
            r"similarity targets from genes need a gene encoder's embedding",
        ),
        (
            {"gene_input": "log_hvg", "loss": "similarity", "loss_params": {"target_source": "both"}},
            r"need a gene encoder's embedding",
        ),
        (
            {"gene_input": "scvi", "loss": "class_guided", "use_class_probs": True},
            r"use_class_probs needs gene_input scanvi",
        ),
        (
            {"gene_input": "log_hvg", "loss": "class_guided", "use_class_probs": True},
            r"use_class_probs needs gene_input scanvi",
        ),
        (
            {"objective": "none", "init": "random", "loss": "infonce"},
            r"objective 'none' takes no gene_input or loss",
        ),
        (
            {"objective": "supervised", "gene_input": "log_hvg"},
            r"objective 'supervised' takes no gene_input or loss",
        ),
        ({**CLIP, "batches": "one_patient"}, r"batches 'one_patient' is not one of"),
        ({"objective": "none", "batches": "single_patient"}, r"batches only apply to a trained variant"),
    ],
)
def test_a_mistake_is_a_value_error_naming_the_variant(spec, message):
    with pytest.raises(ValueError, match=r"^variant 'mine': .*" + message):
        parse_variant("mine", spec)
    with pytest.raises(ValueError, match=r"variant 'mine': .*" + message):
        parse_variants({"clip": CLIP, "mine": spec}, ["clip", "mine"])


def test_similarity_targets_from_images_need_no_vae_input():
    spec = parse_variant(
        "img_sim", {"gene_input": "log_hvg", "loss": "similarity", "loss_params": {"target_source": "image"}}
    )
    assert spec.loss == "similarity" and spec.gene_input == "log_hvg"


def test_to_dict_carries_what_shapes_the_weights():
    spec = parse_variant(
        "cg",
        {"gene_input": "scanvi", "loss": "class_guided", "use_class_probs": True, "description": "prose"},
    )
    assert spec.to_dict() == {
        "name": "cg",
        "objective": "contrastive",
        "gene_input": "scanvi",
        "loss": "class_guided",
        "loss_params": {},
        "init": None,
        "use_class_probs": True,
    }


def test_the_training_defaults_in_code_are_the_shipped_configuration(project_root):
    from tpir_kedro.models.training_config import TrainingConfig

    shipped = yaml.safe_load((project_root / "conf" / "base" / "parameters_contrastive.yml").read_text())
    # Code that builds a TrainingConfig without conf trains exactly what `kedro run` does.
    assert TrainingConfig().to_dict() == TrainingConfig.from_dict(shipped["contrastive"]).to_dict()


def test_batches_enter_the_weights_fingerprint_only_when_not_mixed():
    mixed, single = parse_variant("clip", CLIP), parse_variant("clip", {**CLIP, "batches": "single_patient"})
    assert "batches" not in mixed.to_dict()  # the fingerprints of every existing run stay as they were
    assert single.to_dict() == {**mixed.to_dict(), "batches": "single_patient"}
