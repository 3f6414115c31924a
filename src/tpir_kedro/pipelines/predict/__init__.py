from tpir_kedro.pipelines.predict.pipeline import create_pipeline

__all__ = ["create_pipeline"]
