import numpy as np
import pandas as pd
from PIL import Image

from tpir_kedro.imaging.slide_thumbnail import slide_thumbnail
from tpir_kedro.reporting.slide_labels import default_section, slide_label_figure


def _obs(rows):
    return pd.DataFrame(rows, columns=["section", "label", "has_image"])


def test_default_section_is_the_first_labelled_one_with_an_image():
    obs = _obs(
        [
            ("A1", "invasive cancer", False),
            ("B1", "unlabelled", True),
            ("C1", "adipose tissue", True),
            ("C2", "cancer in situ", True),
        ]
    )
    assert default_section(obs) == "C1"
    # No labelled section has an image: the first with an image; none has one: the first.
    assert default_section(obs[obs["section"] != "C1"].iloc[:2]) == "B1"
    assert default_section(_obs([("B2", "unlabelled", False), ("A2", "unlabelled", False)])) == "A2"
    assert default_section(_obs([])) is None


def test_spots_are_drawn_in_the_full_resolution_frame_over_the_thumbnail(tmp_path):
    path = tmp_path / "he.png"
    Image.fromarray(np.full((400, 800, 3), 200, np.uint8)).save(path)
    spots = pd.DataFrame(
        {
            "pixel_x": [100.0, 700.0, 400.0],
            "pixel_y": [50.0, 350.0, 200.0],
            "label": ["adipose tissue", "invasive cancer", "adipose tissue"],
            "spot_id": ["1x1", "9x5", "5x3"],
        }
    )
    fig = slide_label_figure(spots, "A1", slide_thumbnail(path, 80))
    image, *labels = fig.data
    assert image.type == "image" and image.source.startswith("data:image/jpeg;base64,")
    assert (image.dx, image.dy) == (10.0, 10.0) and image.x0 == 5.0  # 80 px thumbnail pixels cover 800 px
    assert [t.name for t in labels] == ["invasive cancer (1)", "adipose tissue (2)"]
    assert list(labels[1].x) == [100.0, 400.0] and list(labels[1].text) == ["1x1", "5x3"]
    assert fig.layout.yaxis.autorange == "reversed"  # the image frame: y grows downwards


def test_without_a_thumbnail_the_spots_are_drawn_alone_with_the_reason():
    spots = pd.DataFrame({"pixel_x": [1.0], "pixel_y": [2.0], "label": ["unlabelled"]})
    fig = slide_label_figure(spots, "B1", None, note="this section has no image: spots only")
    assert [t.type for t in fig.data] == ["scatter"]
    assert "no image" in fig.layout.title.text
