"""`predict` through a KedroSession: the trained tiny demo's models on the held-out demo slide, on a
tile grid, on the real A1 image; and the errors a user meets first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from kedro.framework.session import KedroSession
from PIL import Image

from tpir_kedro.cohort.schema import TISSUE_CLASSES
from tpir_kedro.imaging.tiling import write_patch_store
from tpir_kedro.pipelines.predict.nodes import slide_tiling_plan


def run_predict(project: Path, params: dict | None = None, env: str | None = None):
    """Run `predict` with ``params`` as runtime parameters; returns the session's catalog."""
    with KedroSession.create(project_path=project, env=env, runtime_params=params or {}) as session:
        session.run(pipeline_names=["predict"])
        return session.load_context().catalog


def demo_slide_dir(project: Path) -> Path:
    (folder,) = sorted(project.glob("data/01_raw/demo_slide/*/demo_slide"))
    return folder


def latest_card(project: Path, variant: str) -> dict:
    folder = sorted(project.glob("data/06_models/image_models/*/image_models"))[-1]
    return json.loads((folder / variant / "model_card.json").read_text())


def test_demo_cohort_wrote_a_slide_of_a_patient_outside_the_cohort(trained_demo_project):
    sidecar = json.loads((demo_slide_dir(trained_demo_project) / "slide.json").read_text())
    assert sidecar["name"] == "D1" and sidecar["um_per_px"] == 2.0  # the tiny demo has patients A-C
    assert sidecar["description"].startswith("demo, simulated")
    (cohort,) = trained_demo_project.glob("data/01_raw/demo_her2st/*/demo_her2st")
    assert not list(cohort.glob("ST-cnts/D*")), "the held-out patient must not be in the training cohort"
    assert "D" not in latest_card(trained_demo_project, "scanvi_infonce")["training_cohort"]["patients"]


def test_predict_on_the_demo_slide_writes_probabilities_embeddings_overlay_and_a_score(trained_demo_project):
    catalog = run_predict(trained_demo_project)
    card = latest_card(trained_demo_project, "scanvi_infonce")
    spots = pd.read_csv(demo_slide_dir(trained_demo_project) / "spots.csv")

    predictions = catalog.load("slide_predictions")
    classes = card["classes"]
    assert list(predictions.columns[-len(classes) :]) == classes
    assert predictions["spot_id"].astype(str).tolist() == spots["spot_id"].astype(str).tolist()
    np.testing.assert_allclose(predictions[classes].sum(axis=1), 1.0, atol=1e-6)
    assert set(predictions["predicted_class"]) <= set(classes)
    assert (predictions["predicted_class"] == predictions[classes].idxmax(axis=1)).all()

    embeddings = catalog.load("slide_embeddings")
    # What the probe reads: the trained adapter's output (frozen regime), not the backbone's features.
    assert (
        card["representation"] == "adapter" and embeddings.uns["image_model"]["representation"] == "adapter"
    )
    assert embeddings.obsm["X_image"].shape == (len(spots), card["adapter"]["out_dim"])
    assert np.isfinite(embeddings.obsm["X_image"]).all()
    assert embeddings.uns["image_model"]["variant"] == "scanvi_infonce"
    assert embeddings.uns["image_model"]["patch_size_px"] == card["patch_size_px"]
    store = catalog.load("slide_patch_store")
    assert store.patches.shape == (len(spots), card["patch_size_px"], card["patch_size_px"], 3)

    figure = catalog.load("slide_prediction_overlay")
    assert isinstance(figure, go.Figure) and figure.data[0].type == "image"
    assert sum(len(trace.x) for trace in figure.data[1:]) == len(spots)

    summary = catalog.load("slide_prediction_summary")
    score = summary["scored_against_true_labels"]
    assert summary["data"].startswith("demo, simulated") and score["note"].startswith("demo, simulated")
    assert summary["patient"] == "D" and summary["patient_in_training_cohort"] is False
    assert score["n_scored"] > 0 and 0.0 <= score["accuracy"] <= 1.0
    print(
        f"demo slide {summary['slide']}: {score['n_scored']} spots scored, accuracy {score['accuracy']}, macro-F1 {score['macro_f1']}"
    )


