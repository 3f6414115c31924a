"""Benchmark: training throughput of the real Lightning loop against its ceiling (samples/s).

    .venv/bin/python benchmarks/bench_training_throughput.py [--backbone efficientnet_lite0] [--init random]
        [--size-px 64] [--batch-size 64] [--variant scanvi_infonce] [--steps 20] [--warmup 5]
        [--num-workers 0] [--threads N] [--accelerator auto] [--precision auto] [--repeats 3]
        [--n-spots 2048 | --store data/.../patch_store] [--out benchmarks/results/training_throughput.json]

What it measures, with the same model, batch and patch size on both sides:

- loop: the real training path. The variant's module comes from ``build_module`` and is fitted by an
  ``L.Trainer`` built with the arguments ``train_image_model`` uses (the ``_SpotPairsData`` loader:
  memory-mapped ``patches.npy``, ``PatientMixingSampler``, ``collate_batch``; on-device
  ``PatchAugment``, channels-last, precision from ``resolve_precision``). A callback stamps
  ``time.perf_counter()`` at every ``on_train_batch_start``; samples/s is taken from batch start to
  the next batch start, so it includes data loading, host-to-device copies and Lightning's hooks.
  The first ``--warmup`` batches are skipped, and so is every interval that spans an epoch end (a
  benchmark epoch is far shorter than a real one, so its boundaries would weigh too much). On a GPU,
  CUDA is synchronised only where a timed stretch starts and ends (``--sync window``): syncing
  every step would stop the host from queueing the next step while the GPU works, and so slow down
  the very loop being measured. ``--sync step`` syncs at every batch start and end, and then also
  reports how much of the time lies *between* steps (data wait + hooks).
- ceiling: the same module's forward + backward + optimiser (and LR scheduler) step on one batch
  already in memory on the device: uint8 images through the same augmentation, encoder, heads and
  loss (the module's own ``training_step``), under the same autocast, with the optimiser from the
  module's ``configure_optimizers``. No data loading, no Lightning.

Reading the ratio (loop / ceiling): 1.0 means the loop costs nothing beyond the arithmetic; 0.9
means 10 % of the training time goes to data loading, copies and framework overhead. Well below
that, the loop is input-bound: try ``--num-workers``. Each of ``--repeats`` rounds measures both,
alternating which goes first, and the medians are reported (shared CPUs are noisy).
With ``--devices N`` (> 1, ddp_spawn) the loop is global samples/s and the ceiling is one device's
times N (perfect scaling), so the ratio also carries the all-gather and gradient all-reduce.

Prints a summary and a markdown table row, and writes everything to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning as L  # module level: ddp_spawn pickles StepTimer by reference to this module
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "training_throughput.json"
SEED = 0
N_PATIENTS = 4
PATIENT_SHARES = (0.4, 0.3, 0.2, 0.1)  # unequal, as real folds are
UNLABELLED_FRACTION = 0.3
MARKDOWN_HEADER = (
    "| device | backbone | size px | batch | variant | precision | workers | threads | loop samples/s | ceiling samples/s | ratio |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


# --- data ------------------------------------------------------------------------------------------


def write_synthetic_patches(path: Path, n: int, size_px: int, seed: int = SEED, chunk: int = 256) -> None:
    """(n, size_px, size_px, 3) uint8 textures as ``patches.npy``: a per-patch tint, blotches
    (nearest-upsampled coarse noise) and fine grain, so nothing compresses to a constant.
    """
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size_px, size_px, 3))
    cell = max(1, size_px // 8)
    coarse_px = -(-size_px // cell)
    for start in range(0, n, chunk):
        b = min(chunk, n - start)
        tint = rng.integers(120, 230, size=(b, 1, 1, 3), dtype=np.int16)
        coarse = rng.integers(-50, 50, size=(b, coarse_px, coarse_px, 3), dtype=np.int16)
        blotches = coarse.repeat(cell, axis=1).repeat(cell, axis=2)[:, :size_px, :size_px]
        grain = rng.integers(-20, 20, size=(b, size_px, size_px, 3), dtype=np.int16)
        out[start : start + b] = np.clip(tint + blotches + grain, 0, 255).astype(np.uint8)
    out.flush()
    del out


def make_training_data(
    variant, patches: np.ndarray, rows: np.ndarray, patients: np.ndarray, gene_dim: int, seed: int = SEED
):
    """TrainingData for ``variant`` as the contrastive pipeline's ``_training_data`` builds it, with
    synthetic gene inputs, labels and class probabilities; the supervised variant keeps only the
    labelled spots, as ``train_image_model`` does.
    """
    from tpir_kedro.cohort.schema import TISSUE_CLASSES
    from tpir_kedro.models.patch_data import reopenable_memmap
    from tpir_kedro.models.training import TrainingData

    rng = np.random.default_rng(seed + 1)
    n, n_classes = len(patients), len(TISSUE_CLASSES)
    labels = rng.integers(0, n_classes, size=n).astype(np.int64)
    labels[rng.random(n) < UNLABELLED_FRACTION] = -1
    genes = z = probs = None
    if variant.objective == "contrastive":
        genes = rng.standard_normal((n, gene_dim)).astype(np.float32)
        z = genes if variant.gene_input != "log_hvg" else None
    if variant.use_class_probs:
        probs = rng.dirichlet(np.ones(n_classes), size=n).astype(np.float32)
    data = TrainingData(
        patches=reopenable_memmap(patches),
        rows=np.asarray(rows, dtype=np.int64),
        genes=genes,
        z=z,
        labels=labels,
        probs=probs,
        patients=patients.astype(np.int64),
        n_classes=n_classes,
    )
    if variant.objective == "supervised":
        data = data.subset(data.labels >= 0)
    return data


def synthetic_patients(n: int) -> np.ndarray:
    bounds = np.round(np.cumsum(PATIENT_SHARES) * n).astype(int)
    return np.searchsorted(bounds, np.arange(n), side="right").astype(np.int64)


# --- the steps to time -----------------------------------------------------------------------------


def plan_steps(batches_per_epoch: int, warmup: int, steps: int) -> tuple[int, list[tuple[int, int]]]:
    """Which batch-start to batch-start intervals to time, and how many batches to run.

    Interval k runs from the start of batch k to the start of batch k + 1 (batches counted over the
    whole fit). Timed: k >= warmup and batches k and k + 1 in the same epoch, until ``steps`` are
    timed. Returns (batches to run, runs), a run (k0, k1) covering intervals k0 .. k1 - 1.
    """
    if batches_per_epoch < 2:
        raise ValueError(
            f"{batches_per_epoch} batch(es) per epoch: need at least 2 to time a step; use more spots or a smaller batch"
        )
    runs: list[tuple[int, int]] = []
    count, k = 0, warmup
    while count < steps:
        if (k + 1) // batches_per_epoch == k // batches_per_epoch:
            if runs and runs[-1][1] == k:
                runs[-1] = (runs[-1][0], k + 1)
            else:
                runs.append((k, k + 1))
            count += 1
        k += 1
    return runs[-1][1] + 1, runs


class StepTimer(L.Callback):
    """Stamps ``time.perf_counter()`` at every batch start and end, syncing CUDA at the boundaries of
    the timed runs (or at every step); rank 0 writes the stamps to ``out_path`` when training ends
    (ddp_spawn ranks are other processes, so nothing else comes back).
    """

    def __init__(self, runs: list[tuple[int, int]], sync_every_step: bool, out_path: str):
        self.runs = [tuple(r) for r in runs]
        self.sync_points = {k for r in self.runs for k in r}
        self.sync_every_step, self.out_path = sync_every_step, out_path
        self.starts: dict[int, float] = {}
        self.ends: dict[int, float] = {}
        self.k = -1  # batches so far, over the whole fit

    @staticmethod
    def _now(pl_module, sync: bool) -> float:
        if sync and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.k += 1
        self.starts[self.k] = self._now(pl_module, self.sync_every_step or self.k in self.sync_points)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.ends[self.k] = self._now(pl_module, self.sync_every_step)

    def on_train_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            Path(self.out_path).write_text(
                json.dumps({"starts": self.starts, "ends": self.ends, "world_size": trainer.world_size})
            )


# --- loop and ceiling ------------------------------------------------------------------------------


def _fresh_module(variant, config, data):
    from tpir_kedro.models.training import _initial_encoder, build_module

    L.seed_everything(SEED, workers=True, verbose=False)  # as train_image_model, before the encoder
    return build_module(variant, config, data, _initial_encoder(variant, config))


def _release(device_type: str) -> None:
    gc.collect()
    if device_type == "cuda":
        torch.cuda.empty_cache()


def measure_loop(
    variant, config, data, warmup: int, steps: int, sync_every_step: bool, workdir: Path
) -> dict:
    """Fits the real module with the Trainer of ``train_image_model`` and times steady-state steps."""
    from tpir_kedro.models.training import _SpotPairsData, make_trainer

    world = config.devices if isinstance(config.devices, int) and config.devices > 0 else 1
    batches_per_epoch = len(data.rows) // (
        config.batch_size * world
    )  # what PatientMixingSampler yields per rank
    total, runs = plan_steps(batches_per_epoch, warmup, steps)
    stamps_path = workdir / "loop_stamps.json"
    stamps_path.unlink(missing_ok=True)
    module = _fresh_module(variant, config, data)
    # The Trainer of train_image_model (run_root None: no logger, no checkpoints), except that it
    # stops after `total` batches; max_epochs covers them, so OneCycleLR's total is `total`.
    trainer = make_trainer(
        config,
        None,
        [StepTimer(runs, sync_every_step, str(stamps_path))],
        max_steps=total,
        max_epochs=math.ceil(total / batches_per_epoch),
    )
    datamodule = _SpotPairsData(
        data,
        config.batch_size,
        config.num_workers,
        SEED,
        with_z=variant.loss == "similarity",
        with_probs=variant.use_class_probs,
    )
    trainer.fit(module, datamodule=datamodule)
    device_type = module.device.type
    del trainer, module, datamodule
    _release(device_type)

    stamps = json.loads(stamps_path.read_text())
    starts = {int(k): v for k, v in stamps["starts"].items()}
    ends = {int(k): v for k, v in stamps["ends"].items()}
    global_batch = config.batch_size * int(stamps["world_size"])
    seconds = sum(starts[k1] - starts[k0] for k0, k1 in runs)
    result = {
        "samples_per_s": steps * global_batch / seconds,
        "seconds": seconds,
        "global_batch": global_batch,
        "batches_run": total,
        "batches_per_epoch": batches_per_epoch,
        "epoch_ends_skipped": len(runs) - 1,
    }
    if sync_every_step or not _cuda_used(config):
        between = sum(starts[k + 1] - ends[k] for k0, k1 in runs for k in range(k0, k1))
        result["between_steps_fraction"] = between / seconds
    return result


def _cuda_used(config) -> bool:
    return config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def _autocast_and_scaler(precision: str, device_type: str):
    """What Lightning's precision plugin does for ``precision``: (autocast context factory, GradScaler or None)."""
    import contextlib

    if precision in ("32-true", "32"):
        return contextlib.nullcontext, None
    if precision == "bf16-mixed":
        return (lambda: torch.autocast(device_type, dtype=torch.bfloat16)), None
    if precision == "16-mixed":
        return (lambda: torch.autocast(device_type, dtype=torch.float16)), torch.amp.GradScaler(device_type)
    raise ValueError(
        f"the ceiling measurement supports 32-true, bf16-mixed and 16-mixed precision, not {precision!r}"
    )


