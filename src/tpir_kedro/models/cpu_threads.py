"""How many CPU threads torch uses for a fit: one rule for the gene and the image side.

Torch reads ``OMP_NUM_THREADS`` once, at import; afterwards other libraries can change its pool.
Measured here: after scanpy's ``seurat_v3`` gene selection (scikit-misc's loess) in the same process,
``torch.get_num_threads()`` was 2 under ``OMP_NUM_THREADS=1``. So a fit's float sums depended on
which nodes had run before it in the process: the SequentialRunner (data engineering, then scVI, in
one process) and a ParallelRunner worker gave scVI latents 5e-7 apart. Each fit therefore sets the
pool itself: the configured count, else ``OMP_NUM_THREADS`` when the user (or a runner's worker
set-up) gave it, else torch's own default is left as it is.
"""

from __future__ import annotations

import os


def pin_torch_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count for the fit that follows (see the module docstring);
    returns the count in force.
    """
    import torch

    wanted = threads if threads else os.environ.get("OMP_NUM_THREADS", "").strip()
    if wanted and str(wanted).isdigit() and int(wanted) > 0:
        torch.set_num_threads(int(wanted))
    return torch.get_num_threads()
