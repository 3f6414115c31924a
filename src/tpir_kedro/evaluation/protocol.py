"""The evaluation protocol's settings (``evaluation`` in conf/base/parameters_evaluation.yml), typed.

Defaults equal the conf; an unknown key, an unknown probe or expression protocol, or a value of the
wrong kind fails here, naming the key, instead of deep inside a fold.
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
        known = {f.name for f in fields(cls)}
        unknown = set(params) - known
        if unknown:
            raise ValueError(f"evaluation: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        values = {}
        for f in fields(cls):
            if f.name not in params:
                continue
            value = params[f.name]
            default = getattr(cls, f.name)
            try:
                if isinstance(default, tuple):
                    if isinstance(value, (str, int, float)) or value is None:
                        raise TypeError
                    kind = type(default[0])
                    value = tuple(kind(v) for v in value)
                else:
                    if isinstance(value, bool) or value is None:
                        raise TypeError
                    value = type(default)(value)
            except (TypeError, ValueError):
                kind = "a list" if isinstance(default, tuple) else type(default).__name__
                raise ValueError(
                    f"evaluation.{f.name} must be {kind} (like {default!r}), got {value!r}"
                ) from None
            values[f.name] = value
        protocol = cls(**values)
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
