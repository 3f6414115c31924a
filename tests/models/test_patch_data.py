"""SpotPairs: batch reads equal item reads, DataLoader use (workers included), cheap pickling, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from tpir_kedro.models.patch_data import ReopenableMemmap, SpotPairs, collate_batch, reopenable_memmap
from tpir_kedro.models.samplers import PatientMixingSampler

N_STORE, SIZE, N_SPOTS = 60, 16, 40


@pytest.fixture
def store(tmp_path):
    """(N_STORE, SIZE, SIZE, 3) uint8 store saved to disk and memory-mapped read-only."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "patches.npy", rng.integers(0, 256, (N_STORE, SIZE, SIZE, 3), dtype=np.uint8))
    return np.load(tmp_path / "patches.npy", mmap_mode="r")


def make_inputs(n=N_SPOTS, seed=1):
    rng = np.random.default_rng(seed)
    return dict(
        rows=rng.permutation(N_STORE)[:n],
        genes=rng.normal(size=(n, 7)).astype(np.float32),
        z=rng.normal(size=(n, 5)).astype(np.float32),
        labels=rng.integers(-1, 3, n),
        probs=rng.dirichlet(np.ones(3), n).astype(np.float32),
        patients=rng.integers(0, 4, n),
    )


@pytest.fixture
def dataset(store):
    return SpotPairs(store, **make_inputs())


def assert_batches_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def test_item_fields_and_contents(dataset, store):
    inputs = make_inputs()
    item = dataset[5]
    assert set(item) == {"image", "genes", "z", "label", "probs", "patient", "index"}
    assert item["image"].shape == (3, SIZE, SIZE) and item["image"].dtype == torch.uint8
    assert torch.equal(item["image"], torch.from_numpy(np.array(store[inputs["rows"][5]])).permute(2, 0, 1))
    assert torch.equal(item["genes"], torch.from_numpy(inputs["genes"][5]))
    assert item["label"].dtype == torch.int64 and int(item["label"]) == inputs["labels"][5]
    assert int(item["patient"]) == inputs["patients"][5] and int(item["index"]) == 5
    assert torch.equal(dataset[-1]["image"], dataset[N_SPOTS - 1]["image"])
    with pytest.raises(IndexError):
        dataset[N_SPOTS]


def test_batch_read_equals_item_reads_in_requested_order(dataset):
    indices = [17, 3, 3, 39, 0, 22, 8]  # unsorted, with a repeat
    batch = dataset.__getitems__(indices)
    assert batch["image"].shape == (len(indices), 3, SIZE, SIZE)
    assert batch["index"].tolist() == indices
    assert_batches_equal(batch, default_collate([dataset[i] for i in indices]))
    # channels-first shape over channels-last memory: no copy after the read
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)


def test_optional_fields_are_left_out(store):
    inputs = make_inputs()
    dataset = SpotPairs(store, inputs["rows"], None, labels=inputs["labels"], patients=inputs["patients"])
    assert set(dataset[0]) == {"image", "label", "patient", "index"}
    assert set(dataset.__getitems__([1, 0])) == {"image", "label", "patient", "index"}


def test_collate_batch_passes_batches_through_and_collates_lists(dataset):
    batch = dataset.__getitems__([2, 1])
    assert collate_batch(batch) is batch
    assert_batches_equal(collate_batch([dataset[2], dataset[1]]), batch)


def test_dataloader_with_patient_sampler_yields_the_sampler_batches(dataset):
    sampler = PatientMixingSampler(make_inputs()["patients"], batch_size=8, seed=4)
    loader = DataLoader(dataset, batch_size=8, sampler=sampler, drop_last=True, collate_fn=collate_batch)
    batches = list(loader)
    expected = np.asarray(list(sampler)).reshape(-1, 8)
    assert len(batches) == len(loader) == len(expected) == N_SPOTS // 8
    for batch, idx in zip(batches, expected):
        assert batch["image"].shape == (8, 3, SIZE, SIZE) and batch["image"].dtype == torch.uint8
        assert (
            batch["genes"].shape == (8, 7) and batch["z"].shape == (8, 5) and batch["probs"].shape == (8, 3)
        )
        assert batch["label"].shape == batch["patient"].shape == (8,)
        assert batch["index"].tolist() == idx.tolist()


