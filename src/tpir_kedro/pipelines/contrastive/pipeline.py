from kedro.pipeline import Pipeline, node

from tpir_kedro.pipelines.contrastive import nodes

TRAINING = ["patch_store", "checkpoint_root", "params:contrastive", "params:variants", "params:image_runs"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                nodes.contrastive_training_inputs,
                [
                    "cohort",
                    "patient_folds",
                    "fold_genes",
                    "gene_encoders",
                    "patch_store",
                    "params:evaluation",
                    "params:image_runs",
                ],
                "contrastive_inputs",
                name="assemble_fold_inputs",
            ),
            node(
                nodes.fold_image_embeddings,
                ["contrastive_inputs", *TRAINING],
                ["fold_image_embeddings", "training_history"],
                name="train_fold_image_models",
            ),
            node(
                nodes.final_image_models,
                ["contrastive_inputs", *TRAINING],
                "final_image_models",
                name="train_final_image_models",
            ),
            node(
                nodes.training_runs,
                ["training_history", "final_image_models"],
                "training_runs",
                name="summarise_training_runs",
            ),
        ],
        tags=["contrastive"],
    )
