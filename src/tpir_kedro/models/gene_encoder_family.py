"""The gene encoders as a family: named, typed entries of ``gene_vae.family``, fitted per fold.

Each entry names a scvi-tools model and the one or two settings that make it what it is; the shared
architecture and training settings (``n_latent``, epochs, learning rate, ...) stay in
:class:`~tpir_kedro.models.gene_vae.GeneVaeConfig`, so encoders differ only in what they are.

============== ===================================================================================
``model``       what removes the patient, and how a patient the fit never saw is embedded
============== ===================================================================================
``scvi``        nothing but the decoder's batch covariate (the paper's). Options:
                ``adversarial_weight`` > 0 adds scvi-tools' ``AdversarialTrainingPlan`` classifier
                that tries to read the patient off z while the encoder is trained to fool it;
                ``batch_representation: embedding`` gives the decoder a learnt patient embedding
                instead of a one-hot. The encoder q(z|x) never sees the batch: an unseen patient
                is embedded as it is (covariate-free encoder).
``scanvi``      scANVI initialised from the ``base`` scvi entry, taught the tissue labels the
                label budget allows; covariate-free encoder as scVI.
``sysvi``       scvi-tools' SysVI: VampPrior and a latent cycle-consistency loss
                (``cycle_weight``, the library's ``z_distance_cycle_weight``) on log-normalised
                expression. Its encoder takes the patient, so an unseen patient's embedding is the
                mean of its embeddings as each training patient (the library's query mapping,
                ``load_query_data``, refuses batches the reference lacks).
============== ===================================================================================

Every setting has the library's default unless the entry says otherwise; nothing is tuned on a
scored patient (:func:`~tpir_kedro.evaluation.gene_embedding_scores.choose_setting`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MODELS = ("scvi", "scanvi", "sysvi")
BATCH_REPRESENTATIONS = ("one-hot", "embedding")
PRIORS = ("vamp", "standard_normal")
# Which options each model takes; any other key is an error naming it.
_OPTIONS: dict[str, tuple[str, ...]] = {
    "scvi": ("adversarial_weight", "batch_representation"),
    "scanvi": ("base",),
    "sysvi": ("cycle_weight", "prior", "n_prior_components"),
}
_COMMON = ("model", "description")

# What `gene_vae.family` holds when the parameters give none: the two encoders every run fits.
DEFAULT_FAMILY: dict[str, dict[str, Any]] = {
    "scvi": {"model": "scvi"},
    "scanvi": {"model": "scanvi", "base": "scvi"},
}
DEFAULT_FIT = ("scvi", "scanvi")


@dataclass(frozen=True)
class EncoderSpec:
    """One named gene encoder of the family (see the module docstring for each ``model``)."""

    name: str
    model: str
    adversarial_weight: float = 0.0  # scvi; 0: no adversary
    batch_representation: str = "one-hot"  # scvi
    base: str = "scvi"  # scanvi: the scvi entry it starts from
    cycle_weight: float = 2.0  # sysvi: scvi-tools' default z_distance_cycle_weight
    prior: str = "vamp"  # sysvi
    n_prior_components: int = 5  # sysvi: scvi-tools' default
    description: str = ""

    @property
    def uses_labels(self) -> bool:
        """Whether fitting reads tissue labels (then a transductive fit must hide the scored patient's)."""
        return self.model == "scanvi"

    @property
    def batch_free_encoder(self) -> bool:
        """Whether q(z|x) ignores the patient (else unseen patients are averaged over training ones)."""
        return self.model != "sysvi"


def _number(where: str, value: Any, *, integer: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: {value!r} is not a finite number")
    if value < 0:
        raise ValueError(f"{where}: {value!r} is negative; it must be >= 0")
    if integer:
        if int(value) != value or value < 1:
            raise ValueError(f"{where}: {value!r} must be a whole number >= 1")
        return int(value)
    return float(value)


def _one(where: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{where}: {value!r} is not one of {list(allowed)}")
    return str(value)


def parse_encoder(
    name: str, entry: Mapping[str, Any] | None, section: str = "gene_vae.family"
) -> EncoderSpec:
    """One family entry -> :class:`EncoderSpec`; every mistake is a ValueError naming the key."""
    where = f"{section}.{name}"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected a mapping with at least 'model', got {entry!r}")
    model = _one(f"{where}.model", entry.get("model"), MODELS)
    unknown = sorted(set(entry) - {*_COMMON, *_OPTIONS[model]})
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {unknown} for model {model!r}; it takes {list(_OPTIONS[model])}"
        )
    values: dict[str, Any] = {}
    if "adversarial_weight" in entry:
        values["adversarial_weight"] = _number(f"{where}.adversarial_weight", entry["adversarial_weight"])
    if "batch_representation" in entry:
        values["batch_representation"] = _one(
            f"{where}.batch_representation", entry["batch_representation"], BATCH_REPRESENTATIONS
        )
    if "base" in entry:
        values["base"] = str(entry["base"])
    if "cycle_weight" in entry:
        values["cycle_weight"] = _number(f"{where}.cycle_weight", entry["cycle_weight"])
    if "prior" in entry:
        values["prior"] = _one(f"{where}.prior", entry["prior"], PRIORS)
    if "n_prior_components" in entry:
        values["n_prior_components"] = _number(
            f"{where}.n_prior_components", entry["n_prior_components"], integer=True
        )
    return EncoderSpec(name=str(name), model=model, description=str(entry.get("description", "")), **values)


def parse_family(
    family: Mapping[str, Any] | None, fit: Sequence[str] | None, section: str = "gene_vae"
) -> list[EncoderSpec]:
    """The entries of ``family`` named in ``fit``, in fitting order (an scanvi after its base).

    ``family`` None: :data:`DEFAULT_FAMILY`; ``fit`` None: :data:`DEFAULT_FIT`. Errors name the key:
    an unknown name in ``fit``, a scanvi whose ``base`` is not an scvi entry being fitted.
    """
    family = DEFAULT_FAMILY if family is None else family
    if not isinstance(family, Mapping) or not family:
        raise ValueError(f"{section}.family: expected a non-empty mapping of encoder name -> entry")
    names = list(DEFAULT_FIT if fit is None else fit)
    if not names:
        raise ValueError(f"{section}.fit: name at least one encoder of {sorted(family)}")
    unknown = [n for n in names if n not in family]
    if unknown:
        raise ValueError(
            f"{section}.fit: unknown encoder(s) {unknown}; {section}.family has {sorted(family)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"{section}.fit: {names} names an encoder twice")
    specs = {n: parse_encoder(n, family[n], f"{section}.family") for n in names}
    for spec in specs.values():
        if spec.model != "scanvi":
            continue
        base = specs.get(spec.base)
        if base is None or base.model != "scvi":
            raise ValueError(
                f"{section}.family.{spec.name}.base: {spec.base!r} must be an scvi entry listed in "
                f"{section}.fit (scANVI starts from a fitted scVI)"
            )
    # bases first, so that each scANVI finds its scVI already trained
    return sorted(specs.values(), key=lambda s: s.model == "scanvi")
