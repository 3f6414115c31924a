"""The batch-effect dials of the demo simulator (batch_strength k, stain_strength s).

What the experiment (benchmarks/bench_batch_effect.py) relies on: for one seed, turning k changes the
counts and nothing else, turning s changes the images and nothing else, k = 0 leaves no patient
effect in expected expression, and the default (k = s = 1) is the cohort as it always was.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib

import numpy as np
import pytest

from tpir_kedro.cohort.demo import DemoCohortConfig, simulate_demo_cohort
from tpir_kedro.cohort.demo.expression import cohort_programs, patient_effects, patient_proportions
from tpir_kedro.cohort.her2st_layout import write_her2st_layout
from tpir_kedro.cohort.schema import TISSUE_CLASSES


def _written(config, root):
    """Every file of the cohort as written to disk (what the reader and the tiling read): name -> digest."""
    write_her2st_layout(simulate_demo_cohort(config), root)

    def content(path):  # a gzip header holds the time of writing: compare what it decompresses to
        data = path.read_bytes()
        return gzip.decompress(data) if path.suffix == ".gz" else data

    return {
        str(p.relative_to(root)): hashlib.sha256(content(p)).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory, tiny_demo_config):
    def at(k, s):
        root = tmp_path_factory.mktemp(f"k{k}_s{s}") / "her2st"
        return _written(dataclasses.replace(tiny_demo_config, batch_strength=k, stain_strength=s), root)

    return {(k, s): at(k, s) for k, s in [(0.0, 1.0), (1.0, 1.0), (3.0, 1.0), (3.0, 3.0), (0.0, 3.0)]}


def _split(files):
    counts = {n: d for n, d in files.items() if n.startswith("ST-cnts")}
    images = {n: d for n, d in files.items() if n.startswith("ST-imgs")}
    rest = {n: d for n, d in files.items() if n not in counts and n not in images}
    return counts, images, rest


def test_k_changes_the_counts_only_and_s_the_images_only(written):
    parts = {key: _split(files) for key, files in written.items()}
    counts, images, rest = ({key: p[i] for key, p in parts.items()} for i in range(3))
    assert all(images[key] for key in written) and all(counts[key] for key in written)
    # Spots, labels (and every other table) never move with either dial.
    assert all(rest[key] == rest[(1.0, 1.0)] for key in written)
    # The images -- so the patch stores tiled from them -- are identical across k for a given s ...
    assert images[(0.0, 1.0)] == images[(1.0, 1.0)] == images[(3.0, 1.0)]
    assert images[(0.0, 3.0)] == images[(3.0, 3.0)]
    # ... and change with s; the counts change with k and not with s.
    assert images[(3.0, 3.0)] != images[(3.0, 1.0)]
    assert counts[(3.0, 3.0)] == counts[(3.0, 1.0)] and counts[(0.0, 3.0)] == counts[(0.0, 1.0)]
    assert counts[(0.0, 1.0)] != counts[(1.0, 1.0)] != counts[(3.0, 1.0)]


def test_k_zero_leaves_patients_one_expected_expression(tiny_demo_config):
    rng = np.random.default_rng(0)
    cfg = tiny_demo_config.expression
    programs = cohort_programs(rng, cfg, len(TISSUE_CLASSES))
    a, b = patient_effects(rng, cfg), patient_effects(rng, cfg)
    fractions = rng.dirichlet(np.ones(len(TISSUE_CLASSES)), 40)
    cancer = np.array([c in ("invasive cancer", "cancer in situ") for c in TISSUE_CLASSES])

    def expected(effects):
        return patient_proportions(programs, effects, fractions, cancer)

    assert not np.allclose(expected(a), expected(b), rtol=0.05)
    np.testing.assert_array_equal(expected(a.scaled(0.0)), expected(b.scaled(0.0)))
    # k = 3 moves the patients three times as far apart on the log scale of the gene multiplier.
    np.testing.assert_allclose(a.scaled(3.0).gene, 3 * a.gene)
    assert a.scaled(3.0).gamma == pytest.approx(a.gamma**3)
    assert np.array_equal(a.scaled(1.0).gene, a.gene) and a.scaled(1.0).gamma == a.gamma


def test_the_default_is_the_cohort_as_drawn_and_bad_dials_are_rejected(tiny_demo_config):
    explicit = dataclasses.replace(tiny_demo_config, batch_strength=1.0, stain_strength=1.0)
    assert DemoCohortConfig().batch_strength == DemoCohortConfig().stain_strength == 1.0
    a, b = simulate_demo_cohort(tiny_demo_config), simulate_demo_cohort(explicit)
    assert all(a.sections[n].counts.equals(b.sections[n].counts) for n in a.sections)
    with pytest.raises(ValueError, match="batch_strength must be >= 0"):
        DemoCohortConfig.from_dict({"batch_strength": -1})
