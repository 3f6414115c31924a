"""The demo cohort: seeded HER2ST-like patients, sections, counts, labels and H&E images.

Returns the HER2ST layout in memory (:class:`Her2stLayout`); writing it to disk and reading it back
through the real reader is the catalog's job, so the demo exercises the same code as real data.

Two dials make the batch effect an experiment (benchmarks/bench_batch_effect.py): ``batch_strength``
k multiplies every patient and section effect in expression, ``stain_strength`` s the per-patient stain spread.
For one seed the tissue maps, spots and labels do not depend on either, and the images do not depend
on k: both dials rescale draws rather than change what is drawn (see :func:`_section_counts`).
"""

from __future__ import annotations

import copy
import string
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from tpir_kedro.cohort.demo.expression import (
    ExpressionConfig,
    cohort_programs,
    patient_effects,
    section_effects,
    spot_counts,
)
from tpir_kedro.cohort.demo.histology import patient_stain, render_he, section_style
from tpir_kedro.cohort.demo.tissue import class_fractions_in_disks, class_map, smooth_fields, tissue_mask
from tpir_kedro.cohort.her2st_layout import Her2stLayout, Her2stSectionTables
from tpir_kedro.cohort.schema import TISSUE_CLASSES, UNDETERMINED

_CANCER = np.array([c in ("invasive cancer", "cancer in situ") for c in TISSUE_CLASSES])


@dataclass(frozen=True)
class DemoCohortConfig:
    """Size, geometry and effect strengths of the demo cohort (see parameters_demo_cohort.yml)."""

    seed: int = 0
    n_patients: int = 4
    sections_per_patient: int = 2
    grid: tuple[int, int] = (14, 14)  # array columns x rows
    pitch_um: float = 200.0
    spot_diameter_um: float = 100.0
    um_per_px: float = 2.0
    region_scale_spots: float = 1.6  # correlation length of tissue regions, in spot pitches
    composition_sd: float = 0.5  # patient shift of the log class composition
    section_field_sd: float = 0.35  # how much serial sections differ
    undetermined_fraction: float = 0.05
    sections_without_image: int = 1  # the last sections lack an image (gene side only), as in HER2ST
    genes_missing_per_section: int = 3  # sections measure slightly different gene sets, as in HER2ST
    stain_vector_sd: float = 0.06
    stain_intensity_sd: float = 0.12
    scanner_blur_max_px: float = 0.8
    batch_strength: float = 1.0  # k: every patient and section effect in expression x k (0: none)
    stain_strength: float = 1.0  # s: per-patient stain spread x s
    expression: ExpressionConfig = field(default_factory=ExpressionConfig)

    @classmethod
    def from_dict(cls, params: dict) -> DemoCohortConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(params) - known
        if unknown:
            raise ValueError(f"unknown demo_cohort parameter(s) {sorted(unknown)}; known: {sorted(known)}")
        params = dict(params)
        if "expression" in params:
            params["expression"] = ExpressionConfig(**params["expression"])
        if "grid" in params:
            params["grid"] = tuple(params["grid"])
        for dial in ("batch_strength", "stain_strength"):
            if float(params.get(dial, 1.0)) < 0:
                raise ValueError(f"demo_cohort.{dial} must be >= 0, got {params[dial]}")
        return cls(**params)

    def patient_stain_sds(self) -> tuple[float, float]:
        """Stain vector and intensity sds of a patient, after ``stain_strength``."""
        return self.stain_vector_sd * self.stain_strength, self.stain_intensity_sd * self.stain_strength


def simulate_demo_cohort(config: DemoCohortConfig) -> Her2stLayout:
    rng = np.random.default_rng(config.seed)
    n_classes = len(TISSUE_CLASSES)
    genes = [f"DEMO{i:04d}" for i in range(config.expression.n_genes)]
    programs = cohort_programs(rng, config.expression, n_classes)
    base_composition = BASE_LOG_COMPOSITION
    pitch_px, margin_px, shape, coarse = section_geometry(config)

    layout = Her2stLayout(readme=_README.format(config=config))
    n_sections = config.n_patients * config.sections_per_patient
    for p in range(config.n_patients):
        patient = string.ascii_uppercase[p]
        log_prior = base_composition + rng.normal(0.0, config.composition_sd, n_classes)
        patient_fields = smooth_fields(rng, n_classes, coarse, config.region_scale_spots)
        effects = patient_effects(rng, config.expression)
        h_od, e_od = patient_stain(rng, *config.patient_stain_sds())
        for s in range(config.sections_per_patient):
            name = f"{patient}{s + 1}"
            index = p * config.sections_per_patient + s
            fields_s = patient_fields + config.section_field_sd * smooth_fields(
                rng, n_classes, coarse, config.region_scale_spots
            )
            classes = class_map(fields_s, log_prior, pitch_px, shape)
            tissue = tissue_mask(rng, shape, margin_px * 0.6)
            spots = _spot_table(rng, config, tissue, pitch_px, margin_px)
            centres = spots[["pixel_x", "pixel_y"]].to_numpy()
            fractions = class_fractions_in_disks(
                classes, centres, config.spot_diameter_um / 2 / config.um_per_px, n_classes
            )
            counts = _section_counts(rng, config, programs, effects, fractions)
            ids = [f"{x}x{y}" for x, y in zip(spots["x"], spots["y"])]
            keep_genes = np.sort(
                rng.choice(len(genes), len(genes) - config.genes_missing_per_section, replace=False)
            )
            count_table = pd.DataFrame(
                counts[:, keep_genes], index=ids, columns=[genes[g] for g in keep_genes]
            )
            has_image = index < n_sections - config.sections_without_image
            image = (
                render_he(
                    rng,
                    classes,
                    tissue,
                    config.um_per_px,
                    section_style(rng, h_od, e_od, config.scanner_blur_max_px),
                )
                if has_image
                else None
            )
            # Like HER2ST, one section per patient carries pathologist labels.
            labels = _label_table(rng, config, spots, fractions) if s == 0 else None
            layout.sections[name] = Her2stSectionTables(
                patient=patient,
                counts=count_table,
                spots=spots,
                labels=labels,
                image=image,
                image_name=f"HE_{name}.jpg",
            )
    return layout


