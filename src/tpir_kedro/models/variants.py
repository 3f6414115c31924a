"""Every compared model is a parameter set, not a code branch.

A variant says what trains the image encoder (``objective``), what the gene side sees
(``gene_input``), which loss and its parameters, and, for the two untrained baselines, its
initialisation. Backbone and initialisation of the trained variants come from the shared training
parameters, so losses are only ever compared on the same backbone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

OBJECTIVES = ("contrastive", "supervised", "none")
# gene_input: log-normalised expression through a trainable MLP, or the embedding of a gene encoder
# that gene_vae.fit names (models/gene_encoder_family.py; checked against it when the grid is built).
LOG_HVG = "log_hvg"
_ENCODER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
BATCH_KINDS = ("mixed", "single_patient")  # models/samplers.py BATCHES
_KEYS = {
    "objective",
    "gene_input",
    "loss",
    "loss_params",
    "init",
    "use_class_probs",
    "batches",
    "patient_adversary",
    "description",
}


@dataclass(frozen=True)
class VariantSpec:
    name: str
    objective: str
    gene_input: str | None = None
    loss: str | None = None
    loss_params: dict = field(default_factory=dict)
    init: str | None = None  # None: the shared init; set only by the untrained baselines
    use_class_probs: bool = False  # class_guided: unlabelled spots get scANVI's p_i . p_j targets
    batches: str = (
        "mixed"  # mixed: every patient in every batch; single_patient: one patient a batch (a control)
    )
    # > 0: a patient-adversarial head on the adapter with this gradient-reversal weight
    # (models/patient_adversary.py); contrastive variants only.
    patient_adversary: float = 0.0
    description: str = ""

    @property
    def trains(self) -> bool:
        return self.objective != "none"

    @property
    def needs_labels(self) -> bool:
        """Cannot train without a labelled training spot (class_guided with scANVI's class
        probabilities can: every spot then gets soft p_i . p_j targets).
        """
        return self.objective == "supervised" or (self.loss == "class_guided" and not self.use_class_probs)

    def to_dict(self) -> dict:
        out = {
            "name": self.name,
            "objective": self.objective,
            "gene_input": self.gene_input,
            "loss": self.loss,
            "loss_params": dict(self.loss_params),
            "init": self.init,
            "use_class_probs": self.use_class_probs,
        }
        # Only when it differs: the training fingerprints (and resumable runs) of every mixed-batch
        # variant stay what they were.
        if self.batches != "mixed":
            out["batches"] = self.batches
        if self.patient_adversary:
            out["patient_adversary"] = self.patient_adversary
        return out


def parse_variant(name: str, spec: Mapping[str, Any]) -> VariantSpec:
    """Checks one variant's parameters; every mistake is a ValueError naming the variant."""
    from tpir_kedro.models.losses import contrastive_loss  # validates loss names and their parameters

    unknown = set(spec) - _KEYS
    if unknown:
        raise ValueError(f"variant {name!r}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    objective = spec.get("objective", "contrastive")
    if objective not in OBJECTIVES:
        raise ValueError(f"variant {name!r}: objective {objective!r} is not one of {OBJECTIVES}")
    variant = VariantSpec(
        name=name,
        objective=objective,
        gene_input=spec.get("gene_input"),
        loss=spec.get("loss"),
        loss_params=dict(spec.get("loss_params") or {}),
        init=spec.get("init"),
        use_class_probs=bool(spec.get("use_class_probs", False)),
        batches=str(spec.get("batches", "mixed")),
        patient_adversary=float(spec.get("patient_adversary") or 0.0),
        description=str(spec.get("description", "")),
    )
    if variant.patient_adversary < 0 or (variant.patient_adversary and objective != "contrastive"):
        raise ValueError(
            f"variant {name!r}: patient_adversary is a gradient-reversal weight > 0 for a contrastive "
            f"variant, got {variant.patient_adversary} with objective {objective!r}"
        )
    if variant.batches not in BATCH_KINDS:
        raise ValueError(f"variant {name!r}: batches {variant.batches!r} is not one of {BATCH_KINDS}")
    if variant.batches != "mixed" and not variant.trains:
        raise ValueError(f"variant {name!r}: batches only apply to a trained variant")
    if objective == "contrastive":
        if variant.gene_input != LOG_HVG and not _ENCODER_NAME.match(str(variant.gene_input or "")):
            raise ValueError(
                f"variant {name!r}: gene_input {variant.gene_input!r} is neither {LOG_HVG!r} nor the "
                "name of a gene encoder (gene_vae.family)"
            )
        if variant.loss is None:
            raise ValueError(f"variant {name!r}: a contrastive variant needs a loss")
        try:
            contrastive_loss(variant.loss, variant.loss_params)
        except ValueError as exc:
            raise ValueError(f"variant {name!r}: {exc}") from exc
        if (
            variant.loss == "similarity"
            and variant.loss_params.get("target_source", "gene") != "image"
            and variant.gene_input == LOG_HVG
        ):
            raise ValueError(
                f"variant {name!r}: similarity targets from genes need a gene encoder's embedding as "
                f"gene_input (e.g. scvi or scanvi), not {LOG_HVG}"
            )
        if variant.use_class_probs and variant.gene_input != "scanvi":
            raise ValueError(
                f"variant {name!r}: use_class_probs needs gene_input scanvi (its predicted class probabilities)"
            )
    elif variant.gene_input or variant.loss:
        raise ValueError(f"variant {name!r}: objective {objective!r} takes no gene_input or loss")
    return variant


def parse_variants(
    variants: Mapping[str, Mapping[str, Any]], selected: list[str] | None = None
) -> list[VariantSpec]:
    """The variants to run, in ``selected`` order (all, in file order, when None)."""
    if not variants:
        raise ValueError("no variants are defined (parameters 'variants')")
    names = list(variants) if selected is None else [str(s) for s in selected]
    missing = [n for n in names if n not in variants]
    if missing:
        raise ValueError(f"unknown variant(s) {missing}; defined variants: {sorted(variants)}")
    return [parse_variant(n, variants[n] or {}) for n in names]
