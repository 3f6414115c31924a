from tpir_kedro.pipelines.gene_vae.pipeline import create_pipeline

__all__ = ["create_pipeline"]