def _section_counts(rng, config: DemoCohortConfig, programs, effects, fractions: np.ndarray) -> np.ndarray:
    """(n_spots, n_genes) counts of one section at the cohort's ``batch_strength``.

    The section's own effects are drawn here, then both its and its patient's are scaled by k. Gamma and
    Poisson sampling consume a number of random draws that depends on the means, so sampling at another
    strength from the cohort's stream would change every later draw (the next sections' tissue, spots,
    labels and images). The stream therefore always advances by the counts at strength 1 (the default
    cohort, bit for bit), and any other strength samples its counts from a copy of the stream as it
    stood before. Different k then share the patient and section draws, the spot depths and the Gamma
    step's draws (which depend on the shape only): k moves the means, and only the Poisson step's noise
    differs.
    """
    section = section_effects(rng, config.expression)
    before = copy.deepcopy(rng) if config.batch_strength != 1.0 else None
    counts = spot_counts(rng, config.expression, programs, effects, section, fractions, _CANCER)
    if before is not None:
        k = config.batch_strength
        counts = spot_counts(
            before, config.expression, programs, effects.scaled(k), section.scaled(k), fractions, _CANCER
        )
    return counts


# Cohort-wide log class composition before each patient's shift (TISSUE_CLASSES order).
BASE_LOG_COMPOSITION = np.log(np.array([0.35, 0.1, 0.1, 0.08, 0.22, 0.15]))


def section_geometry(config: DemoCohortConfig) -> tuple[float, float, tuple[int, int], tuple[int, int]]:
    """Spot pitch and margin (px), image shape (H, W) and coarse field shape of every section image."""
    pitch_px = config.pitch_um / config.um_per_px
    margin_px = pitch_px
    gx, gy = config.grid
    shape = (int(round((gy - 1) * pitch_px + 2 * margin_px)), int(round((gx - 1) * pitch_px + 2 * margin_px)))
    coarse = (int(np.ceil(shape[0] / pitch_px)) + 1, int(np.ceil(shape[1] / pitch_px)) + 1)
    return pitch_px, margin_px, shape, coarse


def _spot_table(
    rng, config: DemoCohortConfig, tissue: np.ndarray, pitch_px: float, margin_px: float
) -> pd.DataFrame:
    gx, gy = config.grid
    x, y = np.meshgrid(np.arange(1, gx + 1), np.arange(1, gy + 1))
    x, y = x.ravel(), y.ravel()
    # A slight rotation and jitter, as real array-to-image registrations have.
    angle = rng.normal(0.0, 0.01)
    px = (
        margin_px
        + (x - 1) * pitch_px * np.cos(angle)
        - (y - 1) * pitch_px * np.sin(angle)
        + rng.normal(0, 0.5, len(x))
    )
    py = (
        margin_px
        + (x - 1) * pitch_px * np.sin(angle)
        + (y - 1) * pitch_px * np.cos(angle)
        + rng.normal(0, 0.5, len(x))
    )
    h, w = tissue.shape
    on_tissue = tissue[
        np.clip(np.round(py).astype(int), 0, h - 1), np.clip(np.round(px).astype(int), 0, w - 1)
    ]
    table = pd.DataFrame(
        {
            "x": x,
            "y": y,
            "new_x": np.round(x + rng.normal(0, 0.03, len(x)), 3),
            "new_y": np.round(y + rng.normal(0, 0.03, len(x)), 3),
            "pixel_x": np.round(px, 2),
            "pixel_y": np.round(py, 2),
            "selected": 1,
        }
    )
    return table[on_tissue].reset_index(drop=True)


def _label_table(rng, config: DemoCohortConfig, spots: pd.DataFrame, fractions: np.ndarray) -> pd.DataFrame:
    """Majority class per spot; spots on a boundary (no clear majority) sometimes 'undetermined'."""
    labels = np.array(TISSUE_CLASSES, dtype=object)[fractions.argmax(axis=1)]
    ambiguous = fractions.max(axis=1) < 0.6
    undetermined = ambiguous & (
        rng.random(len(labels)) < min(1.0, config.undetermined_fraction / max(ambiguous.mean(), 1e-6))
    )
    labels[undetermined] = UNDETERMINED
    # Label files give decimal array coordinates and pixels in another frame, like HER2ST's.
    table = pd.DataFrame(
        {
            "Row.names": [
                f"{round(px * 0.5)}x{round(py * 0.5)}" for px, py in zip(spots["pixel_x"], spots["pixel_y"])
            ],
            "x": spots["new_x"],
            "y": spots["new_y"],
            "pixel_x": spots["pixel_x"] * 0.5,
            "pixel_y": spots["pixel_y"] * 0.5,
            "label": labels,
        }
    )
    table.loc[table.index[:1], ["x", "y"]] = np.nan  # HER2ST has a few rows without coordinates
    return table


_README = """# Demo cohort (simulated)

Written by `kedro run --pipeline=demo_cohort` (tpir_kedro.cohort.demo), seed {config.seed}.
Simulated data in the HER2ST layout: {config.n_patients} patients x {config.sections_per_patient} sections,
{config.um_per_px} µm/px images. Not real tissue, not real expression: for the demo and the tests only.
"""
