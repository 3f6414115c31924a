"""What a user's terminal shows: Kedro's progress and actionable messages, not third-party noise;
bad input as its message, last, after the project's own frames."""

from __future__ import annotations

import gzip
import shutil

import pytest

# What the demo's `kedro run` printed before these were silenced at their source (tpir_kedro/quiet_logs.py).
NOISE = [
    "litlogger",  # Lightning's advertisement, once per training run
    "LeafSpec",  # Lightning calling a deprecated torch pytree API
    "register_new_resolver",  # Kedro calling a deprecated OmegaConf API
    "exists and is not empty",  # Lightning on our keyed run folders
    "GPU available",
    "TPU available",
    "Replacing dataset",  # our run_info hook
    "FutureWarning",  # pandas on concatenating empty frames (ours)
    "non-writable",  # torch on a read-only memmap (ours)
    "Input AnnData not setup",  # scvi-tools' bookkeeping
    "smaller than the logging interval",
]


@pytest.mark.slow
def test_the_demo_run_shows_kedro_progress_and_none_of_the_third_party_noise(trained_demo_project):
    log = (trained_demo_project / "make_demo.log").read_text()
    assert (
        "Running node: train_image_model: cell_image_model([clip__B__seed0.fold_inputs" in log
        and "Pipeline execution completed successfully" in log
    )
    assert "trained in" in log  # our own per-run line: what trained, for how many steps
    found = {s: log.count(s) for s in NOISE if s in log}
    assert not found, found


@pytest.mark.slow
def test_a_run_logged_to_a_pipe_keeps_each_node_message_on_one_line(trained_demo_project):
    """``make demo``'s output went through a pipe, as in CI, ``nohup`` or ``> run.log``: rich would
    lay it out at 80 columns; every record is one line instead (tpir_kedro/log_lines.py)."""
    from kedro.framework.project import pipelines

    lines = (trained_demo_project / "make_demo.log").read_text().splitlines()
    for node in pipelines["train"].nodes:
        # A node's whole "Running node: name: func([inputs]) -> [outputs]" record, on one line.
        assert sum(line.rstrip().endswith(f"{node}  (kedro.pipeline.node)") for line in lines) == 1, node
    completed = [line for line in lines if "Completed node:" in line]
    assert completed and all(line.endswith("(kedro.runner.sequential_runner)") for line in completed)
    # Our own long messages too: the per-run line names the variant, fold and steps on one line.
    assert any(
        "variant clip, fold holdout_B, seed 0: trained in" in line and "steps)" in line for line in lines
    )


def test_bad_input_ends_the_run_with_its_message_last_and_only_the_projects_frames(
    tiny_demo_dir, tmp_path, project_copy, kedro_cli
):
    project = project_copy(tmp_path / "project")
    raw = project / "data" / "01_raw" / "demo_her2st" / "2026-01-01T00.00.00.000Z" / "demo_her2st"
    shutil.copytree(tiny_demo_dir, raw)
    counts = sorted((raw / "ST-cnts").glob("*.tsv.gz"))[0]
    section = counts.name.removesuffix(".tsv.gz")
    whole = gzip.compress(gzip.decompress(counts.read_bytes()))
    counts.write_bytes(whole[: len(whole) // 2])  # a download cut short

    done = kedro_cli(project, "train", log=tmp_path / "run.log", check=False)
    lines = (done.stdout + done.stderr).rstrip().splitlines()
    assert done.returncode != 0
    assert (
        lines[-1].startswith(f"CohortInputError: [section {section}, file ")
        and "counts file is unreadable" in lines[-1]
    )
    assert str(counts) in lines[-1]
    short = lines[
        lines.index(next(line for line in lines if line.startswith("The run stopped on bad input"))) :
    ]
    assert any("tpir_kedro/cohort/her2st.py" in line for line in short)  # where the file was read
    assert not any("kedro/framework" in line or "concurrent/futures" in line for line in short)
    assert len(lines) < 120, len(
        lines
    )  # was ~430: two rich tracebacks through Kedro's CLI, runner and threads
