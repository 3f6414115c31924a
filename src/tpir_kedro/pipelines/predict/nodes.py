"""Nodes of the ``predict`` pipeline: a packaged image model and its probe applied to a new slide.

The slide is tiled exactly as training tiled its cohort (patches of the model card's µm, resampled
to its px, through the same tiler and patch store), so a patch means the same physical area here.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from anndata import AnnData

from tpir_kedro.cohort.errors import CohortInputError
from tpir_kedro.cohort.schema import is_classified
from tpir_kedro.cohort.slide_image import image_size
from tpir_kedro.cohort.whole_slide import whole_slide_um_per_px
from tpir_kedro.evaluation.held_out_scores import classes_absent, classification_metrics
from tpir_kedro.imaging.patch_geometry import patch_side_px
from tpir_kedro.imaging.patch_store import PatchStore
from tpir_kedro.imaging.predict_settings import PredictSettings
from tpir_kedro.imaging.slide_source import SlideSource, check_spots_inside
from tpir_kedro.imaging.slide_thumbnail import slide_thumbnail
from tpir_kedro.imaging.tiling import SectionTiles, TilingPlan
from tpir_kedro.imaging.tissue_grid import tissue_mask, tissue_tile_grid
from tpir_kedro.models.packaged_model import PackagedImageModel
from tpir_kedro.models.packaged_model_folders import PackagedModelFolders
from tpir_kedro.reporting.prediction_overlay import prediction_overlay

logger = logging.getLogger(__name__)

FEATURES_KEY = "X_image"


def predict_image_model(image_models: PackagedModelFolders, predict: dict) -> PackagedImageModel:
    """The packaged model of ``predict.variant``; it must have a linear probe to predict classes."""
    variant = PredictSettings.from_dict(predict).variant
    try:
        model = image_models.load(variant)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None  # a KeyError would print the message in quotes
    if model.probe is None:
        raise ValueError(
            f"variant {variant!r} in {image_models.root} has no linear probe (its training cohort had fewer than two "
            "labelled tissue classes), so it can embed patches but not classify them; train with labelled sections "
            f"or pick a variant with a probe: {image_models.variants}"
        )
    if list(model.probe.classes) != list(model.card.get("classes", model.probe.classes)):
        raise ValueError(
            f"variant {variant!r}: the probe's classes {model.probe.classes} differ from its model card's {model.card['classes']}"
        )
    logger.info(
        "predict: variant %s (%s), %g µm patches at %d px, classes %s",
        variant,
        model.card.get("backbone"),
        model.card["patch_size_um"],
        model.card["patch_size_px"],
        model.probe.classes,
    )
    return model


def slide_to_predict(predict_slide: SlideSource, predict: dict) -> SlideSource:
    """The slide at a known µm/px, its image readable: ``predict.um_per_px`` wins over the slide's
    own (its folder or catalog entry), which wins over a whole slide's metadata.
    """
    settings = PredictSettings.from_dict(predict)
    slide, scale = predict_slide, settings.um_per_px
    if scale is None and slide.um_per_px is None:
        scale = whole_slide_um_per_px(slide.image_path, section=slide.name)
        if scale is not None:
            logger.info("predict: µm/px %.4g from the whole slide's own metadata", scale)
    slide = slide.with_scale(scale)
    width, height = image_size(slide.image_path, section=slide.name, max_pixels=settings.max_image_pixels)
    logger.info(
        "predict: slide %s, %dx%d px at %.4g µm/px (%s)",
        slide.name,
        width,
        height,
        slide.um_per_px,
        slide.description or slide.image_path,
    )
    return slide


def slide_spots(
    slide_to_predict: SlideSource, predict_image_model: PackagedImageModel, predict: dict
) -> pd.DataFrame:
    """(n, 3+) ``spot_id, pixel_x, pixel_y`` (full-resolution px): the slide's spots, or when it has
    none, a grid of patch-sized tiles over its tissue (plus ``tissue_fraction``).
    """
    slide, settings = slide_to_predict, PredictSettings.from_dict(predict)
    width, height = image_size(slide.image_path, section=slide.name, max_pixels=settings.max_image_pixels)
    if slide.spots is not None:
        check_spots_inside(slide.spots, width, height, slide)
        return slide.spots.reset_index(drop=True)
    grid = settings.tile_grid
    size_um = float(predict_image_model.card["patch_size_um"])
    side = patch_side_px(size_um, slide.um_per_px)
    stride = patch_side_px(grid.stride_um or size_um, slide.um_per_px)
    thumbnail = slide_thumbnail(
        slide.image_path,
        grid.thumbnail_max_side,
        section=slide.name,
        max_pixels=settings.max_image_pixels,
    )
    thumbnail_um_per_px = slide.um_per_px / thumbnail.scale_xy[0]
    closing_px = int(round(grid.closing_um / thumbnail_um_per_px))
    mask = tissue_mask(
        thumbnail.rgb, grid.min_saturation, grid.max_saturation, grid.min_brightness, closing_px
    )
    tiles = tissue_tile_grid(mask, thumbnail.full_size, side, stride, grid.min_tissue_fraction)
    if tiles.empty:
        raise CohortInputError(
            f"no {size_um:g} µm tile is at least {grid.min_tissue_fraction} tissue (tissue: {mask.mean():.1%} of the thumbnail); "
            "check predict.um_per_px, lower predict.tile_grid.min_tissue_fraction or min_saturation, or give spot coordinates (predict.spots)",
            path=slide.image_path,
            section=slide.name,
        )
    logger.info(
        "predict: no spot coordinates, so %d tiles of %g µm over the tissue (%.1f%% of the slide)",
        len(tiles),
        size_um,
        100 * mask.mean(),
    )
    return tiles


def slide_tiling_plan(
    slide_to_predict: SlideSource,
    slide_spots: pd.DataFrame,
    predict_image_model: PackagedImageModel,
    predict: dict,
) -> TilingPlan:
    """What to cut (the catalog's patch store writes it): one patch per spot at the model card's scale."""
    card = predict_image_model.card
    tiles = SectionTiles(
        section=slide_to_predict.name,
        patient=slide_to_predict.patient or "",
        image_path=str(slide_to_predict.image_path),
        um_per_px=float(slide_to_predict.um_per_px),
        obs_names=tuple(_store_keys(slide_to_predict.name, slide_spots["spot_id"])),
        centres_xy=slide_spots[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64),
    )
    return TilingPlan(
        size_um=float(card["patch_size_um"]),
        size_px=int(card["patch_size_px"]),
        sections=(tiles,),
        max_image_pixels=PredictSettings.from_dict(predict).max_image_pixels,
    )


def slide_embeddings(
    slide_patch_store: PatchStore,
    slide_spots: pd.DataFrame,
    predict_image_model: PackagedImageModel,
    predict: dict,
) -> AnnData:
    """Spots x 0 AnnData with the model's representation (what its probe reads: the encoder's
    features, through its adapter when it has one) in ``obsm["X_image"]`` (n, d) and the pixel
    centres in ``obsm["spatial"]`` (n, 2); which model and scale in ``uns["image_model"]``.
    """
    spot_ids = slide_spots["spot_id"].astype(str).to_numpy()
    store = slide_patch_store
    ((slide_name, section),) = store.meta["sections"].items()
    keys = _store_keys(slide_name, spot_ids)
    settings = PredictSettings.from_dict(predict)
    features = predict_image_model.embed(
        store.patches, store.rows(keys), batch_size=settings.batch_size, device=settings.torch_device
    )
    card = predict_image_model.card
    obs = pd.DataFrame(
        {
            "pixel_x": slide_spots["pixel_x"].to_numpy(float),
            "pixel_y": slide_spots["pixel_y"].to_numpy(float),
            "padded": store.index.loc[keys, "padded"].to_numpy(bool),
        },
        index=pd.Index(spot_ids, name="spot_id"),
    )
    embeddings = AnnData(
        obs=obs,
        obsm={FEATURES_KEY: features.astype(np.float32), "spatial": obs[["pixel_x", "pixel_y"]].to_numpy()},
    )
    embeddings.uns["image_model"] = {
        "variant": card.get("variant", ""),
        "backbone": card.get("backbone", ""),
        "representation": card.get("representation", "backbone"),
        "run_id": card.get("run_id") or "",
        "patch_size_um": float(card["patch_size_um"]),
        "patch_size_px": int(card["patch_size_px"]),
        "slide_image": section["image_path"],
        "slide_um_per_px": float(section["um_per_px"]),
    }
    return embeddings


def slide_predictions(slide_embeddings: AnnData, predict_image_model: PackagedImageModel) -> pd.DataFrame:
    """One row per spot: ``spot_id, pixel_x, pixel_y, padded, predicted_class, max_probability`` and
    one probability column per class of the model card (rows sum to 1).
    """
    probe = predict_image_model.probe
    probabilities = probe.predict_proba(slide_embeddings.obsm[FEATURES_KEY])  # (n, n_classes)
    classes = list(probe.classes)
    table = pd.DataFrame(
        {
            "spot_id": slide_embeddings.obs_names.to_numpy(),
            "pixel_x": slide_embeddings.obs["pixel_x"].to_numpy(),
            "pixel_y": slide_embeddings.obs["pixel_y"].to_numpy(),
            "padded": slide_embeddings.obs["padded"].to_numpy(),
            "predicted_class": np.asarray(classes, dtype=object)[probabilities.argmax(axis=1)],
            "max_probability": probabilities.max(axis=1),
        }
    )
    return pd.concat([table, pd.DataFrame(probabilities, columns=classes)], axis=1)


def slide_prediction_overlay(
    slide_to_predict: SlideSource,
    slide_predictions: pd.DataFrame,
    predict_image_model: PackagedImageModel,
    predict: dict,
) -> go.Figure:
    """The predicted class map over a thumbnail of the slide."""
    slide, card, settings = slide_to_predict, predict_image_model.card, PredictSettings.from_dict(predict)
    thumbnail = slide_thumbnail(
        slide.image_path, settings.overlay_max_side, section=slide.name, max_pixels=settings.max_image_pixels
    )
    title = f"{slide.name}: predicted tissue class ({card.get('variant', '')}, {len(slide_predictions)} patches of {card['patch_size_um']:g} µm)"
    if slide.description.startswith("demo"):
        title += " - demo, simulated slide"
    return prediction_overlay(
        thumbnail,
        slide_predictions,
        list(predict_image_model.probe.classes),
        patch_side_px(float(card["patch_size_um"]), slide.um_per_px),
        title,
    )


def slide_prediction_summary(
    slide_to_predict: SlideSource, slide_predictions: pd.DataFrame, predict_image_model: PackagedImageModel
) -> dict:
    """What was predicted on which slide with which model; scored against the slide's true labels
    when it has them (tissue classes only: 'undetermined' and unlabelled spots are not scored).
    """
    slide, card = slide_to_predict, predict_image_model.card
    predicted = slide_predictions["predicted_class"].astype(str)
    summary = {
        "slide": slide.name,
        "data": slide.description,
        "image": str(slide.image_path),
        "um_per_px": slide.um_per_px,
        "spots": "spot coordinates" + (f" ({slide.spots_path})" if slide.spots_path else "")
        if slide.spots is not None
        else "tile grid over the detected tissue",
        "n_spots": int(len(slide_predictions)),
        "n_padded_at_image_edge": int(slide_predictions["padded"].sum()),
        "variant": card.get("variant", ""),
        "backbone": card.get("backbone", ""),
        "model_run_id": card.get("run_id"),
        "patch_size_um": float(card["patch_size_um"]),
        "patch_size_px": int(card["patch_size_px"]),
        "predicted_class_counts": {str(k): int(v) for k, v in predicted.value_counts().items()},
        "patient": slide.patient,
        # A score on a patient the model was trained on says little about new patients.
        "patient_in_training_cohort": None
        if slide.patient is None
        else slide.patient in card.get("training_cohort", {}).get("patients", []),
        "scored_against_true_labels": None,
    }
    if summary["patient_in_training_cohort"]:
        logger.warning(
            "predict: the model was trained on patient %s, whose slide this is: its score is not a held-out result",
            slide.patient,
        )
    if slide.labels is not None:
        truth = (
            slide.labels.reindex(slide_predictions["spot_id"].astype(str))
            .fillna("unlabelled")
            .astype(str)
            .to_numpy()
        )
        scored = is_classified(truth)
        metrics = classification_metrics(truth[scored], predicted.to_numpy()[scored])
        summary["scored_against_true_labels"] = {
            "note": f"{slide.description}" if slide.description else "true labels given with the slide",
            "n_scored": int(scored.sum()),
            "n_not_scored": int((~scored).sum()),  # undetermined, unlabelled, or spots the label file lacks
            **{k: None if not np.isfinite(v) else round(float(v), 4) for k, v in metrics.items()},
            "classes_absent": classes_absent(truth[scored]),
        }
        logger.info(
            "predict: %s scored on %d labelled spots: accuracy %s, macro-F1 %s (%s)",
            slide.name,
            int(scored.sum()),
            summary["scored_against_true_labels"]["accuracy"],
            summary["scored_against_true_labels"]["macro_f1"],
            slide.description,
        )
    return summary


def _store_keys(slide_name: str, spot_ids) -> list[str]:
    """Patch-store keys ``{slide}:{spot id}``: never number-like, so the store's index.csv reads them
    back as the same strings (a bare id like "007" would come back as the integer 7).
    """
    return [f"{slide_name}:{spot}" for spot in pd.Series(spot_ids).astype(str)]
