"""The scoring protocol's settings, typed: the image side's (``evaluation``,
conf/base/parameters_evaluation.yml) and the gene side's (``gene_scorecard``,
conf/base/parameters_gene_vae.yml).

Defaults equal the conf (a test reads it); an unknown key, an unknown probe or expression protocol,
or a value of the wrong kind fails here, naming the key, instead of deep inside a fold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from tpir_kedro.evaluation.expression_ridge import ALPHA_SCALE, N_COMPONENTS
from tpir_kedro.evaluation.probes import PROBES
from tpir_kedro.models.image_runs import check_evaluation_parameters

EXPRESSION_PROTOCOLS = ("retrieval", "ridge")  # expression readouts; the rest classify tissue


@dataclass(frozen=True)
class EvaluationProtocol:
    probes: tuple[str, ...] = PROBES
    probe_Cs: tuple[float, ...] = (0.01, 0.1, 1.0)
    knn_k: int = 15
    n_top_genes: int = 50  # expression-prediction targets: the fold's most variable genes
    expression_protocols: tuple[str, ...] = EXPRESSION_PROTOCOLS
    expression_k: int = 50
    ridge_components: int = N_COMPONENTS
    ridge_alpha_scale: float = ALPHA_SCALE

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> EvaluationProtocol:
        params = dict(params or {})
        check_evaluation_parameters(params)
        protocol = cls(**_typed_values(cls, params, "evaluation"))
        for key, allowed in (("probes", PROBES), ("expression_protocols", EXPRESSION_PROTOCOLS)):
            bad = sorted(set(getattr(protocol, key)) - set(allowed))
            if bad:
                raise ValueError(f"evaluation.{key}: unknown {bad}; choose from {list(allowed)}")
        if not protocol.probe_Cs or min(protocol.probe_Cs) <= 0:
            raise ValueError(f"evaluation.probe_Cs must be positive numbers, got {list(protocol.probe_Cs)}")
        for key in ("knn_k", "n_top_genes", "expression_k", "ridge_components"):
            if getattr(protocol, key) < 1:
                raise ValueError(f"evaluation.{key} must be at least 1, got {getattr(protocol, key)}")
        return protocol


@dataclass(frozen=True)
class GeneScorecard:
    """How the gene embeddings are scored: PCA / Harmony baselines, LOPO kNN label transfer,
    scib-metrics' neighbour graph, and the seed of all of them.
    """

    n_pcs: int = 30
    knn_k: int = 15
    n_neighbors: int = 15
    seed: int = 0

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> GeneScorecard:
        scorecard = cls(**_typed_values(cls, dict(params or {}), "gene_scorecard"))
        for key in ("n_pcs", "knn_k", "n_neighbors"):
            if getattr(scorecard, key) < 1:
                raise ValueError(f"gene_scorecard.{key} must be at least 1, got {getattr(scorecard, key)}")
        return scorecard


def _typed_values(cls, params: dict[str, Any], section: str) -> dict[str, Any]:
    """``params`` checked against ``cls``' fields and cast to each default's type (a tuple default:
    a list of its first element's type), every problem named as ``section.key``.
    """
    known = {f.name for f in fields(cls)}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"{section}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    values = {}
    for f in fields(cls):
        if f.name not in params:
            continue
        value, default = params[f.name], getattr(cls, f.name)
        try:
            if isinstance(default, tuple):
                if isinstance(value, (str, int, float)) or value is None:
                    raise TypeError
                values[f.name] = tuple(type(default[0])(v) for v in value)
            else:
                if isinstance(value, bool) or value is None:
                    raise TypeError
                values[f.name] = type(default)(value)
        except (TypeError, ValueError):
            kind = "a list" if isinstance(default, tuple) else type(default).__name__
            raise ValueError(f"{section}.{f.name} must be {kind} (like {default!r}), got {value!r}") from None
    return values
