from kedro.pipeline import Pipeline, node

from tpir_kedro.pipelines.gene_vae import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                nodes.fold_gene_encoders,
                ["cohort", "patient_folds", "fold_genes", "params:gene_vae"],
                "gene_encoders",
                name="fit_gene_encoders",
            ),
            node(
                nodes.all_patient_embeddings,
                ["cohort", "fold_genes", "gene_encoders", "params:gene_scorecard", "params:gene_vae"],
                "cohort_gene_embeddings",
                name="embed_cohort_genes",
            ),
            node(
                nodes.lopo_label_transfer,
                [
                    "cohort",
                    "patient_folds",
                    "fold_genes",
                    "gene_encoders",
                    "params:gene_scorecard",
                    "params:gene_vae",
                ],
                "gene_label_transfer",
                name="transfer_labels_lopo",
            ),
            node(
                nodes.gene_embedding_scorecard,
                [
                    "cohort_gene_embeddings",
                    "gene_label_transfer",
                    "gene_encoders",
                    "params:gene_scorecard",
                    "params:gene_vae",
                ],
                "gene_embedding_scorecard",
                name="score_gene_embeddings",
            ),
            node(
                nodes.gene_embedding_umaps,
                ["cohort_gene_embeddings", "params:gene_scorecard"],
                ["gene_umap_by_patient", "gene_umap_by_label"],
                name="plot_gene_umaps",
            ),
        ],
        tags=["gene_vae"],
    )