def test_without_spot_coordinates_a_tile_grid_covers_the_tissue_only(trained_demo_project):
    image = next(demo_slide_dir(trained_demo_project).glob("HE_*.jpg"))
    catalog = run_predict(
        trained_demo_project, {"predict": {"slide": str(image), "um_per_px": 2.0, "variant": "imagenet"}}
    )
    predictions = catalog.load("slide_predictions")
    assert predictions["spot_id"].str.startswith("tile_").all()
    side = 112.0 / 2.0
    width, height = 800, 800  # the tiny demo's 7 x 7 grid at 2 µm/px
    assert 0 < len(predictions) < (width // side) * (height // side)  # glass is left out
    patches = np.asarray(catalog.load("slide_patch_store").patches)  # one per tile
    assert len(patches) == len(predictions)
    # Near-white pixels per tile: tissue tiles have few (pale fat and a lumen or edge may add some),
    # and no tile is mostly glass.
    glass = (patches.min(axis=-1) > 225).mean(axis=(1, 2))
    assert np.median(glass) < 0.1 and glass.max() < 0.8, np.sort(glass)[-5:]
    summary = catalog.load("slide_prediction_summary")
    assert (
        summary["spots"] == "tile grid over the detected tissue"
        and summary["scored_against_true_labels"] is None
    )
    assert summary["variant"] == "imagenet"


def test_a_user_slide_with_spot_and_label_files(trained_demo_project, tmp_path):
    folder = demo_slide_dir(trained_demo_project)
    spots = pd.read_csv(folder / "spots.csv").head(12)
    labels = pd.read_csv(folder / "labels.csv").head(12)
    # Ids that look like numbers stay strings end to end ("007" is not 7).
    ids = [f"{i:03d}" for i in range(len(spots))]
    spots.assign(spot_id=ids).to_csv(tmp_path / "spots.csv", index=False)
    labels.assign(spot_id=ids).to_csv(tmp_path / "labels.tsv", sep="\t", index=False)
    image = next(folder.glob("HE_*.jpg"))
    catalog = run_predict(
        trained_demo_project,
        {
            "predict": {
                "slide": str(image),
                "um_per_px": 2.0,
                "spots": str(tmp_path / "spots.csv"),
                "labels": str(tmp_path / "labels.tsv"),
            }
        },
    )
    assert catalog.load("slide_embeddings").obs_names.tolist() == ids
    assert len(catalog.load("slide_predictions")) == len(ids)
    summary = catalog.load("slide_prediction_summary")
    assert (
        summary["slide"] == image.stem
        and summary["patient"] is None
        and summary["patient_in_training_cohort"] is None
    )
    assert summary["scored_against_true_labels"]["n_scored"] == int(
        labels["label"].isin(TISSUE_CLASSES).sum()
    )


def test_a_whole_slide_is_read_from_its_pyramid_at_the_scale_in_its_metadata(
    trained_demo_project, tmp_path, pyramidal_tiff
):
    """The demo slide as a pyramidal TIFF of twice its resolution (1 µm/px, said only by the file's
    metadata): predict reads the level that is the demo image itself and gets its exact patches and
    predictions (the model's 112 µm at 32 px wants at most 3.5 px per px: level 1 of 1 and 2)."""
    folder = demo_slide_dir(trained_demo_project)
    with Image.open(next(folder.glob("HE_*.jpg"))) as decoded:
        image = np.asarray(decoded.convert("RGB"))
    Image.fromarray(image).save(tmp_path / "D1.png")
    pyramidal_tiff(tmp_path / "D1.tif", [image.repeat(2, axis=0).repeat(2, axis=1), image], 1.0)
    spots = pd.read_csv(folder / "spots.csv")
    spots.assign(pixel_x=spots["pixel_x"] * 2, pixel_y=spots["pixel_y"] * 2).to_csv(
        tmp_path / "spots_1um.csv", index=False
    )

    # Outputs are versioned: each run's are read before the next run writes newer ones.
    whole = run_predict(
        trained_demo_project,
        {
            "predict": {
                "slide": str(tmp_path / "D1.tif"),
                "spots": str(tmp_path / "spots_1um.csv"),
                "variant": "imagenet",
            }
        },
    )
    store, predictions = whole.load("slide_patch_store"), whole.load("slide_predictions")
    assert (
        store.meta["sections"]["D1"]["reader"] == "tiffslide"
        and store.meta["sections"]["D1"]["pyramid_level"] == 1
    )
    assert whole.load("slide_prediction_summary")["um_per_px"] == 1.0
    assert whole.load("slide_prediction_overlay").data[0].type == "image"
    patches = np.asarray(store.patches).copy()

    plain = run_predict(
        trained_demo_project,
        {
            "predict": {
                "slide": str(tmp_path / "D1.png"),
                "um_per_px": 2.0,
                "spots": str(folder / "spots.csv"),
                "variant": "imagenet",
            }
        },
    )
    np.testing.assert_array_equal(patches, np.asarray(plain.load("slide_patch_store").patches))
    pd.testing.assert_frame_equal(
        predictions.drop(columns=["pixel_x", "pixel_y"]),
        plain.load("slide_predictions").drop(columns=["pixel_x", "pixel_y"]),
    )


def test_a_training_section_through_predict_gets_the_training_patches_and_its_labels_back(
    trained_demo_project, tmp_path
):
    """Predict and training cut the same pixels at the same scale: a section the final models were
    trained on, given as a user's slide, yields the training patch store's patches, and the final
    probe (fitted on those patches) recovers most of its labels. A scale or tiling mismatch fails here."""
    with KedroSession.create(project_path=trained_demo_project) as session:
        catalog = session.load_context().catalog
        cohort, store = catalog.load("cohort"), catalog.load("patch_store")
    section = "A1"
    obs = cohort.obs[cohort.obs["section"] == section]
    obs[["spot_id", "pixel_x", "pixel_y"]].to_csv(tmp_path / "spots.csv", index=False)
    obs[["spot_id", "label"]].to_csv(tmp_path / "labels.csv", index=False)
    (image,) = trained_demo_project.glob(
        f"data/01_raw/demo_her2st/*/demo_her2st/ST-imgs/A/{section}/HE_{section}.jpg"
    )
    params = {
        "slide": str(image),
        "um_per_px": float(obs["um_per_px"].iloc[0]),
        "spots": str(tmp_path / "spots.csv"),
        "labels": str(tmp_path / "labels.csv"),
        "variant": "imagenet",
    }
    predicted = run_predict(trained_demo_project, {"predict": params})

    slide_patches = np.asarray(predicted.load("slide_patch_store").patches)
    training_patches = np.asarray(store.patches)[store.rows(obs.index)]
    assert slide_patches.shape == training_patches.shape
    np.testing.assert_array_equal(slide_patches, training_patches)
    score = predicted.load("slide_prediction_summary")["scored_against_true_labels"]
    assert score["n_scored"] > 0 and score["accuracy"] > 0.8, score  # in-sample: the probe saw these spots


def test_errors_name_what_is_missing(trained_demo_project, tmp_path):
    image = next(demo_slide_dir(trained_demo_project).glob("HE_*.jpg"))
    with pytest.raises(Exception, match=r"µm/px is unknown.*predict\.um_per_px"):
        run_predict(trained_demo_project, {"predict": {"slide": str(image)}})
    with pytest.raises(
        Exception,
        match=r"no trained image model for variant 'nope'.*available: \['bleep', .*'imagenet', .*'supervised'\].*kedro run --pipeline=train",
    ):
        run_predict(trained_demo_project, {"predict": {"variant": "nope"}})
    with pytest.raises(Exception, match=r"missing\.jpg\] image file does not exist"):
        run_predict(
            trained_demo_project, {"predict": {"slide": str(tmp_path / "missing.jpg"), "um_per_px": 2.0}}
        )
    spots = tmp_path / "far_spots.csv"
    spots.write_text("spot_id,pixel_x,pixel_y\nnear,100,100\nfar,5000,100\n")
    with pytest.raises(
        Exception,
        match=r"1 of 2 spot centre\(s\) in spot file .*far_spots\.csv lie outside the 800x800 image",
    ):
        run_predict(
            trained_demo_project, {"predict": {"slide": str(image), "um_per_px": 2.0, "spots": str(spots)}}
        )


def test_an_untrained_project_says_to_train_and_a_model_without_probe_says_so(
    trained_demo_project, project_copy, tmp_path
):
    project = project_copy(tmp_path / "fresh")
    image = next(demo_slide_dir(trained_demo_project).glob("HE_*.jpg"))
    params = {"predict": {"slide": str(image), "um_per_px": 2.0}}
    with pytest.raises(
        Exception, match=r"no trained image models under .*image_models.*kedro run --pipeline=train"
    ):
        run_predict(project, params)
    # A variant packaged without a probe (trained without labels) can embed but not classify.
    source = sorted(trained_demo_project.glob("data/06_models/image_models/*/image_models"))[-1]
    target = project / "data/06_models/image_models" / source.parent.name / "image_models"
    shutil.copytree(source / "imagenet", target / "imagenet")
    (target / "imagenet" / "probe.json").unlink()
    with pytest.raises(Exception, match=r"variant 'imagenet' .* has no linear probe"):
        run_predict(project, {"predict": {**params["predict"], "variant": "imagenet"}})


def test_real_a1_image_reads_and_tiles_at_its_scale(her2st_dir, project_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("TPIR_HER2ST_DIR", str(her2st_dir))
    project = project_copy(tmp_path / "real")
    with KedroSession.create(project_path=project, env="her2st") as session:
        slide = session.load_context().catalog.load("predict_slide")
    assert slide.name == "A1" and slide.image_path == her2st_dir / "app-imgs" / "A1_HE_image_dark.png"
    assert 3.0 < slide.um_per_px < 3.4  # 2000/6954 of the full-resolution scale, from the spot pitch
    assert (
        len(slide.spots) == 346
        and slide.labels.value_counts()["invasive cancer"] > 200
        and slide.patient == "A"
    )
    model = SimpleNamespace(card={"patch_size_um": 112.0, "patch_size_px": 224})  # conf/her2st's patch scale
    store = write_patch_store(
        slide_tiling_plan(slide, slide.spots, model, {"max_image_pixels": 10**9}), tmp_path / "store"
    )
    assert store.patches.shape == (346, 224, 224, 3) and store.meta["size_um"] == 112.0
    assert store.meta["sections"]["A1"]["um_per_px"] == slide.um_per_px
    # Spots sit on tissue, not on the blacked-out background: few dark pixels in any patch.
    dark = (np.asarray(store.patches).max(axis=-1) < 30).mean(axis=(1, 2))
    assert np.median(dark) < 0.05
