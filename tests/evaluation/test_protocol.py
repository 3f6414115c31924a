"""The evaluation protocol's settings, typed: defaults equal the conf, bad values are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tpir_kedro.evaluation.protocol import EvaluationProtocol, GeneScorecard

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"


def test_the_defaults_are_the_conf():
    conf = yaml.safe_load((CONF / "parameters_evaluation.yml").read_text())["evaluation"]
    assert EvaluationProtocol.from_dict(conf) == EvaluationProtocol()
    conf = yaml.safe_load((CONF / "parameters_gene_vae.yml").read_text())["gene_scorecard"]
    assert GeneScorecard.from_dict(conf) == GeneScorecard()
    with pytest.raises(ValueError, match="gene_scorecard.knn_k must be at least 1"):
        GeneScorecard.from_dict({"knn_k": 0})
    with pytest.raises(ValueError, match="gene_scorecard: unknown key"):
        GeneScorecard.from_dict({"n_pc": 10})
    assert EvaluationProtocol.from_dict({"probe_Cs": [1, 10], "knn_k": "5"}).probe_Cs == (1.0, 10.0)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"knn": 5}, "unknown key"),
        ({"probes": ["lasso"]}, "evaluation.probes: unknown"),
        ({"expression_protocols": ["lasso"]}, "evaluation.expression_protocols: unknown"),
        ({"probe_Cs": 1.0}, "evaluation.probe_Cs must be a list"),
        ({"probe_Cs": [0.0, 1.0]}, "positive"),
        ({"knn_k": "many"}, "evaluation.knn_k must be int"),
        ({"expression_k": 0}, "at least 1"),
        ({"seeds": [0]}, "moved to image_runs"),
    ],
)
def test_a_bad_setting_is_named(params, message):
    with pytest.raises(ValueError, match=message):
        EvaluationProtocol.from_dict(params)
