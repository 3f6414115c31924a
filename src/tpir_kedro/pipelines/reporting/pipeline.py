from kedro.pipeline import Pipeline, node

from tpir_kedro.pipelines.reporting import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                nodes.cohort_overview_figure,
                "cohort_summary",
                "cohort_overview_plot",
                name="plot_cohort_overview",
            ),
            node(
                nodes.slide_label_figure,
                ["cohort", "params:reporting", "params:cohort"],
                "slide_labels_plot",
                name="plot_slide_labels",
            ),
            node(
                nodes.training_curves_figure,
                ["training_history", "params:reporting"],
                "training_curves_plot",
                name="plot_training_curves",
            ),
            node(
                nodes.confusion_matrix_figure,
                ["confusion_matrices", "params:reporting"],
                "confusion_matrices_plot",
                name="plot_confusion_matrices",
            ),
            node(
                nodes.results_table_figure, "results_summary", "results_table_plot", name="plot_results_table"
            ),
            node(
                nodes.html_report,
                [
                    "cohort_overview_plot",
                    "slide_labels_plot",
                    "gene_umap_by_patient",
                    "gene_umap_by_label",
                    "training_curves_plot",
                    "confusion_matrices_plot",
                    "results_table_plot",
                    "results_plot",
                    "run_info",
                    "params:reporting",
                ],
                "html_report",
                name="write_html_report",
            ),
        ],
        tags=["reporting"],
    )
