"""All-gathering across data-parallel ranks, so that the contrastive losses see the global batch.

Contrastive losses compare every image with every gene embedding of the batch; under DDP each rank
holds only its local slice, so the embeddings are concatenated over ranks before the loss.

Gradient scale of :func:`gather_with_grad` (why the result is exactly the single-process gradient):

- every rank gathers the same global ``u`` (N_global, d) and computes the same global loss ``L``;
- the backward of ``torch.distributed.nn.functional.all_gather`` *sums* over ranks the gradient each
  rank computed for the local slice, so a rank's local slice receives ``W * dL/du_local``
  (W = world size; all W ranks contributed the same ``dL/du_local``);
- DDP then *averages* the parameter gradients over the W ranks, dividing by W again. The result is
  ``dL/dtheta`` of the global loss, the same as one process holding the whole batch.

No scaling of the loss by W is therefore needed (or wanted).
All helpers are the identity when torch.distributed is unavailable, not initialised, or W = 1.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of ranks in the default process group; 1 outside distributed training."""
    return dist.get_world_size() if _active() else 1


def rank() -> int:
    """The rank of this process in the default process group; 0 outside distributed training."""
    return dist.get_rank() if _active() else 0


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` over ranks along dim 0, in rank order, keeping the autograd graph.

    x: (n, ...), the same shape on every rank -> (W * n, ...). Rows ``r*n:(r+1)*n`` are rank r's.
    Gradients of every rank's loss w.r.t. this rank's rows are summed back into ``x`` (see the module
    docstring for why that, with DDP's averaging, gives the single-process gradient).
    """
    if world_size() == 1:
        return x
    # Imported lazily: torch.distributed.nn pulls in RPC machinery that single-process runs never need.
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` over ranks along dim 0, in rank order, without autograd.

    For targets, labels, class probabilities and frozen embeddings. x: (n, ...), the same shape and
    dtype on every rank -> (W * n, ...).
    """
    if world_size() == 1:
        return x
    with torch.no_grad():
        x = x.detach().contiguous()
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)
