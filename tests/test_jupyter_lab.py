"""`kedro jupyter lab`, started as notebooks/README.md documents it, serves JupyterLab with the
project's kernel; the test never leaves a process behind."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.servers,
    pytest.mark.slow,
]  # starts servers or kernels (make test-fast leaves them out)

KEDRO = Path(sys.executable).with_name("kedro")
PROJECT_KERNEL = "kedro_tpir_kedro"  # kedro names the kernel after the package
START_TIMEOUT_S = 90  # a cold start imports the project and JupyterLab on a busy 2-core machine
STOP_TIMEOUT_S = 30


def free_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str, token: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


def live_members(process_group: int) -> list[int]:
    """Pids of the group's processes that are still running (zombies excluded)."""
    members = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            # Fields after the command name (which may contain spaces): state, ppid, pgrp, ...
            state, _, pgrp = stat_file.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError):
            continue  # the process ended while we looked
        if int(pgrp) == process_group and state != "Z":
            members.append(int(stat_file.parent.name))
    return members


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM the whole group (kedro, the Jupyter server it started, any kernel), let the server
    shut down cleanly, SIGKILL whatever is still there after STOP_TIMEOUT_S."""
    group = process.pid  # start_new_session: the leader's pid is the group id
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        process.poll()  # reaps the leader once it exits
        if process.returncode is not None and not live_members(group):
            return
        time.sleep(0.2)
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process-group clean-up reads /proc")
def test_kedro_jupyter_lab_serves_the_project_kernel(project_copy, tmp_path):
    project = project_copy(tmp_path / "project")
    jupyter_home = tmp_path / "jupyter"
    env = {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "true",
        # `kedro jupyter lab` installs its kernel spec per user: keep it, and every other Jupyter
        # file, out of the real home directory.
        "JUPYTER_DATA_DIR": str(jupyter_home / "data"),
        "JUPYTER_CONFIG_DIR": str(jupyter_home / "config"),
        "JUPYTER_RUNTIME_DIR": str(jupyter_home / "runtime"),
        "IPYTHONDIR": str(jupyter_home / "ipython"),
    }
    for folder in ("data", "config", "runtime", "ipython"):
        (jupyter_home / folder).mkdir(parents=True)
    port = free_local_port()
    token = secrets.token_hex(16)  # the test's own token: the documented command keeps Jupyter's default auth
    command = [
        str(KEDRO),
        "jupyter",
        "lab",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-browser",
        f"--IdentityProvider.token={token}",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")  # Jupyter refuses to run as root without it
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "jupyter_lab.log"

    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        status = None
        deadline = time.monotonic() + START_TIMEOUT_S
        while status is None and time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(
                    f"`kedro jupyter lab` exited with {process.returncode}:\n{log_path.read_text()[-4000:]}"
                )
            try:
                status = json.loads(get(f"{base_url}/api/status", token)[1])
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        assert status is not None, (
            f"no answer on {base_url} within {START_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}"
        )
        assert "started" in status

        kernelspecs = json.loads(get(f"{base_url}/api/kernelspecs", token)[1])
        assert kernelspecs["default"] == PROJECT_KERNEL
        argv = kernelspecs["kernelspecs"][PROJECT_KERNEL]["spec"]["argv"]
        # The interpreter of the environment kedro runs in (compared unresolved: venvs symlink their python).
        assert Path(os.path.abspath(argv[0])).parent == Path(os.path.abspath(sys.executable)).parent
        assert argv[argv.index("--ext") + 1] == "kedro.ipython"  # kernels start with catalog & co. defined
        assert (jupyter_home / "data" / "kernels" / PROJECT_KERNEL / "kernel.json").is_file()

        lab_status, lab_page = get(f"{base_url}/lab", token)
        assert lab_status == 200 and b"JupyterLab" in lab_page
    finally:
        stop_process_group(process)
    assert not live_members(process.pid), "the Jupyter server left processes behind"
