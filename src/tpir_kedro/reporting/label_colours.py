"""One colour per spot label, shared by every figure so a class looks the same everywhere."""

from __future__ import annotations

from tpir_kedro.cohort.schema import LABEL_CATEGORIES, TISSUE_CLASSES, UNDETERMINED, UNLABELLED

_CLASS_COLOURS = ("#d62728", "#ff7f0e", "#1f77b4", "#e377c2", "#2ca02c", "#bcbd22")
LABEL_COLOURS: dict[str, str] = {
    **dict(zip(TISSUE_CLASSES, _CLASS_COLOURS)),
    UNDETERMINED: "#7f7f7f",
    UNLABELLED: "#c7c7c7",
}
_FALLBACK = ("#9467bd", "#8c564b", "#17becf", "#393b79", "#637939")


def label_colour(label: str, index: int = 0) -> str:
    """The label's colour; labels outside the cohort schema cycle through spare colours."""
    return LABEL_COLOURS.get(label, _FALLBACK[index % len(_FALLBACK)])


def ordered_labels(labels) -> list[str]:
    """Distinct labels in schema order (tissue classes, undetermined, unlabelled), others after, sorted."""
    present = {str(label) for label in labels}
    return [label for label in LABEL_CATEGORIES if label in present] + sorted(present - set(LABEL_CATEGORIES))
