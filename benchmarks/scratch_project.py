"""A benchmark's scratch project: this checkout's configuration and metadata, its own data/.

The project's data/ is never touched; conf/ is copied afresh each time (conf/local left out), so a
resumed benchmark runs the checkout's current settings.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def scratch_project(work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", ".telemetry"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, work / name)
    shutil.rmtree(work / "conf", ignore_errors=True)
    shutil.copytree(ROOT / "conf", work / "conf", ignore=shutil.ignore_patterns("local"))
    (work / "conf" / "local").mkdir(exist_ok=True)
    (work / "src").mkdir(exist_ok=True)
    return work
