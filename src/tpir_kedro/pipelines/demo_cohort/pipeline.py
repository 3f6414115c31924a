from kedro.pipeline import Pipeline, node

from tpir_kedro.pipelines.demo_cohort.nodes import simulated_held_out_slide, simulated_her2st_layout


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                simulated_her2st_layout,
                inputs="params:demo_cohort",
                outputs="raw_cohort",
                name="simulate_demo_cohort",
                tags=["demo"],
            ),
            node(
                simulated_held_out_slide,
                inputs="params:demo_cohort",
                outputs="demo_slide",
                name="simulate_held_out_demo_slide",
                tags=["demo"],
            ),
        ]
    )
