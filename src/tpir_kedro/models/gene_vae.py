"""Stage 1: the batch-agnostic gene encoders, on raw spot counts.

``fit_gene_encoders`` trains the entries of the gene-encoder family
(:mod:`~tpir_kedro.models.gene_encoder_family`), by default scvi-tools' ``SCVI`` on
``layers["counts"]`` with the patient as the batch covariate, then ``SCANVI`` initialised from it
with the pathologist labels (the six tissue classes; ``undetermined`` and ``unlabelled`` both count
as "no label"); SysVI and the adversarial or batch-embedding scVIs when the family lists them.
Everything it learns comes from the AnnData it is given: callers pass the training fold only.

The encoder keeps scvi-tools' default ``encode_covariates=False``: the batch enters the decoder,
never q(z|x), so the embedding of a patient outside training needs no batch of its own (see
:mod:`tpir_kedro.models.gene_encoder`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from tpir_kedro.cohort.schema import COUNTS_LAYER, LABEL_CATEGORIES, TISSUE_CLASSES, UNLABELLED
from tpir_kedro.models.cpu_threads import pin_torch_threads
from tpir_kedro.models.gene_encoder import SYSVI_LAYER, GeneEncoder, gene_counts, model_input_layer
from tpir_kedro.models.gene_encoder_family import EncoderSpec, parse_family
from tpir_kedro.quiet_logs import quiet_scvi

logger = logging.getLogger(__name__)

# obs column of the training AnnData holding the scANVI target: a tissue class or UNLABELLED.
SCANVI_LABEL_KEY = "scanvi_label"


@dataclass(frozen=True)
class GeneVaeConfig:
    """Hyper-parameters of the scVI/scANVI gene encoders (scvi-tools names where they exist)."""

    n_latent: int = 10
    n_hidden: int = 128
    n_layers: int = 1
    dropout_rate: float = 0.1
    gene_likelihood: str = "nb"
    scvi_max_epochs: int = 100
    scanvi_max_epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    n_samples_per_label: int = 100
    accelerator: str = "auto"  # lightning's: "auto" takes the GPU when there is one
    seed: int = 0
    # scvi-tools warms the KL weight up over 400 epochs; with fewer epochs the weight never reaches
    # 1, the posterior stays loose and keeps the batch. None: half of each model's epochs.
    kl_warmup_epochs: int | None = None
    # Which gene encoders to fit (names of ``family``) and the family itself
    # (:mod:`~tpir_kedro.models.gene_encoder_family`); None: scVI and scANVI.
    fit: tuple[str, ...] | None = None
    family: Mapping[str, Any] | None = None

    def encoder_specs(self) -> list[EncoderSpec]:
        """The encoders to fit, checked, in fitting order (each scANVI after its base scVI)."""
        return parse_family(self.family, self.fit)

    def kl_warmup(self, max_epochs: int) -> int:
        return max(1, max_epochs // 2) if self.kl_warmup_epochs is None else int(self.kl_warmup_epochs)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> GeneVaeConfig:
        """Build from a parameters mapping (e.g. Kedro params); unknown keys are an error."""
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown gene VAE config key(s) {unknown}; known keys are {sorted(known)}")
        if d.get("fit") is not None:
            d["fit"] = tuple(str(n) for n in d["fit"])
        config = cls(**d)
        config.encoder_specs()  # a bad family entry fails here, naming its key
        return config


def fit_gene_encoders(
    cohort: AnnData,
    genes: list[str],
    config: GeneVaeConfig,
    batch_key: str = "batch",
    label_key: str = "label",
    fitted: Mapping[str, GeneEncoder] | None = None,
) -> dict[str, GeneEncoder]:
    """Train the encoders of ``config.encoder_specs()`` on ``cohort.layers["counts"][:, genes]``
    (batch = ``obs[batch_key]``); scANVI entries from their base scVI with ``obs[label_key]``.

    ``cohort``: (n_spots, n_genes_total) AnnData in the cohort format, holding the training spots
    only (e.g. one fold's training patients); ``genes``: the model's inputs, in model order, all
    present in ``cohort.var_names``. Each returned encoder maps counts of those genes to an
    (n_spots, ``config.n_latent``) embedding.

    Returns ``{name: GeneEncoder}`` in fitting order (by default ``{"scvi", "scanvi"}``). Without
    any spot carrying a tissue class there is nothing to supervise and scANVI entries are left out
    (logged as a warning). With a single batch category there is nothing to correct: scVI is
    trained without a batch covariate (SysVI, which needs two, is then an error). ``cohort`` is
    not modified.

    ``fitted``: encoders already trained on these same spots and genes, reused instead of refitted
    (e.g. one scVI as the base of several scANVIs, each taught a different set of labels); they are
    returned too.
    """
    quiet_scvi()
    specs = config.encoder_specs()
    train = _training_anndata(cohort, genes, batch_key, label_key)
    batch_categories = list(train.obs[batch_key].cat.categories)
    setup_batch_key: str | None = batch_key
    if len(batch_categories) == 1:
        logger.info(
            "gene VAE: one batch (%r) in the training data, nothing to correct; training without "
            "a batch covariate",
            batch_categories[0],
        )
        setup_batch_key = None
    encoders: dict[str, GeneEncoder] = {}
    for spec in specs:
        if fitted and spec.name in fitted:
            encoders[spec.name] = fitted[spec.name]
            continue
        # scvi-tools seeds torch, numpy and python (lightning's seed_everything) and its own data
        # splits; reseeding before each model makes each fit reproducible on its own. The thread
        # count too: it changes float sums, and earlier nodes in this process may have changed it.
        pin_torch_threads()
        started = time.perf_counter()
        if spec.model == "scvi":
            model = _fit_scvi(train, spec, config, setup_batch_key)
        elif spec.model == "sysvi":
            model = _fit_sysvi(train, spec, config, setup_batch_key)
        else:
            model = _fit_scanvi(train, encoders[spec.base].model, spec, config)
            if model is None:
                continue
        encoders[spec.name] = GeneEncoder(
            model,
            kind=spec.model,
            genes=genes,
            batch_categories=batch_categories,
            label_categories=list(TISSUE_CLASSES) if spec.model == "scanvi" else None,
        )
        encoders[spec.name].training_seconds = time.perf_counter() - started
    return encoders


def _trainer_kwargs(config: GeneVaeConfig) -> dict:
    return {"accelerator": config.accelerator, "batch_size": config.batch_size, "enable_progress_bar": False}


def _fit_scvi(train: AnnData, spec: EncoderSpec, config: GeneVaeConfig, batch_key: str | None):
    """Fit scVI on the counts; with ``adversarial_weight`` > 0 under scvi-tools' adversarial plan."""
    import scvi

    # Each model its own copy: setup_anndata registers the AnnData it is given with that model.
    train = train.copy()
    scvi.settings.seed = config.seed
    scvi.model.SCVI.setup_anndata(train, layer=COUNTS_LAYER, batch_key=batch_key)
    model = scvi.model.SCVI(
        train,
        n_hidden=config.n_hidden,
        n_latent=config.n_latent,
        n_layers=config.n_layers,
        dropout_rate=config.dropout_rate,
        gene_likelihood=config.gene_likelihood,
        batch_representation=spec.batch_representation,
    )
    # encode_covariates stays at scvi-tools' default False: q(z|x) must not see the batch, so
    # that a patient outside training can be embedded (GeneEncoder.embed relies on it).
    if model.module.encode_covariates:
        raise RuntimeError("scVI's encoder unexpectedly takes the batch (encode_covariates=True)")
    plan = _plan(config, config.scvi_max_epochs)
    if spec.adversarial_weight > 0:
        from scvi.train import AdversarialTrainingPlan

        # The instance's plan class only: the saved model is a plain SCVI (the adversary is a
        # training device, not part of the encoder). A fixed scale, not scvi-tools' "auto"
        # (1 - kl_weight), which would switch the adversary off once the KL warm-up ends.
        model._training_plan_cls = AdversarialTrainingPlan
        plan.update(adversarial_classifier=True, scale_adversarial_loss=spec.adversarial_weight)
    _log_fit(spec, train, batch_key, config.scvi_max_epochs)
    _train_unsupervised(model, config, plan)
    return model


def _fit_sysvi(train: AnnData, spec: EncoderSpec, config: GeneVaeConfig, batch_key: str | None):
    """SysVI on log-normalised expression (its Gaussian decoder models continuous data)."""
    import scvi
    from scvi.external import SysVI

    if batch_key is None:
        raise ValueError(
            f"gene encoder {spec.name!r} (SysVI) needs at least two training patients: its cycle "
            "loss translates each spot into another patient"
        )
    sysvi_input = train.copy()
    sysvi_input.layers[SYSVI_LAYER] = model_input_layer(train.layers[COUNTS_LAYER])
    scvi.settings.seed = config.seed
    SysVI.setup_anndata(sysvi_input, batch_key=batch_key, layer=SYSVI_LAYER)
    model = SysVI(
        sysvi_input,
        prior=spec.prior,
        n_prior_components=spec.n_prior_components,
        n_latent=config.n_latent,
        n_hidden=config.n_hidden,
        n_layers=config.n_layers,
        dropout_rate=config.dropout_rate,
    )
    _log_fit(spec, train, batch_key, config.scvi_max_epochs)
    # SysVI turns the KL warm-up off itself (its authors found it hurts the cycle model).
    _train_unsupervised(
        model, config, {"lr": config.learning_rate, "z_distance_cycle_weight": spec.cycle_weight}
    )
    return model


def _train_unsupervised(model, config: GeneVaeConfig, plan: dict) -> None:
    """Train scVI or SysVI for ``config.scvi_max_epochs`` under the plan arguments ``plan``."""
    # BatchNorm fails on a last minibatch of one spot and fold sizes are arbitrary: drop it.
    # (Not for scANVI: its labelled and full loaders are zipped and must stay the same length.)
    model.train(
        max_epochs=config.scvi_max_epochs,
        datasplitter_kwargs={"drop_last": True},
        **{**_trainer_kwargs(config), "plan_kwargs": plan},
    )


def _fit_scanvi(train: AnnData, base_model, spec: EncoderSpec, config: GeneVaeConfig):
    """Fit scANVI from a trained scVI, or None (logged) when no training spot carries a class."""
    import scvi

    n_classified = int((train.obs[SCANVI_LABEL_KEY] != UNLABELLED).sum())
    if n_classified == 0:
        logger.warning(
            "gene VAE: scANVI skipped (%s): no training spot carries a tissue class (all are "
            "undetermined or unlabelled), so there is nothing to supervise",
            spec.name,
        )
        return None
    # A copy: scANVI's setup writes its own registry columns into obs, the scVI model's AnnData
    # stays as it was trained.
    scanvi_train = train.copy()
    scvi.settings.seed = config.seed
    model = scvi.model.SCANVI.from_scvi_model(
        base_model, unlabeled_category=UNLABELLED, labels_key=SCANVI_LABEL_KEY, adata=scanvi_train
    )
    if model.module.n_labels != len(TISSUE_CLASSES):
        # scvi-tools' rule: with no unlabelled spot and a class missing, the unlabelled category
        # becomes a classifier output too; GeneEncoder.predict_proba drops it and renormalises.
        logger.warning(
            "gene VAE: no unlabelled training spot and only %d of %d classes present: scANVI's "
            "classifier gets an extra %r output (never a target)",
            int(train.obs[SCANVI_LABEL_KEY].nunique()),
            len(TISSUE_CLASSES),
            UNLABELLED,
        )
    logger.info(
        "gene VAE: training %s (scANVI from %s), %d of %d spots labelled, %d epochs",
        spec.name,
        spec.base,
        n_classified,
        train.n_obs,
        config.scanvi_max_epochs,
    )
    # scANVI zips a full and a labelled loader, so drop_last is not an option there: train on every
    # spot (no validation split; nothing early-stops on it) and pick a batch size that leaves no
    # last minibatch of one or two spots, which BatchNorm cannot train on, in either loader.
    per_class = train.obs.loc[train.obs[SCANVI_LABEL_KEY] != UNLABELLED, SCANVI_LABEL_KEY].value_counts()
    n_labelled_per_epoch = int(per_class.clip(upper=config.n_samples_per_label).sum())
    batch_size = safe_batch_size([train.n_obs, n_labelled_per_epoch], config.batch_size)
    model.train(
        max_epochs=config.scanvi_max_epochs,
        n_samples_per_label=config.n_samples_per_label,
        train_size=1.0,
        **{
            **_trainer_kwargs(config),
            "batch_size": batch_size,
            "plan_kwargs": _plan(config, config.scanvi_max_epochs),
        },
    )
    return model


def _log_fit(spec: EncoderSpec, train: AnnData, batch_key: str | None, epochs: int) -> None:
    logger.info(
        "gene VAE: training %s (%s) on %d spots x %d genes, %d batch(es), %d epochs",
        spec.name,
        spec.model,
        train.n_obs,
        train.n_vars,
        train.obs[batch_key].nunique() if batch_key else 1,
        epochs,
    )


def _training_anndata(cohort: AnnData, genes: Sequence[str], batch_key: str, label_key: str) -> AnnData:
    """A new AnnData (n_obs x genes) with exactly what the models may see.

    ``layers["counts"]``: the counts of ``genes``; obs: ``batch_key`` (categorical, only the
    batches present: a fold subset keeps the other patients as unused categories, and they must
    not reach the model's registry) and ``SCANVI_LABEL_KEY`` (the six classes, then UNLABELLED for
    undetermined/unlabelled, in that fixed order so every fold has the same classifier columns).
    """
    genes = [str(g) for g in genes]
    if not genes:
        raise ValueError("fit_gene_encoders needs at least one gene")
    if len(set(genes)) != len(genes):
        raise ValueError("fit_gene_encoders: the gene list has duplicates")
    if cohort.n_obs == 0:
        raise ValueError("fit_gene_encoders: the cohort has no spots")
    for key in (batch_key, label_key):
        if key not in cohort.obs.columns:
            raise ValueError(f"fit_gene_encoders: cohort.obs lacks the column {key!r}")
    counts = gene_counts(cohort, genes, "fit_gene_encoders")

    batch = cohort.obs[batch_key]
    if batch.isna().any():
        raise ValueError(f"fit_gene_encoders: obs[{batch_key!r}] has missing values")
    if isinstance(batch.dtype, pd.CategoricalDtype):
        batch = batch.cat.remove_unused_categories()
        order = [str(c) for c in batch.cat.categories]
    else:
        order = sorted(batch.astype(str).unique())
    batch_values = batch.astype(str).to_numpy()

    labels = cohort.obs[label_key].astype(str).to_numpy()
    unknown = sorted(set(labels) - set(LABEL_CATEGORIES))
    if unknown:
        raise ValueError(f"fit_gene_encoders: unknown labels {unknown} in obs[{label_key!r}]")
    target = np.where(np.isin(labels, TISSUE_CLASSES), labels, UNLABELLED)

    obs = pd.DataFrame(index=pd.Index(cohort.obs_names.astype(str)))
    obs[batch_key] = pd.Categorical(batch_values, categories=order)
    # UNLABELLED last: scvi-tools moves the unlabelled category to the end anyway (swapping it
    # with whatever was last), so putting it there keeps the class order as given.
    obs[SCANVI_LABEL_KEY] = pd.Categorical(target, categories=[*TISSUE_CLASSES, UNLABELLED])
    adata = AnnData(obs=obs, var=pd.DataFrame(index=pd.Index(genes)))
    adata.layers[COUNTS_LAYER] = counts
    return adata


def _plan(config: GeneVaeConfig, max_epochs: int) -> dict:
    return {"lr": config.learning_rate, "n_epochs_kl_warmup": config.kl_warmup(max_epochs)}


def safe_batch_size(sizes: list[int], preferred: int) -> int:
    """The smallest batch size >= ``preferred`` that leaves no last minibatch of 1 or 2 samples."""
    for size in range(preferred, preferred + 64):
        if all(n % size not in (1, 2) for n in sizes if n > 0):
            return size
    return preferred
