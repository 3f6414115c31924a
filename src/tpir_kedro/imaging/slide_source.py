"""A slide to predict on: an H&E image, its scale, and optionally spot centres and true labels.

Spot and label files are plain CSVs a user can write by hand (tab-separated when named .tsv/.txt):
    spots   ``pixel_x, pixel_y`` (pixel centres in the image's full-resolution frame) and,
            optionally, ``spot_id`` (row numbers otherwise)
    labels  ``spot_id, label`` (only to score predictions; never used to predict)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from tpir_kedro.cohort.errors import CohortInputError

SPOT_COLUMNS = ("spot_id", "pixel_x", "pixel_y")


@dataclass(frozen=True)
class SlideSource:
    """What ``predict`` reads. Nothing but the spot and label tables is loaded until tiling.

    Attributes
    ----------
        name: a short name for reports (e.g. the section).
        image_path: the H&E image.
        um_per_px: µm per full-resolution pixel, or None when the source does not say.
        spots: (n, 3) ``spot_id, pixel_x, pixel_y`` or None (then a tile grid over the tissue).
        spots_path: where ``spots`` came from (named in errors).
        labels: true label per spot id, for scoring only, or None.
        description: where the slide comes from, e.g. "demo, simulated ..." (quoted in the summary).
        patient: the patient, when known: the summary says whether the model was trained on them.
    """

    name: str
    image_path: Path
    um_per_px: float | None = None
    spots: pd.DataFrame | None = None
    spots_path: Path | None = None
    labels: pd.Series | None = None
    description: str = ""
    patient: str | None = None

    def with_scale(self, um_per_px: float | None) -> SlideSource:
        """The same slide at ``um_per_px`` when given, else at its own scale; raises when neither is known."""
        scale = self.um_per_px if um_per_px is None else float(um_per_px)
        if scale is None or not np.isfinite(scale) or scale <= 0:
            raise CohortInputError(
                "the slide's µm/px is unknown: set it with `--params predict.um_per_px=<µm per pixel>` "
                f"(got {scale!r}); patches are cut at the model's physical size, so it cannot be guessed",
                path=self.image_path,
                section=self.name,
            )
        return replace(self, um_per_px=float(scale))


def read_spot_table(path: str | Path, section: str | None = None) -> pd.DataFrame:
    """(n, 3) ``spot_id, pixel_x, pixel_y`` from a CSV; errors name the file."""
    path = Path(path)
    table = _read_csv(path, section, "spot coordinates")
    missing = [c for c in ("pixel_x", "pixel_y") if c not in table.columns]
    if missing:
        raise CohortInputError(
            f"spot file lacks column(s) {missing}; it has {list(table.columns)[:8]}",
            path=path,
            section=section,
        )
    if "spot_id" not in table.columns:
        table["spot_id"] = [f"spot{i}" for i in range(len(table))]
    table["spot_id"] = table["spot_id"].astype(str)
    coordinates = table[["pixel_x", "pixel_y"]].apply(pd.to_numeric, errors="coerce")
    bad = coordinates.isna().any(axis=1)
    if bad.any():
        raise CohortInputError(
            f"{int(bad.sum())} spot(s) have missing or non-numeric pixel_x/pixel_y (e.g. {table.loc[bad, 'spot_id'].head(3).tolist()})",
            path=path,
            section=section,
        )
    repeated = table["spot_id"][table["spot_id"].duplicated()]
    if len(repeated):
        raise CohortInputError(
            f"{len(repeated)} spot id(s) appear more than once (e.g. {repeated.head(3).tolist()})",
            path=path,
            section=section,
        )
    if table.empty:
        raise CohortInputError("spot file has no rows", path=path, section=section)
    return pd.DataFrame(
        {
            "spot_id": table["spot_id"].to_numpy(),
            "pixel_x": coordinates["pixel_x"].to_numpy(float),
            "pixel_y": coordinates["pixel_y"].to_numpy(float),
        }
    )


def read_label_table(path: str | Path, section: str | None = None) -> pd.Series:
    """True label per spot id (``spot_id, label`` CSV); errors name the file."""
    path = Path(path)
    table = _read_csv(path, section, "label")
    missing = [c for c in ("spot_id", "label") if c not in table.columns]
    if missing:
        raise CohortInputError(
            f"label file lacks column(s) {missing}; it has {list(table.columns)[:8]}",
            path=path,
            section=section,
        )
    labels = pd.Series(
        table["label"].astype(str).to_numpy(), index=table["spot_id"].astype(str).to_numpy(), name="label"
    )
    return labels[~labels.index.duplicated()]


def check_spots_inside(spots: pd.DataFrame, width: int, height: int, slide: SlideSource) -> None:
    """Raise naming the spot file and the image when a spot centre lies outside the image."""
    x, y = spots["pixel_x"].to_numpy(), spots["pixel_y"].to_numpy()
    outside = (x < 0) | (y < 0) | (x >= width) | (y >= height)
    if outside.any():
        where = f"spot file {slide.spots_path}" if slide.spots_path else "the spot coordinates"
        raise CohortInputError(
            f"{int(outside.sum())} of {len(spots)} spot centre(s) in {where} lie outside the {width}x{height} image "
            f"(e.g. {spots.loc[outside, 'spot_id'].head(3).tolist()}); are pixel_x/pixel_y in this image's full-resolution frame?",
            path=slide.image_path,
            section=slide.name,
        )


def _read_csv(path: Path, section: str | None, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise CohortInputError(f"{what} file does not exist", path=path, section=section)
    try:
        # Spot ids stay text: "007" is not the number 7.
        return pd.read_csv(
            path, sep="\t" if path.suffix.lower() in (".tsv", ".txt") else ",", dtype={"spot_id": str}
        )
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CohortInputError(f"{what} file is unreadable: {exc}", path=path, section=section) from exc
