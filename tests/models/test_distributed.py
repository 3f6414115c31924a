"""All-gather helpers: identity in one process, and under 2-process CPU DDP (gloo) the losses and the
DDP-averaged gradients equal those of one process holding the whole batch.

The workers write their results to files; the parent joins them with a timeout and kills stragglers,
and the process group has its own timeout, so a broken collective fails the test instead of hanging.
"""

from __future__ import annotations

import datetime
import multiprocessing as mp
import os
import sys
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from tpir_kedro.models.distributed import gather_no_grad, gather_with_grad, rank, world_size
from tpir_kedro.models.losses import contrastive_loss

WORLD = 2
N_GLOBAL, D_IN, D_OUT, N_CLASSES = 8, 5, 4, 3
CASES = {
    "infonce": ("infonce", {}),
    "bleep": ("bleep", {}),
    "bleep_normalised": ("bleep", {"normalize": True, "temperature": 0.1, "target_temperature": 0.2}),
    "similarity_both": ("similarity", {"target_source": "both"}),
    "class_guided": ("class_guided", {}),
    "class_guided_probs": ("class_guided", {"temperature": 0.1}),
}
JOIN_TIMEOUT_S = 60


def _global_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, N_CLASSES, (N_GLOBAL,), generator=g)
    labels[[1, 6]] = -1  # one unlabelled spot on each rank
    return {
        "image": torch.randn(N_GLOBAL, D_IN, generator=g),
        "genes": torch.randn(N_GLOBAL, D_IN, generator=g),
        "z": torch.randn(N_GLOBAL, 6, generator=g),
        "label": labels,
        "probs": torch.softmax(torch.randn(N_GLOBAL, N_CLASSES, generator=g), dim=1),
    }


def _layers() -> tuple[nn.Linear, nn.Linear]:
    torch.manual_seed(1)  # the same initial weights in every process, as DDP guarantees
    return nn.Linear(D_IN, D_OUT), nn.Linear(D_IN, D_OUT)


def _step(batch: dict[str, torch.Tensor], case: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One training step as the contrastive module does it: embed locally, gather, loss, backward."""
    name, params = CASES[case]
    image_proj, gene_proj = _layers()
    u = gather_with_grad(image_proj(batch["image"]))
    v = gather_with_grad(gene_proj(batch["genes"]))
    z = gather_no_grad(batch["z"])
    labels = gather_no_grad(batch["label"])
    probs = gather_no_grad(batch["probs"]) if case.endswith("probs") else None
    loss = contrastive_loss(name, params)(u, v, z=z, labels=labels, probs=probs)
    loss.backward()
    grads = [p.grad.detach().clone() for layer in (image_proj, gene_proj) for p in layer.parameters()]
    return loss.detach(), grads


def _worker(rank_: int, store_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback: works without a resolvable hostname
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"file://{store_file}",
            rank=rank_,
            world_size=WORLD,
            timeout=datetime.timedelta(seconds=30),
        )
        try:
            n = N_GLOBAL // WORLD
            local = {k: t[rank_ * n : (rank_ + 1) * n] for k, t in _global_batch().items()}
            result = {"world_size": world_size(), "rank": rank(), "labels": gather_no_grad(local["label"])}
            for case in CASES:
                loss, grads = _step(local, case)
                for g in grads:  # what DDP does with parameter gradients
                    dist.all_reduce(g)
                    g /= WORLD
                result[case] = (loss, grads)
            torch.save(result, Path(out_dir) / f"rank{rank_}.pt")
        finally:
            dist.destroy_process_group()
    except BaseException:
        (Path(out_dir) / f"rank{rank_}.err").write_text(traceback.format_exc())
        raise


def _context() -> mp.context.BaseContext:
    """A fork server where available: children fork from a clean single-threaded process that has
    imported torch once (forking pytest itself, with torch's threads running, is unsafe; spawning
    imports torch again in every child, ~2x slower on a small CPU)."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch.distributed.nn.functional", "tpir_kedro.models.losses"])
    return ctx


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> list[dict]:
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    tmp = tmp_path_factory.mktemp("ddp")
    ctx = _context()
    procs = [
        ctx.Process(target=_worker, args=(r, str(tmp / "store"), str(tmp)), daemon=True) for r in range(WORLD)
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(JOIN_TIMEOUT_S)
    finally:
        hung = [p for p in procs if p.is_alive()]
        for p in hung:
            p.kill()
            p.join(5)
    errors = "\n".join(f.read_text() for f in sorted(tmp.glob("rank*.err")))
    assert not hung, f"DDP workers did not finish within {JOIN_TIMEOUT_S}s\n{errors}"
    assert all(p.exitcode == 0 for p in procs), f"DDP workers failed: {[p.exitcode for p in procs]}\n{errors}"
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


def test_identity_without_process_group():
    x = torch.randn(3, 2, requires_grad=True)
    assert world_size() == 1 and rank() == 0
    assert gather_with_grad(x) is x
    assert gather_no_grad(x) is x


def test_ranks_and_gather_order(ddp_results):
    assert [r["world_size"] for r in ddp_results] == [WORLD, WORLD]
    assert [r["rank"] for r in ddp_results] == [0, 1]
    for result in ddp_results:
        assert torch.equal(result["labels"], _global_batch()["label"])  # rank order = batch order


@pytest.mark.parametrize("case", list(CASES))
def test_ddp_loss_and_gradient_equal_single_process(ddp_results, case):
    loss, grads = _step(_global_batch(), case)
    for result in ddp_results:
        ddp_loss, ddp_grads = result[case]
        assert torch.allclose(ddp_loss, loss, rtol=0, atol=1e-6), (case, ddp_loss.item(), loss.item())
        for got, want in zip(ddp_grads, grads, strict=True):
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), (case, (got - want).abs().max().item())