def measure_ceiling(variant, config, data, warmup: int, steps: int) -> dict:
    """The same module's optimiser steps on one batch that is already on the device."""
    from tpir_kedro.models.training import _SpotPairsData, resolve_precision

    device = torch.device("cuda", torch.cuda.current_device()) if _cuda_used(config) else torch.device("cpu")
    precision = resolve_precision(config)
    autocast, scaler = _autocast_and_scaler(precision, device.type)
    # One batch of the real loader (no workers: only its content matters here).
    loader = _SpotPairsData(
        data,
        config.batch_size,
        0,
        SEED,
        with_z=variant.loss == "similarity",
        with_probs=variant.use_class_probs,
    ).train_dataloader()
    batch = {
        k: v.to(device) for k, v in next(iter(loader)).items()
    }  # .to keeps the images' channels-last strides
    del loader

    module = _fresh_module(variant, config, data).to(device).train()
    # configure_optimizers reads only trainer.estimated_stepping_batches; detach the stand-in again
    # so that training_step's self.log is the no-op it is without a Trainer.
    module._trainer = SimpleNamespace(estimated_stepping_batches=warmup + steps)
    optimisation = module.configure_optimizers()
    module._trainer = None
    optimiser, schedule = optimisation["optimizer"], optimisation["lr_scheduler"]["scheduler"]

    def step(i: int) -> None:
        optimiser.zero_grad(set_to_none=True)
        with autocast():
            loss = module.training_step(batch, i)
        if scaler is None:
            loss.backward()
            optimiser.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
        schedule.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for i in range(warmup):
        step(i)
    sync()
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    sync()
    seconds = time.perf_counter() - start
    module = optimiser = schedule = batch = None  # rebound, not del'd: step() closes over them
    _release(device.type)
    return {"samples_per_s": steps * config.batch_size / seconds, "seconds": seconds}


