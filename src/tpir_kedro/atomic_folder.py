"""A new folder that appears whole or not at all, and never replaces one that exists; a lock for
processes that would write the same one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def new_folder_atomically(root: str | Path, what: str = "it") -> Iterator[Path]:
    """Yields a staging folder beside ``root``; renamed to ``root`` when the block succeeds, removed
    when it fails. Raises FileExistsError if ``root`` exists (nothing on disk is overwritten).
    """
    root = Path(root)
    if root.exists():
        raise FileExistsError(f"{root} exists; refusing to overwrite {what}")
    root.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its 0700 would make the folder private to whoever wrote it.
    staging = root.parent / f".{root.name}.{uuid.uuid4().hex}.tmp"
    staging.mkdir()
    try:
        yield staging
        os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def exclusive_lock(lock_path: str | Path) -> Iterator[None]:
    """Holds an advisory lock on ``lock_path`` between processes on one machine (POSIX ``flock``).

    Where ``flock`` is unavailable (Windows) it does not lock: two processes may then both build
    the same folder, and :func:`new_folder_atomically` lets only one of them land.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
