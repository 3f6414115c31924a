"""Cutting every spot's patch at a physical size into the patch store, one section at a time.

Each section's image is decoded once — at a reduced JPEG draft scale when the patches are
downsampled anyway — and each patch is cropped and resampled in one PIL call (``resize(box=...)``,
antialiased). A whole slide (SVS, NDPI, pyramidal TIFF, ...) is instead read patch by patch from
the pyramid level nearest above the patch resolution, and resampled alike. Spots whose patch
reaches past the image edge are padded with white (glass), never dropped, and flagged in the index.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from PIL import Image

from tpir_kedro.cohort.errors import CohortInputError
from tpir_kedro.cohort.slide_image import DEFAULT_MAX_PIXELS, open_slide_image
from tpir_kedro.cohort.whole_slide import open_whole_slide, whole_slide_reader
from tpir_kedro.imaging.patch_geometry import boxes_outside, decode_reduction, patch_boxes, patch_side_px
from tpir_kedro.imaging.patch_store import INDEX_FILE, META_FILE, PATCHES_FILE, PatchStore
from tpir_kedro.imaging.whole_slide_pixels import pyramid_level, read_patch

logger = logging.getLogger(__name__)
GLASS = 255


@dataclass(frozen=True)
class SectionTiles:
    """What to cut from one section image: ``centres_xy`` (n, 2) in full-resolution pixels."""

    section: str
    patient: str
    image_path: str
    um_per_px: float
    obs_names: tuple[str, ...]
    centres_xy: np.ndarray


@dataclass(frozen=True)
class TilingPlan:
    """Patches of ``size_um`` µm resampled to ``size_px`` px, for every section with an image."""

    size_um: float
    size_px: int
    sections: tuple[SectionTiles, ...]
    sections_without_image: tuple[str, ...] = ()
    max_image_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def n_patches(self) -> int:
        return sum(len(s.obs_names) for s in self.sections)


def plan_tiling(
    cohort: AnnData, size_um: float, size_px: int, max_image_pixels: int = DEFAULT_MAX_PIXELS
) -> TilingPlan:
    """Group the cohort's spots by section image; sections without an image are listed, not tiled."""
    if size_um <= 0 or size_px <= 0:
        raise ValueError(f"patch size must be positive, got {size_um} µm and {size_px} px")
    obs = cohort.obs
    sections, without = [], []
    for name, spots in obs.groupby("section", observed=True, sort=True):
        report = cohort.uns["sections"][str(name)]
        if not bool(spots["has_image"].iloc[0]) or not report.get("image_path"):
            without.append(str(name))
            continue
        um_per_px = float(spots["um_per_px"].iloc[0])
        if not np.isfinite(um_per_px) or um_per_px <= 0:
            raise CohortInputError(
                "image has no valid µm/px; set it in the configuration",
                section=str(name),
                path=report["image_path"],
            )
        sections.append(
            SectionTiles(
                section=str(name),
                patient=str(spots["patient"].iloc[0]),
                image_path=str(report["image_path"]),
                um_per_px=um_per_px,
                obs_names=tuple(spots.index),
                centres_xy=spots[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64),
            )
        )
    if without:
        logger.info(
            "tiling skips %d section(s) without an image (gene side only): %s",
            len(without),
            ", ".join(without),
        )
    return TilingPlan(
        size_um=float(size_um),
        size_px=int(size_px),
        sections=tuple(sections),
        sections_without_image=tuple(without),
        max_image_pixels=max_image_pixels,
    )


