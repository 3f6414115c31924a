"""The fitted gene encoder later stages reuse: raw spot counts -> a batch-agnostic embedding.

A :class:`GeneEncoder` wraps a trained scvi-tools ``SCVI`` or ``SCANVI`` model together with what
is needed to feed it a cohort it has never seen (the gene list, the training batch and label
categories), and saves/loads itself without unpickling anything.

Why an unseen patient can be embedded at all: scvi-tools' encoder q(z|x) only sees the batch when
``encode_covariates=True``. We keep the default ``False``, so the batch one-hot goes to the decoder
only and the embedding (the posterior mean of q(z|x)) does not depend on it. A new patient's spots
are therefore given any training batch category (the first one) purely to satisfy the registry;
:meth:`GeneEncoder.batch_invariance` measures that this changes nothing.

SysVI is the exception: its encoder takes the patient. Training spots are embedded with their own
patient; a patient it never saw gets the mean of its embeddings as each training patient
(scvi-tools' query mapping for SysVI refuses batches the reference lacks).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from tpir_kedro.cohort.schema import COUNTS_LAYER
from tpir_kedro.quiet_logs import quiet_scvi

logger = logging.getLogger(__name__)

ENCODER_JSON = "encoder.json"
WEIGHTS_FILE = "weights.pt"
SCVI_MODEL_DIR = "scvi_model"
FORMAT_VERSION = 1
KINDS = ("scvi", "scanvi", "sysvi")
_MODEL_CLASS_NAMES = {"scvi": "SCVI", "scanvi": "SCANVI", "sysvi": "SysVI"}
# SysVI's input layer: log1p(CP10k) of the model's genes (its decoder is Gaussian, not a count model).
SYSVI_LAYER = "log1p_cp10k"
# scvi-tools registry keys (scvi.REGISTRY_KEYS.BATCH_KEY / LABELS_KEY); spelled out so that this
# module does not import scvi-tools until a model is actually used.
_BATCH = "batch"
_LABELS = "labels"
_N_PLACEHOLDER_PER_CATEGORY = 3  # scvi-tools warns about categories with fewer than 3 rows


def check_counts(matrix, what: str) -> None:
    """Raise ``ValueError`` unless ``matrix`` (dense or sparse) holds non-negative integers.

    Float matrices are accepted when every value is integral (counts stored as float).
    """
    data = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    if data.size == 0:
        return
    if np.issubdtype(data.dtype, np.integer) or data.dtype == bool:
        bad = bool(data.min() < 0)
    elif np.issubdtype(data.dtype, np.floating):
        bad = bool(not np.all(np.isfinite(data)) or data.min() < 0 or np.any(data != np.floor(data)))
    else:
        bad = True
    if bad:
        raise ValueError(
            f"{what} holds non-count data (dtype {data.dtype}): scVI/scANVI model raw counts, "
            "which must be non-negative integers; pass the raw counts, not normalised values"
        )


def gene_counts(cohort: AnnData, genes: Sequence[str], what: str) -> sp.csr_matrix:
    """``cohort.layers["counts"]`` restricted to ``genes`` (in that order): (n_obs, len(genes)) CSR.

    Always a new matrix, so callers can never write into the cohort through it.
    """
    genes = [str(g) for g in genes]
    missing = pd.Index(genes).difference(cohort.var_names)
    if len(missing):
        raise ValueError(
            f"{what}: {len(missing)} of {len(genes)} genes are absent from the cohort, "
            f"e.g. {sorted(missing)[:5]}"
        )
    if COUNTS_LAYER not in cohort.layers:
        raise ValueError(f"{what}: the cohort lacks layers[{COUNTS_LAYER!r}] with raw counts")
    idx = cohort.var_names.get_indexer(genes)
    counts = sp.csr_matrix(cohort.layers[COUNTS_LAYER][:, idx], copy=True)
    check_counts(counts, f"{what}: layers[{COUNTS_LAYER!r}]")
    return counts


def model_input_layer(counts) -> sp.csr_matrix:
    """SysVI's input from the (n_spots, n_genes) counts of the model's genes: log1p(CP10k) over those
    genes. One rule for fitting and embedding, so both see the same transform.
    """
    from tpir_kedro.cohort.log_expression import log_normalise

    return log_normalise(counts)


def _model_class(kind: str):
    import scvi
    from scvi.external import SysVI

    return SysVI if kind == "sysvi" else getattr(scvi.model, _MODEL_CLASS_NAMES[kind])


def _n_latent(model) -> int:
    """Embedding width: scVI/scANVI modules carry it; SysVI's keeps it only in its init arguments."""
    if hasattr(model.module, "n_latent"):
        return int(model.module.n_latent)
    return int(model.init_params_["kwargs"]["model_kwargs"]["n_latent"])


