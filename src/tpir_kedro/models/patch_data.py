"""(H&E patch, gene-side input) pairs of training spots, read in whole batches from the patch store.

The store is one (n_store, H, W, 3) uint8 array, normally a read-only ``np.memmap``. A batch is one
fancy-index read of its rows (sorted, so the page cache reads the file forwards), then a zero-copy
permute to channels-first; the other fields are one index_select each. Augmentation is *not* done
here: :class:`~tpir_kedro.models.augment.PatchAugment` runs batched on the training device, so the
loader only moves uint8 bytes.

Use with a ``DataLoader`` like this (the loader calls ``__getitems__`` with each batch's indices, and
``collate_batch`` passes the already-collated dict through)::

    DataLoader(dataset, batch_size=B, sampler=..., drop_last=True, collate_fn=collate_batch)

Pickling: ``np.memmap`` pickles its whole contents (a 4000 x 64 x 64 x 3 store becomes a 49 MB
pickle, unpickled as an anonymous in-memory copy). Spawned DataLoader workers and ``ddp_spawn``
ranks pickle the dataset, so memmaps are wrapped in :class:`ReopenableMemmap`, which pickles as
(file, byte offset, shape, dtype) and maps the file again on unpickling.
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from tpir_kedro.imaging.patch_store import PATCHES_FILE


class ReopenableMemmap(np.memmap):
    """A read-only ``np.memmap`` that pickles as a reference to its file instead of its bytes.

    Basic (C-contiguous) slices stay reopenable; anything else (fancy-indexed copies, strided views)
    is a plain array and pickles as one.
    """

    def __getitem__(self, index):
        res = super().__getitem__(index)
        # np.memmap only demotes results of its own exact type; do the same for the subclass.
        if isinstance(res, np.memmap) and _file_reference(res) is None:
            return res.view(np.ndarray)
        return res

    def __array_wrap__(self, arr, context=None, return_scalar=False):
        # Ufunc and reduction results are new in-memory arrays (np.memmap skips this for subclasses).
        arr = np.ndarray.__array_wrap__(self, arr, context)
        if self is arr:
            return arr
        return arr[()] if return_scalar else arr.view(np.ndarray)

    def __reduce__(self):
        ref = _file_reference(self)
        if ref is None:
            return np.ndarray.__reduce__(np.array(self, copy=True).view(np.ndarray))
        return _reopen, ref

    def __reduce_ex__(self, protocol):
        # ndarray's own __reduce_ex__ would serialise the buffer; route every protocol to __reduce__.
        return self.__reduce__()


def _reopen(filename: str, offset: int, shape: tuple, dtype: str) -> ReopenableMemmap:
    return np.memmap(filename, dtype=np.dtype(dtype), mode="r", offset=offset, shape=tuple(shape)).view(
        ReopenableMemmap
    )


def _file_reference(arr: np.ndarray) -> tuple[str, int, tuple, str] | None:
    """(filename, byte offset of arr's first element, shape, dtype) when ``arr`` is a C-contiguous
    window of a file mapping whose contents are the file's; else None.
    """
    if not isinstance(arr, np.memmap) or arr.filename is None or arr.mode not in ("r", "r+", "w+"):
        return None
    if not arr.flags.c_contiguous or arr.size == 0:
        return None
    base = arr
    while isinstance(base, np.ndarray):  # the view chain ends at the mmap.mmap object numpy created
        base = base.base
    if not isinstance(base, mmap.mmap):
        return None
    # numpy maps from the allocation-granularity boundary below the requested offset, so the element
    # offset in the file is that boundary plus the data pointer's distance from the mapping's start.
    # arr.offset is inherited unchanged by views, but the boundary it implies is the same mapping.
    start = arr.offset - arr.offset % mmap.ALLOCATIONGRANULARITY
    mapping_address = np.frombuffer(base, dtype=np.uint8).ctypes.data
    return str(arr.filename), int(start + arr.ctypes.data - mapping_address), tuple(arr.shape), arr.dtype.str


def reopenable_memmap(patches):
    """``patches`` itself, or for a file-backed ``np.memmap`` the same array as a
    :class:`ReopenableMemmap` (no copy), so that pickling it costs a file name, not its bytes.
    """
    if isinstance(patches, ReopenableMemmap) or _file_reference(patches) is None:
        return patches
    return patches.view(ReopenableMemmap)


def _open_patches(patches) -> np.ndarray:
    """An array, a .npy file, or a patch-store folder -> the (n_store, H, W, 3) uint8 array, or the
    frozen regime's (n_store, V, D) float32 cached features (:mod:`~tpir_kedro.models.feature_views`).
    """
    if isinstance(patches, (str, PathLike)):
        path = Path(patches)
        if path.is_dir():
            path = path / PATCHES_FILE
        patches = np.load(path, mmap_mode="r", allow_pickle=False)
    if isinstance(patches, torch.Tensor):
        patches = patches.numpy()
    if not isinstance(patches, np.ndarray):
        raise ValueError(f"patches must be a numpy array, memmap or path, not {type(patches).__name__}")
    if patches.ndim == 3 and patches.dtype == np.float32:
        return reopenable_memmap(patches)  # cached features of V views: (n_store, V, D)
    if patches.dtype != np.uint8:
        raise ValueError(
            f"patches must be uint8 (or float32 cached features of shape (n_store, V, D)), got {patches.dtype}"
        )
    if patches.ndim != 4 or patches.shape[3] != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(
            f"patches must have shape (n_store, S, S, 3) (square RGB patches), got {patches.shape}"
        )
    return reopenable_memmap(patches)


def _per_spot(name: str, values, n: int, ndim: int, dtype) -> torch.Tensor | None:
    """Check one row-aligned array (length n, ndim dims) and return it as a tensor of ``dtype``."""
    if values is None:
        return None
    arr = np.asarray(values)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D with one row per spot, got shape {arr.shape}")
    if len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} rows but rows has {n} spots")
    if np.issubdtype(dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.integer) and arr.dtype != bool):
            raise ValueError(f"{name} must hold integers, got {arr.dtype}")
    elif not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=dtype))


class SpotPairs(Dataset):
    """Training spots: patch, gene-side input, optional frozen embedding, label, patient.

    Parameters
    ----------
    patches
        (n_store, S, S, 3) uint8 patch store (array or memmap), or the path of its
        ``patches.npy`` / store folder (memory-mapped read-only).
    rows
        (n,) integer store row of each training spot.
    genes
        (n, g) float32 gene-side input (log-normalised HVGs, or a frozen scVI/scANVI
        embedding), or None (supervised training needs no gene side).
    z
        (n, k) float32 frozen gene embedding for similarity targets, or None.
    labels
        (n,) int64 tissue class codes, -1 for unlabelled.
    probs
        (n, C) float32 soft class probabilities, or None.
    patients
        (n,) int64 patient codes.
    random_view
        cached features only -- read one uniformly random view of each spot (drawn from
        torch's generator, which the DataLoader seeds per worker) instead of all V. Why: a
        training step needs one view per spot; reading all of them moves V times the bytes and
        cost more than the adapter's whole step on a CPU.

    Items and batches are dicts of tensors; fields given as None are left out:
    ``image`` uint8 (3, S, S) / (B, 3, S, S) -- or, from cached features, float32 (V, D) / (B, V, D),
    and (D,) / (B, D) with ``random_view`` --, ``genes`` (g,) / (B, g), ``z`` (k,) / (B, k),
    ``label`` () / (B,), ``probs`` (C,) / (B, C), ``patient`` () / (B,), ``index`` () / (B,) the
    position in this dataset. Batch images are channels-first views of the (B, S, S, 3) read
    (``torch.channels_last`` layout, no copy); PatchAugment makes the float copy. A batch's
    float fields share one buffer and its int64 fields another (see ``_packed_fields``).
    """

    def __init__(
        self,
        patches,
        rows,
        genes=None,
        *,
        labels,
        patients,
        z=None,
        probs=None,
        random_view: bool = False,
    ) -> None:
        self.patches = _open_patches(patches)
        if random_view and self.patches.ndim != 3:
            raise ValueError("random_view applies to cached features (n_store, V, D), not to a patch store")
        self.random_view = bool(random_view)
        rows = np.asarray(rows)
        if rows.ndim != 1:
            raise ValueError(f"rows must be 1-D, got shape {rows.shape}")
        if not (np.issubdtype(rows.dtype, np.integer) and rows.dtype != bool):
            raise ValueError(f"rows must hold integers, got {rows.dtype}")
        n_store = len(self.patches)
        bad = (rows < 0) | (rows >= n_store)
        if bad.any():
            raise ValueError(
                f"{int(bad.sum())} row(s) out of range of the patch store (n_store={n_store}), e.g. {rows[bad][:3].tolist()}"
            )
        if labels is None or patients is None:
            raise ValueError(
                "labels ((n,) int64, -1 unlabelled) and patients ((n,) int64 codes) are required"
            )
        n = len(rows)
        self.rows = rows.astype(np.int64)
        self.genes = _per_spot("genes", genes, n, 2, np.float32)
        self.z = _per_spot("z", z, n, 2, np.float32)
        self.labels = _per_spot("labels", labels, n, 1, np.int64)
        self.probs = _per_spot("probs", probs, n, 2, np.float32)
        self.patients = _per_spot("patients", patients, n, 1, np.int64)
        if (self.labels < -1).any():
            raise ValueError("labels must be class codes >= 0, or -1 for unlabelled")

    def __len__(self) -> int:
        return len(self.rows)

    def _fields(self, idx) -> dict[str, torch.Tensor]:
        """The non-image fields at ``idx`` (an int or a (B,) int64 tensor)."""
        out = {}
        fields = (
            ("genes", self.genes),
            ("z", self.z),
            ("label", self.labels),
            ("probs", self.probs),
            ("patient", self.patients),
        )
        for key, values in fields:
            if values is not None:
                out[key] = values[idx]
        return out

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} spots")
        i %= len(self)
        view = int(torch.randint(self.patches.shape[1], ())) if self.random_view else slice(None)
        image = torch.from_numpy(np.array(self.patches[self.rows[i], view]))
        image = image.permute(2, 0, 1) if image.ndim == 3 and self.patches.ndim == 4 else image
        return {"image": image, **self._fields(i), "index": torch.tensor(i, dtype=torch.int64)}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """The collated batch of ``indices`` (length B), in their order: image uint8 (B, 3, S, S), ..."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"batch indices out of range for {len(self)} spots")
        idx %= max(len(self), 1)
        store_rows = self.rows[idx]
        order = np.argsort(store_rows, kind="stable")
        # One forward read in store order; restoring the requested order is a small in-RAM copy.
        if self.random_view:
            views = torch.randint(self.patches.shape[1], (len(idx),)).numpy()  # drawn in request order
            block = np.asarray(self.patches[store_rows[order], views[order]])
        else:
            block = np.asarray(self.patches[store_rows[order]])
        if not np.array_equal(order, np.arange(len(order))):
            restore = np.empty_like(order)
            restore[order] = np.arange(len(order))
            block = block[restore]
        image = torch.from_numpy(block)
        if image.ndim == 4:
            image = image.permute(0, 3, 1, 2)
        return {"image": image, **self._packed_fields(torch.from_numpy(idx))}

    def _packed_fields(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The non-image fields of a batch, as contiguous views of one float and one int64 buffer.

        Why: a DataLoader worker sends each tensor storage through its own shared-memory segment,
        about a millisecond apiece; two storages instead of six make workers ~1.7x faster.
        """
        b = len(index)
        floats = [
            (k, v) for k, v in (("genes", self.genes), ("z", self.z), ("probs", self.probs)) if v is not None
        ]
        buffer = torch.empty(b * sum(v.shape[1] for _, v in floats), dtype=torch.float32)
        out, start = {}, 0
        for key, values in floats:
            out[key] = buffer[start : start + b * values.shape[1]].view(b, values.shape[1])
            torch.index_select(values, 0, index, out=out[key])
            start += b * values.shape[1]
        ints = torch.empty(3, b, dtype=torch.int64)
        torch.index_select(self.labels, 0, index, out=ints[0])
        torch.index_select(self.patients, 0, index, out=ints[1])
        ints[2] = index
        return {**out, "label": ints[0], "patient": ints[1], "index": ints[2]}


def collate_batch(batch):
    """``collate_fn`` for :class:`SpotPairs`: a batch from ``__getitems__`` is already a dict of
    tensors and passes through unchanged; a list of items is collated the default way.
    """
    if isinstance(batch, Mapping):
        return batch
    return default_collate(batch)
