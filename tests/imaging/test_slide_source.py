"""Slides to predict on: the slide folder, user spot/label files, the scale, and their errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tpir_kedro.cohort.errors import CohortInputError
from tpir_kedro.cohort.slide_folder import SlideFolder, write_slide_folder
from tpir_kedro.imaging.slide_folder import read_slide_folder
from tpir_kedro.imaging.slide_source import SlideSource, check_spots_inside, read_label_table, read_spot_table
from tpir_kedro.imaging.slide_thumbnail import slide_thumbnail


def small_slide_folder() -> SlideFolder:
    image = np.full((60, 80, 3), 230, np.uint8)
    spots = pd.DataFrame({"spot_id": ["1x1", "2x1"], "pixel_x": [10.5, 40.0], "pixel_y": [20.0, 30.25]})
    labels = pd.DataFrame({"spot_id": ["1x1", "2x1"], "label": ["invasive cancer", "undetermined"]})
    return SlideFolder(
        name="Z1",
        image=image,
        um_per_px=1.5,
        spots=spots,
        labels=labels,
        image_name="HE_Z1.png",
        description="demo, simulated",
        patient="Z",
    )


def test_slide_folder_round_trip_and_never_overwrites(tmp_path):
    write_slide_folder(small_slide_folder(), tmp_path / "slide")
    slide = read_slide_folder(tmp_path / "slide")
    assert (slide.name, slide.um_per_px, slide.description, slide.patient) == (
        "Z1",
        1.5,
        "demo, simulated",
        "Z",
    )
    assert slide.image_path == tmp_path / "slide" / "HE_Z1.png" and slide.image_path.is_file()
    assert slide.spots["pixel_y"].tolist() == [20.0, 30.25] and slide.labels.to_dict() == {
        "1x1": "invasive cancer",
        "2x1": "undetermined",
    }
    with pytest.raises(FileExistsError):
        write_slide_folder(small_slide_folder(), tmp_path / "slide")
    with pytest.raises(CohortInputError, match="slide.json"):
        read_slide_folder(tmp_path)


def test_spot_files_accept_tabs_and_missing_ids_and_name_the_file_when_wrong(tmp_path):
    tsv = tmp_path / "spots.tsv"
    tsv.write_text("pixel_x\tpixel_y\n1\t2\n3\t4\n")
    assert read_spot_table(tsv)["spot_id"].tolist() == ["spot0", "spot1"]
    numbered = tmp_path / "numbered.csv"
    numbered.write_text("spot_id,pixel_x,pixel_y\n007,1,2\n")
    assert read_spot_table(numbered)["spot_id"].tolist() == ["007"]
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    with pytest.raises(CohortInputError, match=r"bad\.csv.*lacks column\(s\) \['pixel_x', 'pixel_y'\]"):
        read_spot_table(bad)
    text = tmp_path / "text.csv"
    text.write_text("spot_id,pixel_x,pixel_y\na,1,2\nb,one,2\n")
    with pytest.raises(CohortInputError, match=r"text\.csv.*non-numeric.*\['b'\]"):
        read_spot_table(text)
    repeated = tmp_path / "repeated.csv"
    repeated.write_text("spot_id,pixel_x,pixel_y\na,1,2\na,3,4\n")
    with pytest.raises(CohortInputError, match="more than once"):
        read_spot_table(repeated)
    with pytest.raises(CohortInputError, match="does not exist"):
        read_label_table(tmp_path / "nowhere.csv")


def test_scale_comes_from_the_source_or_the_override_and_is_required(tmp_path):
    slide = SlideSource(name="S", image_path=tmp_path / "s.png")
    with pytest.raises(CohortInputError, match=r"µm/px is unknown.*predict\.um_per_px"):
        slide.with_scale(None)
    assert slide.with_scale(0.5).um_per_px == 0.5
    assert (
        SlideSource(name="S", image_path=tmp_path / "s.png", um_per_px=2.0).with_scale(None).um_per_px == 2.0
    )
    with pytest.raises(CohortInputError, match="unknown"):
        slide.with_scale(-1)


def test_spots_outside_the_image_name_the_spot_file_and_the_image(tmp_path):
    spots = pd.DataFrame({"spot_id": ["in", "out"], "pixel_x": [5.0, 500.0], "pixel_y": [5.0, 5.0]})
    slide = SlideSource(
        name="S", image_path=tmp_path / "s.png", spots=spots, spots_path=tmp_path / "spots.csv"
    )
    check_spots_inside(spots.iloc[:1], 100, 100, slide)
    with pytest.raises(
        CohortInputError, match=r"s\.png.*1 of 2 spot centre\(s\) in spot file .*spots\.csv.*\['out'\]"
    ):
        check_spots_inside(spots, 100, 100, slide)


def test_thumbnail_keeps_the_aspect_and_knows_its_scale(tmp_path):
    Image.fromarray(np.zeros((300, 600, 3), np.uint8)).save(tmp_path / "wide.jpg")
    thumb = slide_thumbnail(tmp_path / "wide.jpg", 150)
    assert thumb.rgb.shape == (75, 150, 3) and thumb.full_size == (600, 300)
    assert thumb.scale_xy == (0.25, 0.25)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(CohortInputError, match=r"broken\.png.*unreadable"):
        slide_thumbnail(tmp_path / "broken.png", 100)
