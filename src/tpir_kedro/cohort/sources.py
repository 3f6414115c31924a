"""Cohort sources: a folder of raw files that can be read, section by section, into one cohort.

Every source has ``read(sections, options, n_jobs) -> AnnData``, so the pipeline does not care
whether the files are in the HER2ST layout, Space Ranger outputs or a HEST-1k download. ``sections``
is None (all), a list of names, or ``"labelled"`` (the sections with a label file).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from anndata import AnnData

from tpir_kedro.cohort.assemble import concat_sections, read_sections_parallel
from tpir_kedro.cohort.errors import CohortInputError
from tpir_kedro.cohort.her2st import ReadOptions, discover_her2st_sections, read_her2st_section
from tpir_kedro.cohort.hest import HestSample, check_one_spot_pitch, read_hest_metadata, read_hest_sample
from tpir_kedro.cohort.visium import VisiumSection, read_visium_section

LABELLED_SECTIONS = "labelled"  # ``sections="labelled"``: every section with pathologist labels


@dataclass(frozen=True)
class Her2stDirectory:
    """A folder in the HER2ST layout. ``image_overrides``: see :func:`discover_her2st_sections`."""

    root: Path
    image_overrides: dict[str, dict] = field(default_factory=dict)

    def read(
        self, sections: list[str] | None = None, options: ReadOptions | None = None, n_jobs: int = 1
    ) -> AnnData:
        if sections == LABELLED_SECTIONS:
            found = [
                s
                for s in discover_her2st_sections(self.root, None, self.image_overrides)
                if s.labels_path is not None
            ]
            if not found:
                raise CohortInputError("no section has a label file (ST-pat/lbl)", path=self.root)
        else:
            found = discover_her2st_sections(self.root, sections, self.image_overrides)
        return concat_sections(
            read_sections_parallel(partial(read_her2st_section, options=options), found, n_jobs)
        )


@dataclass(frozen=True)
class VisiumDirectory:
    """Space Ranger ``outs/`` folders under ``root``, one per section.

    ``sections`` maps a section name to ``{"patient", "outs", "image"?, "labels"?}`` with paths
    relative to ``root``.
    """

    root: Path
    sections: dict[str, dict] = field(default_factory=dict)

    def read(
        self, sections: list[str] | None = None, options: ReadOptions | None = None, n_jobs: int = 1
    ) -> AnnData:
        options = options or ReadOptions()
        names = list(self.sections) if sections is None else list(sections)
        unknown = sorted(set(names) - set(self.sections))
        if unknown:
            raise CohortInputError(
                f"section(s) {unknown} are not configured for this Visium source", path=self.root
            )
        # A configured µm/px (parameters) wins over the catalog's and over Space Ranger's.
        resolved = [
            replace(s, um_per_px=options.um_per_px.get(s.name, s.um_per_px))
            for s in map(self._section, names)
        ]
        read = partial(read_visium_section, max_image_pixels=options.max_image_pixels)
        return concat_sections(read_sections_parallel(read, resolved, n_jobs))

    def _section(self, name: str) -> VisiumSection:
        spec = self.sections[name]

        def path(key):
            return None if spec.get(key) is None else self.root / spec[key]

        return VisiumSection(
            name=name,
            patient=str(spec["patient"]),
            outs_path=path("outs"),
            image_path=path("image"),
            labels_path=path("labels"),
            um_per_px=spec.get("um_per_px"),
        )


@dataclass(frozen=True)
class HestDirectory:
    """A HEST-1k download (``st/``, ``wsis/``, ``metadata/``, optionally ``patches/``) under ``root``.

    ``samples`` are the sample ids to read, one section each; ``patients`` maps a sample id to its
    patient, overriding the metadata's (HEST leaves most empty); ``labels`` maps a sample id to a
    ``barcode,label`` CSV relative to ``root``.
    """

    root: Path
    samples: tuple[str, ...] = ()
    patients: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def read(
        self, sections: list[str] | None = None, options: ReadOptions | None = None, n_jobs: int = 1
    ) -> AnnData:
        """Read the samples named in ``sections`` (None: all configured; ``"labelled"``: those with labels).

        The samples must share one spot pitch, and it must be ``options.pitch_um``
        (``cohort.spot_pitch_um``) when ``options`` are given; this is checked on the metadata alone,
        before any expression or slide is opened.
        """
        configured_pitch = None if options is None else options.pitch_um
        options = options or ReadOptions()
        if sections == LABELLED_SECTIONS:
            names = [s for s in self.samples if s in self.labels]
            if not names:
                raise CohortInputError("no sample has a label file configured (labels)", path=self.root)
        else:
            names = list(self.samples) if sections is None else list(sections)
        unknown = sorted(set(names) - set(self.samples))
        if unknown:
            raise CohortInputError(
                f"sample(s) {unknown} are not configured for this HEST source (samples: {list(self.samples)})",
                path=self.root,
            )
        if not names:
            raise CohortInputError("no HEST samples to read (samples is empty)", path=self.root)
        # A configured µm/px (parameters) wins over the metadata's pixel_size_um_estimated.
        found = [
            HestSample(
                name=name,
                root=self.root,
                patient=self.patients.get(name),
                labels_path=None if self.labels.get(name) is None else self.root / self.labels[name],
                um_per_px=options.um_per_px.get(name),
            )
            for name in names
        ]
        check_one_spot_pitch([read_hest_metadata(s) for s in found], configured_pitch, self.root)
        read = partial(read_hest_sample, max_image_pixels=options.max_image_pixels)
        return concat_sections(read_sections_parallel(read, found, n_jobs))
