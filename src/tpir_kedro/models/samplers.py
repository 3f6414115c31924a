"""Batch samplers of image training: patient-mixed batches (the default), and one patient a batch.

``BATCHES`` maps a variant's ``batches`` parameter to its sampler.

:class:`PatientMixingSampler`: every batch mixes all patients in proportion to their spot counts.

Why: contrastive losses compare the spots of one batch with each other. A batch drawn from one or
two patients teaches patient identity (the batch effect) rather than tissue type, and a random
shuffle leaves small patients out of many batches. Here each batch of ``batch_size`` holds
``floor(s_p)`` or ``floor(s_p) + 1`` spots of patient p, where ``s_p = batch_size * n_p / n`` is its
share; so every patient with a share of at least one spot is in every batch.

The schedule, per epoch (seeded by ``seed`` and the epoch, identical on every rank):
1. shuffle each patient's spots;
2. for each batch in turn give every patient ``floor(s_p)`` seats, then the remaining seats one each
   to the patients furthest behind their cumulative target ``(j + 1) * s_p`` (random tie-break);
   this is apportionment with carry-over, so each patient's running count stays within one spot of
   its target and over the epoch its spots are used in proportion;
3. fill the seats from the patients' shuffled lists in order and shuffle within the batch.

DDP: a global batch is ``batch_size * num_replicas`` consecutive spots, i.e. ``num_replicas``
consecutive scheduled batches, and rank r takes the r-th one. Every rank's batch is therefore itself
patient-mixed, ranks are disjoint, and all ranks yield the same number of full batches (the
remainder of the epoch that does not fill a global batch is dropped; which spots those are changes
with the shuffle). Use it with ``DataLoader(batch_size=batch_size, drop_last=True)``, and stop
Lightning from wrapping it in its own distributed sampler: ``Trainer(use_distributed_sampler=False)``.
Lightning calls :meth:`PatientMixingSampler.set_epoch` at the start of each epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler


class _PatientBatches(Sampler[int]):
    """What both samplers share: the checked arguments, each patient's positions, epoch reseeding.

    A subclass sets ``batches_per_rank`` and yields from its ``schedule``.
    """

    def __init__(
        self,
        patients,
        batch_size: int,
        *,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        patients = np.asarray(patients)
        if patients.ndim != 1 or len(patients) == 0:
            raise ValueError(f"patients must be a non-empty 1-D array, got shape {patients.shape}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas} and {rank}"
            )
        self.batch_size, self.num_replicas, self.rank = int(batch_size), int(num_replicas), int(rank)
        self.seed, self.epoch = int(seed), 0

        _, codes = np.unique(patients, return_inverse=True)
        self._members = [np.flatnonzero(codes == p) for p in range(codes.max() + 1)]  # per patient (n_p,)
        self.n = len(patients)

    def set_epoch(self, epoch: int) -> None:
        """Reseed for ``epoch`` (call before iterating; Lightning does)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.batches_per_rank * self.batch_size


class PatientMixingSampler(_PatientBatches):
    """Dataset indices in patient-mixed batches, reshuffled per epoch, sharded over DDP ranks.

    Parameters
    ----------
    patients
        (n,) patient code (any hashable numpy dtype) of each dataset position.
    batch_size
        per-rank batch size; must equal the DataLoader's.
    seed
        base seed; epoch e uses the stream (seed, e).
    num_replicas, rank
        DDP world size and this process's rank; default from
        ``torch.distributed`` when it is initialised, else 1 and 0.
    """

    def __init__(self, patients, batch_size: int, **kwargs) -> None:
        super().__init__(patients, batch_size, **kwargs)
        self.batches_per_rank = self.n // (self.batch_size * self.num_replicas)
        if self.batches_per_rank == 0:
            raise ValueError(
                f"{self.n} spots are fewer than one global batch ({self.batch_size} x {self.num_replicas} replicas)"
            )

    def __iter__(self) -> Iterator[int]:
        mine = self.schedule(self.epoch)[self.rank :: self.num_replicas]  # (batches_per_rank, batch_size)
        return iter(mine.reshape(-1).tolist())

    def schedule(self, epoch: int) -> np.ndarray:
        """All ranks' batches of ``epoch``, (batches_per_rank * num_replicas, batch_size) int64;
        global batch g is rows g * num_replicas ... (g + 1) * num_replicas - 1.
        """
        rng = np.random.default_rng([self.seed, epoch])
        queues = [rng.permutation(m) for m in self._members]
        counts = np.array([len(m) for m in self._members], dtype=np.int64)
        n_batches, size = self.batches_per_rank * self.num_replicas, self.batch_size
        share = size * counts / self.n  # (P,) expected spots per batch
        base = np.floor(share).astype(np.int64)
        used = np.zeros_like(counts)
        target = np.zeros(len(counts))
        out = np.empty((n_batches, size), dtype=np.int64)
        for j in range(n_batches):
            target += share
            seats = np.minimum(base, counts - used)
            free = size - int(seats.sum())
            while (
                free > 0
            ):  # one extra seat each to the patients furthest behind; repeats only when some ran out
                behind = np.where(counts - used - seats > 0, target - used - seats, -np.inf)
                ranked = np.lexsort((rng.random(len(counts)), -behind))  # most behind first, random ties
                take = ranked[: min(free, int(np.isfinite(behind).sum()))]
                seats[take] += 1
                free -= len(take)
            batch = np.concatenate([q[u : u + s] for q, u, s in zip(queues, used, seats) if s])
            out[j] = rng.permutation(batch)
            used += seats
        return out


class SinglePatientSampler(_PatientBatches):
    """Dataset indices in batches of one patient each: a control with no cross-patient negatives.

    A contrastive loss on such batches can only contrast spots of the same patient, so the patient
    cue cannot separate a batch's pairs: what the mixing sampler prevents by design, this one rules
    out entirely (benchmarks/bench_batch_effect.py compares the two).

    Per epoch (seeded by ``seed`` and the epoch): each patient's spots are shuffled and cut into
    global batches of ``batch_size * num_replicas`` (a patient's remainder sits the epoch out), and
    the global batches are shuffled. Under DDP rank r takes the r-th slice of each global batch, so
    the gathered batch is still one patient's. Parameters as :class:`PatientMixingSampler`.
    """

    def __init__(self, patients, batch_size: int, **kwargs) -> None:
        super().__init__(patients, batch_size, **kwargs)
        size = self.batch_size * self.num_replicas
        self.batches_per_rank = sum(len(m) // size for m in self._members)
        if self.batches_per_rank == 0:
            raise ValueError(
                f"no patient has a global batch of spots ({self.batch_size} x {self.num_replicas} replicas); "
                f"largest has {max(len(m) for m in self._members)}"
            )

    def __iter__(self) -> Iterator[int]:
        s = self.rank * self.batch_size
        mine = self.schedule(self.epoch)[:, s : s + self.batch_size]  # (batches_per_rank, batch_size)
        return iter(mine.reshape(-1).tolist())

    def schedule(self, epoch: int) -> np.ndarray:
        """The epoch's global batches, (batches_per_rank, batch_size * num_replicas) int64, one patient each."""
        rng = np.random.default_rng([self.seed, epoch])
        size = self.batch_size * self.num_replicas
        batches = []
        for members in self._members:
            spots = rng.permutation(members)
            batches.extend(spots[: len(spots) // size * size].reshape(-1, size))
        return np.stack(batches)[rng.permutation(len(batches))]


BATCHES = {"mixed": PatientMixingSampler, "single_patient": SinglePatientSampler}