def test_two_workers_on_a_memmap_match_the_direct_reads(dataset):
    loader = DataLoader(
        dataset,
        batch_size=6,
        shuffle=True,
        collate_fn=collate_batch,
        num_workers=2,
        generator=torch.Generator().manual_seed(0),
    )
    seen = []
    for batch in loader:
        assert_batches_equal(batch, dataset.__getitems__(batch["index"].tolist()))
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(N_SPOTS))


def test_pickling_references_the_file_instead_of_copying_it(dataset, store):
    assert isinstance(dataset.patches, ReopenableMemmap)
    assert len(pickle.dumps(dataset.patches)) < 500  # a file name, offset, shape and dtype
    blob = pickle.dumps(dataset)
    clone = pickle.loads(blob)
    assert isinstance(clone.patches, np.memmap) and str(clone.patches.filename) == str(store.filename)
    assert_batches_equal(clone.__getitems__([4, 1, 9]), dataset.__getitems__([4, 1, 9]))


def test_reopenable_memmap_views_and_copies(store):
    wrapped = reopenable_memmap(store)
    window = wrapped[10:20]  # a C-contiguous window of the file: pickles by reference at its offset
    clone = pickle.loads(pickle.dumps(window))
    assert isinstance(clone, ReopenableMemmap) and np.array_equal(clone, store[10:20])
    assert len(pickle.dumps(window)) < 1000
    for copy in (wrapped[[3, 1]], wrapped[:, ::2], wrapped + 0):  # in-memory results: plain arrays
        assert type(copy) is np.ndarray
    assert type(wrapped.sum()) is np.uint64
    in_memory = np.array(store)
    assert reopenable_memmap(in_memory) is in_memory


def test_paths_to_the_npy_file_or_store_folder(store, tmp_path):
    inputs = make_inputs()
    for path in (tmp_path / "patches.npy", tmp_path, str(tmp_path)):
        dataset = SpotPairs(path, **inputs)
        assert np.array_equal(
            dataset.__getitems__([0])["image"][0].permute(1, 2, 0).numpy(), store[inputs["rows"][0]]
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(rows=np.array([0, N_STORE] + [1] * (N_SPOTS - 2))), "out of range"),
        (dict(rows=np.array([-1] + [1] * (N_SPOTS - 1))), "out of range"),
        (dict(rows=np.zeros(N_SPOTS, dtype=np.float32)), "rows must hold integers"),
        (dict(rows=np.zeros((N_SPOTS, 1), dtype=int)), "rows must be 1-D"),
        (dict(genes=np.zeros((N_SPOTS - 1, 7), np.float32)), "genes has 39 rows"),
        (dict(genes=np.zeros(N_SPOTS, np.float32)), "genes must be 2-D"),
        (dict(genes=np.full((N_SPOTS, 7), np.nan, np.float32)), "genes contains non-finite"),
        (dict(z=np.zeros((N_SPOTS + 1, 5), np.float32)), "z has 41 rows"),
        (dict(labels=np.zeros(N_SPOTS - 2, int)), "labels has 38 rows"),
        (dict(labels=np.full(N_SPOTS, -2)), "labels must be class codes"),
        (dict(labels=np.zeros(N_SPOTS, np.float32)), "labels must hold integers"),
        (dict(probs=np.zeros((3, 3), np.float32)), "probs has 3 rows"),
        (dict(patients=np.zeros(N_SPOTS + 5, int)), "patients has 45 rows"),
        (dict(patients=None), "patients"),
    ],
)
def test_input_errors_name_the_problem(store, change, message):
    with pytest.raises(ValueError, match=message):
        SpotPairs(store, **{**make_inputs(), **change})


@pytest.mark.parametrize(
    ("patches", "message"),
    [
        (np.zeros((N_STORE, SIZE, SIZE, 3), np.float32), "uint8"),
        (np.zeros((N_STORE, SIZE, SIZE, 4), np.uint8), "shape"),
        (np.zeros((N_STORE, SIZE, SIZE + 1, 3), np.uint8), "square"),
        (np.zeros((N_STORE, SIZE, SIZE), np.uint8), "shape"),
        ([[0]], "numpy array"),
    ],
)
def test_patch_errors(patches, message):
    with pytest.raises(ValueError, match=message):
        SpotPairs(patches, **make_inputs())
