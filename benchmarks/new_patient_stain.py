"""How far each new patient's stain lies from the training cohort's: a diagnostic for bench_new_patients.py.

    .venv/bin/python benchmarks/new_patient_stain.py [--work benchmarks/results/new_patients_work] [--out FILE]

For every patient, each tissue class's mean optical density (OD = -log((RGB + 1) / 256), per channel)
over its labelled patches: the cohort's from its patch store (the scratch project's latest ``train``),
the new patients' from their slides tiled the same way (the same tiler and patch geometry). A class's
*stain distance* is the root-mean-square over channels of (class mean - the cohort patients' mean for
that class) / the cohort patients' sd for that class: how many between-patient sds the patient sits
from the cohort. Per patient, the spot-weighted mean over its classes. Cohort patients are scored
against a spread they are part of, so their distances run low; read the new patients against each
other. Written to ``--out`` (default benchmarks/results/new_patients_demo/stain.csv).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def optical_density(patches: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) uint8 -> (n, 3) mean optical density per channel."""
    return -np.log((np.asarray(patches, dtype=np.float64) + 1.0) / 256.0).reshape(len(patches), -1, 3).mean(1)


def class_means(od: np.ndarray, patients, labels) -> pd.DataFrame:
    """Per (patient, class): n and the mean OD of channels r, g, b."""
    frame = pd.DataFrame(od, columns=["r", "g", "b"]).assign(
        patient=np.asarray(patients, str), label=np.asarray(labels, str)
    )
    grouped = frame.groupby(["patient", "label"], sort=True)
    return grouped[["r", "g", "b"]].mean().join(grouped.size().rename("n")).reset_index()


def stain_distances(means: pd.DataFrame, cohort_patients) -> pd.DataFrame:
    """Per (patient, class): the RMS z-distance from the cohort patients' class means (see module doc)."""
    cohort = means[means["patient"].isin(list(cohort_patients))]
    mu = cohort.groupby("label")[["r", "g", "b"]].mean()
    sd = cohort.groupby("label")[["r", "g", "b"]].std()
    out = means[means["label"].isin(sd.dropna().index)].copy()
    z = (out[["r", "g", "b"]].to_numpy() - mu.loc[out["label"]].to_numpy()) / sd.loc[out["label"]].to_numpy()
    out["stain_distance"] = np.sqrt((z**2).mean(axis=1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "new_patients_work")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "new_patients_demo" / "stain.csv"
    )
    args = parser.parse_args()
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from tpir_kedro.cohort.schema import is_classified
    from tpir_kedro.imaging.patch_store import PatchStore
    from tpir_kedro.imaging.slide_folder import read_slide_folder
    from tpir_kedro.imaging.tiling import SectionTiles, TilingPlan, write_patch_store

    work = args.work.resolve()
    bootstrap_project(work)
    with KedroSession.create(project_path=work) as session:
        catalog = session.load_context().catalog
        store, cohort = catalog.load("patch_store"), catalog.load("cohort")
    obs = cohort.obs.loc[cohort.obs_names.intersection(store.index.index)]
    obs = obs[is_classified(obs["label"].astype(str).to_numpy())]
    parts = [
        class_means(optical_density(store.patches[store.rows(list(obs.index))]), obs["patient"], obs["label"])
    ]
    cohort_patients = sorted(obs["patient"].astype(str).unique())
    for folder in sorted((work / "new_patient_slides").iterdir()):
        slide = read_slide_folder(folder)
        keys = tuple(f"{slide.name}:{s}" for s in slide.spots["spot_id"])
        plan = TilingPlan(
            store.size_um,
            store.size_px,
            (
                SectionTiles(
                    slide.name,
                    slide.patient or "",
                    str(slide.image_path),
                    slide.um_per_px,
                    keys,
                    slide.spots[["pixel_x", "pixel_y"]].to_numpy(float),
                ),
            ),
        )
        target = work / "new_patient_patches" / slide.name
        if not (target / "patches.npy").is_file():
            write_patch_store(plan, target)
        patches = PatchStore.open(target)
        labels = (
            slide.labels.reindex(slide.spots["spot_id"].astype(str))
            .fillna("unlabelled")
            .astype(str)
            .to_numpy()
        )
        keep = is_classified(labels)
        od = optical_density(patches.patches[patches.rows(list(np.asarray(keys)[keep]))])
        parts.append(class_means(od, np.full(keep.sum(), slide.patient), labels[keep]))
    per_class = stain_distances(pd.concat(parts, ignore_index=True), cohort_patients)
    per_patient = per_class.groupby("patient").apply(
        lambda g: pd.Series(
            {
                "stain_distance": float(np.average(g["stain_distance"], weights=g["n"])),
                "n_spots": int(g["n"].sum()),
                "in_cohort": g.name in cohort_patients,
            }
        ),
        include_groups=False,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    per_class.to_csv(args.out.with_name(args.out.stem + "_per_class.csv"), index=False)
    per_patient.reset_index().to_csv(args.out, index=False)
    print(per_patient.round(2).to_string())
    print(json.dumps({"cohort_patients": cohort_patients, "out": str(args.out)}))


if __name__ == "__main__":
    main()