def tile_section(
    tiles: SectionTiles,
    size_um: float,
    size_px: int,
    out: np.ndarray,
    max_image_pixels: int = DEFAULT_MAX_PIXELS,
    threads: int = 1,
) -> tuple[np.ndarray, dict]:
    """Cut one section's patches into ``out`` ((n, size_px, size_px, 3) uint8, written in place).

    Returns the per-patch padded flags and a report (decode factor and decoded size, or for a
    whole slide its reader and the pyramid level read).
    """
    side = patch_side_px(size_um, tiles.um_per_px)
    reader = whole_slide_reader(tiles.image_path, section=tiles.section, max_pixels=max_image_pixels)
    if reader is not None:
        return _tile_whole_slide(tiles, reader, side, size_px, out)
    factor = decode_reduction(side, size_px)
    with open_slide_image(tiles.image_path, section=tiles.section, max_pixels=max_image_pixels) as image:
        full_w, full_h = image.size
        if image.format == "JPEG" and factor > 1:
            # PIL picks the draft scale as min(full // requested): request the floor, since a
            # rounded-up size (e.g. 501 for 1001 px at 1/2) makes that 1 and decodes in full.
            drafted = image.draft("RGB", (max(1, full_w // factor), max(1, full_h // factor)))
            factor = 1 if drafted is None else round(full_w / drafted[1][2])  # the scale applied
        else:
            factor = 1
        try:
            image.load()  # decodes; convert() would copy even an RGB image
            if image.mode != "RGB":
                image = image.convert("RGB")
        except OSError as exc:
            raise CohortInputError(
                f"image could not be decoded: {exc}", path=tiles.image_path, section=tiles.section
            ) from exc
        boxes = patch_boxes(tiles.centres_xy, side)
        padded = boxes_outside(boxes, full_w, full_h)
        boxes = (
            boxes / factor
        )  # a draft maps the full frame onto [0, full / factor], not onto its rounded-up size

        def cut(i: int) -> None:
            out[i] = (
                _cut(image, boxes[i], size_px) if not padded[i] else _cut_padded(image, boxes[i], size_px)
            )

        # PIL releases the GIL while resampling, so patches of one decoded image cut in parallel.
        if threads > 1:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(cut, range(len(boxes))))
        else:
            for i in range(len(boxes)):
                cut(i)
    report = {
        "decode_factor": factor,
        "decoded_width": image.size[0],
        "decoded_height": image.size[1],
        "n_padded": int(padded.sum()),
    }
    return padded, report


def _tile_whole_slide(
    tiles: SectionTiles, reader: str, side: float, size_px: int, out: np.ndarray
) -> tuple[np.ndarray, dict]:
    """Cut a whole slide's patches region by region from the pyramid level nearest above the
    patch resolution (one patch at a time: tiffslide's reads are not documented thread-safe).
    """
    with open_whole_slide(tiles.image_path, reader, section=tiles.section) as slide:
        width, height = slide.dimensions
        level = pyramid_level(slide, side, size_px)
        boxes = patch_boxes(tiles.centres_xy, side)
        padded = boxes_outside(boxes, width, height)
        for i, box in enumerate(boxes):
            out[i] = read_patch(slide, box, size_px, level)
        downsample = float(slide.level_downsamples[level])
    report = {
        "reader": reader,
        "pyramid_level": level,
        "level_downsample": downsample,
        "level0_width": int(width),
        "level0_height": int(height),
        "n_padded": int(padded.sum()),
    }
    return padded, report


def _cut(image: Image.Image, box: np.ndarray, size_px: int) -> np.ndarray:
    """Resample ``box`` to ``size_px`` (antialiased bilinear), via a crop with room for the filter.

    Resampling a small crop is faster than ``resize(box=...)`` on the whole slide, and PIL releases
    the GIL meanwhile, so a section's patches are cut in parallel threads.
    """
    margin = int(np.ceil(max(1.0, (box[2] - box[0]) / size_px))) + 1  # the filter's support
    x0, y0 = max(int(np.floor(box[0])) - margin, 0), max(int(np.floor(box[1])) - margin, 0)
    x1, y1 = (
        min(int(np.ceil(box[2])) + margin, image.size[0]),
        min(int(np.ceil(box[3])) + margin, image.size[1]),
    )
    local = (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
    crop = image.crop((x0, y0, x1, y1))
    return np.asarray(
        crop.resize((size_px, size_px), Image.Resampling.BILINEAR, box=local, reducing_gap=None)
    )


def _cut_padded(image: Image.Image, box: np.ndarray, size_px: int) -> np.ndarray:
    """Paste the in-image part of ``box`` onto glass, then resample as usual."""
    x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
    x1, y1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
    canvas = Image.new("RGB", (x1 - x0, y1 - y0), (GLASS, GLASS, GLASS))
    canvas.paste(
        image.crop((max(x0, 0), max(y0, 0), min(x1, image.size[0]), min(y1, image.size[1]))),
        (max(-x0, 0), max(-y0, 0)),
    )
    local = (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
    return _cut(canvas, np.array(local), size_px)


def write_patch_store(plan: TilingPlan, path: str | Path, n_jobs: int = 1) -> PatchStore:
    """Tile every section of ``plan`` into a new store at ``path`` (atomic: staged, then renamed).

    ``n_jobs`` threads cut each section's patches; sections go one at a time (one decoded image held).
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite a patch store")
    if plan.n_patches == 0:
        raise CohortInputError("no section has an image, so there is nothing to tile", path=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its 0700 would make the store private to whoever tiled it.
    staging = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    staging.mkdir()
    try:
        patches = np.lib.format.open_memmap(
            staging / PATCHES_FILE,
            mode="w+",
            dtype=np.uint8,
            shape=(plan.n_patches, plan.size_px, plan.size_px, 3),
        )
        starts = np.cumsum([0] + [len(s.obs_names) for s in plan.sections])

        # One section at a time (one decoded image in memory), its patches cut by n_jobs threads.
        results = [
            tile_section(
                s,
                plan.size_um,
                plan.size_px,
                patches[starts[i] : starts[i + 1]],
                plan.max_image_pixels,
                threads=n_jobs,
            )
            for i, s in enumerate(plan.sections)
        ]
        patches.flush()
        del patches
        index = pd.concat(
            [
                pd.DataFrame(
                    {"obs_name": s.obs_names, "patient": s.patient, "section": s.section, "padded": padded}
                )
                for s, (padded, _) in zip(plan.sections, results)
            ],
            ignore_index=True,
        )
        index["row"] = np.arange(len(index))
        index.to_csv(staging / INDEX_FILE, index=False)
        meta = {
            "size_um": plan.size_um,
            "size_px": plan.size_px,
            "n_patches": int(plan.n_patches),
            "sections": {
                s.section: {
                    "image_path": s.image_path,
                    "um_per_px": s.um_per_px,
                    "n_patches": len(s.obs_names),
                    **report,
                }
                for s, (_, report) in zip(plan.sections, results)
            },
            "sections_without_image": list(plan.sections_without_image),
        }
        (staging / META_FILE).write_text(json.dumps(meta, indent=2))
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    n_padded = int(index["padded"].sum())
    logger.info(
        "patch store: %d patches of %g µm at %d px (%d padded at the image edge) -> %s",
        plan.n_patches,
        plan.size_um,
        plan.size_px,
        n_padded,
        path,
    )
    return PatchStore.open(path)
