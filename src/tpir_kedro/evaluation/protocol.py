"""The scoring protocol's settings, typed: the image side's (``evaluation``,
conf/base/parameters_evaluation.yml) and the gene side's (``gene_scorecard``,
conf/base/parameters_gene_vae.yml).

Defaults equal the conf (a test reads it); an unknown key, an unknown probe or expression protocol,
or a value of the wrong kind fails here, naming the key, instead of deep inside a fold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tpir_kedro.evaluation.expression_ridge import ALPHA_SCALE, N_COMPONENTS
from tpir_kedro.evaluation.probes import PROBES
from tpir_kedro.models.image_runs import check_evaluation_parameters
from tpir_kedro.typed_settings import SectionSettings, require_at_least

EXPRESSION_PROTOCOLS = ("retrieval", "ridge")  # expression readouts; the rest classify tissue


@dataclass(frozen=True)
class EvaluationProtocol(SectionSettings):
    SECTION = "evaluation"

    probes: tuple[str, ...] = PROBES
    probe_Cs: tuple[float, ...] = (0.01, 0.1, 1.0)
    knn_k: int = 15
    n_top_genes: int = 50  # expression-prediction targets: the fold's most variable genes
    expression_protocols: tuple[str, ...] = EXPRESSION_PROTOCOLS
    expression_k: int = 50
    ridge_components: int = N_COMPONENTS
    ridge_alpha_scale: float = ALPHA_SCALE

    def __post_init__(self):
        for key, allowed in (("probes", PROBES), ("expression_protocols", EXPRESSION_PROTOCOLS)):
            bad = sorted(set(getattr(self, key)) - set(allowed))
            if bad:
                raise ValueError(f"evaluation.{key}: unknown {bad}; choose from {list(allowed)}")
        if not self.probe_Cs or min(self.probe_Cs) <= 0:
            raise ValueError(f"evaluation.probe_Cs must be positive numbers, got {list(self.probe_Cs)}")
        require_at_least("evaluation", self, 1, "knn_k", "n_top_genes", "expression_k", "ridge_components")

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> EvaluationProtocol:
        if isinstance(params, Mapping):
            check_evaluation_parameters(params)  # keys that moved elsewhere, named with where
        return super().from_dict(params)


@dataclass(frozen=True)
class GeneScorecard(SectionSettings):
    """How the gene embeddings are scored: PCA / Harmony baselines, LOPO kNN label transfer,
    scib-metrics' neighbour graph, and the seed of all of them.
    """

    SECTION = "gene_scorecard"

    n_pcs: int = 30
    knn_k: int = 15
    n_neighbors: int = 15
    robustness_k: int = 10  # neighbours of each labelled spot in the robustness index
    seed: int = 0

    def __post_init__(self):
        require_at_least("gene_scorecard", self, 1, "n_pcs", "knn_k", "n_neighbors", "robustness_k")
