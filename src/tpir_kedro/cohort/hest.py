"""Reader for one HEST-1k sample (Jaume et al. 2024, ``mahmoodlab/HEST``) from a HEST download.

    {root}/st/{id}.h5ad          spots x genes raw counts; spot centres in obsm["spatial"] (x, y) in
                                 full-resolution WSI pixels; obs usually also has in_tissue,
                                 array_row, array_col, pxl_col_in_fullres, pxl_row_in_fullres
    {root}/wsis/{id}.tif         the H&E whole slide, a generic pyramidal TIFF
    {root}/metadata/{id}.json    pixel_size_um_estimated, st_technology, inter_spot_dist, patient, ...
    {root}/patches/{id}.h5       HEST's own 224 px patches at 0.5 µm/px (optional; recorded, not used)

A sample is one section. HEST guarantees only ``obsm["spatial"]``; the other obs columns are used when
present. Xenium samples are HEST's pseudo-spots: transcripts pooled into 100 µm squares on a grid,
with ``in_tissue`` all true.

The WSI is the section image and is tiled through the project's whole-slide path, like every other
cohort's image: patches are cut at ``patches.size_um`` and resampled to ``patches.size_px`` by the same
tiler that ``predict`` uses on new slides. HEST's ``patches/{id}.h5`` is therefore not read: its patches
are cut at one fixed scale (112 µm at 0.5 µm/px) by another resampler, only for spots inside HEST's
tissue mask, so training on them would give the models other pixels than ``predict`` gives them later.

The µm/px is HEST's ``pixel_size_um_estimated`` (from the spot grid) unless the configuration gives it,
and is checked twice before anything is cut: against a plausible range for an H&E scan, and by the
spots' median nearest-neighbour spacing, which must match the technology's spot pitch.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from tpir_kedro.cohort.errors import CohortInputError
from tpir_kedro.cohort.section_table import section_anndata
from tpir_kedro.cohort.slide_image import DEFAULT_MAX_PIXELS, image_size
from tpir_kedro.cohort.spot_geometry import LEGACY_ST_PITCH_UM, VISIUM_PITCH_UM

# The same count checks and barcode,label CSVs as Visium: HEST's Visium samples keep the barcodes.
from tpir_kedro.cohort.visium import integer_counts_summed, read_barcode_labels

logger = logging.getLogger(__name__)

# HEST pools Xenium transcripts into squares of this side (HEST's XeniumReader, spot_size_um).
XENIUM_PSEUDO_SPOT_UM = 100.0
# Centre-to-centre spot distance by ``st_technology``, used when the metadata has no inter_spot_dist.
TECHNOLOGY_PITCH_UM = {
    "visium": VISIUM_PITCH_UM,
    "spatial transcriptomics": LEGACY_ST_PITCH_UM,
    "xenium": XENIUM_PSEUDO_SPOT_UM,
}
# µm/px outside this range is a unit or field mix-up (nm, px/µm, a thumbnail's scale), not a scan:
# 0.05 is beyond a 100x objective, 10 coarser than any slide worth tiling; HEST-1k spans 0.14-3.2.
PLAUSIBLE_UM_PER_PX = (0.05, 10.0)
# The spots' median nearest-neighbour spacing must be the spot pitch within this fraction. A wrong
# scale is usually off by 2x or more (20x vs 40x, another pyramid level); HEST's own estimate comes
# from the same spots, so a correct one agrees to a few per cent.
SPACING_TOLERANCE = 0.2
# A patient field holding one of these says "unknown" (HEST's table leaves many empty or blank).
_NO_PATIENT = {"", "nan", "none", "null", "na", "n/a"}


@dataclass(frozen=True)
class HestSample:
    """One HEST sample under ``root`` and what the configuration says about it.

    ``patient`` overrides the metadata's patient (HEST leaves it empty for most samples);
    ``labels_path`` is a CSV with columns ``barcode,label`` (optional); ``um_per_px`` overrides
    ``pixel_size_um_estimated``.
    """

    name: str
    root: Path
    patient: str | None = None
    labels_path: Path | None = None
    um_per_px: float | None = None

    @property
    def st_path(self) -> Path:
        return self.root / "st" / f"{self.name}.h5ad"

    @property
    def wsi_path(self) -> Path:
        return self.root / "wsis" / f"{self.name}.tif"

    @property
    def metadata_path(self) -> Path:
        return self.root / "metadata" / f"{self.name}.json"

    @property
    def patches_path(self) -> Path:
        return self.root / "patches" / f"{self.name}.h5"


@dataclass(frozen=True)
class HestMetadata:
    """What one sample's metadata JSON says, resolved against the configuration.

    ``pitch_um`` is the spot centre-to-centre distance (``inter_spot_dist``, else the technology's);
    ``um_per_px`` has been range-checked; each ``*_source`` says where a value came from.
    """

    sample: str
    path: Path
    patient: str
    patient_source: str
    st_technology: str
    pitch_um: float
    pitch_source: str
    um_per_px: float
    um_per_px_source: str
    pixel_size_um_embedded: float
    organ: str
    oncotree_code: str
    dataset_title: str


def read_hest_metadata(sample: HestSample) -> HestMetadata:
    """Read and check ``metadata/{id}.json``: patient, spot pitch and µm/px.

    Raises
    ------
    CohortInputError
        naming the sample and the file when the file is missing or unreadable, the patient is
        unknown and not configured, the spot pitch is unknown, or the µm/px is absent or implausible.
    """
    name, path = sample.name, sample.metadata_path
    if not path.is_file():
        raise CohortInputError("HEST metadata file is missing", path=path, section=name)
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CohortInputError(
            f"HEST metadata is unreadable as JSON: {exc}", path=path, section=name
        ) from exc
    if not isinstance(meta, dict):
        raise CohortInputError(
            f"HEST metadata is a JSON {type(meta).__name__}, expected an object", path=path, section=name
        )

    if sample.patient is not None and str(sample.patient).strip():
        patient, patient_source = str(sample.patient).strip(), "catalog (patients)"
    else:
        patient, patient_source = _text(meta.get("patient")), "metadata"
        if patient.lower() in _NO_PATIENT:
            raise CohortInputError(
                f"metadata gives no patient id (patient: {meta.get('patient')!r}); folds hold out "
                f"patients, so every sample needs one: give it in the catalog, raw_cohort: patients: "
                f"{{{name}: <patient id>}} (samples of one patient share the id)",
                path=path,
                section=name,
            )

    technology = _text(meta.get("st_technology"))
    pitch_um, pitch_source = _pitch(meta, technology, path, name)
    um_per_px, um_source = _um_per_px(sample, meta, path)
    return HestMetadata(
        sample=name,
        path=path,
        patient=patient,
        patient_source=patient_source,
        st_technology=technology,
        pitch_um=pitch_um,
        pitch_source=pitch_source,
        um_per_px=um_per_px,
        um_per_px_source=um_source,
        pixel_size_um_embedded=_number(meta.get("pixel_size_um_embedded")),
        organ=_text(meta.get("organ")),
        oncotree_code=_text(meta.get("oncotree_code")),
        dataset_title=_text(meta.get("dataset_title")),
    )


def check_one_spot_pitch(
    metadata: list[HestMetadata], configured_pitch_um: float | None, root: Path
) -> float:
    """The cohort's one spot pitch: every sample's must agree, and with ``cohort.spot_pitch_um``.

    ``configured_pitch_um`` None skips the second check (a caller that configured nothing).

    Raises
    ------
    CohortInputError
        naming the technologies, their pitches and samples when they differ, or the configured value
        when the samples' pitch is another.
    """
    if not metadata:
        raise CohortInputError("no HEST samples to read", path=root)
    groups: dict[float, list[HestMetadata]] = {}
    for m in metadata:
        key = next((p for p in groups if math.isclose(p, m.pitch_um, rel_tol=1e-3)), m.pitch_um)
        groups.setdefault(key, []).append(m)
    if len(groups) > 1:
        parts = [
            f"{pitch:g} µm: {_technologies(ms)} ({', '.join(m.sample for m in ms)})"
            for pitch, ms in sorted(groups.items())
        ]
        raise CohortInputError(
            f"the samples mix spot pitches ({'; '.join(parts)}); the pipeline has one "
            "cohort.spot_pitch_um, so read technologies with different pitches as separate cohorts "
            "(one environment each)",
            path=root,
        )
    ((pitch, members),) = groups.items()
    if configured_pitch_um is not None and not math.isclose(pitch, configured_pitch_um, rel_tol=1e-3):
        raise CohortInputError(
            f"the samples are {_technologies(members)} with a {pitch:g} µm spot pitch "
            f"({members[0].pitch_source}), but cohort.spot_pitch_um is {configured_pitch_um:g}: set "
            f"cohort.spot_pitch_um: {pitch:g} in the environment's parameters",
            path=root,
        )
    return pitch


def read_hest_sample(sample: HestSample, max_image_pixels: int = DEFAULT_MAX_PIXELS) -> AnnData:
    """Read one HEST sample into the cohort format (section = sample id).

    Returns an AnnData of (in-tissue spots x unique gene symbols) with int32 counts in
    ``layers["counts"]``; what was found and decided is in ``uns["sections"][sample.name]``.

    Raises
    ------
    CohortInputError
        naming the sample and the file for missing or unreadable files, counts that are not raw
        integers, a µm/px that disagrees with the spot spacing, or spots outside the WSI.
    """
    name = sample.name
    meta = read_hest_metadata(sample)
    for path, what in (
        (sample.st_path, "expression (st/*.h5ad)"),
        (sample.wsi_path, "whole slide (wsis/*.tif)"),
    ):
        if not path.is_file():
            raise CohortInputError(f"HEST {what} file is missing", path=path, section=name)

    raw = _read_h5ad(sample.st_path, name)
    pixel_xy = _spot_centres(raw, sample.st_path, name)
    keep = _in_tissue(raw, sample.st_path, name)
    barcodes = pd.Index(raw.obs_names.astype(str))[keep]
    if barcodes.has_duplicates:
        raise CohortInputError(
            f"spot ids repeat (e.g. {list(barcodes[barcodes.duplicated()][:3])})",
            path=sample.st_path,
            section=name,
        )
    if raw.X is None:
        raise CohortInputError("h5ad has no X matrix of counts", path=sample.st_path, section=name)
    counts, genes, n_duplicate_genes = integer_counts_summed(
        raw.X[keep], raw.var_names, path=sample.st_path, section=name
    )
    pixel_xy = pixel_xy[keep]
    spacing_um = _check_spacing(pixel_xy, meta, sample)
    array_xy, array_source = _array_positions(raw.obs[keep], pixel_xy, meta)

    image_wh = image_size(sample.wsi_path, section=name, max_pixels=max_image_pixels)
    labels, label_report = read_barcode_labels(sample, barcodes)
    obs = pd.DataFrame(
        {
            "patient": meta.patient,
            "section": name,
            "spot_id": barcodes.to_numpy(),
            "label": labels,
            "array_x": array_xy[:, 0],
            "array_y": array_xy[:, 1],
            "pixel_x": pixel_xy[:, 0],
            "pixel_y": pixel_xy[:, 1],
            "has_image": True,
            "um_per_px": meta.um_per_px,
        },
        index=pd.Index([f"{name}_{b}" for b in barcodes]),
    )
    _check_spots_inside(obs, image_wh, sample)
    patches = sample.patches_path.is_file()
    report = {
        "source": "hest",
        "patient": meta.patient,
        "patient_source": meta.patient_source,
        "st_technology": meta.st_technology,
        "organ": meta.organ,
        "oncotree_code": meta.oncotree_code,
        "dataset_title": meta.dataset_title,
        "metadata_path": str(meta.path),
        "counts_path": str(sample.st_path),
        "image_path": str(sample.wsi_path),
        "image_width": image_wh[0],
        "image_height": image_wh[1],
        "image_scale": 1.0,
        "um_per_px": meta.um_per_px,
        "um_per_px_source": meta.um_per_px_source,
        "pixel_size_um_embedded": meta.pixel_size_um_embedded,
        "spot_pitch_um": meta.pitch_um,
        "spot_pitch_source": meta.pitch_source,
        "median_spot_spacing_um": spacing_um,
        "array_position_source": array_source,
        # HEST's own patches: recorded so the report says they exist, never read (module docstring).
        "patches_h5_exists": patches,
        "patches_h5_path": str(sample.patches_path) if patches else "",
        "patches_h5_used": False,
        "n_spots_in_counts": int(raw.n_obs),
        "n_spots_unselected": int((~keep).sum()),
        "n_genes": int(len(genes)),
        "n_duplicate_gene_symbols_summed": n_duplicate_genes,
        **label_report,
    }
    adata = section_anndata(counts, genes, obs, report)
    logger.info(
        "HEST sample %s (%s, patient %s): %d spots (%d outside tissue dropped), %d genes, %d/%d labels "
        "joined, %.4g µm/px (%s), spot spacing %.1f µm",
        name,
        meta.st_technology or "technology not given",
        meta.patient,
        adata.n_obs,
        report["n_spots_unselected"],
        adata.n_vars,
        label_report["n_labels_joined"],
        label_report["n_label_rows"],
        meta.um_per_px,
        meta.um_per_px_source,
        spacing_um,
    )
    return adata


def _text(value) -> str:
    """A metadata field as stripped text; None and NaN (how HEST's table leaves a field empty) as ""."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return str(value).strip()


def _number(value) -> float:
    """A metadata field as a positive finite number, else NaN (missing, empty, text, zero)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) and number > 0 else math.nan


def _technologies(members: list[HestMetadata]) -> str:
    return "/".join(sorted({m.st_technology or "technology not given" for m in members}))


def _pitch(meta: dict, technology: str, path: Path, name: str) -> tuple[float, str]:
    distance = _number(meta.get("inter_spot_dist"))
    if math.isfinite(distance):
        return distance, "metadata inter_spot_dist"
    known = TECHNOLOGY_PITCH_UM.get(technology.lower())
    if known is None:
        raise CohortInputError(
            f"metadata gives no inter_spot_dist and its st_technology {technology!r} is not one whose "
            f"spot pitch is known ({sorted(TECHNOLOGY_PITCH_UM)})",
            path=path,
            section=name,
        )
    return known, f"{technology} spot pitch"


def _um_per_px(sample: HestSample, meta: dict, path: Path) -> tuple[float, str]:
    if sample.um_per_px is not None:
        value, source = _number(sample.um_per_px), "configuration (cohort.um_per_px)"
        if not math.isfinite(value):
            raise CohortInputError(
                f"configured µm/px is {sample.um_per_px!r}", path=path, section=sample.name
            )
    else:
        value, source = _number(meta.get("pixel_size_um_estimated")), "metadata pixel_size_um_estimated"
        if not math.isfinite(value):
            raise CohortInputError(
                f"metadata gives no usable pixel_size_um_estimated ({meta.get('pixel_size_um_estimated')!r}); "
                "set the sample's µm/px in cohort.um_per_px",
                path=path,
                section=sample.name,
            )
    low, high = PLAUSIBLE_UM_PER_PX
    if not low <= value <= high:
        raise CohortInputError(
            f"µm/px {value:g} from the {source} is outside the plausible {low:g}-{high:g} µm/px of an "
            "H&E scan (a unit or field mix-up?)",
            path=path,
            section=sample.name,
        )
    return value, source


def _read_h5ad(path: Path, name: str) -> AnnData:
    import anndata as ad

    try:
        with warnings.catch_warnings():
            # Repeated symbols are expected here and summed; making them unique would split counts.
            warnings.filterwarnings("ignore", message="Variable names are not unique", category=UserWarning)
            return ad.read_h5ad(path)
    except Exception as exc:  # h5py, anndata and their codecs each raise their own types
        raise CohortInputError(
            f"expression is unreadable as h5ad: {type(exc).__name__}: {exc}", path=path, section=name
        ) from exc


def _spot_centres(raw: AnnData, path: Path, name: str) -> np.ndarray:
    """(n, 2) x, y in full-resolution WSI pixels from obsm["spatial"], the one field HEST guarantees."""
    if "spatial" not in raw.obsm:
        raise CohortInputError(
            "h5ad has no obsm['spatial'] (spot centres in WSI pixels)", path=path, section=name
        )
    try:
        xy = np.asarray(raw.obsm["spatial"], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CohortInputError(f"obsm['spatial'] is not numeric: {exc}", path=path, section=name) from exc
    if xy.ndim != 2 or xy.shape != (raw.n_obs, 2):
        raise CohortInputError(
            f"obsm['spatial'] has shape {xy.shape}, expected ({raw.n_obs}, 2) spot centres (x, y)",
            path=path,
            section=name,
        )
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        raise CohortInputError(
            f"{int(bad.sum())} spot centre(s) in obsm['spatial'] are missing (e.g. {list(raw.obs_names[bad][:3])})",
            path=path,
            section=name,
        )
    return xy


def _in_tissue(raw: AnnData, path: Path, name: str) -> np.ndarray:
    """Spots to keep: those marked in_tissue, as the Visium reader keeps them; all when not marked."""
    if "in_tissue" not in raw.obs.columns:
        return np.ones(raw.n_obs, dtype=bool)
    text = raw.obs["in_tissue"].astype(str).str.strip().str.lower()
    flags = pd.to_numeric(text.replace({"true": "1", "false": "0"}), errors="coerce")
    if flags.isna().any():
        raise CohortInputError(
            f"obs['in_tissue'] has values other than 0/1 (e.g. {raw.obs['in_tissue'][flags.isna()].iloc[:3].tolist()})",
            path=path,
            section=name,
        )
    keep = flags.to_numpy() != 0
    if not keep.any():
        raise CohortInputError(
            f"none of the {raw.n_obs} spot(s) is marked in_tissue", path=path, section=name
        )
    return keep


def _median_spacing_px(xy: np.ndarray) -> float:
    """Median distance from each spot to its nearest neighbour, in pixels (NaN for one spot)."""
    if len(xy) < 2:
        return math.nan
    from scipy.spatial import cKDTree

    distances, _ = cKDTree(xy).query(xy, k=2)
    return float(np.median(distances[:, 1]))


def _check_spacing(pixel_xy: np.ndarray, meta: HestMetadata, sample: HestSample) -> float:
    """The spots' median spacing in µm, which must be the spot pitch: a wrong µm/px shows here."""
    spacing_um = _median_spacing_px(pixel_xy) * meta.um_per_px
    if math.isfinite(spacing_um) and abs(spacing_um / meta.pitch_um - 1) > SPACING_TOLERANCE:
        raise CohortInputError(
            f"the spots' median nearest-neighbour spacing ({spacing_um / meta.um_per_px:.1f} px in "
            f"{sample.st_path.name}) x {meta.um_per_px:.4g} µm/px ({meta.um_per_px_source}) is "
            f"{spacing_um:.1f} µm, but the spot pitch is {meta.pitch_um:g} µm ({meta.pitch_source}): "
            "the µm/px (or the pitch) is wrong; if the metadata is, set the sample's µm/px in cohort.um_per_px",
            path=meta.path,
            section=sample.name,
        )
    return spacing_um


def _array_positions(obs: pd.DataFrame, pixel_xy: np.ndarray, meta: HestMetadata) -> tuple[np.ndarray, str]:
    """(n, 2) integer grid positions: array_col/array_row when present, else pixels / pitch, rounded.

    Nothing downstream computes with them; they identify a spot's place on the array in reports.
    """
    columns = ("array_col", "array_row")
    if all(c in obs.columns for c in columns):
        values = obs[list(columns)].apply(pd.to_numeric, errors="coerce")
        if not values.isna().any().any():
            return values.to_numpy().round().astype(np.int64), "obs array_col/array_row"
    pitch_px = meta.pitch_um / meta.um_per_px
    steps = np.round((pixel_xy - pixel_xy.min(axis=0)) / pitch_px) if len(pixel_xy) else pixel_xy
    return steps.astype(np.int64).reshape(-1, 2), "pixel position / spot pitch (no array_col/array_row)"


def _check_spots_inside(obs: pd.DataFrame, image_wh: tuple[int, int], sample: HestSample) -> None:
    x, y = obs["pixel_x"].to_numpy(), obs["pixel_y"].to_numpy()
    outside = (x < 0) | (y < 0) | (x >= image_wh[0]) | (y >= image_wh[1])
    if outside.any():
        examples = obs["spot_id"].to_numpy()[outside][:3].tolist()
        raise CohortInputError(
            f"{int(outside.sum())} spot centre(s) of {sample.st_path.name} lie outside the "
            f"{image_wh[0]}x{image_wh[1]} slide (e.g. {examples}); are obsm['spatial'] and this WSI "
            "from the same HEST release?",
            path=sample.wsi_path,
            section=sample.name,
        )
