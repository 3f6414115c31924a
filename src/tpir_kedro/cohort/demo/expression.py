"""Negative-binomial spot counts with tissue programs and patient/section effects.

Deliberately *not* scVI's generative model in disguise. Besides a per-gene multiplier per patient
(the part scVI is built to remove) it has:
- patient-specific tumour programs: genes only that patient's cancer expresses (real biology that
  over-correction would erase);
- a patient-specific non-linear capture curve (mean -> mean**gamma), not a per-gene factor;
- section effects within a patient (per-gene multiplier and depth);
- mixing: a spot's mean is the class-fraction-weighted mix of the tissues under it.
Patient-shifted class composition comes from the tissue maps.

Every effect in expression that does not follow from the tissue mix -- the patient's and the
section's -- scales with one dial (the demo's ``batch_strength``, :meth:`PatientEffects.scaled` and
:meth:`SectionEffects.scaled`): at 0 every patient and section shares one expected expression for the
same tissue mix, so what is left to tell patients apart is their tissue (maps and composition) and the
spot-level sampling noise, which is the same for all.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class ExpressionConfig:
    n_genes: int = 500
    markers_per_class: int = 30
    marker_log_fc: tuple[float, float] = (0.8, 2.0)
    class_background_sd: float = 0.25
    tumour_program_genes: int = 25
    tumour_program_sd: float = 1.0
    patient_gene_sd: float = 0.6
    patient_capture_gamma_sd: float = 0.08
    section_gene_sd: float = 0.15
    mean_library_size: float = 2500.0
    patient_library_sd: float = 0.4
    section_library_sd: float = 0.15
    spot_library_sd: float = 0.3
    dispersion_mean: float = 4.0


@dataclass(frozen=True)
class ExpressionPrograms:
    """Cohort-wide programs: ``base`` (n_genes,), ``classes`` (n_classes, n_genes) log effects."""

    base: np.ndarray
    classes: np.ndarray
    theta: np.ndarray


def cohort_programs(rng: np.random.Generator, cfg: ExpressionConfig, n_classes: int) -> ExpressionPrograms:
    base = rng.normal(-1.0, 1.2, cfg.n_genes)
    classes = rng.normal(0.0, cfg.class_background_sd, (n_classes, cfg.n_genes))
    for c in range(n_classes):
        markers = rng.choice(cfg.n_genes, cfg.markers_per_class, replace=False)
        classes[c, markers] += rng.uniform(*cfg.marker_log_fc, cfg.markers_per_class)
    theta = rng.lognormal(np.log(cfg.dispersion_mean), 0.5, cfg.n_genes)
    return ExpressionPrograms(base=base, classes=classes, theta=theta)


def _strength(strength: float) -> float:
    k = float(strength)
    if k < 0:
        raise ValueError(f"batch strength must be >= 0, got {strength}")
    return k


@dataclass(frozen=True)
class PatientEffects:
    gene: np.ndarray  # (n_genes,) log multiplier
    tumour: np.ndarray  # (n_genes,) log effect in cancer classes only
    log_gamma: float  # log of the capture non-linearity exponent (mean -> mean**gamma)
    library: float  # log depth offset

    @property
    def gamma(self) -> float:
        return float(np.exp(self.log_gamma))

    def scaled(self, strength: float) -> PatientEffects:
        """Every effect times ``strength`` on its log scale: 0 removes the patient, 1 is as drawn.

        Multiplying by 1.0 is exact in floating point, so ``scaled(1.0)`` reproduces the draw bit for bit.
        """
        k = _strength(strength)
        return replace(
            self,
            gene=self.gene * k,
            tumour=self.tumour * k,
            log_gamma=self.log_gamma * k,
            library=self.library * k,
        )


def patient_effects(rng: np.random.Generator, cfg: ExpressionConfig) -> PatientEffects:
    tumour = np.zeros(cfg.n_genes)
    genes = rng.choice(cfg.n_genes, cfg.tumour_program_genes, replace=False)
    tumour[genes] = rng.normal(0.0, cfg.tumour_program_sd, cfg.tumour_program_genes) + 0.5
    return PatientEffects(
        gene=rng.normal(0.0, cfg.patient_gene_sd, cfg.n_genes),
        tumour=tumour,
        log_gamma=float(rng.normal(0.0, cfg.patient_capture_gamma_sd)),
        library=float(rng.normal(0.0, cfg.patient_library_sd)),
    )


@dataclass(frozen=True)
class SectionEffects:
    """What differs between serial sections of one patient: a per-gene log multiplier and a depth offset."""

    gene: np.ndarray  # (n_genes,) log multiplier
    library: float  # log depth offset

    def scaled(self, strength: float) -> SectionEffects:
        """Both effects times ``strength`` on their log scale (1 reproduces the draw bit for bit)."""
        k = _strength(strength)
        return replace(self, gene=self.gene * k, library=self.library * k)


def section_effects(rng: np.random.Generator, cfg: ExpressionConfig) -> SectionEffects:
    return SectionEffects(
        gene=rng.normal(0.0, cfg.section_gene_sd, cfg.n_genes),
        library=float(rng.normal(0.0, cfg.section_library_sd)),
    )


def expected_counts(
    cfg: ExpressionConfig,
    programs: ExpressionPrograms,
    patient: PatientEffects,
    section: SectionEffects,
    fractions: np.ndarray,
    cancer_classes: np.ndarray,
) -> np.ndarray:
    """(n_spots, n_genes) expected counts of spots with these tissue mixes in this patient and section,
    up to the spot-level depth factor (log-normal, the same distribution for every spot). Shapes as in
    :func:`spot_counts`.
    """
    props = patient_proportions(programs, patient, fractions, cancer_classes, section.gene)
    return props * (cfg.mean_library_size * np.exp(patient.library + section.library))


def spot_counts(
    rng: np.random.Generator,
    cfg: ExpressionConfig,
    programs: ExpressionPrograms,
    patient: PatientEffects,
    section: SectionEffects,
    fractions: np.ndarray,
    cancer_classes: np.ndarray,
) -> np.ndarray:
    """Sample counts for one section.

    Parameters
    ----------
    fractions
        (n_spots, n_classes) tissue mixture under each spot.
    cancer_classes
        (n_classes,) bool, classes that carry the patient's tumour program.

    Returns
    -------
        (n_spots, n_genes) int64 counts.
    """
    expected = expected_counts(cfg, programs, patient, section, fractions, cancer_classes)
    mean = expected * np.exp(rng.normal(0.0, cfg.spot_library_sd, len(fractions)))[:, None]
    # NB(mean, theta) as a Gamma-Poisson mixture.
    rate = rng.gamma(programs.theta, mean / programs.theta)
    return rng.poisson(rate)


def patient_proportions(
    programs: ExpressionPrograms,
    patient: PatientEffects,
    fractions: np.ndarray,
    cancer_classes: np.ndarray,
    section_gene: np.ndarray | None = None,
) -> np.ndarray:
    """(n_spots, n_genes) expected expression proportions of a patient's spots (rows sum to 1).

    Shapes as in :func:`spot_counts`; ``section_gene`` (n_genes,) is a section's log multiplier
    (none: the patient's expectation over its sections' draws, which have mean 0).
    """
    if section_gene is None:
        section_gene = np.zeros(programs.base.shape)
    log_class = programs.base + programs.classes + np.outer(cancer_classes, patient.tumour)
    class_props = _softmax(log_class)  # (n_classes, n_genes)
    props = fractions @ class_props  # (n_spots, n_genes)
    props = props**patient.gamma * np.exp(patient.gene + section_gene)
    return props / props.sum(axis=1, keepdims=True)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
