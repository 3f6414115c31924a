"""``predict``: the packaged image model of ``predict.variant`` on a new slide.

slide (+ spots, or a tile grid over its tissue) -> patches at the model card's scale -> encoder
features -> linear-probe class probabilities -> CSV, embeddings, an overlay figure and a summary
(scored when the slide comes with labels).
"""

from kedro.pipeline import Pipeline, node

from tpir_kedro.pipelines.predict import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                nodes.predict_image_model,
                ["image_models@folders", "params:predict"],
                "predict_image_model",
                name="load_predict_model",
            ),
            node(
                nodes.slide_to_predict,
                ["predict_slide", "params:predict"],
                "slide_to_predict",
                name="open_slide",
            ),
            node(
                nodes.slide_spots,
                ["slide_to_predict", "predict_image_model", "params:predict"],
                "slide_spots",
                name="place_spots_or_tissue_grid",
            ),
            node(
                nodes.slide_tiling_plan,
                ["slide_to_predict", "slide_spots", "predict_image_model", "params:predict"],
                "slide_patch_store",
                name="tile_slide",
            ),
            node(
                nodes.slide_embeddings,
                ["slide_patch_store", "slide_spots", "predict_image_model", "params:predict"],
                "slide_embeddings",
                name="embed_slide_patches",
            ),
            node(
                nodes.slide_predictions,
                ["slide_embeddings", "predict_image_model"],
                "slide_predictions",
                name="predict_spot_classes",
            ),
            node(
                nodes.slide_prediction_overlay,
                ["slide_to_predict", "slide_predictions", "predict_image_model", "params:predict"],
                "slide_prediction_overlay",
                name="plot_prediction_overlay",
            ),
            node(
                nodes.slide_prediction_summary,
                ["slide_to_predict", "slide_predictions", "predict_image_model"],
                "slide_prediction_summary",
                name="summarise_slide_prediction",
            ),
        ],
        tags=["predict"],
    )
