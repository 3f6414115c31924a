"""Model code, free of Kedro: plain functions and classes the pipelines call.

- :mod:`tpir_kedro.models.gene_encoder_family`: the named, typed gene encoders (``gene_vae.family``).
- :mod:`tpir_kedro.models.gene_vae`: stage 1, fitting them on raw spot counts (scVI, scANVI,
  adversarial / batch-embedding scVI, SysVI).
- :mod:`tpir_kedro.models.gene_encoder`: :class:`~tpir_kedro.models.gene_encoder.GeneEncoder`, the
  fitted encoder later stages reuse (counts -> embedding), with a save/load that never unpickles.
- :mod:`tpir_kedro.models.image_encoders` and :mod:`tpir_kedro.models.foundation_models`: the
  image backbones, CNNs and pathology foundation models, from local weights only.

Nothing is imported here on purpose: scvi-tools and torch take many seconds to import, and code
that only needs a configuration should not pay for them.
"""
