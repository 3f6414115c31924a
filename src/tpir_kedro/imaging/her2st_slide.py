"""A section of a HER2ST download as a slide to predict on: its image, spot centres and labels.

The cohort reader does the work (spot ids, selected spots, image-frame pixels through the image's
scale, labels joined by rounded array coordinates, µm/px from the spot pitch), so ``predict`` sees
exactly the spots training would. The reader also parses the counts, only to know which spots
exist; nothing of the expression reaches ``predict``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tpir_kedro.cohort.errors import CohortInputError
from tpir_kedro.cohort.her2st import ReadOptions, discover_her2st_sections, read_her2st_section
from tpir_kedro.cohort.slide_image import DEFAULT_MAX_PIXELS
from tpir_kedro.cohort.spot_geometry import LEGACY_ST_PITCH_UM
from tpir_kedro.imaging.slide_source import SlideSource


def her2st_section_slide(
    root: str | Path,
    section: str,
    image_overrides: dict[str, dict] | None = None,
    um_per_px: float | None = None,
    pitch_um: float = LEGACY_ST_PITCH_UM,
    max_image_pixels: int = DEFAULT_MAX_PIXELS,
) -> SlideSource:
    """Section ``section`` under ``root``; µm/px is ``um_per_px`` or estimated from the spot pitch."""
    (found,) = discover_her2st_sections(root, [section], image_overrides)
    if found.image_path is None:
        raise CohortInputError(
            "section has no image in this download; name one in image_overrides",
            path=Path(root) / "ST-imgs",
            section=section,
        )
    options = ReadOptions(
        um_per_px={} if um_per_px is None else {section: float(um_per_px)},
        pitch_um=pitch_um,
        max_image_pixels=max_image_pixels,
    )
    obs = read_her2st_section(found, options).obs
    report_source = (
        "configured" if um_per_px is not None else f"estimated from the {pitch_um:g} µm spot pitch"
    )
    spot_ids = obs["spot_id"].astype(str).to_numpy()
    labels = obs["label"].astype(str)
    return SlideSource(
        name=section,
        image_path=found.image_path,
        um_per_px=float(obs["um_per_px"].iloc[0]),
        spots=pd.DataFrame(
            {
                "spot_id": spot_ids,
                "pixel_x": obs["pixel_x"].to_numpy(float),
                "pixel_y": obs["pixel_y"].to_numpy(float),
            }
        ),
        spots_path=found.spots_path,
        labels=None
        if found.labels_path is None
        else pd.Series(labels.to_numpy(), index=spot_ids, name="label"),
        patient=found.patient,
        description=(
            f"real HER2ST section {section}: image {found.image_path.name} (scale {found.image_scale:g} of the spot file's frame), "
            f"spots from {found.spots_path.name}, µm/px {report_source}"
        ),
    )
