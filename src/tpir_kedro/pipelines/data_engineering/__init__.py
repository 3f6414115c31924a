from tpir_kedro.pipelines.data_engineering.pipeline import create_pipeline

__all__ = ["create_pipeline"]
