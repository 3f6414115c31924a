"""SHA-256 of a weights file, for model cards and run manifests (hashlib only: no torch)."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file. A foundation-model checkpoint is gigabytes and every packaged model's
    card names it: a file unchanged since (same size and modification time) is read once per process.
    """
    stat = os.stat(path)
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
