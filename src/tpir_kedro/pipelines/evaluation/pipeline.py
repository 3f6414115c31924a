from kedro.pipeline import Pipeline, node

from tpir_kedro.pipelines.evaluation import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                nodes.results_table,
                ["probe_metrics", "expression_prediction", "run_info"],
                "results",
                name="tabulate_results",
            ),
            node(nodes.results_summary, ["results"], "results_summary", name="summarise_results"),
            node(nodes.results_figure, ["results_summary"], "results_plot", name="plot_results"),
            node(
                nodes.packaged_image_models,
                [
                    "final_image_models",
                    "patch_store",
                    "results_summary",
                    "params:evaluation",
                    "params:variants",
                    "run_info",
                ],
                "image_models",
                name="package_final_models",
            ),
        ],
        tags=["evaluation"],
    )
