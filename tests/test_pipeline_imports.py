"""Building the pipelines and the catalog's dataset classes does not import the deep-learning and
single-cell stacks: `kedro viz`, `kedro jupyter` and `kedro registry` start in seconds, and torch,
Lightning, scvi-tools and scanpy load only in the nodes that use them."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "torchvision", "lightning", "scvi", "scanpy", "jax", "timm", "harmonypy", "scib_metrics")

PROBE = f"""
import json, sys
from tpir_kedro.pipeline_registry import register_pipelines
import tpir_kedro.datasets, tpir_kedro.settings
pipelines = register_pipelines()
print(json.dumps({{"nodes": len(pipelines["train"].nodes) + len(pipelines["predict"].nodes), "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def test_pipelines_and_datasets_import_without_torch_scvi_or_scanpy():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["nodes"] > 20
    assert report["heavy"] == [], f"imported while building the pipelines: {report['heavy']}"
