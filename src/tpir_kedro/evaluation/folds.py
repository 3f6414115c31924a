"""Leave-one-patient-out folds: a patient is never on both sides of a split.

Serial sections of one tumour are near-copies, so splitting spots or sections of one patient
across train and test leaks; the fold unit is the patient.
"""

from __future__ import annotations

import pandas as pd

from tpir_kedro.cohort.schema import is_classified

ALL_PATIENTS = "all"


def fold_key(held_out_patient: str) -> str:
    return f"holdout_{held_out_patient}"


def sections_as_patients(obs: pd.DataFrame, sections: list[str] | None) -> pd.DataFrame:
    """Obs where each of ``sections`` is its own (pseudo-)patient, named after the section.

    For a section-level hold-out (test one section, train on the rest of its patient too). This
    deliberately breaks the patient rule for that fold -- the other sections of the same tumour are
    in training -- so it measures within-patient generalisation, not the patient-held-out protocol.
    The original patient stays in ``source_patient``.
    """
    sections = _names(sections)
    if not sections:
        return obs
    known = set(obs["section"].astype(str))
    unknown = sorted(set(sections) - known)
    if unknown:
        raise ValueError(f"held-out section(s) {unknown} are not in the cohort (sections: {sorted(known)})")
    out = obs.copy()
    patient = out["patient"].astype(str)
    out["source_patient"] = patient.astype("category")
    split = out["section"].astype(str).isin(sections)
    out["patient"] = patient.where(~split, out["section"].astype(str)).astype("category")
    return out


def held_out_sections(folds: dict) -> list[str]:
    return _names(folds.get("held_out_sections"))


def held_out_units(folds: dict) -> list[str] | None:
    """The fold units to hold out: ``held_out_sections`` first, then ``held_out_patients``.

    With held-out sections, ``held_out_patients: null`` means no patient fold besides them (not
    full LOPO); give patients as a list to run both.
    """
    sections = held_out_sections(folds)
    patients = folds.get("held_out_patients")
    if not sections:
        return None if patients is None else _names(patients)
    return sections + [p for p in _names(patients) if p not in sections]


def _names(value) -> list[str]:
    """A list, or names separated by spaces (``kedro run --params`` splits on commas); None -> []."""
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    return [str(v) for v in value]


def patient_folds(obs: pd.DataFrame, held_out: list[str] | None = None) -> pd.DataFrame:
    """Long fold table: one row per (fold, patient) with its ``role`` (train/test) and spot counts.

    Parameters
    ----------
    obs
        cohort obs with ``patient``, ``label``, ``has_image``.
    held_out
        patients to hold out, one fold each; None means every patient (full LOPO).
    """
    patients = sorted(obs["patient"].astype(str).unique())
    if len(patients) < 2:
        raise ValueError(f"leave-one-patient-out needs at least two patients; the cohort has {patients}")
    held_out = patients if held_out is None else [str(p) for p in held_out]
    unknown = sorted(set(held_out) - set(patients))
    if unknown:
        raise ValueError(f"held-out patient(s) {unknown} are not in the cohort (patients: {patients})")
    stats = (
        obs.assign(
            patient=obs["patient"].astype(str),
            labelled=is_classified(obs["label"]),
            with_image=obs["has_image"].astype(bool),
        )
        .groupby("patient")
        .agg(n_spots=("labelled", "size"), n_labelled=("labelled", "sum"), n_with_image=("with_image", "sum"))
    )
    rows = []
    for test in held_out:
        for patient in patients:
            rows.append(
                {
                    "fold": fold_key(test),
                    "held_out_patient": test,
                    "patient": patient,
                    "role": "test" if patient == test else "train",
                    **stats.loc[patient].to_dict(),
                }
            )
    table = pd.DataFrame(rows)
    return table.astype({"n_spots": int, "n_labelled": int, "n_with_image": int})


def train_patients(folds: pd.DataFrame, fold: str) -> list[str]:
    rows = folds[folds["fold"] == fold]
    if rows.empty:
        raise KeyError(f"fold {fold!r} is not in the fold table (folds: {sorted(folds['fold'].unique())})")
    return sorted(rows.loc[rows["role"] == "train", "patient"].astype(str))
