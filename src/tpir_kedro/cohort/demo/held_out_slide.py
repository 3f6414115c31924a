"""A demo slide of one extra simulated patient that no model was trained on, for ``predict``.

Same simulator as the cohort (tissue fields, stain, spots, labels), drawn from its own seeded
generator: the cohort's random stream is untouched, so the cohort stays identical for a seed.
The slide has no expression; its labels are written apart, only to score predictions on the demo.
"""

from __future__ import annotations

import string

import numpy as np
import pandas as pd

from tpir_kedro.cohort.demo.histology import patient_stain, render_he, section_style
from tpir_kedro.cohort.demo.simulate import (
    BASE_LOG_COMPOSITION,
    DemoCohortConfig,
    _label_table,
    _spot_table,
    section_geometry,
)
from tpir_kedro.cohort.demo.tissue import class_fractions_in_disks, class_map, smooth_fields, tissue_mask
from tpir_kedro.cohort.schema import TISSUE_CLASSES
from tpir_kedro.cohort.slide_folder import SlideFolder

# Mixed into the cohort seed so the held-out patient's generator is independent of the cohort's.
_HELD_OUT_STREAM = 0x51_1DE


def held_out_patient(config: DemoCohortConfig, index: int = 0) -> str:
    """The letter of extra patient ``index``: the cohort's letters continue (A-D -> E, F, ...)."""
    position = config.n_patients + int(index)
    if index < 0 or position >= len(string.ascii_uppercase):
        raise ValueError(
            f"held-out patient {index} of a {config.n_patients}-patient demo: there are letters for "
            f"{len(string.ascii_uppercase) - config.n_patients} held-out patients (0..)"
        )
    return string.ascii_uppercase[position]


def _held_out_seed(config: DemoCohortConfig, index: int) -> np.random.SeedSequence:
    # Patient 0 is the demo slide written since the first release: its seed sequence stays as it was.
    entropy = [config.seed, _HELD_OUT_STREAM] + ([int(index)] if index else [])
    return np.random.SeedSequence(entropy)


def simulate_held_out_slide(config: DemoCohortConfig, index: int = 0) -> SlideFolder:
    """One labelled H&E section of a patient outside the cohort, with spot centres in image pixels.

    ``index`` 0 is the demo's held-out slide (patient E of the 4-patient demo); 1, 2, ... are further
    new patients (F, G, ...), each from its own seeded stream, for benchmarks over many new patients.
    """
    rng = np.random.default_rng(_held_out_seed(config, index))
    n_classes = len(TISSUE_CLASSES)
    patient = held_out_patient(config, index)
    name = f"{patient}1"
    pitch_px, margin_px, shape, coarse = section_geometry(config)

    log_prior = BASE_LOG_COMPOSITION + rng.normal(0.0, config.composition_sd, n_classes)
    fields = smooth_fields(rng, n_classes, coarse, config.region_scale_spots)
    fields = fields + config.section_field_sd * smooth_fields(
        rng, n_classes, coarse, config.region_scale_spots
    )
    classes = class_map(fields, log_prior, pitch_px, shape)
    tissue = tissue_mask(rng, shape, margin_px * 0.6)
    spots = _spot_table(rng, config, tissue, pitch_px, margin_px)
    centres = spots[["pixel_x", "pixel_y"]].to_numpy()
    fractions = class_fractions_in_disks(
        classes, centres, config.spot_diameter_um / 2 / config.um_per_px, n_classes
    )
    h_od, e_od = patient_stain(rng, *config.patient_stain_sds())
    image = render_he(
        rng, classes, tissue, config.um_per_px, section_style(rng, h_od, e_od, config.scanner_blur_max_px)
    )
    labels = _label_table(rng, config, spots, fractions)["label"].to_numpy()

    spot_ids = [f"{x}x{y}" for x, y in zip(spots["x"], spots["y"])]
    return SlideFolder(
        name=name,
        image=image,
        image_name=f"HE_{name}.jpg",
        um_per_px=float(config.um_per_px),
        spots=pd.DataFrame({"spot_id": spot_ids, "pixel_x": spots["pixel_x"], "pixel_y": spots["pixel_y"]}),
        labels=pd.DataFrame({"spot_id": spot_ids, "label": labels}),
        description=f"demo, simulated: held-out patient {patient} (not in the demo cohort, seed {config.seed}); not real tissue",
        patient=patient,
    )
