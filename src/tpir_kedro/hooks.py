"""The run manifest: what produced a run's outputs, so every results row can be traced.

``run_info`` is put into the catalog before the run, so nodes can stamp their rows with it and the
report can show where it came from. It always has ``run_id`` (the run's save version); from the
pipeline's start it also has ``git``, ``parameters``, ``run_params``, ``packages``, ``device`` and
``input_dataset_versions`` (the versioned datasets the pipeline reads but does not write), and a
node that takes ``run_info`` gets ``wall_seconds`` as of its own start (``elapsed``, per finished
``stages`` and ``nodes``). After the run, ``run_manifest`` (versioned JSON, same version) gets the
git commit, resolved parameters, the version of every versioned dataset the run read or wrote,
package versions, seeds, device and the wall time of every node and stage.
"""

from __future__ import annotations

import logging
import platform
import resource
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io.core import AbstractVersionedDataset

logger = logging.getLogger(__name__)

PACKAGES = (
    "tpir_kedro",
    "torch",
    "torchvision",
    "lightning",
    "scvi-tools",
    "anndata",
    "scanpy",
    "scikit-learn",
    "numpy",
    "kedro",
    "kedro-datasets",
    "timm",
)


PACKAGE_DIR = Path(__file__).resolve().parent


def git_state(path: Path) -> dict:
    """Commit, uncommitted changes and top folder of the git checkout holding ``path``; when that
    is no checkout (e.g. a copy of the project's conf), of the one holding this package's source
    (an editable install), since that is the code that ran.
    """
    state = {"commit": None, "uncommitted_changes": None}
    for where in (path, PACKAGE_DIR):
        state = _git_state_at(where)
        if state["commit"]:
            break
    return state


def _git_state_at(path: Path) -> dict:
    def git(*args, check=True):
        return subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, timeout=10, check=check
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", check=False))
        return {
            "commit": commit,
            "uncommitted_changes": dirty,
            "repository": git("rev-parse", "--show-toplevel"),
        }
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "uncommitted_changes": None}


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_info() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception as exc:  # noqa: BLE001 -- the manifest must not fail a finished run
        info["torch_error"] = str(exc)
    return info


def image_backbone_record(contrastive: dict) -> dict:
    """The image backbone a run was configured with and the SHA-256 of its weights file (None: no
    file given, e.g. EfficientNet-Lite0's packaged ImageNet weights or a random init).
    """
    path = contrastive.get("weights_path")
    digest = None
    if path and Path(path).is_file():
        from tpir_kedro.models.file_digest import file_sha256

        digest = file_sha256(Path(path))
    return {
        "backbone": contrastive.get("backbone"),
        "init": contrastive.get("init"),
        "weights_path": path,
        "weights_sha256": digest,
    }


def run_parameters(feed: dict) -> dict:
    """The run's parameters (conf and ``--params``, nested as in ``parameters*.yml``) from what Kedro
    hands ``after_catalog_created``: its feed dict, ``{"parameters": {...}, "params:a": ...,
    "params:a.b": ...}``, whose other entries repeat every sub-tree.
    """
    return dict(feed.get("parameters", feed)) if feed else {}


def dataset_versions(catalog, names) -> dict[str, str | None]:
    """The version each versioned dataset among ``names`` loads (None: never written)."""
    versions = {}
    for name in sorted(names):
        if name in catalog and not name.startswith("params:") and name != "parameters":
            dataset = catalog.get(name)
            if isinstance(dataset, AbstractVersionedDataset):
                try:
                    versions[name] = dataset.resolve_load_version()
                except Exception:  # noqa: BLE001 -- a dataset that was never written has no version
                    versions[name] = None
    return versions


