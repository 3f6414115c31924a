"""Read a slide folder (the layout of :mod:`tpir_kedro.cohort.slide_folder`) as a :class:`SlideSource`."""

from __future__ import annotations

import json
from pathlib import Path

from tpir_kedro.cohort.errors import CohortInputError
from tpir_kedro.cohort.slide_folder import SIDECAR
from tpir_kedro.imaging.slide_source import SlideSource, read_label_table, read_spot_table


def read_slide_folder(root: str | Path) -> SlideSource:
    """The slide described by ``root/slide.json`` (paths in it are relative to ``root``)."""
    root = Path(root)
    sidecar_path = root / SIDECAR
    if not sidecar_path.is_file():
        raise CohortInputError(f"not a slide folder: {SIDECAR} is missing", path=sidecar_path)
    try:
        sidecar = json.loads(sidecar_path.read_text())
        name, image = str(sidecar["name"]), root / sidecar["image"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CohortInputError(
            f"slide sidecar is unreadable or lacks 'name'/'image': {exc}", path=sidecar_path
        ) from exc
    spots_path = root / sidecar["spots"] if sidecar.get("spots") else None
    labels_path = root / sidecar["labels"] if sidecar.get("labels") else None
    um_per_px = sidecar.get("um_per_px")
    return SlideSource(
        name=name,
        image_path=image,
        um_per_px=None if um_per_px is None else float(um_per_px),
        spots=None if spots_path is None else read_spot_table(spots_path, name),
        spots_path=spots_path,
        labels=None if labels_path is None else read_label_table(labels_path, name),
        description=str(sidecar.get("description", "")),
        patient=None if sidecar.get("patient") is None else str(sidecar["patient"]),
    )
