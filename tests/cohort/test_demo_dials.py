"""The batch-effect dials of the demo simulator (batch_strength k, stain_strength s).

What the experiment (benchmarks/bench_batch_effect.py) relies on: for one seed, turning k changes the
counts and nothing else, turning s changes the images and nothing else, k = 0 leaves no patient or
section effect in expected expression, and the default (k = s = 1) is the cohort as it always was.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib

import numpy as np
import pytest

from tpir_kedro.cohort.demo import DemoCohortConfig, simulate, simulate_demo_cohort
from tpir_kedro.cohort.demo.expression import expected_counts, patient_effects, section_effects
from tpir_kedro.cohort.her2st_layout import write_her2st_layout
from tpir_kedro.cohort.schema import TISSUE_CLASSES
from tpir_kedro.evaluation.patient_decodability import patient_decodability


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


def _effects_used(config) -> dict:
    """Per section: what its counts were drawn from -- (patient, expression config, programs, patient
    effects, section effects, fractions, cancer classes) -- recorded from the simulator's calls and
    matched to the counts the cohort holds, so the test reads the effects that made the data.
    """
    calls, real = [], simulate.spot_counts

    def recording(rng, cfg, programs, patient, section, fractions, cancer):
        counts = real(rng, cfg, programs, patient, section, fractions, cancer)
        calls.append((counts, cfg, programs, patient, section, fractions, cancer))
        return counts

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(simulate, "spot_counts", recording)
        layout = simulate_demo_cohort(config)
    used = {}
    for name, tables in layout.sections.items():
        genes = [int(g.removeprefix("DEMO")) for g in tables.counts.columns]
        match = [c for c in calls if np.array_equal(c[0][:, genes], tables.counts.to_numpy())]
        assert len(match) == 1, name
        used[name] = (tables.patient, *match[0][1:])
    return used


@pytest.fixture(scope="module")
def effects_used(tiny_demo_config):
    return {k: _effects_used(dataclasses.replace(tiny_demo_config, batch_strength=k)) for k in (0.0, 1.0)}


def test_k_zero_leaves_one_expected_expression_across_patients_and_sections(effects_used):
    # The same tissue mixes -- pure classes and mixtures -- placed in every section of every patient.
    n_classes = len(TISSUE_CLASSES)
    mixes = np.vstack([np.eye(n_classes), np.random.default_rng(0).dirichlet(np.ones(n_classes), 30)])

    def expected(k):
        return {
            name: (patient, expected_counts(cfg, programs, pe, se, mixes, cancer))
            for name, (patient, cfg, programs, pe, se, _, cancer) in effects_used[k].items()
        }

    at0, at1 = expected(0.0), expected(1.0)
    assert len({patient for patient, _ in at0.values()}) == 3 and len(at0) == 6
    reference = next(iter(at0.values()))[1]
    for name, (_, mean) in at0.items():
        np.testing.assert_array_equal(mean, reference, err_msg=name)
    # At k = 1 both kinds of effect are there: patients differ, and so do two sections of one patient.
    assert not np.allclose(at1["A1"][1], at1["B1"][1], rtol=0.05)
    assert not np.allclose(at1["A1"][1], at1["A2"][1], rtol=0.02)


def test_expected_expression_at_k_zero_does_not_decode_the_patient(effects_used):
    """The mechanism check on expected expression, class-balanced, on spots of one pure tissue class:
    the patient's tissue mix (what k leaves, by design) cannot speak through spots without a mix.
    """

    def decodability(k):
        x, labels, patients = [], [], []
        for patient, cfg, programs, pe, se, fractions, cancer in effects_used[k].values():
            pure = fractions.max(axis=1) == 1.0
            x.append(np.log(expected_counts(cfg, programs, pe, se, fractions[pure], cancer)))
            labels += list(np.asarray(TISSUE_CLASSES)[fractions[pure].argmax(axis=1)])
            patients += [patient] * int(pure.sum())
        return patient_decodability(np.vstack(x), np.array(labels), np.array(patients))

    zero, one = decodability(0.0), decodability(1.0)
    assert zero["n_spots"] >= 15 and zero["n_spots"] == one["n_spots"]
    assert zero["accuracy"] <= zero["chance"] + 0.05
    assert one["accuracy"] >= 0.9


def test_the_dial_scales_every_effect_on_its_log_scale(tiny_demo_config):
    rng = np.random.default_rng(0)
    cfg = tiny_demo_config.expression
    a, section = patient_effects(rng, cfg), section_effects(rng, cfg)
    # k = 3 moves the patients three times as far apart on the log scale of the gene multiplier.
    np.testing.assert_allclose(a.scaled(3.0).gene, 3 * a.gene)
    assert a.scaled(3.0).gamma == pytest.approx(a.gamma**3)
    assert section.scaled(3.0).library == pytest.approx(3 * section.library)
    assert np.array_equal(a.scaled(1.0).gene, a.gene) and a.scaled(1.0).gamma == a.gamma
    assert np.array_equal(section.scaled(1.0).gene, section.gene)
    with pytest.raises(ValueError, match="must be >= 0"):
        section.scaled(-1.0)


def test_the_default_is_the_cohort_as_drawn_and_bad_dials_are_rejected(tiny_demo_config):
    explicit = dataclasses.replace(tiny_demo_config, batch_strength=1.0, stain_strength=1.0)
    assert DemoCohortConfig().batch_strength == DemoCohortConfig().stain_strength == 1.0
    a, b = simulate_demo_cohort(tiny_demo_config), simulate_demo_cohort(explicit)
    assert all(a.sections[n].counts.equals(b.sections[n].counts) for n in a.sections)
    with pytest.raises(ValueError, match="batch_strength must be >= 0"):
        DemoCohortConfig.from_dict({"batch_strength": -1})
