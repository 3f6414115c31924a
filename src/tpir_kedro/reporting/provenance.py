"""The run's provenance as HTML: what produced the figures, from the hooks' ``run_info``."""

from __future__ import annotations

import json
from html import escape


def key_value_table(rows: dict, empty: str = "none recorded") -> str:
    """A two-column HTML table; nested values are shown as compact JSON."""
    if not rows:
        return f"<p class='muted'>{escape(empty)}</p>"
    body = "".join(
        f"<tr><th>{escape(str(key))}</th><td>{escape(_text(value))}</td></tr>" for key, value in rows.items()
    )
    return f"<table class='kv'>{body}</table>"


def _text(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def provenance_html(run_info: dict) -> str:
    """Run id, git state, run parameters, wall time per stage so far, input dataset versions,
    device, package versions, and the resolved parameters (folded).

    ``run_info``: ``run_id`` always; ``git``, ``run_params``, ``wall_seconds``,
    ``input_dataset_versions``, ``device``, ``packages``, ``parameters`` when the hooks provided
    them (a missing part is shown as not recorded).
    """
    git = run_info.get("git") or {}
    run_params = run_info.get("run_params") or {}
    wall = run_info.get("wall_seconds") or {}
    summary = {
        "run id": run_info.get("run_id"),
        "git commit": git.get("commit"),
        "uncommitted changes": git.get("uncommitted_changes"),
        "git repository": git.get("repository"),
        "environment": run_params.get("env"),
        "pipelines": run_params.get("pipeline_names"),
        "runtime parameters": run_params.get("runtime_params"),
        "session id": run_params.get("session_id"),
    }
    stages = {stage: f"{seconds:.1f}" for stage, seconds in (wall.get("stages") or {}).items()}
    if "elapsed" in wall:
        stages["elapsed when the report started"] = f"{wall['elapsed']:.1f}"
    parameters = json.dumps(run_info.get("parameters") or {}, indent=2, sort_keys=True, default=str)
    return "\n".join(
        [
            "<h3>Run</h3>",
            key_value_table(summary),
            "<h3>Wall time per stage so far (s)</h3>",
            key_value_table(stages, "not recorded (the report ran outside a Kedro run)"),
            "<h3>Input dataset versions</h3>",
            key_value_table(run_info.get("input_dataset_versions") or {}, "none recorded"),
            "<h3>Device</h3>",
            key_value_table(run_info.get("device") or {}),
            "<h3>Packages</h3>",
            key_value_table(run_info.get("packages") or {}),
            f"<details><summary>Resolved parameters</summary><pre>{escape(parameters)}</pre></details>",
        ]
    )
