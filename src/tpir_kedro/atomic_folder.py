"""A new folder that appears whole or not at all, and never replaces one that exists."""

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