class RunManifestHooks:
    def __init__(self):
        self._run: dict[str, Any] = {}
        self._started: dict[str, float] = {}
        self._node_seconds: dict[str, float] = {}
        self._node_stage: dict[str, str] = {}
        self._node_peak_mb: dict[str, int] = {}
        self._run_info: dict[str, Any] = {}

    @hook_impl
    def after_catalog_created(self, catalog, parameters, save_version, load_versions) -> None:
        self._run = {
            "run_id": save_version,
            "load_versions_requested": dict(load_versions or {}),
            "parameters": run_parameters(parameters),
        }
        self._run_info = {"run_id": save_version}
        catalog["run_info"] = self._run_info

    @hook_impl
    def before_pipeline_run(self, run_params: dict, pipeline, catalog) -> None:
        self._t0 = time.perf_counter()
        self._node_seconds.clear()
        self._run["run_params"] = {
            k: run_params.get(k)
            for k in ("session_id", "env", "pipeline_names", "runtime_params", "project_path")
        }
        # What is known before any node runs; the report renders it (the manifest comes after).
        self._run_info = {
            "run_id": self._run.get("run_id"),
            "git": git_state(Path(run_params.get("project_path") or ".")),
            "run_params": self._run["run_params"],
            "parameters": self._run.get("parameters") or {},
            "input_dataset_versions": dataset_versions(catalog, pipeline.inputs()),
            "packages": package_versions(),
            "device": device_info(),
        }
        # Saved into the dataset after_catalog_created made (assigning a new one makes Kedro warn).
        catalog.save("run_info", self._run_info)

    @hook_impl
    def before_node_run(self, node) -> dict | None:
        self._started[node.name] = time.perf_counter()
        # The catalog holds a copy made when run_info was saved: a node that reads it is handed a
        # fresh one instead, with the wall time of the nodes finished before it.
        if "run_info" in node.inputs and self._run_info:
            return {"run_info": {**self._run_info, "wall_seconds": self._wall_seconds_so_far()}}
        return None

    def _stage_seconds(self) -> dict[str, float]:
        stages: dict[str, float] = {}
        for name, seconds in self._node_seconds.items():
            stages[self._node_stage[name]] = round(stages.get(self._node_stage[name], 0.0) + seconds, 2)
        return stages

    def _wall_seconds_so_far(self) -> dict:
        elapsed = round(time.perf_counter() - getattr(self, "_t0", time.perf_counter()), 2)
        return {"elapsed": elapsed, "stages": self._stage_seconds(), "nodes": dict(self._node_seconds)}

    @hook_impl
    def after_node_run(self, node) -> None:
        self._node_seconds[node.name] = round(
            time.perf_counter() - self._started.pop(node.name, time.perf_counter()), 2
        )
        self._node_stage[node.name] = sorted(node.tags)[0] if node.tags else "untagged"
        # Peak resident memory of this process so far (Linux: KiB): where the run's memory peaks.
        self._node_peak_mb[node.name] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    @hook_impl
    def after_pipeline_run(self, run_params: dict, pipeline, catalog) -> None:
        if "run_manifest" not in catalog:
            return
        stages = self._stage_seconds()
        versions = dataset_versions(catalog, pipeline.datasets())
        params = self._run.get("parameters") or {}
        manifest = {
            "run_id": self._run.get("run_id"),
            "git": git_state(Path(run_params.get("project_path") or ".")),
            **{k: v for k, v in self._run.items() if k not in ("run_id", "parameters")},
            "parameters": params,
            "seeds": (params.get("image_runs") or {}).get("seeds"),
            "image_backbone": image_backbone_record(params.get("contrastive") or {}),
            "dataset_versions": versions,
            "packages": package_versions(),
            "device": device_info(),
            "wall_seconds": {
                "total": round(time.perf_counter() - getattr(self, "_t0", time.perf_counter()), 2),
                "stages": stages,
                "nodes": dict(self._node_seconds),
            },
            "peak_rss_mb": {
                "total": max(self._node_peak_mb.values(), default=None),
                "after_node": dict(self._node_peak_mb),
            },
        }
        catalog.save("run_manifest", manifest)
        logger.info("run manifest %s written (stages: %s)", manifest["run_id"], stages)


class ShortInputErrors:
    """Bad input ends a run with its message last and the project's frames only
    (:func:`~tpir_kedro.quiet_logs.short_input_error_hook`). Installed once the context exists, after
    Kedro's logging set-up has installed its own rich traceback hook, which it wraps.
    """

    @hook_impl
    def after_context_created(self, context) -> None:
        from tpir_kedro.quiet_logs import install_short_input_errors

        install_short_input_errors()
