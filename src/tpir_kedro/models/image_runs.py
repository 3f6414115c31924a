"""Which image-training runs a ``train`` makes: variants x held-out folds x seeds, and the final models.

The parameters ``image_runs`` (conf/base/parameters_contrastive.yml), typed: image training owns
them, the evaluation only scores what they produced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

# Keys that lived under ``evaluation`` before image training owned them: a clear error, not a silent default.
MOVED_FROM_EVALUATION = ("variants", "seeds", "final_models")


@dataclass(frozen=True)
class ImageRuns:
    variants: tuple[str, ...] | None = None  # None: every defined variant, in file order
    seeds: tuple[int, ...] = (0,)  # image-training seeds (the gene encoders use gene_vae.seed)
    final_models: bool = True  # also train each variant on every patient (what predict uses)

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> ImageRuns:
        params = dict(params or {})
        known = {f.name for f in fields(cls)}
        unknown = set(params) - known
        if unknown:
            raise ValueError(f"image_runs: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        seeds = params.get("seeds", cls.seeds)
        if isinstance(seeds, (int, str)) or not seeds:
            raise ValueError(f"image_runs.seeds must be a non-empty list of integers, got {seeds!r}")
        try:
            seeds = tuple(int(s) for s in seeds)
        except (TypeError, ValueError):
            raise ValueError(
                f"image_runs.seeds must be a non-empty list of integers, got {seeds!r}"
            ) from None
        variants = params.get("variants")
        if isinstance(variants, str):
            raise ValueError(f"image_runs.variants must be a list of variant names or null, got {variants!r}")
        final = params.get("final_models", cls.final_models)
        if not isinstance(final, bool):
            raise ValueError(f"image_runs.final_models must be true or false, got {final!r}")
        return cls(
            variants=None if variants is None else tuple(str(v) for v in variants),
            seeds=seeds,
            final_models=final,
        )


def check_evaluation_parameters(evaluation: Mapping[str, Any]) -> None:
    """An ``evaluation`` block still carrying the run switches (an old conf/local) fails clearly."""
    moved = [key for key in MOVED_FROM_EVALUATION if key in evaluation]
    if moved:
        raise ValueError(
            f"evaluation.{', evaluation.'.join(moved)}: these moved to image_runs "
            "(conf/base/parameters_contrastive.yml); set image_runs." + moved[0] + " instead"
        )