# --- reporting -------------------------------------------------------------------------------------


def describe_device(config) -> str:
    if _cuda_used(config):
        n = config.devices if isinstance(config.devices, int) and config.devices > 1 else 1
        return f"{n}x {torch.cuda.get_device_name(0)}" if n > 1 else torch.cuda.get_device_name(0)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {model} ({os.cpu_count()} cores)"


def markdown_row(r: dict) -> str:
    batch = r["batch_size"] if r["devices"] == 1 else f"{r['batch_size']} x {r['devices']}"
    ceiling, ratio = (
        ("n/a", "n/a") if r["ratio"] is None else (f"{r['ceiling_samples_per_s']:.1f}", f"{r['ratio']:.2f}")
    )
    return (
        f"| {r['device']} | {r['backbone']} ({r['init']}) | {r['size_px']} | {batch} | {r['variant']} | {r['precision']} "
        f"| {r['num_workers']} | {r['threads']} | {r['loop_samples_per_s']:.1f} | {ceiling} | {ratio} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument(
        "--init", default="random", help="random | imagenet | file (throughput does not depend on it)"
    )
    parser.add_argument("--weights-path", help="for init imagenet with a resnet, or init file")
    parser.add_argument(
        "--size-px", type=int, default=64, help="synthetic patch size (a --store brings its own)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="per device")
    parser.add_argument(
        "--variant", default="scanvi_infonce", help="a variant of conf/base/parameters_contrastive.yml"
    )
    parser.add_argument("--params", type=Path, default=ROOT / "conf" / "base" / "parameters_contrastive.yml")
    parser.add_argument(
        "--n-spots", type=int, help="training spots (default 2048 synthetic; every row of a --store)"
    )
    parser.add_argument("--store", type=Path, help="a real patch store folder instead of synthetic patches")
    parser.add_argument(
        "--gene-dim", type=int, help="gene-side input width (default 10 for scvi/scanvi, 2000 for log_hvg)"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    parser.add_argument("--repeats", type=int, default=3, help="loop/ceiling rounds; medians are reported")
    parser.add_argument("--num-workers", type=int)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--accelerator")
    parser.add_argument("--devices", type=int, default=1, help="> 1: the loop runs under ddp_spawn")
    parser.add_argument("--precision")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument(
        "--progress-bar",
        action="store_true",
        help="show Lightning's progress bar (off: it clutters the output)",
    )
    parser.add_argument(
        "--sync",
        choices=("window", "step"),
        default="window",
        help="CUDA sync at timed-stretch ends or every step",
    )
    parser.add_argument("--skip-ceiling", action="store_true", help="loop only (e.g. a multi-GPU smoke run)")
    parser.add_argument(
        "--tmp-dir", type=Path, help="where the synthetic store is written (default: the system temp dir)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    import yaml

    params = yaml.safe_load(args.params.read_text())
    from tpir_kedro.models.training_config import TrainingConfig
    from tpir_kedro.models.variants import VAE_INPUTS, parse_variant

    if args.variant not in params["variants"]:
        parser.error(f"unknown variant {args.variant!r}; defined: {sorted(params['variants'])}")
    variant = parse_variant(args.variant, params["variants"][args.variant] or {})
    if not variant.trains:
        parser.error(f"variant {args.variant!r} does not train")
    overrides = {
        "backbone": args.backbone,
        "init": args.init,
        "weights_path": args.weights_path,
        "batch_size": args.batch_size,
        "devices": args.devices,
        "accelerator": args.accelerator,
        "precision": args.precision,
        "num_workers": args.num_workers,
        "threads": args.threads,
        "channels_last": args.channels_last,
        "progress_bar": args.progress_bar,
        # The loop through the backbone is what this measures: fine-tuning, whatever the conf's regime.
        "regime": "full",
        "max_steps": None,
    }
    config = TrainingConfig.from_dict(
        {
            **params["contrastive"],
            **{k: v for k, v in overrides.items() if v is not None or k == "weights_path"},
        }
    )

    from tpir_kedro.models.training import resolve_precision

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # "GPU available: ..." banners
    warnings.filterwarnings(
        "ignore", message=".*`self.log\\(\\)`.*"
    )  # the ceiling's Trainer-less training_step
    if config.threads:
        torch.set_num_threads(int(config.threads))  # as train_image_model
    gene_dim = args.gene_dim or (10 if variant.gene_input in VAE_INPUTS else 2000)

    with tempfile.TemporaryDirectory(prefix="bench_train_", dir=args.tmp_dir) as tmp:
        workdir = Path(tmp)
        if args.store is not None:
            from tpir_kedro.imaging.patch_store import PatchStore

            store = PatchStore.open(args.store)
            n = min(args.n_spots or len(store), len(store))
            patches, size_px = store.patches, store.size_px
            pick = np.unique(
                np.linspace(0, len(store) - 1, n).round().astype(np.int64)
            )  # spread over every patient
            rows = store.index["row"].to_numpy()[pick]
            patient_names = store.index["patient"].to_numpy()[pick]
            patients = np.unique(patient_names, return_inverse=True)[1].astype(np.int64)
            source = str(args.store)
        else:
            n, size_px = args.n_spots or 2048, args.size_px
            t0 = time.perf_counter()
            write_synthetic_patches(workdir / "patches.npy", n, size_px)
            print(f"synthetic store: {n} x {size_px} px patches written in {time.perf_counter() - t0:.1f} s")
            patches = np.load(workdir / "patches.npy", mmap_mode="r", allow_pickle=False)
            rows, patients = np.arange(n), synthetic_patients(n)
            source = "synthetic"
        data = make_training_data(variant, patches, rows, patients, gene_dim)
        precision = resolve_precision(config)
        device = describe_device(config)
        print(
            f"{device}: {config.backbone} ({config.init}), {size_px} px, batch {config.batch_size} x {args.devices} device(s), "
            f"variant {variant.name}, {precision}, {config.num_workers} workers, {torch.get_num_threads()} threads, "
            f"{len(data.rows)} spots of {len(np.unique(data.patients))} patients; {args.warmup} warm-up + {args.steps} timed steps"
        )

        loops, ceilings = [], []
        for r in range(args.repeats):
            order = ("loop", "ceiling") if r % 2 == 0 else ("ceiling", "loop")
            for what in order:
                if what == "loop":
                    loops.append(
                        measure_loop(
                            variant, config, data, args.warmup, args.steps, args.sync == "step", workdir
                        )
                    )
                    extra = (
                        f", {loops[-1]['between_steps_fraction']:.0%} between steps"
                        if "between_steps_fraction" in loops[-1]
                        else ""
                    )
                    print(
                        f"  round {r + 1} loop:    {loops[-1]['samples_per_s']:9.1f} samples/s{extra}",
                        flush=True,
                    )
                elif not args.skip_ceiling:
                    ceilings.append(measure_ceiling(variant, config, data, args.warmup, args.steps))
                    print(
                        f"  round {r + 1} ceiling: {ceilings[-1]['samples_per_s']:9.1f} samples/s", flush=True
                    )

    loop_rate = statistics.median(m["samples_per_s"] for m in loops)
    world = loops[0]["global_batch"] // config.batch_size
    ceiling_rate = statistics.median(m["samples_per_s"] for m in ceilings) * world if ceilings else None
    result = {
        "device": device,
        "backbone": config.backbone,
        "init": config.init,
        "size_px": int(size_px),
        "batch_size": config.batch_size,
        "devices": world,
        "variant": variant.name,
        "precision": precision,
        "channels_last": config.channels_last,
        "num_workers": config.num_workers,
        "threads": torch.get_num_threads(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "patches": source,
        "n_spots": len(data.rows),
        "gene_dim": gene_dim,
        "warmup": args.warmup,
        "steps": args.steps,
        "repeats": args.repeats,
        "sync": args.sync,
        "loop_samples_per_s": loop_rate,
        "ceiling_samples_per_s": ceiling_rate,
        "ceiling_basis": "one device" if world == 1 else f"one device x {world} (perfect scaling)",
        "ratio": loop_rate / ceiling_rate if ceilings else None,
        "loop_rounds": loops,
        "ceiling_rounds": ceilings,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lightning": L.__version__,
        },
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    result["markdown_row"] = markdown_row(result)
    if ceilings:
        print(
            f"loop {loop_rate:.1f} samples/s, ceiling {ceiling_rate:.1f} samples/s ({result['ceiling_basis']}), "
            f"ratio {result['ratio']:.2f} (median of {args.repeats})"
        )
    else:
        print(f"loop {loop_rate:.1f} samples/s (median of {args.repeats}); ceiling not measured")
    print(MARKDOWN_HEADER)
    print(result["markdown_row"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
