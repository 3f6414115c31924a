from kedro.pipeline import Pipeline, node

from tpir_kedro.pipelines.demo_cohort.nodes import simulated_her2st_layout


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [node(simulated_her2st_layout, inputs="params:demo_cohort", outputs="raw_cohort", name="simulate_demo_cohort", tags=["demo"])]
    )
