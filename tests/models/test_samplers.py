"""PatientMixingSampler: coverage per epoch, patient mixing per batch, epoch reseeding, DDP sharding."""

from __future__ import annotations

import numpy as np
import pytest

from tpir_kedro.models.samplers import PatientMixingSampler

# 5 patients of very different sizes, including one (17 spots) below one spot per batch of 32.
COUNTS = np.array([400, 250, 90, 46, 17])
N = int(COUNTS.sum())  # 803


@pytest.fixture
def patients():
    pats = np.repeat(np.arange(len(COUNTS)) * 10 + 3, COUNTS)  # arbitrary codes
    return np.random.default_rng(0).permutation(pats)


def batches(sampler):
    return np.asarray(list(sampler)).reshape(-1, sampler.batch_size)


def test_every_index_once_per_epoch_minus_the_remainder(patients):
    sampler = PatientMixingSampler(patients, batch_size=32, seed=1)
    order = np.asarray(list(sampler))
    assert len(order) == len(sampler) == (N // 32) * 32
    assert len(np.unique(order)) == len(order) and order.min() >= 0 and order.max() < N


def test_each_batch_mixes_patients_in_proportion(patients):
    sampler = PatientMixingSampler(patients, batch_size=32, seed=2)
    codes = np.unique(patients)
    share = 32 * COUNTS / N
    per_batch = np.stack([[np.sum(patients[b] == c) for c in codes] for b in batches(sampler)])
    assert np.all(per_batch >= np.floor(share)) and np.all(per_batch <= np.ceil(share))
    present = per_batch > 0
    assert present[:, share >= 1].all()  # every patient with a share of >= 1 spot is in every batch
    assert 0 < present[:, 4].sum() < len(per_batch)  # the small one is in some batches, not all
    running = np.cumsum(per_batch, axis=0) - np.arange(1, len(per_batch) + 1)[:, None] * share
    assert np.abs(running).max() < 1  # each patient stays within one spot of its proportion


def test_epochs_reshuffle_and_seeds_reproduce(patients):
    sampler = PatientMixingSampler(patients, batch_size=32, seed=5)
    first = list(sampler)
    assert list(sampler) == first  # no set_epoch: same epoch, same order
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    again = PatientMixingSampler(patients, batch_size=32, seed=5)
    again.set_epoch(1)
    assert list(again) == second
    assert list(PatientMixingSampler(patients, batch_size=32, seed=6)) != first


def test_ranks_get_disjoint_contiguous_slices_of_each_global_batch(patients):
    ranks = [PatientMixingSampler(patients, batch_size=16, seed=3, num_replicas=2, rank=r) for r in range(2)]
    for s in ranks:
        s.set_epoch(4)
    orders = [np.asarray(list(s)) for s in ranks]
    assert len(orders[0]) == len(orders[1]) == len(ranks[0]) == (N // 32) * 16
    assert not set(orders[0]) & set(orders[1])
    # the global batch g is rank 0's g-th batch followed by rank 1's
    global_batches = np.concatenate([o.reshape(-1, 16) for o in orders], axis=1)
    assert np.array_equal(global_batches.reshape(-1), ranks[0].schedule(4).reshape(-1))
    # each rank's own batches are patient-mixed as well
    share = 16 * COUNTS / N
    codes = np.unique(patients)
    for order in orders:
        for b in order.reshape(-1, 16):
            counts = np.array([np.sum(patients[b] == c) for c in codes])
            assert np.all(counts >= np.floor(share)) and np.all(counts <= np.ceil(share))


def test_single_patient_and_exact_fit():
    sampler = PatientMixingSampler(np.zeros(64, int), batch_size=16, num_replicas=4, rank=3)
    assert len(sampler) == 16 and sorted(list(sampler)) == sorted(set(sampler))


def test_errors():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        PatientMixingSampler(np.zeros(30, int), batch_size=16, num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="rank"):
        PatientMixingSampler(np.zeros(30, int), batch_size=4, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="batch_size"):
        PatientMixingSampler(np.zeros(30, int), batch_size=0)
    with pytest.raises(ValueError, match="1-D"):
        PatientMixingSampler(np.zeros((3, 2), int), batch_size=1)


def test_single_patient_batches_hold_one_patient_and_cover_each_patients_full_batches(patients):
    from tpir_kedro.models.samplers import SinglePatientSampler

    sampler = SinglePatientSampler(patients, batch_size=32, seed=1)
    got = batches(sampler)
    assert len(got) == int((COUNTS // 32).sum())  # 12 + 7 + 2 + 1 + 0
    assert all(len(np.unique(patients[b])) == 1 for b in got)
    assert len(np.unique(got)) == got.size  # no spot twice in an epoch
    sampler.set_epoch(1)
    assert not np.array_equal(batches(sampler), got)


def test_single_patient_batches_stay_one_patient_across_ranks(patients):
    from tpir_kedro.models.samplers import SinglePatientSampler

    ranks = [batches(SinglePatientSampler(patients, 16, seed=2, num_replicas=2, rank=r)) for r in (0, 1)]
    assert ranks[0].shape == ranks[1].shape
    for a, b in zip(*ranks):  # the gathered global batch is one patient's, and ranks are disjoint
        assert len(np.unique(patients[np.concatenate([a, b])])) == 1
        assert not set(a) & set(b)
    with pytest.raises(ValueError, match="no patient has a global batch"):
        SinglePatientSampler(patients, batch_size=500)
