from kedro.pipeline import Pipeline, node

from tpir_kedro.pipelines.data_engineering import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(nodes.read_cohort, ["raw_cohort", "params:cohort"], "cohort_raw", name="read_cohort"),
            node(nodes.section_reading_report, "cohort_raw", "section_report", name="report_section_reading"),
            node(
                nodes.quality_filtered_spots,
                ["cohort_raw", "params:spot_qc"],
                ["cohort_qc", "spot_qc_report"],
                name="filter_spots",
            ),
            node(
                nodes.cohort_with_batch_labels,
                ["cohort_qc", "params:batch_key", "params:folds"],
                "cohort",
                name="add_batch_labels",
            ),
            node(
                nodes.leave_one_patient_out_folds,
                ["cohort", "params:folds"],
                "patient_folds",
                name="make_patient_folds",
            ),
            node(
                nodes.fold_gene_sets,
                ["cohort", "patient_folds", "params:genes"],
                "fold_genes",
                name="select_fold_genes",
            ),
            node(nodes.patch_tiling_plan, ["cohort", "params:patches"], "patch_store", name="tile_patches"),
            node(
                nodes.raw_batch_effect,
                ["cohort", "params:batch_effect"],
                "raw_batch_effect",
                name="measure_raw_batch_effect",
            ),
            node(nodes.cohort_summary, "cohort", "cohort_summary", name="summarise_cohort"),
        ],
        tags=["data_engineering"],
    )
