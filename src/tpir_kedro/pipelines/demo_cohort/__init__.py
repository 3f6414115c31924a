from tpir_kedro.pipelines.demo_cohort.pipeline import create_pipeline

__all__ = ["create_pipeline"]