def registry_mapping(model, registry_key: str) -> list:
    """The category order scvi-tools registered for ``registry_key`` (``"batch"``/``"labels"``)."""
    state = model.registry_["field_registries"].get(registry_key, {}).get("state_registry")
    if not state:  # SysVI registers no labels
        return []
    return [_plain(v) for v in state["categorical_mapping"]]


def _plain(value):
    """Numpy scalars/arrays -> plain Python, so that registries compare equal to their JSON."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class GeneEncoder:
    """A trained scVI or scANVI model as a counts -> embedding function.

    Attributes
    ----------
    kind: the scvi-tools model, ``"scvi"``, ``"scanvi"`` or ``"sysvi"`` (the family entry's ``model``).
    genes: the model's genes, in model order; a cohort must contain all of them.
    batch_categories: the training batches (patients), in registry order. With a single training
        batch the model has no batch covariate and this holds that one patient.
    n_latent: embedding width.
    label_categories: (scanvi only) the classes :meth:`predict_proba` returns, in column order.
    model: the wrapped ``scvi.model.SCVI`` / ``scvi.model.SCANVI``.
    """

    def __init__(
        self,
        model,
        *,
        kind: str,
        genes: Sequence[str],
        batch_categories: Sequence[str],
        label_categories: Sequence[str] | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.training_seconds: float | None = None  # set by fit_gene_encoders; not saved
        if kind == "scanvi" and not label_categories:
            raise ValueError("a scanvi GeneEncoder needs its label_categories")
        self.model = model
        self.kind = kind
        self.genes = [str(g) for g in genes]
        self.batch_categories = [str(b) for b in batch_categories]
        self.label_categories = [str(c) for c in label_categories] if kind == "scanvi" else None
        self.n_latent = _n_latent(model)
        if model.adata is not None and list(model.adata.var_names.astype(str)) != self.genes:
            raise ValueError("the model's genes differ from the encoder's gene list")
        registered = [str(b) for b in self._batch_mapping]
        if self._batch_key is not None and registered != self.batch_categories:
            raise ValueError(
                f"batch_categories {self.batch_categories} differ from the model's registered "
                f"batches {self._batch_mapping}"
            )

    def __repr__(self) -> str:
        return (
            f"GeneEncoder(kind={self.kind!r}, n_genes={len(self.genes)}, n_latent={self.n_latent}, "
            f"batches={len(self.batch_categories)})"
        )

    # -- registry details ---------------------------------------------------------------------
    @property
    def _setup_args(self) -> dict:
        return dict(self.model.registry_["setup_args"])

    @property
    def _batch_key(self) -> str | None:
        """The obs column holding the batch, or None when trained without a batch covariate."""
        return self._setup_args.get("batch_key")

    @property
    def _batch_mapping(self) -> list:
        return registry_mapping(self.model, _BATCH)

    @property
    def _label_mapping(self) -> list:
        return registry_mapping(self.model, _LABELS)

    def _require_batch_free_encoder(self) -> None:
        if self.kind == "sysvi":
            return  # takes the patient by design; embed averages unseen patients over training ones
        if getattr(self.model.module, "encode_covariates", True):
            raise ValueError(
                "this model's encoder takes the batch as input (encode_covariates=True), so spots "
                "of a patient it was not trained on cannot be embedded by borrowing a training "
                "batch; refit with encode_covariates=False (the default)"
            )

    # -- model input ----------------------------------------------------------------------------
    def _model_input(self, cohort: AnnData, assign_batch: str | None = None) -> AnnData:
        """A fresh AnnData (n_obs x genes) laid out as the model was set up; ``cohort`` untouched.

        Batches the model never saw are mapped to the first training batch (the encoder ignores
        the batch, see module docstring); ``assign_batch`` puts every spot in that batch instead.
        Labels (scanvi) are all the unlabelled category: they play no part in q(z|x).
        """
        counts = gene_counts(cohort, self.genes, "gene encoder's gene list does not match the cohort")
        n = counts.shape[0]
        setup = self._setup_args
        obs = pd.DataFrame(index=pd.Index(cohort.obs_names.astype(str)))
        if self._batch_key is not None:
            training = self._batch_mapping
            if assign_batch is not None:
                if assign_batch not in training:
                    raise ValueError(f"{assign_batch!r} is not a training batch ({training})")
                values = np.full(n, assign_batch, dtype=object)
            elif self._batch_key in cohort.obs.columns:
                values = cohort.obs[self._batch_key].astype(str).to_numpy(dtype=object)
                unseen = ~np.isin(values, training)
                if unseen.any():
                    logger.debug(
                        "%d spot(s) of batches the encoder never saw get batch %r (ignored by the encoder)",
                        int(unseen.sum()),
                        training[0],
                    )
                values[unseen] = training[0]
            else:
                values = np.full(n, training[0], dtype=object)
            obs[self._batch_key] = pd.Categorical(values, categories=training)
        if self.kind == "scanvi":
            obs[setup["labels_key"]] = pd.Categorical(
                np.full(n, setup["unlabeled_category"], dtype=object),
                categories=self._label_mapping,
            )
        adata = AnnData(obs=obs, var=pd.DataFrame(index=pd.Index(self.genes)))
        values = model_input_layer(counts) if setup.get("layer") == SYSVI_LAYER else counts
        if setup.get("layer") is None:
            adata.X = values
        else:
            adata.layers[setup["layer"]] = values
        return adata

    def _forget(self, adata: AnnData) -> None:
        """Drop scvi-tools' reference to a throw-away input AnnData.

        scvi-tools keeps a manager (holding the AnnData) per model instance for every AnnData it
        was given; without this every ``embed`` call would stay in memory for the model's life.
        """
        from scvi.data._constants import _SCVI_UUID_KEY

        store = type(self.model)._per_instance_manager_store.get(self.model.id, {})
        store.pop(adata.uns.get(_SCVI_UUID_KEY), None)

    def _latent(self, adata: AnnData) -> np.ndarray:
        if adata.n_obs == 0:  # scvi-tools cannot concatenate zero minibatches
            return np.zeros((0, self.n_latent), dtype=np.float32)
        try:
            # give_mean=True with a normal latent: qz.loc, the posterior mean of q(z|x).
            z = self.model.get_latent_representation(adata, give_mean=True)
        finally:
            self._forget(adata)
        return np.asarray(z)

    # -- public ---------------------------------------------------------------------------------
    def embed(self, cohort: AnnData) -> np.ndarray:
        """Posterior mean of q(z|x) for every spot: (n_obs, n_latent) float array, obs order.

        Spots of patients the model never saw are fine (see the module docstring); for SysVI they
        get the mean of their embeddings as each training patient.
        """
        self._require_batch_free_encoder()
        if self.kind != "sysvi":
            return self._latent(self._model_input(cohort))
        seen = np.zeros(cohort.n_obs, bool)
        if self._batch_key in cohort.obs.columns:
            seen = cohort.obs[self._batch_key].astype(str).isin(self._batch_mapping).to_numpy()
        z = np.empty((cohort.n_obs, self.n_latent), dtype=np.float32)
        if seen.any():
            z[seen] = self._latent(self._model_input(cohort[seen]))
        if not seen.all():
            unseen = cohort[~seen]
            z[~seen] = np.mean(
                [self._latent(self._model_input(unseen, assign_batch=b)) for b in self._batch_mapping], axis=0
            )
        return z

    def predict_proba(self, cohort: AnnData) -> pd.DataFrame:
        """ScANVI's soft class probabilities: (n_obs, n_classes), columns ``label_categories``,
        index ``cohort.obs_names``; rows sum to 1.
        """
        if self.kind != "scanvi":
            raise ValueError("predict_proba needs the scANVI encoder; this one is scVI")
        self._require_batch_free_encoder()
        adata = self._model_input(cohort)
        if adata.n_obs == 0:
            return pd.DataFrame(
                columns=self.label_categories, index=cohort.obs_names.copy(), dtype=np.float32
            )
        try:
            proba = self.model.predict(adata, soft=True)
        finally:
            self._forget(adata)
        proba = pd.DataFrame(proba)
        proba.columns = [str(c) for c in proba.columns]
        # scANVI adds an output for the unlabelled category when training had no unlabelled spot
        # and not every class (scvi-tools' n_labels rule); it was never a training target: drop it.
        proba = proba.loc[:, self.label_categories]
        proba = proba.div(proba.sum(axis=1), axis=0)
        proba.index = cohort.obs_names.copy()
        return proba

    def batch_invariance(self, cohort: AnnData) -> float:
        """Max |delta| between the (n_obs, n_latent) embeddings of ``cohort`` with every spot put in
        each training batch in turn: ~0 when the embedding does not depend on the batch (what lets
        an unseen patient be embedded). 0.0 when the model has no batch covariate.
        """
        if self._batch_key is None or len(self._batch_mapping) < 2:
            return 0.0
        reference = None
        worst = 0.0
        for batch in self._batch_mapping:
            z = self._latent(self._model_input(cohort, assign_batch=batch))
            if reference is None:
                reference = z
            else:
                worst = max(worst, float(np.max(np.abs(z - reference))) if z.size else 0.0)
        return worst

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the folder ``path`` (which must not exist):

        - ``scvi_model/``: scvi-tools' own ``model.save(..., save_anndata=False)``, for users of
          scvi-tools: ``SCVI.load(path / "scvi_model", adata)`` (note: it unpickles) with an AnnData
          of the model's genes holding ``layers["counts"]`` and the batch column (and, for
          scANVI, ``obs["scanvi_label"]``: a tissue class or ``unlabelled``).
        - ``weights.pt``: the module's ``state_dict`` (tensors only: loadable with weights_only).
        - ``encoder.json``: everything else :meth:`load` needs to rebuild the model.
        Written to a sibling temporary folder first, then renamed: no half-written encoder.
        """
        import scvi
        import torch

        path = Path(path)
        if path.exists():
            raise FileExistsError(f"refusing to save the gene encoder into existing {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
        try:
            tmp.mkdir()
            self.model.save(str(tmp / SCVI_MODEL_DIR), save_anndata=False)
            state = {k: v.detach().cpu() for k, v in self.model.module.state_dict().items()}
            torch.save(state, tmp / WEIGHTS_FILE)
            meta = {
                "format_version": FORMAT_VERSION,
                "kind": self.kind,
                "model_class": _MODEL_CLASS_NAMES[self.kind],
                "scvi_tools_version": scvi.__version__,
                "genes": self.genes,
                "n_latent": self.n_latent,
                "batch_categories": self.batch_categories,
                "label_categories": self.label_categories,
                "registry_batch_mapping": self._batch_mapping,
                "registry_label_mapping": self._label_mapping,
                "n_labels": int(getattr(self.model.module, "n_labels", 0)),
                "setup_args": _plain(self._setup_args),
                "init_params": _plain(self.model.init_params_),
            }
            try:
                text = json.dumps(meta, indent=2)
            except TypeError as exc:
                raise TypeError(f"gene encoder metadata is not JSON-serialisable: {exc}") from exc
            (tmp / ENCODER_JSON).write_text(text + "\n")
            os.rename(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> GeneEncoder:
        """Rebuild a saved encoder without unpickling (scvi-tools' own ``load`` uses
        ``torch.load(weights_only=False)``): the model is reconstructed from ``encoder.json`` on a
        placeholder AnnData with the saved genes and categories, then the tensors of
        ``weights.pt`` are loaded with ``weights_only=True``. Returns a CPU model in eval mode.
        """
        import torch

        quiet_scvi()

        path = Path(path)
        meta_path = path / ENCODER_JSON
        if not meta_path.is_file():
            raise FileNotFoundError(f"{path} is not a saved gene encoder (no {ENCODER_JSON})")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{meta_path}: format_version {meta.get('format_version')!r} is not {FORMAT_VERSION}"
            )
        kind = meta["kind"]
        if kind not in KINDS:
            raise ValueError(f"{meta_path}: unknown kind {kind!r}")
        model_cls = _model_class(kind)
        setup_args = dict(meta["setup_args"])

        placeholder = _placeholder_anndata(meta)
        model_cls.setup_anndata(placeholder, **setup_args)
        init = meta["init_params"]
        kwargs = {k: v for group in init.get("kwargs", {}).values() for k, v in group.items()}
        non_kwargs = dict(init["non_kwargs"])
        # SysVI's VampPrior pseudo-inputs are indices into the training data; on the placeholder
        # they are drawn afresh, and the trained pseudo-inputs come back with the weights.
        non_kwargs.pop("pseudoinputs_data_indices", None)
        model = model_cls(placeholder, **non_kwargs, **kwargs)

        rebuilt = {
            "registry_batch_mapping": registry_mapping(model, _BATCH),
            "registry_label_mapping": registry_mapping(model, _LABELS),
            "n_labels": int(getattr(model.module, "n_labels", 0)),
        }
        for key, value in rebuilt.items():
            if value != meta[key]:
                raise ValueError(
                    f"{path}: the rebuilt model's {key} {value} differs from the saved "
                    f"{meta[key]}; the encoder cannot be restored faithfully"
                )
        state = torch.load(path / WEIGHTS_FILE, weights_only=True, map_location="cpu")
        model.module.load_state_dict(state)
        model.is_trained_ = True
        model.module.eval()
        return cls(
            model,
            kind=kind,
            genes=meta["genes"],
            batch_categories=meta["batch_categories"],
            label_categories=meta["label_categories"],
        )


def _placeholder_anndata(meta: Mapping[str, Any]) -> AnnData:
    """A tiny AnnData that makes scvi-tools register exactly the saved genes and categories.

    Every category appears (3 rows each, cycling) with its saved order fixed by the categorical
    dtype, so the registry mappings equal the saved ones. For scANVI the set of label values
    present decides ``n_labels`` (scvi-tools counts the unlabelled category as a class when no
    training spot was unlabelled and a class was missing), so it is chosen to reproduce the
    saved ``n_labels``. Counts are ones (valid counts; a zero library would be log(0)).
    """
    setup = meta["setup_args"]
    batch_cats = meta["registry_batch_mapping"] if setup.get("batch_key") else []
    label_values: list = []
    label_cats: list = []
    if meta["kind"] == "scanvi":
        label_cats = list(meta["registry_label_mapping"])
        unlabeled = setup["unlabeled_category"]
        if meta["n_labels"] == len(label_cats) - 1:
            label_values = label_cats  # unlabelled category present -> it is not a class
        else:
            # no unlabelled row and not every class -> scvi-tools keeps all categories as classes
            label_values = [c for c in label_cats if c != unlabeled][:-1] or label_cats[:1]
    n = _N_PLACEHOLDER_PER_CATEGORY * max(len(batch_cats), len(label_values), 1)
    n = max(n, int(meta["init_params"].get("non_kwargs", {}).get("n_prior_components") or 0))
    obs = pd.DataFrame(index=pd.Index([f"placeholder{i}" for i in range(n)]))
    if batch_cats:
        obs[setup["batch_key"]] = pd.Categorical(
            [batch_cats[i % len(batch_cats)] for i in range(n)], categories=batch_cats
        )
    if meta["kind"] == "scanvi":
        obs[setup["labels_key"]] = pd.Categorical(
            [label_values[i % len(label_values)] for i in range(n)], categories=label_cats
        )
    genes = list(meta["genes"])
    adata = AnnData(obs=obs, var=pd.DataFrame(index=pd.Index(genes)))
    ones = sp.csr_matrix(np.ones((n, len(genes)), dtype=np.float32))
    if setup.get("layer") is None:
        adata.X = ones
    else:
        adata.layers[setup["layer"]] = ones
    return adata
