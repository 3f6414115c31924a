"""Benchmark stages run each in a fresh process, so a stage's peak RSS is its own.

A benchmark script calls itself with ``--stage NAME ...``; the stage prints its result as one JSON
line (:func:`print_stage_result`), which the parent reads back (:func:`run_stage`).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys


def run_stage(script: str, args: list[str]) -> dict:
    """Run ``python script *args`` and return the JSON object on its last line of output."""
    out = subprocess.run([sys.executable, script, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_stage_result(result: dict) -> None:
    """Print ``result`` with this process's peak RSS (MB) as the JSON line :func:`run_stage` reads."""
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))
