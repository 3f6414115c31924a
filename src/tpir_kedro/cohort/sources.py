"""Cohort sources: a folder of raw files that can be read, section by section, into one cohort.

Every source has ``read(sections, options, n_jobs) -> AnnData``, so the pipeline does not care
whether the files are in the HER2ST layout or are Space Ranger outputs. ``sections`` is None (all),
a list of names, or ``"labelled"`` (HER2ST: the sections with a label file).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from anndata import AnnData

from tpir_kedro.cohort.assemble import concat_sections, read_sections_parallel
from tpir_kedro.cohort.errors import CohortInputError
from tpir_kedro.cohort.her2st import ReadOptions, discover_her2st_sections, read_her2st_section
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
