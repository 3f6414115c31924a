"""Model code, free of Kedro: plain functions and classes the pipelines call.

- :mod:`tpir_kedro.models.gene_vae`: stage 1, the batch-agnostic gene encoders (scVI, then scANVI)
  fitted on raw spot counts.
- :mod:`tpir_kedro.models.gene_encoder`: :class:`~tpir_kedro.models.gene_encoder.GeneEncoder`, the
  fitted encoder later stages reuse (counts -> embedding), with a save/load that never unpickles.

Nothing is imported here on purpose: scvi-tools and torch take many seconds to import, and code
that only needs a configuration should not pay for them.
"""
