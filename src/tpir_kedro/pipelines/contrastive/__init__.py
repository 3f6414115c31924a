from tpir_kedro.pipelines.contrastive.pipeline import create_pipeline

__all__ = ["create_pipeline"]
